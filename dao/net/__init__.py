"""Streams across machines (issue 13, in progress).

- :mod:`~dao.net.wire`: the wire format of a frame over ZeroMQ (a 64-byte header and the raw
  bytes, never pickled), decoded with every field checked; a receiver that counts what it
  drops and what was lost on the way.
- :mod:`~dao.net.registry`: the Redis registry of machines and their streams (the Durham keys
  under ``dao:``, a TTL on every key instead of a master, changes published on
  ``dao:changes``);
- :mod:`~dao.net.mirror`: a stream published over ZeroMQ (:class:`StreamPublisher`) and its
  local mirror (:class:`Mirror`, ``latest`` or ``every`` mode), with the link's freshness.

The per-machine server (``dao server``) and ``dao.remote`` come next.
"""

from dao.net.mirror import BindError, Mirror, MirrorError, StreamPublisher
from dao.net.registry import Changes, Registry, RegistryError
from dao.net.wire import Receiver, WireCounters, WireError, WireFrame, decode, decode_into, encode

__all__ = [
    "BindError", "Changes", "Mirror", "MirrorError", "Receiver", "Registry", "RegistryError",
    "StreamPublisher", "WireCounters", "WireError", "WireFrame", "decode", "decode_into",
    "encode",
]

"""Streams across machines (issue 13).

- :mod:`~dao.net.wire`: the wire format of a frame over ZeroMQ (a 64-byte header and the raw
  bytes, never pickled), decoded with every field checked; a receiver that counts what it
  drops and what was lost on the way.
- :mod:`~dao.net.registry`: the Redis registry of machines and their streams (the Durham keys
  under ``dao:``, a TTL on every key instead of a master, changes published on
  ``dao:changes``);
- :mod:`~dao.net.connect`: one URL for any Redis a site runs (password, TLS, Unix socket,
  Sentinel);
- :mod:`~dao.net.mirror`: a stream published over ZeroMQ (:class:`StreamPublisher`) and its
  local mirror (:class:`Mirror`, ``latest`` or ``every`` mode, bidirectional on demand), with
  the link's freshness (also in keywords of the mirror stream, shown by ``dao ls``);
- :mod:`~dao.net.uplink` and :mod:`~dao.net.lease`: writes of a bidirectional mirror flowing
  back to the source (:class:`StreamWriter`), one client at a time (the write lease);
- :mod:`~dao.net.server`: the per-machine server (``dao server``): its streams kept in the
  registry with their rates, publishers (and writers) started on request and stopped when no
  client is left;
- :mod:`~dao.net.remote`: a client's view (``dao remote ls|mirror``): machines, streams, and
  :func:`~dao.net.remote.mirror` of a stream of another machine, following its publisher.
"""

from dao.net.connect import redis_client
from dao.net.lease import LeaseError
from dao.net.mirror import BindError, Mirror, MirrorError, StreamPublisher
from dao.net.registry import Changes, Registry, RegistryError
from dao.net.remote import RemoteError, RemoteMirror
from dao.net.server import StreamServer
from dao.net.uplink import StreamWriter
from dao.net.wire import Receiver, WireCounters, WireError, WireFrame, decode, decode_into, encode

__all__ = [
    "BindError", "Changes", "LeaseError", "Mirror", "MirrorError", "Receiver", "Registry",
    "RegistryError", "RemoteError", "RemoteMirror", "StreamPublisher", "StreamServer",
    "StreamWriter", "WireCounters", "WireError", "WireFrame", "decode", "decode_into", "encode",
    "redis_client",
]

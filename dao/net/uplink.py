"""Writes of a bidirectional mirror flowing back to the source stream (issue 13).

A :class:`StreamWriter` runs beside a :class:`~dao.net.mirror.StreamPublisher` on the source
machine: a ZeroMQ PULL socket receives frames that local writers put into remote mirrors (see
:class:`~dao.net.mirror.Mirror`, ``uplink=``) and writes them into the source stream, keeping
the write time and frame id they had in the mirror. Each message is the lease identity of the
sending client, then a frame in the :mod:`dao.net.wire` format (three parts in all). A frame
is written only if ``check(identity)`` says the sender holds the stream's write lease (see
:mod:`dao.net.lease`); anything else is dropped and counted, never raised:

- ``refused``: the sender holds no lease (or an expired one);
- ``malformed``: not three parts, or not a valid frame (by :attr:`dao.net.wire.WireError.reason`);
- ``mismatched``: a frame of another shape or dtype than the source stream.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from dao.errors import StreamError
from dao.net import wire
from dao.net.mirror import _POLL_S, BindError, _identity, _SocketThread

__all__ = ["StreamWriter"]

log = logging.getLogger("dao.net.uplink")


class StreamWriter(_SocketThread):
    """Write frames received on a ZeroMQ PULL socket into a local stream, from a thread.

    Parameters
    ----------
    name : str
        Name (or path) of the local source stream.
    address : str
        ZeroMQ endpoint to bind; ``tcp://127.0.0.1:*`` (loopback, a free port) by default.
    check : callable
        ``check(identity: bytes) -> bool``: whether the sender of a frame holds the write
        lease. Called for every frame (keep it fast, e.g. cached for a fraction of a second).

    Attributes
    ----------
    address : str
        The bound endpoint, port resolved.
    written, refused, mismatched : int
        Frames written; dropped for want of a lease; dropped for another shape or dtype.
    malformed : collections.Counter
        Messages dropped as malformed, by reason.
    error : BaseException or None
        The last unexpected error of the thread, if any.

    Raises
    ------
    BindError
        ``address`` cannot be bound.
    """

    def __init__(self, name: str, address: str = "tcp://127.0.0.1:*", *,
                 check: Callable[[bytes], bool]) -> None:
        self.name = name
        self.check = check
        self.written = 0
        self.refused = 0
        self.mismatched = 0
        self.malformed: Counter[str] = Counter()
        self.error: BaseException | None = None
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, 64)
            self._sock.setsockopt(zmq.MAXMSGSIZE, 2**31)  # no frame is larger than 2 GiB
            self._sock.bind(address)
            self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            self._ctx.term()
            raise BindError(address, str(exc)) from exc
        self._start_thread(f"dao-writer-{name}")

    def __repr__(self) -> str:
        return f"StreamWriter({self.name!r}, {self.address!r}, written={self.written})"

    def counters(self) -> dict[str, Any]:
        """``written``, ``refused``, ``mismatched``, ``malformed`` (total) and
        ``malformed_by_reason``."""
        return {"written": self.written, "refused": self.refused,
                "mismatched": self.mismatched, "malformed": sum(self.malformed.values()),
                "malformed_by_reason": dict(self.malformed)}

    def _run(self) -> None:
        from dao.streams.stream import shm

        sock = self._sock
        dst = None
        ident = None
        try:
            while not self._stop.is_set():
                if not sock.poll(int(_POLL_S * 1000)):
                    continue
                parts = sock.recv_multipart(copy=False)
                if len(parts) != 1 + wire.NPARTS:
                    self.malformed["parts"] += 1
                    continue
                if not self.check(parts[0].bytes):
                    self.refused += 1
                    continue
                try:
                    got = wire.decode(parts[1:])
                except wire.WireError as exc:
                    self.malformed[exc.reason] += 1
                    continue
                if dst is None or _identity(dst.path) != ident:  # first, or re-created
                    if dst is not None:
                        with contextlib.suppress(Exception):
                            dst.close()
                    try:
                        dst = shm(self.name)
                    except (StreamError, OSError, ValueError) as exc:
                        dst = None
                        self.error = exc
                        continue
                    ident = _identity(dst.path)
                if got.shape != dst.shape or got.dtype != dst.dtype:
                    self.mismatched += 1
                    log.warning("writer %s: dropped a %s %s frame from a mirror: the stream "
                                "holds %s %s", self.name, got.dtype, got.shape, dst.dtype,
                                dst.shape)
                    continue
                cnt2 = got.cnt2 - 2**64 if got.cnt2 >= 2**63 else got.cnt2
                dst.set_data(got.data, cnt2=cnt2, atime_ns=got.time_ns)
                self.written += 1
        except BaseException as exc:  # pragma: no cover - reported, not raised in a thread
            self.error = exc
        finally:
            sock.close(0)
            if dst is not None:
                with contextlib.suppress(Exception):
                    dst.close()

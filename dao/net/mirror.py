"""Mirror a stream to another machine over ZeroMQ (issue 13, spec ``control-and-network.md``
section 4).

- :class:`StreamPublisher` follows a local stream in order (its own semaphore and FIFO
  cursor) and sends every frame on a ZeroMQ PUB socket in the :mod:`dao.net.wire` format
  (never pickled), with a sequence number; when the stream is quiet it sends a tiny heartbeat
  every :data:`HEARTBEAT_S` seconds so that mirrors know the link is alive.
- :class:`Mirror` subscribes to a publisher and writes the frames it receives into a local
  stream, keeping the source's frame id (``cnt2``) and write time, and records freshness:
  link state, age of the newest frame, frames lost and malformed, source counter
  (:meth:`Mirror.status`).

Sockets bind and connect on loopback unless given another address.

A heartbeat is a one-part message of :data:`HEARTBEAT_SIZE` bytes: ``b"DAOH"``, then the
source's frame counter (uint64) and the publisher's clock (int64 ns since the epoch), both
little-endian. It carries no sequence number, so it never counts as a lost frame.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from typing import Any

import numpy as np
import zmq

from dao.errors import DaoError, StreamError
from dao.net import wire

__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_S",
    "HEARTBEAT_SIZE",
    "MirrorError",
    "BindError",
    "StreamPublisher",
    "Mirror",
]

#: First four bytes of a heartbeat message.
HEARTBEAT = b"DAOH"
#: A heartbeat: magic, source cnt0 (uint64), publisher time (int64 ns since the epoch).
_HB = struct.Struct("<4sQq")
#: Size of a heartbeat message in bytes.
HEARTBEAT_SIZE = _HB.size
#: Seconds without a message after which a publisher sends a heartbeat.
HEARTBEAT_S = 0.5

_POLL_S = 0.05  # seconds between checks of the stop flag in both threads
_MODES = ("latest", "every")


class MirrorError(DaoError):
    """A stream publisher or mirror cannot be set up."""


class BindError(MirrorError, OSError):
    """A publisher cannot bind its address (port already in use, bad address...).

    Attributes
    ----------
    address : str
        The address that was refused.
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"cannot bind a stream publisher on {address}: {reason}; pick another port, or "
            "use port '*' (e.g. tcp://127.0.0.1:*) to let the system choose one"
        )
        self.address = address


def heartbeat(cnt0: int, time_ns: int | None = None) -> bytes:
    """A heartbeat message (one part).

    Parameters
    ----------
    cnt0 : int
        Frame counter of the source stream (0 if none).
    time_ns : int, optional
        Publisher time in integer ns since the epoch; default now.
    """
    return _HB.pack(HEARTBEAT, int(cnt0) % 2**64, time.time_ns() if time_ns is None else time_ns)


def _is_heartbeat(parts: list) -> tuple[int, int] | None:
    """(cnt0, time_ns) if ``parts`` is a heartbeat, else None."""
    if len(parts) != 1:
        return None
    try:
        mv = memoryview(parts[0])
    except TypeError:
        return None
    if mv.nbytes != HEARTBEAT_SIZE:
        return None
    magic, cnt0, t = _HB.unpack(mv.tobytes())
    return (cnt0, t) if magic == HEARTBEAT else None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class StreamPublisher:
    """Publish every frame of a local stream on a ZeroMQ PUB socket, from a thread.

    The thread follows the stream in order on its own semaphore, reads each frame into a
    buffer of its own (one copy, never torn) and sends it without a further copy
    (``copy=False, track=True``); a buffer is reused only once ZeroMQ is done with it, so a
    frame is never changed while it is being sent. A subscriber too slow to keep up loses
    frames at the send high-water mark (counted by its sequence gaps): the publisher never
    blocks. If the stream file is replaced (re-created, e.g. with another shape), the
    publisher reopens it and goes on.

    Parameters
    ----------
    name : str
        Name (or path) of the local stream to publish.
    address : str
        ZeroMQ endpoint to bind; ``tcp://127.0.0.1:*`` (loopback, a free port) by default.
    sndhwm : int
        Send high-water mark, in messages queued per subscriber before frames are dropped.

    Attributes
    ----------
    address : str
        The bound endpoint, port resolved (e.g. ``tcp://127.0.0.1:40123``).
    sent : int
        Frames sent (heartbeats not included).
    heartbeats : int
        Heartbeats sent.
    overwrites : int
        Times the local writer lapped the publisher (frames skipped at the source).
    error : BaseException or None
        The last unexpected error of the thread (which goes on), if any.

    Raises
    ------
    StreamNotFoundError
        No local stream ``name``.
    BindError
        ``address`` cannot be bound (e.g. the port is in use).
    """

    def __init__(self, name: str, address: str = "tcp://127.0.0.1:*", sndhwm: int = 64) -> None:
        from dao.streams.stream import shm

        self.name = name
        self.sent = 0
        self.heartbeats = 0
        self.overwrites = 0
        self.error: BaseException | None = None
        self._src = shm(name)  # StreamNotFoundError for an unknown name
        self._ident = _identity(self._src.path)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.SNDHWM, int(sndhwm))
            self._sock.bind(address)
            self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            self._ctx.term()
            self._src.close()
            raise BindError(address, str(exc)) from exc
        self._src.claim_semaphore()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"dao-publish-{name}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"StreamPublisher({self.name!r}, {self.address!r}, sent={self.sent})"

    def __enter__(self) -> StreamPublisher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    # -- thread ------------------------------------------------------------------------------
    def _buffers(self) -> list[list]:
        return [[np.empty(self._src.shape, self._src.dtype), None] for _ in range(2)]

    def _reopen(self) -> bool:
        """Reopen the stream if its file was replaced; True if it was."""
        from dao.streams.stream import shm

        ident = _identity(self._src.path)
        if ident is None or ident == self._ident:
            return False
        try:
            new = shm(self._src.path)
        except (StreamError, OSError, ValueError):
            return False  # being created: next time
        new.claim_semaphore()
        with contextlib.suppress(Exception):
            self._src.close()
        self._src, self._ident = new, ident
        return True

    def _run(self) -> None:
        sock = self._sock
        bufs = self._buffers()
        turn = 0
        seq = 0
        last_send = 0.0
        try:
            while not self._stop.is_set():
                try:
                    status, _ = self._src.get_data_next(
                        wait=True, timeout=_POLL_S, out=self._free(bufs, turn)
                    )
                except StreamError:  # the stream was replaced or closed under us
                    status = None
                if status is None or status == self._src.DAO_TIMEOUT:
                    if self._reopen():
                        bufs, turn = self._buffers(), 0
                        if self._src.counter > 0:  # frames written before we reopened it:
                            self._src.get_data(out=bufs[0][0])  # send the newest
                            seq = self._send(bufs[0], seq)
                            last_send, turn = time.monotonic(), 1
                        continue
                    if time.monotonic() - last_send >= HEARTBEAT_S:
                        with contextlib.suppress(zmq.ZMQError):
                            sock.send(heartbeat(self._src.counter), zmq.NOBLOCK, copy=True)
                            self.heartbeats += 1
                        last_send = time.monotonic()
                    if status is None:
                        self._stop.wait(_POLL_S)
                    continue
                if status == self._src.DAO_OVERWRITE:
                    self.overwrites += 1
                seq = self._send(bufs[turn], seq)
                last_send = time.monotonic()
                turn ^= 1
        except BaseException as exc:  # pragma: no cover - reported, not raised in a thread
            self.error = exc
        finally:
            sock.close(0)
            with contextlib.suppress(Exception):
                self._src.close()

    def _send(self, buf: list, seq: int) -> int:
        """Send the frame in ``buf`` (just read: its metadata are in ``last_read``) with
        sequence number ``seq``, keeping the tracker in ``buf``; returns the next ``seq``."""
        info = self._src.last_read
        parts = wire.encode(buf[0], info.cnt0, info.cnt2 % 2**64, info.time_ns, seq)
        try:
            buf[1] = self._sock.send_multipart(parts, zmq.NOBLOCK, copy=False, track=True)
        except zmq.Again:  # cannot happen with PUB (it drops), but never block
            buf[1] = None
        self.sent += 1
        return seq + 1

    def _free(self, bufs: list[list], turn: int) -> np.ndarray:
        """The buffer to read the next frame into, once ZeroMQ no longer reads it (a fresh
        one if it still does after 1 s: the old one stays alive until sent)."""
        buf = bufs[turn]
        tracker = buf[1]
        if tracker is not None and not tracker.done:
            try:
                tracker.wait(1.0)
            except zmq.NotDone:
                buf[0] = np.empty_like(buf[0])
        buf[1] = None
        return buf[0]

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the socket and the stream (the stream file stays).

        Parameters
        ----------
        timeout : float
            Longest wait for the thread, in seconds.
        """
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            with contextlib.suppress(zmq.ZMQError):
                self._ctx.term()

    close = stop


class Mirror:
    """Keep a local stream up to date with a remote one, from a thread.

    A SUB socket connected to a :class:`StreamPublisher` receives frames and heartbeats; each
    frame is checked (:class:`dao.net.wire.Receiver`: malformed messages are dropped and
    counted, never raised) and written into the local stream ``local_name`` with the source's
    frame id (``cnt2``) and write time. The local stream is created on the first frame with
    the source's shape and dtype, and re-created when they change. The source's frame counter
    of the newest frame is kept in :attr:`source_cnt0` and in the local stream's keyword
    ``src_cnt0``. The socket reconnects by itself when a publisher comes back on the address.

    Parameters
    ----------
    address : str
        The publisher's endpoint, e.g. ``tcp://127.0.0.1:40123``.
    local_name : str
        Name (or path) of the local mirror stream. An existing stream of that name is
        replaced at the first frame if its shape or dtype differ, and removed by :meth:`close`.
    mode : {"latest", "every"}
        ``"latest"``: keep only the newest frame: a small receive queue, drained to the newest
        frame before each write (frames in between are skipped, counted in ``skipped``).
        ``"every"``: write every frame received, in order (a slow mirror loses frames at the
        queues, counted in ``lost``).
    depth : int
        FIFO depth of the local stream.
    down_after : float
        Seconds without a frame or heartbeat after which the link is reported ``"down"``.
    rcvhwm : int, optional
        Receive high-water mark in messages; default 4 for ``"latest"``, 1000 for ``"every"``.

    Attributes
    ----------
    source_cnt0 : int or None
        Frame counter of the source for the newest frame (or heartbeat) received.
    written : int
        Frames written to the local stream.
    skipped : int
        Frames received but not written (``"latest"``: a newer one was already queued).
    error : BaseException or None
        The last error writing the local stream (the thread goes on), if any.

    Raises
    ------
    ValueError
        ``mode`` is not ``"latest"`` or ``"every"``.
    MirrorError
        ``address`` is not a valid ZeroMQ endpoint.
    """

    def __init__(
        self,
        address: str,
        local_name: str,
        mode: str = "latest",
        *,
        depth: int = 1,
        down_after: float = 1.0,
        rcvhwm: int | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mirror mode must be 'latest' or 'every', not {mode!r}")
        self.address = address
        self.local_name = local_name
        self.mode = mode
        self.depth = int(depth)
        self.down_after = float(down_after)
        self.source_cnt0: int | None = None
        self.written = 0
        self.skipped = 0
        self.heartbeats = 0
        self.error: BaseException | None = None
        self._receiver = wire.Receiver()
        self._last_msg: float | None = None  # monotonic time of the last frame or heartbeat
        self._newest_ns: int | None = None  # source write time of the newest frame
        self._local = None
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, rcvhwm or (4 if mode == "latest" else 1000))
            self._sock.setsockopt(zmq.RECONNECT_IVL, 100)
            self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            self._ctx.term()
            raise MirrorError(f"cannot connect a mirror to {address!r}: {exc}") from exc
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"dao-mirror-{local_name}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"Mirror({self.address!r}, {self.local_name!r}, mode={self.mode!r})"

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    @property
    def counters(self) -> wire.WireCounters:
        """What the receiver counted (received, malformed by reason, lost, resets)."""
        return self._receiver.counters

    def status(self) -> dict[str, Any]:
        """Freshness of the mirror.

        Returns
        -------
        dict
            ``link``: ``"up"`` if a frame or heartbeat came within ``down_after`` seconds,
            else ``"down"``; ``age_s``: seconds between the newest frame's source write time
            and now (clocks of both machines: NTP/PTP matter), None before the first frame;
            ``silence_s``: seconds since the last message (None if none); ``received``:
            valid frames; ``written``, ``skipped``: see the attributes; ``lost``: frames
            missing from the publisher's sequence numbers; ``malformed``: messages dropped
            (``malformed_by_reason`` by :attr:`dao.net.wire.WireError.reason`); ``resets``:
            publisher restarts seen; ``heartbeats``; ``source_cnt0``; ``mode``.
        """
        c = self._receiver.counters
        last = self._last_msg
        silence = None if last is None else time.monotonic() - last
        newest = self._newest_ns
        return {
            "link": "up" if silence is not None and silence <= self.down_after else "down",
            "age_s": None if newest is None else (time.time_ns() - newest) / 1e9,
            "silence_s": silence,
            "received": c.received,
            "written": self.written,
            "skipped": self.skipped,
            "lost": c.lost,
            "malformed": c.dropped,
            "malformed_by_reason": dict(c.malformed),
            "resets": c.resets,
            "heartbeats": self.heartbeats,
            "source_cnt0": self.source_cnt0,
            "mode": self.mode,
        }

    # -- thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(int(_POLL_S * 1000)):
                    continue
                newest = None
                while True:  # drain what is queued
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    got = self._feed(parts)
                    if got is None:
                        continue
                    if self.mode == "every":
                        self._write(got)
                    else:
                        if newest is not None:
                            self.skipped += 1
                        newest = got
                if newest is not None:
                    self._write(newest)
        except BaseException as exc:  # pragma: no cover - reported, not raised in a thread
            self.error = exc
        finally:
            sock.close(0)

    def _feed(self, parts: list) -> wire.WireFrame | None:
        hb = _is_heartbeat(parts)
        if hb is not None:
            self._last_msg = time.monotonic()
            self.heartbeats += 1
            self.source_cnt0 = hb[0]
            return None
        got = self._receiver.feed(parts)
        if got is not None:
            self._last_msg = time.monotonic()
        return got

    def _write(self, got: wire.WireFrame) -> None:
        from dao.streams.stream import shm

        try:
            local = self._local
            if local is None or local.shape != got.shape or local.dtype != got.dtype:
                if local is not None:
                    local.close()
                self._local = None
                local = shm(
                    self.local_name, np.zeros(got.shape, got.dtype), depth=self.depth,
                    replace=True,
                )
                self._local = local
            cnt2 = got.cnt2 - 2**64 if got.cnt2 >= 2**63 else got.cnt2
            local.set_data(got.data, cnt2=cnt2, atime_ns=got.time_ns)
            local.keywords["src_cnt0"] = int(got.cnt0)
        except Exception as exc:  # the link goes on; the error is kept for status
            self.error = exc
            return
        self.written += 1
        self.source_cnt0 = got.cnt0
        self._newest_ns = got.time_ns

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread, close the socket and delete the local mirror stream.

        Parameters
        ----------
        timeout : float
            Longest wait for the thread, in seconds.
        """
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread.is_alive():
            return  # still writing: leave the stream to it
        with contextlib.suppress(zmq.ZMQError):
            self._ctx.term()
        local, self._local = self._local, None
        if local is not None:
            with contextlib.suppress(StreamError, OSError):
                local.delete()

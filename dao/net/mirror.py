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

import collections
import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from dao.errors import DaoError, StreamError
from dao.net import wire

__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_S",
    "HEARTBEAT_SIZE",
    "queue_frames",
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

log = logging.getLogger("dao.net.mirror")

_POLL_S = 0.05  # seconds between checks of the stop flag in both threads
_MODES = ("latest", "every")
_NBUF = 4  # frames a publisher may have in flight (read, not yet sent by ZeroMQ)


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


def queue_frames(frame_bytes: int, budget: int = 64 * 2**20) -> int:
    """How many frames of ``frame_bytes`` bytes a queue holds: ``budget`` bytes' worth,
    at least 16 and at most 1000."""
    return int(min(1000, max(16, budget // max(1, frame_bytes))))


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


class _SocketThread:
    """A daemon thread that owns a ZeroMQ context and its socket (publisher, writer)."""

    _ctx: zmq.Context

    def _start_thread(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread, which closes its socket and stream (the stream file stays).

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


class StreamPublisher(_SocketThread):
    """Publish every frame of a local stream on a ZeroMQ PUB socket, from a thread.

    The thread follows the stream in order on its own semaphore, reads each frame into a
    buffer of its own (one copy, never torn) and sends it without a further copy
    (``copy=False, track=True``); a buffer is reused only once ZeroMQ is done with it, so a
    frame is never changed while it is being sent. A subscriber too slow to keep up loses
    frames at the send high-water mark (counted by its sequence gaps): the publisher never
    blocks. A new subscriber is sent the newest frame at once (the socket is an XPUB, which
    sees subscriptions), so a mirror of a quiet stream is not left empty. If the stream file
    is replaced (re-created, e.g. with another shape), the publisher reopens it and goes on.

    Parameters
    ----------
    name : str
        Name (or path) of the local stream to publish.
    address : str
        ZeroMQ endpoint to bind; ``tcp://127.0.0.1:*`` (loopback, a free port) by default.
    sndhwm : int, optional
        Send high-water mark, in frames queued per subscriber before frames are dropped;
        default :func:`queue_frames` of the stream's frame size (1000 frames of 64x64 float32,
        16 of 1024x1024: at most about 64 MiB per subscriber, 0.1 s at 10 kHz).

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

    def __init__(self, name: str, address: str = "tcp://127.0.0.1:*",
                 sndhwm: int | None = None) -> None:
        from dao.streams.stream import shm

        self.name = name
        self.sent = 0
        self.heartbeats = 0
        self.overwrites = 0
        self.error: BaseException | None = None
        self._src = shm(name)  # StreamNotFoundError for an unknown name
        self._ident = _identity(self._src.path)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.XPUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.SNDHWM, int(sndhwm or queue_frames(
                int(np.prod(self._src.shape)) * self._src.dtype.itemsize)))
            self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, repeats too
            self._sock.bind(address)
            self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            self._ctx.term()
            self._src.close()
            raise BindError(address, str(exc)) from exc
        self._src.claim_semaphore()
        self._start_thread(f"dao-publish-{name}")

    def __repr__(self) -> str:
        return f"StreamPublisher({self.name!r}, {self.address!r}, sent={self.sent})"

    def __enter__(self) -> StreamPublisher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- thread ------------------------------------------------------------------------------
    def _buffers(self) -> list[list]:
        return [[np.empty(self._src.shape, self._src.dtype), None] for _ in range(_NBUF)]

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
                if self._subscribed() and self._src.counter > 0 and status in (
                    None, self._src.DAO_TIMEOUT
                ):  # a newcomer, nothing new to send: give it the newest frame
                    self._src.get_data(out=self._free(bufs, turn))
                    seq = self._send(bufs[turn], seq)
                    last_send, turn = time.monotonic(), (turn + 1) % _NBUF
                    continue
                if status is None or status == self._src.DAO_TIMEOUT:
                    if self._reopen():
                        bufs, turn = self._buffers(), 0
                        if self._src.counter > 0:  # frames written before we reopened it:
                            self._src.get_data(out=bufs[0][0])  # send the newest
                            seq = self._send(bufs[0], seq)
                            last_send, turn = time.monotonic(), 1 % _NBUF
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
                turn = (turn + 1) % _NBUF
        except BaseException as exc:  # pragma: no cover - reported, not raised in a thread
            self.error = exc
        finally:
            sock.close(0)
            with contextlib.suppress(Exception):
                self._src.close()

    def _subscribed(self) -> bool:
        """Whether a subscriber joined since the last call (subscription messages drained)."""
        joined = False
        while self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # no exception when empty
            if self._sock.recv(zmq.NOBLOCK)[:1] == b"\x01":
                joined = True
        return joined

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

#: Paths of the local streams the mirrors of this process write.
_ACTIVE: set[str] = set()


def _claim_local(local_name: str) -> str:
    """The path of a mirror's local stream, refused if a live process (or another mirror of
    this one) writes it: two writers would mix their frames, and a bidirectional mirror would
    send the other's frames back to its source, which sends them back again."""
    from dao.streams.stream import stream_holders, stream_path

    path = stream_path(local_name)
    if path in _ACTIVE:
        raise MirrorError(f"another mirror of this process writes {path}: give this one "
                          "another local name (local_name=..., --local)")
    try:
        writers = [p for p in stream_holders(path).writers if p != os.getpid()]
    except (OSError, StreamError, ValueError):
        writers = []
    if writers:
        raise MirrorError(f"{path} is written by pid {', '.join(map(str, writers))} (another "
                          "mirror, or a program): give this mirror another local name "
                          "(local_name=..., --local), or stop that process")
    _ACTIVE.add(path)
    return path


class _Recent:
    """A bounded set of recent write times (ns): which frames one side of a bidirectional
    mirror wrote itself (thread-safe enough under the GIL: one thread adds, one looks up)."""

    def __init__(self, size: int = 4096) -> None:
        self._set: set[int] = set()
        self._order: collections.deque[int] = collections.deque()
        self._size = size

    def add(self, t: int) -> None:
        if len(self._order) >= self._size:
            self._set.discard(self._order.popleft())
        self._order.append(t)
        self._set.add(t)

    def __contains__(self, t: int) -> bool:
        return t in self._set


class Mirror:
    """Keep a local stream up to date with a remote one, from a thread.

    A SUB socket connected to a :class:`StreamPublisher` receives frames and heartbeats; each
    frame is checked (:class:`dao.net.wire.Receiver`: malformed messages are dropped and
    counted, never raised) and written into the local stream ``local_name`` with the source's
    frame id (``cnt2``) and write time. The local stream is created with ``shape`` and
    ``dtype`` if given, else at the first frame, and re-created when the source's shape or
    dtype change. The socket reconnects by itself when a publisher comes back on the address;
    :meth:`connect` moves it to another address.

    Freshness is kept in :meth:`status` and, for other processes (``dao ls``), in keywords of
    the local stream, refreshed about ten times a second: ``src_cnt0`` (the source's frame
    counter), ``mirror_rx_ns`` (wall time of the last message received, ns since the epoch),
    ``mirror_down_s`` (``down_after``) and ``mirror_lost``.

    Bidirectional: with ``uplink`` (the address of the source's
    :class:`~dao.net.uplink.StreamWriter`), frames that local writers put into the mirror are
    sent back to the source, from a second thread that follows the local stream in order.
    They are sent only while ``lease()`` returns this client's lease (else counted in
    ``not_sent`` and logged); the mirror's own writes are never sent back, and the source's
    echo of a frame sent from here is not written again (``echoes``).

    Parameters
    ----------
    address : str
        The publisher's endpoint, e.g. ``tcp://127.0.0.1:40123``.
    local_name : str
        Name (or path) of the local mirror stream. An existing stream of that name is
        replaced if its shape or dtype differ, and removed by :meth:`close`.
    mode : {"latest", "every"}
        ``"latest"``: keep only the newest frame: a small receive queue, drained to the newest
        frame before each write (frames in between are skipped, counted in ``skipped``).
        ``"every"``: write every frame received, in order; every source frame that does not
        reach the local stream (dropped at a full queue, overwritten at the source before it
        was sent, or written while the link was down) is counted in ``lost``, from the gaps in
        the source's frame counter.
    depth : int
        FIFO depth of the local stream.
    down_after : float
        Seconds without a frame or heartbeat after which the link is reported ``"down"``.
    rcvhwm : int, optional
        Receive high-water mark in messages; default 4 for ``"latest"``; for ``"every"``,
        :func:`queue_frames` of the frame size if ``shape`` is given, else 1000.
    shape, dtype : optional
        The source's shape and dtype, to create the local stream at once (zeros, counter 0).
    uplink : str, optional
        Endpoint of the source's writer: makes the mirror bidirectional.
    lease : callable, optional
        Returns the lease identity (bytes) to send with each frame, or None when this client
        holds no write lease. Required with ``uplink``.

    Attributes
    ----------
    source_cnt0 : int or None
        Frame counter of the source for the newest frame (or heartbeat) received.
    written : int
        Frames written to the local stream.
    skipped : int
        Frames received but not written (``"latest"``: a newer one was already queued).
    duplicates : int
        Frames received again (the newest frame is re-sent to each new subscriber).
    gaps : int
        Source frames skipped between two frames received (gaps in the source's ``cnt0``):
        ``lost`` in ``"every"`` mode.
    uplinked, not_sent, echoes : int
        Bidirectional: local frames sent to the source; local frames not sent (no lease, or
        the send queue full); source frames not written because they came from here.
    error : BaseException or None
        The last error writing the local stream (the thread goes on), if any.

    Raises
    ------
    ValueError
        ``mode`` is not ``"latest"`` or ``"every"``, or ``uplink`` without ``lease``.
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
        shape: tuple[int, ...] | None = None,
        dtype: Any = None,
        uplink: str | None = None,
        lease: Callable[[], bytes | None] | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mirror mode must be 'latest' or 'every', not {mode!r}")
        if uplink is not None and lease is None:
            raise ValueError("a bidirectional mirror (uplink=...) needs lease=, the callable "
                             "giving this client's write lease")
        self.address = address
        self.local_name = local_name
        self.mode = mode
        self.depth = int(depth)
        self.down_after = float(down_after)
        self.uplink = uplink
        self.source_cnt0: int | None = None
        self.written = 0
        self.skipped = 0
        self.duplicates = 0
        self.gaps = 0
        self._src_last: int | None = None  # source cnt0 of the newest frame received
        self.heartbeats = 0
        self.uplinked = 0
        self.not_sent = 0
        self.echoes = 0
        self.error: BaseException | None = None
        self._lease = lease
        self._receiver = wire.Receiver()
        self._last_msg: float | None = None  # monotonic time of the last frame or heartbeat
        self._last_msg_ns = 0  # the same, wall clock
        self._newest: tuple[int, int] | None = None  # (cnt0, source write time) written last
        self._newest_ns: int | None = None  # source write time of the newest frame
        self._own = _Recent()  # write times of the frames this mirror wrote locally
        self._sent = _Recent()  # write times of the local frames sent to the source
        self._retarget: tuple[str, str | None] | None = None
        self._kw_at = 0.0
        self._local = None
        self._path = _claim_local(local_name)
        self._stop = threading.Event()
        try:
            if shape is not None:
                self._create(tuple(shape), np.dtype(dtype))
        except BaseException:
            _ACTIVE.discard(self._path)
            raise
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            if rcvhwm is None:
                rcvhwm = 4 if mode == "latest" else 1000 if shape is None else queue_frames(
                    int(np.prod(shape)) * np.dtype(dtype).itemsize)
            self._sock.setsockopt(zmq.RCVHWM, int(rcvhwm))
            self._sock.setsockopt(zmq.RECONNECT_IVL, 100)
            self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            self._ctx.term()
            self._delete_local()
            _ACTIVE.discard(self._path)
            raise MirrorError(f"cannot connect a mirror to {address!r}: {exc}") from exc
        self._thread = threading.Thread(
            target=self._run, name=f"dao-mirror-{local_name}", daemon=True
        )
        self._thread.start()
        self._up_thread: threading.Thread | None = None
        if uplink is not None:
            self._up_thread = threading.Thread(
                target=self._run_uplink, name=f"dao-uplink-{local_name}", daemon=True
            )
            self._up_thread.start()

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

    def connect(self, address: str, uplink: str | None = None) -> None:
        """Follow the publisher (and the writer, for a bidirectional mirror) to new addresses,
        e.g. after its server restarted on another port. Counters are kept.

        Parameters
        ----------
        address : str
            The publisher's new endpoint.
        uplink : str, optional
            The writer's new endpoint (bidirectional mirrors).
        """
        self._retarget = (address, uplink)

    def status(self) -> dict[str, Any]:
        """Freshness of the mirror.

        Returns
        -------
        dict
            ``link``: ``"up"`` if a frame or heartbeat came within ``down_after`` seconds,
            else ``"down"``; ``age_s``: seconds between the newest frame's source write time
            and now (clocks of both machines: NTP/PTP matter), None before the first frame;
            ``silence_s``: seconds since the last message (None if none); ``received``:
            valid frames; ``written``, ``skipped``, ``duplicates``: see the attributes;
            ``lost``: ``"every"``: source frames that never reached the local stream (gaps in
            the source's frame counter ``cnt0``), ``"latest"``: ``lost_on_wire``;
            ``lost_on_wire``: messages missing from the publisher's sequence numbers;
            ``malformed``:
            messages dropped (``malformed_by_reason`` by
            :attr:`dao.net.wire.WireError.reason`); ``resets``: publisher restarts seen;
            ``heartbeats``; ``source_cnt0``; ``mode``; ``address``; and for a bidirectional
            mirror ``uplinked``, ``not_sent``, ``echoes``.
        """
        c = self._receiver.counters
        last = self._last_msg
        silence = None if last is None else time.monotonic() - last
        newest = self._newest_ns
        out = {
            "link": "up" if silence is not None and silence <= self.down_after else "down",
            "age_s": None if newest is None else (time.time_ns() - newest) / 1e9,
            "silence_s": silence,
            "received": c.received,
            "written": self.written,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "lost": self.gaps if self.mode == "every" else c.lost,
            "lost_on_wire": c.lost,
            "malformed": c.dropped,
            "malformed_by_reason": dict(c.malformed),
            "resets": c.resets,
            "heartbeats": self.heartbeats,
            "source_cnt0": self.source_cnt0,
            "mode": self.mode,
            "address": self.address,
        }
        if self.uplink is not None:
            out.update(uplinked=self.uplinked, not_sent=self.not_sent, echoes=self.echoes)
        return out

    # -- downlink thread -----------------------------------------------------------------------
    def _run(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if self._retarget is not None:
                    sock = self._move(sock)
                if not sock.poll(int(_POLL_S * 1000)):
                    self._keywords()
                    continue
                newest = None
                while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # drain what is queued
                    got = self._feed(sock.recv_multipart(zmq.NOBLOCK, copy=False))
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
                self._keywords()
        except BaseException as exc:  # pragma: no cover - reported, not raised in a thread
            self.error = exc
        finally:
            sock.close(0)

    def _move(self, sock: zmq.Socket) -> zmq.Socket:
        """Connect to the address given to :meth:`connect` (in the thread owning the
        socket)."""
        (address, uplink), self._retarget = self._retarget, None
        if uplink is not None:
            self.uplink = uplink
        if address == self.address:
            return sock
        with contextlib.suppress(zmq.ZMQError):
            sock.disconnect(self.address)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            log.warning("mirror %s: cannot connect to %s: %s", self.local_name, address, exc)
            sock.connect(self.address)
            return sock
        log.info("mirror %s: publisher moved from %s to %s", self.local_name, self.address,
                 address)
        self.address = address
        return sock

    def _feed(self, parts: list) -> wire.WireFrame | None:
        hb = _is_heartbeat(parts)
        if hb is not None:
            self._last_msg = time.monotonic()
            self._last_msg_ns = time.time_ns()
            self.heartbeats += 1
            self.source_cnt0 = hb[0]
            return None
        got = self._receiver.feed(parts)
        if got is not None:
            self._last_msg = time.monotonic()
            self._last_msg_ns = time.time_ns()
        return got

    def _create(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        from dao.streams.stream import shm

        local, self._local = self._local, None
        if local is not None:
            local.close()
        self._local = shm(self.local_name, np.zeros(shape, dtype), depth=self.depth,
                          replace=True)
        self._kw_at = 0.0
        return self._local

    def _write(self, got: wire.WireFrame) -> None:
        key = (got.cnt0, got.time_ns)
        if key == self._newest:  # the newest frame, sent again for a newcomer
            self.duplicates += 1
            return
        last, self._src_last = self._src_last, got.cnt0
        if last is not None and got.cnt0 > last + 1:  # (a smaller cnt0: a re-created source)
            self.gaps += got.cnt0 - last - 1
        if got.time_ns in self._sent:  # our own frame, back from the source
            self.echoes += 1
            self._newest, self._newest_ns = key, got.time_ns
            self.source_cnt0 = got.cnt0
            return
        try:
            local = self._local
            if local is None or local.shape != got.shape or local.dtype != got.dtype:
                local = self._create(got.shape, got.dtype)
            cnt2 = got.cnt2 - 2**64 if got.cnt2 >= 2**63 else got.cnt2
            self._own.add(got.time_ns)
            local.set_data(got.data, cnt2=cnt2, atime_ns=got.time_ns)
        except Exception as exc:  # the link goes on; the error is kept for status
            self.error = exc
            return
        self.written += 1
        self._newest, self._newest_ns = key, got.time_ns
        self.source_cnt0 = got.cnt0

    def _keywords(self) -> None:
        """Refresh the freshness keywords (at most every 0.1 s)."""
        local = self._local
        now = time.monotonic()
        if local is None or now - self._kw_at < 0.1:
            return
        self._kw_at = now
        try:
            kw = local.keywords
            kw["src_cnt0"] = int(self.source_cnt0 or 0)
            kw["mirror_rx_ns"] = int(self._last_msg_ns)
            kw["mirror_down_s"] = float(self.down_after)
            kw["mirror_lost"] = int(self.gaps if self.mode == "every"
                                    else self._receiver.counters.lost)
        except Exception as exc:  # noqa: BLE001 - freshness is best effort; kept for status
            self.error = exc

    # -- uplink thread (bidirectional) ---------------------------------------------------------
    def _run_uplink(self) -> None:
        from dao.streams.stream import shm

        sock = None
        target = None
        reader = ident = None
        buf = None
        seq = 0
        warned = False
        try:
            while not self._stop.is_set():
                local = self._local
                if local is None:
                    self._stop.wait(_POLL_S)
                    continue
                if target != self.uplink:
                    if sock is not None:
                        sock.close(0)
                    sock = self._ctx.socket(zmq.PUSH)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a writer not there
                    sock.setsockopt(zmq.SNDHWM, 16)
                    sock.connect(self.uplink)
                    target = self.uplink
                now_ident = _identity(local.path)
                if reader is None or now_ident != ident:
                    if reader is not None:
                        reader.close()
                    try:
                        reader = shm(local.path)
                    except (StreamError, OSError, ValueError):
                        reader = None
                        self._stop.wait(_POLL_S)
                        continue
                    reader.claim_semaphore()
                    ident, buf = now_ident, np.empty(reader.shape, reader.dtype)
                try:
                    status, _ = reader.get_data_next(wait=True, timeout=_POLL_S, out=buf)
                except StreamError:
                    reader = None
                    continue
                if status not in (reader.DAO_SUCCESS, reader.DAO_OVERWRITE):
                    continue
                info = reader.last_read
                if info.time_ns in self._own:
                    continue  # written by the downlink: from the source, not for it
                lease = self._lease()
                if lease is None:
                    self.not_sent += 1
                    if not warned:
                        log.warning("mirror %s: a local write was not sent to the source: "
                                    "this client holds no write lease (acquire it first)",
                                    self.local_name)
                        warned = True
                    continue
                warned = False
                parts = wire.encode(buf, info.cnt0, info.cnt2 % 2**64, info.time_ns, seq)
                try:
                    sock.send_multipart([lease, *parts], zmq.NOBLOCK)
                except zmq.Again:  # the writer is not reachable now: never queue commands
                    self.not_sent += 1
                    continue
                self._sent.add(info.time_ns)
                self.uplinked += 1
                seq += 1
        except BaseException as exc:  # pragma: no cover - reported, not raised in a thread
            self.error = exc
        finally:
            if sock is not None:
                sock.close(0)
            if reader is not None:
                with contextlib.suppress(Exception):
                    reader.close()

    # -- end -------------------------------------------------------------------------------------
    def _delete_local(self) -> None:
        local, self._local = self._local, None
        if local is not None:
            with contextlib.suppress(StreamError, OSError):
                local.delete()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the threads, close the sockets and delete the local mirror stream.

        Parameters
        ----------
        timeout : float
            Longest wait for the threads, in seconds.
        """
        self._stop.set()
        for t in (self._thread, self._up_thread):
            if t is not None and t is not threading.current_thread():
                t.join(timeout)
        if self._thread.is_alive() or (self._up_thread and self._up_thread.is_alive()):
            return  # still writing: leave the stream to it
        with contextlib.suppress(zmq.ZMQError):
            self._ctx.term()
        self._delete_local()
        _ACTIVE.discard(self._path)

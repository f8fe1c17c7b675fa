"""The wire format of one frame sent between machines over ZeroMQ (issue 13, spec
``control-and-network.md`` section 4).

A frame travels as a ZeroMQ multipart message of exactly two parts, and is never pickled:

1. a fixed 64-byte little-endian header, described below;
2. the payload: the raw bytes of the C-contiguous array, in C order, exactly
   ``prod(shape) * itemsize`` bytes.

Byte layout of the header (all integers little-endian, no padding between fields):

======  ====  ========  ===========================================================
offset  size  type      field
======  ====  ========  ===========================================================
0       4     bytes     ``magic``: ``b"DAOF"`` (DAO Frame)
4       1     uint8     ``version``: format version, :data:`VERSION` (1)
5       1     uint8     ``flags``: reserved, 0 when sent, ignored when received
6       1     uint8     ``atype``: DAO data type code (1..12, see
                        :data:`dao.streams._layout.DTYPE_OF`)
7       1     uint8     ``ndim``: number of axes, 1..3
8       12    3 uint32  ``shape``: length of each axis in elements; the first ``ndim``
                        are >= 1, the unused ones are 0
20      4     uint32    reserved, 0 when sent, ignored when received (aligns what follows)
24      8     uint64    ``cnt0``: frame counter of the source stream (first frame is 1)
32      8     uint64    ``cnt2``: frame id of the source (e.g. camera frame number),
                        stored as in the stream file (uint64; -1 "no id" wraps to 2**64-1)
40      8     int64     ``time_ns``: write time of the frame in the source stream, integer
                        nanoseconds since the Unix epoch (CLOCK_REALTIME of the source machine)
48      8     uint64    ``nbytes``: payload size in bytes, ``prod(shape) * itemsize``
56      8     uint64    ``seq``: sequence number of the message from this publisher, +1 per
                        message sent, so a receiver can count messages lost on the way
======  ====  ========  ===========================================================

A receiver validates everything (:func:`decode`) and a malformed or foreign message is refused
with :class:`WireError`; :class:`Receiver` turns that into "dropped and counted"
(:class:`WireCounters`), never an exception.

Sending without copies::

    sock.send_multipart(encode(frame, cnt0, cnt2, time_ns, seq), copy=False)

and receiving without copies::

    got = receiver.feed(sock.recv_multipart(copy=False))   # WireFrame or None
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from dao.errors import DaoError
from dao.streams._layout import DTYPE_OF, atype_of

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER",
    "HEADER_SIZE",
    "NPARTS",
    "MAX_NDIM",
    "WireError",
    "WireFrame",
    "WireCounters",
    "Receiver",
    "encode",
    "encode_header",
    "decode",
    "decode_into",
]

#: First four bytes of every frame header.
MAGIC = b"DAOF"
#: Version of the wire format written by :func:`encode` (and the only one :func:`decode` reads).
VERSION = 1
#: The header as a :class:`struct.Struct` (see the module docstring for the fields).
HEADER = struct.Struct("<4sBBBB3IIQQqQQ")
#: Size of the header part in bytes.
HEADER_SIZE = 64
#: Number of ZeroMQ message parts of one frame (header, payload).
NPARTS = 2
#: Maximum number of axes of a frame (as in a DAO stream).
MAX_NDIM = 3

if HEADER.size != HEADER_SIZE:  # pragma: no cover - guards an edit of the format string
    raise RuntimeError(f"dao.net.wire header is {HEADER.size} bytes, expected {HEADER_SIZE}")

_U32 = 2**32
_U64 = 2**64
_I64 = 2**63


class WireError(DaoError, ValueError):
    """A message is not a valid DAO frame (wrong number of parts, truncated or foreign header,
    unknown dtype, shape and payload that disagree...), or a frame cannot be encoded.

    Attributes
    ----------
    reason : str
        A short key naming the problem, used to count drops by reason (:class:`WireCounters`):
        ``"parts"``, ``"buffer"``, ``"header_size"``, ``"magic"``, ``"version"``, ``"dtype"``,
        ``"ndim"``, ``"shape"``, ``"size"``, ``"payload_size"``, ``"mismatch"`` (for
        :func:`decode_into`) or ``"frame"`` (for :func:`encode`).
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class WireFrame(NamedTuple):
    """One frame received from the wire (returned by :func:`decode`)."""

    data: np.ndarray
    """The frame, a read-only view of the received payload (no copy) unless from
    :func:`decode_into`, where it is the destination array."""
    dtype: np.dtype
    """Data type of the frame (little-endian, one of the twelve of a DAO stream)."""
    shape: tuple[int, ...]
    """Shape of the frame, 1 to 3 axes, in elements."""
    cnt0: int
    """Frame counter of the source stream (the first frame written is 1)."""
    cnt2: int
    """Frame id of the source (uint64, as in the stream file)."""
    time_ns: int
    """Write time in the source stream, integer ns since the epoch (source's CLOCK_REALTIME)."""
    seq: int
    """Sequence number of the message from its publisher."""


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError) as exc:
        raise WireError(f"{name} must be an integer, got {value!r}", "frame") from exc
    if not low <= v < high:
        raise WireError(f"{name}={v} is out of range [{low}, {high})", "frame")
    return v


def encode_header(
    dtype: Any, shape: Sequence[int], cnt0: int, cnt2: int, time_ns: int, seq: int
) -> bytes:
    """The 64-byte header of a frame (see the module docstring for the layout).

    Parameters
    ----------
    dtype : numpy dtype or anything :class:`numpy.dtype` accepts
        One of the twelve little-endian dtypes of a DAO stream.
    shape : sequence of int
        1 to 3 axis lengths, each 1 .. 2**32-1 elements.
    cnt0 : int
        Frame counter of the source stream, 0 .. 2**64-1.
    cnt2 : int
        Frame id of the source, -2**63 .. 2**64-1; a negative value is stored as its uint64
        two's complement (as the stream file does: -1 becomes 2**64-1).
    time_ns : int
        Write time in integer ns since the epoch, int64.
    seq : int
        Sequence number of the message from this publisher, 0 .. 2**64-1.

    Raises
    ------
    TypeError
        For a dtype a DAO stream cannot hold.
    WireError
        For a shape or a counter out of range (``reason == "frame"``).
    """
    code = atype_of(dtype)
    shape = tuple(shape)
    if not 1 <= len(shape) <= MAX_NDIM:
        raise WireError(f"a frame has 1 to {MAX_NDIM} axes, got shape {shape}", "frame")
    dims = [_check_int("shape axis", n, 1, _U32) for n in shape]
    nbytes = math.prod(dims) * DTYPE_OF[code].itemsize
    return HEADER.pack(
        MAGIC,
        VERSION,
        0,
        code,
        len(dims),
        *(dims + [0] * (MAX_NDIM - len(dims))),
        0,
        _check_int("cnt0", cnt0, 0, _U64),
        _check_int("cnt2", cnt2, -_I64, _U64) % _U64,
        _check_int("time_ns", time_ns, -_I64, _I64),
        _check_int("nbytes", nbytes, 0, _U64),
        _check_int("seq", seq, 0, _U64),
    )


def encode(frame: np.ndarray, cnt0: int, cnt2: int, time_ns: int, seq: int) -> list:
    """The message parts of one frame: ``[header, payload]``, for
    ``socket.send_multipart(parts, copy=False)``.

    The payload is a flat ``uint8`` memoryview of ``frame``'s own memory: no copy is made.
    With ``copy=False`` ZeroMQ reads that memory when it actually sends, later, in its I/O
    thread: do not modify ``frame`` (e.g. let a writer overwrite the stream slot it views)
    until the message is sent (``send_multipart(..., track=True)`` returns a tracker that says
    when), or send a copy. Note that pyzmq copies small parts anyway (below
    ``zmq.COPY_THRESHOLD``, 64 KiB by default).

    Parameters
    ----------
    frame : numpy.ndarray
        The frame: 1 to 3 axes, C-contiguous, one of the twelve dtypes of a DAO stream.
    cnt0, cnt2, time_ns, seq : int
        Header fields, see :func:`encode_header` (``time_ns`` in integer ns since the epoch).

    Returns
    -------
    list
        ``[header, payload]``: 64 bytes, then a memoryview of ``frame.nbytes`` bytes.

    Raises
    ------
    WireError
        If ``frame`` is not a C-contiguous array (pass ``np.ascontiguousarray(frame)``: that
        copy is left to the caller on purpose), or has 0 or more than 3 axes, an empty axis, or
        counters out of range.
    TypeError
        For a dtype a DAO stream cannot hold (e.g. float16, bool, big-endian).
    """
    if not isinstance(frame, np.ndarray):
        raise WireError(f"a frame must be a numpy array, got {type(frame).__name__}", "frame")
    if not frame.flags.c_contiguous:
        raise WireError(
            "the frame is not C-contiguous; send np.ascontiguousarray(frame) (one copy)", "frame"
        )
    header = encode_header(frame.dtype, frame.shape, cnt0, cnt2, time_ns, seq)
    payload = memoryview(frame.reshape(-1).view(np.uint8))  # views, never copies (contiguous)
    return [header, payload]


def _buffer(part: Any, what: str) -> memoryview:
    try:
        mv = memoryview(part)
    except TypeError as exc:
        raise WireError(
            f"the {what} part is a {type(part).__name__}, not a bytes-like object", "buffer"
        ) from exc
    if not mv.c_contiguous:
        raise WireError(f"the {what} part is not a contiguous buffer", "buffer")
    return mv


def decode(parts: Sequence[Any]) -> WireFrame:
    """Validate the message parts of one frame and view its data, without copying.

    Parameters
    ----------
    parts : sequence
        The two parts ``[header, payload]`` as received: :class:`zmq.Frame` objects
        (``recv_multipart(copy=False)``), ``bytes`` or any contiguous bytes-like objects.

    Returns
    -------
    WireFrame
        ``data`` is a read-only numpy array viewing the payload buffer (it keeps the buffer
        alive); its memory may be unaligned, which numpy handles.

    Raises
    ------
    WireError
        If anything is wrong, with ``reason`` naming what: not 2 parts, not bytes-like,
        a header that is not 64 bytes, a wrong magic (a foreign message) or version, an
        unknown dtype code, 0 or more than 3 axes, an empty or stray axis, a declared payload
        size that disagrees with the shape and dtype, or a payload whose length disagrees with
        the declared size. No memory is allocated from declared sizes.
    """
    try:
        n = len(parts)
    except TypeError as exc:
        raise WireError(
            f"a frame message is a sequence of {NPARTS} parts, got {type(parts).__name__}",
            "parts",
        ) from exc
    if n != NPARTS:
        raise WireError(f"a frame message has {NPARTS} parts (header, payload), got {n}", "parts")
    head = _buffer(parts[0], "header")
    if head.nbytes != HEADER_SIZE:
        raise WireError(f"the header is {head.nbytes} bytes, expected {HEADER_SIZE}", "header_size")
    (magic, version, _flags, code, ndim, s0, s1, s2, _reserved,
     cnt0, cnt2, time_ns, nbytes, seq) = HEADER.unpack(head.tobytes())  # fmt: skip
    if magic != MAGIC:
        raise WireError(f"not a DAO frame: magic {magic!r}, expected {MAGIC!r}", "magic")
    if version != VERSION:
        raise WireError(
            f"unsupported wire format version {version}, this side reads {VERSION}", "version"
        )
    dtype = DTYPE_OF.get(code)
    if dtype is None:
        raise WireError(f"unknown DAO dtype code {code}, expected 1..{len(DTYPE_OF)}", "dtype")
    if not 1 <= ndim <= MAX_NDIM:
        raise WireError(f"ndim {ndim} is out of range 1..{MAX_NDIM}", "ndim")
    dims = (s0, s1, s2)
    shape = dims[:ndim]
    if min(shape) < 1 or any(dims[ndim:]):
        raise WireError(
            f"bad shape {dims} for ndim {ndim}: the used axes must be >= 1, the others 0",
            "shape",
        )
    expected = math.prod(shape) * dtype.itemsize
    if nbytes != expected:
        raise WireError(
            f"declared payload of {nbytes} bytes, but shape {shape} of {dtype} is {expected} bytes",
            "size",
        )
    body = _buffer(parts[1], "payload")
    if body.nbytes != nbytes:
        raise WireError(
            f"the payload is {body.nbytes} bytes, the header declares {nbytes}", "payload_size"
        )
    data = np.frombuffer(body, dtype=dtype).reshape(shape)
    if data.flags.writeable:
        data.flags.writeable = False  # a view of a received buffer: never written in place
    return WireFrame(data, dtype, shape, cnt0, cnt2, time_ns, seq)


def decode_into(parts: Sequence[Any], out: np.ndarray) -> WireFrame:
    """Validate a frame like :func:`decode` and copy its data into ``out`` (one copy: the
    mirror's write path into a preallocated buffer, e.g. a stream's frame).

    Parameters
    ----------
    parts : sequence
        The message parts, as for :func:`decode`.
    out : numpy.ndarray
        Writable destination with the frame's exact shape and dtype (byte order included).

    Returns
    -------
    WireFrame
        With ``data`` being ``out``.

    Raises
    ------
    WireError
        As :func:`decode`, and with ``reason == "mismatch"`` when the frame's shape or dtype
        differ from ``out``'s (nothing is written then).
    """
    got = decode(parts)
    if got.shape != out.shape or got.dtype != out.dtype:
        raise WireError(
            f"received a {got.shape} {got.dtype} frame for a {out.shape} {out.dtype} destination",
            "mismatch",
        )
    np.copyto(out, got.data)
    return got._replace(data=out)


@dataclass
class WireCounters:
    """What a receiver has seen: frames accepted, messages dropped, frames lost on the way.

    Attributes
    ----------
    received : int
        Valid frames accepted.
    malformed : collections.Counter
        Messages dropped, by :attr:`WireError.reason` (e.g. ``{"magic": 2}``).
    lost : int
        Frames missing from the publisher's sequence numbers (gaps between consecutive
        accepted frames), e.g. dropped by a ZeroMQ high-water mark.
    resets : int
        Times the sequence number went backwards or repeated (a restarted publisher); the
        count of lost frames restarts from there.
    last_seq : int or None
        Sequence number of the last accepted frame.
    """

    received: int = 0
    malformed: Counter = field(default_factory=Counter)
    lost: int = 0
    resets: int = 0
    last_seq: int | None = None

    @property
    def dropped(self) -> int:
        """Total number of malformed messages dropped."""
        return sum(self.malformed.values())


class Receiver:
    """The receiving end's checks: decode each message, drop and count what is malformed,
    count sequence gaps as lost frames. Never raises on a bad message.

    Parameters
    ----------
    out : numpy.ndarray, optional
        If given, each valid frame is copied into it (:func:`decode_into`); a frame of another
        shape or dtype is dropped with reason ``"mismatch"``.

    Attributes
    ----------
    counters : WireCounters
    last_error : WireError or None
        Why the latest dropped message was refused.
    """

    def __init__(self, out: np.ndarray | None = None) -> None:
        self.out = out
        self.counters = WireCounters()
        self.last_error: WireError | None = None

    def feed(self, parts: Sequence[Any]) -> WireFrame | None:
        """Decode one received message.

        Returns
        -------
        WireFrame or None
            The frame, or None if the message was malformed (counted in
            ``counters.malformed`` by reason, kept in :attr:`last_error`).
        """
        c = self.counters
        try:
            got = decode(parts) if self.out is None else decode_into(parts, self.out)
        except WireError as exc:
            c.malformed[exc.reason] += 1
            self.last_error = exc
            return None
        if c.last_seq is not None:
            if got.seq > c.last_seq:
                c.lost += got.seq - c.last_seq - 1
            else:
                c.resets += 1
        c.last_seq = got.seq
        c.received += 1
        return got

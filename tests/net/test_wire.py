"""The wire format of a frame (dao.net.wire): round trips without copies, over real ZeroMQ
sockets, and garbage refused with a WireError naming the problem, counted, never a crash."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dao.errors import DaoError
from dao.net.wire import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Receiver,
    WireError,
    WireFrame,
    decode,
    decode_into,
    encode,
    encode_header,
)
from dao.streams._layout import ATYPE_OF
from dao.testing import free_port

DTYPES = list(ATYPE_OF)
SHAPES = [(7,), (5, 3), (2, 3, 4)]


def _sample(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(42)
    n = int(np.prod(shape))
    if dtype.kind == "c":
        a = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    elif dtype.kind == "f":
        a = rng.standard_normal(n)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    return a.astype(dtype).reshape(shape)


def _bytes_parts(parts: list) -> list[bytes]:
    return [bytes(p) for p in parts]


def _header(**over) -> bytes:
    fields = dict(
        magic=MAGIC, version=VERSION, flags=0, atype=9, ndim=2, s0=4, s1=4, s2=0, reserved=0,
        cnt0=1, cnt2=2, time_ns=3, nbytes=64, seq=0,
    )  # fmt: skip
    fields.update(over)
    return HEADER.pack(*fields.values())


# --- round trips ---------------------------------------------------------------------------


def test_header_is_64_bytes_little_endian():
    assert HEADER.size == HEADER_SIZE == 64
    h = encode_header(np.float32, (4, 5), cnt0=0x0102, cnt2=-1, time_ns=-5, seq=9)
    assert h[:4] == b"DAOF" and h[4] == 1 and h[6] == ATYPE_OF[np.dtype("<f4")] and h[7] == 2
    assert struct.unpack_from("<3I", h, 8) == (4, 5, 0)
    assert struct.unpack_from("<Q", h, 24)[0] == 0x0102
    assert struct.unpack_from("<Q", h, 32)[0] == 2**64 - 1  # -1 "no id", as in the stream file
    assert struct.unpack_from("<q", h, 40)[0] == -5
    assert struct.unpack_from("<QQ", h, 48) == (80, 9)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_every_dtype_and_ndim(dtype, shape):
    a = _sample(dtype, shape)
    parts = encode(a, cnt0=123, cnt2=2**64 - 2, time_ns=1_700_000_000_123_456_789, seq=2**63)
    assert len(parts) == 2 and len(parts[0]) == HEADER_SIZE
    # Zero copy on the way out: the payload is the array's own memory.
    assert np.shares_memory(np.asarray(parts[1]), a)
    assert parts[1].nbytes == a.nbytes
    got = decode(parts)
    assert isinstance(got, WireFrame)
    assert got.dtype == a.dtype and got.shape == a.shape and got.data.shape == a.shape
    assert got.data.dtype == a.dtype
    np.testing.assert_array_equal(got.data, a)
    assert (got.cnt0, got.cnt2, got.time_ns, got.seq) == (
        123, 2**64 - 2, 1_700_000_000_123_456_789, 2**63,
    )  # fmt: skip
    # Zero copy on the way in: the data views the received buffer, read-only.
    payload = bytearray(bytes(parts[1]))
    got2 = decode([parts[0], payload])
    assert np.shares_memory(got2.data, np.frombuffer(payload, np.uint8))
    assert not got2.data.flags.writeable
    np.testing.assert_array_equal(got2.data, a)


def test_decode_into_copies_into_the_destination_and_checks_it():
    a = _sample(np.dtype("<f4"), (8, 8))
    parts = _bytes_parts(encode(a, 1, 2, 3, 4))
    out = np.zeros((8, 8), np.float32)
    got = decode_into(parts, out)
    assert got.data is out and got.cnt0 == 1 and got.seq == 4
    np.testing.assert_array_equal(out, a)
    for wrong in (np.zeros((8, 9), np.float32), np.zeros((8, 8), np.float64)):
        with pytest.raises(WireError, match="destination") as exc:
            decode_into(parts, wrong)
        assert exc.value.reason == "mismatch" and not wrong.any()


def test_encode_refuses_what_it_cannot_send_without_a_copy():
    a = np.zeros((4, 6), np.float32)
    with pytest.raises(WireError, match="C-contiguous"):
        encode(a[:, ::2], 0, 0, 0, 0)
    with pytest.raises(WireError, match="C-contiguous"):
        encode(np.asfortranarray(a), 0, 0, 0, 0)
    with pytest.raises(WireError, match="1 to 3 axes"):
        encode(np.zeros((2, 2, 2, 2), np.float32), 0, 0, 0, 0)
    with pytest.raises(WireError, match="1 to 3 axes"):
        encode(np.zeros((), np.float32), 0, 0, 0, 0)
    with pytest.raises(WireError, match="out of range"):
        encode(np.zeros((0, 3), np.float32), 0, 0, 0, 0)
    with pytest.raises(WireError, match="seq"):
        encode(a, 0, 0, 0, -1)
    with pytest.raises(WireError, match="time_ns"):
        encode(a, 0, 0, 2**63, 0)
    with pytest.raises(WireError, match="numpy array"):
        encode([1.0, 2.0], 0, 0, 0, 0)
    for bad in (np.float16, np.bool_, ">f4"):
        with pytest.raises(TypeError, match="unsupported dtype"):
            encode(np.zeros(3, bad), 0, 0, 0, 0)


def test_wire_error_is_a_dao_error_and_a_value_error():
    assert issubclass(WireError, DaoError) and issubclass(WireError, ValueError)


# --- real ZeroMQ sockets -------------------------------------------------------------------


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _pair(ctx, kind_out, kind_in):
    addr = f"tcp://127.0.0.1:{free_port()}"
    out = ctx.socket(kind_out)
    inp = ctx.socket(kind_in)
    for s in (out, inp):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, 5000)
        s.setsockopt(zmq.SNDTIMEO, 5000)
    out.bind(addr)
    if kind_in == zmq.SUB:
        inp.setsockopt(zmq.SUBSCRIBE, b"")
    inp.connect(addr)
    return out, inp


@pytest.mark.parametrize("shape", [(64, 64), (1024, 1024)])
def test_push_pull_round_trip_without_copies(ctx, shape):
    push, pull = _pair(ctx, zmq.PUSH, zmq.PULL)
    rx = Receiver()
    frames = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(3)]
    for seq, a in enumerate(frames):
        tracker = push.send_multipart(encode(a, seq + 1, 100 + seq, seq, seq), copy=False,
                                      track=True)  # fmt: skip
        parts = pull.recv_multipart(copy=False)
        got = rx.feed(parts)
        assert got is not None, rx.last_error
        # The data views the received zmq.Frame's buffer: no copy on the way in either.
        assert np.shares_memory(got.data, np.frombuffer(parts[1].buffer, np.uint8))
        tracker.wait(5)
        np.testing.assert_array_equal(got.data, a)
        assert (got.cnt0, got.cnt2, got.time_ns, got.seq) == (seq + 1, 100 + seq, seq, seq)
    assert rx.counters.received == 3 and rx.counters.lost == 0 and rx.counters.dropped == 0


def test_pub_sub_round_trip_counts_the_slow_joiner_gap(ctx):
    """A SUB joins late: the frames sent before it joined are not counted as lost (there is
    no previous frame), those after it all arrive in order."""
    pub, sub = _pair(ctx, zmq.PUB, zmq.SUB)
    a = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    out = np.zeros_like(a)
    rx = Receiver(out=out)
    seq, first = 0, None
    deadline = time.monotonic() + 5
    while first is None:  # send until the subscription is live
        assert time.monotonic() < deadline, "the subscriber never received a frame"
        pub.send_multipart(encode(a, seq, 0, time.time_ns(), seq), copy=False)
        seq += 1
        if sub.poll(20):
            first = rx.feed(sub.recv_multipart(copy=False))
    while sub.poll(50):  # frames in flight when the first one arrived
        rx.feed(sub.recv_multipart(copy=False))
    for _ in range(10):
        pub.send_multipart(encode(a + seq, seq, 0, time.time_ns(), seq), copy=False)
        seq += 1
    last = None
    while rx.counters.last_seq != seq - 1:
        assert sub.poll(5000), "a frame never arrived"
        last = rx.feed(sub.recv_multipart(copy=False))
    assert last is not None and last.data is out
    np.testing.assert_array_equal(out, a + seq - 1)
    assert rx.counters.lost == 0 and rx.counters.dropped == 0 and rx.counters.resets == 0


def test_garbage_on_a_real_socket_is_dropped_and_counted(ctx):
    push, pull = _pair(ctx, zmq.PUSH, zmq.PULL)
    rx = Receiver()
    a = np.ones((4, 4), np.float64)
    push.send_multipart([b"hello"])
    push.send_multipart([_header(magic=b"XXXX"), bytes(64)])
    push.send_multipart(encode(a, 1, 1, 1, 0), copy=False)
    got = [rx.feed(pull.recv_multipart(copy=False)) for _ in range(3)]
    assert got[:2] == [None, None] and got[2] is not None
    assert rx.counters.malformed == {"parts": 1, "magic": 1} and rx.counters.received == 1


# --- garbage -------------------------------------------------------------------------------


GOOD_PAYLOAD = bytes(64)  # 4 x 4 float32

BAD = {
    "random bytes": ([np.random.default_rng(0).bytes(64), b"xyz"], "magic", "not a DAO frame"),
    "truncated header": ([_header()[:40], GOOD_PAYLOAD], "header_size", "40 bytes"),
    "long header": ([_header() + b"\0", GOOD_PAYLOAD], "header_size", "65 bytes"),
    "wrong magic": ([_header(magic=b"DAOX"), GOOD_PAYLOAD], "magic", "magic"),
    "wrong version": ([_header(version=2), GOOD_PAYLOAD], "version", "version 2"),
    "dtype code 0": ([_header(atype=0), GOOD_PAYLOAD], "dtype", "dtype code 0"),
    "dtype code 13": ([_header(atype=13), GOOD_PAYLOAD], "dtype", "dtype code 13"),
    "ndim 0": ([_header(ndim=0), GOOD_PAYLOAD], "ndim", "ndim 0"),
    "ndim 4": ([_header(ndim=4), GOOD_PAYLOAD], "ndim", "ndim 4"),
    "empty axis": ([_header(s1=0, nbytes=0), b""], "shape", "bad shape"),
    "stray axis": ([_header(s2=1), GOOD_PAYLOAD], "shape", "bad shape"),
    "shape/size mismatch": ([_header(s0=5), GOOD_PAYLOAD], "size", "80 bytes"),
    "short payload": ([_header(), GOOD_PAYLOAD[:-1]], "payload_size", "payload is 63"),
    "long payload": ([_header(), GOOD_PAYLOAD + b"\0"], "payload_size", "payload is 65"),
    "huge declared size": (
        [_header(s0=2**32 - 1, s1=2**32 - 1, s2=2**32 - 1, ndim=3, nbytes=2**64 - 1), b""],
        "size",
        "declared payload",
    ),
    "huge consistent size": (
        [_header(s0=2**20, s1=2**20, s2=1, ndim=3, nbytes=2**42), GOOD_PAYLOAD],
        "payload_size",
        "declares 4398046511104",
    ),
    "one part": ([_header()], "parts", "got 1"),
    "three parts": ([_header(), GOOD_PAYLOAD, b""], "parts", "got 3"),
    "no parts": ([], "parts", "got 0"),
    "not a sequence": (None, "parts", "NoneType"),
    "not bytes": ([_header(), 3.5], "buffer", "float"),
    "strided payload": ([_header(), np.zeros(128, np.uint8)[::2]], "buffer", "contiguous"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_garbage_is_refused_naming_the_problem(case):
    parts, reason, message = BAD[case]
    with pytest.raises(WireError, match=message) as exc:
        decode(parts)
    assert exc.value.reason == reason
    rx = Receiver()
    assert rx.feed(parts) is None  # never raises
    assert rx.counters.malformed == {reason: 1} and rx.counters.received == 0
    assert rx.last_error is not None and rx.last_error.reason == reason


def test_the_good_reference_message_decodes():
    """The garbage above is each one change away from this valid message."""
    got = decode([_header(), GOOD_PAYLOAD])
    assert got.shape == (4, 4) and got.dtype == np.float32 and not got.data.any()
    assert decode([_header(flags=255, reserved=7), GOOD_PAYLOAD]).shape == (4, 4)  # ignored


def test_receiver_counts_sequence_gaps_as_lost_and_restarts():
    a = np.zeros(3, np.int16)
    rx = Receiver()
    for seq in (5, 6, 9, 10, 20):  # lost: 7, 8 and 11..19
        assert rx.feed(encode(a, seq, 0, 0, seq)) is not None
    assert rx.counters.lost == 2 + 9 and rx.counters.received == 5
    rx.feed(encode(a, 0, 0, 0, 0))  # the publisher restarted
    rx.feed(encode(a, 0, 0, 0, 2))
    c = rx.counters
    assert (c.resets, c.lost, c.last_seq, c.received) == (1, 12, 2, 7)
    rx.feed([b"junk", b""])
    assert c.dropped == 1 and c.received == 7 and c.last_seq == 2


# --- fuzz ----------------------------------------------------------------------------------


def _decode_or_wire_error(parts):
    try:
        got = decode(parts)
    except WireError as exc:
        assert exc.reason and str(exc)
        return None
    assert got.data.nbytes == len(parts[1])
    return got


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=160), max_size=4))
def test_fuzz_any_bytes_never_crash(parts):
    _decode_or_wire_error(parts)
    Receiver().feed(parts)


@settings(max_examples=300, deadline=None)
@given(
    atype=st.integers(0, 255),
    ndim=st.integers(0, 255),
    dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 5), min_size=3, max_size=3),
    nbytes=st.integers(0, 2**64 - 1) | st.integers(0, 400),
    payload=st.binary(max_size=400),
)
def test_fuzz_plausible_headers_never_crash(atype, ndim, dims, nbytes, payload):
    h = _header(atype=atype, ndim=ndim, s0=dims[0], s1=dims[1], s2=dims[2], nbytes=nbytes)
    got = _decode_or_wire_error([h, payload])
    if got is not None:  # accepted only when everything agrees
        assert got.data.nbytes == nbytes == len(payload)


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(0, HEADER_SIZE - 1), byte=st.integers(0, 255))
def test_fuzz_one_byte_of_a_valid_header_changed(pos, byte):
    a = np.arange(6, dtype=np.uint16).reshape(2, 3)
    head, payload = _bytes_parts(encode(a, 1, 2, 3, 4))
    head = head[:pos] + bytes([byte]) + head[pos + 1 :]
    got = _decode_or_wire_error([head, payload])
    if got is not None:
        assert got.data.nbytes == a.nbytes

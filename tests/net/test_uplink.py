"""The writer of bidirectional mirrors (issue 13): frames from the lease holder written into
the source with their write time and frame id; anything else dropped and counted."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

import dao
from dao.net import wire
from dao.net.mirror import BindError
from dao.net.uplink import StreamWriter
from dao.testing import unique_name, wait_equal


@pytest.fixture
def push():
    ctx = zmq.Context()
    socks = []

    def connect(address: str) -> zmq.Socket:
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(address)
        socks.append(s)
        return s

    yield connect
    for s in socks:
        s.close(0)
    ctx.term()


def test_writes_only_for_the_lease_holder(push):
    name = unique_name()
    src = dao.shm(name, np.zeros((2, 3), np.float32), depth=4)
    w = StreamWriter(name, check=lambda identity: identity == b"me:1")
    try:
        sock = push(w.address)
        t = time.time_ns() - 1_000_000
        frame = np.arange(6, dtype=np.float32).reshape(2, 3)
        sock.send_multipart([b"me:1", *wire.encode(frame, 5, 77, t, 0)])
        wait_equal(lambda: w.written, 1, 3.0, what="the frame written")
        assert np.array_equal(src.get_data(), frame)
        assert src.get_frame_id() == 77 and src.get_timestamp_ns() == t
        sock.send_multipart([b"you:2", *wire.encode(frame + 1, 6, 78, t, 1)])  # no lease
        sock.send_multipart([b"me:1"])  # one part
        sock.send_multipart([b"me:1", b"DAOF" + bytes(60), b""])  # foreign header
        sock.send_multipart([b"me:1", *wire.encode(np.zeros(4, np.float32), 7, 79, t, 2)])
        sock.send_multipart([b"me:1", *wire.encode(np.zeros((2, 3), np.int32), 8, 80, t, 3)])
        wait_equal(lambda: w.counters()["mismatched"], 2, 3.0, what="mismatches counted")
        c = w.counters()
        assert c["written"] == 1 and c["refused"] == 1 and c["malformed"] == 2
        assert c["malformed_by_reason"] == {"parts": 1, "version": 1}  # DAOF, version 0
        assert src.counter == 1  # nothing else reached the source
        assert w.running and w.error is None
    finally:
        w.stop()
        src.delete()
    assert not w.running


def test_follows_a_recreated_stream(push, stream_dir):
    name = unique_name()
    src = dao.shm(name, np.zeros(3, np.float32))
    w = StreamWriter(f"{stream_dir}/{name}.im.shm", check=lambda identity: True)
    try:
        sock = push(w.address)
        sock.send_multipart([b"a:b", *wire.encode(np.ones(3, np.float32), 1, 1, 1, 0)])
        wait_equal(lambda: w.written, 1, 3.0)
        src.close()
        src = dao.shm(name, np.zeros(5, np.uint16), replace=True)
        sock.send_multipart([b"a:b", *wire.encode(np.full(5, 9, np.uint16), 2, 2, 2, 1)])
        wait_equal(lambda: w.written, 2, 3.0, what="written into the new stream")
        assert np.all(src.get_data() == 9)
    finally:
        w.stop()
        src.delete()


def test_port_in_use_is_refused():
    a = StreamWriter(unique_name(), check=lambda identity: True)
    try:
        with pytest.raises(BindError, match="pick another port"):
            StreamWriter(unique_name(), a.address, check=lambda identity: True)
    finally:
        a.stop()

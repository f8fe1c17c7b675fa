"""Stream mirrors over ZeroMQ (issue 13): a writer and its publisher in another OS process, a
Mirror here, real sockets on loopback, bounded waits everywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

import dao
from dao.errors import DaoError, StreamNotFoundError
from dao.net import wire
from dao.net.mirror import BindError, Mirror, StreamPublisher, heartbeat
from dao.testing import child_environment, free_port, unique_name, wait_equal, wait_for

# A writer process: creates the stream, publishes it, then obeys lines on stdin:
# "write ROWS COLS N RATE" writes N frames (re-creating the stream for another shape) and
# prints "done"; frame i of a run is arange(size) + i, with cnt2 = 1000 + i.
WRITER = r"""
import sys, time
import numpy as np
import dao
from dao.net.mirror import StreamPublisher

name, address = sys.argv[1], sys.argv[2]
s = dao.shm(name, np.zeros((64, 64), np.float32), depth=16, replace=True)
p = StreamPublisher(name, address)
print("ready", p.address, flush=True)
for line in sys.stdin:
    cmd, rows, cols, n, rate = line.split()
    shape = (int(rows), int(cols))
    if s.shape != shape:
        s.close()
        s = dao.shm(name, np.zeros(shape, np.float32), depth=16, replace=True)
    base = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    t = time.perf_counter()
    for i in range(1, int(n) + 1):
        s.set_data(base + i, cnt2=1000 + i)
        t += 1.0 / float(rate)
        time.sleep(max(0.0, t - time.perf_counter()))
    print("done", flush=True)
"""


def start_writer(procs, name: str, address: str) -> subprocess.Popen:
    """Start a writer+publisher process and wait (10 s at most) until it publishes."""
    p = subprocess.Popen(
        [sys.executable, "-c", WRITER, name, address],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=child_environment(), text=True,
    )  # fmt: skip
    procs.append(p)
    line = readline(p, 20.0)
    assert line.startswith("ready"), f"writer did not start: {line!r} {p.stderr.read()}"
    return p


def readline(p: subprocess.Popen, timeout: float) -> str:
    """One line of the process's stdout, waiting at most ``timeout`` seconds."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"no output from pid {p.pid} within {timeout} s")
    return p.stdout.readline()


def command(p: subprocess.Popen, rows: int, cols: int, n: int, rate: float) -> None:
    """Make the writer write ``n`` frames and wait until it has."""
    p.stdin.write(f"write {rows} {cols} {n} {rate}\n")
    p.stdin.flush()
    assert readline(p, 30.0).strip() == "done"


def expected(shape: tuple[int, int], i: int) -> np.ndarray:
    return np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) + i


def frame_id(name: str) -> int | None:
    """cnt2 of the newest frame of stream ``name``, None if there is no such stream."""
    try:
        s = dao.shm(name)
    except StreamNotFoundError:
        return None
    try:
        return s.get_frame_id()
    finally:
        s.close()


@pytest.fixture
def address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def mirrors():
    """Mirrors to close at teardown, whatever happened."""
    made: list[Mirror] = []
    yield made
    for m in made:
        m.close()


@pytest.mark.parametrize("mode", ["latest", "every"])
def test_frames_cross_process(procs, mirrors, address, mode):
    src, local = unique_name("src"), unique_name("mir")
    w = start_writer(procs, src, address)
    m = Mirror(address, local, mode, depth=256)
    mirrors.append(m)
    wait_for(lambda: m.status()["link"] == "up", 10, what="heartbeats from the publisher")
    command(w, 64, 64, 200, 500.0)
    wait_for(lambda: m.status()["source_cnt0"] == 200, 10, what="the last frame")
    st = m.status()
    assert st["link"] == "up" and st["lost"] == 0 and st["malformed"] == 0
    assert 0 <= st["age_s"] < 5
    if mode == "every":
        assert st["received"] == st["written"] == 200
    mirror = dao.shm(local)
    source = dao.shm(src)
    try:
        frame = mirror.get_data()
        info = mirror.get_meta_data()
        assert frame.tobytes() == expected((64, 64), 200).tobytes()
        assert frame.tobytes() == source.get_data().tobytes()
        smeta = source.get_meta_data()
        assert info["cnt2"] == smeta["cnt2"] == 1200
        assert mirror.get_timestamp_ns() == source.get_timestamp_ns() > 0
        assert m.source_cnt0 == 200
        wait_equal(lambda: mirror.keywords["src_cnt0"], 200, 2, what="the keyword src_cnt0")
        assert mirror.keywords["mirror_lost"] == 0
        assert abs(mirror.keywords["mirror_rx_ns"] - time.time_ns()) < 2e9
        if mode == "every":  # every frame, in order, byte for byte
            hist = mirror.get_history(200, meta=True)
            assert list(hist.cnt2) == list(range(1001, 1201))
            for k in (0, 1, 100, 198, 199):
                assert hist.data[k].tobytes() == expected((64, 64), k + 1).tobytes()
    finally:
        mirror.close()
        source.close()


def test_link_down_and_back(procs, mirrors, address):
    src, local = unique_name("src"), unique_name("mir")
    w = start_writer(procs, src, address)
    m = Mirror(address, local)
    mirrors.append(m)
    wait_for(lambda: m.status()["link"] == "up", 10, what="link up")
    command(w, 64, 64, 5, 500.0)
    wait_for(lambda: m.status()["source_cnt0"] == 5, 10, what="frames")
    w.send_signal(signal.SIGKILL)
    w.wait(10)
    t0 = time.monotonic()
    wait_for(lambda: m.status()["link"] == "down", 2.0, what="link down after SIGKILL")
    assert time.monotonic() - t0 < 2.0
    w2 = start_writer(procs, src, address)  # a new publisher on the same address
    wait_for(lambda: m.status()["link"] == "up", 10, what="link up again")
    command(w2, 64, 64, 3, 500.0)
    wait_for(lambda: frame_id(local) == 1003, 10, what="frames of the new publisher")
    assert m.status()["resets"] == 1
    assert m.running


def test_garbage_is_counted(mirrors, address):
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    try:
        m = Mirror(address, unique_name("mir"), "every")
        mirrors.append(m)

        def up():
            pub.send(heartbeat(0))
            return m.status()["link"] == "up"

        wait_for(up, 10, interval=0.05, what="link up")
        rng = np.random.default_rng(1)
        garbage = [
            [rng.bytes(64), rng.bytes(100)],
            [rng.bytes(10)],
            [b"DAOF" + rng.bytes(60), rng.bytes(16)],
            [rng.bytes(64), rng.bytes(64), rng.bytes(64)],
            [b""],
            [b"DAOH" + rng.bytes(3)],
        ]
        for parts in garbage:
            pub.send_multipart(parts)
        good = np.arange(12, dtype=np.int32).reshape(3, 4)
        pub.send_multipart(wire.encode(good, 7, 42, time.time_ns(), 0))
        wait_for(lambda: m.status()["written"] == 1, 10, what="the good frame")
        st = m.status()
        assert st["malformed"] == len(garbage), st
        assert st["received"] == 1 and m.running and m.error is None
        local = dao.shm(m.local_name)
        try:
            assert np.array_equal(local.get_data(), good)
            assert local.get_meta_data()["cnt2"] == 42
        finally:
            local.close()
    finally:
        pub.close(0)
        ctx.term()


def test_source_shape_change_is_followed(procs, mirrors, address):
    src, local = unique_name("src"), unique_name("mir")
    w = start_writer(procs, src, address)
    m = Mirror(address, local, "every")
    mirrors.append(m)
    wait_for(lambda: m.status()["link"] == "up", 10, what="link up")
    command(w, 64, 64, 10, 500.0)
    wait_for(lambda: m.status()["source_cnt0"] == 10, 10, what="frames of the first shape")
    command(w, 16, 8, 10, 200.0)

    def follows():
        try:
            s = dao.shm(local)
        except StreamNotFoundError:
            return False
        try:
            return s.shape == (16, 8) and s.get_frame_id() == 1010
        finally:
            s.close()

    wait_for(follows, 10, what="the mirror's new shape")
    s = dao.shm(local)
    try:
        assert s.get_data().tobytes() == expected((16, 8), 10).tobytes()
    finally:
        s.close()
    assert m.status()["malformed"] == 0


def test_close_removes_local_stream(name):
    src = dao.shm(name, np.zeros((4, 4), np.float32))
    try:
        with StreamPublisher(name) as pub:
            m = Mirror(pub.address, unique_name("mir"))
            wait_for(lambda: m.status()["link"] == "up", 10, what="link up")
            src.set_data(np.ones((4, 4), np.float32), cnt2=5)
            wait_for(lambda: m.written == 1, 10, what="a frame")
            mirror = dao.shm(m.local_name)
            path = mirror.path
            mirror.close()
            assert os.path.exists(path)
            t0 = time.monotonic()
            m.close()
            assert time.monotonic() - t0 < 2.0
            assert not m.running and not os.path.exists(path)
            wait_equal(lambda: pub.sent, 1, 2.0)
        assert not pub.running
    finally:
        src.delete()


def test_clear_errors(name, address):
    with pytest.raises(StreamNotFoundError):
        StreamPublisher(unique_name("nosuch"))
    with pytest.raises(ValueError, match="latest"):
        Mirror(address, unique_name("mir"), mode="sometimes")
    src = dao.shm(name, np.zeros((4, 4), np.float32))
    try:
        with StreamPublisher(name, address) as pub:
            assert pub.address == address
            with pytest.raises(BindError, match=address.replace(".", r"\.")) as err:
                StreamPublisher(name, address)
            assert isinstance(err.value, DaoError) and err.value.address == address
    finally:
        src.delete()

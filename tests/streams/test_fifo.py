"""FIFO reading (spec section 8): a model-based test against a pure-Python model, and readers in
separate processes."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import dao
from dao.testing import temporary_stream_dir, unique_name

SUCCESS, OVERWRITE, NOTREADY = 0, -2, -3
SHAPE = (2, 3)
ID0 = 1000


class FifoModel:
    """What a depth-N stream holds and what one reader's cursor sees; frame c is full of c and
    has the source frame id c + ID0."""

    def __init__(self, depth: int):
        self.depth = depth
        self.newest = 0  # dao.shm(name, data) writes no frame: the counter starts at 0
        self.tail = 0

    def slot_counter(self, slot: int) -> int:
        """Counter of the frame in a physical slot (0: never written)."""
        c = self.newest - ((self.newest - 1 - slot) % self.depth)
        return c if c >= 1 else 0

    def next(self):
        if self.tail == self.newest:
            return NOTREADY, None
        if self.tail + 1 > self.newest - self.depth:
            self.tail += 1
            return SUCCESS, self.tail
        self.tail = self.newest
        return OVERWRITE, self.newest

    def history(self, k: int) -> list[int] | None:
        if k > self.newest:
            return None  # more than was ever written: refused
        return list(range(self.newest - k + 1, self.newest + 1))

    def batch(self, k: int) -> tuple[list[int], int]:
        """Frames and the count lost that ``read_new(k)`` returns; advances the cursor."""
        if self.tail == self.newest:
            return [], 0
        if self.tail + 1 > self.newest - self.depth:
            got = list(range(self.tail + 1, min(self.tail + k, self.newest) + 1))
            self.tail = got[-1]
            return got, 0
        lost = self.newest - self.tail - 1
        self.tail = self.newest
        return [self.newest], lost

    def check(self) -> int:
        return OVERWRITE if self.newest >= self.tail + self.depth else SUCCESS


class FifoMachine(RuleBasedStateMachine):
    @initialize(depth=st.sampled_from([1, 2, 3, 5]))
    def start(self, depth):
        self.dir = temporary_stream_dir()
        self.dir.__enter__()
        name = unique_name("m")
        self.writer = dao.shm(name, np.zeros(SHAPE, np.int64), depth=depth)
        self.reader = dao.shm(name)
        self.model = FifoModel(depth)

    def teardown(self):
        if hasattr(self, "dir"):
            self.writer.close()
            self.reader.close()
            self.dir.__exit__(None, None, None)

    @precondition(lambda self: hasattr(self, "model"))
    @rule(n=st.integers(1, 7))
    def write(self, n):
        for _ in range(n):
            self.model.newest += 1
            self.writer.set_data(np.full(SHAPE, self.model.newest, np.int64),
                                 cnt2=ID0 + self.model.newest)

    @precondition(lambda self: hasattr(self, "model"))
    @rule()
    def read_next(self):
        status, frame = self.reader.get_data_next()
        want_status, want = self.model.next()
        assert status == want_status
        if want is None:
            assert frame is None
        else:
            assert np.all(frame == want) and self.reader.last_read.counter == want

    @precondition(lambda self: hasattr(self, "model"))
    @rule(slot=st.integers(0, 12))
    def read_arbitrary(self, slot):
        frame = self.reader.get_data_arbitrary(slot)
        assert np.all(frame == self.model.slot_counter(slot % self.model.depth))

    @precondition(lambda self: hasattr(self, "model"))
    @rule(data=st.data())
    def read_history(self, data):
        k = data.draw(st.integers(1, self.model.depth))
        want = self.model.history(k)
        if want is None:
            with pytest.raises(ValueError, match="frame"):
                self.reader.get_history(k, meta=True)
            return
        h = self.reader.get_history(k, meta=True)
        assert h.cnt0.tolist() == want and h.lost == 0 and len(h) == k
        assert h.cnt2.tolist() == [ID0 + c for c in want]
        assert [int(f[0, 0]) for f in h.data] == want
        assert np.all(np.diff(h.time_ns) >= 0)
        meta = self.reader.history_metadata(k)
        assert meta.data is None and meta.cnt0.tolist() == want
        assert meta.cnt2.tolist() == h.cnt2.tolist()

    @precondition(lambda self: hasattr(self, "model"))
    @rule(k=st.integers(1, 8))
    def read_batch(self, k):
        got = self.reader.read_new(k)
        want, lost = self.model.batch(k)
        assert got.cnt0.tolist() == want and got.lost == lost
        assert got.cnt2.tolist() == [ID0 + c for c in want]
        assert [int(f[0, 0]) for f in got.data] == want

    @precondition(lambda self: hasattr(self, "model"))
    @rule()
    def reset(self):
        self.reader.reset_tail()
        self.model.tail = self.model.newest

    @precondition(lambda self: hasattr(self, "model"))
    @invariant()
    def overwrite_check_agrees(self):
        assert self.reader.check_segment_overwrite() == self.model.check()
        assert self.reader.get_counter() == self.model.newest


TestFifoModel = FifoMachine.TestCase
TestFifoModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_depth_and_history_seen_by_another_process(name):
    w = dao.shm(name, np.zeros(3, np.float32), depth=4)
    for k in range(1, 7):
        w.set_data(np.full(3, k, np.float32))
    code = (
        "import dao, sys\n"
        f"s = dao.shm({name!r})\n"
        "h = s.get_history(4, meta=True)\n"
        "print(s.depth, h.cnt0.tolist(), h.data[:, 0].tolist())\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout.split("\n")[0]
    assert out == "4 [3, 4, 5, 6] [3.0, 4.0, 5.0, 6.0]"


def _steady_writer(path, n, period, go):
    s = dao.shm(path)
    go.wait(30)
    from dao.testing import sleep_until

    t = time.perf_counter()
    for k in range(n):
        t += period
        sleep_until(t)
        s.set_data(np.full(s.shape, k + 1, s.dtype))


def test_sequential_reader_sees_every_frame_once_in_order(name):
    n = 2000
    w = dao.shm(name, np.zeros(16, np.float64), depth=64)
    r = dao.shm(name)
    r.claim_semaphore()
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    p = ctx.Process(target=_steady_writer, args=(w.path, n, 2e-4, go), daemon=True)
    p.start()
    go.set()
    seen, statuses = [], set()
    while len(seen) < n:
        status, frame = r.get_data_next(wait=True, timeout=10)
        assert status != r.DAO_TIMEOUT, f"stalled after {len(seen)} frames"
        statuses.add(status)
        seen.append(int(frame[0]))
    p.join(10)
    assert statuses == {r.DAO_SUCCESS}
    assert seen == list(range(1, n + 1))


def test_paused_reader_gets_overwrite_exactly_when_lapped(name):
    depth = 8
    w = dao.shm(name, np.zeros(4, np.int32), depth=depth)
    r = dao.shm(name)
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    p = ctx.Process(target=_steady_writer, args=(w.path, depth - 1, 0.0, go), daemon=True)
    p.start()
    go.set()
    p.join(30)
    # depth - 1 frames behind: still all there
    got = [r.get_data_next() for _ in range(depth - 1)]
    assert [s for s, _ in got] == [r.DAO_SUCCESS] * (depth - 1)
    assert [int(f[0]) for _, f in got] == list(range(1, depth))
    # now pause longer than the depth allows
    for k in range(depth, 3 * depth + 3):
        w.set_data(np.full(4, k, np.int32))
    assert r.check_segment_overwrite() == r.DAO_OVERWRITE
    status, frame = r.get_data_next()
    assert status == r.DAO_OVERWRITE and int(frame[0]) == 3 * depth + 2  # resumes on newest
    assert r.get_data_next()[0] == r.DAO_NOTREADY
    w.set_data(np.full(4, 99, np.int32))
    status, frame = r.get_data_next()
    assert status == r.DAO_SUCCESS and int(frame[0]) == 99


def test_iter_frames_reports_gaps(name):
    w = dao.shm(name, np.zeros(2, np.float32), depth=4)
    r = dao.shm(name)
    it = r.iter_frames(timeout=0.2)
    for k in range(3):
        w.set_data(np.full(2, k, np.float32))
    first = [next(it) for _ in range(3)]
    assert [f.lost for f in first] == [0, 0, 0] and [f.cnt0 for f in first] == [1, 2, 3]
    for k in range(10):
        w.set_data(np.full(2, 10 + k, np.float32), cnt2=500 + k)
    f = next(it)
    assert f.lost == 9 and f.cnt0 == 13 and f.data[0] == 19 and f.cnt2 == 509
    assert list(it) == []  # stops after the timeout


def test_history_holds_written_frames_only(name):
    """A new FIFO has no frame: its creation data is not one, and asking for more frames than
    were written says so."""
    w = dao.shm(name, np.full((3, 1), 7, np.float32), depth=8)
    assert w.get_counter() == 0 and w.frames_available == 0
    np.testing.assert_array_equal(w.get_data(), np.full((3, 1), 7, np.float32))
    with pytest.raises(ValueError, match="0 frame"):
        w.get_history()
    assert len(w.history_metadata()) == 0
    for k in range(3):
        w.set_data(np.full((3, 1), k, np.float32), cnt2=40 + k)
    h = w.get_history(meta=True)
    assert len(h) == 3 == w.frames_available and h.cnt0.tolist() == [1, 2, 3]
    assert h.cnt2.tolist() == [40, 41, 42] and h.data[:, 0, 0].tolist() == [0, 1, 2]
    assert h.time.dtype == np.dtype("datetime64[ns]") and h.duration_s >= 0
    with pytest.raises(ValueError, match="3 frame"):
        w.get_history(4)
    assert w.history_xarray().sizes["frame"] == 3


def test_read_new_into_a_preallocated_batch(name):
    w = dao.shm(name, np.zeros((2, 2), np.int16), depth=16)
    r = dao.shm(name)
    buf = r.frames_buffer(4)
    assert len(r.read_new(out=buf)) == 0
    for k in range(6):
        w.set_data(np.full((2, 2), k, np.int16), cnt2=k)
    a = r.read_new(out=buf)
    assert a.cnt0.tolist() == [1, 2, 3, 4] and np.shares_memory(a.data, buf.data)
    assert r.cursor == 4
    b = r.read_new(out=buf)
    assert b.cnt0.tolist() == [5, 6] and b.cnt2.tolist() == [4, 5] and b.lost == 0
    with pytest.raises(dao.StreamMismatchError, match="frames_buffer"):
        r.read_new(out=dao.shm(name).frames_buffer(2).__class__(
            np.zeros((2, 3), np.int16), buf.cnt0[:2], buf.cnt2[:2], buf.time_ns[:2]))
    assert r.wait_next(0.01) is False
    w.set_data(np.zeros((2, 2), np.int16))
    assert r.wait_next(1.0) is True


def test_unpacking_a_batch_as_a_tuple_says_what_to_do(name):
    w = dao.shm(name, np.zeros(2, np.float32), depth=4)
    w.set_data(np.ones(2, np.float32))
    with pytest.raises(TypeError, match=r"\.data, \.cnt0"):
        frames, counters, times = w.get_history(meta=True)
    assert len(w.get_history(meta=True)[-1:]) == 1

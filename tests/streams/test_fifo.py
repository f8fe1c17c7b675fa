"""FIFO reading (spec section 8): a model-based test against a pure-Python model, and readers in
separate processes."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import dao
from dao.testing import temporary_stream_dir, unique_name

SUCCESS, OVERWRITE, NOTREADY = 0, -2, -3
SHAPE = (2, 3)


class FifoModel:
    """What a depth-N stream holds and what one reader's cursor sees; frame c is full of c."""

    def __init__(self, depth: int):
        self.depth = depth
        self.newest = 1  # dao.shm(name, data) writes the first frame
        self.tail = 1

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

    def history(self, k: int) -> list[int]:
        k = min(k, self.newest)
        return list(range(self.newest - k + 1, self.newest + 1))

    def check(self) -> int:
        return OVERWRITE if self.newest >= self.tail + self.depth else SUCCESS


class FifoMachine(RuleBasedStateMachine):
    @initialize(depth=st.sampled_from([1, 2, 3, 5]))
    def start(self, depth):
        self.dir = temporary_stream_dir()
        self.dir.__enter__()
        name = unique_name("m")
        self.writer = dao.shm(name, np.ones(SHAPE, np.int64), depth=depth)
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
            self.writer.set_data(np.full(SHAPE, self.model.newest, np.int64))

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
        frames, counters, times = self.reader.get_history(k, meta=True)
        want = self.model.history(k)
        assert counters.tolist() == want
        assert [int(f[0, 0]) for f in frames] == want
        assert np.all(np.diff(times) >= 0)

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
        "f, c, t = s.get_history(4, meta=True)\n"
        "print(s.depth, c.tolist(), f[:, 0].tolist())\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout.split("\n")[0]
    assert out == "4 [4, 5, 6, 7] [3.0, 4.0, 5.0, 6.0]"


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
    assert [f.lost for f in first] == [0, 0, 0] and [f.counter for f in first] == [2, 3, 4]
    for k in range(10):
        w.set_data(np.full(2, 10 + k, np.float32))
    f = next(it)
    assert f.lost == 9 - 0 and f.counter == 14 and f.data[0] == 19
    assert list(it) == []  # stops after the timeout

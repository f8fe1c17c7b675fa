"""Streams across separate OS processes: wake-ups, timeouts, several readers, torn reads."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest

import dao
from dao.testing import run_pair

CTX = mp.get_context("spawn")


def _wait_once(path, spin, timeout, q):
    s = dao.shm(path)
    s.claim_semaphore()
    q.put("ready")
    t0 = time.monotonic()
    try:
        frame = s.get_data(check=True, spin=spin, timeout=timeout)
        q.put(("frame", float(frame.sum()), s.last_read.counter, time.monotonic() - t0))
    except dao.StreamTimeout as e:
        q.put(("timeout", str(e), 0, time.monotonic() - t0))


def _start_waiter(path, spin, timeout):
    q = CTX.Queue()
    p = CTX.Process(target=_wait_once, args=(path, spin, timeout, q), daemon=True)
    p.start()
    assert q.get(timeout=60) == "ready"
    return p, q


@pytest.mark.parametrize("spin", [False, True], ids=["semaphore", "spin"])
def test_reader_process_woken_by_writer(name, spin):
    w = dao.shm(name, np.zeros((8, 8), np.float32))
    p, q = _start_waiter(w.path, spin, 20.0)
    time.sleep(0.3)
    w.set_data(np.ones((8, 8), np.float32))
    kind, total, counter, waited = q.get(timeout=30)
    p.join(10)
    assert kind == "frame" and total == 64 and counter == 1
    assert waited >= 0.2  # it really waited for the write


def test_reader_process_times_out(name):
    w = dao.shm(name, np.zeros(4, np.float32))
    p, q = _start_waiter(w.path, False, 0.3)
    kind, msg, _, waited = q.get(timeout=30)
    p.join(10)
    assert kind == "timeout" and w.path in msg
    assert 0.25 < waited < 60  # the timeout was honoured (the upper bound guards a hang only)


def _acking_reader(path, ack_path, n, q):
    s = dao.shm(path)
    k = s.claim_semaphore()
    ack = dao.shm(ack_path, np.zeros(1, np.int64))
    seen = []
    try:
        for _ in range(n):
            seen.append(int(s.get_data(check=True, timeout=10)[0]))
            ack.set_data(np.array([seen[-1]], np.int64))
    except dao.StreamTimeout:
        pass
    q.put((k, seen))


def test_two_readers_on_claimed_indexes_see_every_post(name):
    n = 200
    w = dao.shm(name, np.zeros(1, np.int64))
    q = CTX.Queue()
    acks = [f"{name}ack{i}" for i in range(2)]
    procs = [CTX.Process(target=_acking_reader, args=(w.path, a, n, q), daemon=True)
             for a in acks]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 60
    ack_streams = []
    for a in acks:  # a reader creates its ack stream once its semaphore is claimed
        while True:
            try:
                ack_streams.append(dao.shm(a))
                break
            except (dao.StreamNotFoundError, dao.StreamFormatError):
                assert time.monotonic() < deadline, "reader did not start"
                time.sleep(0.02)
    for k in range(1, n + 1):
        w.set_data(np.array([k], np.int64))
        for a in ack_streams:  # one post at a time: both must wake for each
            while a.get_data()[0] != k:
                assert time.monotonic() < deadline, f"frame {k} not acknowledged"
                time.sleep(0.0002)
    results = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    (k0, seen0), (k1, seen1) = results
    assert k0 != k1
    assert seen0 == seen1 == list(range(1, n + 1))


def _hammer(path, stop):
    s = dao.shm(path)
    frame = np.empty(s.shape, s.dtype)
    k = 0
    while not stop.is_set():
        k += 1
        frame.fill(k)
        s.set_data(frame)


@pytest.mark.slow
def test_no_torn_frame_under_a_hammering_writer(name):
    w = dao.shm(name, np.zeros((64, 64), np.float32), depth=1)
    stop = CTX.Event()
    p = CTX.Process(target=_hammer, args=(w.path, stop), daemon=True)
    p.start()
    r = dao.shm(name)
    out = np.empty((64, 64), np.float32)
    try:
        while r.get_counter() < 1000:  # the writer is running
            time.sleep(0.01)
        start = r.get_counter()
        torn = 0
        for _ in range(100_000):
            r.get_data(out=out)
            if out.min() != out.max() or r.last_read.counter != int(out[0, 0]):
                torn += 1
        writes = r.get_counter() - start
    finally:
        stop.set()
        p.join(10)
    assert torn == 0
    assert writes > 1000  # the writer really wrote during the reads


def test_pair_helper_reports_latency(name):
    w = dao.shm(name, np.zeros((16, 16), np.float32))
    res = run_pair(w.path, 200, 0.001, "sem")
    assert res.timeouts == 0 and res.torn == 0
    assert res.values[-1] == 200 and np.all(np.diff(res.values) > 0)
    assert 0 < res.latency_us(50) <= res.latency_us(99)  # how fast: benchmarks/streams.py

"""The AO loop as a runtime to watch: start and exposures without blocking (status objects),
per-frame timing records of every component, events, and a dead component named at once.
Real component processes on the simulated bench (6x6, a few seconds each)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from dao.loop import AOLoop
from dao.runtime import TIMING_FIELDS, Status


def test_start_and_expose_without_blocking():
    ao = AOLoop(n_subap=6, history=1024)
    messages, done = [], []
    try:
        st = ao.start(wait=False)
        assert isinstance(st, Status)
        st.watch(lambda s: messages.append(s.message))
        with pytest.raises(RuntimeError, match="still starting"):
            ao.wait(10)
        assert st.wait(120) is ao and st.success and st.progress == 1.0
        st.add_callback(done.append)
        assert done == [st]
        assert ao.running and ao.frame > 0
        assert any("starting the components" in m for m in messages)
        assert messages[-1] == "running (loop open)"
        ex = ao.expose(300, wait=False)
        fractions = []
        ex.watch(lambda s: fractions.append(s.fraction))
        q = ex.wait(120)
        assert 0 < q["strehl"] <= 1 and q["n_frames"] >= 300 // 4 - 1
        assert ex.result is q and fractions and fractions == sorted(fractions)
        q2 = ao.expose(50)  # the blocking call is unchanged
        assert q2["frame"] > q["frame"]
    finally:
        ao.close()


def test_timing_records_events_and_a_dead_component():
    with AOLoop(n_subap=6, history=1024) as ao:
        ao.wait(200)
        cam = ao.timing("camera")
        assert set(cam) == {*TIMING_FIELDS, "processing_ns"}
        for role in ("camera", "slopes", "controller"):
            t = ao.timing(role, 100)
            assert len(t["frame_id"]) == 100 and t["start_ns"].dtype == np.int64
            assert np.all(t["end_ns"] >= t["start_ns"]) and np.all(np.diff(t["start_ns"]) > 0)
            assert abs(int(t["end_ns"][-1]) - time.time_ns()) < 60e9  # CLOCK_REALTIME, ns
        # the stages' records name the camera frame they processed
        assert np.all(np.diff(cam["frame_id"]) == 1)  # one record per camera frame
        ctrl = ao.timing("controller", 100)
        assert np.all(np.diff(ctrl["frame_id"]) >= 1)
        assert set(ctrl["frame_id"][:50]) <= set(cam["frame_id"])
        # heartbeats carry each component's rate and processing time
        with ao.subscribe("controller", kinds=["heartbeat"]) as sub:
            beat = sub.wait_for(predicate=lambda e: e["samples"] > 0, timeout=10)
        assert beat["state"] == "Running" and beat["rate_hz"] > 0
        assert 0 < beat["processing_p50_s"] <= beat["processing_p99_s"] < 1
        # a component killed: the loop says which, at once, not after a command timeout
        ao.gain = 0.4
        with ao.subscribe(kinds=["health"]) as health:
            pid = next(h["pid"] for h in ao.health() if h["component"] == "controller")
            os.kill(pid, signal.SIGKILL)
            t0 = time.monotonic()
            with pytest.raises(RuntimeError, match=r"controller \(controller, pid \d+\) "
                                                   r"exited with status -9"):
                ao.wait(100000)
            assert time.monotonic() - t0 < 3.0  # "within about a second"
            ev = health.wait_for(component="controller", why="died", timeout=10)
            assert ev["alive"] is False and ev["pid"] == pid
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="controller .* exited with status -9"):
            ao.gain = 0.3
        with pytest.raises(RuntimeError, match="controller"):
            ao.expose(10)
        assert time.monotonic() - t0 < 3.0

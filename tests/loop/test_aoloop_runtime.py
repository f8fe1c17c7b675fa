"""The AO loop as a runtime to watch: start and exposures without blocking (status objects),
per-frame timing records of every component, events, and a dead component named at once.
Real component processes on the simulated bench (6x6, a few seconds each)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

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
        st.add_callback(lambda s: time.sleep(0.3))  # a slow callback (a notebook's widget)
        # whoever the end of the start wakes can use the loop at once (no "still starting"),
        # while the callbacks still run
        assert st.wait(120) is ao and st.success and st.progress == 1.0
        assert ao.running and ao.health()
        st.add_callback(done.append)
        assert done == [st]
        assert ao.frame > 0
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
        ctrl = ao.timing("controller", 100)
        cam = ao.timing("camera")
        assert set(cam) == {*TIMING_FIELDS, "processing_ns"}
        for role in ("camera", "slopes", "controller"):
            t = ao.timing(role, 100)
            assert len(t["frame_id"]) == 100 and t["start_ns"].dtype == np.int64
            assert np.all(t["end_ns"] >= t["start_ns"]) and np.all(np.diff(t["start_ns"]) > 0)
            assert abs(int(t["end_ns"][-1]) - time.time_ns()) < 60e9  # CLOCK_REALTIME, ns
        # the stages' records name the camera frame they processed
        assert np.all(np.diff(cam["frame_id"]) == 1)  # one record per camera frame
        assert np.all(np.diff(ctrl["frame_id"]) >= 1)
        # the camera's record of a frame ends after the command of that frame (lock-step), so
        # the controller's newest frame may have no camera record yet
        seen = ctrl["frame_id"][ctrl["frame_id"] <= cam["frame_id"].max()]
        assert len(seen) >= 99 and set(seen) <= set(cam["frame_id"])
        # heartbeats carry each component's rate and processing time
        with ao.subscribe("controller", kinds=["heartbeat"]) as sub:
            beat = sub.wait_for(predicate=lambda e: e["samples"] > 0, timeout=10)
        assert beat["state"] == "Running" and beat["rate_hz"] > 0
        assert 0 < beat["processing_p50_s"] <= beat["processing_p99_s"]
        # a component killed: the loop says which, at once, not after a command timeout
        ao.gain = 0.4
        with ao.subscribe(kinds=["health"]) as health:
            pid = next(h["pid"] for h in ao.health() if h["component"] == "controller")
            os.kill(pid, signal.SIGKILL)
            # said by the death detection, not by a timeout (that would be a TimeoutError,
            # after 10 minutes): the message names the dead process
            with pytest.raises(RuntimeError, match=rf"controller \(controller, pid {pid}\) "
                                                   r"exited with status -9"):
                ao.wait(100000, timeout=600)
            ev = health.wait_for(component="controller", why="died", timeout=30)
            assert ev["alive"] is False and ev["pid"] == pid
        with pytest.raises(RuntimeError, match="controller .* exited with status -9"):
            ao.gain = 0.3
        with pytest.raises(RuntimeError, match="controller"):
            ao.expose(10)


def _loop_processes(tag: str) -> list[int]:
    """The live component processes of the loop whose stream names end with ``tag``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            stat = (d / "stat").read_text().split()
        except OSError:
            continue
        if b"dao.runtime.cli" in cmd and tag.encode() in cmd and stat[2] != "Z":
            out.append(int(d.name))
    return out


def test_close_while_starting_leaves_no_process(monkeypatch, stream_dir):
    """close() during start(wait=False) cancels the start: no component process is left
    running, none is started after close() returned, and the start's status fails."""
    from dao.runtime import Supervisor

    first = threading.Event()
    real_start = Supervisor.start

    def start(self, name, *args, **kw):  # hold the start after its first component
        pid = real_start(self, name, *args, **kw)
        first.set()
        time.sleep(1.0)  # close() is called meanwhile
        return pid

    monkeypatch.setattr(Supervisor, "start", start)
    ao = AOLoop(n_subap=6, history=256)
    st = ao.start(wait=False)
    try:
        assert first.wait(120), st
    finally:
        ao.close()  # while the other components are still to start
    assert st.done
    with pytest.raises(RuntimeError, match="cancelled: close\\(\\) was called"):
        st.wait(0)
    procs = [p.popen for p in ao.supervisor.procs.values() if p.popen is not None]
    assert len(procs) == 1 and procs[0].poll() is not None  # the one started: stopped
    assert _loop_processes(ao._tag) == []  # and no other (ps)
    assert not os.path.exists(ao.folder)
    assert os.listdir(stream_dir) == []  # its streams too

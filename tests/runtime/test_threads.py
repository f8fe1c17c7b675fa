"""Real-time threads: lifecycle and hooks, timing, pinning, SCHED_FIFO refusal, tables."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

import dao.runtime.threads as rt
from dao.runtime.threads import RTThread, SignalTable, ThreadStateError, ThreadTable
from dao.testing import wait_for


class Hooked(RTThread):
    def __init__(self, **kw):
        super().__init__("hooked", **kw)
        self.calls: list[str] = []
        self.n = 0

    def on_spawn(self):
        self.calls.append("spawn")

    def on_start(self):
        self.calls.append("start")

    def body(self):
        self.n += 1
        time.sleep(1e-3)

    def on_stop(self):
        self.calls.append("stop")

    def on_exit(self):
        self.calls.append("exit")


def test_lifecycle_and_once_hooks():
    t = Hooked()
    assert t.state == "new"
    with pytest.raises(ThreadStateError):
        t.start()
    t.spawn()
    assert t.state == "waiting" and t.calls == ["spawn"]
    assert t.native_id is not None and not t.run_requested
    t.start()
    assert t.run_requested
    wait_for(lambda: t.n >= 5)
    assert t.stop() and t.state == "waiting" and not t.run_requested
    n = t.n
    time.sleep(0.02)
    assert t.n == n  # stopped: the body no longer runs
    t.start()  # restart after stop
    wait_for(lambda: t.n >= n + 3)
    t.exit()
    assert t.join(2.0) and t.state == "exited"
    assert t.calls == ["spawn", "start", "stop", "start", "stop", "exit"]
    with pytest.raises(ThreadStateError):
        t.start()
    with pytest.raises(ThreadStateError):
        t.spawn()


def test_exit_without_start_runs_only_spawn_and_exit():
    t = Hooked()
    t.spawn()
    t.exit()
    assert t.calls == ["spawn", "exit"]


def test_period_and_jitter_are_measured():
    t = RTThread("paced", period=2e-3, spin=2e-4)
    t.spawn()
    t.start()
    time.sleep(0.25)
    t.stop()
    t.exit()
    s = t.stats()
    # jitter and drift are measured by benchmarks/runtime.py; here only that they are measured
    assert s["iterations"] > 10 and s["period_mean"] > 0 and s["period_std"] >= 0
    assert s["jitter_max"] >= 0 and s["duration_last"] >= 0
    assert len(t.durations) == s["iterations"]
    assert len(t.periods) == s["iterations"] - 1


def test_history_is_a_ring():
    t = RTThread("ring", period=1e-4, history=16)
    t.spawn()
    t.start()
    wait_for(lambda: t.iterations > 40)
    t.exit()
    assert len(t.durations) == 16 and len(t.periods) == 15
    assert (t.periods > 0).all()  # oldest-first order kept across the wrap


def test_body_exception_stops_thread_and_calls_on_error():
    seen = []

    def body():
        raise ValueError("bad frame")

    t = RTThread("failing", body=body, on_error=seen.append)
    t.spawn()
    t.start()
    wait_for(lambda: t.state == "waiting" and seen)
    assert isinstance(t.error, ValueError) and seen[0] is t.error
    t.exit()


def test_stop_from_inside_the_thread_does_not_deadlock():
    holder = {}

    def body():
        holder["t"].stop()  # wait=True is ignored in the thread itself

    t = RTThread("self-stop", body=body)
    holder["t"] = t
    t.spawn()
    t.start()
    wait_for(lambda: t.iterations >= 1 and t.state == "waiting")
    t.exit()


def test_pinning_to_a_core():
    core = sorted(os.sched_getaffinity(0))[-1]
    seen = {}
    t = RTThread(
        "pinned", core=core, on_spawn=lambda: seen.setdefault("aff", os.sched_getaffinity(0))
    )
    t.spawn()
    t.exit()
    assert seen["aff"] == {core}
    assert t.stats()["affinity"] == [core]


def test_fifo_refused_is_said_once(monkeypatch, caplog):
    def refuse(*a):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setattr(rt, "_fifo_warned", False)
    caplog.set_level(logging.WARNING, logger="dao.runtime.threads")
    for _ in range(3):
        out = rt.set_realtime(0, None, priority=10)
        assert out["fifo"] is False
    msgs = [r for r in caplog.records if "SCHED_FIFO" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].levelno == logging.WARNING


def test_fifo_applied_when_permitted():
    seen = {}

    def on_spawn():
        seen["policy"] = os.sched_getscheduler(0)

    t = RTThread("fifo", priority=1, on_spawn=on_spawn)
    t.spawn()
    t.exit()
    if t.realtime["fifo"]:
        assert seen["policy"] == os.SCHED_FIFO
    else:  # not permitted here: the thread still ran, normally
        assert seen["policy"] == os.SCHED_OTHER


def test_thread_table_drives_all():
    table = ThreadTable([Hooked(), RTThread("other", period=1e-3)])
    with pytest.raises(ValueError, match="already"):
        table.add(RTThread("other"))
    table.spawn()
    table.start()
    wait_for(lambda: all(t.iterations > 2 for t in table))
    table.stop()
    assert all(t.state == "waiting" for t in table)
    table.exit()
    assert table.join(1.0)
    assert [s["name"] for s in table.stats()] == ["hooked", "other"]
    assert table["hooked"].calls == ["spawn", "start", "stop", "exit"]


@pytest.mark.parametrize("spin", [False, True])
def test_signal_table(spin):
    sig = SignalTable(4)
    assert not sig.check(2)
    assert not sig.wait(2, timeout=0.01, spin=spin)
    got = []

    def waiter():
        got.append(sig.wait(2, timeout=2.0, spin=spin))

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.01)
    sig.send(2)
    th.join(2.0)
    assert got == [True] and sig.pending(2) == 0
    sig.send(1)
    sig.send(1)
    assert sig.check(1) and sig.pending(1) == 2
    assert sig.check(1, consume=True) and sig.pending(1) == 1
    sig.reset(1)
    assert not sig.check(1)
    sig.send(0)
    sig.send(3)
    sig.reset()
    assert sig.pending(0) == sig.pending(3) == 0

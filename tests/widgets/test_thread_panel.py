"""The thread panel, at model level: real RTThreads of this process, a real pump thread, the
panel's own buttons clicked and its period control edited as the page would. Every wait is
bounded."""

from __future__ import annotations

import re
import threading

import ipywidgets
import pytest

from dao.runtime import RTThread, ThreadTable
from dao.testing import wait_equal, wait_for
from dao.widgets.pump import Pump
from dao.widgets.thread_panel import ThreadPanel

WAIT = 15.0  # seconds: generous bounds for a loaded 2-core machine


@pytest.fixture
def pump():
    p = Pump()
    yield p
    p.stop()


@pytest.fixture
def threads():
    made: list[RTThread] = []
    yield made
    for t in made:
        t.exit(timeout=5.0)


def shown(row) -> str | None:
    m = re.search(r">(\w+)</span>", row.state_label.value)
    return m.group(1) if m else None


def enabled(row) -> set[str]:
    return {a for a, b in row.buttons.items() if not b.disabled}


def settle(get, want, timeout: float = WAIT, what: str = ""):
    """Wait until ``get()`` equals ``want`` (bounded); fail with the last value seen."""
    return wait_equal(get, want, timeout, what)


def numbers(row) -> tuple[float, int]:
    """(rate in Hz, iterations) as the row's statistics show them."""
    text = row.stats_label.value
    rate = re.search(r"([\d.]+) Hz", text)
    it = re.search(r"(\d+) iterations", text)
    return float(rate.group(1)) if rate else -1.0, int(it.group(1)) if it else -1


def test_start_and_stop_by_clicking_and_the_statistics_follow(pump, threads):
    t = RTThread("tick", period=2e-3).spawn()
    threads.append(t)
    panel = ThreadPanel(t, pump=pump)
    try:
        row = panel.rows["tick"]
        assert row.period.value == 2.0  # ms
        settle(lambda: (shown(row), enabled(row)), ("waiting", {"Start"}))
        row.buttons["Start"].click()
        settle(lambda: t.state, "running", what="the thread after Start")
        settle(lambda: (shown(row), enabled(row)), ("running", {"Stop"}))
        # the statistics change while it runs: iterations grow, the rate is near 500 Hz
        first = wait_for(lambda: numbers(row)[1] > 0 and numbers(row), WAIT, what="stats")
        wait_for(lambda: numbers(row)[1] > first[1] and numbers(row)[0] > 50, WAIT,
                 what="the iterations growing and a rate shown")
        assert "period p50" in row.stats_label.value and "jitter σ" in row.stats_label.value
        assert "body mean" in row.stats_label.value
        row.buttons["Stop"].click()
        settle(lambda: t.state, "waiting", what="the thread after Stop")
        settle(lambda: (shown(row), enabled(row)), ("waiting", {"Start"}))
        wait_for(lambda: numbers(row)[0] == 0.0, WAIT, what="the rate back to 0")
        n = t.iterations
        assert numbers(row)[1] == n
    finally:
        panel.close()


def test_spawn_period_and_a_thread_table(pump, threads):
    a = RTThread("a", period=1e-3).spawn()
    b = RTThread("b")  # not spawned, free-running
    threads += [a, b]
    panel = ThreadPanel(ThreadTable([a, b]), pump=pump)
    try:
        ra, rb = panel.rows["a"], panel.rows["b"]
        settle(lambda: (shown(rb), enabled(rb)), ("new", {"Spawn"}))
        assert rb.period.value == 0.0  # free-running
        rb.buttons["Spawn"].click()
        settle(lambda: (shown(rb), enabled(rb)), ("waiting", {"Start"}))
        ra.period.value = 5.0
        wait_for(lambda: "read back 5.00 ms" in ra.note.value, WAIT, what="read-back")
        assert a.period == pytest.approx(5e-3)
        ra.period.value = -1.0
        wait_for(lambda: "refused" in ra.note.value and "≥ 0" in ra.note.value, WAIT,
                 what="the refusal")
        settle(lambda: ra.period.value, 5.0, what="the control back at the thread's period")
        assert a.period == pytest.approx(5e-3)
        ra.period.value = 0.0
        wait_for(lambda: a.period is None and "free-running" in ra.note.value, WAIT,
                 what="free-running")
    finally:
        panel.close()


class Owned(RTThread):
    """A thread whose period its owner sets (as a component's processing thread)."""

    @property
    def period(self):
        return 2e-3

    @period.setter
    def period(self, value):
        pass


def test_a_period_set_by_its_owner_is_not_changed(pump, threads):
    t = Owned("owned").spawn()
    threads.append(t)
    panel = ThreadPanel([t], pump=pump)
    try:
        row = panel.rows["owned"]
        settle(lambda: row.period.value, 2.0)
        row.period.value = 7.0
        wait_for(lambda: "set by its owner" in row.note.value, WAIT, what="refusal")
        settle(lambda: row.period.value, 2.0, what="the control back")
    finally:
        panel.close()


def test_budget_per_tick_and_closing(threads, monkeypatch):
    sent = [0]
    real_send = ipywidgets.Widget._send

    def counting(self, msg, buffers=None):
        if threading.current_thread().name == "dao-widgets-pump":
            sent[0] += 1
        return real_send(self, msg, buffers)

    monkeypatch.setattr(ipywidgets.Widget, "_send", counting)
    ts = [RTThread(f"t{i}", period=1e-3).spawn() for i in range(3)]
    threads += ts
    pump = Pump(max_rate=20.0, burst=0.05)  # a budget of 1 message per tick
    panel = ThreadPanel(ts, pump=pump)
    ticks: list[tuple[int, int, int]] = []
    real_tick = panel.pump_tick

    def tick(now: float, budget: int) -> int:
        before = sent[0]
        k = real_tick(now, budget)
        ticks.append((budget, k, sent[0] - before))
        return k

    panel.pump_tick = tick
    try:
        for t in ts:
            t.start()
        for r in panel.rows.values():
            settle(lambda r=r: (shown(r), enabled(r)), ("running", {"Stop"}), what=r.thread)
    finally:
        for t in ts:
            t.stop()
    assert ticks and all(real <= budget and real == k for budget, k, real in ticks), ticks
    assert sum(1 for _, k, _ in ticks if k) >= 3
    children = [w for r in panel.rows.values() for w in r.widgets]
    assert pump.running and panel.running
    panel.close()
    assert panel not in pump.sources
    wait_for(lambda: not pump.running, WAIT, what="the pump thread ended")
    assert panel.comm is None and all(c.comm is None for c in children)


def test_bad_arguments_fail_clearly():
    with pytest.raises(TypeError, match="RTThread objects"):
        ThreadPanel([object()])
    with pytest.raises(ValueError, match="at least one thread"):
        ThreadPanel([])
    with pytest.raises(ValueError, match="unique names"):
        ThreadPanel([RTThread("x"), RTThread("x")])

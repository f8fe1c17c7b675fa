"""The kernel's pump: round-robin, a message-rate cap for all widgets, stops with its sources."""

from __future__ import annotations

import threading
import time

import pytest

from dao.testing import wait_for
from dao.widgets.pump import Pump, get_pump


class Greedy:
    """A source that always has something to send: it sends its whole budget."""

    def __init__(self) -> None:
        self.sent = 0
        self.ticks = 0
        self.threads: set[str] = set()

    def pump_tick(self, now: float, budget: int) -> int:
        self.ticks += 1
        self.sent += budget
        self.threads.add(threading.current_thread().name)
        return budget


def test_all_sources_together_stay_under_the_cap():
    pump = Pump(max_rate=200.0, tick=0.005)
    a, b, c = Greedy(), Greedy(), Greedy()
    for s in (a, b, c):
        pump.add(s)
    t0 = time.monotonic()
    time.sleep(1.5)
    pump.stop()
    elapsed = time.monotonic() - t0
    total = a.sent + b.sent + c.sent
    # the cap and its burst (0.1 s of it), never more, however greedy the sources
    assert total <= 200.0 * elapsed + 200.0 * 0.1 + 1
    assert total >= 0.5 * 200.0 * elapsed  # and the budget is used
    # round-robin: none is starved
    assert min(a.sent, b.sent, c.sent) >= 0.2 * max(a.sent, b.sent, c.sent)
    assert a.threads == {"dao-widgets-pump"}  # fed from the pump's thread, not the caller's


def test_thread_stops_with_its_last_source_and_restarts():
    pump = Pump()
    s = Greedy()
    pump.add(s)
    assert pump.running
    wait_for(lambda: s.ticks > 3, timeout=5)
    pump.remove(s)
    wait_for(lambda: not pump.running, timeout=5)
    ticks = s.ticks
    time.sleep(0.1)
    assert s.ticks == ticks  # no longer fed
    pump.add(s)
    wait_for(lambda: s.ticks > ticks, timeout=5)
    pump.stop()
    assert not pump.running


def test_a_failing_source_is_dropped_and_told_the_others_go_on():
    class Broken:
        failed: BaseException | None = None

        def pump_tick(self, now, budget):
            raise RuntimeError("stream gone")

        def pump_failed(self, exc):
            self.failed = exc

    pump = Pump()
    bad, good = Broken(), Greedy()
    pump.add(bad)
    pump.add(good)
    wait_for(lambda: bad.failed is not None and good.ticks > 5, timeout=5)
    assert bad not in pump.sources and good in pump.sources
    assert "stream gone" in str(bad.failed) and pump.stats()["errors"] == 1
    pump.stop()


def test_only_sources_are_accepted():
    with pytest.raises(TypeError, match="pump_tick"):
        Pump().add(object())
    with pytest.raises(ValueError):
        Pump(max_rate=0)


def test_one_pump_per_kernel():
    assert get_pump() is get_pump()

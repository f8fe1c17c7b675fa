"""Status objects: the handle of an operation run with ``wait=False`` (in one process)."""

from __future__ import annotations

import logging
import threading

import pytest

from dao.examples import Counter, Relay
from dao.runtime import HookError, State, Status, StatusTimeout
from dao.testing import unique_name, wait_for


def test_result_progress_and_callbacks():
    go = threading.Event()
    seen = []

    def op(st: Status) -> str:
        st.set_progress(0.5, "half way")
        go.wait(10)
        return "result"

    st = Status.run(op, name="op")
    wait_for(lambda: st.progress == 0.5)
    assert not st.done and not st.success and st.message == "half way"
    assert "running" in repr(st) and "0.50" in repr(st)
    st.add_callback(seen.append)
    with pytest.raises(StatusTimeout, match="op not done within 0.05 s"):
        st.wait(0.05)
    with pytest.raises(TimeoutError):  # a StatusTimeout is a TimeoutError
        st.exception(0.01)
    go.set()
    assert st.wait(10) == "result" and st.result == "result"
    assert st.done and st.success and st.exception() is None and st.progress == 1.0
    assert seen == [st]
    late = []
    st.add_callback(late.append)  # already done: called at once, once
    assert late == [st] and seen == [st]
    watched = []
    st.watch(watched.append)
    st.set_progress(0.2, "a late report")  # done: ignored
    assert st.progress == 1.0 and st.message == "half way" and watched == []


def test_failure_is_raised_by_wait():
    def op(st: Status) -> None:
        raise KeyError("nope")

    st = Status.run(op, name="bad")
    with pytest.raises(KeyError, match="nope"):
        st.wait(10)
    assert st.done and not st.success and isinstance(st.exception(), KeyError)
    assert "failed: KeyError" in repr(st)
    assert not st.set_finished(1)  # done once only


def test_callback_errors_are_logged_not_lost(caplog):
    st = Status("cb")

    def broken(s):
        raise RuntimeError("callback bug")

    after = []
    st.add_callback(broken)
    st.add_callback(after.append)
    with caplog.at_level(logging.ERROR, logger="dao.runtime.status"):
        st.set_finished(3)
    assert after == [st] and st.wait(1) == 3  # the status is not failed by its callback
    assert "callback bug" in caplog.text and "Traceback" in caplog.text


def test_operation_timeout_and_combination():
    slow = Status("slow", timeout=0.05)
    with pytest.raises(StatusTimeout, match="slow not done within 0.05 s"):
        slow.wait(10)
    both = Status.finished(1) & Status.finished(2)
    assert both.wait(1) == [1, 2]
    assert (both & Status.finished(3)).wait(1) == [1, 2, 3]  # flattened
    assert Status.all().wait(1) == []
    a, b = Status("a"), Status("b")
    ab = a & b
    a.set_finished("x")
    assert not ab.done and ab.progress == 0.5
    b.set_exception(ValueError("b failed"))
    with pytest.raises(ValueError, match="b failed"):
        ab.wait(1)
    watched = []
    c = Status("c")
    c.watch(lambda s: watched.append(s.progress))
    c.set_progress(message="starting")
    c.set_progress(0.25)
    assert watched == ["starting", 0.25]
    with pytest.raises(TypeError):
        c.set_exception("not an exception")


def test_component_goto_without_waiting(stream_dir):
    c = Counter(unique_name("g"), period=1e-3)
    st = c.goto("Running", wait=False)
    assert st.wait(10) is State.RUNNING and c.state is State.RUNNING
    assert c.goto("Off", timeout=10) is State.OFF
    assert c.goto("Idle", 10) is State.IDLE  # goto(target, timeout, wait): as the client's
    st = c.goto("Standby", 10, False)
    assert st.wait(10) is State.STANDBY
    with pytest.raises(ValueError, match="unknown state 'Runing': the states are Off"):
        c.goto("Runing")
    c.close()
    r = Relay(unique_name("r"))  # no input stream: Enable fails
    st = r.goto("Running", wait=False)
    with pytest.raises(HookError, match="on_enable"):
        st.wait(10)
    assert r.state is State.ERROR
    r.close()

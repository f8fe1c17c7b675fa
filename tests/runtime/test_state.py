"""The component state machine: every (state, event) pair, hooks, errors, Recover."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dao.runtime.state import (
    TRANSITIONS,
    Event,
    HookError,
    IllegalTransition,
    State,
    StateMachine,
    hook_names,
    parse_state,
    path,
)

# The table of the Durham framework, written out independently of dao.runtime.state.
EXPECTED = {
    ("Off", "Init"): "Standby",
    ("Standby", "Stop"): "Off",
    ("Standby", "Enable"): "Idle",
    ("Idle", "Disable"): "Standby",
    ("Idle", "Run"): "Running",
    ("Running", "Idle"): "Idle",
    ("Idle", "OnFailure"): "Error",
    ("Running", "OnFailure"): "Error",
    ("Error", "Recover"): "Idle",
}

STATES = ["Off", "Standby", "Idle", "Running", "Error"]
EVENTS = ["Init", "Stop", "Enable", "Disable", "Run", "Idle", "OnFailure", "Recover"]


class Recorder:
    """Owner whose every hook records its call."""

    def __init__(self, fail: str | None = None):
        self.calls: list[str] = []
        self.fail = fail

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def hook() -> None:
            self.calls.append(name)
            if name == self.fail:
                raise RuntimeError(f"boom in {name}")

        return hook


def machine_in(state: str, owner=None) -> StateMachine:
    sm = StateMachine(owner=owner)
    sm._state = State(state)  # place it directly: the test is about one transition
    return sm


def test_table_matches_the_spec():
    assert {(s.value, e.value): n.value for (s, e), n in TRANSITIONS.items()} == EXPECTED
    assert [s.value for s in State] == STATES
    assert [e.value for e in Event] == EVENTS


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_state_event_pair(state, event):
    owner = Recorder()
    sm = machine_in(state, owner)
    if (state, event) in EXPECTED:
        new = sm.handle(event)
        assert new.value == EXPECTED[(state, event)]
        assert sm.state is new
        assert owner.calls == list(hook_names(State(state), Event(event), new))
        assert sm.history[-1][1:] == (State(state), Event(event), new)
    else:
        with pytest.raises(IllegalTransition) as info:
            sm.handle(event)
        msg = str(info.value)
        assert repr(event) in msg and repr(state) in msg
        assert info.value.state is State(state)
        assert sm.state is State(state)  # unchanged
        assert owner.calls == []  # no hook ran
        assert not sm.can(event)


def test_event_accepts_enum_and_case_variants():
    sm = StateMachine()
    assert sm.handle(Event.INIT) is State.STANDBY
    assert sm.handle("enable") is State.IDLE
    assert sm.handle("ON_FAILURE") is State.ERROR


@pytest.mark.parametrize("bad", ["", "Launch", "init now", "Error"])
def test_unknown_event_is_refused_clearly(bad):
    sm = StateMachine()
    with pytest.raises(IllegalTransition, match="unknown event"):
        sm.handle(bad)
    assert sm.state is State.OFF


def test_hook_names():
    assert hook_names(State.RUNNING, Event.ON_FAILURE, State.ERROR) == (
        "on_exit_running",
        "on_failure",
        "on_enter_error",
    )
    assert hook_names(State.OFF, Event.INIT, State.STANDBY) == (
        "on_exit_off",
        "on_init",
        "on_enter_standby",
    )


@pytest.mark.parametrize("hook", ["on_exit_standby", "on_enable", "on_enter_idle"])
def test_raising_hook_moves_to_error_with_reason(hook):
    owner = Recorder(fail=hook)
    sm = machine_in("Standby", owner)
    with pytest.raises(HookError, match=hook) as info:
        sm.handle("Enable")
    assert sm.state is State.ERROR
    assert "boom in " + hook in sm.error_reason
    assert "Traceback" in sm.error_reason
    assert info.value.reason == sm.error_reason
    assert owner.calls[-1] == "on_enter_error"  # Error is entered properly
    # Recover clears the reason and goes to Idle
    owner.fail = None
    assert sm.handle("Recover") is State.IDLE
    assert sm.error_reason is None


def test_on_failure_keeps_reason_and_recover():
    sm = machine_in("Running")
    sm.handle("OnFailure", reason="camera lost")
    assert sm.state is State.ERROR and sm.error_reason == "camera lost"
    with pytest.raises(IllegalTransition):
        sm.handle("Run")
    assert sm.error_reason == "camera lost"
    assert sm.handle("Recover") is State.IDLE


def test_failing_enter_error_hook_stays_in_error():
    owner = Recorder(fail="on_enter_error")
    sm = machine_in("Idle", owner)
    with pytest.raises(HookError):
        sm.handle("OnFailure", reason="x")
    assert sm.state is State.ERROR


def test_force_error_and_listeners():
    seen = []
    sm = StateMachine()
    sm.add_listener(lambda old, ev, new: seen.append((old.value, ev.value, new.value)))
    sm.handle("Init")
    sm.force_error("power cut")
    assert sm.state is State.ERROR and sm.error_reason == "power cut"
    assert seen == [("Off", "Init", "Standby"), ("Standby", "OnFailure", "Error")]


def test_legal_events():
    sm = StateMachine()
    assert sm.legal_events() == [Event.INIT]
    assert sm.legal_events(State.IDLE) == [Event.DISABLE, Event.RUN, Event.ON_FAILURE]


def test_concurrent_events_are_serialized():
    """Many threads toggling Run/Idle: every transition is one of the table's."""
    sm = StateMachine()
    sm.handle("Init")
    sm.handle("Enable")
    errors = []

    def worker(ev):
        for _ in range(200):
            try:
                sm.handle(ev)
            except IllegalTransition:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(e,)) for e in ("Run", "Idle") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for _, old, ev, new in sm.history:
        assert TRANSITIONS[(old, ev)] is new


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(EVENTS), max_size=30))
def test_random_event_sequences_follow_the_table(events):
    sm = StateMachine()
    state = "Off"
    for ev in events:
        if (state, ev) in EXPECTED:
            state = EXPECTED[(state, ev)]
            assert sm.handle(ev).value == state
        else:
            with pytest.raises(IllegalTransition):
                sm.handle(ev)
        assert sm.state.value == state


# -- paths between states ----------------------------------------------------------------------
def _walk(start: str, events) -> str:
    state = start
    for e in events:
        state = EXPECTED[(state, e.value)]
    return state


@pytest.mark.parametrize("start", STATES)
@pytest.mark.parametrize("target", STATES)
def test_path_reaches_every_state_by_legal_events(start, target):
    events = path(start, target)
    assert _walk(start, events) == target  # every step legal (KeyError otherwise)
    if target != "Error":
        assert Event.ON_FAILURE not in events  # failing is never a way elsewhere
    assert (start == target) == (events == [])


def test_path_is_the_shortest():
    assert [e.value for e in path("Off", "Running")] == ["Init", "Enable", "Run"]
    assert [e.value for e in path("Running", "Off")] == ["Idle", "Disable", "Stop"]
    assert [e.value for e in path("Error", "Standby")] == ["Recover", "Disable"]
    assert [e.value for e in path(State.IDLE, State.ERROR)] == ["OnFailure"]
    assert path("running", "RUNNING") == []  # names in any case


def test_path_bad_input_says_what_to_do():
    with pytest.raises(ValueError, match="unknown state 'Runing': the states are Off, Standby"):
        path("Off", "Runing")
    with pytest.raises(ValueError, match="cannot be reached from 'Off'"):
        path("Off", "Idle", transitions={(State.OFF, Event.INIT): State.STANDBY})
    assert parse_state(" idle ") is State.IDLE

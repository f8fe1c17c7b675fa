"""The component state machine of the Durham AO framework.

States: ``Off`` (initial), ``Standby``, ``Idle``, ``Running``, ``Error``. The legal transitions
are the rows of :data:`TRANSITIONS`; every other (state, event) pair is refused with
:class:`IllegalTransition` and leaves the state unchanged (the Durham C++ original drops such
events silently).

Hooks are looked up on an *owner* object (a :class:`dao.runtime.component.Component`, or the machine
itself): for a transition ``old --event--> new`` the machine calls, in this order,

1. ``on_exit_<old>()``      e.g. ``on_exit_running``
2. ``on_<event>()``         e.g. ``on_init``, ``on_enable``, ``on_failure`` (OnFailure),
                            ``on_recover``
3. ``on_enter_<new>()``     e.g. ``on_enter_idle``

A hook that raises moves the machine to ``Error``; the reason (exception and traceback) is kept
in :attr:`StateMachine.error_reason` and :class:`HookError` is raised to the caller.

The way from any state to any other is :func:`path` (the shortest over :data:`TRANSITIONS`);
:meth:`dao.runtime.component.Component.goto`, the command client's ``goto`` and the supervisor
all follow it.

Examples
--------
>>> path("Off", "Running")
[<Event.INIT: 'Init'>, <Event.ENABLE: 'Enable'>, <Event.RUN: 'Run'>]
>>> sm = StateMachine()
>>> sm.handle("Init")
<State.STANDBY: 'Standby'>
>>> sm.handle("Run")
Traceback (most recent call last):
...
dao.runtime.state.IllegalTransition: event 'Run' is illegal in state 'Standby' (legal here: ...
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from dao.errors import DaoError

__all__ = [
    "State",
    "Event",
    "TRANSITIONS",
    "StateMachine",
    "IllegalTransition",
    "HookError",
    "hook_names",
    "parse_state",
    "path",
]

log = logging.getLogger("dao.runtime.state")


class State(enum.StrEnum):
    """A component state; its value is the Durham name (``"Off"``, ``"Running"``...)."""

    OFF = "Off"
    STANDBY = "Standby"
    IDLE = "Idle"
    RUNNING = "Running"
    ERROR = "Error"


class Event(enum.StrEnum):
    """A state-machine event; its value is the Durham name sent in an EXEC command."""

    INIT = "Init"
    STOP = "Stop"
    ENABLE = "Enable"
    DISABLE = "Disable"
    RUN = "Run"
    IDLE = "Idle"
    ON_FAILURE = "OnFailure"
    RECOVER = "Recover"


#: The legal transitions: ``{(state, event): next_state}``. Anything else is illegal.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.OFF, Event.INIT): State.STANDBY,
    (State.STANDBY, Event.STOP): State.OFF,
    (State.STANDBY, Event.ENABLE): State.IDLE,
    (State.IDLE, Event.DISABLE): State.STANDBY,
    (State.IDLE, Event.RUN): State.RUNNING,
    (State.RUNNING, Event.IDLE): State.IDLE,
    (State.IDLE, Event.ON_FAILURE): State.ERROR,
    (State.RUNNING, Event.ON_FAILURE): State.ERROR,
    (State.ERROR, Event.RECOVER): State.IDLE,
}


class IllegalTransition(DaoError, ValueError):
    """An event was sent that is not legal in the current state (the state is unchanged).

    Attributes
    ----------
    state : State
        The state the machine was (and still is) in.
    event : str
        The event that was refused (an unknown name is kept as given).
    """

    def __init__(self, state: State, event: Event | str, legal: list[Event]):
        self.state = state
        self.event = event
        self.legal = legal
        name = event.value if isinstance(event, Event) else str(event)
        known = ", ".join(e.value for e in Event)
        if isinstance(event, Event):
            msg = (
                f"event {name!r} is illegal in state {state.value!r} "
                f"(legal here: {', '.join(e.value for e in legal) or 'none'})"
            )
        else:
            msg = f"unknown event {name!r} in state {state.value!r} (events are: {known})"
        super().__init__(msg)


class HookError(DaoError, RuntimeError):
    """A state hook raised during a transition; the machine is now in ``Error``.

    Attributes
    ----------
    hook : str
        Name of the hook that raised.
    reason : str
        The recorded reason (the exception and its traceback).
    """

    def __init__(self, hook: str, reason: str):
        self.hook = hook
        self.reason = reason
        last = reason.strip().splitlines()[-1] if reason.strip() else "?"
        super().__init__(f"hook {hook} raised, state is now Error: {last}")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def hook_names(state: State, event: Event, new: State) -> tuple[str, str, str]:
    """Names of the exit, transition and entry hooks called for ``state --event--> new``.

    ``OnFailure`` maps to ``on_failure`` (not ``on_on_failure``).
    """
    ev = "failure" if event is Event.ON_FAILURE else _snake(event.value)
    return (f"on_exit_{_snake(state.value)}", f"on_{ev}", f"on_enter_{_snake(new.value)}")


def parse_state(state: State | str) -> State:
    """The :class:`State` named by ``state`` (its Durham name, any case, or the enum).

    Raises
    ------
    ValueError
        ``state`` names no state; the message lists the states.
    """
    if isinstance(state, State):
        return state
    text = str(state).strip()
    for s in State:
        if text.lower() in (s.value.lower(), s.name.lower()):
            return s
    raise ValueError(
        f"unknown state {state!r}: the states are {', '.join(s.value for s in State)}"
    )


def path(
    start: State | str,
    target: State | str,
    transitions: dict[tuple[State, Event], State] | None = None,
) -> list[Event]:
    """The shortest list of events leading from state ``start`` to state ``target``.

    ``OnFailure`` is used only to reach ``Error`` itself; from ``Error`` the way out is
    ``Recover``. An empty list when ``start`` is ``target``.

    Parameters
    ----------
    start, target : State or str
        States, as :class:`State` or their names (``"Running"``).
    transitions : dict, optional
        ``{(state, event): next_state}``; default :data:`TRANSITIONS`.

    Raises
    ------
    ValueError
        A state name is unknown, or ``target`` cannot be reached from ``start``.

    Examples
    --------
    >>> [e.value for e in path("Running", "Off")]
    ['Idle', 'Disable', 'Stop']
    >>> [e.value for e in path("Error", "Running")]
    ['Recover', 'Run']
    """
    a, b = parse_state(start), parse_state(target)
    table = TRANSITIONS if transitions is None else transitions
    prev: dict[State, tuple[State, Event] | None] = {a: None}
    frontier = [a]
    while frontier and b not in prev:
        nxt = []
        for s in frontier:
            for (src, ev), dst in table.items():
                if src is not s or dst in prev:
                    continue
                if ev is Event.ON_FAILURE and dst is not b:
                    continue  # failing is never a way to somewhere else
                prev[dst] = (s, ev)
                nxt.append(dst)
        frontier = nxt
    if b not in prev:
        raise ValueError(f"state {b.value!r} cannot be reached from {a.value!r}")
    out: list[Event] = []
    s = b
    while (step := prev[s]) is not None:
        s, ev = step
        out.append(ev)
    return out[::-1]


def _as_event(event: Event | str) -> Event | str:
    if isinstance(event, Event):
        return event
    text = str(event).strip()
    for e in Event:
        if text == e.value or text.lower() == e.value.lower() or text.upper() == e.name:
            return e
    return text


class StateMachine:
    """Thread-safe Durham component state machine with entry, exit and transition hooks.

    Parameters
    ----------
    owner : object, optional
        Object on which hooks (``on_enter_idle``, ``on_init``...) are looked up; defaults to
        the machine itself, so a subclass can define them.
    name : str
        Name used in log messages.

    Attributes
    ----------
    error_reason : str or None
        Why the machine went to ``Error`` (cleared on ``Recover``).
    history : list of tuple
        The last transitions, ``(time_s, old_state, event, new_state)``; at most 100 kept.
    """

    def __init__(self, owner: Any = None, name: str = "component"):
        self._owner = self if owner is None else owner
        self.name = name
        self._state = State.OFF
        self._lock = threading.RLock()
        self.error_reason: str | None = None
        self.history: list[tuple[float, State, Event, State]] = []
        self._listeners: list[Callable[[State, Event, State], None]] = []

    @property
    def state(self) -> State:
        """The current state (reading it takes no lock)."""
        return self._state

    @property
    def lock(self) -> threading.RLock:
        """The lock held during a transition (re-entrant)."""
        return self._lock

    def legal_events(self, state: State | None = None) -> list[Event]:
        """The events legal in ``state`` (default: the current state), in table order."""
        st = self._state if state is None else state
        return [e for (s, e) in TRANSITIONS if s is st]

    def can(self, event: Event | str) -> bool:
        """Whether ``event`` is legal in the current state."""
        ev = _as_event(event)
        return isinstance(ev, Event) and (self._state, ev) in TRANSITIONS

    def add_listener(self, callback: Callable[[State, Event, State], None]) -> None:
        """Call ``callback(old, event, new)`` after every completed transition."""
        self._listeners.append(callback)

    def handle(self, event: Event | str, reason: str | None = None) -> State:
        """Apply ``event`` and return the new state.

        Parameters
        ----------
        event : Event or str
            The event, as an :class:`Event` or its Durham name (``"Init"``, ``"OnFailure"``...).
        reason : str, optional
            For ``OnFailure``: why (kept in :attr:`error_reason`).

        Raises
        ------
        IllegalTransition
            ``event`` is unknown or illegal in the current state; the state is unchanged.
        HookError
            A hook raised; the state is now ``Error`` and :attr:`error_reason` says why.
        """
        ev = _as_event(event)
        with self._lock:
            old = self._state
            if not isinstance(ev, Event) or (old, ev) not in TRANSITIONS:
                raise IllegalTransition(old, ev, self.legal_events(old))
            new = TRANSITIONS[(old, ev)]
            if ev is Event.ON_FAILURE:
                self.error_reason = reason or "OnFailure event"
            for hook in hook_names(old, ev, new):
                if hook.startswith("on_enter_"):
                    self._state = new
                fn = getattr(self._owner, hook, None)
                if fn is None:
                    continue
                try:
                    fn()
                except Exception as exc:
                    why = (
                        f"{hook} during {old.value} --{ev.value}--> {new.value} raised "
                        + "".join(traceback.format_exception(exc))
                    )
                    self._fail(why, old, ev, hook)
                    raise HookError(hook, why) from exc
            if ev is Event.RECOVER:
                self.error_reason = None
            self._record(old, ev, new)
            return new

    def _fail(self, why: str, old: State, ev: Event, hook: str = "") -> None:
        """Force the machine into Error after a hook raised (lock held)."""
        self.error_reason = why
        self._state = State.ERROR
        log.error("%s: %s", self.name, why.rstrip())
        fn = getattr(self._owner, "on_enter_error", None)
        if fn is not None and hook != "on_enter_error":
            try:
                fn()
            except Exception:  # noqa: BLE001 - already in Error, only report
                log.exception("%s: on_enter_error raised while handling a failed hook", self.name)
        self._record(old, ev, State.ERROR)

    def _record(self, old: State, ev: Event, new: State) -> None:
        self.history.append((time.time(), old, ev, new))
        del self.history[:-100]
        log.debug("%s: %s --%s--> %s", self.name, old.value, ev.value, new.value)
        for cb in list(self._listeners):
            try:
                cb(old, ev, new)
            except Exception:  # noqa: BLE001 - a listener never breaks the machine
                log.exception("%s: state listener raised", self.name)

    def force_error(self, reason: str) -> None:
        """Put the machine in ``Error`` from any state, keeping ``reason`` (no hooks but
        ``on_enter_error``). Used when something outside a transition fails badly."""
        with self._lock:
            if self._state is State.ERROR:
                self.error_reason = reason
                return
            self._fail(reason, self._state, Event.ON_FAILURE, "force_error")

    def __repr__(self) -> str:
        return f"<StateMachine {self.name!r} state={self._state.value}>"

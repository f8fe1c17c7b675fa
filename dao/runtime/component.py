"""The component base class: a state machine, published parameters, streams and a processing
loop, driven over the Durham command protocol.

A component is subclassed in a few lines::

    import numpy as np
    from dao.runtime.component import Component, Input, Output
    from dao.runtime.parameters import Parameter

    class Integrator(Component):
        slopes = Input()                                  # stream name given in the config
        command = Output((97,), np.float32)               # stream "<name>_command" by default
        gain = Parameter(0.5, float, bounds=(0, 1), doc="loop gain")
        leak = Parameter(0.99, float, bounds=(0, 1), doc="leak factor")

        def configure(self, config):                      # at Init: static configuration
            self.matrix = np.load(config["control_matrix"])

        def allocate(self):                               # at Enable: buffers
            self.state_vec = np.zeros(97, np.float32)

        def process(self, slopes):                        # in Running, once per input frame
            self.state_vec *= self.leak
            self.state_vec -= self.gain * (self.matrix @ slopes)
            self.command.set_data(self.state_vec)

Conventions (Durham): static configuration is loaded at Init, resources (streams, buffers) are
allocated at Enable, the processing thread runs only in Running. An exception in
:meth:`Component.process` moves the component to Error with the traceback as reason;
``Recover`` brings it back to Idle.

Timing: each iteration writes one record to the FIFO stream ``<name>_timing``, an int64
``(4, 1)`` array (the shape the DAO C library opens) whose rows are :data:`TIMING_FIELDS`:

====== ============== ====================================================================
row    field          meaning
====== ============== ====================================================================
0      ``input_cnt0`` the trigger input's counter (cnt0) of the frame processed; free-running:
                      the iteration number
1      ``start_ns``   when processing started (just after the wake-up), ns of CLOCK_REALTIME
2      ``end_ns``     when :meth:`Component.process` returned, ns of CLOCK_REALTIME
3      ``frame_id``   the trigger frame's id (its cnt2, the source frame number); free-running:
                      what ``process()`` put in ``self.frame_id``, else -1
====== ============== ====================================================================

Times are ``time.time_ns()``, the clock of the streams' write timestamps, so a record compares
directly with the frames' own timestamps (``start_ns`` minus the input frame's write time is
the wake-up latency). The records are written from preallocated buffers (no allocation per
frame); the heartbeat event gives the p50/p99 of ``end_ns - start_ns`` each second.

Events: :meth:`Component.serve` also binds an event socket (see :mod:`dao.runtime.events`):
state changes, parameter changes, errors and a heartbeat, as JSON, each with the process id
(``pid``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from dao.errors import DaoError, StreamTimeout
from dao.runtime.logbus import LEVELS, parse_level
from dao.runtime.parameters import Parameter, ParameterError, describe_parameters, dump_parameters
from dao.runtime.parameters import parameters as _parameters
from dao.runtime.state import (
    Event,
    HookError,
    IllegalTransition,
    State,
    StateMachine,
    parse_state,
)
from dao.runtime.state import path as state_path
from dao.runtime.status import Status
from dao.runtime.threads import RTThread
from dao.runtime.timing import TIMING_FIELDS, summary

__all__ = [
    "Component",
    "Input",
    "Output",
    "ComponentError",
    "TIMING_FIELDS",
    "load_config",
]



class ComponentError(DaoError, RuntimeError):
    """A component was misdeclared or misconfigured (missing stream name, bad config...)."""


def load_config(source: Any) -> dict[str, Any]:
    """Static configuration from a dict, a JSON string, or a ``.toml``/``.json`` file path."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return dict(source)
    text = str(source).strip()
    if text.startswith("{"):
        return json.loads(text)
    p = Path(text)
    if not p.exists():
        raise ComponentError(f"configuration file {p} not found")
    if p.suffix == ".toml":
        import tomllib

        with p.open("rb") as f:
            return tomllib.load(f)
    return json.loads(p.read_text())


class _Stream:
    """Base of the stream declarations (descriptors returning the open ``dao.shm``)."""

    kind = "stream"

    def __init__(self, stream: str | None = None, doc: str = ""):
        self.stream = stream
        self.doc = doc
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        s = obj._streams.get(self.name)
        if s is None:
            raise ComponentError(
                f"{self.kind} stream {self.name!r} of {obj.name!r} is not open: streams are "
                f"opened at Enable (state is {obj.state.value})"
            )
        return s


class Input(_Stream):
    """An input stream, opened at Enable (it must exist by then).

    Parameters
    ----------
    stream : str, optional
        Stream name or path; the component's config ``streams = {attr = "name"}`` overrides it.
    trigger : bool
        The processing loop wakes on new frames of this stream (the first trigger input only).
        Other inputs are read with ``self.<attr>.get_data()`` when needed.
    """

    kind = "input"

    def __init__(self, stream: str | None = None, *, trigger: bool = True, doc: str = ""):
        super().__init__(stream, doc)
        self.trigger = trigger


class Output(_Stream):
    """An output stream, created at Enable (reused if it already exists with the same
    geometry).

    Parameters
    ----------
    shape : tuple of int, optional
        Frame shape (1 to 3 axes); omit it with ``like``.
    dtype : numpy dtype
        Frame type.
    depth : int
        FIFO depth (1: only the newest frame).
    stream : str, optional
        Stream name or path; default ``<component name>_<attr>``; the config overrides it.
    like : str, optional
        Name of an input attribute whose shape and dtype this output takes (known at Enable).
    """

    kind = "output"

    def __init__(
        self,
        shape: tuple[int, ...] | None = None,
        dtype: Any = np.float32,
        *,
        depth: int = 1,
        stream: str | None = None,
        like: str | None = None,
        doc: str = "",
    ):
        super().__init__(stream, doc)
        if shape is None and like is None:
            raise ComponentError("Output needs a shape, or like=<input attribute>")
        self.shape = tuple(int(n) for n in shape) if shape is not None else None
        self.dtype = np.dtype(dtype)
        self.depth = int(depth)
        self.like = like


def _declared(cls: type, kind: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            if isinstance(attr, kind):
                out[name] = attr
    return out


class _ProcessingThread(RTThread):
    """The component's processing thread: its period follows the component."""

    def __init__(self, comp: Component, **kw: Any):
        self._comp = comp
        super().__init__(f"{comp.name}-process", **kw)

    @property  # type: ignore[override]
    def period(self) -> float | None:
        comp = self._comp
        if comp._trigger is not None:
            return None
        p = getattr(comp, "period", None)
        return float(p) if p is not None else comp.default_period

    @period.setter
    def period(self, value: float | None) -> None:
        pass

    def body(self) -> None:
        self._comp._iterate()


class Component:
    """Base class of a DAO component (subclass it; see the module docstring).

    Parameters
    ----------
    name : str, optional
        Component name (stream prefix, logger ``dao.runtime.component.<name>``); default the class
        name in lower case.
    config : dict or str or Path, optional
        Static configuration, loaded at Init: a dict, a JSON string or a ``.toml``/``.json``
        file (re-read at every Init). Keys naming a published parameter set it; ``streams``
        maps stream attributes to stream names; ``core`` and ``priority`` place the processing
        thread; ``timing_depth`` sets the timing FIFO depth (0: no timing stream). The rest is
        for :meth:`configure`.
    **params
        Initial values of published parameters.

    Attributes
    ----------
    sm : StateMachine
        The state machine (hooks are this object's ``on_*`` methods).
    error_reason : str or None
        Why the component is in Error.
    thread : RTThread or None
        The processing thread (spawned at Enable).
    """

    #: Free-running loop period in seconds when there is no trigger input and no ``period``
    #: parameter.
    default_period: float = 1e-3
    #: Longest wait for an input frame before checking for stop, in seconds.
    wait_timeout: float = 0.1
    #: Depth of the ``<name>_timing`` FIFO stream (0: none).
    timing_depth: int = 1024
    #: Per-frame processing times kept for the heartbeat's percentiles.
    timing_window: int = 4096
    #: Seconds between heartbeat events.
    heartbeat_interval: float = 1.0

    def __init__(self, name: str | None = None, config: Any = None, **params: Any):
        self.name = name or type(self).__name__.lower()
        self.log = logging.getLogger(f"dao.runtime.component.{self.name}")
        self._config_source = config
        self.config: dict[str, Any] = {}
        self.sm = StateMachine(owner=self, name=self.name)
        self._streams: dict[str, Any] = {}
        self._trigger = None
        self._trigger_name: str | None = None
        self._trigger_sem: int | None = None
        self._last_cnt = -1
        self._in_buf: np.ndarray | None = None
        self._timing = None
        self._timing_row = np.zeros((len(TIMING_FIELDS), 1), np.int64)
        self._proc_ns = np.zeros(self.timing_window, np.int64)  # ring of end - start
        self._n_timed = 0
        self.frame_id = -1
        self.thread: _ProcessingThread | None = None
        self._configured = False
        self._allocated = False
        self.iterations = 0
        self.server = None
        self.events = None
        self._t0 = time.monotonic()
        self._beat = (self._t0, 0, 0)  # (time, iterations, timed) at the last heartbeat
        self.sm.add_listener(self._state_changed)
        known = _parameters(self)
        for k, v in params.items():
            if k not in known:
                raise ParameterError(
                    f"{type(self).__name__} has no parameter {k!r} "
                    f"(parameters: {', '.join(known) or 'none'})"
                )
            setattr(self, k, v)

    # -- state ------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """The current state."""
        return self.sm.state

    @property
    def error_reason(self) -> str | None:
        """Why the component went to Error (None otherwise)."""
        return self.sm.error_reason

    def handle(self, event: Event | str, reason: str | None = None) -> State:
        """Apply a state event (see :meth:`StateMachine.handle`)."""
        return self.sm.handle(event, reason)

    def init(self) -> State:
        """Off -> Standby: load the static configuration."""
        return self.handle(Event.INIT)

    def stop(self) -> State:
        """Standby -> Off."""
        return self.handle(Event.STOP)

    def enable(self) -> State:
        """Standby -> Idle: open/create streams, allocate resources, spawn the thread."""
        return self.handle(Event.ENABLE)

    def disable(self) -> State:
        """Idle -> Standby: end the thread, release resources, close streams."""
        return self.handle(Event.DISABLE)

    def run(self) -> State:
        """Idle -> Running: the processing loop starts."""
        return self.handle(Event.RUN)

    def idle(self) -> State:
        """Running -> Idle: the processing loop stops after the current iteration."""
        return self.handle(Event.IDLE)

    def recover(self) -> State:
        """Error -> Idle: reconfigure/reallocate what is missing."""
        return self.handle(Event.RECOVER)

    def fail(self, reason: str = "OnFailure requested") -> State:
        """Idle or Running -> Error."""
        return self.handle(Event.ON_FAILURE, reason)

    def goto(
        self, target: State | str, timeout: float | None = None, wait: bool = True
    ) -> State | Status:
        """Apply the events leading from the current state to ``target``
        (:func:`dao.runtime.state.path`: from Error, Recover first).

        Parameters
        ----------
        target : State or str
            The state to reach (``"Running"``...).
        timeout : float, optional
            Longest time for the whole operation, in seconds (None: as long as the hooks
            take). With ``wait=False`` the status fails with
            :class:`~dao.runtime.status.StatusTimeout` after it.
        wait : bool
            Block until there (returns the state); False: return a
            :class:`~dao.runtime.status.Status` at once, the events applied in a thread
            (progress: the fraction of the events applied).

        Returns
        -------
        State or Status
            The state reached, or (``wait=False``) the operation's status.

        Raises
        ------
        ValueError
            ``target`` is not a state name.
        HookError
            A hook raised on the way (the component is in Error).
        dao.runtime.status.StatusTimeout
            ``wait`` and not there within ``timeout`` (the events go on being applied).
        """
        tgt = parse_state(target)
        if wait and timeout is None:
            return self._goto(tgt, None)
        st = Status.run(
            lambda status: self._goto(tgt, status), name=f"{self.name} to {tgt.value}",
            timeout=timeout,
        )
        return st.wait() if wait else st

    def _goto(self, target: State, status: Status | None) -> State:
        steps = state_path(self.state, target)
        for i, ev in enumerate(steps):
            if status is not None:
                status.set_progress(i / len(steps), f"{self.state.value} --{ev.value}-->")
            self.handle(ev, f"goto({target.value}) requested")
        return self.state

    # -- user hooks (override) --------------------------------------------------------------
    def configure(self, config: dict[str, Any]) -> None:
        """At Init: use the static configuration (parameters are already set from it)."""

    def allocate(self) -> None:
        """At Enable, after the streams are open: allocate buffers, load matrices."""

    def release(self) -> None:
        """At Disable, before the streams are closed: free what :meth:`allocate` made."""

    def process(self, data: np.ndarray | None) -> None:
        """One iteration, in Running: ``data`` is the new frame of the trigger input (``None``
        when free-running, paced by ``period``). Write results to the outputs."""

    def update(self, payload: str = "") -> str:
        """UPDATE command: reload what is reloaded on demand. Default: re-read the static
        configuration's parameter values. Returns the reply payload."""
        self._load_config(set_params=True)
        return "updated"

    def other(self, payload: str) -> str:
        """OTHER command: a free-form user hook. Returns the reply payload."""
        raise ComponentError(f"{self.name} handles no OTHER command (got {payload!r})")

    # -- state hooks (subclasses overriding them call super()) ------------------------------
    def _load_config(self, set_params: bool) -> None:
        self.config = load_config(self._config_source)
        params = _parameters(self)
        for key in ("timing_depth", "wait_timeout", "default_period"):
            if key in self.config:
                setattr(self, key, type(getattr(type(self), key))(self.config[key]))
        if set_params:
            for k, v in self.config.items():
                if k in params:
                    setattr(self, k, v)

    def on_init(self) -> None:
        self._load_config(set_params=True)
        self.configure(self.config)
        self._configured = True

    def on_stop(self) -> None:
        self._configured = False

    def on_enable(self) -> None:
        self._open_streams()
        try:
            self.allocate()
            self.thread = _ProcessingThread(
                self, core=self.config.get("core"), priority=self.config.get("priority")
            )
            self.thread.spawn()
        except BaseException:
            self._close_streams()
            raise
        self._allocated = True

    def on_disable(self) -> None:
        self._teardown()

    def on_enter_running(self) -> None:
        if self.thread is None:
            raise ComponentError(f"{self.name}: no processing thread (not enabled)")
        if self._trigger is not None:
            # forget the frames posted while not running: wait for new ones only
            self._last_cnt = self._trigger.get_counter()
            self._trigger.drain_semaphore(self._trigger_sem)
        self.thread.start()

    def on_exit_running(self) -> None:
        if self.thread is not None:
            self.thread.stop(wait=True, timeout=max(5.0, 10 * self.wait_timeout))

    def on_recover(self) -> None:
        if not self._configured:
            self.on_init()
        if not self._allocated:
            self.on_enable()

    # -- streams ----------------------------------------------------------------------------
    def stream_name(self, attr: str) -> str | None:
        """The stream name (or path) bound to the stream attribute ``attr``."""
        decl = _declared(type(self), _Stream)[attr]
        mapping = self.config.get("streams", {}) or {}
        if attr in mapping:
            return str(mapping[attr])
        if decl.stream:
            return decl.stream
        if isinstance(decl, Output):
            return f"{self.name}_{attr}"
        return None

    @property
    def inputs(self) -> dict[str, Input]:
        """Declared input streams, ``{attr: Input}``."""
        return _declared(type(self), Input)

    @property
    def outputs(self) -> dict[str, Output]:
        """Declared output streams, ``{attr: Output}``."""
        return _declared(type(self), Output)

    @property
    def timing_name(self) -> str:
        """Name of the timing FIFO stream: ``<name>_timing`` unless ``streams.timing`` is set."""
        return str((self.config.get("streams") or {}).get("timing", f"{self.name}_timing"))

    @property
    def input_buffer(self) -> np.ndarray | None:
        """The buffer each frame of the trigger input is read into (the array
        :meth:`process` gets; the same one every frame, from Enable to Disable), or None."""
        return self._in_buf

    @property
    def timing_stream(self):
        """The ``<name>_timing`` FIFO stream (open between Enable and Disable), or None."""
        return self._timing

    def _open_streams(self) -> None:
        from dao.streams.stream import shm

        self._trigger = None
        self._trigger_sem = None
        try:
            for attr, decl in self.inputs.items():
                path = self.stream_name(attr)
                if path is None:
                    raise ComponentError(
                        f"input {attr!r} of {self.name!r} has no stream: set "
                        f'streams = {{{attr} = "<stream name>"}} in its config'
                    )
                s = shm(path)
                self._streams[attr] = s
                if decl.trigger and self._trigger is None:
                    self._trigger = s
                    self._trigger_name = attr
                    self._trigger_sem = s.claim_semaphore()
                    self._in_buf = np.empty(s.shape, s.dtype)
            for attr, decl in self.outputs.items():
                path = self.stream_name(attr)
                if decl.like is not None:
                    src = self._streams.get(decl.like)
                    if src is None:
                        raise ComponentError(
                            f"output {attr!r} of {self.name!r} is like="
                            f"{decl.like!r}, which is not an input"
                        )
                    shape, dtype = src.shape, src.dtype
                else:
                    shape, dtype = decl.shape, decl.dtype
                self._streams[attr] = shm(path, np.zeros(shape, dtype), depth=decl.depth)
            if self.timing_depth > 0:
                self._timing = self._open_timing(shm)
        except BaseException:
            self._close_streams()
            raise

    def _open_timing(self, shm: type) -> Any:
        """The timing FIFO: the existing one if it has the right geometry (a re-Enable: its
        history goes on, with no blank record), else a new one."""
        shape, depth = (len(TIMING_FIELDS), 1), self.timing_depth
        with contextlib.suppress(OSError, DaoError):
            s = shm(self.timing_name)
            if s.shape == shape and s.dtype == np.int64 and s.depth == depth:
                return s
            s.close()
        return shm(self.timing_name, np.zeros(shape, np.int64), depth=depth)

    def _close_streams(self) -> None:
        for s in [*self._streams.values(), self._timing]:
            if s is not None:
                with contextlib.suppress(Exception):
                    s.close()
        self._streams.clear()
        self._timing = None
        self._trigger = None
        self._trigger_sem = None

    def _teardown(self) -> None:
        if self.thread is not None:
            self.thread.exit(wait=True, timeout=max(5.0, 10 * self.wait_timeout))
            self.thread = None
        try:
            if self._allocated:
                self.release()
        finally:
            self._allocated = False
            self._close_streams()

    # -- the processing loop ----------------------------------------------------------------
    def _iterate(self) -> None:
        trig = self._trigger
        if trig is not None:
            try:
                data = trig.get_data(
                    check=True, semNb=self._trigger_sem, timeout=self.wait_timeout, out=self._in_buf
                )
            except StreamTimeout:
                return
            if not self.thread or not self.thread.run_requested:
                return
            info = trig.last_read  # the one FrameInfo of the frame
            cnt = info.cnt0
            if cnt <= self._last_cnt:  # a stale post (frame already processed): skip
                return
            self._last_cnt = cnt
            self.frame_id = info.cnt2
        else:
            data = None
            cnt = self.iterations
            self.frame_id = -1
        t0 = time.time_ns()
        try:
            self.process(data)
        except Exception as exc:  # noqa: BLE001 - any error in process() -> Error
            self._processing_failed(exc)
            return
        t1 = time.time_ns()
        self.iterations += 1
        n = self._n_timed
        self._proc_ns[n % self._proc_ns.shape[0]] = t1 - t0
        self._n_timed = n + 1
        if self._timing is not None:
            row = self._timing_row
            row[0, 0] = cnt
            row[1, 0] = t0
            row[2, 0] = t1
            row[3, 0] = self.frame_id
            self._timing.set_data(row)

    def _processing_failed(self, exc: BaseException) -> None:
        reason = f"process() raised in {self.name}: " + "".join(traceback.format_exception(exc))
        self.log.error("%s", reason.rstrip())
        if self.thread is not None:
            self.thread.stop(wait=False)

        def fire() -> None:
            try:
                self.sm.handle(Event.ON_FAILURE, reason)
            except IllegalTransition:
                self.log.warning(
                    "process() failed but %s is now %s: OnFailure not applied",
                    self.name,
                    self.state.value,
                )
            except HookError:
                pass  # already in Error, reason recorded

        threading.Thread(target=fire, name=f"{self.name}-onfailure", daemon=True).start()

    # -- command protocol -------------------------------------------------------------------
    def handle_command(self, function: str, payload: str, message: Any = None) -> str:
        """Answer one command of the protocol (raise to reply FAILURE with the message)."""
        if function == "EXEC":
            parts = payload.strip().split(None, 1)
            if not parts:
                raise IllegalTransition(self.state, "", self.sm.legal_events())
            reason = parts[1] if len(parts) > 1 else "OnFailure requested by a client"
            return self.handle(parts[0], reason).value
        if function == "SETUP":
            return self._setup(payload)
        if function == "UPDATE":
            return str(self.update(payload) or "")
        if function == "PING":
            return str(os.getpid())
        if function == "STATE":
            return self.state.value
        if function == "SET_LOG_LEVEL":
            text = payload.strip().upper()
            if text not in LEVELS:
                raise ValueError(f"unknown log level {payload!r}: one of {', '.join(LEVELS)}")
            self.set_log_level(text)
            return text
        if function == "DUMP":
            return json.dumps(dump_parameters(self))
        if function == "QUERY":
            return self.query(payload.strip())
        if function == "OTHER":
            return str(self.other(payload) or "")
        raise ComponentError(f"unknown command {function!r}")

    def set_log_level(self, level: str | int) -> None:
        """Set the component's log level (TRACE ... CRITICAL)."""
        self.log.setLevel(parse_level(level))

    def _setup(self, payload: str) -> str:
        text = payload.strip()
        params = _parameters(self)
        if text.startswith("{"):
            items = json.loads(text)
            pairs = [(k, v, False) for k, v in items.items()]
        else:
            key, sep, value = text.partition("=")
            if not sep:
                raise ParameterError(f"SETUP expects key=value, got {payload!r}")
            pairs = [(key.strip(), value, True)]
        out = []
        for key, value, is_text in pairs:
            p = params.get(key)
            if p is None:
                raise ParameterError(
                    f"{self.name} has no parameter {key!r} "
                    f"(parameters: {', '.join(params) or 'none'})"
                )
            if p.readonly:
                raise ParameterError(f"parameter {key!r} of {self.name} is read-only")
            setattr(self, key, p.parse(value) if is_text else value)
            out.append(f"{key}={p.format(getattr(self, key))}")
        self.log.info("SETUP %s", ", ".join(out))
        return ", ".join(out)

    def query(self, key: str) -> str:
        """The text value of a published parameter, or of ``state``, ``error_reason``,
        ``stats`` (loop timing, JSON), ``streams`` (JSON), ``parameters`` (JSON descriptions),
        ``events_address`` (the event socket, ``""`` if none), ``timing_fields`` (JSON)."""
        params = _parameters(self)
        if key in params:
            return params[key].format(getattr(self, key))
        if key == "state":
            return self.state.value
        if key == "error_reason":
            return self.error_reason or ""
        if key == "events_address":
            return self.events.address if self.events is not None else ""
        if key == "timing_fields":
            return json.dumps(list(TIMING_FIELDS))
        if key == "stats":
            return json.dumps(self.stats())
        if key == "streams":
            return json.dumps(self.streams())
        if key == "parameters":
            return json.dumps(describe_parameters(self))
        raise ParameterError(
            f"{self.name} has no parameter {key!r} "
            f"(parameters: {', '.join(params) or 'none'}; also state, "
            "error_reason, stats, streams, parameters, events_address, timing_fields)"
        )

    def parameters(self) -> dict[str, Parameter]:
        """The published parameters, ``{name: Parameter}``."""
        return _parameters(self)

    def dump(self) -> dict[str, Any]:
        """Current values of the published parameters."""
        return dump_parameters(self)

    def streams(self) -> dict[str, str | None]:
        """Stream attribute -> stream name, plus ``timing``."""
        out: dict[str, str | None] = {
            a: self.stream_name(a) for a in _declared(type(self), _Stream)
        }
        out["timing"] = self.timing_name if self.timing_depth > 0 else None
        return out

    def processing_times(self, last: int | None = None) -> np.ndarray:
        """The last per-frame processing times (``end_ns - start_ns``), oldest first, in ns.

        At most :attr:`timing_window` are kept; ``last`` limits the number returned.
        """
        ring = self._proc_ns
        n = self._n_timed
        k = min(n, ring.shape[0]) if last is None else min(int(last), n, ring.shape[0])
        return ring[np.arange(n - k, n) % ring.shape[0]]

    def stats(self) -> dict[str, Any]:
        """Processing loop timing (see :meth:`RTThread.stats`), iteration count, and the p50
        and p99 of the per-frame processing time over the kept window (s)."""
        out = self.thread.stats() if self.thread is not None else {}
        out["iterations_total"] = self.iterations
        out.update(summary("processing", self.processing_times() * 1e-9))
        return out

    # -- events -----------------------------------------------------------------------------
    def publish(self, kind: str, **fields: Any) -> None:
        """Publish an event (no-op when the component publishes none: see :meth:`serve`).

        ``component``, ``kind``, ``time`` and ``state`` are filled in; see
        :mod:`dao.runtime.events` for the kinds and their fields.
        """
        ev = self.events
        if ev is not None:
            ev.publish(kind, state=self.state.value, **fields)

    def _state_changed(self, old: State, event: Event, new: State) -> None:
        if self.events is None:
            return
        reason = self.sm.error_reason if new is State.ERROR else None
        self.events.publish(
            "state", state=new.value, event=event.value, old=old.value, reason=reason
        )
        if new is State.ERROR:
            last = (reason or "").strip().splitlines()
            self.events.publish(
                "error", state=new.value, event=event.value, reason=reason,
                message=last[-1] if last else "",
            )

    def _parameter_changed(self, name: str, old: Any, new: Any) -> None:
        if self.events is None:
            return
        try:
            same = bool(np.array_equal(old, new)) if isinstance(new, np.ndarray) else old == new
        except Exception:  # noqa: BLE001 - incomparable values: report the change
            same = False
        if not same:
            self.publish("parameter", name=name, old=old, new=new)

    def heartbeat(self, reset: bool = True) -> dict[str, Any]:
        """The heartbeat event's fields: iteration rate and per-frame processing time since
        the previous heartbeat (``reset=False``: without starting a new window)."""
        now = time.monotonic()
        t_prev, it_prev, n_prev = self._beat
        it, n = self.iterations, self._n_timed
        dt = now - t_prev
        fresh = self.processing_times(n - n_prev)
        if reset:
            self._beat = (now, it, n)
        return {
            "state": self.state.value,
            "iterations": it,
            "rate_hz": (it - it_prev) / dt if dt > 0 else 0.0,
            **summary("processing", fresh * 1e-9),
            "samples": int(fresh.shape[0]),
            "uptime_s": now - self._t0,
            "pid": os.getpid(),
        }

    def _heartbeat_events(self) -> list[dict[str, Any]]:
        assert self.events is not None
        return [self.events.make("heartbeat", **self.heartbeat(reset=True))]

    def _snapshot_events(self) -> list[dict[str, Any]]:
        assert self.events is not None
        st = self.state
        return [
            self.events.make(
                "state", state=st.value, event=None, old=None,
                reason=self.error_reason if st is State.ERROR else None, snapshot=True,
                parameters=dump_parameters(self),
            ),
            self.events.make("heartbeat", **self.heartbeat(reset=False)),
        ]

    # -- serving ----------------------------------------------------------------------------
    def serve(
        self,
        address: str | int = 0,
        host: str = "127.0.0.1",
        events_port: int | None = None,
        events: bool = True,
    ):
        """Serve the command protocol (a :class:`dao.runtime.command.CommandServer`, returned)
        and publish events (:attr:`events`, a :class:`dao.runtime.events.EventPublisher`).

        Parameters
        ----------
        address : str or int
            Command port (0: any free port) or bind endpoint.
        host : str
            Interface to bind (``"*"``: every interface, as the Durham original).
        events_port : int, optional
            Event port; default the command port + 1 if free, else any free port
            (``QUERY events_address`` tells which). 0: any free port.
        events : bool
            Publish events at all.
        """
        from dao.runtime.command import CommandServer, bind_address
        from dao.runtime.events import EventPublisher

        self.server = CommandServer(
            self.handle_command, bind_address(address, host), name=f"{self.name}-command"
        ).start()
        if events:
            ports = [events_port] if events_port is not None else [self.server.port + 1, 0]
            ports = [p for p in ports if p < 65536]
            for i, port in enumerate(ports):
                pub = EventPublisher(
                    bind_address(port, host), self.name, snapshot=self._snapshot_events,
                    heartbeat=self._heartbeat_events, interval=self.heartbeat_interval,
                    name=f"{self.name}-events", fields={"pid": os.getpid()},
                )
                try:
                    self.events = pub.start()
                    break
                except DaoError:
                    if i == len(ports) - 1:
                        self.server.stop()
                        self.server = None
                        raise
        self.log.info(
            "%s serving commands at %s, events at %s", self.name, self.server.address,
            self.events.address if self.events is not None else "none",
        )
        return self.server

    def close(self) -> None:
        """Stop serving, end the processing thread, release resources and close streams
        (whatever the state; the state is left as it is)."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.events is not None:
            self.events.stop()
            self.events = None
        with self.sm.lock:
            try:
                self._teardown()
            except Exception:  # noqa: BLE001 - closing must finish
                self.log.exception("%s: release() raised while closing", self.name)

    def __enter__(self) -> Component:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.state.value}>"

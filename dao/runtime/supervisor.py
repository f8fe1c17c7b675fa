"""Start, watch and stop a set of components, each in its own OS process.

The configuration is a TOML file (or the equivalent dict)::

    # optional: a log forwarder run by the supervisor, components publish to it
    [log]
    forward = true
    frontend = "tcp://127.0.0.1:5570"
    backend = "tcp://127.0.0.1:5571"

    events_port = 5600           # the supervisor's health events (0 or absent: a free port)

    [[component]]
    name = "counter"
    class = "dao.examples:Counter"
    port = 5601                  # 0 or absent: a free port is chosen
    events_port = 5602           # its event socket (0 or absent: a free port)
    state = "Running"            # driven there once started (default: stay Off)
    restart = true               # restart the process if it dies (default false: report it)
    args = { step = 2, period = 0.01 }   # static configuration (parameters, streams, ...)
    host = "127.0.0.1"           # interface to bind
    log_level = "INFO"

Each component runs as ``python -m dao.runtime.cli run CLASS --port PORT --events-port PORT
--name NAME --config JSON`` (the same code as ``dao run``). :meth:`Supervisor.status` reports
each one's pid, liveness and state; :meth:`Supervisor.health` the same without asking the
processes (their last known state comes from their events); :meth:`Supervisor.stop_all`
drives them to Off, then sends SIGTERM, then SIGKILL, with timeouts.

Watching: once started, a monitor thread checks the processes every ``monitor_interval``
seconds (0.2 by default) and follows every component's events (state, parameters). A process
that dies is reported (:meth:`Supervisor.poll` returns each report once) and, with
``restart = true``, restarted **to the state and parameter values it last had**: the
parameters are set first (SETUP, and in the configuration the new process loads at Init), then
the component is driven to its last known state (its configured one if it died in Error).
Restarts run on a thread of their own, so the monitor goes on following events and seeing
other deaths meanwhile. A restart that fails after its process was spawned (the process
exits, does not answer, or cannot be driven to the state) kills that process and is tried
again after a back-off; the report says so, and says which parameters were not restored.

Who says what the state is: while a process starts, the start (the replies to its commands)
owns the recorded state; once it is there, the component's events do, but only the events of
the current process (each carries its ``pid``) and none older than the end of the start (each
carries its ``time``), so the recorded state never goes back to an earlier one.

A component in Error is known at once: the state event that says so carries the reason (the
component's ``error_reason``, with the traceback of an exception in ``process()``), and the
supervisor records both together, so :meth:`Supervisor.health` gives ``state: "Error"`` and
its ``error_reason`` from the same moment (``None`` again once it leaves Error, e.g. after
Recover). Each state change is logged (``dao.runtime.supervisor``; an Error at ERROR level,
with the last line of its reason), as each death is.

Health events: the supervisor publishes, on its own event socket
(:attr:`Supervisor.events_address`, see :mod:`dao.runtime.events`), a ``health`` event per
component (``pid``, ``alive``, ``uptime_s``, ``restarts``, ``last_exit_code``, ``state``,
``error_reason``, ``address``, ``events_address``, ``why``) at each change (started, died,
restarted, stopped, a new state or Error reason) and about once a second; a new subscriber gets
them all at once.

Restarts back off: the first death is restarted at once; a process that dies again within
``stable_after`` seconds of its start waits ``backoff[0]`` seconds, doubling at each quick
death up to ``backoff[1]``, so a component that crashes at start does not spin the machine.
Children get ``$DAO_PARENT_PID`` and stop when the supervisor's process dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dao.errors import DaoError
from dao.runtime.command import CommandFailed, CommandTimeout, ComponentClient
from dao.runtime.events import EventError, EventPublisher, EventSubscriber
from dao.runtime.state import State, parse_state

__all__ = ["Supervisor", "ComponentSpec", "SupervisorError", "free_port", "child_environment",
           "LAUNCHER"]

log = logging.getLogger("dao.runtime.supervisor")

#: How a component process is started: ``[sys.executable, *LAUNCHER, "run", ...]``.
LAUNCHER = ("-m", "dao.runtime.cli")


class SupervisorError(DaoError, RuntimeError):
    """A component process could not be started or configured."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    return _free_ports(1, host)[0]


def _free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` right now (all held open while picking, so
    one call never returns a port twice: pick every port needed in one call)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host if host != "*" else "0.0.0.0", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _last_line(text: str | None) -> str:
    """The last non-blank line of ``text`` (of a reason: usually the exception's line)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a child process that must import this same ``dao``.

    ``PYTHONPATH`` gets the folder holding this ``dao`` first (a source checkout works without
    an install); ``extra`` variables are added last.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@dataclass
class ComponentSpec:
    """One ``[[component]]`` entry of the configuration."""

    name: str
    cls: str
    port: int = 0
    host: str = "127.0.0.1"
    state: str = "Off"
    restart: bool = False
    args: dict[str, Any] = field(default_factory=dict)
    log_level: str = "INFO"
    env: dict[str, str] = field(default_factory=dict)
    events_port: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComponentSpec:
        known = {
            "name",
            "class",
            "cls",
            "port",
            "events_port",
            "host",
            "state",
            "restart",
            "args",
            "log_level",
            "env",
        }
        extra = set(d) - known
        if extra:
            raise SupervisorError(
                f"component entry {d.get('name', '?')!r}: unknown keys "
                f"{sorted(extra)} (known: {sorted(known)})"
            )
        missing = [k for k, have in (("name", "name" in d),
                                     ("class", bool({"class", "cls"} & set(d)))) if not have]
        if missing:
            raise SupervisorError(
                f"component entry {d!r} has no {' and no '.join(repr(k) for k in missing)}: "
                "each [[component]] needs a name and a class, e.g. name = \"counter\" and "
                "class = \"dao.examples:Counter\"")
        state = str(d.get("state", "Off"))
        try:
            if parse_state(state) is State.ERROR:
                raise ValueError("Error is not a state to start in")
        except ValueError as exc:
            raise SupervisorError(
                f"component {d['name']!r}: state {state!r} refused ({exc}); use Off, Standby, "
                "Idle or Running"
            ) from None
        return cls(
            name=str(d["name"]),
            cls=str(d.get("class", d.get("cls"))),
            port=int(d.get("port", 0)),
            host=str(d.get("host", "127.0.0.1")),
            state=parse_state(state).value,
            restart=bool(d.get("restart", False)),
            args=dict(d.get("args", {})),
            log_level=str(d.get("log_level", "INFO")),
            env={k: str(v) for k, v in d.get("env", {}).items()},
            events_port=int(d.get("events_port", 0)),
        )


@dataclass
class _Proc:
    spec: ComponentSpec
    port: int
    events_port: int
    popen: subprocess.Popen | None = None
    client: ComponentClient | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    reported_dead: bool = False
    stopping: bool = False
    starting: bool = False  # a start is under way (it reports its own failure)
    restarting: bool = False  # a restart is scheduled or running on a worker thread
    restarter: threading.Thread | None = None
    # serialises start and stop of this process (taken before the supervisor's lock)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # what the component said last (its events) and what a restart brings back
    state: str | None = None
    # why it is in Error (set with state, in the same locked update; None when not in Error)
    error_reason: str | None = None
    asking_reason: bool = False  # a heartbeat said Error before any reason came: asking it
    params: dict[str, Any] = field(default_factory=dict)
    readonly: set[str] = field(default_factory=set)
    restore: tuple[str, dict[str, Any]] | None = None
    # events published before this time (time.time()) are older than what the last start
    # established: ignored (infinite while a start owns the state)
    synced_at: float = math.inf


class Supervisor:
    """Runs the components of a configuration as child processes, watches and restarts them.

    Parameters
    ----------
    config : dict
        Parsed configuration (see the module docstring); :meth:`from_file` reads TOML.
    ready_timeout : float
        Longest wait for a started process to answer PING, in seconds.
    command_timeout : float
        Reply timeout of the commands sent to the components, in seconds.
    backoff : (float, float)
        First and longest wait before restarting a process that died soon after its start,
        in seconds.
    stable_after : float
        Seconds a process must live for its next death to be restarted at once.
    events_port : int or None
        Port of the supervisor's health events (0: any free port; None: publish none). The
        configuration's ``events_port`` key overrides it.
    monitor_interval : float or None
        Seconds between two checks of the processes by the monitor thread (None: no
        thread; then only :meth:`poll` checks, and restarts come back to the configured
        state).
    heartbeat_interval : float
        Seconds between two rounds of health events.

    Attributes
    ----------
    events : list of str
        Every report made so far (deaths, restarts), oldest first.
    """

    def __init__(
        self, config: dict[str, Any], ready_timeout: float = 20.0, command_timeout: float = 3.0,
        backoff: tuple[float, float] = (0.5, 30.0), stable_after: float = 10.0,
        events_port: int | None = 0, monitor_interval: float | None = 0.2,
        heartbeat_interval: float = 1.0,
    ):
        self.config = config
        self.ready_timeout = ready_timeout
        self.command_timeout = command_timeout
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.stable_after = float(stable_after)
        self.monitor_interval = monitor_interval
        self.heartbeat_interval = float(heartbeat_interval)
        self._events_port = config.get("events_port", events_port)
        entries = config.get("component", [])
        if isinstance(entries, dict):
            raise SupervisorError(
                "'component' is one table ([component]); write each component as an entry of "
                "an array of tables: [[component]] (two brackets), one per component")
        if not isinstance(entries, list) or not all(isinstance(d, dict) for d in entries):
            raise SupervisorError(
                f"'component' must be a list of tables ([[component]] entries with name and "
                f"class), not {entries!r}")
        specs = [ComponentSpec.from_dict(d) for d in entries]
        names = [s.name for s in specs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SupervisorError(f"component names must be unique; repeated: {sorted(dup)}")
        self.procs: dict[str, _Proc] = {}
        # every port in one call (a port free on every interface is free on each), none of
        # them one that another component is configured to use
        fixed = {p for s in specs for p in (s.port, s.events_port) if p}
        need = sum((not s.port) + (not s.events_port) for s in specs)
        picked = [p for p in _free_ports(need + len(fixed), "0.0.0.0") if p not in fixed]
        free = iter(picked[:need])
        for spec in specs:
            port = spec.port or next(free)
            events_port = spec.events_port or next(free)
            self.procs[spec.name] = _Proc(spec, port, events_port)
        self.forwarder = None
        self.log_bus: str | None = None
        self.events: list[str] = []
        self._pending: list[str] = []
        self._lock = threading.RLock()
        self._publisher: EventPublisher | None = None
        self._monitor: threading.Thread | None = None
        self._monitor_stop = threading.Event()
        self._spawner: threading.Thread | None = None
        self._spawn_queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = False  # stop_all() under way or done: no thread or socket made anew
        self._t0 = time.monotonic()

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kw: Any) -> Supervisor:
        """Read a TOML configuration file."""
        import tomllib

        with Path(path).open("rb") as f:
            return cls(tomllib.load(f), **kw)

    # -- starting ---------------------------------------------------------------------------
    def _env(self, spec: ComponentSpec) -> dict[str, str]:
        # children stop when this process dies
        return child_environment(**spec.env, DAO_PARENT_PID=str(os.getpid()))

    def command_line(self, name: str, params: dict[str, Any] | None = None) -> list[str]:
        """The command line that starts component ``name`` (``params``: parameter values
        added to its static configuration, set at Init)."""
        p = self.procs[name]
        s = p.spec
        cmd = [
            sys.executable,
            *LAUNCHER,
            "run",
            s.cls,
            "--port",
            str(p.port),
            "--events-port",
            str(p.events_port),
            "--name",
            s.name,
            "--host",
            s.host,
            "--log-level",
            s.log_level,
        ]
        args = {**s.args, **(params or {})}
        if args:
            cmd += ["--config", json.dumps(args)]
        if self.log_bus:
            cmd += ["--log-bus", self.log_bus]
        return cmd

    @staticmethod
    def _connect_host(host: str) -> str:
        return "127.0.0.1" if host in ("*", "0.0.0.0") else host

    def _address(self, p: _Proc) -> str:
        return f"tcp://{self._connect_host(p.spec.host)}:{p.port}"

    def _events_address(self, p: _Proc) -> str:
        return f"tcp://{self._connect_host(p.spec.host)}:{p.events_port}"

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start a child process from the spawner thread.

        Children stop when their parent dies (Linux ``PR_SET_PDEATHSIG``), and for Linux the
        parent is the *thread* that forked them: a child started from a short-lived thread (a
        ``wait=False`` operation, the monitor) would get SIGTERM when that thread ends. One
        thread, living as long as the supervisor runs, starts them all.
        """
        def popen() -> subprocess.Popen:
            return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, start_new_session=True)

        with self._lock:
            if self._spawner is None or not self._spawner.is_alive():
                self._spawner = threading.Thread(target=self._spawner_main,
                                                 name="supervisor-spawner", daemon=True)
                self._spawner.start()
        if threading.current_thread() is self._spawner:
            return popen()
        done: queue.SimpleQueue = queue.SimpleQueue()
        self._spawn_queue.put((popen, done))
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def _spawner_main(self) -> None:
        while True:
            item = self._spawn_queue.get()
            if item is None:
                return
            fn, done = item
            try:
                done.put((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.put((False, exc))

    def start(self, name: str, state: str | None = None,
              params: dict[str, Any] | None = None) -> int:
        """Start component ``name``, wait until it answers PING, set ``params`` (if any),
        then drive it to ``state`` (default: its configured state).

        Parameters
        ----------
        name : str
            The component's name.
        state : str, optional
            The state to drive it to (default: its configured ``state``).
        params : dict, optional
            Parameter values set before it is driven there (SETUP, and in the configuration
            it loads at Init).

        Returns
        -------
        int
            The process id (that of the running process if it was already started).

        Raises
        ------
        SupervisorError
            The process exited while starting, did not answer in time, or could not be driven
            to the state. The process is not left running: it was killed.
        """
        self._closing = False
        pid, _ = self._start(name, state, params, restart=False)
        return pid

    def _start(self, name: str, state: str | None, params: dict[str, Any] | None,
               restart: bool) -> tuple[int, list[str]]:
        """Start a process (see :meth:`start`); returns its pid and the parameters it did not
        get back (as notes for a restart report)."""
        p = self.procs[name]
        if restart and (p.stopping or self._closing):
            raise SupervisorError(f"{name} is being stopped: not restarted")
        self._ensure_services()
        with p.lock:
            with self._lock:
                if p.popen is not None and p.popen.poll() is None:
                    return p.popen.pid, []
                if restart and p.stopping:
                    raise SupervisorError(f"{name} is being stopped: not restarted")
                p.stopping = False
                p.starting = True
                p.synced_at = math.inf  # the start owns p.state until it is done
                p.restart_at = None
            try:
                notes = self._bring_up(p, state or p.spec.state, params or {})
            except BaseException as exc:
                self._abort_start(p, exc)
                if isinstance(exc, SupervisorError):
                    raise
                if isinstance(exc, DaoError | OSError | ValueError):
                    raise SupervisorError(f"{name}: {exc}") from exc
                raise
            with self._lock:
                p.starting = False
                p.restore = None
            assert p.popen is not None
            log.info("started %s (pid %d) at %s", name, p.popen.pid, self._address(p))
            self._health_event(p, "started")
            return p.popen.pid, notes

    def _bring_up(self, p: _Proc, state: str, params: dict[str, Any]) -> list[str]:
        """Spawn ``p``'s process, wait for its PING, set ``params``, drive it to ``state``;
        the notes on parameters not restored."""
        name = p.spec.name
        cmd = self.command_line(name, params)
        popen = self._spawn(cmd, self._env(p.spec))
        with self._lock:
            p.popen = popen
            p.reported_dead = False
            p.started_at = time.monotonic()
            self._set_state(p, "Off")
        if p.client is None:
            p.client = ComponentClient(self._address(p), timeout=self.command_timeout)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if popen.poll() is not None:
                raise SupervisorError(
                    f"{name} exited with status {popen.returncode} while starting: "
                    f"{' '.join(cmd)}"
                )
            if p.stopping:
                raise SupervisorError(f"{name}: stopped while starting")
            try:
                p.client.ping(timeout=0.3)
                break
            except CommandTimeout:
                if time.monotonic() > deadline:
                    raise SupervisorError(
                        f"{name} did not answer PING at {self._address(p)} within "
                        f"{self.ready_timeout} s"
                    ) from None
        notes = []
        if params:
            try:  # parameters first (Init sets them again from the configuration)
                p.client.call("SETUP", json.dumps(params))
            except (CommandFailed, CommandTimeout) as exc:
                log.warning("%s: restoring parameters %s failed: %s", name, params, exc)
                notes.append(f"SETUP of the parameters failed ({exc})")
        self._drive(p, state)
        with self._lock:
            p.synced_at = time.time()  # from now on, the component's events
        self._learn(p)
        if params:
            lost = {k: v for k, v in params.items() if k in p.params and p.params[k] != v}
            if lost:
                notes.append(", ".join(f"{k}={p.params[k]!r} (was {v!r})"
                                       for k, v in lost.items()))
        return notes

    def _abort_start(self, p: _Proc, exc: BaseException) -> None:
        """A start failed after its process may have been spawned: kill it (never leave a
        half-started process that nobody watches), record how it ended."""
        popen = p.popen
        if popen is not None and popen.poll() is None:
            log.warning("%s: start failed (%s): killing pid %d", p.spec.name, exc, popen.pid)
            self._kill(p, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(10)
        with self._lock:
            if popen is not None and not p.reported_dead and popen.returncode is not None:
                p.exit_codes.append(popen.returncode)
            p.reported_dead = True  # reported by the exception, not again by _check
            p.starting = False
        if popen is not None:
            self._health_event(p, "failed")

    def _drive(self, p: _Proc, state: str) -> None:
        assert p.client is not None
        try:
            reached = p.client.goto(state)
        except ValueError as exc:
            raise SupervisorError(f"{p.spec.name}: {exc}") from exc
        except (CommandFailed, CommandTimeout) as exc:
            log.error("%s: %s", p.spec.name, exc)
            raise SupervisorError(str(exc)) from exc
        with self._lock:
            self._set_state(p, str(reached))

    def _learn(self, p: _Proc) -> None:
        """Ask a started component for its parameter values and which ones are read-only."""
        assert p.client is not None
        try:
            desc = json.loads(p.client.query("parameters"))
            with self._lock:
                p.readonly = {k for k, d in desc.items() if d.get("readonly")}
                p.params.update({k: d["value"] for k, d in desc.items()})
        except (CommandFailed, CommandTimeout, ValueError, AttributeError) as exc:
            log.warning("%s: cannot read its parameters: %s", p.spec.name, exc)

    def start_all(self) -> None:
        """Start the log forwarder (if configured) and every component, in file order."""
        logcfg = self.config.get("log", {})
        if logcfg.get("forward") and self.forwarder is None:
            from dao.runtime.logbus import DEFAULT_LOG_IN, DEFAULT_LOG_OUT, LogForwarder

            self.forwarder = LogForwarder(
                logcfg.get("frontend", DEFAULT_LOG_IN), logcfg.get("backend", DEFAULT_LOG_OUT)
            ).start()
            self.log_bus = self.forwarder.frontend
        elif logcfg.get("bus"):
            self.log_bus = str(logcfg["bus"])
        self._closing = False
        try:
            for name in self.procs:
                self.start(name)
        except BaseException:
            self.stop_all()
            raise

    # -- events and the monitor thread ------------------------------------------------------
    @property
    def events_address(self) -> str | None:
        """Where the supervisor publishes health events (None before the first start, or
        when it publishes none)."""
        return self._publisher.address if self._publisher is not None else None

    def subscribe(self, kinds: Any = None, timeout: float = 5.0) -> EventSubscriber:
        """Subscribe to the supervisor's health events (see :mod:`dao.runtime.events`).

        Parameters
        ----------
        kinds : iterable of str, optional
            Keep only these kinds (``"health"``, ``"heartbeat"``); default both.
        timeout : float
            Seconds to wait for the snapshot (every component's health).

        Returns
        -------
        dao.runtime.events.EventSubscriber
            The subscriber (close it, or use it in a ``with`` block); its first events are
            the snapshot.

        Raises
        ------
        SupervisorError
            This supervisor publishes no events (``events_port=None``).
        dao.runtime.events.EventTimeout
            No snapshot within ``timeout``.
        """
        from dao.runtime.events import subscribe

        self._closing = False
        self._ensure_services()
        if self.events_address is None:
            raise SupervisorError("this supervisor publishes no events (events_port=None)")
        return subscribe(self.events_address, direct=True, kinds=kinds, timeout=timeout)

    def _ensure_services(self) -> None:
        with self._lock:
            if self._closing:
                return
            if self._publisher is None and self._events_port is not None:
                from dao.runtime.command import bind_address

                self._publisher = EventPublisher(
                    bind_address(int(self._events_port)), "supervisor",
                    snapshot=lambda: self._health_events("snapshot"),
                    heartbeat=lambda: self._health_events("heartbeat"),
                    interval=self.heartbeat_interval, name="supervisor-events",
                ).start()
                log.info("supervisor health events at %s", self._publisher.address)
            if self._monitor is None and self.monitor_interval is not None:
                self._monitor_stop.clear()
                self._monitor = threading.Thread(
                    target=self._monitor_main, name="supervisor-monitor", daemon=True
                )
                self._monitor.start()

    def _monitor_main(self) -> None:
        interval = float(self.monitor_interval or 0.2)
        sub = EventSubscriber([self._events_address(p) for p in self.procs.values()])
        next_check = time.monotonic() + interval
        try:
            while not self._monitor_stop.is_set():
                try:
                    ev = sub.get(max(0.0, next_check - time.monotonic()))
                except EventError as exc:
                    log.warning("supervisor: %s", exc)
                    ev = None
                if ev is not None:
                    self._on_event(ev)
                if time.monotonic() >= next_check:
                    try:
                        restarts = []
                        with self._lock:
                            if not self._monitor_stop.is_set():
                                reports, restarts = self._check()
                                self._pending.extend(reports)
                        self._dispatch(restarts, inline=False)
                    except Exception:  # noqa: BLE001 - the monitor must go on
                        log.exception("supervisor: checking the processes failed")
                    next_check = time.monotonic() + interval
        finally:
            sub.close()

    def _on_event(self, ev: dict[str, Any]) -> None:
        """Follow what a component says: its state, why it is in Error, its parameter values.

        Only the events of the current process count (``pid``), and none published before the
        end of its start (``time``): what the start established is never overwritten by older
        news (the snapshot or the state changes of the start itself, read later).

        The Error state and its reason are recorded together (one locked update, from the
        ``state`` event's ``reason`` or the ``error`` event), so :meth:`health` never shows
        Error without a reason. A heartbeat saying Error before any reason came (its state
        event lost, or published just before the start ended) makes the monitor ask the
        component for its ``error_reason`` (a command, 0.5 s at most) before recording it.
        """
        p = self.procs.get(str(ev.get("component")))
        if p is None:
            return
        said: list[tuple[int, str, tuple[Any, ...]]] = []
        ask = None
        with self._lock:
            popen = p.popen
            if popen is None or p.reported_dead or p.starting:
                return
            pid = ev.get("pid")
            if pid is not None and pid != popen.pid:
                return  # a previous process's last words
            t = ev.get("time")
            if not isinstance(t, int | float) or t < p.synced_at:
                return  # older than what the last start established
            kind = ev.get("kind")
            if kind == "parameter" and "name" in ev:
                p.params[str(ev["name"])] = ev.get("new")
            if isinstance(ev.get("parameters"), dict):
                p.params.update(ev["parameters"])
            state = ev.get("state")
            if not isinstance(state, str):
                return
            if kind in ("state", "error") and state == "Error":
                reason = ev.get("reason")
                said = self._follow(p, state, str(reason) if reason else None)
            elif kind == "state" and state != p.state:
                said = self._follow(p, state)
            elif kind == "heartbeat" and state != p.state:
                if state != "Error":
                    self._set_state(p, state)
                elif not p.asking_reason:  # no reason yet: ask for it (below, unlocked)
                    p.asking_reason = True
                    ask = popen
        for level, fmt, args in said:
            log.log(level, fmt, *args)
        if ask is not None:
            self._ask_reason(p, ask)

    def _set_state(self, p: _Proc, state: str, reason: str | None = None) -> None:
        """Record ``state`` and, in the same update, why it is in Error (lock held): the
        reason given, else the one already known, else a note saying how to ask for it;
        None when ``state`` is not Error."""
        if state == "Error":
            p.error_reason = reason or p.error_reason or (
                "no reason received (ask the component: dao ctl "
                f"{self._address(p)} QUERY error_reason)")
        else:
            p.error_reason = None
        p.state = state
        p.asking_reason = False

    def _follow(self, p: _Proc, state: str,
                reason: str | None = None) -> list[tuple[int, str, tuple[Any, ...]]]:
        """A state (and reason) that a component's event told (lock held): record it, publish
        a health event when something changed; the log records to write once the lock is
        released, as ``(level, format, args)``."""
        old, old_reason = p.state, p.error_reason
        self._set_state(p, state, reason)
        if (p.state, p.error_reason) == (old, old_reason):
            return []
        self._health_event(p, "state")
        name, pid = p.spec.name, p.popen.pid if p.popen is not None else None
        if state == "Error":
            return [(logging.ERROR, "%s (pid %s) is in Error: %s",
                     (name, pid, _last_line(p.error_reason)))]
        if old == "Error":
            return [(logging.WARNING, "%s (pid %s) left Error: now %s", (name, pid, state))]
        return [(logging.INFO, "%s (pid %s): %s -> %s", (name, pid, old, state))]

    def _ask_reason(self, p: _Proc, popen: subprocess.Popen) -> None:
        """A heartbeat said Error and no reason came: ask the component (a client of its own,
        0.5 s at most: this runs on the monitor thread), then record Error with it."""
        reason, state = None, "Error"
        try:
            with ComponentClient(self._address(p), timeout=0.5) as c:
                reason = c.query("error_reason") or None
                if reason is None:
                    state = c.state()
        except Exception as exc:  # noqa: BLE001 - never the end of the monitor thread
            log.warning("%s: in Error, and its reason could not be asked: %s", p.spec.name, exc)
        with self._lock:
            p.asking_reason = False
            if (p.popen is not popen or p.reported_dead or p.starting or p.state == "Error"
                    or state != "Error"):
                return  # it changed meanwhile: its next events tell
            said = self._follow(p, "Error", reason)
        for level, fmt, args in said:
            log.log(level, fmt, *args)

    def health(self) -> list[dict[str, Any]]:
        """Each component's health, without asking it anything (quick: no command sent).

        Returns
        -------
        list of dict
            One per component, in configuration order: ``component`` (name), ``pid``,
            ``alive``, ``uptime_s``, ``restarts``, ``last_exit_code``, ``exit_codes``,
            ``state`` (last known, from its events), ``error_reason`` (why it is in Error,
            as the component said, usually ending with the exception's line; None when not
            in Error: set with the Error state, cleared when it leaves it), ``address``,
            ``events_address``, ``restart`` (restarted when it dies), ``stopping``.
        """
        with self._lock:
            return [self._health(p) for p in self.procs.values()]

    def _health(self, p: _Proc) -> dict[str, Any]:
        with self._lock:  # state and error_reason read together
            return self._health_locked(p)

    def _health_locked(self, p: _Proc) -> dict[str, Any]:
        rc = p.popen.poll() if p.popen is not None else None
        alive = p.popen is not None and rc is None
        if rc is None and p.exit_codes:
            rc = p.exit_codes[-1]  # alive again: how the previous process ended
        return {
            "component": p.spec.name,
            "pid": p.popen.pid if p.popen is not None else None,
            "alive": alive,
            "uptime_s": time.monotonic() - p.started_at if alive else 0.0,
            "restarts": p.restarts,
            "last_exit_code": rc,
            "exit_codes": list(p.exit_codes),
            "state": p.state,
            "error_reason": p.error_reason,
            "address": self._address(p),
            "events_address": self._events_address(p),
            "restart": p.spec.restart,
            "stopping": p.stopping,
        }

    def _health_events(self, why: str) -> list[dict[str, Any]]:
        if self._publisher is None:
            return []
        out = [self._publisher.make(
            "heartbeat", components=list(self.procs), pid=os.getpid(),
            uptime_s=time.monotonic() - self._t0)]
        for p in self.procs.values():
            if p.popen is not None:
                out.append(self._health_dict(p, why))
        return out

    def _health_dict(self, p: _Proc, why: str) -> dict[str, Any]:
        h = self._health(p)
        ev = {"kind": "health", "component": p.spec.name, "time": time.time(), "why": why}
        ev.update(h)
        return ev

    def _health_event(self, p: _Proc, why: str) -> None:
        if self._publisher is not None:
            self._publisher.send(self._health_dict(p, why))

    def last_known(self, name: str) -> dict[str, Any]:
        """What component ``name`` said last: ``state`` and ``parameters`` (the values a
        restart brings back)."""
        p = self.procs[name]
        return {"state": p.state, "parameters": dict(p.params)}

    # -- watching ---------------------------------------------------------------------------
    def client(self, name: str) -> ComponentClient:
        """A :class:`ComponentClient` for component ``name``."""
        p = self.procs[name]
        if p.client is None:
            p.client = ComponentClient(self._address(p), timeout=self.command_timeout)
        return p.client

    def address(self, name: str) -> str:
        """The command address of component ``name``."""
        return self._address(self.procs[name])

    def status(self) -> list[dict[str, Any]]:
        """Each component's name, pid, alive, state (asked: ``"?"`` if it does not answer,
        ``"dead"`` if its process is not running), address, events address, restarts and
        exit codes."""
        out = []
        for name, p in self.procs.items():
            alive = p.popen is not None and p.popen.poll() is None
            state = "dead" if not alive else "?"
            if alive:
                try:
                    c = self.client(name)
                    state = c.call("STATE", timeout=min(1.0, self.command_timeout))
                except (CommandTimeout, CommandFailed, DaoError):
                    state = "?"
            out.append(
                {
                    "name": name,
                    "pid": p.popen.pid if p.popen else None,
                    "alive": alive,
                    "state": state,
                    "address": self._address(p),
                    "events_address": self._events_address(p),
                    "restarts": p.restarts,
                    "exit_codes": list(p.exit_codes),
                }
            )
        return out

    def poll(self) -> list[str]:
        """Check every process once (report the dead, restart those with ``restart = true``)
        and return the reports not returned before (the monitor thread's too).

        With a monitor thread, restarts run on threads of their own and their reports come
        with a later call; without one (``monitor_interval=None``) they are done here.

        Returns
        -------
        list of str
            What happened (also logged and kept in :attr:`events`).
        """
        with self._lock:
            reports, restarts = self._check()
            self._pending.extend(reports)
        self._dispatch(restarts, inline=self._monitor is None)
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def _backoff(self, p: _Proc) -> float:
        """The wait before restarting ``p`` after ``p.quick_deaths`` quick deaths."""
        if p.quick_deaths <= 1:
            return 0.0
        return min(self.backoff[1], self.backoff[0] * 2 ** (p.quick_deaths - 2))

    def _check(self) -> tuple[list[str], list[tuple[str, str]]]:
        """One check of every process (lock held, quick: no command sent); the reports made
        and the restarts to do now, as ``(name, report so far)`` (see :meth:`_dispatch`)."""
        events: list[str] = []
        restarts: list[tuple[str, str]] = []
        now = time.monotonic()
        for name, p in self.procs.items():
            if p.popen is None or p.stopping or p.starting or p.restarting:
                continue
            if p.restart_at is not None:  # dead, waiting out its back-off
                if now >= p.restart_at:
                    p.restart_at = None
                    p.restarting = True
                    restarts.append((name, f"{name} back-off over"))
                continue
            rc = p.popen.poll()
            if rc is None or p.reported_dead:
                continue
            p.exit_codes.append(rc)
            p.reported_dead = True
            last = p.state if p.state not in (None, "Error", "dead") else p.spec.state
            p.restore = (last, {k: v for k, v in p.params.items() if k not in p.readonly})
            msg = f"{name} (pid {p.popen.pid}) died with status {rc}"
            self._health_event(p, "died")
            if not p.spec.restart:
                log.error("%s; not restarted (restart = false)", msg)
                events.append(msg)
                continue
            p.quick_deaths = p.quick_deaths + 1 if now - p.started_at < self.stable_after else 0
            delay = self._backoff(p)
            if delay > 0:
                p.restart_at = now + delay
                msg += f" {now - p.started_at:.1f} s after its start; restart in {delay:g} s"
                log.warning("%s", msg)
                events.append(msg)
            else:  # said at once: the report comes when the restart is done
                log.warning("%s; restarting it", msg)
                p.restarting = True
                restarts.append((name, msg))
        self.events.extend(events)
        return events, restarts

    def _dispatch(self, restarts: list[tuple[str, str]], inline: bool) -> None:
        """Do the restarts :meth:`_check` asked for (without the supervisor's lock held): in
        this thread (``inline``) or each on a thread of its own, so the monitor goes on
        following events and seeing deaths while a process starts."""
        for name, msg in restarts:
            if inline:
                self._restart_main(name, msg)
                continue
            t = threading.Thread(target=self._restart_main, args=(name, msg),
                                 name=f"supervisor-restart-{name}"[:60], daemon=True)
            self.procs[name].restarter = t
            t.start()

    def _restart_main(self, name: str, msg: str) -> None:
        p = self.procs[name]
        try:
            report = self._restart(name, msg)
        except BaseException as exc:  # noqa: BLE001 - reported, never lost with the thread
            log.exception("%s: restart failed", name)
            report = f"{msg}; restart failed: {exc}"
        finally:
            with self._lock:
                p.restarting = False
        with self._lock:
            self.events.append(report)
            self._pending.append(report)

    def _restart(self, name: str, msg: str) -> str:
        p = self.procs[name]
        state, params = p.restore or (p.spec.state, {})
        if self.monitor_interval is None:  # no events followed: what the config says
            state, params = p.spec.state, {}
        try:
            pid, notes = self._start(name, state, params, restart=True)
        except Exception as exc:  # noqa: BLE001 - any failure: killed, tried again later
            with self._lock:
                p.restore = (state, params)  # what the next try brings back
                if p.stopping:
                    msg += f"; not restarted: {exc}"
                else:
                    p.started_at = time.monotonic()
                    p.quick_deaths += 1
                    delay = max(self._backoff(p), self.backoff[0])
                    p.restart_at = time.monotonic() + delay
                    msg += f"; restart failed: {exc}; the process was killed, next try in " \
                           f"{delay:g} s"
            log.warning("%s", msg)
            return msg
        with self._lock:
            p.restarts += 1
        msg += f"; restarted as pid {pid}"
        if params or state != p.spec.state:
            msg += f", back to {state}" + (
                f" with {', '.join(f'{k}={v!r}' for k, v in params.items())}"
                if params else "")
        if notes:
            msg += "; parameters not restored: " + "; ".join(notes)
        self._health_event(p, "restarted")
        log.warning("%s", msg)
        return msg

    # -- stopping ---------------------------------------------------------------------------
    def _kill(self, p: _Proc, sig: int = signal.SIGKILL) -> None:
        if p.popen is not None and p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(sig)

    def stop(self, name: str, timeout: float = 5.0) -> int | None:
        """Stop component ``name``: drive it to Off (unless in Error), then SIGTERM, then
        SIGKILL. A start or restart under way is abandoned (its process killed) first.

        Returns
        -------
        int or None
            The exit status (None if it was never started).
        """
        p = self.procs[name]
        with self._lock:
            p.stopping = True  # seen by a start under way, which then gives up
            p.restart_at = None
        with p.lock:
            if p.popen is None:
                return None
            if p.popen.poll() is None and p.client is not None:
                try:
                    if p.client.call("STATE", timeout=1.0) != "Error":
                        p.client.goto("Off", timeout=max(timeout, self.command_timeout))
                except (CommandTimeout, CommandFailed, DaoError, ValueError) as exc:
                    log.warning("%s: could not drive it to Off before SIGTERM: %s", name, exc)
            if p.popen.poll() is None:
                self._kill(p, signal.SIGTERM)
                try:
                    p.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not exit %s s after SIGTERM: SIGKILL", name, timeout)
                    self._kill(p, signal.SIGKILL)
                    p.popen.wait(timeout)
            if p.client is not None:
                p.client.close()
                p.client = None
            self._health_event(p, "stopped")
            return p.popen.returncode

    def stop_all(self, timeout: float = 5.0) -> dict[str, int | None]:
        """Stop the monitor, every component (last started first; restarts under way are
        abandoned), the log forwarder and the event socket.

        Returns
        -------
        dict of str to int or None
            Each component's exit status (None if it was never started).
        """
        with self._lock:
            self._closing = True
            for p in self.procs.values():  # no restart begins from now on
                p.stopping = True
                p.restart_at = None
        self._monitor_stop.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(max(timeout, 5.0))
        self._monitor = None
        out = {}
        for name in reversed(list(self.procs)):
            try:
                out[name] = self.stop(name, timeout)
            except Exception:  # noqa: BLE001 - stop the others anyway
                log.exception("stopping %s failed", name)
                self._kill(self.procs[name])
        for p in self.procs.values():  # restart threads end once their process is stopped
            t = p.restarter
            if t is not None and t is not threading.current_thread():
                t.join(timeout)
            p.restarter = None
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self._spawner is not None:  # after the children: they die with it
            self._spawn_queue.put(None)
            self._spawner.join(timeout)
            self._spawner = None
        return out

    def __enter__(self) -> Supervisor:
        self.start_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()

"""Start, watch and stop a set of components, each in its own OS process.

The configuration is a TOML file (or the equivalent dict)::

    # optional: a log forwarder run by the supervisor, components publish to it
    [log]
    forward = true
    frontend = "tcp://127.0.0.1:5570"
    backend = "tcp://127.0.0.1:5571"

    [[component]]
    name = "counter"
    class = "dao.examples:Counter"
    port = 5601                  # 0 or absent: a free port is chosen
    state = "Running"            # driven there once started (default: stay Off)
    restart = true               # restart the process if it dies (default false: report it)
    args = { step = 2, period = 0.01 }   # static configuration (parameters, streams, ...)
    host = "127.0.0.1"           # interface to bind
    log_level = "INFO"

Each component runs as ``python -m dao.runtime.cli run CLASS --port PORT --name NAME
--config JSON`` (the same code as ``dao run``). :meth:`Supervisor.status` reports each one's
pid, liveness and state; :meth:`Supervisor.poll` notices processes that died and restarts
(``restart = true``) or reports them; :meth:`Supervisor.stop_all` sends the Idle/Disable/Stop
commands, then SIGTERM, then SIGKILL, with timeouts.

Restarts back off: the first death is restarted at once; a process that dies again within
``stable_after`` seconds of its start waits ``backoff[0]`` seconds, doubling at each quick
death up to ``backoff[1]``, so a component that crashes at start does not spin the machine.
Children get ``$DAO_PARENT_PID`` and stop when the supervisor's process dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dao.errors import DaoError
from dao.runtime.command import CommandFailed, CommandTimeout, ComponentClient

__all__ = ["Supervisor", "ComponentSpec", "SupervisorError", "free_port", "child_environment",
           "LAUNCHER"]

log = logging.getLogger("dao.runtime.supervisor")

#: How a component process is started: ``[sys.executable, *LAUNCHER, "run", ...]``.
LAUNCHER = ("-m", "dao.runtime.cli")


class SupervisorError(DaoError, RuntimeError):
    """A component process could not be started or configured."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host if host != "*" else "0.0.0.0", 0))
        return int(s.getsockname()[1])


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComponentSpec:
        known = {
            "name",
            "class",
            "cls",
            "port",
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
        if "name" not in d or not ({"class", "cls"} & set(d)):
            raise SupervisorError(f"component entry {d!r} needs 'name' and 'class'")
        return cls(
            name=str(d["name"]),
            cls=str(d.get("class", d.get("cls"))),
            port=int(d.get("port", 0)),
            host=str(d.get("host", "127.0.0.1")),
            state=str(d.get("state", "Off")),
            restart=bool(d.get("restart", False)),
            args=dict(d.get("args", {})),
            log_level=str(d.get("log_level", "INFO")),
            env={k: str(v) for k, v in d.get("env", {}).items()},
        )


@dataclass
class _Proc:
    spec: ComponentSpec
    port: int
    popen: subprocess.Popen | None = None
    client: ComponentClient | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    reported_dead: bool = False
    stopping: bool = False


class Supervisor:
    """Runs the components of a configuration as child processes.

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
    """

    def __init__(
        self, config: dict[str, Any], ready_timeout: float = 20.0, command_timeout: float = 3.0,
        backoff: tuple[float, float] = (0.5, 30.0), stable_after: float = 10.0,
    ):
        self.config = config
        self.ready_timeout = ready_timeout
        self.command_timeout = command_timeout
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.stable_after = float(stable_after)
        specs = [ComponentSpec.from_dict(d) for d in config.get("component", [])]
        names = [s.name for s in specs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SupervisorError(f"component names must be unique; repeated: {sorted(dup)}")
        self.procs: dict[str, _Proc] = {
            s.name: _Proc(s, s.port or free_port(s.host)) for s in specs
        }
        self.forwarder = None
        self.log_bus: str | None = None
        self.events: list[str] = []

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

    def command_line(self, name: str) -> list[str]:
        """The command line that starts component ``name``."""
        p = self.procs[name]
        s = p.spec
        cmd = [
            sys.executable,
            *LAUNCHER,
            "run",
            s.cls,
            "--port",
            str(p.port),
            "--name",
            s.name,
            "--host",
            s.host,
            "--log-level",
            s.log_level,
        ]
        if s.args:
            cmd += ["--config", json.dumps(s.args)]
        if self.log_bus:
            cmd += ["--log-bus", self.log_bus]
        return cmd

    def _address(self, p: _Proc) -> str:
        host = "127.0.0.1" if p.spec.host in ("*", "0.0.0.0") else p.spec.host
        return f"tcp://{host}:{p.port}"

    def start(self, name: str) -> int:
        """Start component ``name``, wait until it answers PING, drive it to its ``state``.

        Returns
        -------
        int
            The process id.
        """
        p = self.procs[name]
        if p.popen is not None and p.popen.poll() is None:
            return p.popen.pid
        p.popen = subprocess.Popen(
            self.command_line(name),
            env=self._env(p.spec),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        p.reported_dead = False
        p.stopping = False
        p.restart_at = None
        p.started_at = time.monotonic()
        if p.client is None:
            p.client = ComponentClient(self._address(p), timeout=self.command_timeout)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if p.popen.poll() is not None:
                raise SupervisorError(
                    f"{name} exited with status {p.popen.returncode} "
                    f"while starting: {' '.join(self.command_line(name))}"
                )
            try:
                p.client.ping(timeout=0.3)
                break
            except CommandTimeout:
                if time.monotonic() > deadline:
                    self._kill(p)
                    raise SupervisorError(
                        f"{name} did not answer PING at "
                        f"{self._address(p)} within {self.ready_timeout} s"
                    ) from None
        self._drive(p)
        log.info("started %s (pid %d) at %s", name, p.popen.pid, self._address(p))
        return p.popen.pid

    def _drive(self, p: _Proc) -> None:
        path = {
            "Off": [],
            "Standby": ["Init"],
            "Idle": ["Init", "Enable"],
            "Running": ["Init", "Enable", "Run"],
        }
        if p.spec.state not in path:
            raise SupervisorError(f"{p.spec.name}: state must be one of {list(path)}")
        assert p.client is not None
        for ev in path[p.spec.state]:
            try:
                p.client.exec(ev)
            except CommandFailed as exc:
                log.error("%s: %s", p.spec.name, exc)
                raise SupervisorError(str(exc)) from exc

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
        try:
            for name in self.procs:
                self.start(name)
        except BaseException:
            self.stop_all()
            raise

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
        """Each component's name, pid, alive, state (or ``"?"`` if it does not answer),
        address, restarts and exit codes."""
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
                    "restarts": p.restarts,
                    "exit_codes": list(p.exit_codes),
                }
            )
        return out

    def poll(self) -> list[str]:
        """Check every process once: report the dead, restart those with ``restart = true``.

        Returns
        -------
        list of str
            What happened (also logged and appended to :attr:`events`).
        """
        events = []
        now = time.monotonic()
        for name, p in self.procs.items():
            if p.popen is None or p.stopping:
                continue
            if p.restart_at is not None:  # dead, waiting out its back-off
                if now >= p.restart_at:
                    events.append(self._restart(name, f"{name} back-off over"))
                continue
            rc = p.popen.poll()
            if rc is None or p.reported_dead:
                continue
            p.exit_codes.append(rc)
            p.reported_dead = True
            msg = f"{name} (pid {p.popen.pid}) died with status {rc}"
            if not p.spec.restart:
                log.error("%s; not restarted (restart = false)", msg)
                events.append(msg)
                continue
            p.quick_deaths = p.quick_deaths + 1 if now - p.started_at < self.stable_after else 0
            delay = 0.0
            if p.quick_deaths > 1:
                delay = min(self.backoff[1], self.backoff[0] * 2 ** (p.quick_deaths - 2))
            if delay > 0:
                p.restart_at = now + delay
                msg += f" {now - p.started_at:.1f} s after its start; restart in {delay:g} s"
                log.warning("%s", msg)
                events.append(msg)
            else:
                events.append(self._restart(name, msg))
        self.events.extend(events)
        return events

    def _restart(self, name: str, msg: str) -> str:
        p = self.procs[name]
        p.restart_at = None
        try:
            pid = self.start(name)
            p.restarts += 1
            msg += f"; restarted as pid {pid}"
        except SupervisorError as exc:
            p.started_at = time.monotonic()
            msg += f"; restart failed: {exc}"
        log.warning("%s", msg)
        return msg

    # -- stopping ---------------------------------------------------------------------------
    def _kill(self, p: _Proc, sig: int = signal.SIGKILL) -> None:
        if p.popen is not None and p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(sig)

    def stop(self, name: str, timeout: float = 5.0) -> int | None:
        """Stop component ``name``: state commands down to Off, then SIGTERM, then SIGKILL.

        Returns
        -------
        int or None
            The exit status (None if it was never started).
        """
        p = self.procs[name]
        if p.popen is None:
            return None
        p.stopping = True
        if p.popen.poll() is None and p.client is not None:
            down = {"Running": "Idle", "Idle": "Disable", "Standby": "Stop"}
            with contextlib.suppress(CommandTimeout, CommandFailed, DaoError):
                for _ in range(4):
                    st = p.client.call("STATE", timeout=1.0)
                    if st not in down:
                        break
                    p.client.exec(down[st], timeout=min(timeout, self.command_timeout))
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
        return p.popen.returncode

    def stop_all(self, timeout: float = 5.0) -> dict[str, int | None]:
        """Stop every component (last started first) and the log forwarder."""
        out = {}
        for name in reversed(list(self.procs)):
            try:
                out[name] = self.stop(name, timeout)
            except Exception:  # noqa: BLE001 - stop the others anyway
                log.exception("stopping %s failed", name)
                self._kill(self.procs[name])
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        return out

    def __enter__(self) -> Supervisor:
        self.start_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()

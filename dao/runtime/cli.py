"""Command-line entry points of the runtime: ``dao run``, ``dao ctl``, ``dao events``,
``dao supervise`` and ``dao logs``.

Each ``add_*_parser(subparsers)`` adds one subcommand to an :mod:`argparse` sub-parser set and
binds its handler as ``func`` (``args.func(args)`` returns the exit status). The module also runs
on its own: ``python -m dao.runtime.cli run dao.examples:Counter --port 5555``.

- ``dao run MODULE:CLASS --port PORT [--events-port PORT] [--name NAME] [--config FILE|JSON]
  [--state STATE]``: run one component in this process until SIGTERM/SIGINT, serving commands
  on PORT and publishing events (by default on PORT + 1 when free).
- ``dao ctl ADDRESS COMMAND [PAYLOAD]``: send one command, print the reply payload; exit 0 on
  SUCCESS, 1 on FAILURE, 2 on timeout.
- ``dao events ADDRESS``: print a component's events (state changes, parameter changes,
  errors, heartbeats), one JSON object per line, until Ctrl-C; ``--direct`` for an event
  address itself (a supervisor's health events). Exit 2 when nothing answers within
  ``--timeout`` (no component at ADDRESS, or no publisher's snapshot).
- ``dao supervise CONFIG.toml``: start the components of a config file, watch them, stop them
  all on SIGTERM/SIGINT; prints where its health events are published, each state change,
  a component in Error at once with its reason, each death and restart. A file it cannot use
  (no ``[[component]]`` entry, ...) exits 2 at once with what to fix.
- ``dao logs [ADDRESS]``: print the records of the log bus.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

__all__ = [
    "add_run_parser",
    "add_ctl_parser",
    "add_events_parser",
    "add_supervise_parser",
    "add_logs_parser",
    "add_runtime_parsers",
    "cmd_run",
    "cmd_ctl",
    "cmd_events",
    "cmd_supervise",
    "cmd_logs",
    "load_class",
    "main",
]

log = logging.getLogger("dao.run")


def load_class(spec: str) -> type:
    """The class named by ``"package.module:Class"`` (``"package.module.Class"`` also works)."""
    if ":" in spec:
        mod, _, name = spec.partition(":")
    else:
        mod, _, name = spec.rpartition(".")
    if not mod or not name:
        raise ValueError(
            f"bad class spec {spec!r}: expected MODULE:CLASS, e.g. dao.examples:Counter"
        )
    obj: Any = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _setup_logging(level: str, name: str, log_bus: str | None) -> None:
    from dao.runtime.logbus import LogBusHandler, parse_level

    root = logging.getLogger()
    root.setLevel(parse_level(level))
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(
            logging.Formatter(
                f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s"
            )
        )
        root.addHandler(h)
    if log_bus:
        root.addHandler(LogBusHandler(log_bus, component=name))


# -- dao run ------------------------------------------------------------------------------------
def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``run``: run one component as this process."""
    p = subparsers.add_parser(
        "run",
        help="run one component in this process, controlled over ZeroMQ",
        description="Run a component (a dao.runtime.component.Component subclass) until SIGTERM or "
        "SIGINT, serving the Durham command protocol on PORT.",
    )
    p.add_argument("cls", metavar="MODULE:CLASS", help="e.g. dao.examples:Counter")
    p.add_argument(
        "--port", type=int, required=True, help="command port (0: any free port, printed on stdout)"
    )
    p.add_argument(
        "--events-port",
        type=int,
        default=None,
        help="event port (default: the command port + 1 if free, else any; 0: any free port)",
    )
    p.add_argument("--name", help="component name (default: the class name in lower case)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; '*' for all, as Durham)",
    )
    p.add_argument("--config", help="static configuration: a .toml/.json file or a JSON object")
    p.add_argument(
        "--state",
        choices=["Off", "Standby", "Idle", "Running"],
        default="Off",
        help="state to go to once started (default Off)",
    )
    p.add_argument("--log-level", default="INFO", help="TRACE, DEBUG, INFO (default), ...")
    p.add_argument(
        "--log-bus",
        default=os.environ.get("DAO_LOG_BUS"),
        help="log forwarder input to publish records to (default $DAO_LOG_BUS)",
    )
    p.set_defaults(func=cmd_run)
    return p


def _stop_with_parent() -> None:
    """Get SIGTERM when the process named by ``$DAO_PARENT_PID`` (the supervisor) dies.

    Linux ``PR_SET_PDEATHSIG``: a component started by a notebook kernel or ``dao supervise``
    stops with it instead of running on as an orphan holding its streams.
    """
    pid = os.environ.get("DAO_PARENT_PID")
    if not pid or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(pid):  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def cmd_run(args: argparse.Namespace) -> int:
    """Handler of ``dao run``."""
    from dao.errors import DaoError

    try:
        cls = load_class(args.cls)
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"dao run: cannot load {args.cls}: {exc}", file=sys.stderr)
        return 1
    name = args.name or cls.__name__.lower()
    _setup_logging(args.log_level, name, args.log_bus)
    comp = cls(name=name, config=args.config)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s: signal %d, stopping", name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _stop_with_parent()
    try:
        server = comp.serve(args.port, args.host, events_port=args.events_port)
    except Exception as exc:  # noqa: BLE001
        log.error("%s", exc)
        return 1
    events = comp.events.address if comp.events is not None else "none"
    print(
        f"dao run: {name} ({args.cls}) pid {os.getpid()} serving {server.address}, "
        f"events {events}",
        flush=True,
    )
    try:
        if args.state != "Off":
            try:
                comp.goto(args.state)
            except DaoError as exc:  # keep serving: the operator sees Error and can Recover
                log.error("%s: could not reach %s: %s", name, args.state, exc)
        while not stop.wait(0.2):
            pass
    except Exception:  # noqa: BLE001
        log.exception("%s: failed", name)
        return 1
    finally:
        comp.close()
        log.info("%s: exited cleanly (state %s)", name, comp.state.value)
        for h in logging.getLogger().handlers:
            h.flush()
    return 0


# -- dao ctl ------------------------------------------------------------------------------------
def add_ctl_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ctl``: send one command to a component."""
    from dao.runtime.command import COMMANDS

    p = subparsers.add_parser(
        "ctl",
        help="send one command to a component",
        description="Send one Dao.CommandMessage and print the reply payload. Exit status 0 on "
        "SUCCESS, 1 on FAILURE, 2 on timeout. Examples: dao ctl 5555 EXEC Init; "
        "dao ctl 5555 SETUP gain=0.3; dao ctl host:5555 STATE",
    )
    p.add_argument("address", help="PORT, HOST:PORT or tcp://HOST:PORT")
    p.add_argument(
        "ctl_command",  # not "command": the dao parser's sub-command dest may be "command"
        type=str.upper,
        choices=list(COMMANDS),
        metavar="COMMAND",
        help=f"one of {', '.join(COMMANDS)}",
    )
    p.add_argument(
        "ctl_payload",
        nargs="*",
        default=[],
        metavar="PAYLOAD",
        help="payload (an event for EXEC, key=value for SETUP...)",
    )
    p.add_argument("--timeout", type=float, default=2.0, help="reply timeout, s (default 2)")
    p.set_defaults(func=cmd_ctl)
    return p


def cmd_ctl(args: argparse.Namespace) -> int:
    """Handler of ``dao ctl``."""
    from dao.runtime.command import CommandTimeout, ComponentClient

    try:
        client = ComponentClient(args.address, timeout=args.timeout)
    except ValueError as exc:
        print(f"dao ctl: {exc}", file=sys.stderr)
        return 2
    try:
        ok, payload = client.request(args.ctl_command, " ".join(args.ctl_payload))
    except CommandTimeout as exc:
        print(f"dao ctl: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    if ok:
        print(payload)
        return 0
    print(payload, file=sys.stderr)
    return 1


# -- dao events ---------------------------------------------------------------------------------
def add_events_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``events``: print the events of a component (or of a supervisor)."""
    from dao.runtime.events import EVENT_KINDS

    p = subparsers.add_parser(
        "events",
        help="print a component's events (state, parameters, errors, heartbeats) as JSON lines",
        description="Subscribe to the events of the component whose command address is "
        "ADDRESS (its event address is asked with QUERY events_address) and print each as one "
        "JSON object per line until Ctrl-C. The current state comes first. Examples: "
        "dao events 5555; dao events 5555 --kind state --kind error; "
        "dao events --direct tcp://127.0.0.1:5600 (a supervisor's health events).",
    )
    p.add_argument("address", help="command PORT, HOST:PORT or tcp://HOST:PORT (as dao ctl)")
    p.add_argument(
        "--direct",
        action="store_true",
        help="ADDRESS is an event address itself (e.g. what dao supervise prints)",
    )
    p.add_argument(
        "--kind",
        action="append",
        choices=list(EVENT_KINDS),
        help="print only this kind (repeatable; default all)",
    )
    p.add_argument("--count", type=int, default=0, help="exit after N events (default: never)")
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="wait for the component's answer and for the current state, s (default 5); "
        "exit 2 when nothing comes",
    )
    p.set_defaults(func=cmd_events)
    return p


def cmd_events(args: argparse.Namespace) -> int:
    """Handler of ``dao events``: exit 0 on Ctrl-C or SIGTERM, 2 if nothing answers within
    ``--timeout`` (with ``--direct``: no dao publisher's snapshot came from the address)."""
    from dao.runtime.command import CommandFailed, CommandTimeout
    from dao.runtime.events import EventError, EventTimeout, subscribe

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops it even when started with SIGINT ignored (nohup, `&` in a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:  # a bounded wait for the current state: silence would hang forever
        sub = subscribe(
            args.address, direct=args.direct, kinds=args.kind, timeout=args.timeout, wait=True
        )
    except (CommandTimeout, CommandFailed, EventTimeout, EventError, ValueError) as exc:
        print(f"dao events: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    n = 0
    try:
        with sub:
            while not args.count or n < args.count:
                try:
                    ev = sub.get(0.5)
                except EventError as exc:
                    print(f"dao events: {exc}", file=sys.stderr, flush=True)
                    continue
                if ev is None:
                    continue
                print(json.dumps(ev), flush=True)
                n += 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # e.g. piped into head
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 0
    return 0


# -- dao supervise ------------------------------------------------------------------------------
def add_supervise_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``supervise``: start and watch the components of a TOML file."""
    p = subparsers.add_parser(
        "supervise",
        help="start, watch and stop the components of a TOML config file",
        description="Start each [[component]] of CONFIG as its own process, print state "
        "changes (a component in Error at once, with its reason), restart or report "
        "processes that die, stop all on SIGTERM/SIGINT. Exit 2 when CONFIG cannot be used "
        "(unreadable, not TOML, no [[component]] entry, a bad entry), 1 when a component "
        "does not start or every process has ended with none to restart.",
    )
    p.add_argument("config", help="TOML file (see dao.runtime.supervisor)")
    p.add_argument("--interval", type=float, default=1.0, help="watch period, s (default 1)")
    p.set_defaults(func=cmd_supervise)
    return p


#: What to add to a configuration without components (the message of ``dao supervise``).
_COMPONENT_EXAMPLE = """\
Add one [[component]] table per component, with at least its name and class, e.g.

[[component]]
name = "counter"
class = "dao.examples:Counter"
state = "Running"

(every key: python -c "import dao.runtime.supervisor as m; help(m)")"""


def _read_supervise_config(path: str) -> tuple[dict[str, Any] | None, str]:
    """The configuration in ``path``, or None and what is wrong with it (and how to fix it)."""
    import difflib
    import tomllib

    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except FileNotFoundError:
        return None, f"{path}: no such file (give the path of a TOML file of [[component]] " \
                     "tables)"
    except IsADirectoryError:
        return None, f"{path} is a folder: give a TOML file of [[component]] tables"
    except OSError as exc:
        return None, f"cannot read {path}: {exc}"
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return None, f"{path} is not valid TOML: {exc}"
    if config.get("component"):
        return config, ""

    def shown(key: str) -> str:  # as written in the file
        v = config[key]
        if isinstance(v, dict):
            return f"[{key}]"
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            return f"[[{key}]]"
        return f"{key} = ..."

    others = [k for k in config if k != "component"]
    near = difflib.get_close_matches("component", [k.lower() for k in others], n=1, cutoff=0.6)
    if near:
        key = next(k for k in others if k.lower() == near[0])
        hint = f"It has {shown(key)}: did you mean [[component]]?"
    elif isinstance(config.get("component"), dict):
        hint = "It has an empty [component] table: write [[component]] (two brackets)."
    elif "component" in config:
        hint = "Its component list is empty."
    elif not config:
        hint = "The file is empty."
    else:
        hint = f"It has only {', '.join(shown(k) for k in others)}."
    return None, (f"{path} has no [[component]] entry: nothing to supervise. "
                  f"{hint.strip()}\n{_COMPONENT_EXAMPLE}")


def cmd_supervise(args: argparse.Namespace) -> int:
    """Handler of ``dao supervise``.

    Returns
    -------
    int
        0 once stopped by SIGTERM/SIGINT; 1 when a component does not start, or when every
        process has ended and none is restarted (nothing left to watch); 2 when the
        configuration cannot be used (each said on stderr, with what to do).
    """
    from dao.runtime.supervisor import Supervisor, SupervisorError

    config, problem = _read_supervise_config(args.config)
    if config is None:
        print(f"dao supervise: {problem}", file=sys.stderr, flush=True)
        return 2
    try:
        sup = Supervisor(config)
    except (SupervisorError, ValueError, TypeError) as exc:
        print(f"dao supervise: {args.config}: {exc}", file=sys.stderr, flush=True)
        return 2
    # the supervisor logs each state change, a component in Error (with the last line of its
    # reason) and each death as they happen: on stderr, at once
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s supervise %(levelname)s: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    try:
        sup.start_all()  # stops what it started when one fails
    except SupervisorError as exc:
        print(f"dao supervise: {args.config}: a component did not start: {exc}",
              file=sys.stderr, flush=True)
        return 1
    try:
        print(json.dumps(sup.status(), indent=1), flush=True)
        print(f"health events at {sup.events_address} (dao events --direct "
              f"{sup.events_address})", flush=True)
        while not stop.wait(args.interval):
            for event in sup.poll():
                print(event, flush=True)
            health = sup.health()
            if all(not h["alive"] and not h["restart"] for h in health):
                print("dao supervise: every component process has ended and none is restarted "
                      "(restart = false): nothing left to watch, stopping", file=sys.stderr,
                      flush=True)
                return 1
    finally:
        sup.stop_all()
    return 0


# -- dao logs -----------------------------------------------------------------------------------
def add_logs_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``logs``: print the log bus."""
    p = subparsers.add_parser("logs", help="print the records of the component log bus")
    p.add_argument(
        "address",
        nargs="?",
        default=None,
        help="forwarder output (default $DAO_LOG_BUS_OUT or tcp://127.0.0.1:5571)",
    )
    p.add_argument(
        "--forward",
        action="store_true",
        help="also run the forwarder (bind its input and output) in this process",
    )
    p.set_defaults(func=cmd_logs)
    return p


def cmd_logs(args: argparse.Namespace) -> int:
    """Handler of ``dao logs``."""
    from dao.runtime.logbus import DEFAULT_LOG_IN, DEFAULT_LOG_OUT, LogForwarder, LogSubscriber

    fwd = None
    if args.forward:
        fwd = LogForwarder(
            os.environ.get("DAO_LOG_BUS", DEFAULT_LOG_IN), args.address or DEFAULT_LOG_OUT
        ).start()
        print(f"forwarding {fwd.frontend} -> {fwd.backend}", file=sys.stderr, flush=True)
    try:
        with LogSubscriber(fwd.backend if fwd else args.address) as sub:
            while True:
                rec = sub.recv(timeout=None)
                if rec is not None:
                    print(rec, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if fwd is not None:
            fwd.stop()


def add_runtime_parsers(subparsers: Any) -> None:
    """Add ``run``, ``ctl``, ``events``, ``supervise`` and ``logs``."""
    add_run_parser(subparsers)
    add_ctl_parser(subparsers)
    add_events_parser(subparsers)
    add_supervise_parser(subparsers)
    add_logs_parser(subparsers)


def main(argv: list[str] | None = None) -> int:
    """``python -m dao.runtime.cli {run,ctl,events,supervise,logs} ...``."""
    parser = argparse.ArgumentParser(prog="dao", description="dao runtime commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_runtime_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

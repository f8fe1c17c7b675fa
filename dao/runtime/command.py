"""The component command protocol: a ZeroMQ REP server and a REQ client speaking ``Dao``
protobuf messages.

A client sends one ``Dao.CommandMessage`` (component, function, payload) and gets one
``Dao.ReplyMessage`` (status SUCCESS/FAILURE, payload). Commands: EXEC (a state event),
SETUP (``key=value``), UPDATE, PING (pid), STATE, SET_LOG_LEVEL, DUMP (JSON of the parameters),
QUERY (a parameter's value), OTHER (a user hook). A malformed message gets a FAILURE reply;
the server never dies of one.

Examples
--------
>>> c = ComponentClient("tcp://127.0.0.1:5555")          # doctest: +SKIP
>>> c.run(); c.setup("gain", 0.3); c.query("gain")       # doctest: +SKIP
'0.3'
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from dao.errors import DaoError
from dao.proto import dao_pb2
from dao.runtime.state import Event, parse_state
from dao.runtime.state import path as state_path
from dao.runtime.status import Status

if TYPE_CHECKING:
    from dao.runtime.events import EventSubscriber

__all__ = [
    "COMMANDS",
    "Command",
    "Reply",
    "CommandServer",
    "ComponentClient",
    "CommandFailed",
    "CommandTimeout",
    "normalize_address",
    "bind_address",
]

log = logging.getLogger("dao.runtime.command")

Command = dao_pb2.CommandMessage
Reply = dao_pb2.ReplyMessage
SUCCESS = dao_pb2.ReplyMessage.SUCCESS
FAILURE = dao_pb2.ReplyMessage.FAILURE

#: Command names and their enum values.
COMMANDS: dict[str, int] = dict(dao_pb2.CommandMessage.COMMAND.items())


class CommandFailed(DaoError, RuntimeError):
    """A component answered FAILURE; the message is the component's reason.

    Attributes
    ----------
    command : str
        The command name (EXEC, SETUP...).
    payload : str
        The reply payload (the reason).
    """

    def __init__(self, address: str, command: str, sent: str, payload: str):
        self.address = address
        self.command = command
        self.payload = payload
        what = f"{command} {sent}".strip()
        super().__init__(f"{address}: {what} failed: {payload}")


class CommandTimeout(DaoError, TimeoutError):
    """No reply came within the timeout (the component is dead, busy or not there)."""


def normalize_address(address: str | int, host: str = "127.0.0.1") -> str:
    """A ZeroMQ endpoint from ``PORT``, ``HOST:PORT``, ``tcp://HOST:PORT`` (or ``ipc://...``).

    Examples
    --------
    >>> normalize_address(5555), normalize_address("cam:5555"), normalize_address("tcp://a:1")
    ('tcp://127.0.0.1:5555', 'tcp://cam:5555', 'tcp://a:1')
    """
    text = str(address).strip()
    if "://" in text:
        return text
    if text.isdigit():
        return f"tcp://{host}:{int(text)}"
    if ":" in text:
        h, _, p = text.rpartition(":")
        if p.isdigit():
            return f"tcp://{h or host}:{int(p)}"
    raise ValueError(f"bad address {address!r}: give PORT, HOST:PORT or tcp://HOST:PORT")


def bind_address(port: int | str, host: str = "127.0.0.1") -> str:
    """The bind endpoint of a server: ``tcp://HOST:PORT`` (``host="*"`` binds every
    interface, as the Durham original does)."""
    return normalize_address(port, host) if "://" not in str(port) else str(port)


class CommandServer:
    """A REP socket answering ``Dao.CommandMessage`` in its own thread.

    Parameters
    ----------
    handler : callable
        ``handler(function_name, payload, message) -> str`` returning the reply payload;
        raising any exception makes a FAILURE reply with the exception's text.
    address : str
        Bind endpoint, e.g. ``tcp://127.0.0.1:5555`` (port 0: any free port, see
        :attr:`address` after :meth:`start`).
    poll : float
        Poll period of the serving loop, in seconds: :meth:`stop` returns within it.
    name : str
        Name of the serving thread and in logs.
    """

    def __init__(
        self,
        handler: Callable[[str, str, Any], str],
        address: str,
        poll: float = 0.1,
        name: str = "dao-command",
    ):
        self.handler = handler
        self.address = address
        self.poll = poll
        self.name = name
        self.served = 0
        self.malformed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: zmq.Socket | None = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.address.rsplit(":", 1)[1])

    def start(self) -> CommandServer:
        """Bind (in the caller's thread, so a busy port raises here) and start serving."""
        sock = zmq.Context.instance().socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close()
            raise DaoError(f"cannot bind the command server at {self.address}: {exc}") from exc
        self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _reply(self, ok: bool, payload: str) -> bytes:
        return Reply(status=SUCCESS if ok else FAILURE, payload=payload).SerializeToString()

    def handle_bytes(self, frames: list[bytes]) -> bytes:
        """The reply bytes for a received message (one or more frames); never raises."""
        if len(frames) != 1:
            self.malformed += 1
            return self._reply(
                False, f"malformed CommandMessage: expected 1 frame, got {len(frames)}"
            )
        msg = Command()
        try:
            msg.ParseFromString(frames[0])
            fname = Command.COMMAND.Name(msg.function)
        except Exception as exc:  # noqa: BLE001 - DecodeError, unknown enum value
            self.malformed += 1
            return self._reply(False, f"malformed CommandMessage: {exc or type(exc).__name__}")
        try:
            out = self.handler(fname, msg.payload, msg)
        except Exception as exc:  # noqa: BLE001 - any failure is a FAILURE reply
            text = str(exc) or type(exc).__name__
            log.debug("%s: %s %r failed: %s", self.name, fname, msg.payload, text)
            return self._reply(False, text)
        return self._reply(True, "" if out is None else str(out))

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        # a receive timeout rather than a poll before each receive: one system call less per
        # command, and stop() is still seen within `poll` seconds
        sock.setsockopt(zmq.RCVTIMEO, max(1, int(self.poll * 1000)))
        try:
            while not self._stop.is_set():
                try:
                    frames = sock.recv_multipart()
                except zmq.Again:
                    continue
                except zmq.ZMQError as exc:
                    if self._stop.is_set():
                        break
                    log.error("%s: receive failed: %s", self.name, exc)
                    continue
                reply = self.handle_bytes(frames)
                self.served += 1
                try:
                    sock.send(reply)
                except zmq.ZMQError as exc:
                    log.error("%s: reply failed: %s", self.name, exc)
        finally:
            sock.close()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the socket (returns within about ``poll`` seconds)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> CommandServer:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ComponentClient:
    """Drives one component over the command protocol (a REQ socket).

    Every method sends one command and returns the reply payload; a FAILURE reply raises
    :class:`CommandFailed`, no reply within ``timeout`` raises :class:`CommandTimeout` (and the
    socket is re-created, so the client stays usable). :meth:`request` gives the raw
    ``(ok, payload)`` without raising on FAILURE. Thread-safe (one request at a time).

    Parameters
    ----------
    address : str or int
        ``PORT``, ``HOST:PORT`` or ``tcp://HOST:PORT``.
    timeout : float
        Reply timeout in seconds.
    component : str
        ``component`` field of the messages (the Durham components ignore it).
    """

    def __init__(self, address: str | int, timeout: float = 2.0, component: str = ""):
        self.address = normalize_address(address)
        self.timeout = float(timeout)
        self.component = component
        self._lock = threading.Lock()
        self._sock: zmq.Socket | None = None
        self._rcvtimeo = -1

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            s = zmq.Context.instance().socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.address)
            self._sock = s
            self._rcvtimeo = -1
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def request_raw(self, data: bytes | list[bytes], timeout: float | None = None) -> Reply:
        """Send raw bytes (or frames) and return the parsed ``ReplyMessage`` (for tests)."""
        t = self.timeout if timeout is None else timeout
        ms = max(1, int(t * 1000))
        with self._lock:
            sock = self._socket()
            try:
                if self._rcvtimeo != ms:  # cached: a getsockopt per request costs 2 us
                    sock.setsockopt(zmq.RCVTIMEO, ms)
                    self._rcvtimeo = ms
                if isinstance(data, list):
                    sock.send_multipart(data)
                else:
                    sock.send(data)
                raw = sock.recv()
            except zmq.Again:
                self._reset()
                raise CommandTimeout(
                    f"no reply from {self.address} within {t} s: is the component "
                    "running and listening there?"
                ) from None
            except zmq.ZMQError as exc:
                self._reset()
                raise DaoError(f"{self.address}: {exc}") from exc
        rep = Reply()
        rep.ParseFromString(raw)
        return rep

    def request(
        self, command: str | int, payload: str = "", timeout: float | None = None
    ) -> tuple[bool, str]:
        """Send one command; return ``(ok, payload)`` (no exception on FAILURE).

        Parameters
        ----------
        command : str or int
            ``"EXEC"``, ``"SETUP"``... (case-insensitive) or the enum value.
        payload : str
            The command's payload.
        timeout : float, optional
            Overrides the client's timeout for this request.
        """
        if isinstance(command, str):
            key = command.strip().upper()
            if key not in COMMANDS:
                raise ValueError(f"unknown command {command!r}: one of {', '.join(COMMANDS)}")
            fn = COMMANDS[key]
        else:
            fn = int(command)
        msg = Command(component=self.component, function=fn, payload=str(payload))
        rep = self.request_raw(msg.SerializeToString(), timeout)
        return rep.status == SUCCESS, rep.payload

    def call(self, command: str, payload: str = "", timeout: float | None = None) -> str:
        """Send one command; return the payload, raise :class:`CommandFailed` on FAILURE."""
        ok, out = self.request(command, payload, timeout)
        if not ok:
            raise CommandFailed(self.address, command.upper(), payload, out)
        return out

    # -- one method per command ------------------------------------------------------------
    def exec(self, event: str, timeout: float | None = None) -> str:
        """EXEC an event (Init, Stop, Enable, Disable, Run, Idle, OnFailure, Recover); returns
        the new state."""
        return self.call("EXEC", event, timeout)

    def init(self) -> str:
        """EXEC Init (Off -> Standby)."""
        return self.exec("Init")

    def stop(self) -> str:
        """EXEC Stop (Standby -> Off)."""
        return self.exec("Stop")

    def enable(self) -> str:
        """EXEC Enable (Standby -> Idle)."""
        return self.exec("Enable")

    def disable(self) -> str:
        """EXEC Disable (Idle -> Standby)."""
        return self.exec("Disable")

    def run(self) -> str:
        """EXEC Run (Idle -> Running)."""
        return self.exec("Run")

    def idle(self) -> str:
        """EXEC Idle (Running -> Idle)."""
        return self.exec("Idle")

    def fail(self, reason: str = "") -> str:
        """EXEC OnFailure (Idle or Running -> Error)."""
        return self.exec("OnFailure" + (f" {reason}" if reason else ""))

    def recover(self) -> str:
        """EXEC Recover (Error -> Idle)."""
        return self.exec("Recover")

    def setup(self, key: str, value: Any = None) -> str:
        """SETUP ``key=value``: change a published parameter (validated by the component).

        ``setup("gain=0.3")`` and ``setup("gain", 0.3)`` are the same.
        """
        payload = key if value is None else f"{key}={_text(value)}"
        return self.call("SETUP", payload)

    def update(self, payload: str = "") -> str:
        """UPDATE: make the component reload what it reloads on demand."""
        return self.call("UPDATE", payload)

    def ping(self, timeout: float | None = None) -> int:
        """PING: the component's process id."""
        return int(self.call("PING", "", timeout))

    def state(self) -> str:
        """STATE: the component's state name."""
        return self.call("STATE")

    def set_log_level(self, level: str | int) -> str:
        """SET_LOG_LEVEL: TRACE, DEBUG, INFO, WARNING, ERROR or CRITICAL."""
        if isinstance(level, int):
            level = logging.getLevelName(level)
        return self.call("SET_LOG_LEVEL", str(level))

    def dump(self) -> dict[str, Any]:
        """DUMP: every published parameter, as a dict (decoded from the JSON reply)."""
        import json

        return json.loads(self.call("DUMP"))

    def query(self, key: str) -> str:
        """QUERY: the current value of a published parameter, as text."""
        return self.call("QUERY", key)

    def other(self, payload: str = "") -> str:
        """OTHER: the component's user hook."""
        return self.call("OTHER", payload)

    def goto(
        self, state: str, timeout: float | None = None, wait: bool = True
    ) -> str | Status:
        """Drive the component to ``state`` with the events of :func:`dao.runtime.state.path`
        from its current state (asked with STATE).

        The same call as :meth:`dao.runtime.component.Component.goto`.

        Parameters
        ----------
        state : str
            ``"Off"``, ``"Standby"``, ``"Idle"``, ``"Running"`` (``"Error"``: OnFailure).
        timeout : float, optional
            Longest time for the whole operation, in seconds (each command waits for its
            reply at most what is left of it, and at most the client's :attr:`timeout`);
            None: each command waits the client's timeout.
        wait : bool
            Block until there and return the state name; False: return a
            :class:`~dao.runtime.status.Status` at once (progress: the fraction of the events
            sent; result: the state name).

        Returns
        -------
        str or Status
            The state reached, or (``wait=False``) the operation's status.

        Raises
        ------
        ValueError
            ``state`` is not a state name.
        CommandFailed
            An event was refused (e.g. a hook failed: the component is in Error).
        CommandTimeout
            The component did not answer, or ``timeout`` passed before it got there.
        """
        import time

        tgt = parse_state(state)
        end = None if timeout is None else time.monotonic() + float(timeout)

        def left() -> float | None:
            if end is None:
                return None
            rest = end - time.monotonic()
            if rest <= 0:
                raise CommandTimeout(
                    f"{self.address} not driven to {tgt.value} within {timeout:g} s"
                )
            return min(self.timeout, rest)

        def op(status: Status | None) -> str:
            steps = state_path(self.call("STATE", "", left()), tgt)
            here = ""
            for i, ev in enumerate(steps):
                if status is not None:
                    status.set_progress(i / len(steps), f"EXEC {ev.value}")
                payload = ev.value
                if ev is Event.ON_FAILURE:
                    payload += f" goto({tgt.value}) requested"
                here = self.exec(payload, left())
            return here or tgt.value

        if wait:
            return op(None)
        return Status.run(op, name=f"{self.address} to {tgt.value}")

    def events_address(self, timeout: float | None = None) -> str:
        """The component's event address (``QUERY events_address``, see
        :mod:`dao.runtime.events`)."""
        from dao.runtime.events import events_address

        return events_address(self.address, self.timeout if timeout is None else timeout)

    def subscribe(
        self, kinds: Any = None, timeout: float = 5.0, wait: bool = True
    ) -> EventSubscriber:
        """Subscribe to the component's events (see :func:`dao.runtime.events.subscribe`).

        Parameters
        ----------
        kinds : iterable of str, optional
            Keep only these kinds of event (``"state"``, ``"parameter"``, ``"error"``,
            ``"heartbeat"``); default all.
        timeout : float
            Seconds to wait for the component's answer and for its snapshot.
        wait : bool
            Return once the snapshot (the current state) has arrived.

        Returns
        -------
        dao.runtime.events.EventSubscriber
            The subscriber (close it, or use it in a ``with`` block); with ``wait``, its
            first event is the current state.

        Raises
        ------
        CommandTimeout
            The component did not answer ``QUERY events_address``.
        dao.runtime.events.EventTimeout
            ``wait`` and no snapshot within ``timeout``.
        """
        from dao.runtime.events import subscribe

        return subscribe(self.address, kinds=kinds, timeout=timeout, wait=wait)

    def wait_ready(self, timeout: float = 10.0) -> int:
        """PING until the component answers (for a process just started); return its pid."""
        import time

        end = time.monotonic() + timeout
        while True:
            try:
                return self.ping(timeout=min(0.5, max(0.05, end - time.monotonic())))
            except CommandTimeout:
                if time.monotonic() >= end:
                    raise CommandTimeout(
                        f"{self.address} did not answer PING within {timeout} s"
                    ) from None

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __enter__(self) -> ComponentClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._reset()

    def __repr__(self) -> str:
        return f"ComponentClient({self.address!r}, timeout={self.timeout})"


def _text(value: Any) -> str:
    import json

    import numpy as np

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)

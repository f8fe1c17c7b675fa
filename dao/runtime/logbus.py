"""Logging for components: a TRACE level and a ZeroMQ log bus of ``Dao.LogMessage`` records.

Every component process attaches a :class:`LogBusHandler` to its logger: each record is sent as
a serialized ``Dao.LogMessage`` on a PUB socket *connected* to a :class:`LogForwarder`, which
binds an XSUB socket (where publishers connect) and an XPUB socket (where subscribers connect).
A notebook then follows every component's log in one place with :class:`LogSubscriber`::

    fwd = LogForwarder().start()                      # tcp://127.0.0.1:5570 in, :5571 out
    # components run with: dao run ... --log-bus tcp://127.0.0.1:5570
    with LogSubscriber(fwd.backend) as sub:
        for rec in sub.iter(timeout=5.0):
            print(rec)

The bus is best effort: PUB drops records at its high-water mark and while no subscriber is
connected; components never block on logging.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from dao.proto import dao_pb2

__all__ = [
    "TRACE",
    "LEVELS",
    "DEFAULT_LOG_IN",
    "DEFAULT_LOG_OUT",
    "LogBusHandler",
    "LogForwarder",
    "LogSubscriber",
    "LogRecord",
    "parse_level",
    "trace",
    "to_proto_level",
]

#: The TRACE level (5), below DEBUG, as in the Durham framework.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

#: Level names accepted by SET_LOG_LEVEL, and their numbers.
LEVELS = {
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

#: Default address where publishers connect (the forwarder's XSUB); env ``DAO_LOG_BUS``.
DEFAULT_LOG_IN = "tcp://127.0.0.1:5570"
#: Default address where subscribers connect (the forwarder's XPUB); env ``DAO_LOG_BUS_OUT``.
DEFAULT_LOG_OUT = "tcp://127.0.0.1:5571"

_PROTO_LEVELS = (0, 5, 10, 20, 30, 40, 50)


def trace(logger: logging.Logger, msg: str, *args: Any, **kwargs: Any) -> None:
    """Log ``msg`` at TRACE level on ``logger`` (cheap when TRACE is disabled)."""
    if logger.isEnabledFor(TRACE):
        logger._log(TRACE, msg, args, **kwargs)


def parse_level(level: str | int) -> int:
    """A level number from a name (``"TRACE"``, ``"info"``...) or a number.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if isinstance(level, int):
        return level
    text = str(level).strip().upper()
    if text.isdigit():
        return int(text)
    if text == "WARN":
        text = "WARNING"
    if text not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    return LEVELS[text]


def to_proto_level(levelno: int) -> int:
    """The ``Dao.LogMessage.LEVEL`` value of a Python level (the nearest one at or below)."""
    return max(v for v in _PROTO_LEVELS if v <= max(0, levelno))


def _ctx() -> zmq.Context:
    return zmq.Context.instance()


class LogBusHandler(logging.Handler):
    """A logging handler that publishes each record as a ``Dao.LogMessage`` on a PUB socket.

    Parameters
    ----------
    address : str, optional
        The forwarder's input (XSUB) address to connect to; default ``$DAO_LOG_BUS`` or
        :data:`DEFAULT_LOG_IN`.
    component : str
        ``component_name`` of the records (default: the logger's name).
    bind : bool
        Bind the PUB socket at ``address`` instead of connecting (no forwarder: subscribers
        connect to this process directly).
    level : int
        Minimum level published.
    """

    def __init__(
        self,
        address: str | None = None,
        component: str | None = None,
        *,
        bind: bool = False,
        level: int = logging.NOTSET,
        hwm: int = 10000,
    ):
        super().__init__(level)
        self.address = address or os.environ.get("DAO_LOG_BUS", DEFAULT_LOG_IN)
        self.component = component
        self.machine = socket.gethostname()
        self._sock = _ctx().socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 200)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        if bind:
            self._sock.bind(self.address)
            self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            self._sock.connect(self.address)
        self.setFormatter(logging.Formatter("%(message)s"))

    def to_message(self, record: logging.LogRecord) -> dao_pb2.LogMessage:
        """The ``Dao.LogMessage`` of a record."""
        ts = _dt.datetime.fromtimestamp(record.created, _dt.UTC)
        return dao_pb2.LogMessage(
            component_name=self.component or record.name,
            time_stamp=ts.isoformat(timespec="microseconds"),
            machine=self.machine,
            log_message=self.format(record),
            level=to_proto_level(record.levelno),
        )

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            data = self.to_message(record).SerializeToString()
            self._sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            pass  # high-water mark: drop, never block a component on logging
        except Exception:  # noqa: BLE001
            self.handleError(record)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._sock.close()
        super().close()


class LogForwarder:
    """Gathers the log bus: XSUB bound at ``frontend`` (publishers connect), XPUB bound at
    ``backend`` (subscribers connect), forwarded by a thread that stops within ``poll`` s.

    Parameters
    ----------
    frontend, backend : str
        Bind addresses; a port of 0 (``tcp://127.0.0.1:0``) picks a free one, see the
        :attr:`frontend` and :attr:`backend` attributes after :meth:`start`.
    """

    def __init__(
        self, frontend: str = DEFAULT_LOG_IN, backend: str = DEFAULT_LOG_OUT, poll: float = 0.1
    ):
        self.frontend = frontend
        self.backend = backend
        self.poll = poll
        self.forwarded = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._xsub: zmq.Socket | None = None
        self._xpub: zmq.Socket | None = None

    def start(self) -> LogForwarder:
        """Bind both sockets and start forwarding (returns self)."""
        ctx = _ctx()
        self._xsub = ctx.socket(zmq.XSUB)
        self._xpub = ctx.socket(zmq.XPUB)
        for s in (self._xsub, self._xpub):
            s.setsockopt(zmq.LINGER, 0)
        self._xsub.bind(self.frontend)
        self._xpub.bind(self.backend)
        self.frontend = self._xsub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend = self._xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread = threading.Thread(target=self._run, name="dao-log-forwarder", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        xsub, xpub = self._xsub, self._xpub
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        ms = int(self.poll * 1000)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(ms):
                    msg = sock.recv_multipart()
                    if sock is xsub:
                        xpub.send_multipart(msg)
                        self.forwarded += 1
                    else:  # subscriptions flow upstream
                        xsub.send_multipart(msg)
        finally:
            xsub.close()
            xpub.close()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop forwarding and close the sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> LogForwarder:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass
class LogRecord:
    """One record received from the log bus."""

    component: str
    time_stamp: str
    machine: str
    message: str
    level: int

    @property
    def level_name(self) -> str:
        return logging.getLevelName(self.level)

    def __str__(self) -> str:
        return (
            f"{self.time_stamp} {self.machine} {self.component} {self.level_name}: {self.message}"
        )


class LogSubscriber:
    """Receives ``Dao.LogMessage`` records from a forwarder's XPUB (or a bound handler).

    Parameters
    ----------
    address : str, optional
        Where to connect; default ``$DAO_LOG_BUS_OUT`` or :data:`DEFAULT_LOG_OUT`.
    """

    def __init__(self, address: str | None = None):
        self.address = address or os.environ.get("DAO_LOG_BUS_OUT", DEFAULT_LOG_OUT)
        self._sock = _ctx().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(self.address)
        self.malformed = 0

    def recv(self, timeout: float | None = 1.0) -> LogRecord | None:
        """The next record, or ``None`` after ``timeout`` seconds (``None``: wait forever)."""
        ms = -1 if timeout is None else int(timeout * 1000)
        while True:
            if not self._sock.poll(ms):
                return None
            data = self._sock.recv()
            msg = dao_pb2.LogMessage()
            try:
                msg.ParseFromString(data)
            except Exception:  # noqa: BLE001 - a foreign publisher: skip its frame
                self.malformed += 1
                continue
            return LogRecord(
                msg.component_name, msg.time_stamp, msg.machine, msg.log_message, int(msg.level)
            )

    def iter(self, timeout: float = 1.0) -> Iterator[LogRecord]:
        """Records as they come, until none came for ``timeout`` seconds."""
        while (rec := self.recv(timeout)) is not None:
            yield rec

    def to_logging(self, record: LogRecord, logger: str = "dao.bus") -> None:
        """Re-emit a received record into local Python logging (``<logger>.<component>``)."""
        logging.getLogger(f"{logger}.{record.component}").log(
            record.level or logging.INFO, "[%s] %s", record.machine, record.message
        )

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> LogSubscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

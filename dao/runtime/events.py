"""Events: what a component (or a supervisor) says about itself, on a ZeroMQ PUB socket.

Every component served over the command protocol also binds an event socket (an XPUB, on the
same interface as its command socket, 127.0.0.1 by default) on **its command port + 1** when
that port is free, else on any free port; ``QUERY events_address`` always gives it, and
``dao run`` prints it. A :class:`dao.runtime.supervisor.Supervisor` publishes the health of
its processes the same way (:attr:`~dao.runtime.supervisor.Supervisor.events_address`).

Each event is one ZeroMQ message: a JSON object (UTF-8; never pickle) whose first key is
``kind``. Every event has

- ``kind``: ``"state"``, ``"parameter"``, ``"error"``, ``"heartbeat"`` or ``"health"``;
- ``component``: the component's name (for ``health``: the supervised component's name);
- ``time``: when it happened, seconds since the epoch (float, CLOCK_REALTIME);
- ``seq``: the publisher's message number (0, 1, 2...): a gap means dropped events;
- ``state``: the component's state name (for ``health``: the last known one; only the
  supervisor's own heartbeat, ``component: "supervisor"``, has none);
- ``pid`` (component events): the process id of the component that published it, so that the
  last words of a process that died are told from its restarted successor's;
- ``snapshot``: true on every event sent in answer to a new subscription (the current state),
  absent otherwise.

and by kind:

- ``state``: ``event`` (the Durham event name, ``null`` in a snapshot), ``old`` (the state
  before), ``reason`` (why, when the new state is Error, else ``null``); in a snapshot also
  ``parameters``: every published parameter's value;
- ``parameter``: ``name``, ``old``, ``new`` (JSON values);
- ``error``: ``event`` (what was being done), ``reason`` (the exception and its traceback),
  ``message`` (its last line);
- ``heartbeat``, about once a second: ``iterations`` (processing iterations so far),
  ``rate_hz`` (iterations per second since the previous heartbeat), ``processing_p50_s`` and
  ``processing_p99_s`` (per-frame processing time, from the ``<name>_timing`` records of the
  same window; ``null`` without samples), ``samples``, ``uptime_s``, ``pid``;
- ``health`` (supervisors): ``pid``, ``alive``, ``uptime_s``, ``restarts``,
  ``last_exit_code``, ``exit_codes``, ``address``, ``events_address``, ``restart``,
  ``stopping``, ``state``, ``error_reason`` (the component's reason while it is in Error,
  else ``null``), ``why`` (``"started"``, ``"died"``, ``"restarted"``, ``"failed"`` (a start
  or restart that did not complete: its process was killed), ``"stopped"``, ``"state"``,
  ``"heartbeat"``, ``"snapshot"``); with each round of them the supervisor's own
  ``heartbeat`` (``components``, ``pid``, ``uptime_s``); the ``pid`` of a health event is the
  supervised process's.

A new subscriber gets the current state at once: the publisher sees each subscription (XPUB)
and answers it with a snapshot (a component: a ``state`` event and a heartbeat; a supervisor:
its heartbeat and every component's ``health``; all with ``snapshot: true``), so the ZeroMQ
"slow joiner" (a subscriber connecting just before an event misses it) never leaves a watcher
without the state; :func:`subscribe` returns once every publisher's snapshot has come. Events
are published from a thread of their own, never from the real-time processing thread. At the
PUB high-water mark events are dropped (``seq`` shows it): subscribers always read with a
timeout.

From Python::

    from dao.runtime import subscribe
    with subscribe(5555) as events:              # the component's command port
        ev = events.wait_for(kind="state", state="Running", timeout=10)
        for ev in events:                        # forever (Ctrl-C to stop)
            print(ev)

From the shell: ``dao events 5555`` prints one JSON object per line until Ctrl-C.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import zmq

from dao.errors import DaoError

__all__ = [
    "EVENT_KINDS",
    "EventError",
    "EventTimeout",
    "EventPublisher",
    "EventSubscriber",
    "subscribe",
    "events_address",
    "encode_event",
    "decode_event",
]

log = logging.getLogger("dao.runtime.events")

#: The kinds of events published by dao components and supervisors.
EVENT_KINDS = ("state", "parameter", "error", "heartbeat", "health")


class EventError(DaoError, ValueError):
    """A message on an event socket is not a dao event (not JSON, or not an object)."""


class EventTimeout(DaoError, TimeoutError):
    """No (matching) event came within the timeout."""


def _clean(v: Any) -> Any:
    """A JSON-ready copy: numpy values as Python ones, NaN and infinities as None."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def encode_event(event: dict[str, Any]) -> bytes:
    """The wire form of an event: JSON in UTF-8 (NaN and infinities become ``null``)."""
    return json.dumps(_clean(event), allow_nan=False).encode()


def decode_event(data: bytes | str) -> dict[str, Any]:
    """The event in a received message.

    Raises
    ------
    EventError
        Not a JSON object with a ``kind``: the address is not a dao event publisher.
    """
    try:
        ev = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        head = data[:60] if isinstance(data, str) else data[:60].decode(errors="replace")
        raise EventError(
            f"malformed event {head!r}: not JSON ({exc}); check that the address is a dao "
            "component's or supervisor's event socket (QUERY events_address gives it)"
        ) from exc
    if not isinstance(ev, dict) or "kind" not in ev:
        raise EventError(
            f"malformed event {str(ev)[:60]!r}: expected a JSON object with a 'kind'; check "
            "that the address is a dao event socket"
        )
    return ev


class EventPublisher:
    """Publishes events on an XPUB socket from a thread of its own.

    Parameters
    ----------
    address : str
        Bind endpoint (``tcp://127.0.0.1:5556``; port 0: any free port, see :attr:`address`
        after :meth:`start`).
    source : str
        The ``component`` field of the events published with :meth:`publish`.
    snapshot : callable, optional
        ``snapshot() -> list of event dicts`` sent when a subscriber joins.
    heartbeat : callable, optional
        ``heartbeat() -> list of event dicts`` sent every ``interval`` seconds.
    interval : float
        Heartbeat period, in seconds.
    name : str
        Name of the thread.
    fields : dict, optional
        Fields added to every event made by :meth:`make` (e.g. ``{"pid": os.getpid()}``).
    max_queue : int
        Events waiting for the publishing thread at most; more are dropped (counted in
        :attr:`dropped`, the first drop logged), so a parameter set every frame by a busy
        caller cannot grow memory without bound.

    Attributes
    ----------
    sent : int
        Events sent so far (the next ``seq``).
    dropped : int
        Events dropped because the queue was full.
    """

    def __init__(
        self,
        address: str,
        source: str,
        snapshot: Callable[[], list[dict[str, Any]]] | None = None,
        heartbeat: Callable[[], list[dict[str, Any]]] | None = None,
        interval: float = 1.0,
        name: str = "dao-events",
        fields: dict[str, Any] | None = None,
        max_queue: int = 10000,
    ):
        self.address = address
        self.source = source
        self.snapshot = snapshot
        self.heartbeat = heartbeat
        self.interval = float(interval)
        self.name = name
        self.fields = dict(fields or {})
        self.sent = 0
        self.dropped = 0
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=int(max_queue))
        self._stop = threading.Event()
        self._stopped_by_caller = False
        self._said_dead = False
        self._thread: threading.Thread | None = None
        self._sock: zmq.Socket | None = None
        self._rpipe = self._wpipe = -1

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.address.rsplit(":", 1)[1])

    def start(self) -> EventPublisher:
        """Bind (in the caller's thread: a busy port raises :class:`DaoError` here) and start
        the publishing thread."""
        sock = zmq.Context.instance().socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 200)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only the first
        sock.setsockopt(zmq.SNDHWM, 10000)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise DaoError(f"cannot bind the event socket at {self.address}: {exc}") from exc
        self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._rpipe, self._wpipe = os.pipe()
        os.set_blocking(self._rpipe, False)
        os.set_blocking(self._wpipe, False)
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """The publishing thread runs (events sent with :meth:`send` go out)."""
        return self._thread is not None and not self._stop.is_set()

    def make(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An event dict of this source: ``kind``, ``component``, ``time``, the publisher's
        :attr:`fields`, then ``fields``."""
        ev: dict[str, Any] = {"kind": kind, "component": self.source, "time": time.time()}
        ev.update(self.fields)
        ev.update(fields)
        return ev

    def publish(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Queue an event for sending (any thread; never blocks); returns it."""
        ev = self.make(kind, **fields)
        self.send(ev)
        return ev

    def send(self, event: dict[str, Any]) -> bool:
        """Queue a ready-made event dict for sending (any thread; never blocks).

        Returns
        -------
        bool
            False when the publisher is stopped (or its thread ended) or its queue is full:
            the event is dropped, not queued (the first such drop after an unexpected end is
            logged as an error; drops for a full queue are counted in :attr:`dropped`).
        """
        if self._stop.is_set():
            if not self._stopped_by_caller and not self._said_dead:
                self._said_dead = True
                log.error("%s: the event thread has ended: events are no longer sent "
                          "(%s %r dropped)", self.name, event.get("kind"), event.get("component"))
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("%s: more than %d events wait to be sent: dropping (counted in "
                            "dropped)", self.name, self._queue.maxsize)
            return False
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wpipe, b"e")
        return True

    def _emit(self, event: dict[str, Any]) -> None:
        event["seq"] = self.sent
        try:
            data = encode_event(event)
        except (TypeError, ValueError) as exc:
            log.error("%s: event not sent, cannot encode it (%s): %r", self.name, exc, event)
            return
        try:
            self._sock.send(data, zmq.NOBLOCK)  # type: ignore[union-attr]
            self.sent += 1
        except zmq.ZMQError as exc:  # XPUB drops at its HWM rather than blocking
            log.debug("%s: event dropped: %s", self.name, exc)

    def _call(self, fn: Callable[[], list[dict[str, Any]]] | None, snapshot: bool = False
              ) -> None:
        if fn is None:
            return
        try:
            events = fn()
        except Exception:  # noqa: BLE001 - a heartbeat error never stops the publisher
            log.exception("%s: %s raised", self.name, getattr(fn, "__name__", fn))
            return
        for ev in events or ():
            if snapshot:
                ev["snapshot"] = True
            self._emit(ev)

    def _drain(self) -> None:
        while True:
            try:
                ev = self._queue.get_nowait()
            except queue.Empty:
                return
            self._emit(ev)

    def _main(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._rpipe, zmq.POLLIN)
        next_beat = time.monotonic() + self.interval
        try:
            while not self._stop.is_set():
                wait_ms = max(0, int((next_beat - time.monotonic()) * 1000))
                welcome = False
                for item, _ in poller.poll(wait_ms):
                    if item is sock:
                        while True:
                            try:
                                msg = sock.recv(zmq.NOBLOCK)
                            except zmq.Again:
                                break
                            if msg[:1] == b"\x01":  # a subscription (\x00: one ending)
                                welcome = True
                    else:
                        with contextlib.suppress(BlockingIOError, OSError):
                            os.read(self._rpipe, 4096)
                self._drain()
                if welcome:
                    self._call(self.snapshot, snapshot=True)
                if time.monotonic() >= next_beat:
                    self._call(self.heartbeat)
                    next_beat = max(next_beat + self.interval, time.monotonic() + 0.1)
            self._drain()  # the last events (e.g. a state change while closing)
        except Exception:  # noqa: BLE001 - said here, with the traceback; the thread ends
            log.exception("%s: the event thread failed: no more events are sent", self.name)
        finally:
            self._stop.set()  # send() stops queuing for nobody
            sock.close()
            for fd in (self._rpipe, self._wpipe):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued, stop the thread and close the socket."""
        self._stopped_by_caller = True
        if self._thread is None or self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wpipe, b"s")
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> EventPublisher:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EventPublisher {self.source!r} at {self.address}, {self.sent} sent>"


class EventSubscriber:
    """Receives the events of one or more publishers (SUB sockets; use it from one thread).

    Each publisher gets a socket of its own, so the subscriber knows where each event came
    from (:attr:`last_source`) and :func:`subscribe` can wait for every publisher's snapshot.

    Parameters
    ----------
    address : str or sequence of str
        Event endpoints (``tcp://127.0.0.1:5556``) to connect to.
    kinds : iterable of str, optional
        Keep only these kinds (default: all).

    Attributes
    ----------
    received : int
        Events received so far (of every kind).
    last_source : str or None
        The address of the publisher of the last event received.

    Examples
    --------
    >>> with EventSubscriber("tcp://127.0.0.1:5556") as sub:   # doctest: +SKIP
    ...     ev = sub.get(timeout=1.0)                           # a dict, or None
    """

    def __init__(self, address: str | Sequence[str], kinds: Iterable[str] | None = None):
        addresses = [address] if isinstance(address, str) else list(address)
        self.addresses: list[str] = []
        self.kinds = set(kinds) if kinds is not None else None
        if self.kinds is not None and (bad := self.kinds - set(EVENT_KINDS)):
            raise ValueError(f"unknown event kinds {sorted(bad)}: use {', '.join(EVENT_KINDS)}")
        self.received = 0
        self.last_source: str | None = None
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._socks: list[tuple[str, zmq.Socket]] = []
        self._poller: zmq.Poller | None = zmq.Poller()
        self._next = 0  # round robin over the sockets that have events
        for a in addresses:
            self.connect(a)

    @property
    def address(self) -> str:
        """The (first) address connected to."""
        return self.addresses[0]

    def connect(self, address: str) -> None:
        """Also receive the events published at ``address``."""
        if self._poller is None:
            raise DaoError("this event subscriber is closed")
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 100000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ValueError(f"bad event address {address!r}: {exc}") from exc
        self._socks.append((address, sock))
        self._poller.register(sock, zmq.POLLIN)
        self.addresses.append(address)

    def _recv_from(self, timeout: float | None) -> tuple[str, dict[str, Any]] | None:
        """The next event of any kind and the address it came from, or None on timeout."""
        poller = self._poller
        if poller is None:
            raise DaoError("this event subscriber is closed")
        ms = None if timeout is None else max(0, int(timeout * 1000))
        ready = dict(poller.poll(ms))
        if not ready:
            return None
        n = len(self._socks)
        for i in range(n):  # round robin: one busy publisher does not hide the others
            addr, sock = self._socks[(self._next + i) % n]
            if sock in ready:
                self._next = (self._next + i + 1) % n
                data = sock.recv()
                self.received += 1
                self.last_source = addr
                return addr, decode_event(data)
        return None

    def _recv(self, timeout: float | None) -> dict[str, Any] | None:
        got = self._recv_from(timeout)
        return None if got is None else got[1]

    def get(self, timeout: float | None = 1.0) -> dict[str, Any] | None:
        """The next event (of the kinds kept), or None if none comes within ``timeout`` s.

        Parameters
        ----------
        timeout : float or None
            Longest wait in seconds (0: do not wait; None: as long as it takes).

        Returns
        -------
        dict or None
            The event, or None.

        Raises
        ------
        EventError
            A message that is not a dao event (the next call goes on with the next one).
        """
        if self._pending:
            return self._pending.popleft()
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            ev = self._recv(left)
            if ev is None:
                return None
            if self.kinds is None or ev.get("kind") in self.kinds:
                return ev
            if end is not None and time.monotonic() >= end:
                return None

    def drain(self) -> list[dict[str, Any]]:
        """Every event already received, without waiting.

        Returns
        -------
        list of dict
            The events (of the kinds kept), oldest first.
        """
        out = []
        while (ev := self.get(0)) is not None:
            out.append(ev)
        return out

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10.0,
        **match: Any,
    ) -> dict[str, Any]:
        """The first event for which ``predicate(event)`` is true and whose fields equal
        ``match`` (e.g. ``kind="state", state="Running"``); events before it are dropped.

        Parameters
        ----------
        predicate : callable, optional
            ``predicate(event) -> bool``.
        timeout : float
            Longest wait, in seconds.
        **match
            Fields the event must have, with these values.

        Returns
        -------
        dict
            The event.

        Raises
        ------
        EventTimeout
            None within ``timeout`` seconds.
        """
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            ev = self.get(max(0.0, left)) if left > 0 else self.get(0)
            if ev is None:
                want = ", ".join(f"{k}={v!r}" for k, v in match.items())
                raise EventTimeout(
                    f"no event {want or 'matching'} from {', '.join(self.addresses)} within "
                    f"{timeout:g} s"
                )
            if all(ev.get(k) == v for k, v in match.items()) and (
                predicate is None or predicate(ev)
            ):
                return ev

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every event, as it comes, forever (receives with 0.5 s timeouts, so Ctrl-C works)."""
        while True:
            ev = self.get(0.5)
            if ev is not None:
                yield ev

    def close(self) -> None:
        """Close the sockets."""
        socks, self._socks, self._poller = self._socks, [], None
        for _, sock in socks:
            sock.close(linger=0)

    @property
    def closed(self) -> bool:
        """The sockets are closed."""
        return self._poller is None

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"<EventSubscriber {', '.join(self.addresses)}, {self.received} received>"


def events_address(address: str | int, timeout: float = 2.0) -> str:
    """The event address of the component whose command address is ``address``.

    Asks ``QUERY events_address``; a wildcard host in the answer (a component bound on every
    interface) is replaced by the host of ``address``.

    Raises
    ------
    dao.runtime.command.CommandTimeout
        The component does not answer.
    dao.runtime.command.CommandFailed
        It answers but publishes no events (not a dao component, or served without them).
    """
    from dao.runtime.command import ComponentClient, normalize_address

    cmd = normalize_address(address)
    with ComponentClient(cmd, timeout=timeout) as c:
        out = c.query("events_address").strip()
    if not out:
        from dao.runtime.command import CommandFailed

        raise CommandFailed(cmd, "QUERY", "events_address", "this component publishes no events")
    scheme, _, rest = out.partition("://")
    host, _, port = rest.rpartition(":")
    if host in ("0.0.0.0", "*", "[::]", "::"):
        chost = cmd.partition("://")[2].rpartition(":")[0]
        out = f"{scheme}://{chost}:{port}"
    return out


def subscribe(
    address: str | int | Sequence[str],
    *,
    direct: bool = False,
    kinds: Iterable[str] | None = None,
    timeout: float = 5.0,
    wait: bool = True,
) -> EventSubscriber:
    """Subscribe to the events of a component (or, with ``direct``, of any event address).

    Parameters
    ----------
    address : str or int or sequence of str
        The component's command address (``PORT``, ``HOST:PORT``, ``tcp://HOST:PORT``, as
        for ``dao ctl``): its event address is asked with ``QUERY events_address``. With
        ``direct=True``: the event address itself (or a list of them), e.g. a supervisor's
        :attr:`~dao.runtime.supervisor.Supervisor.events_address`.
    direct : bool
        ``address`` is an event address (or a list of them).
    kinds : iterable of str, optional
        Keep only these kinds of event.
    timeout : float
        Seconds to wait for the component's answer and for the snapshots.
    wait : bool
        Return once **every** publisher's welcome snapshot (its current state, see the module
        docstring) has arrived, so that no later event can be missed;
        :meth:`EventSubscriber.get` then returns the events received meanwhile (the
        snapshots first) before any later one. False: return at once (the snapshots come
        when the connections are made).

    Returns
    -------
    EventSubscriber
        The subscriber (close it, or use it in a ``with`` block).

    Raises
    ------
    EventTimeout
        ``wait`` and some publisher sent no snapshot within ``timeout`` (named: is a dao
        component or supervisor publishing there?).
    EventError
        ``wait`` and a message that is not a dao event came (not a dao event socket).
    dao.runtime.command.CommandTimeout
        The component did not answer ``QUERY events_address``.
    """
    from dao.runtime.command import normalize_address

    if direct:
        addrs = [address] if isinstance(address, str | int) else list(address)
        targets = [normalize_address(a) for a in addrs]
    else:
        targets = [events_address(address, timeout=timeout)]
    sub = EventSubscriber(targets, kinds=kinds)
    if not wait:
        return sub
    end = time.monotonic() + timeout
    missing = set(sub.addresses)
    got: list[dict[str, Any]] = []
    try:
        while missing:
            left = end - time.monotonic()
            if left <= 0:
                raise EventTimeout(
                    f"no event from {', '.join(sorted(missing))} within {timeout:g} s: is a "
                    "dao component or supervisor publishing there?"
                )
            item = sub._recv_from(min(0.2, left))
            if item is None:
                continue
            src, ev = item
            if ev.get("snapshot"):
                missing.discard(src)
            if sub.kinds is None or ev.get("kind") in sub.kinds:
                got.append(ev)
    except BaseException:
        sub.close()
        raise
    sub._pending.extend(got)
    return sub

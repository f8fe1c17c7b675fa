"""Status objects: the handle of a long operation running in the background.

A long call (starting a loop with its calibration, driving a component to a state, an
exposure) takes ``wait=False`` and returns a :class:`Status` at once, the pattern of ophyd's
status objects, so a notebook never blocks blindly::

    st = loop.expose(2000, wait=False)
    st.progress                 # 0.35: the fraction done (or a message)
    st.add_callback(lambda s: print("done", s.success))
    result = st.wait(60)        # the operation's result; raises its exception, or TimeoutError

:meth:`Status.wait` re-raises the operation's exception (the same object), and raises
:class:`StatusTimeout` (a :class:`TimeoutError`) when the operation is not done in time; the
operation itself goes on (a thread cannot be killed): keep the status to see how it ends.
Callbacks run once, in the thread that finishes the operation (at once, in the caller's
thread, when added to a finished status); an exception in a callback is logged with its
traceback (logger ``dao.runtime.status``), never lost silently, and never fails the status.

Examples
--------
>>> st = Status.run(lambda status: 6 * 7, name="answer")
>>> st.wait(5)
42
>>> st.done, st.success
(True, True)
>>> (Status.finished(1) & Status.finished(2)).wait(1)
[1, 2]
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dao.errors import DaoError

__all__ = ["Status", "StatusTimeout"]

log = logging.getLogger("dao.runtime.status")


class StatusTimeout(DaoError, TimeoutError):
    """A status was not done within the time waited (the operation may still finish)."""


class Status:
    """The state of one operation: not done, then done with a result or an exception.

    Parameters
    ----------
    name : str
        What the operation is (in messages and ``repr``).
    timeout : float, optional
        Seconds after which the status fails with :class:`StatusTimeout` if the operation has
        not finished by then (the operation is not stopped; its later end is ignored).

    Attributes
    ----------
    name : str
        What the operation is.
    started : float
        When the status was made (``time.time()``, s).
    finished_at : float or None
        When it finished (``time.time()``, s).
    """

    def __init__(self, name: str = "", timeout: float | None = None):
        self.name = name
        self.started = time.time()
        self.finished_at: float | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Status], Any]] = []
        self._watchers: list[Callable[[Status], Any]] = []
        self._result: Any = None
        self._exception: BaseException | None = None
        self._fraction: float | None = None
        self._message = ""
        self._timer: threading.Timer | None = None
        # the statuses a combined status (Status.all) waits for; None for a plain one
        self._parts: list[Status] | None = None
        if timeout is not None:
            self._timer = threading.Timer(float(timeout), self._expire, args=(float(timeout),))
            self._timer.daemon = True
            self._timer.start()

    # -- making -----------------------------------------------------------------------------
    @classmethod
    def run(
        cls,
        target: Callable[[Status], Any],
        name: str = "",
        timeout: float | None = None,
        daemon: bool = True,
    ) -> Status:
        """Run ``target(status)`` in a new thread; its return value is the result.

        Parameters
        ----------
        target : callable
            ``target(status) -> result``; it may report progress with
            ``status.set_progress(...)``; an exception it raises fails the status.
        name : str
            What the operation is (default: ``target``'s name); also names the thread.
        timeout : float, optional
            Seconds after which the status fails with :class:`StatusTimeout` if ``target``
            has not returned (``target`` goes on; its later end is ignored).
        daemon : bool
            Run ``target`` in a daemon thread (it does not keep the interpreter alive).

        Returns
        -------
        Status
            The operation's status, not done yet (at once: ``target`` runs in the thread).
        """
        st = cls(name or getattr(target, "__name__", ""), timeout=timeout)

        def main() -> None:
            try:
                result = target(st)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                st.set_exception(exc)
            else:
                st.set_finished(result)

        threading.Thread(target=main, name=f"status-{st.name}"[:60], daemon=daemon).start()
        return st

    @classmethod
    def finished(cls, result: Any = None, name: str = "") -> Status:
        """A status already done with ``result``."""
        st = cls(name)
        st.set_finished(result)
        return st

    @classmethod
    def failed(cls, exc: BaseException, name: str = "") -> Status:
        """A status already failed with ``exc``."""
        st = cls(name)
        st.set_exception(exc)
        return st

    # -- finishing (by the operation) -------------------------------------------------------
    def set_finished(self, result: Any = None) -> bool:
        """Mark the operation done with ``result``; False if it was already done."""
        return self._finish(result, None)

    def set_exception(self, exc: BaseException) -> bool:
        """Mark the operation failed with ``exc``; False if it was already done."""
        if not isinstance(exc, BaseException):
            raise TypeError(f"set_exception needs an exception, got {exc!r}")
        return self._finish(None, exc)

    def _expire(self, timeout: float) -> None:
        self.set_exception(
            StatusTimeout(f"{self.name or 'operation'} not done within {timeout:g} s")
        )

    def _finish(self, result: Any, exc: BaseException | None) -> bool:
        with self._lock:
            if self._event.is_set():
                return False
            self._result, self._exception = result, exc
            self.finished_at = time.time()
            if exc is None:
                self._fraction = 1.0
            callbacks, self._callbacks = self._callbacks, []
            self._event.set()
        if self._timer is not None:
            self._timer.cancel()
        for fn in callbacks:
            self._call(fn)
        return True

    def _call(self, fn: Callable[[Status], Any]) -> None:
        try:
            fn(self)
        except Exception:  # noqa: BLE001 - a callback never breaks the operation: log it
            log.exception("callback %r of status %r raised", fn, self.name)

    def set_progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Report progress: ``fraction`` done (0 to 1) and/or a ``message``.

        Ignored once the status is done (a late report of an operation that timed out, say,
        never changes a finished status).
        """
        if self._event.is_set():
            return
        if fraction is not None:
            self._fraction = min(1.0, max(0.0, float(fraction)))
        if message is not None:
            self._message = str(message)
        for fn in list(self._watchers):
            self._call(fn)

    # -- watching ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The operation has ended (successfully or not)."""
        return self._event.is_set()

    @property
    def success(self) -> bool:
        """The operation has ended without an exception (False while it runs)."""
        return self._event.is_set() and self._exception is None

    @property
    def progress(self) -> float | str | None:
        """The fraction done (0 to 1) when known, else the last progress message (or None)."""
        if self._fraction is not None:
            return self._fraction
        return self._message or None

    @property
    def fraction(self) -> float | None:
        """The fraction done (0 to 1), None when unknown."""
        return self._fraction

    @property
    def message(self) -> str:
        """The last progress message (``""`` if none)."""
        return self._message

    @property
    def elapsed(self) -> float:
        """Seconds since the status was made (until it finished, once done)."""
        return (self.finished_at or time.time()) - self.started

    @property
    def result(self) -> Any:
        """The operation's result (None while it runs, or if it failed)."""
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The operation's exception, None if it succeeded.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the end (None: as long as it takes; 0: do not wait).

        Raises
        ------
        StatusTimeout
            Not done within ``timeout``.
        """
        if not self._event.wait(timeout):
            raise StatusTimeout(f"{self.name or 'operation'} not done within {timeout:g} s")
        return self._exception

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the end; return the result.

        Parameters
        ----------
        timeout : float, optional
            Longest wait in seconds (None: as long as it takes).

        Raises
        ------
        StatusTimeout
            Not done within ``timeout`` (the operation goes on).
        BaseException
            The operation's own exception, if it failed.
        """
        if not self._event.wait(timeout):
            what = self.name or "operation"
            prog = self.progress
            extra = f" (progress: {prog:.0%})" if isinstance(prog, float) else (
                f" (last: {prog})" if prog else "")
            raise StatusTimeout(f"{what} not done within {timeout:g} s{extra}")
        if self._exception is not None:
            raise self._exception
        return self._result

    def add_callback(self, fn: Callable[[Status], Any]) -> None:
        """Call ``fn(status)`` once when done (at once if already done)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        self._call(fn)

    def watch(self, fn: Callable[[Status], Any]) -> None:
        """Call ``fn(status)`` at every progress report (read ``status.progress``)."""
        self._watchers.append(fn)

    def __and__(self, other: Status) -> Status:
        """A status done when both are: result ``[a, b]``; fails as soon as either fails."""
        return Status.all(self, other)

    @classmethod
    def all(cls, *statuses: Status, name: str = "") -> Status:
        """A status done when every one of ``statuses`` is; its result is their results' list
        (a combined status's result is flattened in); it fails with the first failure."""
        out = cls(name or " & ".join(s.name for s in statuses))
        parts: list[Status] = []
        for s in statuses:
            parts.extend(s._parts if s._parts is not None else [s])
        out._parts = parts
        left = [len(parts)]
        lock = threading.Lock()

        def one_done(s: Status) -> None:
            if s._exception is not None:
                out.set_exception(s._exception)
                return
            with lock:
                left[0] -= 1
                last = left[0] == 0
            out.set_progress(1 - left[0] / len(parts))
            if last:
                out.set_finished([p._result for p in parts])

        if not parts:
            out.set_finished([])
        for s in parts:
            s.add_callback(one_done)
        return out

    def __repr__(self) -> str:
        if not self.done:
            st = "running"
        elif self.success:
            st = "done"
        else:
            st = f"failed: {type(self._exception).__name__}: {self._exception}"
        prog = self.progress
        p = f", progress={prog:.2f}" if isinstance(prog, float) and not self.done else (
            f", {prog!r}" if isinstance(prog, str) and not self.done else "")
        return f"<Status {self.name!r} {st}{p}, {self.elapsed:.2f} s>"

"""Real-time threads, a thread table and a signal table.

A :class:`RTThread` has the Durham lifecycle:

- :meth:`~RTThread.spawn`: create the OS thread, pin it to its core, give it ``SCHED_FIFO``
  priority when permitted (else one logging warning per process, and it runs normally), call
  ``on_spawn`` once, then wait;
- :meth:`~RTThread.start`: call ``on_start`` once, then repeat ``body`` (paced by ``period``
  when one is given, else back to back: the body usually blocks on a stream);
- :meth:`~RTThread.stop`: finish the current ``body``, call ``on_stop`` once, wait again;
- :meth:`~RTThread.exit`: leave (calling ``on_stop`` if running, then ``on_exit`` once);
- :meth:`~RTThread.join`: wait for the OS thread to end.

The loop is timed: the period between successive body starts, its jitter, and the duration of
the last bodies (:meth:`~RTThread.stats`, :attr:`~RTThread.durations`).

Python threads share the GIL: a real-time body should spend its time in code that releases it
(stream waits, Numba ``nogil`` kernels, numpy). Run each real-time component in its own process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from dao.errors import DaoError
from dao.runtime.timing import percentiles

__all__ = [
    "RTThread",
    "ThreadTable",
    "SignalTable",
    "ThreadStateError",
    "set_realtime",
]

log = logging.getLogger("dao.runtime.threads")

_fifo_warned = False
_fifo_warn_lock = threading.Lock()


class ThreadStateError(DaoError, RuntimeError):
    """A lifecycle call came in the wrong order (e.g. ``start`` before ``spawn``)."""


def set_realtime(
    tid: int = 0, core: int | Iterable[int] | None = None, priority: int | None = None
) -> dict[str, Any]:
    """Pin a thread to core(s) and give it ``SCHED_FIFO`` priority, as far as permitted.

    Parameters
    ----------
    tid : int
        Native thread id (``threading.get_native_id()``), 0 for the calling thread.
    core : int or iterable of int, optional
        CPU core(s) to pin to; ``None`` leaves the affinity alone.
    priority : int, optional
        ``SCHED_FIFO`` priority, 1 (lowest) to 99; ``None`` keeps the normal scheduler.
        When the system refuses (no ``CAP_SYS_NICE``, no rtprio limit) one warning is logged
        per process and the thread runs with the normal scheduler.

    Returns
    -------
    dict
        ``{"affinity": set or None, "fifo": bool}``, what was actually applied.
    """
    global _fifo_warned
    out: dict[str, Any] = {"affinity": None, "fifo": False}
    if core is not None and hasattr(os, "sched_setaffinity"):
        cores = {core} if isinstance(core, int) else set(core)
        try:
            os.sched_setaffinity(tid, cores)
            out["affinity"] = os.sched_getaffinity(tid)
        except OSError as exc:
            log.warning("could not pin thread %d to core(s) %s: %s", tid, sorted(cores), exc)
    if priority is not None:
        prio = max(1, min(99, int(priority)))
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(prio))
            out["fifo"] = True
        except (OSError, AttributeError) as exc:
            with _fifo_warn_lock:
                if not _fifo_warned:
                    _fifo_warned = True
                    log.warning(
                        "SCHED_FIFO refused (%s): real-time threads run with the normal "
                        "scheduler. Grant CAP_SYS_NICE or an rtprio limit (ulimit -r) to get "
                        "real-time priority. (said once per process)",
                        exc,
                    )
    return out


class RTThread:
    """A real-time loop thread with the Durham lifecycle and loop timing.

    Subclass and override :meth:`body` (and the ``on_*`` hooks), or pass callables.

    Parameters
    ----------
    name : str
        Thread name (shown in ``ps -L``, logs and the thread table).
    body : callable, optional
        ``body()`` called repeatedly while started (overrides the :meth:`body` method).
    core : int, optional
        CPU core to pin to.
    priority : int, optional
        ``SCHED_FIFO`` priority 1-99 (``None``: normal scheduler).
    period : float, optional
        Loop period in seconds. The body is started on an absolute schedule (no drift); the
        last ``spin`` seconds before each deadline are busy-waited for precision. ``None``:
        the body runs back to back (it paces itself, e.g. waiting on a stream).
    spin : float
        Busy-wait margin before each deadline, in seconds (0 to always sleep).
    history : int
        Number of loop iterations whose timing is kept.
    on_spawn, on_start, on_stop, on_exit : callable, optional
        Once-on hooks (override the methods of the same name).
    on_error : callable, optional
        ``on_error(exc)`` when ``body`` raises; the thread then stops (back to waiting).
        Default: log the exception.
    """

    def __init__(
        self,
        name: str,
        body: Callable[[], Any] | None = None,
        *,
        core: int | None = None,
        priority: int | None = None,
        period: float | None = None,
        spin: float = 0.0,
        history: int = 1000,
        on_spawn: Callable[[], Any] | None = None,
        on_start: Callable[[], Any] | None = None,
        on_stop: Callable[[], Any] | None = None,
        on_exit: Callable[[], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ):
        self.name = name
        self.core = core
        self.priority = priority
        self.period = period
        self.spin = float(spin)
        for hook, fn in (
            ("body", body),
            ("on_spawn", on_spawn),
            ("on_start", on_start),
            ("on_stop", on_stop),
            ("on_exit", on_exit),
            ("on_error", on_error),
        ):
            if fn is not None:
                setattr(self, hook, fn)
        self._cond = threading.Condition()
        self._run_requested = False
        self._exit_requested = False
        self._running = False
        self._thread: threading.Thread | None = None
        self.native_id: int | None = None
        self.realtime: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.iterations = 0
        self._n = int(history)
        self._starts = np.zeros(self._n)
        self._durations = np.zeros(self._n)
        self._idx = 0

    # -- hooks (override) ------------------------------------------------------------------
    def body(self) -> None:
        """One iteration of the loop (override). Default: nothing when paced by ``period``,
        else sleep 1 ms (never spin a core by default)."""
        if self.period is None:
            time.sleep(1e-3)

    def on_spawn(self) -> None:
        """Called once in the new thread after pinning, before waiting for :meth:`start`."""

    def on_start(self) -> None:
        """Called once in the thread at each :meth:`start`, before the first body."""

    def on_stop(self) -> None:
        """Called once in the thread at each :meth:`stop` (or exit while running)."""

    def on_exit(self) -> None:
        """Called once in the thread just before it ends."""

    def on_error(self, exc: BaseException) -> None:
        """Called in the thread when :meth:`body` raises; the thread then stops."""
        log.error("thread %s: body raised %r; thread stopped", self.name, exc, exc_info=exc)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"new"``, ``"waiting"`` (spawned or stopped), ``"running"`` or ``"exited"``."""
        if self._thread is None:
            return "new"
        if not self._thread.is_alive():
            return "exited"
        return "running" if self._running else "waiting"

    @property
    def run_requested(self) -> bool:
        """The body is to run: :meth:`start` was called and no :meth:`stop` or :meth:`exit`
        since (a body checks it to leave a long wait early)."""
        return self._run_requested

    @property
    def in_thread(self) -> bool:
        """Whether the caller is this thread itself."""
        return self._thread is not None and threading.current_thread() is self._thread

    def spawn(self, timeout: float = 5.0) -> RTThread:
        """Create the OS thread, pin it and set its priority, run ``on_spawn``; it then waits.

        Returns once ``on_spawn`` has run (or ``timeout`` seconds passed).
        """
        if self._thread is not None:
            raise ThreadStateError(f"thread {self.name!r} already spawned ({self.state})")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name=self.name, daemon=True
        )
        self._thread.start()
        ready.wait(timeout)
        return self

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) the repeated body."""
        if self._thread is None:
            raise ThreadStateError(f"thread {self.name!r}: start() before spawn()")
        if not self._thread.is_alive():
            raise ThreadStateError(f"thread {self.name!r} has exited; spawn a new one")
        with self._cond:
            self._run_requested = True
            self._cond.notify_all()

    def stop(self, wait: bool = True, timeout: float = 5.0) -> bool:
        """Stop the body (the thread goes back to waiting, ``on_stop`` runs once).

        Parameters
        ----------
        wait : bool
            Wait until the current body has finished and ``on_stop`` has run (ignored when
            called from the thread itself).
        timeout : float
            Longest wait, in seconds.

        Returns
        -------
        bool
            True if the thread is no longer running the body.
        """
        with self._cond:
            self._run_requested = False
            self._cond.notify_all()
            if wait and not self.in_thread:
                self._cond.wait_for(lambda: not self._running, timeout)
            return not self._running or self.in_thread

    def exit(self, wait: bool = True, timeout: float = 5.0) -> None:
        """Ask the thread to leave (``on_stop`` if running, then ``on_exit``); see :meth:`join`."""
        with self._cond:
            self._run_requested = False
            self._exit_requested = True
            self._cond.notify_all()
        if wait and not self.in_thread:
            self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the OS thread to end; True if it has."""
        if self._thread is None:
            return True
        if not self.in_thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ------------------------------------------------------------------------
    def _main(self, ready: threading.Event) -> None:
        self.native_id = threading.get_native_id()
        try:
            self.realtime = set_realtime(0, self.core, self.priority)
            self.on_spawn()
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            self._safe(self.on_error, exc)
            ready.set()
            self._safe(self.on_exit)
            return
        ready.set()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._run_requested or self._exit_requested)
                    if self._exit_requested:
                        break
                    self._running = True
                self._loop()
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()
            self._safe(self.on_exit)

    def _safe(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            log.exception("thread %s: %s raised", self.name, getattr(fn, "__name__", fn))

    def _loop(self) -> None:
        try:
            self.on_start()
        except Exception as exc:  # noqa: BLE001
            self.error = exc
            self._safe(self.on_error, exc)
            self._run_requested = False
            return
        perf = time.perf_counter
        next_t = perf()
        while self._run_requested:
            period = self.period  # read each iteration: may be changed while running
            if period is not None:
                now = perf()
                if next_t - now > self.spin:
                    time.sleep(next_t - now - self.spin)
                while perf() < next_t:
                    pass
            t0 = perf()
            try:
                self.body()
            except Exception as exc:  # noqa: BLE001
                self.error = exc
                self._run_requested = False
                self._safe(self.on_error, exc)
                break
            t1 = perf()
            i = self._idx % self._n
            self._starts[i] = t0
            self._durations[i] = t1 - t0
            self._idx += 1
            self.iterations += 1
            if period is not None:
                next_t += period
                if next_t < t1 - period:  # fell behind by more than a period: re-phase
                    next_t = t1
        self._safe(self.on_stop)

    # -- timing ----------------------------------------------------------------------------
    def _ordered(self, arr: np.ndarray) -> np.ndarray:
        n = min(self._idx, self._n)
        if self._idx <= self._n:
            return arr[:n].copy()
        k = self._idx % self._n
        return np.concatenate([arr[k:], arr[:k]])

    @property
    def durations(self) -> np.ndarray:
        """Durations of the last bodies, oldest first, in seconds."""
        return self._ordered(self._durations)

    @property
    def periods(self) -> np.ndarray:
        """Time between successive body starts (last iterations), in seconds."""
        return np.diff(self._ordered(self._starts))

    def stats(self) -> dict[str, Any]:
        """Loop timing over the kept history.

        Returns
        -------
        dict
            ``iterations``; ``period_mean``, ``period_std`` (the jitter), ``period_p50``,
            ``period_p99``, ``period_max``, ``jitter_max`` (largest deviation from the nominal
            period, or from the mean when free-running), ``duration_mean``, ``duration_p99``,
            ``duration_last``, all in seconds; ``fifo`` and ``affinity`` as applied.
        """

        per = self.periods
        dur = self.durations
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "iterations": self.iterations,
            "fifo": bool(self.realtime.get("fifo")),
            "affinity": sorted(self.realtime.get("affinity") or []),
        }
        if per.size:
            ref = self.period if self.period is not None else float(per.mean())
            p50, p99 = percentiles(per, (50, 99))
            out.update(
                period_mean=float(per.mean()),
                period_std=float(per.std()),
                period_p50=float(p50),
                period_p99=float(p99),
                period_max=float(per.max()),
                jitter_max=float(np.abs(per - ref).max()),
            )
        if dur.size:
            out.update(
                duration_mean=float(dur.mean()),
                duration_p99=percentiles(dur, (99,))[0],
                duration_last=float(dur[-1]),
            )
        return out

    def reset_stats(self) -> None:
        """Forget the kept timing history."""
        self._idx = 0

    def __repr__(self) -> str:
        return f"<RTThread {self.name!r} {self.state} core={self.core} prio={self.priority}>"


class ThreadTable:
    """A named set of :class:`RTThread` driven together.

    Examples
    --------
    >>> table = ThreadTable([RTThread("a", period=1e-3), RTThread("b", period=2e-3)])
    >>> table.spawn(); table.start(); table.stop(); table.exit()
    >>> sorted(table.names)
    ['a', 'b']
    """

    def __init__(self, threads: Iterable[RTThread] = ()):
        self._threads: dict[str, RTThread] = {}
        for t in threads:
            self.add(t)

    def add(self, thread: RTThread) -> RTThread:
        """Add a thread (names are unique)."""
        if thread.name in self._threads:
            raise ValueError(f"a thread named {thread.name!r} is already in the table")
        self._threads[thread.name] = thread
        return thread

    @property
    def names(self) -> list[str]:
        return list(self._threads)

    def __getitem__(self, name: str) -> RTThread:
        return self._threads[name]

    def __iter__(self):
        return iter(self._threads.values())

    def __len__(self) -> int:
        return len(self._threads)

    def spawn(self) -> None:
        """Spawn every thread not yet spawned."""
        for t in self:
            if t.state == "new":
                t.spawn()

    def start(self) -> None:
        """Start every thread."""
        for t in self:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread (ask all first, then wait for each)."""
        for t in self:
            t.stop(wait=False)
        for t in self:
            t.stop(wait=True, timeout=timeout)

    def exit(self, timeout: float = 5.0) -> None:
        """Make every thread exit and join them."""
        for t in self:
            t.exit(wait=False)
        for t in self:
            t.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        return all(t.join(timeout) for t in self)

    def stats(self) -> list[dict[str, Any]]:
        """One :meth:`RTThread.stats` dict per thread."""
        return [t.stats() for t in self]


class SignalTable:
    """Numbered signals that threads hand each other (send, check, wait, reset).

    A signal is a counter: :meth:`send` raises it, :meth:`wait` consumes one (blocking), and
    :meth:`check` tells without blocking whether one is pending.

    Parameters
    ----------
    n : int
        Number of signals (indices ``0 .. n-1``).
    """

    def __init__(self, n: int = 16):
        self._count = [0] * int(n)
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._count)

    def send(self, index: int) -> None:
        """Raise signal ``index`` and wake its waiters."""
        with self._cond:
            self._count[index] += 1
            self._cond.notify_all()

    def check(self, index: int, consume: bool = False) -> bool:
        """Whether signal ``index`` is pending (consumed if ``consume``), without blocking."""
        with self._cond:
            if self._count[index] > 0:
                if consume:
                    self._count[index] -= 1
                return True
            return False

    def wait(self, index: int, timeout: float | None = None, spin: bool = False) -> bool:
        """Wait for signal ``index`` and consume it.

        Parameters
        ----------
        timeout : float, optional
            Longest wait in seconds (``None``: forever).
        spin : bool
            Busy-wait (lowest latency, burns a core) instead of sleeping on a condition.

        Returns
        -------
        bool
            True if a signal was consumed, False on timeout.
        """
        if spin:
            end = None if timeout is None else time.perf_counter() + timeout
            while True:
                if self._count[index] > 0 and self.check(index, consume=True):
                    return True
                if end is not None and time.perf_counter() > end:
                    return False
        with self._cond:
            if not self._cond.wait_for(lambda: self._count[index] > 0, timeout):
                return False
            self._count[index] -= 1
            return True

    def reset(self, index: int | None = None) -> None:
        """Clear signal ``index`` (all signals if ``None``)."""
        with self._cond:
            if index is None:
                self._count = [0] * len(self._count)
            else:
                self._count[index] = 0

    def pending(self, index: int) -> int:
        """Number of pending (sent, not yet consumed) signals at ``index``."""
        return self._count[index]

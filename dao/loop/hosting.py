"""Running a control law in the loop, and handing the DM command over between two frames.

Two places run a law: the loop's controller component (its own process) and a thread of
this process (:class:`LocalController`: a notebook kernel prototyping a law). Both hold a
:class:`LawHost`, which writes the ``dm_command`` of the frames in its active range
``[first, until)`` and nothing else. A handover is frame-exact:

1. the host in charge is asked to release from frame ``requested``: it answers the frame
   ``H = max(requested, last frame it saw + 1)`` and will write every frame before ``H`` and
   none from ``H`` on (decided under its lock, so no frame is written twice);
2. the other host acquires from ``H``: it writes every frame from ``H`` on; if it has
   already seen frames from ``H`` (they came while the handover was being agreed) it
   processes them at once from the ``slopes`` FIFO, so no frame is left without a command.

The incoming law starts from the command of frame ``H - 1`` (read from the ``dm_command``
stream; :meth:`dao.loop.ControlLaw.start`): the swap is bumpless. The bench is lock-step
(it waits for the command of each frame), so during a handover the loop waits a few
milliseconds at most; the DM command history shows every frame once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import numpy as np

from dao.errors import DaoError, StreamTimeout
from dao.runtime.timing import summary

__all__ = ["LawHost", "LocalController", "NEVER"]

#: A frame number no loop reaches: the end of an open active range.
NEVER = np.iinfo(np.int64).max


class LawHost:
    """A control law writing ``dm_command`` for the frames of its active range.

    Parameters
    ----------
    law : dao.loop.ControlLaw
        The law run.
    dm_command : dao.shm
        The command stream (written; also read for the bumpless start of a handover).
    slopes : dao.shm
        The slopes stream (read for a catch-up after a handover, from its FIFO history).
    active : bool
        In charge from the first frame (True), or waiting for :meth:`acquire`.
    seed_timeout : float
        Longest wait, in seconds, for the command of the frame before a handover.
    fallback : dao.loop.ControlLaw, optional
        The law that takes over, from the same frame, when another law raises (the
        failure is kept in :attr:`failure`); without one, the exception propagates.

    Attributes
    ----------
    law : dao.loop.ControlLaw
    command : ndarray, float32, shape (n_actuators,)
        The last command written.
    log : list of (int, str)
        ``(frame, what)``: from which frame each law ran, and the handovers.
    failure : tuple of (int, str, BaseException) or None
        The last law that raised: the frame, the law, the exception.
    """

    def __init__(self, law: Any, dm_command: Any, slopes: Any, *, active: bool = True,
                 seed_timeout: float = 0.5, fallback: Any = None) -> None:
        self.law = law
        self.fallback = fallback
        self.failure: tuple[int, str, BaseException] | None = None
        self.out = dm_command
        self.slopes = slopes
        n = int(np.prod(dm_command.shape))
        self.command = np.zeros(n, np.float32)
        self._view = self.command.reshape(dm_command.shape)
        self._seed_buf = np.zeros(dm_command.shape, np.float32)
        self.lock = threading.Lock()
        self.first = 0 if active else NEVER
        self.until = NEVER
        self.last_frame = -1
        self.seed_timeout = float(seed_timeout)
        self._seed = False  # read the command of frame first - 1 before the next step
        self._pending: Any = None  # a law to swap in before the next step
        self.written = 0
        self.log: list[tuple[int, str]] = []
        law.start(self.command)

    @property
    def active(self) -> bool:
        """In charge of the frames to come."""
        return self.first != NEVER and self.until == NEVER

    def process(self, slopes: np.ndarray, frame: int) -> bool:
        """One frame's slopes (flat float32): write its command if the frame is ours.

        Returns whether a command was written.
        """
        with self.lock:
            if frame > self.last_frame:
                self.last_frame = frame
            if not self.first <= frame < self.until:
                return False
            self._step(slopes, frame)
            return True

    def _step(self, slopes: np.ndarray, frame: int) -> None:
        if self._seed:
            self._seed = False
            self._read_command(frame - 1)
            self.law.start(self.command)
        if self._pending is not None:
            law, self._pending = self._pending, None
            try:
                law.start(self.command)
            except Exception as exc:  # noqa: BLE001 - a law that cannot start is not swapped in
                if self.fallback is None or law is self.fallback:
                    raise
                self._failed(frame, law, exc)
            else:
                self.law = law
                self.log.append((frame, law.describe()))
        law = self.law
        if law is self.fallback or self.fallback is None:
            law.step(slopes, self.command)
        else:
            try:
                law.step(slopes, self.command)
            except Exception as exc:  # noqa: BLE001 - a prototype failed: the stock law goes on
                self._failed(frame, law, exc)
                self.law.step(slopes, self.command)
        self.out.set_data(self._view, cnt2=frame)
        self.written += 1

    def _failed(self, frame: int, law: Any, exc: BaseException) -> None:
        """``law`` raised at ``frame``: the fallback law takes over from the command of the
        frame before (the command may be half written)."""
        self.failure = (frame, law.describe(), exc)
        self._read_command(frame - 1)
        self.law = self.fallback
        self.law.start(self.command)
        self.log.append((frame, f"{self.law.describe()} ({law.describe()} raised "
                                f"{type(exc).__name__}: {exc})"))

    def _read_command(self, frame: int) -> None:
        """Load the command written for ``frame`` (or the newest before it) into
        :attr:`command`."""
        out = self.out
        deadline = time.monotonic() + self.seed_timeout
        while True:
            if out.get_counter() > 0:
                out.get_data(out=self._seed_buf)
                if out.last_read.cnt2 >= frame:
                    break
            if time.monotonic() > deadline:
                break  # a late frame: go on from the newest command there is
            time.sleep(2e-4)
        self.command[:] = self._seed_buf.reshape(-1)

    def swap(self, law: Any) -> None:
        """Run ``law`` from the next frame on (bumpless: it starts from the command)."""
        with self.lock:
            self._pending = law

    def reset(self) -> None:
        """Zero the command and the law's state (the next frame starts from a flat mirror)."""
        with self.lock:
            self.command[:] = 0.0
            self._seed = False
            (self._pending or self.law).start(self.command)

    def release(self, requested: int) -> int:
        """Write no frame from ``H = max(requested, last seen + 1)`` on; return ``H``.

        Raises
        ------
        RuntimeError
            This host is not in charge.
        """
        with self.lock:
            if not self.active:
                raise RuntimeError("this controller is not in charge of the DM command: "
                                   "nothing to release")
            h = max(int(requested), self.last_frame + 1, self.first)
            self.until = h
            self.log.append((h, "released"))
            return h

    def acquire(self, frame: int) -> int:
        """Write every frame from ``frame`` on, starting from the command of ``frame - 1``.

        Frames from ``frame`` already seen are processed now, from the slopes FIFO. Returns
        how many were.

        Raises
        ------
        RuntimeError
            Such a frame is no longer in the slopes FIFO.
        """
        with self.lock:
            self.first, self.until = int(frame), NEVER
            self._seed = True
            self.log.append((int(frame), f"acquired ({self.law.describe()})"))
            if self.last_frame < frame:
                return 0
            return self._catch_up(int(frame), self.last_frame)

    def _catch_up(self, first: int, last: int) -> int:
        s = self.slopes
        n = min(s.frames_available, last - first + 64)
        hist = s.get_history(n, meta=True)
        done = 0
        for f in range(first, last + 1):
            idx = np.flatnonzero(hist.cnt2 == f)
            if idx.size == 0:
                raise RuntimeError(f"the slopes of frame {f} are no longer in the slopes "
                                   "FIFO: the handover came too late")
            self._step(np.ascontiguousarray(hist.data[idx[-1]].reshape(-1)), f)
            done += 1
        return done


class LocalController:
    """A control law run by a thread of this process (a notebook kernel), in the loop.

    The thread follows the ``slopes`` stream in order (its own semaphore, the FIFO cursor:
    no frame missed) and writes ``dm_command`` for the frames its :class:`LawHost` is in
    charge of. The waits release the GIL; a law compiled with ``numba.njit(nogil=True)``
    runs without it, so cells go on running meanwhile.

    Parameters
    ----------
    law : dao.loop.ControlLaw
    slopes, dm_command : str
        The loop's stream names (or paths).
    on_error : callable, optional
        ``on_error(frame, exc)`` called by the thread when the law raises at ``frame``
        (that frame has no command yet); the thread then stops processing.
    priority : int
        SCHED_FIFO priority of the thread (0: the normal scheduler).

    Attributes
    ----------
    host : LawHost
    error : BaseException or None
        What the law raised.
    handed_back : threading.Event
        Set once ``on_error`` has returned (the thread has ended).
    """

    def __init__(self, law: Any, slopes: str, dm_command: str, *, on_error=None,
                 priority: int = 0) -> None:
        from dao.streams import shm

        self._slopes = shm(slopes)
        self._sem = self._slopes.claim_semaphore()
        self._slopes.reset_tail()
        self._out = shm(dm_command)
        self.host = LawHost(law, self._out, self._slopes, active=False)
        self._buf = np.zeros(self._slopes.shape, np.float32)
        self._flat = self._buf.reshape(-1)
        self._times = np.zeros(4096, np.int64)
        self._n = 0
        self.error: BaseException | None = None
        self.handed_back = threading.Event()
        self._on_error = on_error
        self._priority = int(priority)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="dao-local-controller",
                                        daemon=True)
        self._thread.start()

    @property
    def law(self) -> Any:
        """The law run."""
        return self.host.law

    @property
    def alive(self) -> bool:
        """The thread runs."""
        return self._thread.is_alive()

    def _main(self) -> None:
        if self._priority > 0:
            from dao.runtime.threads import set_realtime

            with contextlib.suppress(OSError, DaoError):
                set_realtime(self._priority)
        s, host, buf = self._slopes, self.host, self._buf
        ok = (s.DAO_SUCCESS, s.DAO_OVERWRITE)
        while not self._stop.is_set():
            try:
                status, _ = s.get_data_next(wait=True, timeout=0.05, out=buf)
            except (StreamTimeout, DaoError):
                if self._stop.is_set():
                    return
                continue
            if status not in ok:
                continue
            frame = s.last_read.cnt2
            t0 = time.perf_counter_ns()
            try:
                wrote = host.process(self._flat, frame)
            except Exception as exc:  # noqa: BLE001 - any error of the law: hand it back
                self.error = exc
                with host.lock:
                    host.until = frame  # this frame has no command: the stock one writes it
                try:
                    if self._on_error is not None:
                        self._on_error(frame, exc)
                finally:
                    self.handed_back.set()
                return
            if wrote:
                self._times[self._n % self._times.size] = time.perf_counter_ns() - t0
                self._n += 1

    def stats(self) -> dict[str, Any]:
        """Frames written and the p50/p99 of the law's step plus the write (s)."""
        n = min(self._n, self._times.size)
        return {"frames": self.host.written,
                **summary("processing", self._times[:n] * 1e-9)}

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread and close the streams (after the law was released)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        for st in (self._slopes, self._out):
            with contextlib.suppress(Exception):
                st.close()

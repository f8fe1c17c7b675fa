"""The pump: one background thread per kernel that feeds every live widget.

Widgets that show something live (:class:`~dao.widgets.StreamView`, the panels, the
dashboard) do not run threads of their own. Each registers with the kernel's :class:`Pump`,
whose thread calls them in turn, about a hundred times a second, and gives each the number of
messages it may send now. The pump keeps all widgets of the kernel together at or under
:attr:`Pump.max_rate` messages per second (300 by default): JupyterLab's server drops IOPub
messages above 1000 per second (averaged over 3 s), widget state updates and custom messages
included, and a background pump never lets the kernel go idle to reset that count.

A source is any object with a ``pump_tick(now, budget)`` method (:class:`PumpSource`): it sends
at most ``budget`` messages and returns how many it sent. Sources that have something to send
are served round-robin, so a busy view cannot starve the others. The pump thread stops when its
last source is removed (a closed widget removes itself) and starts again with the next one.
The cells of the notebook run meanwhile: the thread sleeps between ticks and the widgets' work
in it is a few numpy operations per message.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Pump", "PumpSource", "get_pump", "MAX_RATE"]

log = logging.getLogger(__name__)

#: Messages per second that all widgets of a kernel send together, at most.
MAX_RATE = 300.0


@runtime_checkable
class PumpSource(Protocol):
    """What the pump feeds: a widget with something to send now and then."""

    def pump_tick(self, now: float, budget: int) -> int:
        """Send what is due, at most ``budget`` messages; return how many were sent.

        Parameters
        ----------
        now : float
            ``time.monotonic()`` of this tick, in seconds.
        budget : int
            Messages this source may send in this tick (at least 1).
        """


class Pump:
    """One thread that feeds the live widgets of a kernel, under a message-rate cap.

    Parameters
    ----------
    max_rate : float
        Messages per second that all sources together may send (default :data:`MAX_RATE`).
    tick : float
        Seconds between two rounds of the sources.
    burst : float
        Seconds of ``max_rate`` that may be sent at once after a quiet spell.

    Notes
    -----
    Use :func:`get_pump` for the kernel's pump; widgets register themselves.
    """

    def __init__(self, max_rate: float = MAX_RATE, tick: float = 0.01,
                 burst: float = 0.1) -> None:
        if not max_rate > 0 or not tick > 0 or not burst > 0:
            raise ValueError("max_rate, tick and burst must be positive")
        self.max_rate = float(max_rate)
        self.tick = float(tick)
        self.burst = float(burst)
        self._sources: list[PumpSource] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._next = 0  # round-robin start
        self._tokens = self.max_rate * self.burst
        self._sent = 0
        self._errors = 0
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._last_error: BaseException | None = None

    # -- sources ---------------------------------------------------------------------------
    def add(self, source: PumpSource) -> None:
        """Feed ``source`` from now on (starts the thread if it is not running)."""
        if not callable(getattr(source, "pump_tick", None)):
            raise TypeError(f"{type(source).__name__} has no pump_tick(now, budget) method: "
                            "only dao widgets (PumpSource) can be fed by the pump")
        with self._lock:
            if source not in self._sources:
                self._sources.append(source)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._main, name="dao-widgets-pump",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def remove(self, source: PumpSource) -> None:
        """Stop feeding ``source`` (the thread ends after its last source)."""
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)
        self._wake.set()

    @property
    def sources(self) -> list[PumpSource]:
        """The sources fed now."""
        with self._lock:
            return list(self._sources)

    @property
    def running(self) -> bool:
        """The pump's thread is alive."""
        t = self._thread
        return t is not None and t.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Remove every source and wait for the thread to end."""
        with self._lock:
            self._sources.clear()
            t = self._thread
        self._wake.set()
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    # -- statistics ------------------------------------------------------------------------
    def rate(self, window: float = 3.0) -> float:
        """Messages per second sent by all sources over the last ``window`` seconds."""
        now = time.monotonic()
        with self._lock:
            n = sum(k for t, k in self._window if now - t <= window)
        return n / window

    def stats(self) -> dict[str, float | int]:
        """``messages`` (sent so far), ``rate_hz`` (over 3 s), ``sources``, ``errors``."""
        return {"messages": self._sent, "rate_hz": self.rate(), "sources": len(self.sources),
                "errors": self._errors}

    def __repr__(self) -> str:
        s = self.stats()
        return (f"<dao.widgets.Pump {'running' if self.running else 'stopped'}: "
                f"{s['sources']} sources, {s['rate_hz']:.0f} msg/s of {self.max_rate:g}>")

    # -- the thread ------------------------------------------------------------------------
    def _main(self) -> None:
        last = time.monotonic()
        while True:
            with self._lock:
                sources = list(self._sources)
                if not sources:
                    self._thread = None
                    return
            now = time.monotonic()
            cap = self.max_rate * self.burst
            self._tokens = min(cap, self._tokens + (now - last) * self.max_rate)
            last = now
            sent = self._round(sources, now)
            if sent:
                self._sent += sent
                with self._lock:
                    self._window.append((now, sent))
                    while self._window and now - self._window[0][0] > 10.0:
                        self._window.popleft()
            self._wake.wait(self.tick)
            self._wake.clear()

    def _round(self, sources: list[PumpSource], now: float) -> int:
        sent = 0
        n = len(sources)
        start = self._next % n
        self._next = start + 1
        for i in range(n):
            budget = int(self._tokens)
            if budget < 1:
                break
            src = sources[(start + i) % n]
            try:
                k = int(src.pump_tick(now, budget))
            except Exception as exc:  # a broken widget must not stop the others
                self._errors += 1
                self._last_error = exc
                log.exception("dao widget %r failed in the pump; it is no longer fed", src)
                self.remove(src)
                failed = getattr(src, "pump_failed", None)
                if callable(failed):
                    try:
                        failed(exc)
                    except Exception:
                        log.exception("reporting the failure of %r failed", src)
                continue
            k = max(0, min(k, budget))
            self._tokens -= k
            sent += k
        return sent


_PUMP: Pump | None = None
_PUMP_LOCK = threading.Lock()


def get_pump() -> Pump:
    """The kernel's pump (made on first use)."""
    global _PUMP
    with _PUMP_LOCK:
        if _PUMP is None:
            _PUMP = Pump()
        return _PUMP

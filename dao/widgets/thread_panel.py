"""A panel for real-time threads: start, stop, period, measured rate, jitter and body time.

:class:`ThreadPanel` shows one row per :class:`~dao.runtime.threads.RTThread` of this process
(one thread, a list of them, or a :class:`~dao.runtime.threads.ThreadTable`): its name and
lifecycle state, Spawn/Start/Stop buttons enabled only when legal, its period, and what
:meth:`RTThread.stats() <dao.runtime.threads.RTThread.stats>` measures. The threads are in
this process, so the kernel's :class:`~dao.widgets.pump.Pump` reads them directly, a few times
a second (``refresh``), and sends only what changed, within its message budget.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import html
import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as w

from dao.runtime.threads import RTThread
from dao.widgets.component_panel import Wanted, fmt_seconds, sync_widgets
from dao.widgets.pump import Pump, get_pump

__all__ = ["ThreadPanel", "ThreadRow"]

log = logging.getLogger(__name__)

_STATE_COLOURS = {"new": "#777777", "waiting": "#268bd2", "running": "#2aa02a",
                  "exited": "#444444"}
_NOTE_COLOURS = {"ok": "#2a7f2a", "refused": "#d62728", "busy": "#777777", "info": "#777777"}
#: The thread states from which each button's action is legal.
ACTIONS = {"Spawn": ("new",), "Start": ("waiting",), "Stop": ("running",)}


def _period_ms(period: float | None) -> float:
    """The period control's value: milliseconds, 0 for a free-running thread."""
    return 0.0 if period is None else round(float(period) * 1e3, 9)


def _note(kind: str, text: str) -> str:
    if not text:
        return ""
    return (f'<span style="color:{_NOTE_COLOURS.get(kind, "#777777")}">'
            f"{html.escape(text)}</span>")


@dataclass
class ThreadRow:
    """The widgets of one thread in a :class:`ThreadPanel`."""

    thread: RTThread
    title: w.HTML
    state_label: w.HTML
    buttons: dict[str, w.Button]
    period: w.FloatText
    note: w.HTML
    stats_label: w.HTML
    box: w.HBox
    #: The last reading: ``state``, ``iterations``, ``rate_hz`` (measured between readings),
    #: ``stats`` (:meth:`RTThread.stats`), ``period_ms``, ``error``.
    reading: dict[str, Any] = field(default_factory=dict)

    @property
    def widgets(self) -> list[w.Widget]:
        """Every widget of the row (the row's box last)."""
        return [*self.box.children, self.note, self.stats_label, self.box]


class ThreadPanel(w.VBox):
    """A panel driving and watching real-time threads of this process, for notebooks.

    Parameters
    ----------
    threads : RTThread or iterable of RTThread or ThreadTable
        The threads (names must be unique). Threads added to a table later are not shown:
        make a new panel.
    pump : Pump, optional
        The pump that updates the panel (default the kernel's, :func:`dao.widgets.get_pump`).
    refresh : float
        Seconds between two readings of the threads' statistics (at least 0.25: at most
        4 readings a second).
    timeout : float
        Longest wait for a thread to stop (Stop) or spawn (Spawn), in seconds; the actions run
        in a worker thread of the panel, never in the kernel's.

    Attributes
    ----------
    rows : dict of str to ThreadRow
        The widgets of each thread, by thread name (``rows[name].buttons["Start"]``,
        ``rows[name].period``: the period in ms, 0 for free-running).
    messages : int
        Widget messages this panel has sent (each widget state change is one).

    Raises
    ------
    TypeError
        ``threads`` holds something that is not an :class:`RTThread`.
    ValueError
        No thread, or two threads with the same name.

    Examples
    --------
    >>> t = RTThread("tick", period=1e-3).spawn()       # doctest: +SKIP
    >>> panel = ThreadPanel(t)                          # doctest: +SKIP
    >>> panel.rows["tick"].buttons["Start"].click()     # doctest: +SKIP
    """

    def __init__(self, threads: RTThread | Iterable[RTThread], *, pump: Pump | None = None,
                 refresh: float = 0.25, timeout: float = 5.0) -> None:
        items = [threads] if isinstance(threads, RTThread) else list(threads)
        for t in items:
            if not isinstance(t, RTThread):
                raise TypeError(f"ThreadPanel shows dao.runtime.RTThread objects (one, a list or "
                                f"a ThreadTable), not {type(t).__name__}")
        if not items:
            raise ValueError("ThreadPanel needs at least one thread")
        names = [t.name for t in items]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"two threads are named {dup[0]!r}: give the threads unique names "
                             f"(duplicates: {dup})")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive (seconds), not {timeout!r}")
        self.threads: list[RTThread] = items
        self.refresh = max(0.25, float(refresh))
        self.timeout = float(timeout)
        self.messages = 0
        self._lock = threading.RLock()
        self._tick_lock = threading.Lock()
        self._closed = False
        self._touched = True
        self._left = False
        self._next_read = 0.0
        self._turn = 0
        self._applying: int | None = None
        self._busy: dict[str, str] = {}
        self._notes: dict[str, tuple[str, str]] = {}
        self._message: tuple[str, str] = ("info", "")
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="dao-thread-panel")
        self.rows: dict[str, ThreadRow] = {t.name: self._make_row(t) for t in items}
        self.message_label = w.HTML()
        header = w.HTML("<b>Real-time threads</b> <span style='color:#777'>(period in ms, "
                        "0: free-running; statistics over the kept history)</span>")
        self._header = header
        super().__init__(children=[header, *(r.box for r in self.rows.values()),
                                   self.message_label])
        self._pump = pump or get_pump()
        self._pump.add(self)

    def _make_row(self, t: RTThread) -> ThreadRow:
        buttons = {}
        for action, legal in ACTIONS.items():
            b = w.Button(description=action, disabled=True, layout=w.Layout(width="70px"),
                         tooltip=f"{action} {t.name} (legal when {' or '.join(legal)})")
            b.on_click(functools.partial(self._click, t.name, action))
            buttons[action] = b
        period = w.FloatText(value=_period_ms(t.period), description="period (ms)",
                             tooltip="loop period in milliseconds; 0: free-running (the body "
                                     "paces itself, e.g. waiting on a stream)",
                             style={"description_width": "80px"}, layout=w.Layout(width="170px"))
        period.observe(functools.partial(self._edited, t.name), names="value")
        title = w.HTML(f"<b>{html.escape(t.name)}</b>", layout=w.Layout(width="140px"))
        state = w.HTML(layout=w.Layout(width="80px"))
        note = w.HTML()
        stats = w.HTML()
        box = w.HBox([title, state, *buttons.values(), period, w.VBox([stats, note])])
        return ThreadRow(t, title, state, buttons, period, note, stats, box)

    # -- readings (pump thread) --------------------------------------------------------------
    def _read(self, now: float, full: bool = True) -> None:
        """Read each thread: its state, period and error; with ``full``, also its statistics
        and the rate since the previous full reading."""
        for row in self.rows.values():
            t = row.thread
            prev = row.reading
            err = t.error
            fresh = {"state": t.state, "period_ms": _period_ms(t.period),
                     "error": f"{type(err).__name__}: {err}" if err is not None else ""}
            if full or not prev:
                it = t.iterations
                rate = 0.0
                if prev and now > prev["at"] and fresh["state"] == "running":
                    rate = max(0, it - prev["iterations"]) / (now - prev["at"])
                fresh.update(at=now, iterations=it, rate_hz=rate, stats=t.stats())
                row.reading = fresh
            else:
                row.reading = {**prev, **fresh}

    def _stats_html(self, r: dict[str, Any]) -> str:
        s = r["stats"]
        parts = [f"{r['rate_hz']:.1f} Hz"]
        if "period_p50" in s:
            parts.append(f"period p50 {fmt_seconds(s['period_p50'])}, "
                         f"p99 {fmt_seconds(s['period_p99'])}")
            parts.append(f"jitter σ {fmt_seconds(s['period_std'])}, "
                         f"max {fmt_seconds(s['jitter_max'])}")
        if "duration_mean" in s:
            parts.append(f"body mean {fmt_seconds(s['duration_mean'])}, "
                         f"p99 {fmt_seconds(s['duration_p99'])}")
        parts.append(f"{r['iterations']} iterations")
        if s.get("fifo"):
            parts.append("SCHED_FIFO")
        if s.get("affinity"):
            parts.append(f"cores {s['affinity']}")
        return f"<span style='color:#444'>{html.escape(' · '.join(parts))}</span>"

    def _wanted(self) -> list[Wanted]:
        """What the widgets should show: states and buttons of every row first, then the
        periods and notes, then the statistics, starting with another row each time (so that,
        on a small budget, one busy row cannot keep the others' statistics from showing)."""
        first: list[Wanted] = []
        second: list[Wanted] = []
        stats: list[Wanted] = []
        with self._lock:
            for name, row in self.rows.items():
                r = row.reading
                state = r.get("state", "?")
                busy = self._busy.get(name)
                colour = _STATE_COLOURS.get(state, "#777777")
                badge = (f"<span style='background:{colour};color:white;padding:1px 6px;"
                         f"border-radius:3px'>{html.escape(state)}</span>")
                first.append((row.state_label, {"value": badge}))
                for action, legal in ACTIONS.items():
                    first.append((row.buttons[action],
                                  {"disabled": bool(busy) or state not in legal}))
                second.append((row.period, {"value": r.get("period_ms", 0.0)}))
                kind, text = self._notes.get(name, ("info", ""))
                if busy:
                    kind, text = "busy", f"{busy}…"
                elif r.get("error") and not text:
                    kind, text = "refused", f"body raised {r['error']}"
                second.append((row.note, {"value": _note(kind, text)}))
                stats.append((row.stats_label, {"value": self._stats_html(r)}))
            second.append((self.message_label, {"value": _note(*self._message)}))
        k = self._turn % len(stats)
        self._turn += 1
        return first + second + stats[k:] + stats[:k]

    def pump_tick(self, now: float, budget: int) -> int:
        """Read the threads (every ``refresh`` s, or at once after an action), show what
        changed (at most ``budget`` widget messages); return the messages sent."""
        with self._tick_lock:
            if self._closed:
                return 0
            due = now >= self._next_read
            if due or self._touched:
                self._touched = False
                if due:
                    self._next_read = now + self.refresh
                self._read(now, full=due)
            elif not self._left:
                return 0
            wanted = self._wanted()
            self._applying = threading.get_ident()
            try:
                sent, self._left = sync_widgets(wanted, budget)
            finally:
                self._applying = None
            self.messages += sent
            return sent

    def pump_failed(self, exc: BaseException) -> None:
        """Say in the panel that it stopped updating (the pump calls it)."""
        try:
            self.message_label.value = _note(
                "refused", f"the panel stopped updating: {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001
            log.exception("reporting a pump failure failed")

    # -- actions -----------------------------------------------------------------------------
    def _touch(self) -> None:
        self._touched = True  # read the threads again at the next tick

    def _click(self, name: str, action: str, _button: Any = None) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                if name in self._busy:
                    self._notes[name] = ("refused", f"{action} not done: {self._busy[name]} "
                                                    "is still going on")
                    self._touch()
                    return
                self._busy[name] = action
                self._notes.pop(name, None)
                self._touch()
            self._executor.submit(self._act, name, action)
        except Exception as exc:  # noqa: BLE001 - never into the widget's callback
            log.exception("click on %s %s", action, name)
            with self._lock:
                self._busy.pop(name, None)
                self._notes[name] = ("refused", f"{action} not done: {exc}")
                self._touch()

    def _act(self, name: str, action: str) -> None:
        t = self.rows[name].thread
        note = ("info", "")
        try:
            if action == "Spawn":
                t.spawn(timeout=self.timeout)
            elif action == "Start":
                t.start()
            else:
                if not t.stop(wait=True, timeout=self.timeout):
                    note = ("refused", f"still running after {self.timeout:g} s: its body "
                                       "has not returned")
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            note = ("refused", f"{action} refused: {exc}")
        with self._lock:
            self._busy.pop(name, None)
            self._notes[name] = note
            self._touch()

    def _edited(self, name: str, change: dict[str, Any]) -> None:
        if self._closed or self._applying == threading.get_ident():
            return
        try:
            t = self.rows[name].thread
            ms = change["new"]
            if _period_ms(t.period) == ms:
                return
            if not (isinstance(ms, int | float) and math.isfinite(ms) and ms >= 0):
                note = ("refused", f"{ms!r} ms refused: the period is a number of ms ≥ 0 "
                                   "(0: free-running)")
            else:
                want = None if ms == 0 else ms / 1e3
                t.period = want
                back = t.period
                if (back is None) != (want is None) or (
                        back is not None and want is not None
                        and abs(back - want) > 1e-12 + 1e-9 * abs(want)):
                    note = ("refused", f"not changed: {name} reads back "
                                       f"{'free-running' if back is None else fmt_seconds(back)}"
                                       " (its period is set by its owner)")
                else:
                    note = ("ok", "✓ read back " + ("free-running" if back is None
                                                     else fmt_seconds(back)))
        except Exception as exc:  # noqa: BLE001 - never into the widget's callback
            note = ("refused", f"period refused: {type(exc).__name__}: {exc}")
        with self._lock:
            self._notes[name] = note
            self._touch()

    # -- closing -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """The pump feeds this panel."""
        return not self._closed and self in self._pump.sources

    def close(self) -> None:
        """Leave the pump and close the widgets (the threads run on)."""
        if "_pump" not in self.__dict__:  # never finished its constructor (the GC's call)
            with contextlib.suppress(Exception):
                super().close()
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
        pump = getattr(self, "_pump", None)
        if pump is not None:
            pump.remove(self)
        with self._tick_lock:
            pass  # a tick in progress ends first
        self._executor.shutdown(wait=False, cancel_futures=True)
        for child in [*(c for r in self.rows.values() for c in r.widgets),
                      self.message_label, self._header]:
            for part in (getattr(child, "layout", None), getattr(child, "style", None)):
                if isinstance(part, w.Widget):
                    part.close()
            child.close()
        self.layout.close()
        super().close()

    def __repr__(self) -> str:
        states = ", ".join(f"{r.thread.name}: {r.thread.state}" for r in self.rows.values())
        return f"<ThreadPanel {states}{' (closed)' if self._closed else ''}>"


"""A panel for one component: its state, the legal events, parameters, errors, log and timing.

:class:`ComponentPanel` drives a component over the command protocol (a
:class:`~dao.runtime.command.ComponentClient`) and watches it through its events (an
:class:`~dao.runtime.events.EventSubscriber`), never by polling its command socket:

- the state, and one button per Durham event, enabled only for the events the state table
  (:data:`dao.runtime.state.TRANSITIONS`) allows from the current state;
- one control per published parameter, generated from the component's own description
  (``QUERY parameters``: type, bounds, choices, unit, doc, read-only); every write is sent with
  SETUP and then read back with QUERY and shown; a refused write shows the component's reason
  beside the control, and the control returns to the component's value;
- an array of more than :data:`SMALL_ARRAY` numbers (e.g. per-mode gains) is drawn as a small
  bar chart of value against index, with its bounds and a one-line summary, and edited with a
  text field that takes one number for all values, index assignments (``0:10 = 0.3; 5 = 0``)
  or a whole JSON list (see :func:`edit_array`);
- in Error, the reason (the traceback of a failed hook or ``process()``) and a Recover button;
- the iteration rate and the p50/p99 processing time of the heartbeat events;
- the last lines of the component's log, from the log bus (:mod:`dao.runtime.logbus`).

Commands run in a worker thread of the panel (one at a time, each bounded by the panel's
``timeout``): a click returns at once and the kernel never waits on a component. What the
panel shows is updated by the kernel's :class:`~dao.widgets.pump.Pump` only, within the
message budget it is given.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import html
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as w
import numpy as np

from dao.errors import DaoError
from dao.runtime.command import (
    CommandFailed,
    CommandTimeout,
    ComponentClient,
    normalize_address,
)
from dao.runtime.events import EventError, EventSubscriber, subscribe
from dao.runtime.state import TRANSITIONS, Event, parse_state
from dao.widgets.pump import Pump, get_pump

__all__ = ["ComponentPanel", "SMALL_ARRAY", "edit_array"]

log = logging.getLogger(__name__)

#: ``(widget, {trait: value})``: what a widget should show.
Wanted = tuple[w.Widget, dict[str, Any]]

_STATE_COLOURS = {"Off": "#777777", "Standby": "#b58900", "Idle": "#268bd2",
                  "Running": "#2aa02a", "Error": "#d62728"}
_NOTE_COLOURS = {"ok": "#2a7f2a", "refused": "#d62728", "busy": "#777777", "info": "#777777"}

#: Array parameters of at most this many numbers keep the JSON text control; longer ones are
#: drawn as a chart and edited by index (:func:`edit_array`).
SMALL_ARRAY = 8
#: The chart of an array parameter, in CSS pixels.
CHART_WIDTH, CHART_HEIGHT = 560, 130


# -- helpers shared with the thread panel ------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """Whether a widget showing ``a`` already shows ``b`` (NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable: different
        return False


def sync_widgets(wanted: Iterable[Wanted], budget: int) -> tuple[int, bool]:
    """Give the widgets the trait values wanted, at most ``budget`` widgets.

    Each widget whose state changes is one message to the browser (its changes are sent
    together, in one ``hold_sync`` block); widgets that already show what is wanted cost
    nothing.

    Parameters
    ----------
    wanted : iterable of (widget, dict)
        The widgets and the trait values they should have, most important first.
    budget : int
        Messages that may be sent now.

    Returns
    -------
    sent : int
        Messages sent (widgets changed), at most ``budget``.
    left : bool
        Some widget still differs from what is wanted (to do at the next tick).
    """
    sent = 0
    for widget, traits in wanted:
        diff = {k: v for k, v in traits.items() if not _same(getattr(widget, k), v)}
        if not diff:
            continue
        if sent >= budget:
            return sent, True
        with widget.hold_sync():
            for k, v in diff.items():
                try:
                    setattr(widget, k, v)
                except Exception as exc:  # noqa: BLE001 - a value the widget refuses
                    log.debug("%r refused %s=%r: %s", widget, k, v, exc)
        sent += 1
    return sent, False


def fmt_seconds(x: float | None) -> str:
    """A duration for people: ``"35.2 µs"``, ``"1.20 ms"``, ``"2.50 s"``; ``"–"`` if unknown."""
    if x is None or not isinstance(x, int | float) or not math.isfinite(x):
        return "–"
    a = abs(x)
    if a < 1e-6:
        return f"{x * 1e9:.0f} ns"
    if a < 1e-3:
        return f"{x * 1e6:.1f} µs"
    if a < 1.0:
        return f"{x * 1e3:.2f} ms"
    if a < 120:
        return f"{x:.2f} s"
    if a < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def _note_html(kind: str, text: str) -> str:
    if not text:
        return ""
    colour = _NOTE_COLOURS.get(kind, "#777777")
    return f'<span style="color:{colour}">{html.escape(text)}</span>'


# -- parameter descriptions and values ---------------------------------------------------------
def _infer(value: Any) -> dict[str, Any]:
    """A parameter description guessed from a value alone (a component that does not answer
    ``QUERY parameters``)."""
    if isinstance(value, bool):
        t = "bool"
    elif isinstance(value, int):
        t = "int"
    elif isinstance(value, float):
        t = "float"
    elif isinstance(value, str):
        t = "str"
    else:
        t = "list"
    return {"value": value, "default": None, "type": t, "unit": "", "bounds": None,
            "choices": None, "doc": "", "readonly": False}


def _parse(meta: dict[str, Any], text: str) -> Any:
    """The value of a QUERY reply, by the parameter's type (see ``Parameter.format``)."""
    t = meta.get("type")
    s = text.strip()
    if t == "float":
        return float(s)
    if t == "int":
        return int(float(s))
    if t == "bool":
        return s.lower() in ("true", "1", "yes", "on")
    if t == "str":
        return text
    try:
        return json.loads(s)
    except ValueError:
        return text


def _kind(meta: dict[str, Any]) -> str:
    """The control a parameter gets: choice, bool, int, float, str, array (a chart and an
    edit field: a list or array of more than :data:`SMALL_ARRAY` numbers) or json."""
    if meta.get("choices"):
        return "choice"
    t = meta.get("type")
    if t in ("bool", "int", "float", "str"):
        return t
    numbers = _numbers(meta.get("value"))
    if t in ("ndarray", "list") and numbers is not None and len(numbers) > SMALL_ARRAY:
        return "array"
    return "json"


# -- array parameters --------------------------------------------------------------------------
def _numbers(value: Any) -> list[int | float | None] | None:
    """``value`` as a flat list of numbers (``None`` where the component sent no finite
    number); ``None`` if it is no such list (nested, text, bools, empty)."""
    if not isinstance(value, list | tuple) or not value:
        return None
    seen = False
    for x in value:
        if x is None:
            continue
        if isinstance(x, bool) or not isinstance(x, int | float):
            return None
        seen = True
    return list(value) if seen else None


def _g(x: float) -> str:
    return f"{x:.4g}"


def _summary(values: list[int | float | None] | None) -> str:
    """``"60 values · min 0.1 · median 0.5 · max 1.2"`` (and how many are not finite)."""
    if values is None:
        return "not a list of numbers"
    finite = [float(x) for x in values if x is not None and math.isfinite(x)]
    parts = [f"{len(values)} values"]
    if finite:
        arr = np.asarray(finite)
        parts += [f"min {_g(arr.min())}", f"median {_g(float(np.median(arr)))}",
                  f"max {_g(arr.max())}"]
    if len(finite) < len(values):
        parts.append(f"{len(values) - len(finite)} not finite")
    return " · ".join(parts)


def _edit_forms(n: int) -> str:
    return (f"Write one number for all {n} values (0.3), index assignments separated by ';' "
            f"(0:10 = 0.3; 5 = 0 — indices 0 to {n - 1}, a range a:b excludes b), or a JSON "
            f"list of {n} numbers.")


def _number(text: str, integer: bool) -> int | float:
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{text.strip()!r} is not a finite number")
    if integer:
        if not x.is_integer():
            raise ValueError(f"{text.strip()} is not an integer (the values are integers)")
        return int(x)
    return x


def _json_numbers(text: str, n: int, integer: bool, what: str) -> list[int | float]:
    try:
        got = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not a JSON list ({exc})") from None
    if not isinstance(got, list) or _numbers(got) is None or None in got:
        raise ValueError(f"{what} is not a list of numbers")
    if len(got) != n:
        raise ValueError(f"{what} has {len(got)} numbers, not {n}")
    return [_number(repr(x), integer) for x in got]


def _indices(text: str, n: int) -> range:
    """The indices ``text`` selects: ``5``, ``-1``, ``0:10``, ``10:``, ``:``, ``0:60:2``."""
    s = text.strip()

    def index(part: str, default: int) -> int:
        part = part.strip()
        if not part:
            return default
        try:
            i = int(part)
        except ValueError:
            raise ValueError(f"{part!r} is not an index") from None
        return i + n if i < 0 else i

    if ":" not in s:
        i = index(s, -1)
        if not s or not 0 <= i < n:
            raise ValueError(f"index {s or '(none)'} is out of range (the indices go from 0 "
                             f"to {n - 1})")
        return range(i, i + 1)
    parts = s.split(":")
    if len(parts) > 3:
        raise ValueError(f"{s!r} is not a range (a:b or a:b:step)")
    start, stop = index(parts[0], 0), index(parts[1], n)
    step = index(parts[2], 1) if len(parts) == 3 else 1
    if len(parts) == 3 and parts[2].strip() and int(parts[2]) <= 0:
        raise ValueError(f"the step of {s!r} must be positive")
    if not (0 <= start <= n and 0 <= stop <= n):
        raise ValueError(f"range {s} goes beyond the {n} values (the indices go from 0 to "
                         f"{n - 1}; a range a:b ends at {n} at most)")
    r = range(start, stop, step)
    if not r:
        raise ValueError(f"range {s} selects no value")
    return r


def edit_array(current: list[Any], text: str) -> tuple[list[int | float], int]:
    """The whole new value of an array parameter that the text of its edit field makes.

    Parameters
    ----------
    current : list of numbers
        The component's value (``None`` for a value that is not finite).
    text : str
        One of: a number, for every value (``"0.3"``); assignments by index separated by
        ``;`` (``"0:10 = 0.3; 5 = 0"``, ``"-1 = 1"``, ``"::2 = 0"``: Python's indexing, from
        0, the end of a range excluded; the right side is a number or a JSON list as long as
        the range); a JSON list of as many numbers as ``current`` holds.

    Returns
    -------
    value : list of numbers
        The new value, as long as ``current`` (integers if ``current`` holds integers only).
    assigned : int
        How many values the text assigns.

    Raises
    ------
    ValueError
        The text is none of these, an index is out of range, a list has the wrong length
        (the message says the accepted forms).
    """
    n = len(current)
    integer = all(isinstance(x, int) and not isinstance(x, bool) for x in current)
    s = text.strip()
    try:
        if not s:
            raise ValueError("nothing written")
        if s.startswith("["):
            return _json_numbers(s, n, integer, "the list"), n
        if "=" not in s:
            try:
                x = _number(s, integer)
            except ValueError:
                if ":" in s or ";" in s:
                    raise ValueError(f"{s!r} is neither a number nor an assignment (index = "
                                     "value)") from None
                raise
            return [x] * n, n
        new = list(current)
        assigned: set[int] = set()
        for part in s.split(";"):
            if not part.strip():
                continue
            lhs, eq, rhs = part.partition("=")
            if not eq or not rhs.strip():
                raise ValueError(f"{part.strip()!r} is not an assignment (index = value)")
            idx = _indices(lhs, n)
            rhs = rhs.strip()
            if rhs.startswith("["):
                values = _json_numbers(rhs, len(idx), integer, f"the list for {lhs.strip()}")
            else:
                values = [_number(rhs, integer)] * len(idx)
            for i, x in zip(idx, values, strict=True):
                new[i] = x
            assigned.update(idx)
        if not assigned:
            raise ValueError("nothing written")
        if any(x is None for x in new):
            raise ValueError("some values are not finite numbers and are not assigned")
        return new, len(assigned)
    except ValueError as exc:
        raise ValueError(f"{exc}. {_edit_forms(n)}") from None


def _summary_html(values: list[Any] | None) -> str:
    return (f"<span style='color:#555;font-size:12px'>{html.escape(_summary(values))}"
            "</span>")


def _array_note(before: list[Any] | None, back: Any) -> str:
    """The note after an array was written and read back: how many values changed."""
    now = _numbers(back)
    if now is None:
        return "✓ read back (not a list of numbers)"
    if before is None or len(before) != len(now):
        return f"✓ read back: {len(now)} values"
    changed = sum(1 for a, b in zip(before, now, strict=True) if a != b)
    return f"✓ read back: {changed} of {len(now)} values changed"


def _short_lists(text: str) -> str:
    """A component's reason with the long lists it quotes shortened (``[… 60 values]``)."""
    return re.sub(r"\[[^\[\]]{60,}\]",
                  lambda m: f"[… {m.group(0).count(',') + 1} values]", text)


def _index_label(name: str, meta: dict[str, Any]) -> str:
    """The name of a chart's index axis: "mode" for per-mode values, else "index"."""
    text = f"{name} {meta.get('doc') or ''}".lower()
    return "mode" if re.search(r"mode|modal", text) else "index"


class _Chart:
    """The bar chart of one array parameter (a bokeh figure in a :class:`BokehWidget`)."""

    def __init__(self, name: str, meta: dict[str, Any]) -> None:
        from bokeh.models import ColumnDataSource, DataRange1d, Range1d, Span
        from bokeh.plotting import figure

        from dao.widgets.plots import bokeh_widget

        values = _numbers(meta.get("value")) or []
        unit = meta.get("unit") or ""
        label = _index_label(name, meta)
        self.source = ColumnDataSource(self._columns(values))
        kw: dict[str, Any] = {}
        b = meta.get("bounds") or [None, None]
        lo, hi = (b + [None, None])[:2]
        finite = [x for x in (lo, hi) if isinstance(x, int | float) and math.isfinite(x)]
        top = max((float(x) for x in values if x is not None), default=0.0)
        if len(finite) == 2 and hi > lo and top - lo > 0.25 * (hi - lo):
            # the values fill the allowed range: show all of it, bounds included
            pad = 0.04 * (hi - lo)
            kw["y_range"] = Range1d(lo - pad, hi + pad)
        else:  # values small against the range (factors of 1 under a bound of 10): fit them
            kw["y_range"] = DataRange1d(start=lo if lo is not None and math.isfinite(lo)
                                        else None, range_padding=0.1)
        fig = figure(width=CHART_WIDTH, height=CHART_HEIGHT, tools="xbox_zoom,xpan,reset,hover",
                     tooltips=[(label, "@i"), (name, "@v{0.[0000]}" + (f" {unit}" if unit
                                                                         else ""))],
                     x_axis_label=label, y_axis_label=unit or name, toolbar_location="right",
                     min_border_left=40, min_border_bottom=30, min_border_top=6,
                     min_border_right=6, **kw)
        fig.toolbar.logo = None
        fig.toolbar.autohide = True
        fig.xgrid.grid_line_color = None
        fig.xaxis.axis_label_text_font_size = "9pt"
        fig.xaxis.axis_label_standoff = 2
        fig.yaxis.axis_label_text_font_size = "9pt"
        fig.axis.major_label_text_font_size = "8pt"
        fig.axis.axis_label_text_font_style = "normal"
        fig.yaxis.ticker.desired_num_ticks = 4
        fig.x_range.range_padding = 0.01
        self.bars = fig.vbar(x="i", top="v", bottom=0, width=0.8 if len(values) <= 120 else 1.0,
                             source=self.source, fill_color="#1f77b4", line_color=None)
        for bound in finite:
            if bound == 0:
                continue  # the bars' base already
            fig.add_layout(Span(location=bound, dimension="width", line_color="#d62728",
                                line_dash="dashed", line_width=1, line_alpha=0.7))
        self.figure = fig
        self.widget = bokeh_widget(fig)
        self.shown: list[Any] = values
        self.cost = 3  # widget messages of one redraw (a document patch), as last measured

    @staticmethod
    def _columns(values: list[Any]) -> dict[str, list[Any]]:
        return {"i": list(range(len(values))),
                "v": [math.nan if x is None else float(x) for x in values]}

    def draw(self, values: list[Any]) -> int:
        """Show ``values``; return the widget messages it took."""
        m0 = self.widget.messages
        self.source.data = self._columns(values)
        self.shown = list(values)
        sent = self.widget.messages - m0
        self.cost = max(1, sent)
        return sent


def _to_control(meta: dict[str, Any], value: Any) -> Any:
    """The control value showing ``value``; ``None`` when the control cannot show it."""
    k = _kind(meta)
    if k == "choice":
        return value if any(_same(value, c) for c in meta["choices"]) else None
    if k == "bool":
        return bool(value) if isinstance(value, bool | int) else None
    if k == "int":
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value) else None
    if k == "float":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value) else None
    if k == "str":
        return value if isinstance(value, str) else None
    if k == "array":  # its control is an edit field; the chart shows the value
        return None
    return json.dumps(value)


def _from_control(meta: dict[str, Any], value: Any) -> Any:
    """The parameter value a control's value stands for.

    Raises
    ------
    ValueError
        The text of a list/array control is not JSON.
    """
    if _kind(meta) == "json":
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not JSON ({exc}): write a list, e.g. [1, 2, 3]") \
                from exc
    return value


def _bounds_text(meta: dict[str, Any]) -> str:
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    if meta.get("choices"):
        return ""
    b = meta.get("bounds")
    if not b:
        return unit.strip()

    def one(x: Any) -> str:
        return f"{x:g}" if isinstance(x, int | float) else str(x)

    lo = "(-∞" if b[0] is None else f"[{one(b[0])}"
    hi = "∞)" if b[1] is None else f"{one(b[1])}]"
    return f"{lo}, {hi}{unit}"


def _tooltip(name: str, meta: dict[str, Any]) -> str:
    parts = [meta.get("doc") or name]
    parts.append(f"type {meta.get('type', '?')}")
    if meta.get("unit"):
        parts.append(f"unit {meta['unit']}")
    if meta.get("bounds"):
        parts.append(f"bounds {_bounds_text(meta)}")
    if meta.get("choices"):
        parts.append(f"one of {meta['choices']}")
    if meta.get("default") is not None:
        parts.append(f"default {meta['default']!r}")
    if meta.get("readonly"):
        parts.append("read-only")
    return "; ".join(parts)


def _make_control(name: str, meta: dict[str, Any]) -> w.Widget:
    """The widget of one published parameter (see :class:`ComponentPanel`)."""
    desc = name + (f" ({meta['unit']})" if meta.get("unit") else "")
    common: dict[str, Any] = {
        "description": desc, "tooltip": _tooltip(name, meta),
        "disabled": bool(meta.get("readonly")),
        "style": {"description_width": "140px"}, "layout": w.Layout(width="300px"),
    }
    value = _to_control(meta, meta.get("value"))
    k = _kind(meta)
    if k == "choice":
        opts = [(str(c), c) for c in meta["choices"]]
        return w.Dropdown(options=opts, value=value if value is not None else opts[0][1],
                          **common)
    if k == "bool":
        return w.Checkbox(value=bool(value), indent=True, **common)
    if k == "int":
        return w.IntText(value=value or 0, **common)
    if k == "float":
        return w.FloatText(value=value or 0.0, **common)
    if k == "array":
        n = len(meta["value"])
        common["tooltip"] += ". " + _edit_forms(n)
        common["layout"] = w.Layout(width="500px")
        return w.Text(value="", placeholder=f"0.3  ·  0:10 = 0.3; 5 = 0  ·  [{n} numbers]",
                      continuous_update=False, **common)
    return w.Text(value=value if value is not None else "", continuous_update=False, **common)


# -- the panel ---------------------------------------------------------------------------------
class ComponentPanel(w.VBox):
    """A panel driving and watching one component, for notebooks.

    Parameters
    ----------
    target : ComponentClient or str or int or Component
        The component: a :class:`~dao.runtime.command.ComponentClient`, its command address
        (``"tcp://127.0.0.1:5555"``, ``"host:5555"`` or the port ``5555``), or a
        :class:`~dao.runtime.component.Component` of this process (served on a free loopback
        port with ``serve(0)`` first if it serves nothing yet; its log records are then shown
        without a log bus).
    pump : Pump, optional
        The pump that updates the panel (default the kernel's, :func:`dao.widgets.get_pump`).
    log_address : str, optional
        Where the component's log records can be read: the backend (XPUB) of a
        :class:`~dao.runtime.logbus.LogForwarder` its process publishes to (``dao run
        --log-bus``); default ``$DAO_LOG_BUS_OUT``, else no log tail (the panel says how to get
        one).
    timeout : float
        Longest wait for the reply to one command, in seconds (also for the first contact).
    log_lines : int
        Lines of log kept and shown.
    stale_after : float
        Seconds without any event (heartbeats come every second) after which the panel says
        the component is silent.
    min_interval : float
        Seconds between two updates of the widgets, at least (the events are read at every
        tick of the pump; the newest state is shown). The log view is updated at most 4
        times a second.

    Attributes
    ----------
    address : str
        The component's command address.
    buttons : dict of str to ipywidgets.Button
        One button per Durham event, by name (``"Init"``, ``"Run"``, ``"OnFailure"``...).
    recover_button : ipywidgets.Button
        The Recover button shown with the error reason (in Error only).
    controls : dict of str to ipywidgets.Widget
        One control per published parameter; for an array of more than :data:`SMALL_ARRAY`
        numbers, its edit field (a ``Text``: see :func:`edit_array` for what it takes; it is
        emptied once a write is read back, and keeps a refused text to be corrected).
    notes : dict of str to ipywidgets.HTML
        Beside each control: the value read back after a write, or the reason of a refusal.
    charts : dict of str to dao.widgets.plots.BokehWidget
        The bar chart of each array parameter (value against index, the bounds dashed),
        redrawn from the component's events and read-backs within the pump's budget.
    summaries : dict of str to ipywidgets.HTML
        Under each array's edit field: how many values, their min, median and max.
    parameters : dict of str to dict
        The parameters' descriptions (value, default, type, unit, bounds, choices, doc,
        readonly), as the component gave them.
    parameters_source : str
        ``"component"`` (``QUERY parameters``) or ``"values"`` (a component that does not
        describe its parameters: types guessed from the values of DUMP).
    messages : int
        Widget messages this panel has sent (each widget state change is one).

    Raises
    ------
    TypeError
        ``target`` is none of the above.
    dao.runtime.command.CommandTimeout
        No component answers at the address.
    dao.runtime.events.EventTimeout
        The component's event socket sent no snapshot in time.

    Examples
    --------
    >>> panel = ComponentPanel(5555)            # doctest: +SKIP
    >>> panel                                   # shows it in the notebook
    >>> panel.buttons["Run"].click()            # as a click in the page would
    >>> panel.close()                           # unsubscribes and leaves the pump
    """

    def __init__(self, target: Any, *, pump: Pump | None = None,
                 log_address: str | None = None, timeout: float = 10.0, log_lines: int = 20,
                 stale_after: float = 3.5, min_interval: float = 0.05) -> None:
        from dao.runtime.component import Component

        if not timeout > 0:
            raise ValueError(f"timeout must be positive (seconds), not {timeout!r}")
        self._local: Component | None = None
        if isinstance(target, Component):
            if target.server is None:
                target.serve(0)
            self._local = target
            address = target.server.address
        elif isinstance(target, ComponentClient):
            address = target.address
        elif isinstance(target, str | int) and not isinstance(target, bool):
            address = normalize_address(target)
        else:
            raise TypeError(
                f"ComponentPanel needs a ComponentClient, a command address (e.g. "
                f"'tcp://127.0.0.1:5555' or 5555) or a Component, not {type(target).__name__}"
            )
        self.address: str = address
        self.timeout = float(timeout)
        self.stale_after = float(stale_after)
        self.min_interval = max(0.0, float(min_interval))
        self.messages = 0
        self._lock = threading.RLock()
        self._tick_lock = threading.Lock()
        self._closed = False
        self._client = ComponentClient(address, timeout=self.timeout)
        self._sub: EventSubscriber | None = None
        try:
            self._first_contact()
        except BaseException:
            self._client.close()
            raise
        # the model: what the component said; the pump shows it
        self._version = 1
        self._shown_version = 0
        self._left = False
        self._busy: str | None = None
        self._job_running = False
        self._message: tuple[str, str] = ("info", "")
        self._notes: dict[str, tuple[str, str]] = {}
        self._pending: collections.Counter[str] = collections.Counter()
        self._edit_text: dict[str, str] = {}  # what the edit field of an array should show
        self._targets: dict[str, list[Any]] = {}  # an array's value being written
        self._heartbeat: dict[str, Any] = {}
        self._last_event = time.monotonic()
        self._silent = False
        self._silent_s = -1
        self._turn = 0
        self._next_show = 0.0
        self._next_log = 0.0
        self._seq: int | None = None
        self._pid: int | None = None
        self.missed_events = 0
        self.bad_events = 0
        self._applying: int | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=max(1, int(log_lines)))
        self._log_sub = None
        self._log_handler: logging.Handler | None = None
        self._poll_at = 0.0
        self._poll_queued = False
        self._polled: tuple[float, int] | None = None
        for ev in self._first_events:
            self._on_event(ev)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"dao-panel-{self._name}")
        try:
            self._build()
            self._open_log(log_address)
        except BaseException:
            self._executor.shutdown(wait=False)
            if self._sub is not None:
                self._sub.close()
            self._client.close()
            raise
        self._pump = pump or get_pump()
        self._pump.add(self)

    # -- first contact -----------------------------------------------------------------------
    def _first_contact(self) -> None:
        c = self._client
        try:
            desc = json.loads(c.query("parameters"))
            self.parameters_source = "component"
        except CommandTimeout:
            raise CommandTimeout(
                f"no component answers at {self.address} within {self.timeout:g} s: start it "
                "(dao run MODULE:CLASS --port PORT) or check the address") from None
        except (CommandFailed, ValueError):
            desc = {k: _infer(v) for k, v in c.dump().items()}
            self.parameters_source = "values"
        self.parameters: dict[str, dict[str, Any]] = desc
        self._params: dict[str, Any] = {k: d.get("value") for k, d in desc.items()}
        self._name = ""
        self._state: str | None = None
        self._reason: str | None = None
        self._first_events: list[dict[str, Any]] = []
        try:
            self._sub = subscribe(self.address, timeout=min(self.timeout, 10.0))
        except CommandFailed:  # no event socket (e.g. a Durham C++ component): poll instead
            self._sub = None
        if self._sub is not None:
            self._first_events = self._sub.drain()
        else:
            self._state = c.state()
        if self._local is not None:
            self._name = self._local.name

    def _open_log(self, log_address: str | None) -> None:
        self.log_address: str | None = None
        if self._local is not None:
            panel = self

            class _Tail(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    try:
                        panel._add_log(time.strftime("%H:%M:%S", time.localtime(
                            record.created)) + f".{int(record.msecs):03d}",
                            record.levelname, record.getMessage())
                    except Exception:  # noqa: BLE001
                        self.handleError(record)

            self._log_handler = _Tail()
            self._local.log.addHandler(self._log_handler)
            return
        address = log_address or os.environ.get("DAO_LOG_BUS_OUT")
        if address:
            from dao.runtime.logbus import LogSubscriber

            self._log_sub = LogSubscriber(address)
            self.log_address = address

    # -- widgets -----------------------------------------------------------------------------
    def _build(self) -> None:
        self._title = w.HTML()
        self.state_label = w.HTML()
        self.state_label.add_class("dao-panel-state")
        self.buttons: dict[str, w.Button] = {}
        for ev in Event:
            froms = [f"{s.value} → {n.value}" for (s, e), n in TRANSITIONS.items() if e is ev]
            b = w.Button(description=ev.value, disabled=True,
                         tooltip=f"EXEC {ev.value}: " + ", ".join(froms),
                         layout=w.Layout(width="auto"))
            b.on_click(functools.partial(self._click, ev))
            self.buttons[ev.value] = b
        self.recover_button = w.Button(description="Recover", button_style="warning",
                                       disabled=True, tooltip="EXEC Recover: Error → Idle",
                                       layout=w.Layout(width="auto"))
        self.recover_button.on_click(functools.partial(self._click, Event.RECOVER))
        self.error_label = w.HTML()
        self._error_box = w.VBox([self.error_label, self.recover_button],
                                 layout=w.Layout(display="none", border="1px solid #d62728",
                                                 padding="4px"))
        self.status_label = w.HTML()
        self.message_label = w.HTML()
        self.controls: dict[str, w.Widget] = {}
        self.notes: dict[str, w.HTML] = {}
        self._hints: dict[str, w.HTML] = {}
        self.charts: dict[str, w.Widget] = {}
        self.summaries: dict[str, w.HTML] = {}
        self._charts: dict[str, _Chart] = {}
        rows, boxes = [], []
        for name, meta in self.parameters.items():
            ctl = _make_control(name, meta)
            ctl.observe(functools.partial(self._edited, name), names="value")
            self.controls[name] = ctl
            self._hints[name] = w.HTML(html.escape(_bounds_text(meta)),
                                       layout=w.Layout(width="130px"))
            self.notes[name] = w.HTML()
            row = w.HBox([ctl, self._hints[name], self.notes[name]])
            if _kind(meta) == "array":
                chart = _Chart(name, meta)
                self._charts[name] = chart
                self.charts[name] = chart.widget
                self.summaries[name] = w.HTML(_summary_html(_numbers(meta.get("value"))),
                                              layout=w.Layout(margin="0 0 0 146px"))
                self.summaries[name].add_class("dao-array-summary")
                boxes.append(row)
                row = w.VBox([row, self.summaries[name], chart.widget],
                             layout=w.Layout(margin="2px 0 6px 0"))
                row.add_class("dao-array-param")
            rows.append(row)
        self._params_box = w.VBox(rows)
        src = "" if self.parameters_source == "component" else (
            " (this component does not describe its parameters: types guessed from values)")
        self._params_title = w.HTML(f"<b>Parameters</b>{html.escape(src)}"
                                    if rows else "<i>no published parameters</i>")
        self.log_view = w.HTML()
        self._events_box = w.HBox(list(self.buttons.values()),
                                  layout=w.Layout(flex_flow="row wrap"))
        children = [w.HBox([self._title, self.state_label]),
                    self._events_box, self._error_box, self.status_label,
                    self.message_label, self._params_title, self._params_box,
                    w.HTML("<b>Log</b>"), self.log_view]
        self._widgets: list[w.Widget] = [
            *children, self._title, self.state_label, *self.buttons.values(),
            self.recover_button, self.error_label,
            *self.controls.values(), *self._hints.values(), *self.notes.values(),
            *self.summaries.values(), *self.charts.values(), *boxes, *rows]
        super().__init__(children=children)

    # -- what the kernel sees ----------------------------------------------------------------
    @property
    def state(self) -> str | None:
        """The component's state as last told by its events (``None`` before the first)."""
        return self._state

    @property
    def name(self) -> str:
        """The component's name (from its events)."""
        return self._name

    @property
    def error_reason(self) -> str | None:
        """Why the component is in Error (``None`` otherwise)."""
        return self._reason

    @property
    def values(self) -> dict[str, Any]:
        """The parameters' values as last told by the component (events or read-backs)."""
        with self._lock:
            return dict(self._params)

    @property
    def heartbeat(self) -> dict[str, Any]:
        """The last heartbeat event (``rate_hz``, ``processing_p50_s``, ...)."""
        with self._lock:
            return dict(self._heartbeat)

    @property
    def log_tail(self) -> list[str]:
        """The last lines of the component's log, oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def busy(self) -> str | None:
        """The event whose reply is awaited (its buttons are disabled meanwhile), or None."""
        return self._busy

    @property
    def legal_events(self) -> list[str]:
        """The events legal from the current state, by the state table."""
        try:
            st = parse_state(self._state) if self._state else None
        except ValueError:
            return []
        return [e.value for (s, e) in TRANSITIONS if s is st]

    @property
    def running(self) -> bool:
        """The pump feeds this panel."""
        return not self._closed and self in self._pump.sources

    def stats(self) -> dict[str, Any]:
        """``messages`` sent, ``missed_events`` (gaps in the events' ``seq``), ``bad_events``
        (messages that were not dao events), and whether the component is ``silent``."""
        return {"messages": self.messages, "missed_events": self.missed_events,
                "bad_events": self.bad_events, "silent": self._silent}

    # -- events and log (pump thread) --------------------------------------------------------
    def _touch(self) -> None:
        self._version += 1

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("kind")
        with self._lock:
            self._last_event = time.monotonic()
            pid = ev.get("pid")
            if isinstance(pid, int) and kind != "health":
                if self._pid is not None and pid != self._pid:
                    self._message = ("info", f"the component restarted (pid {self._pid} → "
                                             f"{pid})")
                    self._seq = None
                self._pid = pid
            seq = ev.get("seq")
            if isinstance(seq, int):
                if self._seq is not None and seq > self._seq + 1:
                    self.missed_events += seq - self._seq - 1
                if self._seq is None or seq > self._seq:
                    self._seq = seq
            if ev.get("component") and not self._name:
                self._name = str(ev["component"])
            if kind == "state":
                self._state = ev.get("state")
                self._reason = ev.get("reason") if self._state == "Error" else None
                for k, v in (ev.get("parameters") or {}).items():
                    if not self._pending[k]:
                        self._params[k] = v
            elif kind == "parameter":
                name = ev.get("name")
                if name is not None and not self._pending[name]:
                    self._params[name] = ev.get("new")
            elif kind == "error":
                if ev.get("reason"):
                    self._reason = ev["reason"]
                if ev.get("state"):
                    self._state = ev["state"]
            elif kind == "heartbeat":
                self._heartbeat = ev
                st = ev.get("state")
                if st and st != self._state:  # an event missed: the heartbeat says where
                    self._state = st
                    if st != "Error":
                        self._reason = None
            self._touch()

    def _read_events(self) -> None:
        sub = self._sub
        if sub is None:
            return
        for _ in range(1000):  # a bounded share of the tick
            try:
                ev = sub.get(0)
            except EventError:
                self.bad_events += 1
                continue
            if ev is None:
                return
            self._on_event(ev)

    def _add_log(self, stamp: str, level: str, message: str) -> None:
        with self._lock:
            lines = str(message).splitlines() or [""]
            self._log.append(f"{stamp} {level:<7} {lines[0]}")
            self._log.extend(f"    {line}" for line in lines[1:])
            self._touch()

    def _read_log(self) -> None:
        sub = self._log_sub
        if sub is None:
            return
        for _ in range(200):
            rec = sub.recv(timeout=0)
            if rec is None:
                return
            if self._name and rec.component != self._name:
                continue
            ts = rec.time_stamp
            self._add_log(ts[11:23] if len(ts) >= 23 else ts, rec.level_name, rec.message)

    def _check_silence(self, now: float) -> None:
        quiet = now - self._last_event
        s = int(quiet) if quiet > self.stale_after else -1
        if s != self._silent_s:  # at most once a second
            with self._lock:
                self._silent_s = s
                self._silent = s >= 0
                self._touch()

    # -- polling, for a component without events ---------------------------------------------
    def _poll(self) -> None:
        self._poll_queued = False
        c = self._client
        try:
            state = c.state()
            reason = c.query("error_reason") if state == "Error" else None
            values = c.dump()
            stats: dict[str, Any] = {}
            try:
                stats = json.loads(c.query("stats"))
            except (CommandFailed, ValueError):
                pass
        except DaoError as exc:
            with self._lock:
                self._message = ("refused", f"cannot read the component: {exc}")
                self._touch()
            return
        now = time.monotonic()
        with self._lock:
            self._last_event = now
            self._state, self._reason = state, reason or None
            for k, v in values.items():
                if not self._pending[k]:
                    self._params[k] = v
            it = stats.get("iterations_total")
            if isinstance(it, int):
                hb = {k: stats.get(k) for k in ("processing_p50_s", "processing_p99_s")}
                hb["iterations"] = it
                if self._polled is not None and now > self._polled[0]:
                    hb["rate_hz"] = (it - self._polled[1]) / (now - self._polled[0])
                self._polled = (now, it)
                self._heartbeat = hb
            self._touch()

    # -- what the widgets should show --------------------------------------------------------
    def _wanted(self, now: float) -> tuple[list[Wanted], bool]:
        """What the widgets should show, most important first; and whether the log view
        was left as it is (shown at most 4 times a second: a chatty log must not use the
        budget of the whole kernel)."""
        deferred = False
        with self._lock:
            state, busy, reason = self._state, self._busy, self._reason
            colour = _STATE_COLOURS.get(state or "", "#777777")
            out: list[Wanted] = [
                (self._title, {"value": f"<b>{html.escape(self._name or '?')}</b> "
                                        f"<span style='color:#777'>at "
                                        f"{html.escape(self.address)}</span>"}),
            ]
            badge = (f"<span style='background:{colour};color:white;padding:1px 8px;"
                     f"border-radius:3px'>{html.escape(state or 'unknown')}</span>")
            if busy:
                badge += f" <span style='color:#777'>{html.escape(busy)}…</span>"
            out.append((self.state_label, {"value": badge}))
            legal = set(self.legal_events)
            for name, b in self.buttons.items():
                out.append((b, {"disabled": bool(busy) or name not in legal or self._closed}))
            in_error = state == "Error"
            out.append((self.recover_button, {"disabled": bool(busy) or not in_error}))
            out.append((self._error_box.layout, {"display": "flex" if in_error else "none"}))
            if in_error:
                text = (reason or "no reason given").rstrip()
                last = text.splitlines()[-1] if text else ""
                err = (f"<b style='color:#d62728'>Error:</b> {html.escape(last)}"
                       f"<details><summary>reason</summary><pre style='font-size:11px'>"
                       f"{html.escape(text)}</pre></details>")
            else:
                err = ""
            out.append((self.error_label, {"value": err}))
            kind, msg = self._message
            out.append((self.message_label, {"value": _note_html(kind, msg)}))
            rest: list[Wanted] = []
            for name, ctl in self.controls.items():
                meta = self.parameters[name]
                if name in self._charts:  # the chart is drawn apart (pump_tick)
                    rest.append((ctl, {"value": self._edit_text.get(name, "")}))
                    rest.append((self.summaries[name], {
                        "value": _summary_html(_numbers(self._params.get(name)))}))
                elif not self._pending[name] and name in self._params:
                    v = _to_control(meta, self._params[name])
                    if v is not None:
                        rest.append((ctl, {"value": v}))
                nk, nt = self._notes.get(name, ("info", ""))
                rest.append((self.notes[name], {"value": _note_html(nk, nt)}))
            rest.append((self.status_label, {"value": self._status_html()}))
            if now >= self._next_log:
                log_html = self._log_html()
                if log_html != self.log_view.value:
                    self._next_log = now + 0.25
                rest.append((self.log_view, {"value": log_html}))
            else:
                deferred = True
        # the state and its buttons first; the rest from another place each time, so that on a
        # small budget a parameter changing all the time cannot keep the others from showing
        k = self._turn % len(rest)
        self._turn += 1
        return out + rest[k:] + rest[:k], deferred

    def _status_html(self) -> str:
        hb = self._heartbeat
        parts = []
        if hb:
            rate = hb.get("rate_hz")
            parts.append(f"{rate:.1f} Hz" if isinstance(rate, int | float) else "– Hz")
            parts.append(f"processing p50 {fmt_seconds(hb.get('processing_p50_s'))}, "
                         f"p99 {fmt_seconds(hb.get('processing_p99_s'))}")
            if hb.get("iterations") is not None:
                parts.append(f"{hb['iterations']} iterations")
            if hb.get("uptime_s") is not None:
                parts.append(f"up {fmt_seconds(hb['uptime_s'])}")
        if self._pid is not None:
            parts.append(f"pid {self._pid}")
        if self._sub is None:
            parts.append("no events from this component: STATE and DUMP read every second")
        if self.missed_events:
            parts.append(f"{self.missed_events} events missed")
        text = html.escape(" · ".join(parts))
        if self._silent:
            text += (f" <b style='color:#d62728'>no event for {self._silent_s} s: is the "
                     "component alive?</b>")
        return f"<span style='color:#444'>{text}</span>"

    def _log_html(self) -> str:
        if not self._log:
            if self._local is None and self._log_sub is None:
                return ("<i style='color:#777'>no log: run the component with --log-bus "
                        "ADDRESS (a LogForwarder's frontend) and give the panel "
                        "log_address= the forwarder's backend (or set $DAO_LOG_BUS_OUT)</i>")
            return "<i style='color:#777'>no log record yet</i>"
        return ("<pre style='font-size:11px;line-height:1.2;max-height:20em;overflow:auto;"
                "margin:0'>" + html.escape("\n".join(self._log)) + "</pre>")

    # -- the pump's side ---------------------------------------------------------------------
    def pump_tick(self, now: float, budget: int) -> int:
        """Read the events and the log that came, show what changed (at most ``budget``
        widget messages); return the messages sent."""
        with self._tick_lock:
            if self._closed:
                return 0
            self._read_events()
            self._read_log()
            if self._sub is None and now >= self._poll_at and not self._poll_queued:
                self._poll_at = now + 1.0
                self._poll_queued = True
                self._submit(None, self._poll)
            else:
                self._check_silence(now)
            if self._version == self._shown_version and not self._left:
                return 0
            if now < self._next_show:  # at most 1/min_interval updates a second
                return 0
            version = self._version
            wanted, deferred = self._wanted(now)
            self._applying = threading.get_ident()
            try:
                sent, left = sync_widgets(wanted, budget)
            finally:
                self._applying = None
            if self._charts:
                drawn, more = self._draw_charts(budget - sent)
                sent, left = sent + drawn, left or more
            self._left = left or deferred
            if not self._left:
                self._shown_version = version
            if sent:
                self._next_show = now + self.min_interval
            self.messages += sent
            return sent

    def _draw_charts(self, budget: int) -> tuple[int, bool]:
        """Redraw the charts whose values changed, within ``budget`` messages (a redraw is
        one bokeh document patch: 3 messages). Returns the messages sent and whether a chart
        still waits."""
        # a pump whose whole burst is smaller than one redraw: redraw on a full budget
        cap = max(1, int(self._pump.max_rate * self._pump.burst))
        sent, left = 0, False
        for name, chart in self._charts.items():
            with self._lock:
                values = _numbers(self._params.get(name))
            if values is None or values == chart.shown:
                continue
            if budget - sent < min(chart.cost, cap):
                left = True
                continue
            sent += chart.draw(values)
        return sent, left

    def pump_failed(self, exc: BaseException) -> None:
        """Say in the panel that it stopped updating (the pump calls it)."""
        try:
            self.message_label.value = _note_html(
                "refused", f"the panel stopped updating: {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001
            log.exception("reporting a pump failure failed")

    # -- commands (worker thread) ------------------------------------------------------------
    def _submit(self, what: str | None, fn: Callable[..., None], *args: Any) -> None:
        def job() -> None:
            with self._lock:
                if self._closed:
                    return
                self._job_running = True
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - said in the panel, never raised
                log.exception("%s: %s failed", self.address, what or fn.__name__)
                with self._lock:
                    self._message = ("refused", f"{what or fn.__name__} failed: "
                                                f"{type(exc).__name__}: {exc}")
                    self._touch()
            finally:
                with self._lock:
                    self._job_running = False
                    closed = self._closed
                if closed:
                    self._client.close()

        try:
            self._executor.submit(job)
        except RuntimeError:  # closed meanwhile
            pass

    def _click(self, event: Event, _button: Any = None) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                if self._busy:
                    self._message = ("refused", f"{event.value} not sent: {self._busy} is "
                                                "still waiting for its reply")
                    self._touch()
                    return
                self._busy = f"EXEC {event.value}"
                self._message = ("busy", f"EXEC {event.value} sent")
                self._touch()
            self._submit(f"EXEC {event.value}", self._exec, event)
        except Exception as exc:  # noqa: BLE001 - never into the widget's callback
            log.exception("click on %s", event.value)
            with self._lock:
                self._busy = None
                self._message = ("refused", f"{event.value} not sent: {exc}")
                self._touch()

    def _exec(self, event: Event) -> None:
        payload = event.value
        if event is Event.ON_FAILURE:
            payload += " OnFailure requested from a notebook panel"
        try:
            new = self._client.exec(payload)
            msg = ("ok", f"{event.value}: now {new}")
        except CommandFailed as exc:
            msg = ("refused", f"{event.value} refused: {exc.payload}")
        except CommandTimeout:
            msg = ("refused", f"{event.value}: no reply within {self.timeout:g} s (the "
                              "transition may still be going on: watch the state; is the "
                              "component alive?)")
        except DaoError as exc:
            msg = ("refused", f"{event.value} not sent: {exc}")
        with self._lock:
            self._busy = None
            self._message = msg
            self._touch()

    def _edited(self, name: str, change: dict[str, Any]) -> None:
        if self._closed or self._applying == threading.get_ident():
            return
        try:
            meta = self.parameters[name]
            if name in self._charts:
                self._edited_array(name, str(change["new"]))
                return
            with self._lock:
                current = _to_control(meta, self._params.get(name))
            if _same(change["new"], current):
                return
            try:
                value = _from_control(meta, change["new"])
            except ValueError as exc:
                with self._lock:
                    self._notes[name] = ("refused", str(exc))
                    self._touch()  # the control goes back to the component's value
                return
            with self._lock:
                self._pending[name] += 1
                self._notes[name] = ("busy", f"writing {change['new']}…")
                self._touch()
            self._submit(f"SETUP {name}", self._write, name, value)
        except Exception as exc:  # noqa: BLE001 - never into the widget's callback
            log.exception("edit of %s", name)
            with self._lock:
                self._notes[name] = ("refused", f"not sent: {exc}")
                self._touch()

    def _edited_array(self, name: str, text: str) -> None:
        """The edit field of an array parameter was written: the new value is made from the
        component's (or from the one being written) and sent."""
        if not text.strip():
            with self._lock:
                self._edit_text[name] = ""
            return
        with self._lock:
            base = self._targets.get(name) if self._pending[name] else None
            current = _numbers(base if base is not None else self._params.get(name))
        try:
            if current is None:
                raise ValueError("the component's value is not a list of numbers: cannot "
                                 "assign by index")
            value, _ = edit_array(current, text)
        except ValueError as exc:
            with self._lock:
                self._notes[name] = ("refused", str(exc))
                self._edit_text[name] = text  # kept, to be corrected
                self._touch()
            return
        with self._lock:
            self._pending[name] += 1
            self._targets[name] = value
            self._edit_text[name] = text
            what = text.strip() if len(text.strip()) <= 40 else f"{len(value)} values"
            self._notes[name] = ("busy", f"writing {what}…")
            self._touch()
        self._submit(f"SETUP {name}", self._write, name, value, text)

    def _write(self, name: str, value: Any, text: str | None = None) -> None:
        meta = self.parameters[name]
        unit = f" {meta['unit']}" if meta.get("unit") else ""
        array = name in self._charts
        with self._lock:
            before = _numbers(self._params.get(name)) if array else None
        refused: str | None = None
        try:
            try:
                self._client.setup(name, value)
            except CommandFailed as exc:
                refused = exc.payload
            except DaoError as exc:  # CommandTimeout included
                refused = f"no answer: {exc}"
            try:
                back = _parse(meta, self._client.query(name))
                got = True
            except (DaoError, ValueError) as exc:
                back, got = None, False
                refused = (refused + "; " if refused else "") + f"not read back: {exc}"
        finally:
            with self._lock:
                self._pending[name] -= 1
                if self._pending[name] <= 0:
                    del self._pending[name]
                    self._targets.pop(name, None)
        with self._lock:
            if got:
                self._params[name] = back
            if refused:
                self._notes[name] = ("refused", _short_lists(refused) if array else refused)
            elif array:
                self._notes[name] = ("ok", _array_note(before, back))
                if text is not None and self._edit_text.get(name) == text:
                    self._edit_text[name] = ""  # done: the field is free for the next edit
            else:
                shown = json.dumps(back) if _kind(meta) == "json" else (
                    f"{back:g}" if isinstance(back, float) else str(back))
                self._notes[name] = ("ok", f"✓ read back {shown}{unit}")
            self._touch()

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Unsubscribe, leave the pump, close the widgets (the component runs on)."""
        if "_pump" not in self.__dict__:  # never finished its constructor (the GC's call)
            with contextlib.suppress(Exception):
                super().close()
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            running = self._job_running
        pump = getattr(self, "_pump", None)
        if pump is not None:
            pump.remove(self)
        with self._tick_lock:  # a tick in progress ends first
            if self._sub is not None:
                self._sub.close()
            if self._log_sub is not None:
                self._log_sub.close()
                self._log_sub = None
        if self._log_handler is not None and self._local is not None:
            self._local.log.removeHandler(self._log_handler)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not running:
            self._client.close()
        for child in self._widgets:
            for part in (getattr(child, "layout", None), getattr(child, "style", None)):
                if isinstance(part, w.Widget):
                    part.close()
            child.close()
        self.layout.close()
        super().close()

    def _ipython_display_(self, **kwargs: Any) -> None:
        """Display the panel (BokehJS first, where it has charts: see
        :func:`dao.widgets.plots.load_bokeh`)."""
        from dao.widgets.plots import _display_bundle, load_bokeh

        if self._charts:
            load_bokeh()
        _display_bundle(self, **kwargs)

    def __repr__(self) -> str:
        return (f"<ComponentPanel {self._name or '?'} at {self.address}: "
                f"{self._state or 'unknown'}{', closed' if self._closed else ''}>")


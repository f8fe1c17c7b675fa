"""Plots of the latency model (issue 14): the timeline of one frame through a pipeline.

:func:`timeline_figure` draws, for one frame of a :class:`~dao.latency.model.Timeline` (or of
the timeline of a :class:`~dao.latency.model.Prediction`), one row per stage, top to bottom in
the pipeline's order: a bar per packet from its start to its end, and a lighter bar for the
time it waited (its inputs were ready, no server was free yet). A measured frame
(:func:`dao.latency.loopmodel.measure_frames`, :func:`dao.latency.loopmodel.measured_frame`)
is drawn over it as outlined bars on the same rows. Times are in microseconds from the frame's
start (for a loop: the camera frame's write time).

Bokeh is imported when a figure is made, not with this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dao.latency.model import Prediction, Timeline

__all__ = ["timeline_figure", "X_LABEL", "MODEL", "WAITING", "MEASURED"]

#: The time axis' label.
X_LABEL = "time from the frame's start (µs)"
#: Names of the data sources (and legend labels) of :func:`timeline_figure`.
MODEL, WAITING, MEASURED = "model", "waiting", "measured"

_US = 1e6  # microseconds in a second


def _timeline(timeline_or_prediction: Any) -> Timeline:
    if isinstance(timeline_or_prediction, Prediction):
        return timeline_or_prediction.timeline
    if isinstance(timeline_or_prediction, Timeline):
        return timeline_or_prediction
    raise ValueError("timeline_figure needs a dao.latency.model.Timeline or Prediction (e.g. "
                     "predict(pipeline), or predict_loop(...)['prediction']), got "
                     f"{type(timeline_or_prediction).__name__}")


def _frame(tl: Timeline, frame: Any) -> int:
    if frame is None:  # the frame of median end-to-end latency
        end = tl.end_to_end_s()
        return int(np.argsort(end, kind="stable")[(end.size - 1) // 2])
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise ValueError(f"frame must be an integer frame index, got {frame!r}")
    k = int(frame)
    if not -tl.frames <= k < tl.frames:
        raise ValueError(f"frame {k} out of range: the timeline has {tl.frames} frames "
                         f"(0 to {tl.frames - 1})")
    return k % tl.frames


def _measured(tl: Timeline, measured: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    if not isinstance(measured, Mapping):
        raise ValueError("measured must be a dict {stage: (start_s, end_s)} of one frame, got "
                         f"{type(measured).__name__}")
    out: dict[str, tuple[float, float]] = {}
    for stage, span in measured.items():
        if stage not in tl.stages:
            raise ValueError(f"measured stage {stage!r} is not a stage of the timeline: "
                             f"{', '.join(tl.stages)}")
        try:
            start, end = (float(v) for v in span)
        except (TypeError, ValueError):
            raise ValueError(f"measured[{stage!r}] must be (start_s, end_s), two numbers of "
                             f"seconds, got {span!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"measured[{stage!r}] = ({start!r}, {end!r}): need finite "
                             "start_s <= end_s, in s")
        out[stage] = (start, end)
    return out


def timeline_figure(timeline_or_prediction: Timeline | Prediction, frame: int | None = None,
                    measured: Mapping[str, Any] | None = None, title: str | None = None,
                    width: int = 720, height: int | None = None) -> Any:
    """A Bokeh figure of one frame through the pipeline: one row per stage, bars in µs.

    Parameters
    ----------
    timeline_or_prediction : Timeline or Prediction
        The simulation (:func:`dao.latency.model.predict`).
    frame : int, optional
        The frame drawn (an index of the timeline; negative counts from the end). Default: the
        frame whose end-to-end latency is the median.
    measured : dict, optional
        One measured frame, ``{stage: (start_s, end_s)}`` in s from the frame's start (for a
        loop: from the camera frame's write time), drawn as outlined bars over the model's.
        Stages left out are not drawn.
    title : str, optional
        The figure's title (default: the frame and its end-to-end latency).
    width, height : int
        Size in pixels (the height by default grows with the number of stages).

    Returns
    -------
    bokeh.plotting.figure
        Its data sources are named ``"model"`` (columns ``stage``, ``packet``, ``left``,
        ``right``: each packet's start and end, µs), ``"waiting"`` (``left`` the packet's ready
        time, ``right`` its start, µs) and, with ``measured``, ``"measured"`` (``stage``,
        ``left``, ``right``, µs).

    Raises
    ------
    ValueError
        Not a Timeline or Prediction, a frame out of range, a measured stage that is not the
        timeline's or a span that is not two finite times with start <= end.
    """
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    tl = _timeline(timeline_or_prediction)
    k = _frame(tl, frame)
    spans = _measured(tl, measured) if measured is not None else None

    model: dict[str, list] = {"stage": [], "packet": [], "left": [], "right": [],
                              "duration": []}
    waiting: dict[str, list] = {"stage": [], "packet": [], "left": [], "right": [],
                                "duration": []}
    for s in tl.stages:
        ready, start, end = (np.asarray(t[s][k], dtype=float) * _US
                             for t in (tl.ready_s, tl.start_s, tl.end_s))
        for p in range(start.size):
            for cols, a, b in ((model, start[p], end[p]), (waiting, ready[p], start[p])):
                cols["stage"].append(s)
                cols["packet"].append(p)
                cols["left"].append(float(a))
                cols["right"].append(float(b))
                cols["duration"].append(float(b - a))

    rows = list(reversed(tl.stages))  # a categorical axis lists its factors bottom to top
    end_us = float(tl.end_to_end_s()[k]) * _US
    if title is None:
        title = f"frame {k}: {end_us:.1f} µs end to end (model)"
    fig = figure(width=width, height=height or 90 + 42 * len(rows), y_range=rows,
                 x_axis_label=X_LABEL, y_axis_label="stage", title=title,
                 tools="xpan,xwheel_zoom,reset,save")
    src_wait = ColumnDataSource(waiting, name=WAITING)
    src_model = ColumnDataSource(model, name=MODEL)
    fig.hbar(y="stage", left="left", right="right", height=0.55, source=src_wait,
             color="#9ecae1", alpha=0.5, legend_label="waiting (model)")
    bars = fig.hbar(y="stage", left="left", right="right", height=0.55, source=src_model,
                    fill_color="#3182bd", line_color="#08519c", legend_label=MODEL)
    # a zero-length packet (the camera's write, time 0) still shows: a tick at its end
    fig.scatter(x="right", y="stage", source=src_model, marker="dash", size=14, angle=math.pi / 2,
                color="#08519c")
    renderers = [bars]
    if spans is not None:
        meas = {"stage": list(spans), "left": [a * _US for a, _ in spans.values()],
                "right": [b * _US for _, b in spans.values()],
                "duration": [(b - a) * _US for a, b in spans.values()]}
        src_meas = ColumnDataSource(meas, name=MEASURED)
        outline = fig.hbar(y="stage", left="left", right="right", height=0.8, source=src_meas,
                           fill_alpha=0, line_color="#d62728", line_width=2,
                           legend_label=MEASURED)
        fig.scatter(x="right", y="stage", source=src_meas, marker="diamond", size=9,
                    color="#d62728")
        renderers.append(outline)
    fig.add_tools(HoverTool(renderers=renderers, tooltips=[
        ("stage", "@stage"), ("start", "@left{0.0} µs"), ("end", "@right{0.0} µs"),
        ("duration", "@duration{0.0} µs")]))
    fig.x_range.start = 0
    fig.legend.location = "top_right"  # the late stages are at the bottom right
    fig.legend.click_policy = "hide"
    return fig

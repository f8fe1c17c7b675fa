"""The loop dashboard: an :class:`~dao.loop.AOLoop` at a glance, and its controls.

One widget shows

- the loop's controls: close it (at the gain of the slider), open it (gain 0, the integrator
  back to zero), the gain (sent to the running controller, read back from its events), and
  the loop's status line, which says in red which component is in Error and why (the last
  line of its reason) as soon as the supervisor's health event tells;
- every component's health (pid, uptime, restarts, state, rate), from the supervisor's events;
- live views of the WFS image, the slopes and the DM command on their grids, and the PSF;
- the Strehl ratio and residual of every science exposure, and the latency of each stage
  (camera to slopes, slopes to command, camera to command) as histograms;
- a :class:`~dao.widgets.ComponentPanel` for each component.

Everything is fed by the kernel's :class:`~dao.widgets.Pump`: the views at ``fps`` frames per
second each, the plots twice a second, the health and the gain when their events come.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np

from dao.widgets.pump import Pump, get_pump
from dao.widgets.stream_view import StreamView

if TYPE_CHECKING:
    from dao.loop import AOLoop

__all__ = ["LoopDashboard", "loop_latencies"]

#: Seconds between two updates of the trend and the latency histograms.
PLOT_PERIOD = 0.5


def loop_latencies(loop: AOLoop, frames: int = 2000) -> dict[str, np.ndarray]:
    """Per-frame latencies of the last ``frames`` camera frames of a running loop.

    Returns
    -------
    dict of str to numpy.ndarray
        Seconds, one value per frame that reached the DM: ``camera_to_slopes``,
        ``slopes_to_command`` and ``camera_to_command``.
    """
    from dao.runtime.timing import stage_latencies

    st = loop.streams
    fr = st["frames"]
    n = min(frames, fr.frames_available)
    if n < 1:
        return {k: np.zeros(0) for k in ("camera_to_slopes", "slopes_to_command",
                                         "camera_to_command")}
    rows = fr.get_history(n)[:, :, 0]
    source = dict(zip(rows[:, 0].tolist(), rows[:, 1].tolist(), strict=True))
    stages = []
    for k in ("slopes", "dm_command"):
        have = st[k].frames_available
        stages.append((k, st[k].history_metadata(min(have, n + 16)) if have else None))
    if any(f is None for _, f in stages):
        return {k: np.zeros(0) for k in ("camera_to_slopes", "slopes_to_command",
                                         "camera_to_command")}
    _, hops = stage_latencies(source, stages)
    return {"camera_to_slopes": hops["source_to_slopes"],
            "slopes_to_command": hops["slopes_to_dm_command"],
            "camera_to_command": hops["total"]}


def _last_line(text: str | None) -> str:
    """The last non-blank line of ``text`` (of an Error reason: usually the exception's)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class LoopDashboard(w.VBox):
    """A running :class:`~dao.loop.AOLoop` at a glance, with its controls.

    Parameters
    ----------
    loop : dao.loop.AOLoop
        A started loop.
    fps : float
        Frames per second of each live view.
    trend : int
        Science exposures kept in the Strehl and residual trend.
    panels : bool
        Show a component panel per component (in a collapsed accordion).
    pump : dao.widgets.Pump, optional
        The pump (default the kernel's).

    Examples
    --------
    >>> ao = AOLoop(n_subap=10).start()                    # doctest: +SKIP
    >>> dash = LoopDashboard(ao); dash                     # shows it
    >>> dash.close_loop(0.4)                               # as the button does
    """

    def __init__(self, loop: AOLoop, *, fps: float = 15.0, trend: int = 5000,
                 panels: bool = True, pump: Pump | None = None) -> None:
        if not getattr(loop, "running", False):
            raise RuntimeError("the loop is not running: start it first (AOLoop(...).start())")
        self.loop = loop
        self._pump = pump or get_pump()
        cfg = loop.config
        n = cfg["bench"]["n_subap"]
        title = w.HTML(f"<b>AO loop</b>: {n}x{n} {cfg['sensor']['type']}, "
                       f"{cfg['bench']['frame_rate']:g} Hz simulated, science at "
                       f"{cfg['science']['wavelength'] * 1e6:.2f} um")
        # -- controls ----------------------------------------------------------------------
        gain0 = float(cfg["controller"]["gain"]) or 0.4
        self.gain_slider = w.FloatSlider(value=gain0, min=0.0, max=1.0, step=0.01,
                                         description="gain", continuous_update=False,
                                         readout_format=".2f")
        self.close_button = w.Button(description="Close loop", button_style="success",
                                     icon="lock")
        self.open_button = w.Button(description="Open loop", button_style="warning",
                                    icon="unlock")
        self.loop_status = w.HTML()
        self.close_button.on_click(lambda _b: self._do(self.close_loop))
        self.open_button.on_click(lambda _b: self._do(self.open_loop))
        self.gain_slider.observe(self._on_gain, names="value")
        controls = w.HBox([self.close_button, self.open_button, self.gain_slider,
                           self.loop_status])
        for widget, css in ((self.gain_slider, "dao-gain"), (self.close_button, "dao-close-loop"),
                            (self.open_button, "dao-open-loop"),
                            (self.loop_status, "dao-loop-status")):
            widget.add_class(css)  # for the page's tests and the user's styles
        # -- health, views, plots, panels ------------------------------------------------
        self.health = w.HTML()
        self.health.add_class("dao-health")
        st = loop.streams
        self.views = {
            "wfs_image": StreamView(st["wfs_image"], colormap="gray", max_fps=fps, width=240,
                                    pump=self._pump),
            "slopes": StreamView(st["slopes"], max_fps=fps, width=300, pump=self._pump),
            "dm_command": StreamView(st["dm_command"], max_fps=fps, width=240,
                                     pump=self._pump),
            "psf": StreamView(st["psf"], scale="log", colormap="inferno", autoscale=False,
                              vmin=1e-4, vmax=1.0, max_fps=min(fps, 10.0), width=240,
                              pump=self._pump),
        }
        self._figures = self._make_plots()
        from dao.widgets.plots import bokeh_widget

        plots = w.HBox([bokeh_widget(self._trend_fig), bokeh_widget(self._lat_fig)])
        self.panels: dict[str, Any] = {}
        children = [title, controls, self.health, w.HBox(list(self.views.values())), plots]
        if panels:
            from dao.widgets.component_panel import ComponentPanel

            roles = ("camera", "slopes", "controller")
            self.panels = {r: ComponentPanel(loop.client(r), pump=self._pump,
                                             log_address=loop.log_address or None)
                           for r in roles}
            for r, panel in self.panels.items():
                panel.add_class(f"dao-panel-{r}")
            acc = w.Accordion(children=[self.panels[r] for r in roles])
            for i, r in enumerate(roles):
                acc.set_title(i, f"{r}: {cfg['components'][r]['name']}")
            acc.selected_index = None
            children.append(acc)
        super().__init__(children)
        self.add_class("dao-dashboard")
        # -- events: health of every process, the controller's gain --------------------
        self._health_events = loop.subscribe(kinds=["health"])
        self._controller_events = loop.subscribe("controller", kinds=["parameter", "state"])
        self._health: dict[str, dict[str, Any]] = {}
        self._health_dirty = True
        self._roles = {c["name"]: r for r, c in cfg["components"].items()}
        self._failed: dict[str, str] = {}  # component in Error -> last line of its reason
        self._gain = loop.gain
        self._applying = False
        self._science_cnt = 0
        self._science_frame = -1
        self._trend_length = int(trend)
        self._latencies: dict[str, np.ndarray] = {}
        self._next_plot = 0.0
        self.error = ""
        self._show_gain(self._gain)
        self._pump.add(self)

    # -- actions ---------------------------------------------------------------------------
    def close_loop(self, gain: float | None = None) -> float:
        """Close the loop at ``gain`` (default the slider's); the gain read back."""
        g = float(self.gain_slider.value if gain is None else gain)
        if g <= 0:
            raise ValueError("a closed loop needs a gain above 0: move the gain slider")
        self.loop.gain = g
        return self._read_back()

    def open_loop(self) -> float:
        """Open the loop: gain 0 and the integrator (so the mirror) back to zero."""
        self.loop.open_loop()
        return self._read_back()

    def _read_back(self) -> float:
        g = self.loop.gain  # asked of the running controller
        self._show_gain(g)
        return g

    def _do(self, action) -> None:
        try:
            action()
        except Exception as exc:  # shown, never raised into the widget's callback
            self.error = f"{type(exc).__name__}: {exc}"
            self.loop_status.value = f"<span style='color:#b00'>{html.escape(self.error)}</span>"

    def _on_gain(self, change: dict[str, Any]) -> None:
        if self._applying:
            return
        if self._gain > 0:  # closed: a new gain is sent at once; open: kept for Close
            self._do(lambda: self.close_loop(change["new"]))

    def _show_gain(self, g: float) -> None:
        self._gain = g
        self._show_status()
        if g > 0 and abs(self.gain_slider.value - g) > 1e-9:
            self._applying = True
            try:
                self.gain_slider.value = g
            finally:
                self._applying = False

    def _show_status(self) -> None:
        """The status line: the components in Error (red, each with the last line of its
        reason) while there are any, else the loop's state as the controller read it back."""
        if self._failed:
            said = "; ".join(
                f"{html.escape(self._roles.get(name, name))} (<b>{html.escape(name)}</b>) in "
                f"Error: {html.escape(why)}" for name, why in sorted(self._failed.items()))
            self.loop_status.value = f"<span style='color:#b00'>{said}</span>"
            return
        state = f"closed, gain {self._gain:.2f}" if self._gain > 0 else "open"
        self.loop_status.value = f"loop <b>{state}</b> (read back from the controller)"

    def _follow_errors(self) -> bool:
        """Take the components in Error from the health events; True if that changed."""
        failed = {name: _last_line(h.get("error_reason")) or "no reason given"
                  for name, h in self._health.items() if h.get("state") == "Error"}
        if failed == self._failed:
            return False
        self._failed = failed
        self._show_status()
        return True

    # -- the pump's side -------------------------------------------------------------------
    def pump_tick(self, now: float, budget: int) -> int:
        if not self.loop.running or not self.loop.streams:  # closed under the dashboard
            self._pump.remove(self)
            self.loop_status.value = ("<span style='color:#b00'>the loop was closed: the "
                                      "dashboard stopped</span>")
            return 1
        sent = 0
        for ev in self._controller_events.drain():
            if ev.get("kind") == "parameter" and ev.get("name") == "gain":
                self._show_gain(float(ev["new"]))
                sent += 2
        for ev in self._health_events.drain():
            self._health[ev["component"]] = ev
            self._health_dirty = True
        if self._health_dirty and self._follow_errors():  # always: it is the news that counts
            sent += 1
        if self._health_dirty and sent < budget:
            self.health.value = self._health_html()
            self._health_dirty = False
            sent += 1
        if now >= self._next_plot and budget - sent >= 2:
            self._next_plot = now + PLOT_PERIOD
            sent += self._update_plots()
        return sent

    def pump_failed(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self.loop_status.value = ("<span style='color:#b00'>dashboard stopped: "
                                  f"{html.escape(self.error)}</span>")

    def _health_html(self) -> str:
        rows = []
        for name, h in sorted(self._health.items()):
            alive = h.get("alive")
            colour = "#080" if alive else "#b00"
            up = h.get("uptime_s")
            rows.append(
                f"<tr><td>{html.escape(name)}</td>"
                f"<td style='color:{colour}'>{'alive' if alive else 'down'}</td>"
                f"<td>{html.escape(str(h.get('state') or '-'))}</td><td>{h.get('pid') or '-'}</td>"
                f"<td>{'-' if up is None else f'{up:.0f} s'}</td><td>{h.get('restarts', 0)}</td>"
                "</tr>")
        head = ("<tr><th>component</th><th>process</th><th>state</th><th>pid</th>"
                "<th>uptime</th><th>restarts</th></tr>")
        return ("<table class='dao-health' style='border-spacing:12px 0'>" + head
                + "".join(rows) + "</table>")

    # -- plots -----------------------------------------------------------------------------
    def _make_plots(self) -> tuple:
        from bokeh.models import ColumnDataSource, LinearAxis, Range1d
        from bokeh.plotting import figure

        self._trend = ColumnDataSource({"frame": [], "strehl": [], "residual": []})
        f = figure(width=460, height=260, title="science exposures", x_axis_label="frame",
                   y_axis_label="Strehl ratio", y_range=Range1d(0, 1), toolbar_location=None)
        f.line("frame", "strehl", source=self._trend, color="#1f77b4", legend_label="Strehl")
        f.extra_y_ranges = {"res": Range1d(0, 3)}
        f.add_layout(LinearAxis(y_range_name="res", axis_label="residual rms (rad)"), "right")
        f.line("frame", "residual", source=self._trend, y_range_name="res", color="#d62728",
               legend_label="residual")
        f.legend.location = "top_left"
        self._trend_fig = f
        self._lat = ColumnDataSource({"left": [], "right": [], "top": [], "stage": [],
                                      "color": []})
        g = figure(width=460, height=260, title="latency per stage", x_axis_label="latency (us)",
                   y_axis_label="frames", toolbar_location=None)
        g.quad(left="left", right="right", top="top", bottom=0, source=self._lat, color="color",
               alpha=0.5, legend_field="stage")
        g.legend.location = "top_right"
        self._lat_fig = g
        return f, g

    def _update_plots(self) -> int:
        sent = 0
        sci = self.loop.streams["science"]
        cnt = sci.get_counter()
        new = min(cnt - self._science_cnt, sci.frames_available)
        if new > 0:
            ds = self.loop.science(new)
            # frames written since the counter was read may be in the history already
            ds = ds.isel(frame=np.flatnonzero(ds.frame.values > self._science_frame))
            frames = ds.frame.values
            self._trend.stream({"frame": frames.tolist(),
                                "strehl": ds.strehl_frame.values.tolist(),
                                "residual": ds.residual_rms_frame.values.tolist()},
                               rollover=self._trend_length)
            self._trend_fig.extra_y_ranges["res"].end = float(
                max(1.0, 1.1 * max(self._trend.data["residual"])))
            self._science_cnt = cnt
            if frames.size:
                self._science_frame = int(frames[-1])
            sent += 2
        lat = loop_latencies(self.loop, 2000)
        if lat["camera_to_command"].size:
            self._latencies = lat
            data: dict[str, list] = {k: [] for k in ("left", "right", "top", "stage", "color")}
            us = {k: v * 1e6 for k, v in lat.items()}
            hi = float(np.percentile(us["camera_to_command"], 99.5)) * 1.1
            edges = np.linspace(0, max(hi, 1.0), 61)
            for stage, colour in (("camera_to_slopes", "#2ca02c"),
                                  ("slopes_to_command", "#ff7f0e"),
                                  ("camera_to_command", "#1f77b4")):
                counts, _ = np.histogram(us[stage], edges)
                data["left"] += edges[:-1].tolist()
                data["right"] += edges[1:].tolist()
                data["top"] += counts.tolist()
                p50, p99 = np.percentile(us[stage], [50, 99])
                label = f"{stage.replace('_', ' ')}: p50 {p50:.0f}, p99 {p99:.0f} us"
                data["stage"] += [label] * len(counts)
                data["color"] += [colour] * len(counts)
            self._lat.data = data
            sent += 1
        return sent

    # -- what the plots show --------------------------------------------------------------
    @property
    def trend(self):
        """The trend plot's data: ``strehl`` and ``residual_rms`` (rad) of each science
        exposure, by camera ``frame`` (an :class:`xarray.Dataset`)."""
        import xarray as xr

        d = self._trend.data
        return xr.Dataset({"strehl": ("frame", np.asarray(d["strehl"], float)),
                           "residual_rms": ("frame", np.asarray(d["residual"], float),
                                            {"units": "rad"})},
                          coords={"frame": np.asarray(d["frame"], np.int64)})

    @property
    def latencies(self) -> dict[str, np.ndarray]:
        """The per-frame latencies (s) the histograms show, by stage."""
        return dict(self._latencies)

    # -- life cycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the views, the panels and the event subscriptions; leave the pump."""
        if hasattr(self, "_pump"):  # not when __init__ failed before it was set
            self._pump.remove(self)
        for v in getattr(self, "views", {}).values():
            v.close()
        for p in getattr(self, "panels", {}).values():
            p.close()
        for name in ("_health_events", "_controller_events"):
            sub = getattr(self, name, None)
            if sub is not None:
                sub.close()
        super().close()

    def __repr__(self) -> str:
        return f"<LoopDashboard of {self.loop!r}>"


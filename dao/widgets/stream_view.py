"""A live view of a stream: frames to the browser as binary buffers, acknowledged.

The kernel's :class:`~dao.widgets.pump.Pump` reads the newest frame of the stream and sends it
to the browser as one custom message: a small JSON header (counters, time, statistics) and the
frame's bytes as a binary buffer (never base64 or JSON lists). The browser draws it on a canvas
and acknowledges it; at most ``max_in_flight`` frames (2) are unacknowledged at any time. A
frame is read when it can be sent, so the newest wins and nothing queues: a slow browser sees
fewer frames, never older ones.
"""

from __future__ import annotations

import collections
import math
import time
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from dao.widgets.kernel import ack_subshell, route_to_subshell
from dao.widgets.layout import frame_layout
from dao.widgets.pump import Pump, get_pump

__all__ = ["StreamView", "PALETTES"]

_HERE = Path(__file__).resolve().parent


def _palettes() -> dict[str, list[str]]:
    from bokeh import palettes as p

    return {"viridis": list(p.Viridis256), "inferno": list(p.Inferno256),
            "magma": list(p.Magma256), "cividis": list(p.Cividis256),
            "gray": list(p.Greys256),
            "RdBu": list(p.interp_palette(p.RdBu11, 256))[::-1]}


#: Colour maps a view offers (256 colours each, from bokeh's palettes).
PALETTES = tuple(_palettes())


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._t: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, count: int) -> None:
        self._t.append((now, count))

    def rate(self, now: float) -> float:
        t = self._t
        while t and now - t[0][0] > self.window:
            t.popleft()
        if len(t) < 2:
            return 0.0
        span = t[-1][0] - t[0][0]
        return (t[-1][1] - t[0][1]) / span if span > 0 else 0.0


def _region_stats(a: np.ndarray, roi: list[int], kind: str) -> dict[str, float] | None:
    """mean, std, min, max, sum and count of the finite values of a region of ``a``."""
    if kind == "vector":
        if len(roi) != 2:
            return None
        sel = a[:, max(0, roi[0]):max(0, roi[1])]
    else:
        if len(roi) != 4:
            return None
        x0, y0, x1, y1 = roi
        sel = a[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
    v = sel[np.isfinite(sel)] if sel.dtype.kind == "f" else sel.ravel()
    if v.size == 0:
        return {"n": 0}
    v = v.astype(np.float64)
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()),
            "min": float(v.min()), "max": float(v.max()), "sum": float(v.sum())}


class StreamView(anywidget.AnyWidget):
    """A live view of a stream in a notebook.

    Images (cameras, wavefront sensors, PSFs), maps on a grid (DM commands by actuator, slopes
    by subaperture, as the stream's labels place them) and curves (slopes, commands, modes).
    The toolbar sets the scale (linear, log), the limits (auto or fixed), the colour map; it
    freezes the view and steps back through the stream's FIFO history; drag on the image to
    get the statistics of a region; click to put a target cross. The status line shows the
    source's frame rate, the display rate, the age of the frame shown and the frames not shown.

    Parameters
    ----------
    stream : dao.shm or str
        The stream, or its name or path.
    kind : str, optional
        ``"image"``, ``"grid"`` or ``"vector"`` (default: from the labels, see
        :func:`dao.widgets.layout.frame_layout`).
    max_fps : float
        Most frames a second sent to the browser.
    pump : dao.widgets.Pump, optional
        The pump to register with (default the kernel's, :func:`dao.widgets.get_pump`).
    start : bool
        Register with the pump at once (default); False: call :meth:`start` later.
    **kwargs
        Initial values of the traits (``scale``, ``colormap``, ``vmin``, ``vmax``,
        ``autoscale``, ``roi``, ``cross``, ``width``, ``title``...).

    Examples
    --------
    >>> view = StreamView("wfs_image", colormap="gray")   # doctest: +SKIP
    >>> view                                               # shows it in the notebook
    >>> view.stats()["display_rate_hz"]                    # frames drawn per second
    """

    _esm = _HERE / "stream_view.js"
    _css = _HERE / "stream_view.css"

    title = t.Unicode("").tag(sync=True)
    kind = t.Unicode("image").tag(sync=True)
    series = t.List(t.Unicode()).tag(sync=True)
    scale = t.Enum(["linear", "log"], "linear").tag(sync=True)
    autoscale = t.Bool(True).tag(sync=True)
    vmin = t.Float(0.0).tag(sync=True)
    vmax = t.Float(1.0).tag(sync=True)
    colormap = t.Unicode("viridis").tag(sync=True)
    palettes = t.Dict().tag(sync=True)
    frozen = t.Bool(False).tag(sync=True)
    offset = t.Int(0).tag(sync=True)
    depth = t.Int(1).tag(sync=True)
    roi = t.List(t.Int()).tag(sync=True)
    cross = t.List(t.Float()).tag(sync=True)
    max_fps = t.Float(30.0).tag(sync=True)
    width = t.Int(320).tag(sync=True)

    #: Frames sent and not yet acknowledged, at most.
    max_in_flight = 2
    #: Seconds after which an unacknowledged frame is taken as lost (a view re-rendered).
    ack_timeout = 2.0

    def __init__(self, stream: Any, kind: str | None = None, *, max_fps: float = 30.0,
                 pump: Pump | None = None, start: bool = True, **kwargs: Any) -> None:
        from dao.streams.stream import shm

        self.stream = stream if isinstance(stream, shm) else shm(str(stream))
        self._layout = frame_layout(self.stream, kind)
        if "colormap" in kwargs and kwargs["colormap"] not in PALETTES:
            raise ValueError(f"unknown colormap {kwargs['colormap']!r}: use one of "
                             f"{', '.join(PALETTES)}")
        if not max_fps > 0:
            raise ValueError(f"max_fps must be positive, not {max_fps!r}")
        kwargs.setdefault("title", self.stream.name)
        if self._layout.kind == "grid" and self._layout.series:
            kwargs.setdefault("colormap", "RdBu")
        super().__init__(kind=self._layout.kind, series=self._layout.series,
                         palettes=_palettes(), depth=self.stream.depth, max_fps=max_fps,
                         **kwargs)
        self._buf = np.empty(self.stream.shape, self.stream.dtype)
        self._pump = pump or get_pump()
        self._seq = 0  # frames sent
        self._acked = 0  # highest sequence number acknowledged
        self._shown = 0  # frames acknowledged (drawn)
        self._last_send = -math.inf
        self._next_due = -math.inf
        self._last_cnt0 = -1  # counter of the last frame sent
        self._frozen_cnt0 = -1
        self._dirty = True
        self.frames_skipped = 0
        self._source_rate = _Rate()
        self._display_rate = _Rate()
        self._ages: collections.deque[float] = collections.deque(maxlen=2000)
        self.last_frame: np.ndarray | None = None
        self.last_info = None
        self.region: dict[str, float] | None = None
        self.error = ""
        # the browser's acknowledgements are handled in a kernel subshell: cells may run
        self._subshell = ack_subshell()
        route_to_subshell(self, self._subshell)
        self.on_msg(self._on_msg)
        self.observe(self._mark_dirty, names=["roi", "offset", "frozen"])
        self._started = False
        if start:
            self.start()

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> StreamView:
        """Register with the pump: the view updates from now on."""
        self._started = True
        self._pump.add(self)
        return self

    def stop(self) -> None:
        """Leave the pump: the view keeps its last frame."""
        self._started = False
        pump = getattr(self, "_pump", None)  # None: closed before it was made
        if pump is not None:
            pump.remove(self)

    def close(self) -> None:
        """Leave the pump and close the widget (the stream stays open for its owner)."""
        self.stop()
        super().close()

    @property
    def running(self) -> bool:
        """The pump feeds this view."""
        return self._started and self in self._pump.sources

    # -- what the kernel sees --------------------------------------------------------------
    def stats(self) -> dict[str, float | int]:
        """The view's counters.

        Returns
        -------
        dict
            ``frames_sent``, ``frames_shown`` (acknowledged by the browser),
            ``frames_skipped`` (written by the source and never sent), ``in_flight``,
            ``source_rate_hz``, ``display_rate_hz``, ``age_p50_ms`` and ``age_p99_ms`` (from
            the frame's write to its drawing, measured by the browser; NaN before the first).
        """
        now = time.monotonic()
        ages = np.asarray(self._ages) if self._ages else np.array([np.nan])
        return {"frames_sent": self._seq, "frames_shown": self._shown,
                "frames_skipped": self.frames_skipped, "in_flight": self._seq - self._acked,
                "source_rate_hz": self._source_rate.rate(now),
                "display_rate_hz": self._display_rate.rate(now),
                "age_p50_ms": float(np.percentile(ages, 50)),
                "age_p99_ms": float(np.percentile(ages, 99))}

    @property
    def frame(self):
        """The frame last sent to the browser, as a labelled :class:`xarray.DataArray`."""
        import xarray as xr

        from dao.streams.labels import coordinates, get_labels, labelled_shape

        if self.last_frame is None:
            raise RuntimeError("no frame shown yet: the stream has not been written, or the "
                               "view is not displayed")
        spec = get_labels(self.stream)
        info = self.last_info
        return xr.DataArray(self.last_frame.reshape(labelled_shape(self.stream, spec)),
                            dims=spec["dims"], coords=coordinates(spec), name=spec["name"],
                            attrs={**spec["attrs"], "cnt0": info.cnt0, "cnt2": info.cnt2,
                                   "time_ns": info.time_ns})

    # -- the pump's side -------------------------------------------------------------------
    def pump_tick(self, now: float, budget: int) -> int:
        s = self.stream
        if s.closed:  # its owner closed it (a loop closed before its dashboard, say)
            self.error = "the stream was closed: this view stopped"
            self.stop()
            self.send({"type": "note", "text": self.error})
            return 1
        cnt = s.get_counter()
        self._source_rate.add(now, cnt)
        in_flight = self._seq - self._acked
        if in_flight >= self.max_in_flight:
            if now - self._last_send < self.ack_timeout:
                return 0
            self._acked = self._seq  # lost: a view re-rendered, or its page closed
        if self.frozen:
            if not self._dirty:
                return 0
            return self._send_frozen(cnt)
        if cnt == self._last_cnt0 and not self._dirty:
            return 0
        if now < self._next_due or cnt == 0:
            return 0
        data = s.get_data(out=self._buf)
        info = s.last_read
        if self._last_cnt0 >= 0 and info.cnt0 > self._last_cnt0:
            self.frames_skipped += info.cnt0 - self._last_cnt0 - 1
        return self._send_frame(data, info, now)

    def _send_frozen(self, cnt: int) -> int:
        """Send the frame ``offset`` frames before the one shown when the view froze."""
        from dao.streams.frames import FrameInfo

        s = self.stream
        if cnt == 0:
            return 0
        if self._frozen_cnt0 < 0:
            self._frozen_cnt0 = self._last_cnt0 if self._last_cnt0 > 0 else cnt
        c = self._frozen_cnt0 - max(0, self.offset)
        self._dirty = False
        if c < 1 or cnt - c >= s.depth:
            oldest = max(1, cnt - s.depth + 1)
            self.error = (f"frame {c} is not in the FIFO (it keeps frames {oldest} to {cnt}): "
                          "step forward")
            self.send({"type": "note", "text": self.error})
            return 1
        data = s.get_data_arbitrary(c - 1, out=self._buf)  # frame c is in slot (c - 1) % depth
        meta = s.history_metadata(cnt - c + 1)
        now_cnt = s.get_counter()
        if now_cnt - c >= s.depth or int(meta.cnt0[0]) != c:
            self.error = f"frame {c} was overwritten while it was read: step forward"
            self.send({"type": "note", "text": self.error})
            return 1
        self.error = ""
        info = FrameInfo(c, int(meta.cnt2[0]), int(meta.time_ns[0]), (c - 1) % s.depth)
        return self._send_frame(data, info, time.monotonic())

    def _send_frame(self, data: np.ndarray, info, now: float) -> int:
        lay = self._layout
        img = lay.apply(data)
        finite = img[np.isfinite(img)] if img.dtype.kind == "f" else img
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        pos = finite[finite > 0] if finite.size else finite
        self.region = _region_stats(img, list(self.roi), lay.kind)
        self._seq += 1
        self._dirty = False
        self._last_send = now
        # paced on a schedule, not from the last send: the pump's ticks do not slow it down
        self._next_due = max(self._next_due + 1.0 / self.max_fps, now)
        self._last_cnt0 = info.cnt0 if not self.frozen else self._last_cnt0
        self.last_frame = np.array(data, copy=True)
        self.last_info = info
        now_ns = time.time_ns()
        self.send({
            "type": "frame", "seq": self._seq, "shape": list(img.shape),
            "dtype": img.dtype.name, "cnt0": int(info.cnt0), "cnt2": int(info.cnt2),
            "time_ms": info.time_ns / 1e6, "age_ms": (now_ns - info.time_ns) / 1e6,
            "lo": lo, "hi": hi, "lo_pos": float(pos.min()) if pos.size else 1e-12,
            "region": self.region, "source_hz": self._source_rate.rate(now),
            "display_hz": self._display_rate.rate(now), "skipped": self.frames_skipped,
            "frozen": bool(self.frozen), "back": int(self.offset) if self.frozen else 0,
        }, buffers=[img.tobytes()])
        route_to_subshell(self, self._subshell)
        return 1

    def pump_failed(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self.send({"type": "note", "text": f"stopped: {self.error}"})

    def _on_msg(self, _widget: Any, content: dict[str, Any], buffers: list) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ack":
            seq = int(content.get("seq", 0))
            if seq > self._acked:
                self._acked = min(seq, self._seq)
            self._shown += 1
            now = time.monotonic()
            self._display_rate.add(now, self._shown)
            age = content.get("age_ms")
            if isinstance(age, int | float) and math.isfinite(age):
                self._ages.append(float(age))
        elif kind == "ready":  # a view (re)rendered: it needs a frame now
            self._acked = self._seq
            self._dirty = True

    def _mark_dirty(self, change: dict[str, Any]) -> None:
        if change["name"] == "frozen":
            self._frozen_cnt0 = -1
            if not change["new"]:
                self.offset = 0
        if change["name"] == "offset" and change["new"] < 0:
            self.offset = 0
            return
        self._dirty = True

    def __repr__(self) -> str:
        s = self.stats()
        stream = self.stream
        name = "closed stream" if stream.closed else stream.name
        return (f"<StreamView {name} ({self.kind}): {s['frames_shown']} frames "
                f"shown, {s['display_rate_hz']:.0f} of {s['source_rate_hz']:.0f} frames/s>")


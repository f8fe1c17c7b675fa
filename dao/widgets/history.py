"""A history view: scrub the FIFO history of streams, or a recording, as xarray.

:class:`HistoryView` takes the frames a stream's FIFO holds (:func:`dao.streams.labels.history`),
several streams, a recording (:func:`dao.streams.telemetry.open_recording`) or any
:class:`xarray.DataArray` with a ``frame`` dim, and shows:

- a slider through the frames, with each stream's frame counter ``cnt0``, source frame id
  ``cnt2`` and write time at the slider's position;
- the frame at the slider, per stream: an image, a map on the actuator or subaperture grid, or
  curves (as :func:`dao.widgets.layout.frame_layout` draws them);
- the time series of one element or mode, against time in ms since the first frame, and its
  temporal power spectrum (one-sided, Welch: :func:`welch_psd`);
- several streams aligned by frame id (``cnt2``): camera frame N, the slopes computed from it
  and the DM command they caused carry ``cnt2 = N`` and are shown together;
- a Save row that writes a range of frames of every stream to a recording file ("pick a bad
  stretch and save it").

What is selected is available in the kernel: :attr:`HistoryView.selection` (the time series,
labelled), :attr:`HistoryView.frame`, :attr:`HistoryView.spectrum`.

The plots follow the slider and the selectors as you move them, at most ``max_fps`` times a
second (15): the drawing is done by the kernel's :class:`~dao.widgets.pump.Pump` within its
message budget, and the newest position wins.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as w
import numpy as np

from dao.streams.stream import shm
from dao.widgets.plots import LoadsBokeh, bokeh_widget
from dao.widgets.pump import Pump, get_pump

__all__ = ["HistoryView", "welch_psd", "time_ms", "match_frames"]

#: Frames of a recording loaded into memory at once when they fit in this many bytes (else
#: read from the file as needed).
LOAD_BYTES = 512 << 20

_FRAME, _SERIES = 1, 2  # what a render redraws
_RECORDING_SUFFIXES = (".nc", ".nc4", ".h5", ".zarr")
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f")


# ---------------------------------------------------------------------------------------------
# numbers


def time_ms(times: Any) -> np.ndarray:
    """Times as milliseconds since the first one.

    Parameters
    ----------
    times : array_like of datetime64, or xarray.DataArray
        Frame times, e.g. the ``time`` coordinate of a history.

    Returns
    -------
    numpy.ndarray
        float64 ms since ``times[0]``: a real time axis (a timedelta divided by
        ``np.timedelta64(1, "ms")``, never the raw nanoseconds read as a number).

    Raises
    ------
    ValueError
        If the times are not datetime64.
    """
    t = np.asarray(getattr(times, "values", times))
    if t.dtype.kind != "M":
        raise ValueError(f"times must be datetime64, not {t.dtype}: pass the 'time' "
                         "coordinate of a history or recording")
    t = t.astype("datetime64[ns]")
    if t.size == 0:
        return np.zeros(0)
    return (t - t[0]) / np.timedelta64(1, "ms")


def welch_psd(x: Any, fs: float, nperseg: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectral density of a uniformly sampled signal (Welch's method).

    The signal is cut into segments of ``nperseg`` samples overlapping by half; each segment
    has its mean removed and is multiplied by a periodic Hann window; the squared moduli of
    their FFTs are averaged and scaled to a density, so that ``sum(p) * (f[1] - f[0])`` is the
    signal's variance (Parseval). What ``scipy.signal.welch`` computes with its defaults.

    Parameters
    ----------
    x : array_like
        The samples, 1-D, in any unit u.
    fs : float
        Sampling frequency, in Hz (e.g. the frames' mean rate).
    nperseg : int, optional
        Samples per segment (default 256, at most ``len(x)``): the frequency resolution is
        ``fs / nperseg``; more segments average more noise away.

    Returns
    -------
    f : numpy.ndarray
        Frequencies, in Hz, from 0 to ``fs / 2``.
    p : numpy.ndarray
        Power spectral density, in u**2/Hz.

    Raises
    ------
    ValueError
        Fewer than 2 samples, a non-positive ``fs``, or ``nperseg`` below 2.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"a power spectrum needs at least 2 samples, got {x.size}")
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"sampling frequency fs = {fs} Hz: it must be positive")
    nperseg = min(x.size, 256 if nperseg is None else int(nperseg))
    if nperseg < 2:
        raise ValueError(f"nperseg = {nperseg}: segments need at least 2 samples")
    step = nperseg - nperseg // 2
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(nperseg) / nperseg)  # periodic Hann
    segments = np.lib.stride_tricks.sliding_window_view(x, nperseg)[::step]
    segments = segments - segments.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(segments * window, axis=1)) ** 2
    p = power.mean(axis=0) / (fs * np.sum(window ** 2))
    p[1:] *= 2.0  # one-sided: the negative frequencies folded in...
    if nperseg % 2 == 0:
        p[-1] /= 2.0  # ...but Nyquist has no twin
    return np.fft.rfftfreq(nperseg, 1.0 / fs), p


def _unique(a: np.ndarray) -> bool:
    return a.size == np.unique(a).size


def match_frames(histories: Mapping[str, Any], on: str) -> dict[str, tuple[np.ndarray, str]]:
    """For each frame of ``on``, the matching frame of every history.

    Frames match by source frame id ``cnt2`` (camera frame N, its slopes and the DM command it
    caused all carry ``cnt2 = N``). A history whose ``cnt2`` cannot match (repeated values,
    e.g. all 0 when its writer gave none, or no value in common with ``on``) is matched by time
    instead, as :func:`dao.streams.telemetry.align` does: its newest frame written not after
    the frame of ``on``.

    Parameters
    ----------
    histories : mapping of str to xarray.DataArray
        Histories with a ``frame`` dim and ``cnt2`` and ``time`` coordinates along it.
    on : str
        The history whose frames are matched.

    Returns
    -------
    dict of str to (numpy.ndarray, str)
        Per history: the index of its matching frame for each frame of ``on`` (-1: none), and
        how it was matched: ``"self"``, ``"cnt2"`` or ``"time"``.
    """
    ref = histories[on]
    rc2 = np.asarray(ref["cnt2"].values)
    rt = np.asarray(ref["time"].values).astype("datetime64[ns]").astype(np.int64)
    out: dict[str, tuple[np.ndarray, str]] = {}
    for name, da in histories.items():
        if name == on:
            out[name] = (np.arange(rc2.size), "self")
            continue
        c2 = np.asarray(da["cnt2"].values)
        if _unique(rc2) and _unique(c2) and c2.size:
            order = np.argsort(c2, kind="stable")
            sorted_c2 = c2[order]
            pos = np.clip(np.searchsorted(sorted_c2, rc2), 0, c2.size - 1)
            found = sorted_c2[pos] == rc2
            if found.any():
                out[name] = (np.where(found, order[pos], -1), "cnt2")
                continue
        t = np.asarray(da["time"].values).astype("datetime64[ns]").astype(np.int64)
        order = np.argsort(t, kind="stable")
        pos = np.searchsorted(t[order], rt, side="right") - 1
        out[name] = (np.where(pos >= 0, order[np.maximum(pos, 0)], -1), "time")
    return out


# ---------------------------------------------------------------------------------------------
# sources


def _is_recording_path(source: Any) -> bool:
    if not isinstance(source, (str, os.PathLike)):
        return False
    return os.fspath(source).rstrip("/").endswith(_RECORDING_SUFFIXES)


def _normalise(da: Any, name: str) -> Any:
    """A history as the view needs it: ``frame`` first, ``time`` (datetime64[ns]), ``cnt0``
    and ``cnt2`` along ``frame`` (``cnt0`` 1, 2, ... and ``cnt2`` 0 when missing, as a stream
    writes them)."""
    if "frame" not in da.dims:
        raise ValueError(f"{name!r} has dims {da.dims} and no 'frame' dim: a history has one "
                         "frame per step along 'frame' (dao.streams.labels.history, "
                         "open_recording)")
    da = da.transpose("frame", ...)
    n = da.sizes["frame"]
    if n == 0:
        raise ValueError(f"{name!r} has no frames yet: write frames to it (set_data) or wait "
                         "for its writer, then make the view again")
    if "time" not in da.coords or da["time"].dims != ("frame",):
        raise ValueError(f"{name!r} has no 'time' coordinate along 'frame': give its frames "
                         "their write times, da.assign_coords(time=('frame', times)) with "
                         "datetime64 times")
    t = np.asarray(da["time"].values)
    if t.dtype.kind != "M":
        raise ValueError(f"the 'time' coordinate of {name!r} is {t.dtype}, not datetime64: "
                         "convert it, e.g. times_ns.astype('datetime64[ns]')")
    coords = {"time": ("frame", t.astype("datetime64[ns]"))}
    for c, default in (("cnt0", np.arange(1, n + 1, dtype=np.uint64)),
                       ("cnt2", np.zeros(n, np.uint64))):
        coords[c] = ("frame", np.asarray(da[c].values) if c in da.coords else default)
    da = da.assign_coords(coords)
    if da.name is None:
        da = da.rename(name)
    return da


def _from_dataset(ds: Any, name: str, group: bool) -> dict[str, Any]:
    """The frame variables of a Dataset: ``{name: DataArray}`` (one group of a recording has
    one, named after the stream's labels; it is keyed by the group's name)."""
    names = [v for v, da in ds.data_vars.items() if "frame" in da.dims]
    if not names:
        raise ValueError(f"{name!r} holds no variable with a 'frame' dim (it has "
                         f"{list(ds.data_vars)}): it is not a history or recording")
    if group and len(names) == 1:
        return {name: ds[names[0]]}
    return {(f"{name}/{v}" if group else str(v)): ds[v] for v in names}


@dataclass
class _Source:
    """Where the histories came from: streams (re-readable by :meth:`HistoryView.refresh`),
    or a recording or DataArrays (fixed)."""

    histories: dict[str, Any]
    streams: dict[str, shm | str] = field(default_factory=dict)
    closers: list[Any] = field(default_factory=list)
    label: str = ""


def _read_streams(streams: Mapping[str, shm | str], n: int | None) -> dict[str, Any]:
    from dao.streams import labels

    out = {}
    for key, s in streams.items():
        stream = s if isinstance(s, shm) else shm(s)
        try:
            if stream.frames_available == 0:
                raise ValueError(f"stream {key!r} has no frames yet: write frames to it "
                                 "(set_data) or wait for its writer, then make the view again "
                                 "(or call refresh())")
            count = stream.frames_available if n is None else min(n, stream.frames_available)
            out[key] = _normalise(labels.history(stream, count), key)
        finally:
            if stream is not s:
                stream.close()
    return out


def _choose(found: dict[str, Any], streams: Sequence[str] | None, what: str) -> dict[str, Any]:
    if streams is None:
        return found
    if isinstance(streams, str):
        streams = [streams]
    missing = [s for s in streams if s not in found]
    if missing:
        raise ValueError(f"{what} has no stream {missing[0]!r}: it holds {sorted(found)}; "
                         "pass streams= names among those")
    return {s: found[s] for s in streams}


def _collect(source: Any, streams: Sequence[str] | None, n: int | None) -> _Source:
    """The histories of a source (see :class:`HistoryView`), newest ``n`` frames of each."""
    import xarray as xr

    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n = {n!r}: give the number of frames, a positive integer, or None "
                         "for all of them")

    def last(da: Any) -> Any:
        return da if n is None else da.isel(frame=slice(-int(n), None))

    if isinstance(source, xr.DataArray):
        name = str(source.name) if source.name is not None else "data"
        found = {name: source}
        return _Source({k: _normalise(last(v), k) for k, v in
                        _choose(found, streams, "the DataArray").items()}, label=name)
    if isinstance(source, xr.Dataset):
        found = _from_dataset(source, "dataset", group=False)
        return _Source({k: _normalise(last(v), k) for k, v in
                        _choose(found, streams, "the Dataset").items()}, label="dataset")
    if _is_recording_path(source):
        from dao.streams.telemetry import open_recording

        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no recording at {path!r}: record one with "
                                    "dao.streams.telemetry.record() or write_history()")
        groups = open_recording(path)
        try:
            found: dict[str, Any] = {}
            for g, ds in groups.items():
                found.update(_from_dataset(ds, g, group=True))
            chosen = _choose(found, streams, f"recording {path!r}")
            histories = {k: _normalise(last(v), k) for k, v in chosen.items()}
            for k, da in histories.items():
                if da.nbytes <= LOAD_BYTES:
                    histories[k] = da.load()
        except BaseException:
            for ds in groups.values():
                ds.close()
            raise
        return _Source(histories, closers=list(groups.values()),
                       label=os.path.basename(path.rstrip("/")))
    if isinstance(source, Mapping):
        values = list(source.values())
        if values and all(isinstance(v, (xr.Dataset, xr.DataArray)) for v in values):
            found = {}
            for g, v in source.items():
                if isinstance(v, xr.Dataset):
                    found.update(_from_dataset(v, str(g), group=True))
                else:
                    found[str(g)] = v
            chosen = _choose(found, streams, "the recording")
            return _Source({k: _normalise(last(v), k) for k, v in chosen.items()},
                           label="recording")
        if values and all(isinstance(v, (shm, str, os.PathLike)) for v in values):
            keyed = {str(k): v for k, v in source.items()}
        else:
            raise TypeError("a dict source maps names to streams (dao.shm or names) or to "
                            "xarray Datasets/DataArrays (open_recording), not to "
                            f"{sorted({type(v).__name__ for v in values}) or 'nothing'}")
    elif isinstance(source, (shm, str, os.PathLike)):
        key = source.name if isinstance(source, shm) else os.path.basename(os.fspath(source))
        keyed = {key: source}
    elif isinstance(source, Sequence) and source and all(isinstance(s, (shm, str, os.PathLike))
                                                         for s in source):
        keyed = {}
        for s in source:
            key = s.name if isinstance(s, shm) else os.path.basename(os.fspath(s))
            if key in keyed:
                raise ValueError(f"two streams are named {key!r}: pass a dict of name to "
                                 "stream")
            keyed[key] = s
    else:
        raise TypeError(f"cannot show the history of a {type(source).__name__}: give a stream "
                        "(dao.shm or its name), a list or dict of streams, an xarray.DataArray "
                        "with a 'frame' dim, a recording path (.nc, .zarr) or the dict "
                        "open_recording() returns")
    keyed = _choose(keyed, streams, "the sources given")
    keys = list(keyed)
    histories = _read_streams(keyed, n)
    return _Source(histories, streams=keyed, label=", ".join(keys))


# ---------------------------------------------------------------------------------------------
# frames as drawn


def _spec(da: Any) -> dict[str, Any]:
    """A frame's labels as :mod:`dao.streams.labels` stores them (for the grid layout)."""
    dims = [d for d in da.dims if d != "frame"]
    coords = {}
    for cname, c in da.coords.items():
        if "frame" in c.dims or not c.dims:
            continue
        coords[str(cname)] = {"dims": list(c.dims), "data": np.asarray(c.values)}
    return {"dims": dims, "coords": coords, "name": da.name, "attrs": dict(da.attrs)}


@dataclass
class _Panel:
    """The drawing of one stream's frames."""

    name: str
    kind: str  # "image", "grid" or "vector"
    fig: Any
    source: Any
    marker: Any
    series: list[str] = field(default_factory=list)
    layout: Any = None  # grid: dao.widgets.layout.FrameLayout
    shape: tuple[int, ...] = ()
    title: str = ""


def _kind(da: Any) -> tuple[str, Any]:
    """How a history's frames are drawn, as :func:`dao.widgets.layout.frame_layout` decides
    for a stream: ``"grid"`` (with its layout), ``"vector"`` or ``"image"``."""
    from dao.widgets.layout import layout_for

    shape = tuple(da.shape[1:])
    if len(shape) == 0:
        return "vector", None
    lay = layout_for(_spec(da), shape, name=str(da.name))
    return lay.kind, (lay if lay.kind == "grid" else None)


def _value_label(da: Any, dim: str, i: int) -> str:
    if dim in da.coords and da[dim].dims == (dim,):
        v = da[dim].values[i]
        return str(v.item() if hasattr(v, "item") else v)
    return str(i)


# ---------------------------------------------------------------------------------------------
# the view


class HistoryView(LoadsBokeh, w.VBox):
    """Scrub the frame history of streams or of a recording; time series and power spectrum
    of one element; streams aligned by frame id; save a stretch of frames.

    Parameters
    ----------
    source : dao.shm, str, os.PathLike, sequence, dict or xarray object
        What to show:

        - a stream (``dao.shm`` or its name): the frames its FIFO holds now;
        - a list of streams, or a dict of name to stream;
        - a recording path (``.nc``, ``.zarr``), or the ``{name: Dataset}`` dict
          :func:`dao.streams.telemetry.open_recording` returns;
        - an :class:`xarray.DataArray` with a ``frame`` dim and a ``time`` coordinate along it
          (``cnt0`` and ``cnt2`` too, if it has them), or a Dataset of such variables.
    streams : sequence of str, optional
        The streams to show, in this order (default all). The first one is the reference: the
        slider goes through its frames, and the others show their frame with the same
        ``cnt2`` (see :func:`match_frames`).
    element : int, tuple of int or dict, optional
        The element whose time series and spectrum are shown (default the first): a flat
        index into the frame (for a vector, the element, actuator or mode number); one index
        per frame dim; or ``{dim: value}``, a value of the dim's coordinate where it has one
        (``{"axis": "x", "subaperture": 12}``), else an index (``{"actuator": 5}``). A dict
        picks the first stream that has all its dims, unless ``series`` is given.
    n : int, optional
        The newest ``n`` frames of each stream or recording (default all).
    series : str, optional
        The stream whose element is shown (default the first, or the one ``element`` names).
    nperseg : int
        Frames per Welch segment of the power spectrum (at most the frames there are).
    max_fps : float
        Most redraws a second while the slider or a selector moves (the newest position wins).
    pump : dao.widgets.Pump, optional
        The pump that redraws (default the kernel's, :func:`dao.widgets.get_pump`).
    frame_rate : float, optional
        The source's frame rate in Hz: times are then frame ids (``cnt2``) over it, and the
        spectra use it (e.g. a simulated bench, whose 1 kHz is not the machine's pace).
        Default: the frames' write times and their mean rate.
    width : int
        Width of the plots, in pixels.

    Raises
    ------
    ValueError
        A stream without frames yet, an element out of range or not found, a stream name
        that the source does not hold, a history without a ``time`` coordinate.
    TypeError
        A source of another type.
    FileNotFoundError
        A recording path where there is no file.

    Examples
    --------
    >>> view = HistoryView(["wfs", "slopes", "dm"], element={"actuator": 40})  # doctest: +SKIP
    >>> view                                      # the widget
    >>> view.position = 100                       # the slider (also dragged in the page)
    >>> view.frames["slopes"]                     # slopes with the cnt2 of camera frame 100
    >>> ts = view.selection                       # DataArray: actuator 40 over the frames
    >>> view.select(axis="y", subaperture=3)      # slopes[y, 3] (stream found by its dims)
    >>> view.save("bad_stretch.nc", 90, 120)      # frames 90 to 119 of every stream
    """

    def __init__(self, source: Any, *, streams: Sequence[str] | None = None,
                 element: Any = None, n: int | None = None, series: str | None = None,
                 nperseg: int = 256, max_fps: float = 15.0, pump: Pump | None = None,
                 width: int = 900, frame_rate: float | None = None) -> None:
        if frame_rate is not None and not frame_rate > 0:
            raise ValueError(f"frame_rate = {frame_rate}: give the source's frame rate in Hz "
                             "(positive), or None for the frames' write times")
        self.frame_rate = float(frame_rate) if frame_rate else None
        if not max_fps > 0:
            raise ValueError(f"max_fps = {max_fps}: it must be positive (redraws a second)")
        if int(nperseg) < 2:
            raise ValueError(f"nperseg = {nperseg}: Welch segments need at least 2 frames")
        src = _collect(source, streams, n)
        self._closers = src.closers
        self._stream_sources = src.streams
        self._label = src.label
        self._data: dict[str, Any] = src.histories
        self.max_fps = float(max_fps)
        self.nperseg = int(nperseg)
        self._width = int(width)
        self._pump = pump or get_pump()
        self._n = n
        self._state_lock = threading.Lock()
        self._render_lock = threading.RLock()
        self._dirty = 0
        self._next_t = 0.0
        self._cost = 10
        self._renders = 0
        self._messages = 0
        self._shown = -1
        self._closed = False
        self._syncing = False
        self._series_cache: tuple[Any, ...] | None = None
        self._info_html = ""
        self._failed: BaseException | None = None

        self._align()
        name, elem = self._resolve_selection(element, series)
        self._sel: tuple[str, dict[str, int]] = (name, elem)  # replaced whole: a snapshot

        self._build_controls()
        self._build_plots()
        super().__init__(children=[self._header, w.HBox([self._play, self._slider]), self._info,
                                   self._selectors, self._plot, self._save_row])
        self.add_class("dao-history-view")

    # -- data ----------------------------------------------------------------------------------
    def _align(self) -> None:
        names = list(self._data)
        self._ref = names[0]
        self._match = match_frames(self._data, self._ref)
        self._t0 = np.asarray(self._data[self._ref]["time"].values).astype("datetime64[ns]")[0]
        self._c0 = float(np.asarray(self._data[self._ref]["cnt2"].values)[0])

    def _ms(self, da: Any, index: Any = slice(None)) -> np.ndarray:
        """Times in ms of frames ``index`` of history ``da``, since the reference's first
        frame: write times, or frame ids over :attr:`frame_rate` when it is set."""
        if self.frame_rate:
            c2 = np.asarray(da["cnt2"].values, np.float64)[index]
            return (c2 - self._c0) / self.frame_rate * 1e3
        t = np.asarray(da["time"].values).astype("datetime64[ns]")[index]
        return (t - self._t0) / np.timedelta64(1, "ms")

    @property
    def histories(self) -> dict[str, Any]:
        """The histories shown, ``{name: xarray.DataArray}`` with a leading ``frame`` dim and
        ``cnt0``, ``cnt2``, ``time`` coordinates (the reference first)."""
        return dict(self._data)

    @property
    def streams(self) -> list[str]:
        """The names of the streams shown; the first is the slider's reference."""
        return list(self._data)

    @property
    def aligned_by(self) -> dict[str, str]:
        """How each stream's frames are matched to the reference's: ``"self"`` (the
        reference), ``"cnt2"`` (same source frame id) or ``"time"`` (newest not later)."""
        return {k: how for k, (_, how) in self._match.items()}

    @property
    def n_frames(self) -> int:
        """Number of slider positions (the frames of the reference, the first stream)."""
        return int(self._data[self._ref].sizes["frame"])

    def matches(self, position: int | None = None) -> dict[str, int | None]:
        """The frame index of every stream at a slider position (None: it has no frame with
        the reference's ``cnt2`` there).

        Parameters
        ----------
        position : int, optional
            A slider position, 0 to ``n_frames - 1`` (default the slider's).
        """
        pos = self._check_position(self.position if position is None else position)
        return {k: (int(idx[pos]) if idx[pos] >= 0 else None) for k, (idx, _) in
                self._match.items()}

    def _check_position(self, position: int) -> int:
        n = self.n_frames
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise TypeError(f"a slider position is an integer, not {type(position).__name__}")
        if not -n <= position < n:
            raise ValueError(f"position {position} out of range: the history has {n} frames "
                             f"(0 to {n - 1})")
        return int(position) % n

    @property
    def position(self) -> int:
        """The slider's position, 0 to :attr:`n_frames` - 1 (set it to move the slider)."""
        return int(self._slider.value)

    @position.setter
    def position(self, value: int) -> None:
        self._slider.value = self._check_position(value)

    @property
    def frames(self) -> dict[str, Any]:
        """The frame of every stream at the slider, ``{name: xarray.DataArray or None}``, with
        its ``cnt0``, ``cnt2`` and ``time`` as scalar coordinates."""
        return {k: (None if i is None else self._data[k].isel(frame=i))
                for k, i in self.matches().items()}

    @property
    def frame(self) -> Any:
        """The frame of the selected stream (:attr:`series`) at the slider, an
        :class:`xarray.DataArray` (None if that stream has no frame matching there)."""
        return self.frames[self._sel[0]]

    @property
    def series(self) -> str:
        """The stream whose element is shown (see :meth:`select`)."""
        return self._sel[0]

    @property
    def element(self) -> dict[str, int]:
        """The selected element, as an index per frame dim of :attr:`series`."""
        return dict(self._sel[1])

    def _resolve_selection(self, element: Any, series: str | None,
                           prefer: str | None = None) -> tuple[str, dict[str, int]]:
        if series is not None and series not in self._data:
            raise ValueError(f"no stream {series!r} here: the view shows {list(self._data)}")
        if series is None:
            series = prefer or self._ref
            if isinstance(element, Mapping) and element:
                order = [series, *(k for k in self._data if k != series)]
                having = [k for k in order
                          if all(d in self._data[k].dims and d != "frame" for d in element)]
                if not having:
                    dims = {k: [d for d in da.dims if d != "frame"] for k, da in
                            self._data.items()}
                    raise ValueError(f"no stream has all the dims of element {dict(element)}: "
                                     f"the streams' dims are {dims}")
                series = having[0]
        return series, _resolve_element(self._data[series], element, series)

    def select(self, element: Any = None, /, *, stream: str | None = None,
               **by_dim: Any) -> None:
        """Show the time series and spectrum of another element (or stream).

        Parameters
        ----------
        element : int, tuple of int or dict, optional
            As the ``element`` of :class:`HistoryView` (default the first element).
        stream : str, optional
            The stream (default: the one that has all the dims named, else the current one).
        **by_dim
            The element by dim, e.g. ``select(axis="x", subaperture=12)`` or
            ``select(actuator=5)``: coordinate values where the dim has a coordinate, else
            indices.

        Raises
        ------
        ValueError
            An element out of range or not found, an unknown stream or dim.
        """
        if by_dim:
            if element is not None:
                raise TypeError("give the element either positionally or by dim, not both")
            element = by_dim
        if stream is None and not isinstance(element, Mapping):
            stream = self._sel[0]
        name, elem = self._resolve_selection(element, stream, prefer=self._sel[0])
        self._set_selection(name, elem)

    def _set_selection(self, name: str, elem: dict[str, int]) -> None:
        changed_stream = name != self._sel[0]
        self._sel = (name, dict(elem))
        self._syncing = True
        try:
            if changed_stream:
                self._stream_pick.value = name
                self._build_selectors()
            for d, sel in self._dim_widgets.items():
                sel.value = elem[d]
        finally:
            self._syncing = False
        self._request(_SERIES | _FRAME)

    def _series_values(self, sel: tuple[str, dict[str, int]] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """Time (ms), values, PSD frequencies (Hz) and density of the selected element (of
        ``sel``, a snapshot of the selection), and the sampling frequency (Hz; 0 for fewer
        than 2 distinct times)."""
        name, elem = sel or self._sel
        da = self._data[name]
        key = (name, tuple(sorted(elem.items())), id(da))
        cache = self._series_cache
        if cache is not None and cache[0] == key:
            return cache[1]
        t = self._ms(da)
        v = np.asarray(da.isel(elem).values, dtype=np.float64).ravel()
        fs = self.frame_rate or (
            (t.size - 1) / (t[-1] - t[0]) * 1e3 if t.size > 1 and t[-1] > t[0] else 0.0)
        if fs > 0:
            f, p = welch_psd(v, fs, self.nperseg)
        else:
            f, p = np.zeros(0), np.zeros(0)
        out = (t, v, f, p, fs)
        self._series_cache = (key, out)
        return out

    def _element_label(self, sel: tuple[str, dict[str, int]] | None = None) -> str:
        name, elem = sel or self._sel
        da = self._data[name]
        parts = [f"{d}={_value_label(da, d, i)}" for d, i in elem.items()]
        return f"{name}[{', '.join(parts)}]" if parts else name

    @property
    def selection(self) -> Any:
        """The selected element's time series, an :class:`xarray.DataArray` over ``frame``.

        Its coordinates: ``cnt0``, ``cnt2``, ``time`` and ``t_ms`` (ms since the first frame)
        along ``frame``, and the element's position as scalars (its coordinate values, or
        its indices for dims without one). Attributes: the stream's, plus ``element`` (the
        indices) and ``sample_rate_hz``.
        """
        snap = self._sel
        name, elem = snap
        t, v, _, _, fs = self._series_values(snap)
        sel = self._data[name].isel(elem)
        extra = {d: i for d, i in elem.items() if d not in sel.coords}
        sel = sel.assign_coords({**extra, "t_ms": ("frame", t)})
        sel.attrs = {**sel.attrs, "element": json.dumps(elem), "sample_rate_hz": float(fs)}
        return sel.rename(self._element_label(snap))

    @property
    def spectrum(self) -> Any:
        """The selected element's temporal power spectrum, an :class:`xarray.DataArray` over
        ``frequency`` (Hz): one-sided PSD in units**2/Hz (:func:`welch_psd`, segments of
        :attr:`nperseg` frames, the frames' mean rate as sampling frequency).

        Raises
        ------
        ValueError
            Fewer than 2 frames, or all at the same time.
        """
        import xarray as xr

        snap = self._sel
        name, elem = snap
        _, _, f, p, fs = self._series_values(snap)
        n = self._data[name].sizes["frame"]
        if fs <= 0:
            raise ValueError(f"stream {name!r} has {n} frames over no time: a spectrum "
                             "needs at least 2 frames written at different times")
        units = self._data[name].attrs.get("units", "")
        return xr.DataArray(p, dims=("frequency",), coords={"frequency": f},
                            name=f"PSD of {self._element_label(snap)}",
                            attrs={"units": f"({units})^2/Hz" if units else "1/Hz",
                                   "frequency_units": "Hz", "sample_rate_hz": float(fs),
                                   "nperseg": min(self.nperseg, n),
                                   "element": json.dumps(elem)})

    # -- widgets -------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        n = self.n_frames
        self._header = w.HTML(self._header_html())
        self._slider = w.IntSlider(value=n - 1, min=0, max=n - 1, description="frame",
                                   continuous_update=True, layout=w.Layout(width="640px"))
        self._play = w.Play(value=n - 1, min=0, max=n - 1, interval=100, description="play",
                            layout=w.Layout(width="120px"))
        self._link = w.jslink((self._play, "value"), (self._slider, "value"))
        self._slider.observe(self._on_slider, "value")
        self._info = w.HTML(self._info_table(n - 1))
        self._info_html = self._info.value
        self._stream_pick = w.Dropdown(options=list(self._data), value=self._sel[0],
                                       description="series", layout=w.Layout(width="240px"))
        self._stream_pick.observe(self._on_stream_pick, "value")
        self._dims_box = w.HBox()
        self._dim_widgets: dict[str, Any] = {}
        self._build_selectors()
        self._selectors = w.HBox([self._stream_pick, self._dims_box])
        # save a range of slider positions
        self._range = w.IntRangeSlider(value=(0, n - 1), min=0, max=n - 1,
                                       description="save frames", continuous_update=False,
                                       layout=w.Layout(width="420px"))
        self._from_here = w.Button(description="from here", tooltip="start the range at the "
                                   "slider's frame", layout=w.Layout(width="90px"))
        self._to_here = w.Button(description="to here", tooltip="end the range at the slider's "
                                 "frame", layout=w.Layout(width="90px"))
        self._path = w.Text(value="history.nc", description="to",
                            placeholder="file.nc or file.zarr", layout=w.Layout(width="260px"))
        self._overwrite = w.Checkbox(value=False, description="overwrite", indent=False,
                                     layout=w.Layout(width="100px"))
        self._save_button = w.Button(description="Save", icon="save", button_style="primary",
                                     layout=w.Layout(width="90px"))
        self._save_status = w.HTML()
        self._from_here.on_click(lambda _: self._set_range(start=self.position))
        self._to_here.on_click(lambda _: self._set_range(end=self.position))
        self._save_button.on_click(self._on_save)
        self._save_row = w.VBox([
            w.HBox([self._range, self._from_here, self._to_here]),
            w.HBox([self._path, self._overwrite, self._save_button, self._save_status]),
        ])

    def _build_selectors(self) -> None:
        name, elem = self._sel
        da = self._data[name]
        widgets = {}
        for d in (d for d in da.dims if d != "frame"):
            size = da.sizes[d]
            if size <= 64:
                options = [(_value_label(da, d, i), i) for i in range(size)]
                sel = w.Dropdown(options=options, value=elem[d], description=d,
                                 layout=w.Layout(width="200px"))
            else:
                sel = w.BoundedIntText(value=elem[d], min=0, max=size - 1,
                                       description=f"{d} #", layout=w.Layout(width="200px"))
            sel.observe(self._on_dim, "value")
            widgets[d] = sel
        for old in self._dim_widgets.values():
            old.close()
        self._dim_widgets = widgets
        self._dims_box.children = list(widgets.values())

    def _set_range(self, start: int | None = None, end: int | None = None) -> None:
        lo, hi = self._range.value
        lo = lo if start is None else start
        hi = hi if end is None else end
        self._range.value = (min(lo, hi), max(lo, hi))

    def _on_slider(self, change: dict) -> None:
        self._request(_FRAME)

    def _on_stream_pick(self, change: dict) -> None:
        if self._syncing or change["new"] == self._sel[0]:
            return
        name = change["new"]
        self._set_selection(name, _resolve_element(self._data[name], None, name))

    def _on_dim(self, change: dict) -> None:
        if self._syncing:
            return
        elem = {d: int(sel.value) for d, sel in self._dim_widgets.items()}
        name = self._sel[0]
        self._set_selection(name, _resolve_element(self._data[name], tuple(elem.values()),
                                                   name))

    def _on_save(self, _button: Any) -> None:
        lo, hi = self._range.value
        try:
            result = self.save(self._path.value.strip(), lo, hi + 1,
                               overwrite=self._overwrite.value)
        except Exception as exc:  # shown to the user, who can fix the name and retry
            self._save_status.value = (f"<span style='color:#c00'>not saved: "
                                       f"{_html(str(exc))}</span>")
            return
        n = ", ".join(f"{k} {v}" for k, v in result.frames.items())
        self._save_status.value = (f"saved frames {lo} to {hi} to <code>{_html(result.path)}"
                                   f"</code> ({n} frames)")

    def _header_html(self) -> str:
        ref = self._data[self._ref]
        n = ref.sizes["frame"]
        t = self._ms(ref)
        dur = t[-1] - t[0] if n > 1 else 0.0
        rate = (n - 1) / dur * 1e3 if dur > 0 else 0.0
        how = ", ".join(f"{k} by {v}" for k, v in self.aligned_by.items() if v != "self")
        aligned = f"; aligned on {self._ref}: {how}" if how else ""
        clock = (f"frame ids at {self.frame_rate:g} Hz" if self.frame_rate
                 else "write times")
        return (f"<b>History of {_html(self._label)}</b>: {n} frames over {dur:.1f} ms "
                f"({rate:.1f} Hz, {clock}){_html(aligned)}")

    def _info_table(self, pos: int) -> str:
        """Each stream's frame at slider position ``pos``: counters, time since the
        reference's first frame, UTC write time."""
        td = "<td style='padding:0 12px 0 0'>"
        rows = []
        for k, i in self.matches(pos).items():
            name = f"<tr>{td}<b>{_html(k)}</b></td>"
            if i is None:
                rc2 = int(self._data[self._ref]["cnt2"].values[pos])
                rows.append(f"{name}<td colspan=4><i>no frame with cnt2 {rc2}</i></td></tr>")
                continue
            da = self._data[k]
            t = np.asarray(da["time"].values)[i]
            ms = float(self._ms(da, i))
            utc = np.datetime_as_string(t.astype("datetime64[us]"), unit="us")
            rows.append(f"{name}{td}cnt0 {int(da['cnt0'].values[i])}</td>"
                        f"{td}cnt2 {int(da['cnt2'].values[i])}</td>"
                        f"{td}t = {ms:.3f} ms</td>{td}{utc} UTC</td></tr>")
        return ("<table class='dao-history-info' style='font-family:monospace;font-size:12px;"
                "line-height:1.3;border-collapse:collapse'>" + "".join(rows) + "</table>")

    # -- plots ---------------------------------------------------------------------------------
    def _build_plots(self) -> None:
        from bokeh.layouts import column, row
        from bokeh.models import ColumnDataSource, Span
        from bokeh.plotting import figure

        self._panels = {k: self._make_panel(k) for k in self._data}
        t, v, f, p, _ = self._series_values()
        self._ts_source = ColumnDataSource({"t": t, "y": v})
        half = max(300, self._width // 2)
        ts = figure(width=half, height=260, x_axis_label="time (ms)",
                    y_axis_label=self._units_label(), tools="pan,box_zoom,wheel_zoom,reset,"
                    "save,hover", tooltips=[("t", "@t{0.000} ms"), ("value", "@y")])
        ts.line("t", "y", source=self._ts_source, line_width=1)
        self._cursor = Span(location=0.0, dimension="height", line_color="#d62728",
                            line_dash="dashed", line_width=1)
        ts.add_layout(self._cursor)
        self._psd_source = ColumnDataSource(self._psd_columns(f, p))
        psd = figure(width=half, height=260, x_axis_type="log", y_axis_type="log",
                     x_axis_label="frequency (Hz)", y_axis_label=self._psd_units(),
                     tools="pan,box_zoom,wheel_zoom,reset,save,hover",
                     tooltips=[("f", "@f{0.00} Hz"), ("PSD", "@p")])
        psd.line("f", "p", source=self._psd_source, line_width=1)
        self._ts_fig, self._psd_fig = ts, psd
        sel = self._sel
        self._draw_titles(sel)
        self._draw_markers(sel)
        pos = self.position
        self._draw_frames(pos, sel)
        self._draw_cursor(pos, sel)
        self._shown = pos
        self._plot = bokeh_widget(column(row(*[p.fig for p in self._panels.values()]),
                                         row(ts, psd)))

    def _units_label(self, sel: tuple[str, dict[str, int]] | None = None) -> str:
        units = self._data[(sel or self._sel)[0]].attrs.get("units", "")
        return f"value ({units})" if units else "value"

    def _psd_units(self, sel: tuple[str, dict[str, int]] | None = None) -> str:
        units = self._data[(sel or self._sel)[0]].attrs.get("units", "")
        return f"PSD (({units})²/Hz)" if units else "PSD (1/Hz)"

    @staticmethod
    def _psd_columns(f: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
        p = np.where(p > 0, p, np.nan)  # log axes: no zeros
        return {"f": f[1:], "p": p[1:]}  # no DC on a log axis

    def _make_panel(self, name: str) -> _Panel:
        from bokeh.events import Tap
        from bokeh.models import (
            BasicTickFormatter,
            ColorBar,
            ColumnDataSource,
            LinearColorMapper,
            Span,
        )
        from bokeh.palettes import Viridis256
        from bokeh.plotting import figure

        da = self._data[name]
        kind, layout = _kind(da)
        size = max(220, min(420, self._width // max(1, len(self._data))))
        tools = "pan,box_zoom,wheel_zoom,reset,save,hover,tap"
        units = da.attrs.get("units", "")
        if kind == "vector":
            shape = tuple(da.shape[1:]) or (1,)
            rows = shape[0] if len(shape) == 2 else 1
            n = shape[-1]
            last = da.dims[-1] if da.ndim > 1 else None
            x = np.arange(n, dtype=np.float64)
            if last is not None and last in da.coords and da[last].dims == (last,) and \
                    np.asarray(da[last].values).dtype.kind in "iuf":
                x = np.asarray(da[last].values, dtype=np.float64)
            names = ([f"{da.dims[1]}={_value_label(da, da.dims[1], i)}" for i in range(rows)]
                     if len(shape) == 2 else [name])
            cols = {"x": x, **{f"s{i}": np.full(n, np.nan) for i in range(rows)}}
            source = ColumnDataSource(cols)
            fig = figure(width=size, height=240, tools=tools, x_axis_label=last or "element",
                         y_axis_label=units or None,
                         tooltips=[("element", "@x"), *[(s, f"@s{i}") for i, s in
                                                        enumerate(names)]])
            for i, s in enumerate(names):
                color = _PALETTE[i % len(_PALETTE)]
                fig.line("x", f"s{i}", source=source, line_color=color, legend_label=s)
                fig.scatter("x", f"s{i}", source=source, size=3, color=color)
            fig.legend.location = "top_left"
            fig.legend.label_text_font_size = "8pt"
            fig.legend.background_fill_alpha = 0.5
            fig.legend.click_policy = "hide"
            marker = Span(location=0.0, dimension="height", line_color="#d62728",
                          line_width=1, visible=False)
            fig.add_layout(marker)
            panel = _Panel(name, kind, fig, source, marker, names, None, shape)
        else:
            if kind == "grid":
                ny, nx = layout.shape
            else:
                ny, nx = da.shape[-2], da.shape[-1]
            # square pixels: the plotting area itself is sized (axes and colour bar beside it)
            frame_w = size - 130  # the axis labels and the colour bar take the rest
            frame_h = int(frame_w * ny / max(nx, 1))
            if frame_h > 400:
                frame_w, frame_h = int(frame_w * 400 / frame_h), 400
            what = "grid" if kind == "grid" else "pixel"
            fig = figure(frame_width=max(60, frame_w), frame_height=max(40, frame_h),
                         tools=tools, x_range=(0, nx), y_range=(0, ny),
                         x_axis_label=f"x ({what})", y_axis_label=f"y ({what})",
                         tooltips=[("x", "$x{0}"), ("y", "$y{0}"), ("value", "@img")])
            mapper = LinearColorMapper(palette=Viridis256, nan_color=(0, 0, 0, 0))
            source = ColumnDataSource({"img": [np.full((ny, nx), np.nan, np.float32)]})
            fig.image(image="img", x=0, y=0, dw=nx, dh=ny, source=source,
                      color_mapper=mapper)
            fig.add_layout(ColorBar(color_mapper=mapper, width=8, title=units or None,
                                    formatter=BasicTickFormatter(precision=1)), "right")
            fig.grid.visible = False
            marker = ColumnDataSource({"x": [np.nan], "y": [np.nan]})
            fig.scatter("x", "y", source=marker, marker="square_x", size=12,
                        fill_alpha=0, line_color="#d62728", line_width=2)
            panel = _Panel(name, kind, fig, source, marker, [], layout, (ny, nx))
        panel.title = f"{name} ({kind})"
        if kind == "grid" and layout is not None and layout.series:
            panel.title = f"{name}: {' | '.join(layout.series)} maps"
        fig.title.text = panel.title
        fig.on_event(Tap, lambda event, name=name: self._on_tap(name, event))
        return panel

    def _frame_array(self, panel: _Panel, idx: int,
                     sel: tuple[str, dict[str, int]]) -> np.ndarray:
        """What ``panel`` draws for frame ``idx`` of its stream (NaN for no frame); a 3-D
        frame's plane is the selected element's (``sel``) in the selected stream."""
        da = self._data[panel.name]
        if panel.kind == "vector":
            if idx < 0:
                return np.full((len(panel.series), panel.shape[-1]), np.nan)
            a = np.asarray(da.isel(frame=idx).values, dtype=np.float64)
            return a.reshape(len(panel.series), panel.shape[-1])
        if idx < 0:
            return np.full(panel.shape, np.nan, np.float32)
        a = np.asarray(da.isel(frame=idx).values)
        if panel.kind == "grid":
            return np.ascontiguousarray(panel.layout.apply(a)[::-1], dtype=np.float32)
        if a.ndim == 3:
            plane = sel[1].get(da.dims[1], 0) if panel.name == sel[0] else 0
            a = a[plane]
        return np.ascontiguousarray(a, dtype=np.float32)

    def _draw_frames(self, pos: int, sel: tuple[str, dict[str, int]]) -> None:
        for name, panel in self._panels.items():
            idx = int(self._match[name][0][pos])
            a = self._frame_array(panel, idx, sel)
            if panel.kind == "vector":
                panel.source.data.update({f"s{i}": a[i] for i in range(a.shape[0])})
            else:
                panel.source.data.update(img=[a])
            title = panel.title if idx >= 0 else f"{panel.title}: no frame with this cnt2"
            if panel.fig.title.text != title:
                panel.fig.title.text = title

    def _draw_cursor(self, pos: int, sel: tuple[str, dict[str, int]]) -> None:
        """The time series' cursor at the selected stream's frame at the slider (the
        reference's time where that stream has no matching frame)."""
        idx = int(self._match[sel[0]][0][pos])
        da, i = (self._data[sel[0]], idx) if idx >= 0 else (self._data[self._ref], pos)
        self._cursor.location = float(self._ms(da, i))

    def _draw_titles(self, sel: tuple[str, dict[str, int]]) -> None:
        t, _, f, _, fs = self._series_values(sel)
        label = self._element_label(sel)
        self._ts_fig.title.text = label
        if fs > 0:
            seg = min(self.nperseg, t.size)
            self._psd_fig.title.text = f"PSD {label} · Δf {fs / seg:.3g} Hz"
        else:
            self._psd_fig.title.text = f"PSD {label}: needs 2 frames at different times"
        self._ts_fig.yaxis.axis_label = self._units_label(sel)
        self._psd_fig.yaxis.axis_label = self._psd_units(sel)

    def _draw_markers(self, sel: tuple[str, dict[str, int]]) -> None:
        for name, panel in self._panels.items():
            mine = name == sel[0]
            if panel.kind == "vector":
                d = self._data[name].dims[-1]
                i = sel[1].get(d, 0) if mine else 0
                x = panel.source.data["x"]
                panel.marker.location = float(x[i]) if len(x) else 0.0
                panel.marker.visible = mine and self._data[name].ndim > 1
                continue
            x = y = np.nan
            if mine:
                x, y = self._marker_xy(panel, sel[1])
            panel.marker.data = {"x": [x], "y": [y]}

    def _marker_xy(self, panel: _Panel, elem: dict[str, int]) -> tuple[float, float]:
        da = self._data[panel.name]
        dims = [d for d in da.dims if d != "frame"]
        if panel.kind == "grid":
            flat = np.ravel_multi_index(tuple(elem[d] for d in dims), da.shape[1:])
            target = int(panel.layout._index[flat])
            ny, nx = panel.shape
            r, c = divmod(target, nx)
            return c + 0.5, (ny - 1 - r) + 0.5
        return elem[dims[-1]] + 0.5, elem[dims[-2]] + 0.5

    def _on_tap(self, name: str, event: Any) -> None:
        """A click on a frame selects the element under it."""
        panel = self._panels[name]
        da = self._data[name]
        dims = [d for d in da.dims if d != "frame"]
        if event.x is None or event.y is None or not dims:
            return
        current = self._sel[1] if name == self._sel[0] else {}
        if panel.kind == "vector":
            x = np.asarray(panel.source.data["x"], dtype=np.float64)
            i = int(np.argmin(np.abs(x - event.x)))
            elem = {d: current.get(d, 0) for d in dims[:-1]}
            elem[dims[-1]] = i
        else:
            c, r = int(math.floor(event.x)), int(math.floor(event.y))
            ny, nx = panel.shape
            if not (0 <= c < nx and 0 <= r < ny):
                return
            if panel.kind == "grid":
                hit = np.nonzero(panel.layout._index == (ny - 1 - r) * nx + c)[0]
                if hit.size == 0:
                    return
                elem = dict(zip(dims, (int(i) for i in np.unravel_index(int(hit[0]),
                                                                        da.shape[1:])),
                                strict=True))
            else:
                elem = {dims[-2]: r, dims[-1]: c}
                if len(dims) == 3:
                    elem[dims[0]] = current.get(dims[0], 0)
        self._set_selection(name, _resolve_element(da, tuple(elem[d] for d in dims), name))

    # -- drawing through the pump --------------------------------------------------------------
    def _request(self, what: int) -> None:
        with self._state_lock:
            self._dirty |= what
            if not self._closed:
                self._pump.add(self)

    def pump_tick(self, now: float, budget: int) -> int:
        """Redraw what changed, if ``1 / max_fps`` s passed since the last redraw (the pump
        calls it; see :class:`dao.widgets.pump.PumpSource`). Returns the messages sent."""
        if self._closed:
            self._pump.remove(self)
            return 0
        if now < self._next_t or budget < min(self._cost, 25):
            return 0
        with self._state_lock:
            what, self._dirty = self._dirty, 0
            if not what:
                self._pump.remove(self)
                return 0
        sent = self._render(what)
        self._next_t = now + 1.0 / self.max_fps
        with self._state_lock:
            if not self._dirty:
                self._pump.remove(self)
        return sent

    def pump_failed(self, exc: BaseException) -> None:
        """Show why redrawing failed (the pump no longer calls this view)."""
        self._failed = exc
        self._header.value = (f"{self._header_html()}<br><span style='color:#c00'>drawing "
                              f"failed: {_html(repr(exc))}</span>")

    def flush(self) -> int:
        """Redraw what changed now, without waiting for the pump; returns the messages sent."""
        with self._state_lock:
            what, self._dirty = self._dirty, 0
        return self._render(what) if what else 0

    def _render(self, what: int) -> int:
        with self._render_lock:
            if self._closed:
                return 0
            m0 = self._plot.messages
            extra = 0
            pos = self.position  # read now: the newest position and selection win
            sel = self._sel  # one snapshot: another thread may select meanwhile
            doc = self._plot._document
            doc.hold("combine")
            try:
                if what & _SERIES:
                    t, v, f, p, _ = self._series_values(sel)
                    self._ts_source.data = {"t": t, "y": v}
                    self._psd_source.data = self._psd_columns(f, p)
                    self._draw_titles(sel)
                    self._draw_markers(sel)
                self._draw_frames(pos, sel)
                self._draw_cursor(pos, sel)
            finally:
                doc.unhold()
            html = self._info_table(pos)
            if html != self._info_html:
                self._info.value = self._info_html = html
                extra += 1
            self._shown = pos
            self._renders += 1
            sent = self._plot.messages - m0 + extra
            self._messages += sent
            self._cost = max(1, sent)
            return sent

    def stats(self) -> dict[str, Any]:
        """``renders`` (redraws so far), ``messages`` (sent by them), ``shown`` (the slider
        position drawn last), ``pending`` (a redraw is waiting)."""
        return {"renders": self._renders, "messages": self._messages, "shown": self._shown,
                "pending": bool(self._dirty)}

    # -- refresh, save, close ------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the streams' FIFO histories again (the newest ``n`` frames), keeping the
        selection; the slider goes to the newest frame.

        Raises
        ------
        ValueError
            If the view shows a recording or DataArrays (they do not change), or if a stream
            changed its frame shape.
        """
        if not self._stream_sources:
            raise ValueError("refresh() reads streams again; this view shows a recording or "
                             "DataArrays: make a new HistoryView for other data")
        fresh = _read_streams(self._stream_sources, self._n)
        for k, da in fresh.items():
            if da.shape[1:] != self._data[k].shape[1:]:
                raise ValueError(f"stream {k!r} now has frames of shape {da.shape[1:]}, not "
                                 f"{self._data[k].shape[1:]}: make a new HistoryView")
        with self._render_lock:
            self._data = fresh
            self._align()
            self._series_cache = None
            n = self.n_frames
            self._syncing = True
            try:
                for slider in (self._slider, self._play, self._range):
                    slider.max = n - 1
                self._range.value = (0, n - 1)
                self._slider.value = n - 1
            finally:
                self._syncing = False
            self._header.value = self._header_html()
        self._request(_SERIES | _FRAME)

    def save(self, path: str | os.PathLike, start: int | None = None, stop: int | None = None,
             *, overwrite: bool = False):
        """Write the frames of slider positions ``start`` to ``stop - 1`` of every stream to a
        recording file, in the schema of :mod:`dao.streams.telemetry`.

        Each stream contributes its frames from the first to the last that match a position in
        the range (the frames in between too: all of a faster stream's frames). Read the file
        back with :func:`dao.streams.telemetry.open_recording`.

        Parameters
        ----------
        path : str or os.PathLike
            ``.nc`` (NetCDF-4, written with h5netcdf) or ``.zarr``.
        start, stop : int, optional
            Slider positions, as a Python slice: ``start`` included, ``stop`` excluded
            (default all of them; negative values count from the end).
        overwrite : bool
            Replace an existing file (default: refuse).

        Returns
        -------
        dao.streams.telemetry.RecordingResult
            The path and the frames written per stream (0: none matched the range).

        Raises
        ------
        ValueError
            An empty range, or a path that is neither ``.nc`` nor ``.zarr``.
        FileExistsError
            If ``path`` exists and not ``overwrite``.
        """
        from dao.streams.telemetry import RecordingResult, _format

        path = os.fspath(path)
        if not path:
            raise ValueError("give a file name to save to, e.g. 'bad_stretch.nc'")
        fmt = _format(path) if path.endswith((".nc", ".nc4", ".h5", ".zarr", ".fits", ".fit")) \
            else None
        if fmt not in ("netcdf", "zarr"):
            raise ValueError(f"cannot save to {path!r}: use .nc (NetCDF-4) or .zarr (FITS: "
                             "save .nc, then dao.streams.telemetry.export_fits)")
        lo, hi, _ = slice(start, stop).indices(self.n_frames)
        if hi <= lo:
            raise ValueError(f"frames {start} to {stop} is an empty range: the slider has "
                             f"positions 0 to {self.n_frames - 1}; give start < stop")
        if os.path.lexists(path) and not overwrite:
            raise FileExistsError(f"{path} exists: choose another name, or save with "
                                  "overwrite=True")
        t0 = time.monotonic()
        parts: dict[str, Any] = {}
        for k, (idx, _) in self._match.items():
            found = idx[lo:hi][idx[lo:hi] >= 0]
            if found.size:
                parts[k] = self._data[k].isel(frame=slice(int(found.min()),
                                                          int(found.max()) + 1))
        result = RecordingResult(path, {k: 0 for k in self._match},
                                 {k: 0 for k in self._match})
        folder = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        if fmt == "zarr":
            tmp += ".zarr"
        try:
            for i, (k, da) in enumerate(parts.items()):
                ds = _to_dataset(da, k)
                if fmt == "netcdf":
                    invalid = any(v.dtype.kind == "c" for v in ds.data_vars.values())
                    ds.to_netcdf(tmp, mode="w" if i == 0 else "a", group=k, engine="h5netcdf",
                                 invalid_netcdf=invalid)
                else:
                    ds.to_zarr(tmp, group=k, mode="w" if i == 0 else "a", zarr_format=2)
                result.frames[k] = int(da.sizes["frame"])
            if not parts:  # cannot happen: the reference matches every position
                raise ValueError("no frames in the range")
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            elif os.path.exists(tmp):
                os.unlink(tmp)
            raise
        result.seconds = time.monotonic() - t0
        return result

    def close(self) -> None:
        """Close the view: stop its redraws, its widgets, and the recording files it read."""
        lock = getattr(self, "_state_lock", None)
        if lock is None or getattr(self, "_closed", True):  # not made, or closed already
            super().close()
            return
        with lock:
            self._closed = True
        pump = getattr(self, "_pump", None)
        if pump is not None:
            pump.remove(self)
        for ds in getattr(self, "_closers", ()):
            ds.close()
        for widget in (*getattr(self, "_dim_widgets", {}).values(),
                       *(getattr(self, a, None) for a in (
                           "_plot", "_slider", "_play", "_link", "_info", "_header",
                           "_stream_pick", "_dims_box", "_selectors", "_range", "_from_here",
                           "_to_here", "_path", "_overwrite", "_save_button", "_save_status",
                           "_save_row"))):
            if widget is not None:
                widget.close()
        super().close()

    def __repr__(self) -> str:
        return (f"<HistoryView of {self._label}: {self.n_frames} frames, series "
                f"{self._element_label()}, at frame {self.position}>")


def _html(text: str) -> str:
    import html

    return html.escape(text)


def _resolve_element(da: Any, element: Any, name: str) -> dict[str, int]:
    """``{dim: index}`` of an element of ``da``'s frames (see :class:`HistoryView`)."""
    dims = [d for d in da.dims if d != "frame"]
    shape = [da.sizes[d] for d in dims]
    desc = " x ".join(f"{s} {d}" for d, s in zip(dims, shape, strict=True)) or "scalars"
    if element is None:
        return dict.fromkeys(dims, 0)
    if isinstance(element, (bool, np.bool_)):
        raise TypeError("an element is an index, a tuple of indices or a dict, not a bool")
    if isinstance(element, (int, np.integer)):
        size = int(np.prod(shape)) if shape else 1
        if not 0 <= element < size:
            raise ValueError(f"element {element} out of range: frames of {name!r} have {size} "
                             f"elements ({desc}); give 0 to {size - 1}")
        return {d: int(i) for d, i in zip(dims, np.unravel_index(int(element), shape),
                                          strict=True)}
    if isinstance(element, Mapping):
        unknown = [k for k in element if k not in dims]
        if unknown:
            raise ValueError(f"frames of {name!r} have no dim {unknown[0]!r}: their dims are "
                             f"{dims}")
        out = {}
        for d, size in zip(dims, shape, strict=True):
            if d not in element:
                if size == 1:
                    out[d] = 0
                    continue
                raise ValueError(f"element {dict(element)} gives no {d!r}: frames of {name!r} "
                                 f"are {desc}; give {d}= too")
            value = element[d]
            if d in da.coords and da[d].dims == (d,):
                values = np.asarray(da[d].values)
                hits = np.nonzero(values == value)[0]
                if hits.size == 0:
                    shown = values.tolist() if values.size <= 12 else \
                        f"{values[0]} ... {values[-1]}"
                    raise ValueError(f"no {d} {value!r} in {name!r}: its {d} values are "
                                     f"{shown}")
                out[d] = int(hits[0])
            else:
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise ValueError(f"{d} has no coordinate in {name!r}: give an index 0 to "
                                     f"{size - 1}, not {value!r}")
                if not 0 <= value < size:
                    raise ValueError(f"{d} {value} out of range: frames of {name!r} have "
                                     f"{size} along {d} (0 to {size - 1})")
                out[d] = int(value)
        return out
    if isinstance(element, (tuple, list)):
        if len(element) != len(dims):
            raise ValueError(f"element {tuple(element)} has {len(element)} indices; frames of "
                             f"{name!r} have {len(dims)} dims {dims}")
        out = {}
        for d, size, i in zip(dims, shape, element, strict=True):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise ValueError(f"index {i!r} along {d} is not an integer")
            if not 0 <= i < size:
                raise ValueError(f"{d} {i} out of range: frames of {name!r} have {size} along "
                                 f"{d} (0 to {size - 1})")
            out[d] = int(i)
        return out
    raise TypeError(f"an element is an index, a tuple of indices or a dict of dim to value, "
                    f"not {type(element).__name__}")


def _attr_value(value: Any) -> Any:
    """An attribute NetCDF can store: numbers and strings as they are, the rest as JSON."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    a = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if a is not None and a.dtype.kind in "iuf" and a.ndim == 1:
        return a
    return json.dumps(value, default=str)


def _to_dataset(da: Any, group: str) -> Any:
    """One stream's frames as a recording group: the frames, ``cnt0``, ``cnt2``, ``time``
    (int64 ns since the epoch on disk, as the recorder writes it) and the labels."""
    var = str(da.name) if da.name is not None else group
    da = da.copy(deep=False)
    da.attrs = {k: _attr_value(v) for k, v in da.attrs.items() if k != "coordinates"}
    ds = da.to_dataset(name=var).drop_encoding()
    ds["time"].encoding = {"units": "nanoseconds since 1970-01-01",
                           "calendar": "proleptic_gregorian", "dtype": "int64"}
    return ds

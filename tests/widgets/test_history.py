"""HistoryView at model level: real streams written with known frames, ids and timestamps.

The loop writes camera frame N, its slopes and the DM command it caused with ``cnt2 = N``; the
streams here are written the same way, at exactly 1 kHz (explicit ``atime_ns``), with a sine
of known frequency on one slope.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import xarray as xr

import dao
from dao.streams.telemetry import open_recording, write_history
from dao.testing import unique_name, wait_for
from dao.widgets.history import HistoryView, match_frames, time_ms, welch_psd
from dao.widgets.pump import Pump

T0 = 1_700_000_000_000_000_000  # ns since the epoch
PERIOD_NS = 1_000_000  # 1 kHz
F0 = 50.0  # Hz, the sine on slopes[x, 12]
AMPLITUDE = 2.0
CNT2 = 5000  # camera frame id of the first frame
N = 1024


def sine(k: np.ndarray | int) -> np.ndarray:
    return AMPLITUDE * np.sin(2 * np.pi * F0 * np.asarray(k) * PERIOD_NS * 1e-9)


@pytest.fixture
def loop():
    """cam (8x8), slopes (axis x/y by 16 subapertures, pixels) and dm (20 actuators on a
    5x4 grid, stored (20, 1) as for C): N frames at 1 kHz; the slopes and the command of camera
    frame k carry cnt2 = CNT2 + k, are written 0.2 and 0.4 ms after it, and the dm stream misses
    the first 10 camera frames. Every frame's values encode k."""
    cam = dao.shm(unique_name("cam"), np.zeros((8, 8), np.float32), depth=N)
    slopes = dao.shm(unique_name("sl"), np.zeros((2, 16), np.float32), depth=N)
    slopes.set_labels(("axis", "subaperture"), coords={"axis": ["x", "y"]},
                      attrs={"units": "pixel"})
    dm = dao.shm(unique_name("dm"), np.zeros((20, 1), np.float32), depth=N)
    dm.set_labels(("actuator",), coords={"x": ("actuator", np.arange(20) % 5),
                                         "y": ("actuator", np.arange(20) // 5)})
    for k in range(N):
        t = T0 + k * PERIOD_NS
        cam.set_data(np.full((8, 8), k, np.float32), cnt2=CNT2 + k, atime_ns=t)
        s = np.full((2, 16), k, np.float32)
        s[0, 12] = sine(k)
        slopes.set_data(s, cnt2=CNT2 + k, atime_ns=t + 200_000)
        if k >= 10:
            dm.set_data(np.full((20, 1), -k, np.float32), cnt2=CNT2 + k, atime_ns=t + 400_000)
    streams = {"cam": cam, "slopes": slopes, "dm": dm}
    yield streams
    for s in streams.values():
        s.close()


@pytest.fixture
def pump():
    p = Pump()
    yield p
    p.stop()


def make(source, pump, **kw) -> HistoryView:
    return HistoryView(source, pump=pump, **kw)


# -- numbers ---------------------------------------------------------------------------------


def test_time_ms_is_a_real_time_axis():
    t = np.datetime64(T0, "ns") + np.arange(5) * np.timedelta64(1500, "us")
    assert time_ms(t).tolist() == [0.0, 1.5, 3.0, 4.5, 6.0]
    with pytest.raises(ValueError, match="datetime64"):
        time_ms(np.arange(5) * 1.5)


def test_welch_psd_is_a_density_that_keeps_the_variance():
    rng = np.random.default_rng(1)
    fs = 2000.0
    x = 3.0 * np.sin(2 * np.pi * 125.0 * np.arange(8192) / fs) + rng.normal(0, 0.5, 8192)
    f, p = welch_psd(x, fs, nperseg=512)
    assert f[0] == 0 and f[-1] == fs / 2 and f[1] == pytest.approx(fs / 512)
    assert f[np.argmax(p)] == pytest.approx(125.0, abs=fs / 512)
    # Parseval: the density integrates to the variance (3^2/2 + 0.5^2)
    assert np.sum(p) * f[1] == pytest.approx(x.var(), rel=0.05)
    with pytest.raises(ValueError, match="at least 2 samples"):
        welch_psd([1.0], fs)
    with pytest.raises(ValueError, match="positive"):
        welch_psd(x, 0.0)


# -- the view ----------------------------------------------------------------------------------


def test_time_series_spans_the_frames_duration(loop, pump):
    view = make(loop, pump, element={"axis": "x", "subaperture": 12})
    try:
        sel = view.selection
        # one time origin for every stream: the reference's (cam's) first frame; the slopes
        # of a frame are written 0.2 ms after it
        assert sel["t_ms"].values[0] == pytest.approx(0.2)
        assert sel["t_ms"].values[-1] == pytest.approx((N - 1) * PERIOD_NS * 1e-6 + 0.2)
        assert np.all(np.diff(sel["t_ms"].values) == pytest.approx(1.0))
        # what the plot draws: the same axis, not every point at t = 0
        t = np.asarray(view._ts_source.data["t"])
        assert t.max() - t.min() == pytest.approx(N - 1)
        np.testing.assert_allclose(np.asarray(view._ts_source.data["y"]), sine(np.arange(N)),
                                   atol=1e-5)
    finally:
        view.close()


def test_a_source_frame_rate_sets_the_time_axis_and_the_spectrum(loop, pump):
    # a simulated bench at 500 Hz whose frames were written at 1 kHz: frame ids tell its time
    view = make(loop, pump, element={"axis": "x", "subaperture": 12}, frame_rate=500.0)
    try:
        sel = view.selection
        assert sel["t_ms"].values[0] == 0.0
        assert np.all(np.diff(sel["t_ms"].values) == pytest.approx(2.0))
        spec = view.spectrum
        assert spec.attrs["sample_rate_hz"] == 500.0
        assert float(spec.frequency[int(np.argmax(spec.values))]) == pytest.approx(F0 / 2, abs=2.0)
        assert "frame ids at 500 Hz" in view._header.value
    finally:
        view.close()
    with pytest.raises(ValueError, match="frame_rate"):
        make(loop, pump, frame_rate=0)


def test_spectrum_peaks_at_the_sine_frequency(loop, pump):
    view = make(loop, pump, element={"axis": "x", "subaperture": 12})
    try:
        spec = view.spectrum
        assert spec.dims == ("frequency",)
        assert spec.attrs["sample_rate_hz"] == pytest.approx(1000.0)
        assert spec.attrs["units"] == "(pixel)^2/Hz"
        df = float(spec["frequency"][1])
        assert df == pytest.approx(1000.0 / 256)
        peak = float(spec["frequency"][int(spec.argmax("frequency"))])
        assert peak == pytest.approx(F0, abs=df)
        assert float(spec.sum()) * df == pytest.approx(AMPLITUDE ** 2 / 2, rel=0.05)
        # the plotted spectrum (log axes: no DC) peaks there too
        f = np.asarray(view._psd_source.data["f"])
        p = np.asarray(view._psd_source.data["p"])
        assert f[0] > 0 and f[np.nanargmax(p)] == pytest.approx(F0, abs=df)
    finally:
        view.close()


def test_streams_align_by_source_frame_id(loop, pump):
    view = make(loop, pump)
    try:
        assert view.streams == ["cam", "slopes", "dm"]
        assert view.aligned_by == {"cam": "self", "slopes": "cnt2", "dm": "cnt2"}
        for pos in (0, 9, 10, 500, N - 1):
            view.position = pos
            frames = view.frames
            cnt2 = int(frames["cam"]["cnt2"])
            assert cnt2 == CNT2 + pos and float(frames["cam"][0, 0]) == pos
            assert int(frames["slopes"]["cnt2"]) == cnt2
            assert float(frames["slopes"].sel(axis="y")[0]) == pos
            if pos < 10:
                assert frames["dm"] is None and view.matches()["dm"] is None
            else:
                assert int(frames["dm"]["cnt2"]) == cnt2 and float(frames["dm"][0]) == -pos
        view.flush()
        assert "no frame with cnt2" not in view._info.value
        assert f"cnt2 {CNT2 + N - 1}" in view._info.value
    finally:
        view.close()


def test_streams_without_frame_ids_align_by_time(pump):
    cam = dao.shm(unique_name("cam"), np.zeros(4, np.float32), depth=64)
    slow = dao.shm(unique_name("slow"), np.zeros(4, np.float32), depth=64)
    for k in range(40):
        cam.set_data(np.full(4, k, np.float32), atime_ns=T0 + k * PERIOD_NS)  # cnt2: none
        if k % 4 == 1:  # a stream 4 times slower, written 0.5 ms after a camera frame
            slow.set_data(np.full(4, k, np.float32), atime_ns=T0 + k * PERIOD_NS + 500_000)
    view = make({"cam": cam, "slow": slow}, pump)
    try:
        assert view.aligned_by["slow"] == "time"
        idx, how = match_frames(view.histories, "cam")["slow"]
        assert how == "time"
        # camera frame k sees the newest slow frame written not after it
        expected = [-1, -1] + [(k - 2) // 4 for k in range(2, 40)]
        assert idx.tolist() == expected
    finally:
        view.close()
        cam.close()
        slow.close()


def test_selection_and_frame_are_labelled(loop, pump):
    view = make(loop, pump, element={"axis": "x", "subaperture": 12})
    try:
        assert view.series == "slopes" and view.element == {"axis": 0, "subaperture": 12}
        sel = view.selection
        assert isinstance(sel, xr.DataArray) and sel.dims == ("frame",)
        assert {"cnt0", "cnt2", "time", "t_ms", "axis", "subaperture"} <= set(sel.coords)
        assert sel["axis"].item() == "x" and sel["subaperture"].item() == 12
        assert sel.attrs["units"] == "pixel" and sel.attrs["sample_rate_hz"] == \
            pytest.approx(1000.0)
        assert sel["cnt2"].values.tolist() == list(range(CNT2, CNT2 + N))
        np.testing.assert_allclose(sel.values, sine(np.arange(N)), atol=1e-5)
        view.position = 7
        frame = view.frame
        assert frame.dims == ("axis", "subaperture") and int(frame["cnt2"]) == CNT2 + 7
        # an actuator by number: the stream with that dim is picked
        view.select(actuator=3)
        assert view.series == "dm" and view.element == {"actuator": 3}
        sel = view.selection
        assert sel["actuator"].item() == 3 and sel.sizes["frame"] == N - 10
        assert sel.values.tolist() == [-k for k in range(10, N)]
        assert view.frame is None  # dm has no frame for camera frame 7
        view.select(2, stream="cam")
        assert view.element == {"y": 0, "x": 2}
    finally:
        view.close()


def test_slider_and_selectors_redraw_the_plots(loop, pump):
    view = make(loop, pump, element={"axis": "x", "subaperture": 12})
    try:
        view._slider.value = 123  # as dragged in the page
        view.flush()
        cam = view._panels["cam"]
        assert np.asarray(cam.source.data["img"][0]).max() == 123
        assert np.asarray(view._panels["slopes"].source.data["s1"]).tolist() == [123.0] * 16
        assert f"cnt2 {CNT2 + 123}" in view._info.value
        assert view._cursor.location == pytest.approx(123.2)  # the slopes' write, 0.2 ms late
        view._dim_widgets["axis"].value = 1  # the selector, as picked in the page
        view.flush()
        assert view.element == {"axis": 1, "subaperture": 12}
        assert np.asarray(view._ts_source.data["y"]).tolist() == list(range(N))
        view._stream_pick.value = "dm"
        view.flush()
        assert view.series == "dm" and set(view._dim_widgets) == {"actuator"}
        assert view.stats()["messages"] > 0
    finally:
        view.close()


def test_a_click_on_a_frame_selects_its_element(loop, pump):
    from bokeh.events import Tap

    view = make(loop, pump)
    try:
        fig = view._panels["cam"].fig
        view._on_tap("cam", Tap(fig, x=3.5, y=5.2))
        assert view.series == "cam" and view.element == {"y": 5, "x": 3}
        fig = view._panels["dm"].fig  # actuators on a 5 x 4 grid: actuator 7 is x 2, y 1
        view._on_tap("dm", Tap(fig, x=2.5, y=1.5))
        assert view.series == "dm" and view.element == {"actuator": 7}
    finally:
        view.close()


def test_fast_drags_redraw_at_most_15_times_a_second(loop, pump):
    view = make(loop, pump)
    try:
        t0 = time.monotonic()
        last = 0
        for i in range(300):  # a drag of 300 positions over about 1 s
            last = (i * 3) % N
            view._slider.value = last
            time.sleep(1 / 300)
        wait_for(lambda: not view.stats()["pending"] and view.stats()["shown"] == last, 5,
                 what="the last position drawn")
        elapsed = time.monotonic() - t0
        renders = view.stats()["renders"]
        assert 3 <= renders <= 15 * elapsed + 2, (renders, elapsed)
        assert view.stats()["shown"] == last  # the newest position wins
        assert view not in pump.sources  # nothing pending: not fed any more
    finally:
        view.close()
    assert view not in pump.sources


def test_save_writes_the_chosen_frames_of_every_stream(loop, pump, tmp_path):
    view = make(loop, pump)
    try:
        result = view.save(tmp_path / "bad.nc", 100, 150)
        assert result.frames == {"cam": 50, "slopes": 50, "dm": 50}
        rec = open_recording(str(tmp_path / "bad.nc"))
        try:
            assert set(rec) == {"cam", "slopes", "dm"}
            for name, ds in rec.items():
                assert ds["cnt2"].values.tolist() == list(range(CNT2 + 100, CNT2 + 150)), name
            slopes = next(iter(rec["slopes"].data_vars.values()))
            assert slopes.dims == ("frame", "axis", "subaperture")
            assert rec["slopes"]["axis"].values.tolist() == ["x", "y"]
            np.testing.assert_allclose(slopes.sel(axis="x").values[:, 12],
                                       sine(np.arange(100, 150)), atol=1e-5)
            assert rec["cam"]["time"].values[0] == np.datetime64(T0 + 100 * PERIOD_NS, "ns")
            assert "x" in rec["dm"].coords  # the actuator grid travels with the frames
        finally:
            for ds in rec.values():
                ds.close()
        with pytest.raises(FileExistsError, match="overwrite=True"):
            view.save(tmp_path / "bad.nc", 0, 10)
        assert view.save(tmp_path / "bad.nc", 0, 10, overwrite=True).frames == {
            "cam": 10, "slopes": 10, "dm": 0}
        # the widget's own Save button, on a range picked with the slider
        view.position = 200
        view._from_here.click()
        view.position = 219
        view._to_here.click()
        view._path.value = str(tmp_path / "stretch.zarr")
        view._save_button.click()
        assert "saved frames 200 to 219" in view._save_status.value
        rec = open_recording(str(tmp_path / "stretch.zarr"))
        assert rec["dm"]["cnt2"].values.tolist() == list(range(CNT2 + 200, CNT2 + 220))
        view._save_button.click()  # exists: said in the widget, nothing raised
        assert "exists" in view._save_status.value
        with pytest.raises(ValueError, match="empty range"):
            view.save(tmp_path / "x.nc", 10, 10)
        with pytest.raises(ValueError, match=r"\.nc \(NetCDF-4\) or \.zarr"):
            view.save(tmp_path / "x.csv")
    finally:
        view.close()


def test_a_recording_reads_back_into_a_view(loop, pump, tmp_path):
    path = str(tmp_path / "run.nc")
    write_history(loop, path)
    view = make(path, pump, streams=["slopes", "dm"], n=500,
                element={"axis": "x", "subaperture": 12})
    try:
        assert view.streams == ["slopes", "dm"] and view.n_frames == 500
        assert view.aligned_by == {"slopes": "self", "dm": "cnt2"}
        assert view.spectrum["frequency"][int(view.spectrum.argmax("frequency"))] == \
            pytest.approx(F0, abs=1000.0 / 256)
        view.position = 0
        assert int(view.frames["dm"]["cnt2"]) == CNT2 + N - 500
    finally:
        view.close()
    # the dict open_recording returns works as well
    rec = open_recording(path)
    view = make(rec, pump, streams=["cam"])
    try:
        assert view.n_frames == N
    finally:
        view.close()
        for ds in rec.values():
            ds.close()


def test_a_dataarray_source(pump):
    t = np.datetime64(T0, "ns") + np.arange(64) * np.timedelta64(2, "ms")
    da = xr.DataArray(np.sin(np.arange(64.0))[:, None] * np.ones(3), dims=("frame", "mode"),
                      coords={"time": ("frame", t)}, name="modes")
    view = make(da, pump, element={"mode": 1})
    try:
        assert view.spectrum.attrs["sample_rate_hz"] == pytest.approx(500.0)
        assert view.selection["cnt0"].values.tolist() == list(range(1, 65))
    finally:
        view.close()
    with pytest.raises(ValueError, match="no 'time' coordinate"):
        make(da.drop_vars("time"), pump)
    with pytest.raises(ValueError, match="no 'frame' dim"):
        make(da.rename(frame="step"), pump)


def test_refresh_reads_the_fifos_again(loop, pump):
    view = make({"cam": loop["cam"]}, pump, n=100)
    try:
        assert view.n_frames == 100
        loop["cam"].set_data(np.full((8, 8), -1, np.float32), cnt2=1, atime_ns=T0 + N * PERIOD_NS)
        view.refresh()
        assert view.n_frames == 100 and view.position == 99
        assert int(view.frame["cnt2"]) == 1 and view._slider.max == 99
    finally:
        view.close()


def test_bad_input_says_what_to_do(loop, pump, tmp_path):
    empty = dao.shm(unique_name("empty"), np.zeros(4, np.float32), depth=8)
    try:
        with pytest.raises(ValueError, match="no frames yet"):
            make(empty, pump)
    finally:
        empty.close()
    with pytest.raises(ValueError, match=r"element 2000 out of range: .* 32 elements"):
        make(loop, pump, series="slopes", element=2000)
    with pytest.raises(ValueError, match=r"subaperture 16 out of range"):
        make(loop, pump, element={"axis": "x", "subaperture": 16})
    with pytest.raises(ValueError, match=r"no axis 'z' in 'slopes'"):
        make(loop, pump, element={"axis": "z", "subaperture": 1})
    with pytest.raises(ValueError, match=r"gives no 'axis'"):
        make(loop, pump, series="slopes", element={"subaperture": 1})
    with pytest.raises(ValueError, match="no stream has all the dims"):
        make(loop, pump, element={"mode": 1})
    with pytest.raises(ValueError, match=r"has no stream 'wfs'.*pass streams="):
        make(loop, pump, streams=["wfs"])
    path = str(tmp_path / "run.nc")
    write_history({"cam": loop["cam"]}, path)
    with pytest.raises(ValueError, match=r"recording .*run\.nc' has no stream 'dm': it holds "
                                         r"\['cam'\]"):
        make(path, pump, streams=["dm"])
    with pytest.raises(FileNotFoundError, match="no recording"):
        make(str(tmp_path / "none.nc"), pump)
    with pytest.raises(TypeError, match="cannot show the history of a int"):
        make(3, pump)
    view = make(loop, pump)
    try:
        with pytest.raises(ValueError, match="out of range"):
            view.select(actuator=20)
        with pytest.raises(ValueError, match="position 5000 out of range"):
            view.position = 5000
        assert view.series == "cam"  # a refused selection changes nothing
    finally:
        view.close()


# -- in a real JupyterLab ------------------------------------------------------------------------

BROWSER_SETUP = r'''
import numpy as np, dao
from dao.testing import temporary_stream_dir
from dao.widgets import HistoryView
_folder = temporary_stream_dir(); _folder.__enter__()
cam = dao.shm("cam", np.zeros((16, 16), np.float32), depth=400)
slopes = dao.shm("slopes", np.zeros((2, 12), np.float32), depth=400)
slopes.set_labels(("axis", "subaperture"), coords={"axis": ["x", "y"]}, attrs={"units": "px"})
dm = dao.shm("dm", np.zeros((20, 1), np.float32), depth=400)
dm.set_labels(("actuator",), coords={"x": ("actuator", np.arange(20) % 5),
                                     "y": ("actuator", np.arange(20) // 5)})
for k in range(400):
    t = 1_700_000_000_000_000_000 + k * 1_000_000
    cam.set_data(np.random.rand(16, 16).astype(np.float32), cnt2=1000 + k, atime_ns=t)
    s = np.zeros((2, 12), np.float32); s[0, 5] = np.sin(2 * np.pi * 50 * k / 1000)
    slopes.set_data(s, cnt2=1000 + k, atime_ns=t + 100_000)
    dm.set_data(np.full((20, 1), k % 7, np.float32), cnt2=1000 + k, atime_ns=t + 200_000)
'''

# canvases drawn inside the history views (bokeh draws in shadow roots)
JS_CANVASES = """
let n = 0;
const walk = (root) => { for (const el of root.querySelectorAll('*')) {
  if (el.tagName === 'CANVAS') n++; if (el.shadowRoot) walk(el.shadowRoot); } };
for (const v of document.querySelectorAll('.dao-history-view')) walk(v);
return n;
"""

JS_OUTPUT_MIMES = """
const cell = window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]];
return cell.model.outputs.toJSON().map(o => Object.keys(o.data || {}));
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_history_view_draws_in_jupyterlab_offline(tmp_path):
    """BokehJS is loaded from the package before the first view; the slider, moved with the
    keyboard in the page, moves the kernel's view; a second view needs no second loader."""
    from dao.widgets.testing import (
        Browser,
        JupyterLab,
        artifacts_dir,
        browser_available,
        write_notebook,
    )

    missing = browser_available()
    assert missing is None, missing  # install Debian's chromium and chromium-driver
    write_notebook(tmp_path / "history.ipynb", [
        BROWSER_SETUP,
        "view = HistoryView([cam, slopes, dm], element={'axis': 'x', 'subaperture': 5})\nview",
        "view2 = HistoryView(dm, element={'actuator': 3})\nview2",
        "print('POSITION', view.position, view.frames['dm']['cnt2'].item())"])
    shots = artifacts_dir(tmp_path / "artifacts")
    with JupyterLab(tmp_path) as lab, Browser(shots, timeout=90) as browser:
        browser.open_notebook(lab, "history.ipynb")
        browser.run_cell(0, 120)
        browser.run_cell(1, 120)
        browser.wait_for(".dao-history-view", 60)
        # 3 frames, time series, PSD (bokeh draws several canvases per plot)
        browser.wait_for(lambda: browser.js(JS_CANVASES) >= 5, 60, message="plots drawn")
        drawn = browser.js(JS_CANVASES)
        mimes = browser.js(JS_OUTPUT_MIMES, 1)
        assert "application/vnd.bokehjs_load.v0+json" in mimes[0], mimes  # loader first...
        assert "application/vnd.jupyter.widget-view+json" in mimes[-1], mimes  # ...then view
        assert "Error" not in " ".join(browser.texts(".jp-OutputArea-output"))
        assert "cnt2 1399" in browser.text(".dao-history-info")
        handle = browser.scroll_to(".dao-history-view .noUi-handle")
        browser.js("arguments[0].focus();", handle)  # as a click or Tab would
        browser.press("\ue012" * 4)  # ArrowLeft: frame 399 -> 395
        browser.wait_for(lambda: "cnt2 1395" in (browser.text(".dao-history-info") or ""), 30,
                         message="the info of frame 395")
        browser.screenshot("history-view")
        browser.run_cell(2, 120)
        browser.wait_for(lambda: browser.js(JS_CANVASES) > drawn, 60, message="second view")
        mimes2 = browser.js(JS_OUTPUT_MIMES, 2)
        assert not any("application/vnd.bokehjs_load.v0+json" in m for m in mimes2), mimes2
        browser.run_cell(3)
        line = browser.wait_for(lambda: [t for t in browser.texts(".jp-OutputArea-output")
                                         if "POSITION" in t], 30)[0]
        assert line.split()[1:3] == ["395", "1395"], line

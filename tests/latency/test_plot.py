"""The timeline plot of the latency model (dao.latency.plot) and the measured frames of a
running loop it is compared with (dao.latency.loopmodel.measure_frames)."""

from __future__ import annotations

import numpy as np
import pytest
from bokeh.models import ColumnDataSource

from dao.latency.loopmodel import TRACED_STAGES, measure_frames, measured_frame
from dao.latency.model import Pipeline, Resource, Stage, predict
from dao.latency.plot import MEASURED, MODEL, WAITING, X_LABEL, timeline_figure


@pytest.fixture(scope="module")
def prediction():
    """A camera read in 4 packets, then two stages sharing one core (one of them waits)."""
    cpu = Resource("cpu", 1)
    pipe = Pipeline([
        Stage("camera", 200e-6, packets=4),
        Stage("centroid", 80e-6, ["camera"], cpu, packets=4),
        Stage("tip_tilt", 30e-6, ["camera"], cpu),
        Stage("recon", 50e-6, ["centroid", "tip_tilt"], cpu),
    ], [cpu], period_s=1e-3)
    return predict(pipe, frames=50)


def source(fig, name: str) -> dict[str, list]:
    (src,) = [m for m in fig.select({"type": ColumnDataSource}) if m.name == name]
    return {k: list(v) for k, v in src.data.items()}


def test_bars_are_the_timeline_in_us(prediction):
    tl = prediction.timeline
    fig = timeline_figure(prediction, frame=7)
    model, waiting = source(fig, MODEL), source(fig, WAITING)
    assert fig.xaxis[0].axis_label == X_LABEL and "µs" in X_LABEL
    # one row per stage, the first on top (a categorical axis lists bottom to top)
    assert list(fig.y_range.factors) == ["recon", "tip_tilt", "centroid", "camera"]
    for s in tl.stages:
        rows = [i for i, st in enumerate(model["stage"]) if st == s]
        assert [model["packet"][i] for i in rows] == list(range(tl.start_s[s].shape[1]))
        np.testing.assert_allclose([model["left"][i] for i in rows], tl.start_s[s][7] * 1e6)
        np.testing.assert_allclose([model["right"][i] for i in rows], tl.end_s[s][7] * 1e6)
        np.testing.assert_allclose([waiting["left"][i] for i in rows], tl.ready_s[s][7] * 1e6)
        np.testing.assert_allclose([waiting["right"][i] for i in rows], tl.start_s[s][7] * 1e6)
    # the camera's 4 packets read 50 us each; the shared core makes someone wait
    np.testing.assert_allclose(model["right"][:4], [50, 100, 150, 200])
    assert max(np.subtract(waiting["right"], waiting["left"])) > 1
    assert max(model["right"]) == pytest.approx(tl.end_to_end_s()[7] * 1e6)
    assert not [m for m in fig.select({"type": ColumnDataSource}) if m.name == MEASURED]
    assert [i.label.value for i in fig.legend[0].items] == ["waiting (model)", "model"]


def test_timeline_or_prediction_default_frame(prediction):
    tl = prediction.timeline
    end = tl.end_to_end_s()
    k = int(np.argsort(end, kind="stable")[(end.size - 1) // 2])
    a = source(timeline_figure(tl), MODEL)
    assert a == source(timeline_figure(prediction, frame=k), MODEL)
    assert source(timeline_figure(tl, frame=-1), MODEL) == source(
        timeline_figure(tl, frame=tl.frames - 1), MODEL)
    assert f"frame {k}" in timeline_figure(tl).title.text
    assert timeline_figure(tl, title="mine").title.text == "mine"


def test_measured_overlay(prediction):
    measured = {"camera": (0.0, 210e-6), "recon": (300e-6, 360e-6)}
    fig = timeline_figure(prediction, frame=3, measured=measured)
    got = source(fig, MEASURED)
    assert got["stage"] == ["camera", "recon"]
    np.testing.assert_allclose(got["left"], [0, 300])
    np.testing.assert_allclose(got["right"], [210, 360])
    assert [i.label.value for i in fig.legend[0].items] == ["waiting (model)", "model",
                                                           "measured"]


@pytest.mark.parametrize("args, match", [
    (("not a timeline",), "Timeline or Prediction"),
    ((None,), "Timeline or Prediction"),
])
def test_bad_timeline(args, match):
    with pytest.raises(ValueError, match=match):
        timeline_figure(*args)


@pytest.mark.parametrize("kwargs, match", [
    ({"frame": 50}, "out of range"),
    ({"frame": -51}, "out of range"),
    ({"frame": 1.5}, "integer"),
    ({"frame": True}, "integer"),
    ({"measured": [(0, 1)]}, "dict"),
    ({"measured": {"dm": (0, 1e-6)}}, "not a stage"),
    ({"measured": {"recon": (2e-6, 1e-6)}}, "start_s <= end_s"),
    ({"measured": {"recon": (0, float("nan"))}}, "finite"),
    ({"measured": {"recon": 1e-6}}, r"\(start_s, end_s\)"),
])
def test_bad_frame_or_measured(prediction, kwargs, match):
    with pytest.raises(ValueError, match=match):
        timeline_figure(prediction, **kwargs)


def test_measure_frames_of_a_running_loop():
    """Each measured frame's stages follow each other from the camera's write to the DM
    command; their end is the loop's own end-to-end latency."""
    got = measure_frames(None, n_subap=10, frames=300, settle=100)
    ids = got["frame_id"]
    assert len(ids) > 250 and (np.diff(ids) > 0).all()
    start, end = got["start_s"], got["end_s"]
    assert list(start) == list(end) == list(TRACED_STAGES)
    assert (start["wfs_hop"] == 0).all()
    for a, b in zip(TRACED_STAGES, TRACED_STAGES[1:], strict=False):
        np.testing.assert_array_equal(end[a], start[b])
    for s in TRACED_STAGES:
        assert (end[s] >= start[s]).all(), s
    np.testing.assert_array_equal(got["latency_s"], end["controller"])
    assert np.median(got["latency_s"]) == pytest.approx(got["latency_p50_s"], rel=0.05)
    assert set(got["hops"]) == {"wfs_to_slopes", "slopes_to_controller"}
    fid, frame = measured_frame(got)
    i = int(np.flatnonzero(ids == fid)[0])
    assert got["latency_s"][i] == pytest.approx(np.median(got["latency_s"]), rel=0.05)
    assert frame == {s: (start[s][i], end[s][i]) for s in TRACED_STAGES}
    assert measured_frame(got, int(ids[0]))[1]["controller"][1] == got["latency_s"][0]
    with pytest.raises(ValueError, match="not measured"):
        measured_frame(got, -5)

"""The latency model of a loop configuration (dao.latency.loopmodel): the loop's stages costed
by a real quick calibration; hops measured in a running loop replace the bare hop."""

from __future__ import annotations

import numpy as np
import pytest

from dao.latency.catalogue import derive
from dao.latency.loopmodel import MEASURED_STAGES, loop_pipeline, measure_loop_hops, predict_loop
from dao.latency.profile import HardwareProfile, KernelTable, Quantiles, calibrate


@pytest.fixture(scope="module")
def profile() -> HardwareProfile:
    return calibrate(quick=True, loops=["sh10", "sh20"])


def test_stages_of_the_loop(profile):
    pipe = loop_pipeline(None, profile, n_subap=10)
    assert [s.name for s in pipe.stages] == ["camera", "wfs_hop", "slopes", "slopes_hop",
                                             "controller"]
    assert pipe["controller"].inputs == ("slopes_hop",)
    assert pipe["slopes"].resource_name == pipe["controller"].resource_name == "cpu"
    assert pipe.period_s == pytest.approx(1e-3)  # the configured 1 kHz camera
    # on 2 cores with the camera busy, the loop's stages share one
    assert pipe.resources["cpu"].servers == max(1, profile.cores - 1)


def test_prediction_sums_the_stages(profile):
    got = predict_loop(None, profile, n_subap=10, frames=3000)
    for k in ("latency_p50_s", "latency_p99_s", *(f"latency_{s}_p50_s" for s in
                                                   MEASURED_STAGES)):
        assert 0 < got[k] < 0.01, k
    parts = got["latency_camera_to_slopes_p50_s"] + got["latency_slopes_to_command_p50_s"]
    assert got["latency_p50_s"] == pytest.approx(parts, rel=0.25)
    assert got["latency_p99_s"] >= got["latency_p50_s"]
    assert got["bottleneck"] in {"wfs_hop", "slopes", "slopes_hop", "controller"}
    # each loop is costed at its own size
    assert loop_pipeline(None, profile, n_subap=20)["controller"].cost.p50 > \
        loop_pipeline(None, profile, n_subap=10)["controller"].cost.p50


def _hop_table(name: str, unit: str, points: dict[float, float]) -> KernelTable:
    t = KernelTable(f"hop.loop.shack-hartmann.{name}", unit, "test")
    for nbytes, seconds in points.items():
        t.add(nbytes, Quantiles.from_samples(np.full(64, seconds)), "test")
    return t


def test_hops_measured_in_a_loop_are_used(profile):
    p = HardwareProfile.from_dict(profile.to_dict())
    p.kernels["hop.loop.shack-hartmann.wfs_to_slopes"] = _hop_table("wfs_to_slopes", "image bytes",
                                                     {1e3: 300e-6})
    p.kernels["hop.loop.shack-hartmann.slopes_to_controller"] = _hop_table(
        "slopes_to_controller", "slopes bytes", {1e2: 100e-6, 1e6: 400e-6})
    got = predict_loop(None, p, n_subap=10, frames=500)
    # one image size measured, held beyond it; the slopes' hop interpolated in log-log
    geo = p.loops["sh10"]
    between = 100e-6 * 4 ** ((np.log(geo["slopes_bytes"]) - np.log(1e2)) / np.log(1e4))
    assert loop_pipeline(None, p, n_subap=10)["wfs_hop"].cost.p50 == pytest.approx(300e-6)
    assert loop_pipeline(None, p, n_subap=10)["slopes_hop"].cost.p50 == pytest.approx(
        between, rel=1e-6)
    assert got["latency_camera_to_slopes_p50_s"] >= 300e-6
    assert got["latency_slopes_to_command_p50_s"] >= between
    # a derived profile (another machine) keeps the hops measured here, unscaled
    d = derive("amd-epyc-9654", p, factor=0.5)
    assert d.kernels["hop.loop.shack-hartmann.wfs_to_slopes"].points[0].cost.p50_s == \
        pytest.approx(300e-6)
    assert d.kernels["law.modal"].points[0].cost.p50_s == pytest.approx(
        0.5 * p.kernels["law.modal"].points[0].cost.p50_s)


def test_errors(profile):
    with pytest.raises(ValueError, match="give a hardware profile"):
        loop_pipeline(None, None)
    with pytest.raises(ValueError, match="n_subap"):
        loop_pipeline(None, profile, n_subap=0)
    with pytest.raises(ValueError, match="runs = 0: at least 1"):
        measure_loop_hops(profile, 10, runs=0)


def test_cli_calibrate_then_predict(tmp_path):
    import os
    import subprocess
    import sys

    from dao.testing import child_environment

    path = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, "-m", "dao.cli", "latency", "calibrate", "--quick",
                           "--loops", "sh10", "-o", str(path)], capture_output=True, text=True,
                          timeout=300, env=child_environment())
    assert done.returncode == 0, done.stderr
    assert os.stat(path).st_mode & 0o777 == 0o600
    p = HardwareProfile.load(path)
    for name in ("hop.loop.shack-hartmann.wfs_to_slopes",
                 "hop.loop.shack-hartmann.slopes_to_controller"):
        (point,) = p.kernels[name].points  # the hops of the one loop calibrated
        assert point.loop == "sh10"
        assert point.cost.n > 400  # from the running loop's timing records, per frame
    assert p.kernels["hop.loop.shack-hartmann.wfs_to_slopes"].points[0].size == \
        p.loops["sh10"]["wfs_bytes"]
    # the simulated camera's own pace, measured with the hops, sets the model's period
    assert 1e-4 < p.loops["sh10"]["loop_period_s"] < 0.1
    assert loop_pipeline(None, p, n_subap=10).period_s == pytest.approx(
        max(1e-3, p.loops["sh10"]["loop_period_s"]))
    assert "simulated camera" in p.notes["components_sh10"]
    out = subprocess.run([sys.executable, "-m", "dao.cli", "latency", "--profile", str(path),
                          "--n-subap", "10"], capture_output=True, text=True, timeout=120,
                         env=child_environment())
    assert out.returncode == 0, out.stderr
    rows = {line[:24].strip(): line[24:].split() for line in out.stdout.splitlines()}
    assert set(rows) >= {"camera_to_slopes", "slopes_to_command", "end to end"}
    p50, p99 = (float(v) for v in rows["end to end"])
    assert 0 < p50 <= p99
    missing = subprocess.run([sys.executable, "-m", "dao.cli", "latency", "--profile",
                              str(tmp_path / "none.json")], capture_output=True, text=True,
                             timeout=120, env=child_environment())
    assert missing.returncode != 0 and "Traceback" not in missing.stderr

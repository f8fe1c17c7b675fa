"""The latency model of a loop configuration (dao.latency.loopmodel): the loop's stages costed
by a real quick calibration; hops measured in a running loop replace the bare hop."""

from __future__ import annotations

import numpy as np
import pytest

from dao.latency.loopmodel import MEASURED_STAGES, loop_pipeline, predict_loop
from dao.latency.profile import HardwareProfile, Quantiles, calibrate


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


def test_hops_measured_in_a_loop_are_used(profile):
    slow = Quantiles.from_samples(np.full(64, 300e-6))
    p = HardwareProfile.from_dict(profile.to_dict())
    p.hop_loop_s = {"wfs_to_slopes": slow, "slopes_to_controller": slow}
    got = predict_loop(None, p, n_subap=10, frames=500)
    assert got["latency_camera_to_slopes_p50_s"] >= 300e-6
    assert got["latency_slopes_to_command_p50_s"] >= 300e-6
    assert got["latency_p50_s"] >= 600e-6


def test_errors(profile):
    with pytest.raises(ValueError, match="give a hardware profile"):
        loop_pipeline(None, None)
    with pytest.raises(ValueError, match="n_subap"):
        loop_pipeline(None, profile, n_subap=0)


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
    assert set(p.hop_loop_s) == {"wfs_to_slopes", "slopes_to_controller"}
    assert p.hop_loop_s["wfs_to_slopes"].n > 500  # from the running loop's timing records
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

"""The AO loop across processes on the simulated bench (dao.loop, ``dao demo``).

Default system: D = 8 m, r0 = 15 cm at 500 nm, 10 m/s wind, 20x20 Shack-Hartmann at 1 kHz
(simulated time: the bench waits for each frame's command, so the Strehl ratios do not depend
on the machine's speed). The error budget (fitting + servo lag) gives a Strehl of 0.87 in H
band; the requirement is at least 0.3 and at least 5x the open-loop Strehl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dao.loop import REPORT_KEYS, format_report, load_loop_config, run_loop

ROOT = Path(__file__).resolve().parent.parent

SHORT = {"run": {"open_frames": 200, "settle_frames": 150, "closed_frames": 800}}


def _gone(pids) -> bool:
    """None of these pids is a live dao component process."""
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        if b"dao.runtime_cli" in cmd and stat[2] != "Z":
            return False
    return True


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("loop") / "telemetry.nc"
    return run_loop(SHORT, telemetry=path)


def test_report_keys_and_strehl(report):
    print(format_report(report))
    for k in REPORT_KEYS:
        assert k in report and np.isfinite(report[k]), k
    assert report["wavelength_m"] == pytest.approx(1.65e-6)
    assert report["strehl_closed"] >= 0.3
    assert report["strehl_closed"] >= 5 * report["strehl_open"]
    assert report["residual_rms_closed_rad"] < report["residual_rms_open_rad"]
    assert report["late_frames"] == 0
    assert report["loop_rate_hz"] > 0
    assert 0 < report["latency_p50_s"] <= report["latency_p99_s"] < 1.0
    for stage in ("camera_to_slopes", "slopes_to_command"):
        assert 0 < report[f"latency_{stage}_p50_s"] <= report["latency_p50_s"]
    assert report["latency_samples"] >= 700


def test_loop_does_not_drift_short(report):
    """Shortened no-drift check: the two halves of the closed loop agree."""
    a, b = report["strehl_closed_first_half"], report["strehl_closed_second_half"]
    assert b >= a - 0.1 and b >= 0.3


def test_processes_gone_and_streams_removed(report):
    assert len(report["pids"]) == 3
    assert report["processes_alive"] == []
    assert _gone(report["pids"])


def test_telemetry_file(report):
    from dao.telemetry import open_recording

    rec = open_recording(report["telemetry"])
    assert set(rec) >= {"slopes", "dm_command", "frames", "science"}
    cmd = rec["dm_command"]
    assert cmd["dm_command"].shape == (report["frames_total"], report["n_actuators"])
    frames = rec["frames"]["frames"].values
    assert np.all(np.diff(frames[:, 0]) == 1)  # every camera frame, in order
    assert np.array_equal(rec["dm_command"]["cnt2"].values, frames[:, 0])


def test_config_validation(tmp_path):
    cfg = load_loop_config(None, bench={"n_subap": 10})
    assert cfg["bench"]["n_subap"] == 10 and cfg["bench"]["r0"] == 0.15
    with pytest.raises(ValueError, match="pyramid"):
        load_loop_config({"sensor": {"type": "pyramid"}})
    f = tmp_path / "loop.toml"
    f.write_text('[controller]\ngain = 0.3\n[streams]\nslopes = "my_slopes"\n')
    cfg = load_loop_config(f)
    assert cfg["controller"]["gain"] == 0.3 and cfg["streams"]["slopes"] == "my_slopes"
    assert cfg["streams"]["wfs_image"] == "wfs_image"


def test_demo_json_subprocess(tmp_path):
    """``dao demo --json`` with a config file renaming streams and components, 10x10."""
    conf = tmp_path / "loop.toml"
    conf.write_text(
        '[bench]\nn_subap = 10\n[run]\nopen_frames = 100\nsettle_frames = 100\n'
        '[streams]\nwfs_image = "cam0"\ndm_command = "dm0"\n'
        '[components]\ncontroller = { name = "rtc", class = "dao.loop_components:Controller" }\n'
    )
    tel = tmp_path / "t.nc"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    res = subprocess.run(
        [sys.executable, "-m", "dao.cli", "demo", "--config", str(conf), "--frames", "400",
         "--gain", "0.4", "--json", "--telemetry", str(tel)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    for k in REPORT_KEYS:
        assert k in r
    assert r["n_subap"] == 10 and r["gain"] == 0.4
    assert r["strehl_closed"] >= 5 * r["strehl_open"]
    assert r["telemetry"] == str(tel) and tel.exists()
    assert _gone(r["pids"])


@pytest.mark.slow
def test_loop_stays_closed_without_drift():
    """A longer closed loop (4000 frames, 4 s simulated): no drift between the halves."""
    r = run_loop({"run": {"open_frames": 200, "settle_frames": 200, "closed_frames": 4000}},
                 telemetry="")
    a, b = r["strehl_closed_first_half"], r["strehl_closed_second_half"]
    assert r["strehl_closed"] >= 0.3 and r["strehl_closed"] >= 5 * r["strehl_open"]
    assert abs(b - a) < 0.05, (a, b)
    assert r["late_frames"] == 0

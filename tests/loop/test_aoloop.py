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
import time
from pathlib import Path

import numpy as np
import pytest

from dao.loop import REPORT_KEYS, AOLoop, format_report, load_loop_config, run_loop
from dao.testing import child_environment, temporary_stream_dir, unique_name

SHORT = {"run": {"open_frames": 200, "settle_frames": 150, "closed_frames": 800}}


def _gone(pids) -> bool:
    """None of these pids is a live dao component process."""
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        if b"dao.runtime.cli" in cmd and stat[2] != "Z":
            return False
    return True


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("loop") / "telemetry.nc"
    with temporary_stream_dir() as folder:  # (module scope: before the test's own folder)
        r = run_loop(SHORT, telemetry=path)
        r["streams_left"] = os.listdir(folder)
    return r


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
    assert 0 < report["latency_p50_s"] <= report["latency_p99_s"]  # speed: benchmarks/loop.py
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
    assert report["streams_left"] == []


def test_telemetry_file(report):
    from dao.streams.telemetry import open_recording

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
    with pytest.raises(ValueError, match="shack-hartmann, pyramid"):
        load_loop_config({"sensor": {"type": "curvature"}})
    with pytest.raises(ValueError, match="unknown loop config table"):
        load_loop_config({"contoller": {"gain": 0.3}})
    with pytest.raises(ValueError, match="closed_frames"):
        load_loop_config({"run": {"closed_frames": 0}})
    f = tmp_path / "loop.toml"
    f.write_text('[controller]\ngain = 0.3\n[streams]\nslopes = "my_slopes"\n')
    cfg = load_loop_config(f)
    assert cfg["controller"]["gain"] == 0.3 and cfg["streams"]["slopes"] == "my_slopes"
    assert cfg["streams"]["wfs_image"] == "wfs_image"


def test_demo_json_subprocess(tmp_path, stream_dir):
    """``dao demo --json`` with a config file renaming streams and components, 10x10."""
    conf = tmp_path / "loop.toml"
    # configured names are used exactly, and stream semaphores are named machine-wide:
    # names no other test run uses
    cam, dm, rtc = unique_name("cam"), unique_name("dm"), unique_name("rtc")
    conf.write_text(
        '[bench]\nn_subap = 10\n[run]\nopen_frames = 100\nsettle_frames = 100\n'
        f'[streams]\nwfs_image = "{cam}"\ndm_command = "{dm}"\n'
        f'[components]\ncontroller = {{ name = "{rtc}", '
        'class = "dao.loop.components:Controller" }\n'
    )
    tel = tmp_path / "t.nc"
    env = child_environment()
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
    assert os.listdir(stream_dir) == []  # the loop's streams (in $DAO_SHM_DIR) removed


@pytest.mark.slow
def test_loop_stays_closed_without_drift():
    """The default 20x20 loop kept closed for ``$DAO_DRIFT_SECONDS`` (default 30 s; the
    issue's check is 600): the long-exposure Strehl of every 1000-frame stretch stays within
    0.05 of the first, no frame is late and the mirror stays well inside its stroke (no slow
    runaway of unseen modes)."""
    seconds = float(os.environ.get("DAO_DRIFT_SECONDS", "30"))
    with AOLoop(history=4096) as ao:
        ao.gain = 0.5
        ao.wait(300)
        strehl = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end or len(strehl) < 3:
            q = ao.expose(1000)
            strehl.append(q["strehl"])
            assert q["late"] == 0
        cmd = ao.streams["dm_command"].get_data()
        print(f"{len(strehl)} stretches of 1000 frames over {ao.frame / 1000:.0f} s simulated: "
              f"Strehl {min(strehl):.3f} to {max(strehl):.3f}")
    assert min(strehl) >= 0.3
    assert max(abs(s - strehl[0]) for s in strehl) < 0.05, strehl
    assert np.abs(cmd).max() < 0.5 * 10e-6  # well inside the default 10 um stroke


def test_aoloop_live_gain_science_and_cleanup(tmp_path, stream_dir):
    """A running loop driven like a notebook does: gain changed live, histories read live."""
    ao = AOLoop({"bench": {"n_subap": 10}}, history=2048)
    assert "not started" in repr(ao)
    with pytest.raises(RuntimeError, match="not running"):
        ao.gain = 0.3
    ao.start()
    try:
        folder, pids = ao.folder, [s["pid"] for s in ao.supervisor.status()]
        assert "running" in repr(ao) and ao.gain == 0.0
        # vectors are (n, 1): the DAO C library's opener refuses 1-D streams; the slopes are
        # (2, n_subapertures): the x slopes, then the y slopes
        n_act = ao.calibration["n_actuators"]
        assert ao.streams["dm_command"].shape == (n_act, 1)
        assert ao.streams["slopes"].shape == (2, ao.calibration["n_slopes"] // 2)
        assert ao.calibration["slopes_shape"] == ao.streams["slopes"].shape
        # in the standard stream folder ($DAO_SHM_DIR), where dao ls and C programs look
        assert {os.path.dirname(s.path) for s in ao.streams.values()} == {stream_dir}
        q_open = ao.expose(200)
        ao.gain = 0.5
        assert ao.client("controller").query("gain") == "0.5"  # the process has it
        ao.client("controller").setup("gain", 0.45)  # set by another client
        assert ao.gain == 0.45
        ao.gain = 0.5
        ao.wait(150)
        q_closed = ao.expose(300)
        assert q_closed["strehl"] > 5 * q_open["strehl"]
        psf = ao.psf(50)  # the long exposure from the psf stream: its peak is the Strehl
        assert psf.attrs["strehl"] == pytest.approx(q_closed["strehl"], rel=0.15)
        assert psf.attrs["exposures"] == 50 and psf.sel(x=0, y=0).item() == psf.max().item()
        ao.open_loop()
        ao.wait(100)
        q_reopened = ao.expose(200)
        assert q_reopened["strehl"] < 0.5 * q_closed["strehl"]
        sci = ao.science()
        assert sci.sizes["frame"] > 100 and np.all(np.diff(sci.frame.values) == 4)
        assert sci.frame.values[0] > 0 and sci.residual_rms_frame.min() > 0
        # the short-exposure residual follows the gain: lower while closed
        assert [g for _, g in ao.gain_log] == [0.0, 0.5, 0.5, 0.0]
        t_close, t_open = ao.gain_log[1][0], ao.gain_log[-1][0]
        res = sci.residual_rms_frame
        closed = res.sel(frame=slice(t_close + 150, t_open)).mean().item()
        assert closed < 0.5 * res.sel(frame=slice(0, t_close)).mean().item()
        lat = ao.latency()
        assert lat["latency_samples"] > 500 and 0 < lat["latency_p50_s"] <= lat["latency_p99_s"]
        path = ao.write_telemetry(tmp_path / "live.nc")  # while running
        # a component in Error stops the loop: wait() says which and why, without timing out
        ao.client("camera").fail("injected fault")
        # a RuntimeError naming the component and the reason (a timeout is a TimeoutError)
        with pytest.raises(RuntimeError, match="bench: .*injected fault"):
            ao.wait(100, timeout=600)
        ao.stop()
        assert _gone(pids) and not ao.running
        assert ao.latency(since=t_close)["latency_samples"] > 300  # histories after stop
    finally:
        ao.close()
    assert not os.path.exists(folder)
    assert os.listdir(stream_dir) == []  # the loop's streams, labels and timing streams
    from dao.streams.telemetry import open_recording

    rec = open_recording(path)
    assert rec["dm_command"]["dm_command"].shape[1] == ao.calibration["n_actuators"]
    for ds in rec.values():
        ds.close()


def test_pyramid_loop_closes(tmp_path):
    """``sensor = "pyramid"``: the same loop with a modulated pyramid, 10x10."""
    r = run_loop({"bench": {"n_subap": 10}, "sensor": {"type": "pyramid"},
                  "run": {"open_frames": 100, "settle_frames": 100, "closed_frames": 300}},
                 telemetry="")
    print(format_report(r))
    assert r["sensor"] == "pyramid" and "modulation" in r["estimator"]
    assert r["strehl_closed"] >= 0.3 and r["strehl_closed"] >= 5 * r["strehl_open"]
    assert r["late_frames"] == 0


def test_two_loops_run_at_once(stream_dir):
    """Stream semaphores are named machine-wide: default names get a per-loop suffix."""
    with AOLoop(n_subap=6, history=256) as a, AOLoop(n_subap=6, history=256) as b:
        assert a.config["streams"]["wfs_image"] != b.config["streams"]["wfs_image"]
        assert a.config["streams"]["wfs_image"].startswith("wfs_image_")
        assert set(a.timing_streams.values()).isdisjoint(b.timing_streams.values())
        a.wait(50)
        b.wait(50)
        assert a.streams["wfs_image"].path != b.streams["wfs_image"].path
        assert os.path.dirname(a.streams["wfs_image"].path) == stream_dir
        b.close()  # one closed: the other's streams stay and it runs on
        assert len([f for f in os.listdir(stream_dir) if f.endswith(".im.shm")]) == 9
        a.wait(50)
    assert os.listdir(stream_dir) == []


def test_demo_stops_cleanly_on_sigterm(tmp_path, stream_dir):
    """SIGTERM (or Ctrl-C) during ``dao demo``: exit 130, no process or stream left behind."""
    import signal

    env = child_environment(TMPDIR=str(tmp_path))  # the loop's private folder goes there
    p = subprocess.Popen([sys.executable, "-m", "dao.cli", "demo", "--size", "6", "--frames",
                          "100000", "--telemetry", ""], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in p.stdout:
            if "closing the loop" in line:
                break
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130 and "interrupted" in err
    assert not list(tmp_path.glob("daoloop*"))
    assert os.listdir(stream_dir) == []


def test_a_failed_start_leaves_nothing_behind(stream_dir):
    """A slopes process that cannot reach Idle (a component without the loop's streams):
    start() raises, no folder, stream or process left."""
    ao = AOLoop({"bench": {"n_subap": 6},
                 "components": {"slopes": {"name": "slopes", "class": "dao.examples:Relay"}}})
    with pytest.raises(Exception, match="slopes"):
        ao.start()
    assert not ao.running and ao.folder and not os.path.exists(ao.folder)
    assert os.listdir(stream_dir) == []
    assert not any(s["alive"] for s in ao.supervisor.status())  # the controller had started

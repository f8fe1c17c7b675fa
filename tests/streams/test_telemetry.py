"""Telemetry recording: loss-free at the writer's top rate, losses counted, formats, alignment."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

import dao
from dao import telemetry
from dao.testing import sleep_until

CTX = mp.get_context("spawn")


def _writer(path, n, period, go):
    s = dao.shm(path)
    frame = np.empty(s.shape, s.dtype)
    go.wait(60)
    t = time.perf_counter()
    for k in range(n):
        if period:
            t += period
            sleep_until(t)
        frame.fill(k)
        s.set_data(frame, cnt2=k)


def _run(path, n, period, out, **kw):
    go = CTX.Event()
    p = CTX.Process(target=_writer, args=(path, n, period, go), daemon=True)
    p.start()
    time.sleep(0.5)  # let the interpreter start, so the recorder starts first
    rec = telemetry.Recorder(path, out, frames=n, **kw).start()
    go.set()
    res = rec.wait(600)
    p.join(30)
    return res


def _check_file(out, name, n, first_cnt):
    ds = telemetry.open_recording(out)[name]
    var = ds[name]
    assert var.dims == ("frame", "y", "x") and var.shape[0] == n
    assert np.array_equal(ds["cnt0"].values, np.arange(first_cnt, first_cnt + n))
    assert np.all(np.diff(ds["time"].values.astype(np.int64)) >= 0)
    values = var.values
    assert np.array_equal(values[:, 3, 5], np.arange(n, dtype=values.dtype))  # bit-exact
    assert np.array_equal(values[:, 0, 0], values[:, -1, -1])
    ds.close()


@pytest.mark.slow
def test_100k_frames_at_top_rate_without_loss(name, stream_dir):
    n = 100_000
    s = dao.shm(name, np.zeros((64, 64), np.float32), depth=n)
    out = os.path.join(stream_dir, "rec.nc")
    res = _run(s.path, n, 0.0, out, chunk=1024)
    assert res.frames[name] == n and res.lost[name] == 0
    _check_file(out, name, n, 1)


def test_paced_writer_small_depth_no_loss(name, stream_dir):
    n = 10_000
    s = dao.shm(name, np.zeros((64, 64), np.float32), depth=2048)
    out = os.path.join(stream_dir, "paced.nc")
    res = _run(s.path, n, 1e-4, out, chunk=256)  # 10 kHz camera
    assert res.frames[name] == n and res.lost[name] == 0
    _check_file(out, name, n, 1)


def test_losses_are_counted_when_lapped(name, stream_dir):
    n = 30_000
    s = dao.shm(name, np.zeros((64, 64), np.float32), depth=8)
    out = os.path.join(stream_dir, "lossy.nc")
    res = _run(s.path, n, 0.0, out, chunk=64)
    assert res.lost[name] > 0  # a depth of 8 cannot cover a recorder at full writer speed
    assert res.frames[name] + res.lost[name] == n  # every frame is either on disk or counted
    ds = telemetry.open_recording(out)[name]
    cnt = ds["cnt0"].values
    assert np.all(np.diff(cnt) > 0) and cnt[-1] == n
    assert np.array_equal(ds[name].values[:, 0, 0], (cnt - 1).astype(np.float32))
    ds.close()


@pytest.mark.parametrize("suffix", ["zarr", "fits"])
def test_other_formats(name, stream_dir, suffix):
    s = dao.shm(name, np.zeros((4, 5), np.int16), depth=64)
    s.set_labels(("axis", "subaperture"), coords={"axis": ["a", "b", "c", "d"]})
    out = os.path.join(stream_dir, f"rec.{suffix}")
    rec = telemetry.Recorder(s, out, frames=100, chunk=32).start()
    for k in range(100):
        s.set_data(np.full((4, 5), k, np.int16))
        time.sleep(0.0005)
    res = rec.wait(60)
    assert res.frames[name] == 100 and res.lost[name] == 0
    if suffix == "zarr":
        ds = telemetry.open_recording(out)[name]
        assert ds[name].dims == ("frame", "axis", "subaperture")
        assert list(ds["axis"].values) == ["a", "b", "c", "d"]
        assert ds[name].values[:, 0, 0].tolist() == list(range(100))
        ds.close()
    else:
        from astropy.io import fits

        with fits.open(out) as h:
            cube = h[name.upper()].data
            assert cube.shape == (100, 4, 5) and cube[:, 1, 2].tolist() == list(range(100))
            assert h[name.upper() + "_T"].data["CNT0"].tolist() == list(range(1, 101))


def test_two_streams_recorded_and_aligned(name, stream_dir):
    wfs = dao.shm(name + "w", np.zeros((3, 3), np.float32), depth=256)
    dm = dao.shm(name + "d", np.zeros(4, np.float64), depth=256)
    out = os.path.join(stream_dir, "two.nc")
    rec = telemetry.Recorder([wfs, dm], out, frames=50).start()
    for k in range(50):
        wfs.set_data(np.full((3, 3), k, np.float32))
        dm.set_data(np.full(4, 10 * k, np.float64))
        time.sleep(0.001)
    res = rec.wait(60)
    assert res.frames == {wfs.name: 50, dm.name: 50}
    recording = telemetry.open_recording(out)
    aligned = telemetry.align(recording, on=wfs.name)
    w = aligned[wfs.name].values[:, 0, 0]
    d = aligned[f"{dm.name}/{dm.name}"].values[:, 0]
    # the DM command written just before each WFS frame is the previous one
    assert np.array_equal(d[1:], 10 * (w[1:] - 1))
    for ds in recording.values():
        ds.close()


def test_record_command_line(name, stream_dir):
    import subprocess
    import sys

    s = dao.shm(name, np.zeros((2, 2), np.float32), depth=512)
    out = os.path.join(stream_dir, "cli.nc")
    p = subprocess.Popen([sys.executable, "-m", "dao.cli", "record", name, "--frames", "200",
                          "--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(1.5)
    for k in range(400):
        s.set_data(np.full((2, 2), k, np.float32))
        time.sleep(0.0005)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    assert "200 frames" in stdout and "0 lost" in stdout
    ds = telemetry.open_recording(out)[name]
    assert ds.sizes["frame"] == 200
    ds.close()


def test_bad_output_name(name):
    s = dao.shm(name, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=".nc"):
        telemetry.Recorder(s, "/tmp/whatever.txt")


def test_write_history_is_a_recording_of_what_the_fifos_hold(name, stream_dir):
    """One writer, one schema: a stream's history written now reads back as a recording would,
    groups named as asked, with cnt0, cnt2 and time."""
    s = dao.shm(name, np.zeros((3, 1), np.float64), depth=16)
    s.set_labels(("field",), coords={"field": ["a", "b", "c"]})
    for k in range(20):
        s.set_data(np.full((3, 1), k, np.float64), cnt2=1000 + k)
    empty = dao.shm(name + "e", np.zeros(2, np.int32), depth=4)
    out = os.path.join(stream_dir, "hist.nc")
    res = telemetry.write_history({"log": s, "empty": empty}, out)
    assert res.frames == {"log": 16, "empty": 0}
    rec = telemetry.open_recording(out)
    ds = rec["log"]
    assert ds[name].dims == ("frame", "field") and ds.sizes["frame"] == 16
    assert ds["cnt0"].values.tolist() == list(range(5, 21))
    assert ds["cnt2"].values.tolist() == list(range(1004, 1020))
    assert ds[name].sel(field="b").values.tolist() == list(map(float, range(4, 20)))
    assert rec["empty"].sizes["frame"] == 0
    for d in rec.values():
        d.close()


def test_a_slow_stream_reaches_the_file_before_the_chunk_fills(name, stream_dir):
    """Frames of a slow stream are written within ``flush_s``, not only when 512 have come:
    the progress a user watches moves, and a crash loses at most that much."""
    from dao.testing import wait_for

    s = dao.shm(name, np.zeros(3, np.float32), depth=64)
    rec = telemetry.Recorder(s, os.path.join(stream_dir, "slow.nc"), flush_s=0.1).start()
    for k in range(5):
        s.set_data(np.full(3, k, np.float32))
    wait_for(lambda: rec.progress() == 5, timeout=30, what="5 frames on disk")
    rec.stop()
    assert rec.wait(30).frames[name] == 5

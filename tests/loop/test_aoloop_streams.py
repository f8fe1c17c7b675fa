"""The loop's streams as other processes see them: in the standard stream folder under their
configured names (``dao ls``, ``dao.shm(name)`` in another process), default names unique per
loop, a name taken by another live loop refused, exactly the loop's streams removed by close,
and labels with the sensor's and the mirror's geometry (slopes by ``axis`` and
``subaperture``, commands by ``actuator``). Small loops (4x4 to 6x6, a few seconds each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dao.errors import StreamBusyError
from dao.hw import SimulatedBench
from dao.loop import AOLoop, Calibration, bench_arguments
from dao.loop.components import slope_estimator
from dao.testing import child_environment, unique_name

#: Run in another process: open a stream by its bare name, read new frames and its labels.
READER = """
import json, sys
import numpy as np
import dao

s = dao.shm(sys.argv[1])
c0 = s.get_counter()
frames = [s.get_data(check=True, timeout=30).copy() for _ in range(5)]
h = s.history_xarray(4)
print(json.dumps({
    "path": s.path, "shape": list(s.shape), "counter_before": int(c0),
    "counter_after": int(s.get_counter()), "finite": bool(np.isfinite(frames).all()),
    "dims": list(h.dims), "axis": h["axis"].values.tolist(),
    "x": h["x"].values.tolist(), "y": h["y"].values.tolist(), "attrs": dict(h.attrs)}))
"""


def _owner_files(names) -> list[str]:
    """dao's owner and claim files in /dev/shm of these stream names (left: a leak)."""
    shm_files = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    return [f for f in shm_files for n in names if f.startswith(f"dao.{n}.")]


def test_streams_in_the_stream_folder_under_their_configured_names(stream_dir):
    """A configured name is the stream's name in $DAO_SHM_DIR: another process opens it by
    that name and reads live, labelled frames; ``dao ls`` lists every stream of the loop;
    close() removes exactly those (files, labels, owner files) and the private folder."""
    slopes = unique_name("slopes")
    other = os.path.join(stream_dir, "not_the_loops.txt")  # something close() must leave
    with open(other, "w") as f:
        f.write("x")
    ao = AOLoop({"bench": {"n_subap": 6}, "streams": {"slopes": slopes}}, history=256)
    ao.start()
    try:
        names = dict(ao.config["streams"])
        assert names["slopes"] == slopes  # used exactly
        tag = ao._tag
        for role in ("wfs_image", "dm_command", "science", "psf"):  # defaults: suffixed
            assert names[role] == f"{role}_{tag}"
        assert names["frames"] == f"wfs_frames_{tag}"
        assert ao.stream_dir == stream_dir
        for s in ao.streams.values():
            assert os.path.dirname(s.path) == stream_dir
        # the private folder holds the calibration only, readable by this user alone
        assert sorted(os.listdir(ao.folder)) == ["calibration.npz", "laws"]
        assert os.stat(ao.folder).st_mode & 0o077 == 0
        ao.wait(20)
        env = child_environment()
        assert env["DAO_SHM_DIR"] == stream_dir
        res = subprocess.run([sys.executable, "-c", READER, slopes], capture_output=True,
                             text=True, timeout=120, env=env)
        assert res.returncode == 0, res.stderr
        seen = json.loads(res.stdout)
        assert seen["path"] == ao.streams["slopes"].path
        n_sub = len(ao.calibration["subaperture_x"])
        assert seen["shape"] == [2, n_sub] and seen["finite"]
        assert seen["counter_after"] >= seen["counter_before"] + 5  # live frames
        assert seen["dims"] == ["frame", "axis", "subaperture"] and seen["axis"] == ["x", "y"]
        assert seen["x"] == ao.calibration["subaperture_x"].tolist()
        assert seen["y"] == ao.calibration["subaperture_y"].tolist()
        assert seen["attrs"]["units"] == "pixel"
        ls = subprocess.run([sys.executable, "-m", "dao.cli", "ls"], capture_output=True,
                            text=True, timeout=60, env=env)
        assert ls.returncode == 0, ls.stderr
        listed = {line.split()[0] for line in ls.stdout.splitlines()[1:] if line.strip()}
        loop_streams = {*names.values(), *ao.timing_streams.values()}
        assert loop_streams <= listed, ls.stdout
        assert set(ao.timing_streams.values()) == {f"{c}_timing_{tag}" for c in
                                                   ("controller", "slopes", "bench")}
        folder = ao.folder
    finally:
        ao.close()
    assert sorted(os.listdir(stream_dir)) == ["not_the_loops.txt"]  # labels files too
    assert not os.path.exists(folder)
    assert _owner_files(loop_streams) == []
    assert not ao.streams


def test_a_name_another_live_loop_uses_is_refused_and_nothing_left(stream_dir):
    """A second loop configured with a stream (or component) name the first one writes fails
    at once with StreamBusyError naming the stream and the fix; it starts nothing, creates
    nothing, and the first loop runs on."""
    frames, rtc = unique_name("fr"), unique_name("rtc")
    with AOLoop({"bench": {"n_subap": 4}, "streams": {"frames": frames},
                 "components": {"controller": {"name": rtc}}},
                history=128) as first:
        assert first.timing_streams["controller"] == f"{rtc}_timing"  # configured: exact
        first.wait(10)
        before = sorted(os.listdir(stream_dir))
        second = AOLoop({"bench": {"n_subap": 4}, "streams": {"frames": frames}})
        with pytest.raises(StreamBusyError, match=rf"stream '{frames}' \(streams.frames; .*"
                                                  rf"this process.*give this loop other names"):
            second.start()
        assert second.supervisor is None and not second.running
        assert not os.path.exists(second.folder)
        third = AOLoop({"bench": {"n_subap": 4}, "components": {"controller": {"name": rtc}}})
        with pytest.raises(StreamBusyError, match=rf"'{rtc}_timing' \(the timing stream of "
                                                  rf"component '{rtc}', components.controller"):
            third.start()
        assert sorted(os.listdir(stream_dir)) == before  # nothing made, nothing removed
        n = first.frame
        assert first.wait(20) >= n + 20 and first.streams["frames"].get_counter() > n
    assert os.listdir(stream_dir) == []


def _grid(x: np.ndarray, y: np.ndarray, shape) -> np.ndarray:
    """The bool map of the points ``(x, y)`` on a grid of ``shape`` (rows, columns)."""
    g = np.zeros(shape, bool)
    g[y, x] = True
    return g


def test_slopes_and_commands_carry_their_geometry(stream_dir):
    """slopes: (2, n_subapertures), dims axis (x, y) and subaperture with each subaperture's
    column and row on the lenslet grid, the x slopes first as the estimator writes them;
    dm_command: dim actuator with each actuator's column and row on the mirror's grid."""
    from dao.streams.labels import history

    with AOLoop({"bench": {"n_subap": 6}}, history=256) as ao:
        ao.wait(30)
        ao.stop()  # the histories stay: read them still
        cal = ao.calibration
        bench = SimulatedBench(**bench_arguments(ao.config))
        h = ao.streams["slopes"].history_xarray(8)
        assert h.dims == ("frame", "axis", "subaperture")
        assert h["axis"].values.tolist() == ["x", "y"]
        saved = Calibration.load(os.path.join(ao.folder, "calibration.npz"))
        # the windows' places on the lenslet grid, in the estimator's order
        corners = saved["corners"] // int(saved["subaperture_size"])
        assert np.array_equal(h["x"].values, corners[:, 1])
        assert np.array_equal(h["y"].values, corners[:, 0])
        assert h["x"].dtype.kind == "i" and h.attrs["grid_shape"] == [6, 6]
        assert np.array_equal(_grid(h["x"].values, h["y"].values, (6, 6)), bench.wfs.valid)
        # the slopes' layout: the flat vector of the estimator (x block, then y block)
        img = ao.streams["wfs_image"].history_xarray(ao.streams["wfs_image"].frames_available)
        frame = int(h.cnt2[-1])
        sel = np.flatnonzero(img.cnt2.values == frame)
        assert sel.size == 1
        est = slope_estimator(saved)
        expected = est.measure(np.ascontiguousarray(img.values[sel[0]]))
        np.testing.assert_allclose(h.values[-1].reshape(-1), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(h.sel(axis="x").values[-1], expected[: h.sizes["subaperture"]],
                                   rtol=1e-5, atol=1e-5)
        # the mirror: every actuator placed on its (7 x 7) Fried grid, in command order
        cmd = history(ao.streams["dm_command"], 4)
        assert cmd.dims == ("frame", "actuator") and cmd.sizes["actuator"] == cal["n_actuators"]
        ax, ay = cmd["x"].values, cmd["y"].values
        grid = _grid(ax, ay, (7, 7))
        assert np.array_equal(grid, bench.mirror.valid) and grid.sum() == cal["n_actuators"]
        assert np.array_equal(grid, grid[::-1]) and np.array_equal(grid, grid[:, ::-1])
        assert np.array_equal(grid, grid.T)
        assert grid.sum(axis=1).tolist() == [5, 7, 7, 7, 7, 7, 5]  # actuators per row
        pitch = cmd.attrs["pitch_m"]
        np.testing.assert_allclose(np.stack([(ay - 3) * pitch, (ax - 3) * pitch], axis=1),
                                   bench.mirror.positions)  # the bench's positions (y, x), m
        assert cmd.attrs["units"] == "m of OPD" and cmd.attrs["grid_shape"] == [7, 7]
        # labels unchanged for the others
        assert ao.streams["wfs_image"].to_xarray().dims == ("y", "x")
        assert ao.streams["frames"].history_xarray(2)["field"].values.tolist() == [
            "frame", "wfs_atime_ns", "late_frames"]
        assert ao.streams["psf"].to_xarray().attrs["coordinate_units"] == "lambda/D"


def test_pyramid_slopes_carry_the_pupil_pixels(stream_dir, tmp_path):
    """A pyramid's subapertures are its valid pupil pixels (column and row in the pupil
    image); the telemetry recording keeps the labels."""
    from dao.streams.telemetry import open_recording

    with AOLoop({"bench": {"n_subap": 4}, "sensor": {"type": "pyramid"}}, history=128) as ao:
        ao.wait(10)
        bench = SimulatedBench(**bench_arguments(ao.config))
        h = ao.streams["slopes"].history_xarray(4)
        assert h.dims == ("frame", "axis", "subaperture")
        vy, vx = np.nonzero(bench.wfs.valid)
        assert np.array_equal(h["x"].values, vx) and np.array_equal(h["y"].values, vy)
        assert h.attrs["sensor"] == "pyramid" and h.attrs["units"] == "1"
        path = ao.write_telemetry(tmp_path / "pyr.nc")
    rec = open_recording(path)
    try:
        # the positions come back as coordinates of the frames, not as variables beside them
        ds = rec["slopes"]
        assert {"x", "y"} <= set(ds["slopes"].coords) and "x" not in ds.data_vars
        assert ds["slopes"].dims == ("frame", "axis", "subaperture")
        assert ds["axis"].values.tolist() == ["x", "y"]
        assert np.array_equal(ds["x"].values, vx) and np.array_equal(ds["y"].values, vy)
        assert ds["x"].dims == ("subaperture",)
        cmd = rec["dm_command"]
        assert cmd["dm_command"].dims == ("frame", "actuator") and cmd["x"].dims == ("actuator",)
        assert {"x", "y"} <= set(cmd["dm_command"].coords)
    finally:
        for ds in rec.values():
            ds.close()

"""Labelled xarray views of streams and FIFO histories."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import dao


def test_default_dims(name):
    assert dao.shm(name + "a", np.zeros(5)).to_xarray().dims == ("element",)
    assert dao.shm(name + "b", np.zeros((2, 3))).to_xarray().dims == ("y", "x")
    assert dao.shm(name + "c", np.zeros((2, 3, 4))).to_xarray().dims == ("plane", "y", "x")


def test_view_is_live_and_copy_is_not(name):
    s = dao.shm(name, np.zeros((2, 2), np.float32))
    live, frozen = s.to_xarray(), s.to_xarray(copy=True)
    s.set_data(np.ones((2, 2), np.float32))
    assert float(live.sum()) == 4 and float(frozen.sum()) == 0
    assert live.attrs["stream"] == s.path


def test_labels_are_seen_by_another_process(name):
    n_act = 5
    s = dao.shm(name, np.zeros(n_act, np.float32))
    xs = np.linspace(-1, 1, n_act)
    s.set_labels(("actuator",), coords={"actuator": np.arange(n_act), "x": ("actuator", xs)},
                 attrs={"units": "um"}, name="dm_command")
    code = (f"import dao\nda = dao.shm({name!r}).to_xarray()\n"
            "print(da.name, da.dims, da.attrs['units'], da['x'].values.round(2).tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "dm_command ('actuator',) um [-1.0, -0.5, 0.0, 0.5, 1.0]", \
        out.stderr


def test_history_has_frame_counter_and_time(name):
    s = dao.shm(name, np.zeros((2, 3), np.float32), depth=8)
    s.set_labels(("axis", "subaperture"), coords={"axis": ["x", "y"]})
    t0 = np.datetime64(time.time_ns(), "ns")
    for k in range(10):
        s.set_data(np.full((2, 3), k, np.float32))
    h = s.history_xarray(5)
    assert h.dims == ("frame", "axis", "subaperture")
    assert h["cnt0"].values.tolist() == [6, 7, 8, 9, 10]
    assert h["time"].dtype == np.dtype("datetime64[ns]")
    assert bool((h["time"] >= t0).all()) and bool((h["time"].diff("frame") >= 0).all())
    assert h.sel(axis="y").values[:, 0].tolist() == [5, 6, 7, 8, 9]


def test_bad_labels(name):
    s = dao.shm(name, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="dims"):
        s.set_labels(("only_one",))
    with pytest.raises(ValueError, match="coordinate 'axis'"):
        s.set_labels(("axis", "sub"), coords={"axis": ["x", "y", "z"]})


def test_labels_removed_with_stream(name):
    import os

    s = dao.shm(name, np.zeros(2, np.float32))
    s.set_labels(("k",))
    side = s.path + ".xr.json"
    assert os.path.exists(side)
    s.delete()
    assert not os.path.exists(side)


def test_vector_stored_for_c_is_labelled_as_a_vector(name):
    """An ``(n, 1)`` stream (the shape the DAO C library opens) labelled with one dim is seen,
    recorded and replayed as an ``(n,)`` vector."""
    s = dao.shm(name, np.zeros((4, 1), np.float32), depth=8)
    s.set_labels(("actuator",), coords={"actuator": [10, 11, 12, 13]}, attrs={"units": "m"})
    for k in range(3):
        s.set_data(np.arange(4, dtype=np.float32).reshape(4, 1) + k, cnt2=100 + k)
    v = dao.shm(name).to_xarray()
    assert v.dims == ("actuator",) and v.sel(actuator=12).item() == 4.0
    h = s.history_xarray()
    assert h.dims == ("frame", "actuator") and h.shape == (3, 4)
    assert h["cnt2"].values.tolist() == [100, 101, 102]
    with pytest.raises(ValueError, match="one name per axis"):
        s.set_labels(("a", "b", "c"))
    w = dao.shm(name + "w", np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="one name per axis"):
        w.set_labels(("actuator",))  # the last axis is not of length 1


def test_labels_are_not_read_through_a_planted_link(name, tmp_path):
    """A labels file replaced by a symbolic link (to another user's file, say) is not read:
    the stream falls back to its default labels."""
    import os

    s = dao.shm(name, np.zeros((2, 3), np.float32))
    s.set_labels(("axis", "subaperture"))
    target = tmp_path / "elsewhere.json"
    target.write_text('{"dims": ["a", "b"], "coords": {}, "attrs": {}, "name": "x"}')
    path = s.path + ".xr.json"
    os.unlink(path)
    os.symlink(target, path)
    assert dao.shm(name).to_xarray().dims == ("y", "x")
    os.unlink(path)
    s.set_labels(("axis", "subaperture"), coords={"subaperture": list(range(3))})
    assert os.stat(path).st_mode & 0o777 == 0o600 and not os.path.islink(path)
    assert dao.shm(name).to_xarray().dims == ("axis", "subaperture")

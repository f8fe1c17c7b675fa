"""How frames are drawn: images, maps on a grid from the labels' x/y, curves."""

from __future__ import annotations

import numpy as np
import pytest

import dao
from dao.widgets.layout import frame_layout


def test_images_and_planes(name):
    s = dao.shm(name, np.zeros((3, 4, 5), np.uint16), depth=2)
    lay = frame_layout(s, plane=2)
    frame = np.arange(60, dtype=np.uint16).reshape(3, 4, 5)
    out = lay.apply(frame)
    assert lay.kind == "image" and out.shape == (4, 5) and out.dtype == np.uint16
    assert (out == frame[2]).all()
    with pytest.raises(ValueError, match="plane 3"):
        frame_layout(s, plane=3)


def test_int64_and_float64_frames_travel_as_float32(name):
    s = dao.shm(name, np.zeros((4, 4), np.float64), depth=2)
    assert frame_layout(s).apply(np.ones((4, 4))).dtype == np.float32


def test_dm_commands_are_placed_on_the_actuator_grid(name):
    # a 4x4 grid without its corners: 12 actuators, y grows upwards
    pos = [(x, y) for y in range(4) for x in range(4) if (x, y) not in
           {(0, 0), (3, 0), (0, 3), (3, 3)}]
    s = dao.shm(name, np.zeros((len(pos), 1), np.float32), depth=2)
    s.set_labels(("actuator",), coords={"x": ("actuator", [p[0] * 0.5 for p in pos]),
                                        "y": ("actuator", [p[1] * 0.5 for p in pos])})
    lay = frame_layout(s)
    assert lay.kind == "grid" and lay.shape == (4, 4)
    img = lay.apply(np.arange(12, dtype=np.float32).reshape(12, 1))
    assert np.isnan(img[0, 0]) and np.isnan(img[3, 3])  # the corners: no actuator
    # actuator 0 is at x=1, y=0: the bottom row of the map
    assert img[3, 1] == 0 and img[0, 1] == pos.index((1, 3))


def test_slopes_show_as_x_and_y_maps_side_by_side(name):
    s = dao.shm(name, np.zeros((2, 4), np.float32), depth=2)
    s.set_labels(("axis", "subaperture"), coords={
        "axis": ["x", "y"], "x": ("subaperture", [0, 1, 0, 1]),
        "y": ("subaperture", [0, 0, 1, 1])})
    lay = frame_layout(s)
    assert lay.kind == "grid" and lay.shape == (2, 5) and lay.series == ["x", "y"]
    img = lay.apply(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32))
    assert img[1, :2].tolist() == [1, 2] and img[0, :2].tolist() == [3, 4]
    assert np.isnan(img[:, 2]).all()  # the gap between the panels
    assert img[1, 3:].tolist() == [5, 6] and img[0, 3:].tolist() == [7, 8]


def test_vectors_are_curves(name):
    s = dao.shm(name, np.zeros((40, 1), np.float32), depth=2)
    s.set_labels(("mode",))
    lay = frame_layout(s)
    assert lay.kind == "vector" and lay.shape == (1, 40)
    s2 = dao.shm(name + "b", np.zeros((2, 40), np.float32), depth=2)
    s2.set_labels(("axis", "subaperture"), coords={"axis": ["x", "y"]})
    lay2 = frame_layout(s2)
    assert lay2.kind == "vector" and lay2.series == ["x", "y"]
    with pytest.raises(ValueError, match="1-D"):
        frame_layout(s, kind="image")
    with pytest.raises(ValueError, match="unknown kind"):
        frame_layout(s, kind="surface")

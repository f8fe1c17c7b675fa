"""The simulated deformable mirror."""

from __future__ import annotations

import numpy as np
import pytest

from dao import recon
from dao.hw import SimulatedDeformableMirror, fried_valid_actuators


def test_influence_function_coupling_and_units():
    dm = SimulatedDeformableMirror(10, 4.0, 80, coupling=0.3)
    assert dm.n_actuators == 121 and dm.pitch == pytest.approx(0.4)
    k = 5 * 11 + 5  # the central actuator, at the pupil's centre
    cmd = np.zeros(121, np.float32)
    cmd[k] = 1e-6
    dm.set_command(cmd)
    opd = dm.opd()
    # pixel centres at (i + 1/2) 5 cm - 2 m; the actuator at (0, 0)
    sig2 = 0.4**2 / (-2 * np.log(0.3))
    x = (np.arange(80) + 0.5) * 0.05 - 2.0
    expected = 1e-6 * np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sig2))
    np.testing.assert_allclose(opd, expected, rtol=1e-6)
    # the coupling: one pitch away the surface is 0.3 of the peak
    g = np.exp(-(0.4**2) / (2 * sig2))
    assert g == pytest.approx(0.3)
    infl = dm.influence_functions()
    np.testing.assert_allclose(infl[k] * 1e-6, opd, rtol=1e-6, atol=1e-18)


def test_opd_is_linear_and_separable_matches_dense():
    dm = SimulatedDeformableMirror(6, 2.0, 24, coupling=0.2)
    rng = np.random.default_rng(0)
    c = rng.normal(0, 1e-7, dm.n_actuators).astype(np.float32)
    dm.set_command(c)
    dense = np.tensordot(c.astype(np.float64), dm.influence_functions(), axes=1)
    np.testing.assert_allclose(dm.opd(), dense, rtol=1e-5, atol=1e-15)


def test_stroke_clipping():
    dm = SimulatedDeformableMirror(4, 1.0, 16, stroke=1e-6)
    assert dm.stroke == (-1e-6, 1e-6)
    dm.set_command(np.full(dm.n_actuators, 5e-6))
    assert np.all(dm.command == np.float32(1e-6))
    with pytest.raises(ValueError):
        dm.set_command(np.zeros(3))


def test_fried_valid_actuators_are_the_corners_of_valid_subapertures():
    valid = recon.circular_valid_mask(20)
    act = fried_valid_actuators(valid)
    assert act.shape == (21, 21)
    assert act.sum() == 357 and valid.sum() == 316
    dm = SimulatedDeformableMirror(20, 8.0, 160, valid=act)
    assert dm.n_actuators == 357
    assert np.all(np.hypot(*dm.positions.T) < 4.0 + 0.4 * np.sqrt(2))


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((0, 4.0, 80), {}, r"^n_subapertures = 0: must be an integer >= 1$"),
    ((2.5, 4.0, 80), {}, r"n_subapertures = 2.5: must be an integer >= 1"),
    ((10, -4.0, 80), {}, r"diameter = -4.0: must be a number > 0"),
    ((10, 4.0, 0), {}, r"n_pixels = 0: must be an integer >= 1"),
    ((10, 4.0, 80), {"coupling": 0.0}, r"coupling = 0.0: must be a number > 0 and < 1"),
    ((10, 4.0, 80), {"coupling": 1.0}, r"coupling = 1.0: must be a number > 0 and < 1"),
    ((10, 4.0, 80), {"stroke": 0.0}, r"stroke = 0.0: must be a number > 0"),
])
def test_nonsense_arguments_are_refused_with_their_name(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatedDeformableMirror(*args, **kwargs)

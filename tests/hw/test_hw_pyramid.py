"""The modulated pyramid forward model with the :class:`dao.recon.Pyramid` estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dao import recon
from dao.hw import Atmosphere, SimulatedDeformableMirror, SimulatedPyramid


@pytest.fixture(scope="module")
def pyramid():
    return SimulatedPyramid(10, 2.0, 700e-9, pupil_samples=20, modulation=3.0,
                            n_modulation=16, photon_noise=False)


def test_flat_wavefront_gives_four_equal_pupils(pyramid):
    img = pyramid.image(np.zeros(pyramid.pupil_shape))
    assert img.shape == (30, 30)
    assert img.sum() == pytest.approx(pyramid.flux, rel=1e-5)
    idx = pyramid.pupil_indices()
    flux = np.array([img.ravel()[i].sum() for i in idx])
    np.testing.assert_allclose(flux, flux.mean(), rtol=1e-4)
    assert flux.sum() > 0.75 * pyramid.flux  # most of the light lands in the pupil images
    # a flat wavefront's slopes are not zero pixel by pixel (diffraction at this sampling)
    # but antisymmetric: zero on average; a real bench calibrates them as the reference
    s = recon.Pyramid(idx).measure(img)
    n = idx.shape[1]
    assert abs(s[:n].mean()) < 1e-5 and abs(s[n:].mean()) < 1e-5


def reference_estimator(pyramid):
    est = recon.Pyramid(pyramid.pupil_indices())
    est.calibrate_reference(pyramid.image(np.zeros(pyramid.pupil_shape)))
    return est


@pytest.mark.parametrize("tilt", [0.25, 0.5, 1.0])
def test_tilt_response_follows_geometric_optics(pyramid, tilt):
    """Mean slope ``(2/pi) arcsin(t / r)`` for tilts inside the modulation radius ``r``,
    times an optical gain a little above 1.

    Diffraction makes the sensor more sensitive than geometric optics for small tilts (a
    continuous modulation circle: +10 %), and so does the discrete modulation: 16 points on
    the focal grid (1/3 lambda/D steps here), two of them on the pyramid's edges, measured
    +29 % at 0.25 lambda/D, +27 % at 0.5 and +25 % at 1 with r = 3 lambda/D (16 points on
    the exact circle: +21, +13, +8 %).
    """
    est = reference_estimator(pyramid)
    n = est.n_pixels
    s = est.measure(pyramid.image(pyramid.tilt_opd(tilt, -tilt)))
    expected = 2 / math.pi * math.asin(tilt / pyramid.modulation)
    assert 1.0 < s[:n].mean() / expected < 1.35
    assert 1.0 < -s[n:].mean() / expected < 1.35


def test_modulation_points_lie_on_the_focal_grid(pyramid):
    """Each point rounded to the nearest focal sample (1/3 lambda/D), the set symmetric
    about both axes."""
    pts = pyramid.modulation_points
    assert pts.shape == (16, 2)
    np.testing.assert_allclose(pts * pyramid.padding, np.round(pts * pyramid.padding),
                               atol=1e-12)
    angle = 2 * np.pi * np.arange(16) / 16
    exact = pyramid.modulation * np.stack([np.sin(angle), np.cos(angle)], axis=1)
    assert np.all(np.abs(pts - exact) <= 0.5 / pyramid.padding)
    np.testing.assert_allclose(pts.mean(axis=0), 0.0, atol=1e-12)
    for flip in ([1, -1], [-1, 1], [-1, -1]):
        assert {tuple(p) for p in pts * flip} == {tuple(p) for p in pts}


def test_valid_pixels_match_the_pupil_indices(pyramid):
    assert pyramid.valid.shape == (10, 10) and pyramid.valid.dtype == bool
    assert pyramid.n_valid == pyramid.pupil_indices().shape[1] == pyramid.valid.sum()
    assert pyramid.valid[5, 5] and not pyramid.valid[0, 0]
    np.testing.assert_array_equal(pyramid.valid, pyramid.valid.T)
    # fewer pixels with a stricter fill rule
    assert pyramid.pupil_indices(min_fill=0.99).shape[1] < pyramid.n_valid


def test_saturates_beyond_the_modulation(pyramid):
    est = reference_estimator(pyramid)
    n = est.n_pixels
    big = est.measure(pyramid.image(pyramid.tilt_opd(6.0)))[:n].mean()
    assert big > 0.8


def test_pyramid_closes_a_small_loop(pyramid):
    """10x10 pixels per pupil, 11x11 mirror on a 2 m pupil, r0 = 15 cm: the loop converges."""
    est = reference_estimator(pyramid)
    dm = SimulatedDeformableMirror(10, 2.0, 20, coupling=0.3)
    pupil = pyramid.pupil > 0.5

    def measure(cmd):
        dm.set_command(cmd)
        return est.measure(pyramid.image(dm.opd())).copy()

    im = recon.measure_interaction_matrix(measure, dm.n_actuators, 10e-9, pattern="identity",
                                          progress=False)
    cm = recon.control_matrix_svd(im, rcond=0.05)
    atm = Atmosphere(20, 0.1, r0=0.15, L0=25.0, wind_speed=10.0, seed=3)
    loop = recon.Integrator(dm.n_actuators, gain=0.4)
    k = 2 * np.pi / 1.65e-6
    rms = []
    for _ in range(120):
        dm.set_command(loop.command)
        atm.advance()
        res = atm.opd() + dm.opd()
        rms.append(np.std(k * res[pupil]))
        loop.step(cm.matrix @ est.measure(pyramid.image(res)))
    open_rms = np.std(k * atm.opd()[pupil])
    assert np.mean(rms[-40:]) < 0.5 * open_rms


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_pixels": 0}, r"^n_pixels = 0: must be an integer >= 1$"),
    ({"n_pixels": 10.5}, r"n_pixels = 10.5: must be an integer >= 1"),
    ({"diameter": 0.0}, r"diameter = 0.0: must be a number > 0"),
    ({"wavelength": -7e-07}, r"wavelength = -7e-07: must be a number > 0"),
    ({"pupil_samples": 0}, r"pupil_samples = 0: must be an integer >= 1"),
    ({"pupil_samples": 25}, r"pupil_samples = 25: must be a multiple of n_pixels \(10\)"),
    ({"padding": 1}, r"padding = 1: must be an integer >= 2"),
    ({"modulation": -3.0}, r"modulation = -3.0: must be a number >= 0"),
    ({"n_modulation": 0}, r"n_modulation = 0: must be an integer >= 1"),
    ({"flux": -1.0}, r"flux = -1.0: must be a number >= 0"),
    ({"frame_rate": 0}, r"frame_rate = 0: must be a number > 0"),
])
def test_nonsense_arguments_are_refused_with_their_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatedPyramid(**{"n_pixels": 10, "diameter": 2.0, **kwargs})

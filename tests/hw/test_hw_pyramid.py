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


@pytest.mark.parametrize(("tilt", "rel"), [(0.25, 0.25), (0.5, 0.15), (1.0, 0.15)])
def test_tilt_response_follows_geometric_optics(pyramid, tilt, rel):
    """Mean slope ``(2/pi) arcsin(t / r)`` for tilts inside the modulation radius ``r``.

    Diffraction makes the sensor a little more sensitive than geometric optics for small
    tilts (measured +21 % at 0.25 lambda/D, +6 % at 1 lambda/D with r = 3 lambda/D).
    """
    est = reference_estimator(pyramid)
    n = est.n_pixels
    s = est.measure(pyramid.image(pyramid.tilt_opd(tilt, -tilt)))
    expected = 2 / math.pi * math.asin(tilt / pyramid.modulation)
    assert s[:n].mean() == pytest.approx(expected, rel=rel)
    assert s[n:].mean() == pytest.approx(-expected, rel=rel)


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

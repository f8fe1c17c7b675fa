"""The Shack-Hartmann forward model against geometric optics.

Pixel scale ``lambda / (sampling d)``: a tilt of ``a`` waves across a subaperture moves the
spot by ``a lambda / d`` radians, i.e. ``sampling * a`` pixels (2a at Nyquist sampling).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dao import recon
from dao.hw import SimulatedShackHartmann, circular_pupil


@pytest.fixture(scope="module")
def wfs():
    return SimulatedShackHartmann(10, 4.0, 700e-9, photon_noise=False)


def full_subapertures(wfs) -> np.ndarray:
    """Mask (over the valid ones) of the fully illuminated subapertures."""
    p = wfs.pupil_pixels_per_subaperture
    n = wfs.n_subapertures
    fill = wfs.pupil.reshape(n, p, n, p).mean(axis=(1, 3))
    return fill[wfs.valid] > 0.999


def test_geometry(wfs):
    assert wfs.shape == (80, 80)
    assert wfs.pupil_shape == (80, 80)
    assert wfs.pixel_scale == pytest.approx(700e-9 / (2 * 0.4))
    assert wfs.n_valid == int(recon.circular_valid_mask(10).sum())
    np.testing.assert_array_equal(wfs.corners, recon.subaperture_corners(wfs.valid, 8))


def test_flat_wavefront_gives_centred_spots_and_the_flux(wfs):
    img = wfs.image(np.zeros(wfs.pupil_shape)).astype(np.float32)
    sh = recon.ShackHartmann(wfs.corners, 8)
    s = sh.measure(img)
    assert np.abs(s).max() < 1e-4
    full = full_subapertures(wfs)
    # the 8x8 window (4 lambda/d) of a Nyquist-sampled square-lenslet spot holds ~96 % of it
    frac = sh.flux[full] / wfs.flux
    assert np.all((frac > 0.9) & (frac <= 1.0))
    assert np.ptp(frac) < 1e-6


@pytest.mark.parametrize("waves", [0.02, 0.05, 0.1])
def test_small_tilt_moves_the_spots_by_sampling_times_waves(wfs, waves):
    """Linear regime: CoG slope = 2 a pixels (within 5 %; CoG of a truncated sinc^2 spot)."""
    sh = recon.ShackHartmann(wfs.corners, 8)
    full = full_subapertures(wfs)
    n = wfs.n_valid
    s = sh.measure(wfs.image(wfs.tilt_opd(waves, -0.5 * waves)).astype(np.float32))
    sx, sy = s[:n][full], s[n:][full]
    np.testing.assert_allclose(sx, 2 * waves, rtol=0.05)
    np.testing.assert_allclose(sy, -waves, rtol=0.05)


def test_half_wave_tilt_translates_the_spot_by_exactly_one_pixel(wfs):
    """Fourier shift theorem: a = 1/2 wave is a one-pixel translation of the spot image."""
    flat = wfs.expected_image(np.zeros(wfs.pupil_shape)).copy()
    tilted = wfs.expected_image(wfs.tilt_opd(0.5)).copy()
    full = full_subapertures(wfs)
    for (y0, x0) in wfs.corners[full]:
        a = flat[y0:y0 + 8, x0:x0 + 8]
        b = tilted[y0:y0 + 8, x0:x0 + 8]
        np.testing.assert_allclose(b[:, 1:], a[:, :-1], rtol=1e-9, atol=1e-9 * a.max())


def test_photon_and_read_noise_statistics():
    wfs = SimulatedShackHartmann(4, 1.0, 700e-9, flux=500.0, background=2.0, read_noise=1.5,
                                 seed=1, min_fill=0.0)
    opd = np.zeros(wfs.pupil_shape)
    mean = wfs.expected_image(opd).copy()
    frames = np.array([wfs.image(opd).copy() for _ in range(400)])
    np.testing.assert_allclose(frames.mean(0), mean, atol=5 * np.sqrt((mean + 2.25) / 400).max())
    var = frames.var(0)
    expected = mean + 1.5**2
    assert np.mean(var) / np.mean(expected) == pytest.approx(1.0, rel=0.05)
    assert wfs.frame_number == 400
    again = SimulatedShackHartmann(4, 1.0, 700e-9, flux=500.0, background=2.0, read_noise=1.5,
                                   seed=1, min_fill=0.0)
    np.testing.assert_array_equal(again.image(opd), frames[0])


def test_grab_uses_the_opd_source():
    calls = []

    def source():
        calls.append(1)
        return np.zeros((32, 32))

    wfs = SimulatedShackHartmann(4, 1.0, opd_source=source, photon_noise=False)
    out = np.empty(wfs.shape, np.float32)
    assert wfs.grab(out=out) is out
    assert len(calls) == 1 and wfs.frame_number == 1


def test_circular_pupil_area():
    p = circular_pupil(200)
    assert p.sum() / 200**2 == pytest.approx(np.pi / 4, rel=1e-3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_subapertures": 0}, r"^n_subapertures = 0: must be an integer >= 1$"),
    ({"n_subapertures": 2.5}, r"n_subapertures = 2.5: must be an integer >= 1"),
    ({"diameter": -1.0}, r"diameter = -1.0: must be a number > 0"),
    ({"wavelength": 0}, r"wavelength = 0: must be a number > 0"),
    ({"pupil_pixels_per_subaperture": 0}, r"pupil_pixels_per_subaperture = 0: must be an int"),
    ({"pixels_per_subaperture": 17}, r"pixels_per_subaperture = 17: must be at most .* 16"),
    ({"sampling": 0}, r"sampling = 0: must be an integer >= 1"),
    ({"flux": -1.0}, r"flux = -1.0: must be a number >= 0"),
    ({"background": -1.0}, r"background = -1.0: must be a number >= 0"),
    ({"read_noise": math.nan}, r"read_noise = nan: must be a number >= 0"),
    ({"obscuration": 1.0}, r"obscuration = 1.0: must be a number >= 0 and < 1"),
    ({"min_fill": 1.5}, r"min_fill = 1.5: must be a number >= 0 and <= 1"),
    ({"frame_rate": 0}, r"frame_rate = 0: must be a number > 0"),
])
def test_nonsense_arguments_are_refused_with_their_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatedShackHartmann(**{"n_subapertures": 4, "diameter": 1.0, **kwargs})

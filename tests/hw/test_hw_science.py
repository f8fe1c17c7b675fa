"""The simulated science camera."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dao.hw import SimulatedScienceCamera, circular_pupil, residual_phase_variance


@pytest.fixture
def camera():
    return SimulatedScienceCamera(circular_pupil(64), wavelength=1.65e-6)


def test_flat_wavefront_is_diffraction_limited(camera):
    q = camera.instant_quality(np.zeros((64, 64)))
    assert q.strehl == pytest.approx(1.0)
    assert q.strehl_marechal == 1.0 and q.residual_rms == 0.0
    psf = camera.psf(np.full((64, 64), 3e-7))  # piston changes nothing
    assert psf.max() == pytest.approx(1.0)
    assert np.unravel_index(psf.argmax(), psf.shape) == (64, 64)


def test_small_aberration_strehl_follows_marechal(camera):
    rng = np.random.default_rng(0)
    # smooth random aberration of 0.2 rad rms at 1.65 um
    c = np.fft.ifft2(np.fft.fft2(rng.standard_normal((64, 64)))
                     * np.exp(-np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64))) ** 2
                              / (2 * 0.05**2))).real
    pupil = circular_pupil(64)
    c *= 0.2 / math.sqrt(residual_phase_variance(c, pupil, 2 * math.pi))
    opd = c * 1.65e-6 / (2 * math.pi)
    q = camera.instant_quality(opd)
    assert q.residual_rms == pytest.approx(0.2)
    assert q.residual_opd_rms == pytest.approx(0.2 * 1.65e-6 / (2 * math.pi))
    assert q.strehl == pytest.approx(math.exp(-0.04), abs=0.01)


def test_long_exposure_of_a_moving_image_loses_peak(camera):
    x = (np.arange(64) + 0.5) / 64 - 0.5
    for k in range(8):  # tilt jitter of +-2 lambda/D
        tilt = (k - 3.5) / 3.5 * 2 * 1.65e-6 * x[None, :]
        camera.expose(np.broadcast_to(tilt, (64, 64)))
    q = camera.quality()
    assert q.n_frames == 8 and camera.frame_number == 8
    assert q.strehl < 0.5
    camera.reset()
    assert camera.strehl() == 0.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"wavelength": 0}, r"^wavelength = 0: must be a number > 0 \(m\)$"),
    ({"wavelength": "H"}, r"wavelength = 'H': must be a number > 0"),
    ({"padding": 0}, r"padding = 0: must be an integer >= 1"),
    ({"padding": 1.5}, r"padding = 1.5: must be an integer >= 1"),
    ({"frame_rate": -1.0}, r"frame_rate = -1.0: must be a number > 0"),
    ({"pupil": np.zeros((8, 8))}, r"pupil \(shape \(8, 8\)\): must be a square 2-D map"),
    ({"pupil": np.ones((8, 4))}, r"pupil \(shape \(8, 4\)\): must be a square 2-D map"),
])
def test_nonsense_arguments_are_refused_with_their_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatedScienceCamera(**{"pupil": circular_pupil(16), **kwargs})

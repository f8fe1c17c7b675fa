"""Simulated Shack-Hartmann sensor: the optical forward model (the estimator is
:class:`dao.recon.ShackHartmann`).

Geometry. ``n x n`` lenslets of size ``d = D / n`` on the pupil; each one sees ``p x p``
pupil samples of the OPD map (``p = pupil_pixels_per_subaperture``). Its spot is the squared
modulus of the FFT of the lenslet's complex field zero-padded to ``M = sampling * p`` samples,
so a detector pixel subtends ``lambda / (sampling d)`` radians on the sky (``sampling = 2``:
Nyquist). The central ``h x h`` pixels of the spot (``h = pixels_per_subaperture``) make the
subaperture's window on the detector; windows tile the detector, ``n h`` pixels across, in
the layout of :func:`dao.recon.subaperture_corners` (origin ``(0, 0)``). A half-pixel phase
ramp puts a flat wavefront's spot at the window's centre ``((h - 1)/2, (h - 1)/2)``, the zero
of the centroider.

Slopes. A tilt of ``a`` waves of OPD across a subaperture (``a lambda`` metres) moves the spot
by ``a lambda / d`` radians, that is ``sampling * a`` pixels, towards ``+x`` (columns) for an
OPD increasing with ``x``.

Noise. The image is in photo-electrons: a full subaperture collects ``flux`` photons per
frame (a partially illuminated one proportionally fewer), plus ``background`` photons per
pixel; photon (Poisson) noise, then Gaussian read noise of ``read_noise`` electrons rms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numba import njit

from dao.recon import circular_valid_mask, subaperture_corners

from ._checks import _check_detector, checked_int, checked_number
from ._detector import SimulatedWavefrontDetector
from .interfaces import WavefrontSensor

__all__ = ["circular_pupil", "SimulatedShackHartmann"]


def circular_pupil(n: int, obscuration: float = 0.0, oversample: int = 4) -> np.ndarray:
    """Transmission of a circular (annular) pupil on an ``n x n`` grid, 0..1 (area-weighted).

    Parameters
    ----------
    n : int
        Grid size, pixels across the diameter.
    obscuration : float
        Central obscuration, fraction of the diameter.
    oversample : int
        Sub-samples per pixel side used for the partially covered edge pixels.
    """
    m = n * oversample
    c = (np.arange(m) + 0.5) / m * 2.0 - 1.0
    r = np.hypot(c[:, None], c[None, :])
    inside = (r <= 1.0) & (r >= obscuration)
    return inside.reshape(n, oversample, n, oversample).mean(axis=(1, 3))


@njit(cache=True, nogil=True)
def _lenslet_fields(opd, amplitude, sub_y, sub_x, p, k, ramp, fields):  # pragma: no cover
    """fields[s, :p, :p] = A exp(i (k opd + ramp)) on lenslet s (the rest stays zero)."""
    for s in range(sub_y.size):
        y0 = sub_y[s] * p
        x0 = sub_x[s] * p
        for i in range(p):
            for j in range(p):
                a = amplitude[y0 + i, x0 + j]
                if a > 0.0:
                    ph = k * opd[y0 + i, x0 + j] + ramp[i] + ramp[j]
                    fields[s, i, j] = a * complex(math.cos(ph), math.sin(ph))
                else:
                    fields[s, i, j] = 0.0


@njit(cache=True, nogil=True)
def _spots_to_detector(spectra, sub_y, sub_x, h, scale, background, image):  # pragma: no cover
    """Expected photons: the central h x h of each |spectrum|^2 into the detector windows."""
    m = spectra.shape[1]
    for s in range(sub_y.size):
        y0 = sub_y[s] * h
        x0 = sub_x[s] * h
        for u in range(h):
            fu = (u - h // 2) % m
            for v in range(h):
                fv = (v - h // 2) % m
                z = spectra[s, fu, fv]
                image[y0 + u, x0 + v] = scale * (z.real * z.real + z.imag * z.imag) + background


class SimulatedShackHartmann(SimulatedWavefrontDetector, WavefrontSensor):
    """Shack-Hartmann forward model: OPD map in, detector image out.

    Parameters
    ----------
    n_subapertures : int
        Lenslets across the pupil.
    diameter : float
        Pupil diameter, metres.
    wavelength : float
        Sensing wavelength, metres.
    pupil_pixels_per_subaperture : int
        OPD samples across a lenslet (``p``).
    pixels_per_subaperture : int
        Detector pixels across a lenslet's window (``h``).
    sampling : int
        Detector pixels per ``lambda / d`` (2: Nyquist).
    flux : float
        Photons per full subaperture per frame.
    background : float
        Background photons per pixel per frame.
    read_noise : float
        Read noise, electrons rms per pixel (0: none).
    photon_noise : bool
        Draw Poisson photon noise.
    obscuration : float
        Central obscuration, fraction of the diameter.
    min_fill : float
        Smallest illuminated fraction for a subaperture to be valid.
    frame_rate : float
        Frames per second, Hz.
    opd_source : callable, optional
        ``opd_source() -> opd`` (metres, shape ``(n p, n p)``): called by :meth:`grab` to get
        the wavefront of the next frame (the bench sets it).
    seed : int or numpy.random.Generator, optional
        Random source of the noise.

    Raises
    ------
    ValueError
        An argument out of range (named in the message): a size not an integer >= 1,
        ``diameter``, ``wavelength`` or ``frame_rate`` not > 0, ``flux``, ``background`` or
        ``read_noise`` < 0, ``obscuration`` not in ``[0, 1)``, ``min_fill`` not in ``[0, 1]``,
        ``pixels_per_subaperture`` over ``sampling * pupil_pixels_per_subaperture``.

    Attributes
    ----------
    valid : ndarray, bool, shape (n, n)
        Valid subapertures.
    corners : ndarray, int64, shape (n_valid, 2)
        Windows' top-left pixels, for :class:`dao.recon.ShackHartmann`.
    pupil : ndarray, float64, shape (n p, n p)
        Pupil transmission on the OPD grid.
    pixel_scale : float
        Angle subtended by one detector pixel, radians.
    """

    def __init__(self, n_subapertures: int, diameter: float, wavelength: float = 700e-9,
                 pupil_pixels_per_subaperture: int = 8, pixels_per_subaperture: int = 8,
                 sampling: int = 2, flux: float = 1000.0, background: float = 0.0,
                 read_noise: float = 0.0, photon_noise: bool = True, obscuration: float = 0.0,
                 min_fill: float = 0.5, frame_rate: float = 1000.0,
                 opd_source: Callable[[], np.ndarray] | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        n = self.n_subapertures = checked_int("n_subapertures", n_subapertures)
        self.diameter = checked_number("diameter", diameter, gt=0, unit="m")
        self._wavelength = checked_number("wavelength", wavelength, gt=0, unit="m")
        p = self.pupil_pixels_per_subaperture = checked_int("pupil_pixels_per_subaperture",
                                                            pupil_pixels_per_subaperture)
        h = self.pixels_per_subaperture = checked_int("pixels_per_subaperture",
                                                      pixels_per_subaperture)
        self.sampling = checked_int("sampling", sampling)
        m = self.fft_size = self.sampling * p
        if h > m:
            raise ValueError(f"pixels_per_subaperture = {h}: must be at most the FFT size, "
                             f"sampling * pupil_pixels_per_subaperture = {m}")
        _check_detector(flux, background, read_noise, obscuration, min_fill, frame_rate)
        self.subaperture_size = self.diameter / n
        self.pixel_scale = self._wavelength / (self.sampling * self.subaperture_size)
        self._init_detector(flux, background, read_noise, photon_noise, frame_rate, opd_source,
                            seed)
        self.valid = circular_valid_mask(n, obscuration, min_fill)
        self.corners = subaperture_corners(self.valid, h)
        iy, ix = np.nonzero(self.valid)
        self._sub_y, self._sub_x = iy.astype(np.int64), ix.astype(np.int64)
        self.pupil = circular_pupil(n * p, obscuration)
        self._amplitude = np.sqrt(self.pupil)
        # half-pixel ramp: spot centre at frequency -1/2 pixel, i.e. the window's centre
        self._ramp = -math.pi * np.arange(p) / m
        self._fields = np.zeros((iy.size, m, m), dtype=np.complex128)
        self._expected = np.zeros((n * h, n * h))
        self._image = np.zeros((n * h, n * h), dtype=np.float32)
        self._scale = self.flux / (m * m * p * p)
        self._frame_number = 0

    @property
    def n_valid(self) -> int:
        """Number of valid subapertures."""
        return int(self._sub_y.size)

    # -- forward model --------------------------------------------------------------------
    def expected_image(self, opd: np.ndarray) -> np.ndarray:
        """Noise-free image (mean photo-electrons per pixel) of an OPD map (metres).

        Returns the sensor's own float64 buffer, shape :attr:`shape`.
        """
        opd = np.ascontiguousarray(opd, dtype=np.float64)
        if opd.shape != self.pupil.shape:
            raise ValueError(f"OPD map must have shape {self.pupil.shape}, got {opd.shape}")
        k = 2.0 * math.pi / self._wavelength
        _lenslet_fields(opd, self._amplitude, self._sub_y, self._sub_x,
                        self.pupil_pixels_per_subaperture, k, self._ramp, self._fields)
        spectra = np.fft.fft2(self._fields, axes=(1, 2))
        _spots_to_detector(spectra, self._sub_y, self._sub_x, self.pixels_per_subaperture,
                           self._scale, self.background, self._expected)
        return self._expected

    def tilt_opd(self, waves_x: float, waves_y: float = 0.0) -> np.ndarray:
        """OPD map of a pure tilt of ``waves_x`` (``waves_y``) waves across each subaperture.

        Returns metres, shape :attr:`pupil_shape`; the spots move by ``sampling * waves``
        pixels.
        """
        npx = self.pupil.shape[0]
        x = (np.arange(npx) + 0.5) / self.pupil_pixels_per_subaperture  # in subapertures
        return self._wavelength * (waves_x * x[None, :] + waves_y * x[:, None])

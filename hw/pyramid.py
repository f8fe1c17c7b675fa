"""Simulated pyramid wavefront sensor with circular modulation (the estimator is
:class:`dao.recon.Pyramid`).

Forward model (Fourier optics, one wavelength). The pupil field ``A exp(i 2 pi OPD / lambda)``
(``n`` samples across ``D``) is zero-padded to ``M = padding n`` samples; for each of
``n_modulation`` points on a circle of radius ``modulation`` (``lambda / D`` units) a tilt
moves the focal spot there, the focal field (``padding`` samples per ``lambda / D``) is
multiplied by the pyramid's phase ``-2 pi s (|u| + |v|) / M`` (``u, v`` focal samples from the
apex), which sends the four quadrants of the focal plane to four pupil images ``s`` samples
off the axis in each direction, and the intensity of the inverse FFT is summed over the
modulation points. The output plane is binned ``n / n_pixels`` times onto the detector:
each pupil image is ``n_pixels`` detector pixels across.

This is slower than the Shack-Hartmann model (``2 n_modulation`` FFTs of ``M x M`` per frame:
about 5 ms for ``n = 40``, ``padding = 3``, 12 modulation points); it is meant for
calibration and slower loops.

Quadrants: :meth:`SimulatedPyramid.pupil_indices` lists the pupil images in the order of
:mod:`dao.recon.pyramid`: ``I1`` at (+x, +y), ``I2`` (+x, -y), ``I3`` (-x, +y), ``I4``
(-x, -y), ``x`` along columns and ``y`` along rows of the detector. A tilt moving the focal
spot towards ``+x`` brightens ``I1`` and ``I2``: positive ``sx``. In geometric optics the
modulated pyramid's slope for a tilt ``t`` (in ``lambda / D``) smaller than the modulation
radius ``r`` is ``(2 / pi) arcsin(t / r)``; the sensor saturates beyond ``r``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ._detector import SimulatedDetector
from .interfaces import WavefrontSensor
from .shack_hartmann import circular_pupil

__all__ = ["SimulatedPyramid"]


class SimulatedPyramid(SimulatedDetector, WavefrontSensor):
    """Modulated pyramid sensor forward model: OPD map in, detector image out.

    Parameters
    ----------
    n_pixels : int
        Detector pixels across each pupil image.
    diameter : float
        Pupil diameter, metres.
    wavelength : float
        Sensing wavelength, metres.
    pupil_samples : int
        OPD samples across the pupil (``n``, a multiple of ``n_pixels``).
    padding : int
        FFT size over ``n`` (focal samples per ``lambda / D``); at least 2, 3 leaves room
        between the pupil images.
    modulation : float
        Modulation radius, ``lambda / D``.
    n_modulation : int
        Points on the modulation circle (about ``2 pi modulation`` or more).
    flux : float
        Photons per frame over the whole pupil.
    read_noise : float
        Electrons rms per pixel.
    photon_noise : bool
        Draw Poisson noise.
    obscuration : float
        Central obscuration, fraction of the diameter.
    frame_rate : float
        Hz.
    opd_source : callable, optional
        ``opd_source() -> opd`` (metres, ``(n, n)``) for :meth:`grab`.
    seed : int or numpy.random.Generator, optional
        Random source of the noise.
    """

    def __init__(self, n_pixels: int, diameter: float, wavelength: float = 700e-9,
                 pupil_samples: int | None = None, padding: int = 3,
                 modulation: float = 3.0, n_modulation: int = 16, flux: float = 1e5,
                 read_noise: float = 0.0, photon_noise: bool = True, obscuration: float = 0.0,
                 frame_rate: float = 1000.0,
                 opd_source: Callable[[], np.ndarray] | None = None,
                 seed: int | np.random.Generator | None = None) -> None:
        self.n_pixels = int(n_pixels)
        n = self.pupil_samples = int(pupil_samples or 2 * self.n_pixels)
        if n % self.n_pixels:
            raise ValueError("pupil_samples must be a multiple of n_pixels")
        self.binning = n // self.n_pixels
        self.diameter = float(diameter)
        self._wavelength = float(wavelength)
        self.padding = int(padding)
        if self.padding < 2:
            raise ValueError("padding must be at least 2")
        m = self.fft_size = self.padding * n
        if (m - n) % 2 or m % self.binning:
            raise ValueError("padding * pupil_samples - pupil_samples must be even and "
                             "a multiple of the binning")
        self.modulation = float(modulation)
        self.n_modulation = int(n_modulation) if modulation > 0 else 1
        self.flux = float(flux)
        self.read_noise = float(read_noise)
        self.photon_noise = bool(photon_noise)
        self._frame_rate = float(frame_rate)
        self.opd_source = opd_source
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.pupil = circular_pupil(n, obscuration)
        self._amp = np.sqrt(self.pupil)
        self._offset = (m - n) // 2
        # pupil images: s samples off axis, about centred in the four quadrants of the plane,
        # on whole detector pixels
        self.separation = self.binning * int(round(m / (4 * self.binning)))
        if self._offset % self.binning or not n / 2 <= self.separation <= (m - n) / 2:
            raise ValueError("the four pupil images must fit apart on whole detector pixels: "
                             "use padding >= 2 and (padding - 1) n / 2 a multiple of the "
                             "binning")
        u = np.fft.fftfreq(m, 1.0 / m)  # focal samples from the apex, FFT order
        # the apex sits between samples (half-sample shift) so the four faces are symmetric
        uh = u + 0.5
        self._mask = np.exp(-2j * np.pi * self.separation
                            * (np.abs(uh)[:, None] + np.abs(uh)[None, :]) / m)
        xs = (np.arange(n) - (n - 1) / 2) / n  # pupil coordinate, in D
        # half-sample shift of the focal spot onto the apex, plus the modulation tilts
        self._tilts = []
        for k in range(self.n_modulation):
            th = 2 * np.pi * k / self.n_modulation
            ty = self.modulation * math.sin(th) - 0.5 / self.padding
            tx = self.modulation * math.cos(th) - 0.5 / self.padding
            ramp = np.exp(2j * np.pi * (ty * xs[:, None] + tx * xs[None, :]))
            self._tilts.append(ramp)
        self._field = np.zeros((m, m), dtype=np.complex128)
        self._plane = np.zeros((m, m))
        shape = (m // self.binning, m // self.binning)
        self._image = np.zeros(shape, dtype=np.float32)
        self._frame_number = 0
        self._norm = 1.0
        flat = self.expected_image(np.zeros((n, n)))
        self._norm = self.flux / flat.sum()

    # -- Camera interface -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """Detector shape, pixels."""
        return self._image.shape

    @property
    def dtype(self) -> np.dtype:
        """float32 (photo-electrons)."""
        return np.dtype(np.float32)

    @property
    def pupil_shape(self) -> tuple[int, int]:
        """Shape of the OPD map the sensor takes."""
        return self.pupil.shape

    def grab(self, out: np.ndarray | None = None) -> np.ndarray:
        """Image of the next wavefront from :attr:`opd_source`."""
        if self.opd_source is None:
            raise RuntimeError("no opd_source: give one, or call image(opd)")
        return self.image(self.opd_source(), out=out)

    # -- forward model --------------------------------------------------------------------
    def expected_image(self, opd: np.ndarray) -> np.ndarray:
        """Noise-free detector image (photo-electrons) of an OPD map (metres), float64."""
        n, o = self.pupil_samples, self._offset
        e = self._amp * np.exp(2j * np.pi / self._wavelength * np.asarray(opd))
        self._plane[:] = 0.0
        for ramp in self._tilts:
            self._field[:] = 0.0
            self._field[o:o + n, o:o + n] = e * ramp
            out = np.fft.ifft2(np.fft.fft2(self._field) * self._mask)
            self._plane += out.real**2 + out.imag**2
        b = self.binning
        m = self.fft_size
        binned = self._plane.reshape(m // b, b, m // b, b).sum(axis=(1, 3))
        return binned * self._norm

    def image(self, opd: np.ndarray, out: np.ndarray | None = None,
              noise: bool = True) -> np.ndarray:
        """Detector image (float32 photo-electrons) of an OPD map (metres); counts a frame."""
        o = self._image if out is None else out
        e = self.expected_image(opd)
        if noise and self.photon_noise:
            o[:] = self.rng.poisson(e)
        else:
            o[:] = e
        if noise and self.read_noise > 0:
            o += self.rng.standard_normal(o.shape, dtype=np.float32) * np.float32(self.read_noise)
        self._frame_number += 1
        return o

    def pupil_indices(self, min_fill: float = 0.5) -> np.ndarray:
        """Flat detector indices of the valid pixels of the four pupil images.

        A pixel is valid where the binned pupil is at least ``min_fill`` illuminated. Rows
        are ``I1..I4`` in the :mod:`dao.recon.pyramid` convention, the same pupil point in
        each column, ready for :class:`dao.recon.Pyramid`.
        """
        b = self.binning
        p = self.n_pixels
        fill = self.pupil.reshape(p, b, p, b).mean(axis=(1, 3))
        iy, ix = np.nonzero(fill >= min_fill)
        w = self.shape[1]
        centre = self.fft_size // 2 // b  # detector pixel of the apex axis
        shift = self.separation // b
        base = centre - p // 2
        out = np.empty((4, iy.size), dtype=np.int64)
        # I1 (+x, +y), I2 (+x, -y), I3 (-x, +y), I4 (-x, -y)
        for q, (sy, sx) in enumerate([(1, 1), (-1, 1), (1, -1), (-1, -1)]):
            y = base + sy * shift + iy
            x = base + sx * shift + ix
            out[q] = y * w + x
        return out

    def tilt_opd(self, lambda_over_d_x: float, lambda_over_d_y: float = 0.0) -> np.ndarray:
        """OPD (metres) of a tilt moving the focal spot by the given ``lambda / D``."""
        n = self.pupil_samples
        xs = (np.arange(n) - (n - 1) / 2) / n
        return self._wavelength * (lambda_over_d_x * xs[None, :] + lambda_over_d_y * xs[:, None])

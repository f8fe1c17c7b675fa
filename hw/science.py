"""Simulated science camera: PSF at a wavelength, Strehl ratio and residual phase.

The PSF is ``|FFT(P exp(i phi))|^2`` with the pupil ``P`` zero-padded ``padding`` times
(``padding = 2``: Nyquist, one pixel is ``lambda / (2 D)``), ``phi = 2 pi OPD / lambda``.

Image quality reported:

* peak Strehl: the PSF's maximum over the diffraction-limited PSF's maximum (of a long
  exposure: the PSFs summed since :meth:`SimulatedScienceCamera.reset`);
* Marechal estimate ``exp(-sigma^2)``, ``sigma^2`` the piston-removed phase variance over the
  pupil, rad^2;
* residual phase rms ``sigma`` (rad) and OPD rms (metres).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._checks import checked_int, checked_number
from ._detector import SimulatedDetector
from .interfaces import ScienceCamera

__all__ = ["ImageQuality", "residual_phase_variance", "SimulatedScienceCamera"]


class ImageQuality(NamedTuple):
    """Strehl ratios and residual phase of an image at one wavelength."""

    #: Peak Strehl ratio (PSF maximum over the diffraction-limited one).
    strehl: float
    #: Marechal estimate ``exp(-sigma^2)`` (for a long exposure: the mean over frames).
    strehl_marechal: float
    #: Residual phase rms (piston removed), radians at the wavelength.
    residual_rms: float
    #: Residual OPD rms (piston removed), metres.
    residual_opd_rms: float
    #: Wavelength, metres.
    wavelength: float
    #: Number of frames averaged.
    n_frames: int


def residual_phase_variance(opd: np.ndarray, pupil: np.ndarray, wavelength: float) -> float:
    """Piston-removed phase variance over the pupil, rad^2 at ``wavelength`` (metres).

    Parameters
    ----------
    opd : ndarray
        OPD map, metres.
    pupil : ndarray
        Pupil transmission (weights), same shape.
    wavelength : float
        Metres.
    """
    w = pupil / pupil.sum()
    mean = float(np.sum(w * opd))
    var = float(np.sum(w * (opd - mean) ** 2))
    return var * (2 * math.pi / wavelength) ** 2


class SimulatedScienceCamera(SimulatedDetector, ScienceCamera):
    """Science camera forward model: OPD map in, PSF out, Strehl reported.

    Parameters
    ----------
    pupil : ndarray, shape (n, n)
        Pupil transmission on the OPD grid.
    wavelength : float
        Imaging wavelength, metres (H band: 1.65e-6).
    padding : int
        FFT size over pupil size (2: Nyquist sampling).
    frame_rate : float
        Frames per second, Hz.
    opd_source : callable, optional
        ``opd_source() -> opd`` (metres): called by :meth:`grab`.

    Raises
    ------
    ValueError
        An argument out of range (named in the message): ``pupil`` not a square map of
        transmissions with some light, ``wavelength`` or ``frame_rate`` not > 0, ``padding``
        not an integer >= 1.

    Attributes
    ----------
    psf_sum : ndarray, float64
        Sum of the PSFs exposed since :meth:`reset`, normalised so that the diffraction
        limit peaks at 1 for each frame.
    last_frame : ImageQuality or None
        Quality of the last frame exposed alone (short exposure); None before the first.
    """

    def __init__(self, pupil: np.ndarray, wavelength: float = 1.65e-6, padding: int = 2,
                 frame_rate: float = 1000.0,
                 opd_source: Callable[[], np.ndarray] | None = None) -> None:
        self.pupil = np.asarray(pupil, dtype=np.float64)
        if (self.pupil.ndim != 2 or self.pupil.shape[0] != self.pupil.shape[1]
                or not np.all(np.isfinite(self.pupil)) or np.any(self.pupil < 0)
                or not self.pupil.sum() > 0):
            raise ValueError(f"pupil (shape {self.pupil.shape}): must be a square 2-D map of "
                             "transmissions >= 0, not all 0")
        self._wavelength = checked_number("wavelength", wavelength, gt=0, unit="m")
        self.padding = checked_int("padding", padding)
        self._frame_rate = checked_number("frame_rate", frame_rate, gt=0,
                                          unit="frames per second, Hz")
        self.opd_source = opd_source
        n = self.pupil.shape[0]
        self.fft_size = self.padding * n
        self._amp = np.sqrt(self.pupil)
        self._field = np.zeros((self.fft_size, self.fft_size), dtype=np.complex128)
        self._peak0 = float(self._amp.sum()) ** 2  # |FFT|^2 at 0 for a flat wavefront
        self.psf_sum = np.zeros((self.fft_size, self.fft_size))
        self._frame_number = 0
        self.last_frame: ImageQuality | None = None
        self.reset()

    @property
    def shape(self) -> tuple[int, int]:
        """PSF shape, pixels."""
        return self.psf_sum.shape

    @property
    def dtype(self) -> np.dtype:
        """float64."""
        return np.dtype(np.float64)

    @property
    def pixels_per_lambda_over_d(self) -> int:
        """PSF pixels per ``lambda / D`` (the padding factor)."""
        return self.padding

    def reset(self) -> None:
        """Start a new long exposure."""
        self.psf_sum[:] = 0.0
        self.n_frames = 0
        self._var_sum = 0.0
        self._opd_var_sum = 0.0
        self._marechal_sum = 0.0

    def psf(self, opd: np.ndarray) -> np.ndarray:
        """Instantaneous PSF of an OPD map (metres), centred, diffraction peak = 1."""
        n = self.pupil.shape[0]
        k = 2 * math.pi / self._wavelength
        self._field[:n, :n] = self._amp * np.exp(1j * k * opd)
        p = np.abs(np.fft.fft2(self._field)) ** 2 / self._peak0
        return np.fft.fftshift(p)

    def expose(self, opd: np.ndarray) -> np.ndarray:
        """Add the PSF of an OPD map (metres) to the long exposure; return the instant PSF."""
        p = self.psf(opd)
        self.psf_sum += p
        var = residual_phase_variance(opd, self.pupil, self._wavelength)
        self._var_sum += var
        self._opd_var_sum += var * (self._wavelength / (2 * math.pi)) ** 2
        self._marechal_sum += math.exp(-var)
        self.n_frames += 1
        self._frame_number += 1
        self.last_frame = ImageQuality(float(p.max()), math.exp(-var), math.sqrt(var),
                                       math.sqrt(var) * self._wavelength / (2 * math.pi),
                                       self._wavelength, 1)
        return p

    def grab(self, out: np.ndarray | None = None) -> np.ndarray:
        """Expose the next wavefront from :attr:`opd_source`; return the instant PSF."""
        if self.opd_source is None:
            raise RuntimeError("no opd_source: give one, or call expose(opd)")
        p = self.expose(self.opd_source())
        if out is not None:
            out[:] = p
            return out
        return p

    def strehl(self) -> float:
        """Peak Strehl ratio of the long exposure (0 before any frame)."""
        if self.n_frames == 0:
            return 0.0
        return float(self.psf_sum.max() / self.n_frames)

    def quality(self) -> ImageQuality:
        """Strehl (peak and Marechal) and residual rms of the long exposure."""
        nf = max(self.n_frames, 1)
        return ImageQuality(self.strehl(), self._marechal_sum / nf, math.sqrt(self._var_sum / nf),
                            math.sqrt(self._opd_var_sum / nf), self._wavelength, self.n_frames)

    def instant_quality(self, opd: np.ndarray) -> ImageQuality:
        """Image quality of one OPD map (metres), without touching the long exposure."""
        var = residual_phase_variance(opd, self.pupil, self._wavelength)
        s = float(self.psf(opd).max())
        return ImageQuality(s, math.exp(-var), math.sqrt(var),
                            math.sqrt(var) * self._wavelength / (2 * math.pi),
                            self._wavelength, 1)

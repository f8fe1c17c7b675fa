"""What every simulated detector shares: frame rate, frame count and wavelength accessors,
and the noisy image of a wavefront sensor's expected image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["SimulatedDetector", "SimulatedWavefrontDetector"]


class SimulatedDetector:
    """Mixin of the simulated cameras: they set ``_frame_rate`` (Hz), ``_frame_number`` and
    ``_wavelength`` (m), and inherit the read-only accessors of the camera interfaces."""

    _frame_rate: float
    _frame_number: int
    _wavelength: float

    @property
    def frame_rate(self) -> float:
        """Frames per second, Hz."""
        return self._frame_rate

    @property
    def frame_number(self) -> int:
        """Frames produced so far."""
        return self._frame_number

    @property
    def wavelength(self) -> float:
        """Wavelength of the light the detector sees, metres."""
        return self._wavelength


class SimulatedWavefrontDetector(SimulatedDetector):
    """Mixin of the simulated wavefront sensors: :meth:`image` draws the noise on their
    ``expected_image(opd)`` (which each defines), and gives them the camera accessors; they
    set ``_image`` (float32 buffer), ``pupil`` (transmission on the OPD grid), ``opd_source``
    (``() -> opd`` or None), ``rng``, ``photon_noise`` and ``read_noise`` (e- rms)."""

    _image: np.ndarray
    pupil: np.ndarray
    opd_source: Callable[[], np.ndarray] | None
    rng: np.random.Generator
    photon_noise: bool
    read_noise: float

    def _init_detector(self, flux: float, background: float, read_noise: float,
                       photon_noise: bool, frame_rate: float,
                       opd_source: Callable[[], np.ndarray] | None,
                       seed: int | np.random.Generator | None) -> None:
        """Set the light and noise parameters, the frame rate, the wavefront source and the
        random generator (``seed``: a Generator is used as it is)."""
        self.flux = float(flux)
        self.background = float(background)
        self.read_noise = float(read_noise)
        self.photon_noise = bool(photon_noise)
        self._frame_rate = float(frame_rate)
        self.opd_source = opd_source
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

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

    def image(self, opd: np.ndarray, out: np.ndarray | None = None,
              noise: bool = True) -> np.ndarray:
        """Detector image (float32 photo-electrons) of an OPD map (metres); counts a frame.

        Parameters
        ----------
        opd : ndarray, shape :attr:`pupil_shape`
            Wavefront OPD on the pupil grid, metres.
        out : ndarray, float32, optional
            Where to write the image (default: the sensor's buffer).
        noise : bool
            Add photon and read noise (as configured); False gives the expected image.
        """
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


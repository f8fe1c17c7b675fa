"""What every simulated detector shares: frame rate, frame count and wavelength accessors."""

from __future__ import annotations

__all__ = ["SimulatedDetector"]


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

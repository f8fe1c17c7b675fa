"""Pyramid wavefront sensor: slopes or intensities from the four pupil images.

Quadrant convention: the four pupil images are given in the order ``(I1, I2, I3, I4)`` with
``I1`` at (+x, +y), ``I2`` at (+x, -y), ``I3`` at (-x, +y) and ``I4`` at (-x, -y), so that

``sx = (I1 + I2 - I3 - I4) / norm`` and ``sy = (I1 - I2 + I3 - I4) / norm``.

Each pupil is given by the flat indices (into the frame) of its valid pixels, the same pupil
point in the same position of all four index lists.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

__all__ = ["pyramid_slopes", "pyramid_intensities", "pupil_indices", "Pyramid"]


@jit
def pyramid_slopes(frame, indices, local, ref, slopes, flux):  # pragma: no cover - compiled
    """Pyramid slopes of every valid pupil pixel.

    Parameters
    ----------
    frame : ndarray, shape (H, W), C-contiguous
        Calibrated detector frame.
    indices : ndarray, int64, shape (4, n)
        Flat frame indices of the valid pixels of pupils I1..I4.
    local : bool
        Normalise by each pixel's own sum ``I1 + I2 + I3 + I4`` (True) or by the mean of that
        sum over the pupil (False, "global").
    ref : ndarray, shape (2 n,)
        Reference slopes subtracted.
    slopes : ndarray, float32, shape (2 n,)
        Output: ``sx`` then ``sy`` (dimensionless), minus ``ref``; 0 where the norm is <= 0.
    flux : ndarray, float32, shape (n,)
        Output: ``I1 + I2 + I3 + I4`` per pupil pixel (frame units).

    Returns
    -------
    float
        The mean flux per pupil pixel (frame units).
    """
    f = frame.ravel()
    n = indices.shape[1]
    total = 0.0
    for k in range(n):
        s = (float(f[indices[0, k]]) + float(f[indices[1, k]]) + float(f[indices[2, k]])
             + float(f[indices[3, k]]))
        flux[k] = s
        total += s
    mean = total / n if n > 0 else 0.0
    for k in range(n):
        a = float(f[indices[0, k]])
        b = float(f[indices[1, k]])
        c = float(f[indices[2, k]])
        d = float(f[indices[3, k]])
        norm = (a + b + c + d) if local else mean
        if norm > 0.0:
            slopes[k] = (a + b - c - d) / norm - ref[k]
            slopes[n + k] = (a - b + c - d) / norm - ref[n + k]
        else:
            slopes[k] = 0.0
            slopes[n + k] = 0.0
    return mean


@jit
def pyramid_intensities(frame, indices, ref, out):  # pragma: no cover - compiled
    """Full-intensity mode: the valid pixels of the four pupils over their mean flux.

    Parameters
    ----------
    frame : ndarray, shape (H, W), C-contiguous
        Calibrated detector frame.
    indices : ndarray, int64, shape (4, n)
        Flat frame indices of the valid pixels of pupils I1..I4.
    ref : ndarray, shape (4 n,)
        Reference (e.g. the normalised intensities on a flat wavefront), subtracted.
    out : ndarray, float32, shape (4 n,)
        Output: ``I_q[k] / m - ref`` for q = 1..4 then k, where ``m`` is the mean of
        ``I1 + I2 + I3 + I4`` over the pupil (so the values sum to ``n``).

    Returns
    -------
    float
        ``m``, the mean flux per pupil pixel (frame units).
    """
    f = frame.ravel()
    n = indices.shape[1]
    total = 0.0
    for q in range(4):
        for k in range(n):
            total += float(f[indices[q, k]])
    mean = total / n if n > 0 else 0.0
    inv = 1.0 / mean if mean > 0.0 else 0.0
    for q in range(4):
        for k in range(n):
            out[q * n + k] = float(f[indices[q, k]]) * inv - ref[q * n + k]
    return mean


def pupil_indices(frame_shape: tuple[int, int], centers, radius: float,
                  obscuration: float = 0.0) -> np.ndarray:
    """Index maps of four circular pupil images on a detector.

    Parameters
    ----------
    frame_shape : (int, int)
        Detector shape (rows, columns).
    centers : sequence of four (y, x)
        Centres of pupils I1..I4 (pixels; see the module's quadrant convention).
    radius : float
        Pupil radius, pixels.
    obscuration : float
        Central obscuration, as a fraction of the radius.

    Returns
    -------
    ndarray, int64, shape (4, n)
        Flat indices of each pupil's valid pixels, the same pupil point in each column.
    """
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    rr = np.hypot(dy, dx)
    keep = (rr <= radius) & (rr >= obscuration * radius)
    dy, dx = dy[keep], dx[keep]
    out = np.empty((4, dy.size), dtype=np.int64)
    for q, (cy, cx) in enumerate(centers):
        y = int(round(cy)) + dy
        x = int(round(cx)) + dx
        if y.min() < 0 or x.min() < 0 or y.max() >= frame_shape[0] or x.max() >= frame_shape[1]:
            raise ValueError(f"pupil {q + 1} at {(cy, cx)} does not fit in {frame_shape}")
        out[q] = y * frame_shape[1] + x
    return out


class Pyramid:
    """Pyramid sensor processing with its index maps, reference and output arrays.

    Parameters
    ----------
    indices : array_like, int, shape (4, n)
        Flat frame indices of pupils I1..I4 (see :func:`pupil_indices`).
    mode : str
        ``"slopes"`` (local normalisation), ``"slopes_global"`` or ``"intensities"``.

    Attributes
    ----------
    signal : ndarray, float32
        Last measurement: ``2 n`` slopes or ``4 n`` intensities.
    flux : float
        Last mean flux per pupil pixel.
    """

    def __init__(self, indices, mode: str = "slopes") -> None:
        self.indices = np.ascontiguousarray(indices, dtype=np.int64)
        if self.indices.ndim != 2 or self.indices.shape[0] != 4:
            raise ValueError("indices must have shape (4, n)")
        if mode not in ("slopes", "slopes_global", "intensities"):
            raise ValueError("mode must be 'slopes', 'slopes_global' or 'intensities'")
        self.mode = mode
        n = self.n_pixels = self.indices.shape[1]
        size = 4 * n if mode == "intensities" else 2 * n
        self.signal = np.zeros(size, dtype=np.float32)
        self.reference = np.zeros(size, dtype=np.float32)
        self.pixel_flux = np.zeros(n, dtype=np.float32)
        self.flux = 0.0

    def measure(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Signal of one frame, written into ``out`` (default :attr:`signal`) and returned."""
        o = self.signal if out is None else out
        if self.mode == "intensities":
            self.flux = pyramid_intensities(frame, self.indices, self.reference, o)
        else:
            self.flux = pyramid_slopes(frame, self.indices, self.mode == "slopes",
                                       self.reference, o, self.pixel_flux)
        return o

    __call__ = measure

    def calibrate_reference(self, frame: np.ndarray) -> None:
        """Make ``frame`` (e.g. taken on a flat wavefront) the zero of the signal."""
        self.reference[:] = 0.0
        self.measure(frame)
        self.reference[:] = self.signal

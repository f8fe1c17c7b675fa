"""Pixel processing of detector frames: calibration, thresholding, descrambling, regions.

Every kernel writes into a preallocated ``out`` array, allocates nothing and returns ``None``.
Raw frames may be any integer or float dtype; outputs are float32 (ADU, or photo-electrons when
``gain`` includes the conversion).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import jit, pjit

__all__ = [
    "calibrate",
    "subtract_dark",
    "apply_threshold",
    "descramble",
    "scramble",
    "multi_output_pixel_map",
    "extract_region",
    "extract_regions",
]

_PAR_MIN = 1 << 16  # pixels below which the calibration runs on the calling thread


@jit
def _calibrate_rows(raw, dark, gain, background, threshold, out, r0, r1):  # pragma: no cover
    w = raw.shape[1]
    thr = np.float32(threshold)
    zero = np.float32(0.0)
    for i in range(r0, r1):
        for j in range(w):
            v = (np.float32(raw[i, j]) - dark[i, j]) * gain[i, j] - background[i, j]
            out[i, j] = v if v >= thr else zero


@pjit
def _calibrate_parallel(raw, dark, gain, background, threshold, out):  # pragma: no cover
    for i in prange(raw.shape[0]):
        _calibrate_rows(raw, dark, gain, background, threshold, out, i, i + 1)


@jit
def calibrate(raw, dark, gain, background, threshold, out):  # pragma: no cover - compiled
    """Dark, flat and background correction then thresholding, in one pass.

    ``out = (raw - dark) * gain - background``, then pixels below ``threshold`` set to 0.

    Parameters
    ----------
    raw : ndarray, shape (h, w), any real dtype
        Raw frame, ADU.
    dark : ndarray, float32, shape (h, w)
        Dark frame (bias + dark current), ADU.
    gain : ndarray, float32, shape (h, w)
        Flat-field gain: the inverse of the normalised flat (1 for a perfect pixel); may include
        the ADU-to-photo-electron conversion.
    background : ndarray, float32, shape (h, w)
        Sky/stray-light background after gain, in output units (zeros for none).
    threshold : float
        Pixels below this value (output units) are set to 0; ``-inf`` keeps every pixel.
    out : ndarray, float32, shape (h, w)
        Written in place (may be ``raw`` itself if ``raw`` is float32).

    Returns
    -------
    None
    """
    if raw.size < _PAR_MIN:
        _calibrate_rows(raw, dark, gain, background, threshold, out, 0, raw.shape[0])
    else:
        _calibrate_parallel(raw, dark, gain, background, threshold, out)


@jit
def subtract_dark(raw, dark, out):  # pragma: no cover - compiled
    """``out = raw - dark`` in float32 (ADU); shapes (h, w); returns None."""
    h, w = raw.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = np.float32(raw[i, j]) - dark[i, j]


@jit
def apply_threshold(image, threshold, subtract, out):  # pragma: no cover - compiled
    """Threshold an image: pixels below ``threshold`` become 0.

    Parameters
    ----------
    image : ndarray, float32, shape (h, w)
        Calibrated image (ADU or photo-electrons).
    threshold : float
        Threshold, same units.
    subtract : bool
        If true, the threshold is also subtracted from the pixels kept (``max(v - t, 0)``,
        as for a thresholded centre of gravity); otherwise they are copied unchanged.
    out : ndarray, float32, shape (h, w)
        Written in place (may be ``image``).

    Returns
    -------
    None
    """
    h, w = image.shape
    thr = np.float32(threshold)
    zero = np.float32(0.0)
    for i in range(h):
        for j in range(w):
            v = image[i, j]
            if v < thr:
                out[i, j] = zero
            elif subtract:
                out[i, j] = v - thr
            else:
                out[i, j] = v


@jit
def descramble(raw, pixel_map, out):  # pragma: no cover - compiled
    """Reorder the pixels of a camera's readout stream into an image.

    ``out.flat[k] = raw.flat[pixel_map.flat[k]]``.

    Parameters
    ----------
    raw : ndarray, C-contiguous, any shape and real dtype
        Pixels in readout order (e.g. the interleaved outputs of an OCAM2K), including any
        prescan pixels, which the map simply never points at.
    pixel_map : ndarray, integer, shape of ``out``
        For each image pixel, its index in the flattened raw stream.
    out : ndarray, C-contiguous
        Image, written in place (its dtype: e.g. float32 or the raw dtype).

    Returns
    -------
    None
    """
    r = raw.ravel()
    m = pixel_map.ravel()
    o = out.ravel()
    for k in range(o.size):
        o[k] = r[m[k]]


@jit
def scramble(image, pixel_map, out):  # pragma: no cover - compiled
    """Inverse of :func:`descramble`: ``out.flat[pixel_map.flat[k]] = image.flat[k]``.

    Pixels of ``out`` not pointed at by the map (prescan) are left as they were. Used to
    simulate a camera's readout stream. Returns None.
    """
    r = out.ravel()
    m = pixel_map.ravel()
    im = image.ravel()
    for k in range(im.size):
        r[m[k]] = im[k]


def multi_output_pixel_map(
    height: int = 240,
    width: int = 240,
    n_outputs_x: int = 4,
    n_outputs_y: int = 2,
    prescan: int = 0,
) -> np.ndarray:
    """Pixel map of a sensor read by several outputs at once, OCAM2K style.

    The sensor is cut into ``n_outputs_y`` by ``n_outputs_x`` tiles, each read by its own
    output amplifier starting from the tile's corner on the sensor's outer edge (top tiles
    read from the top edge down, bottom tiles from the bottom edge up; left-half tiles from
    their left column, right-half tiles from their right column). The outputs are digitised
    together, so the stream interleaves them: pixel ``p`` of every output, then pixel ``p + 1``.
    Each tile row is preceded by ``prescan`` pixels per output that belong to no image pixel.
    The OCAM2K's 240x240 sensor read by 8 outputs of 120 rows by 60 columns is the default
    geometry; check the order against the camera's manual and, if it differs, build the map
    from it: :func:`descramble` takes any map.

    Returns
    -------
    ndarray, int64, shape (height, width)
        Index in the raw stream of every image pixel; the raw stream has
        ``height * width + prescan * n_outputs_x * n_outputs_y * height // n_outputs_y``
        pixels.
    """
    if height % n_outputs_y or width % n_outputs_x:
        raise ValueError("the sensor must divide evenly into the outputs' tiles")
    th, tw = height // n_outputs_y, width // n_outputs_x
    n_out = n_outputs_x * n_outputs_y
    row_len = tw + prescan
    pmap = np.empty((height, width), dtype=np.int64)
    for oy in range(n_outputs_y):
        for ox in range(n_outputs_x):
            o = oy * n_outputs_x + ox
            for r in range(th):
                # rows read from the outer edge towards the centre line
                y = oy * th + (r if oy < n_outputs_y / 2 else th - 1 - r)
                for c in range(tw):
                    x = ox * tw + (c if ox < n_outputs_x / 2 else tw - 1 - c)
                    p = r * row_len + prescan + c  # sequence number within this output
                    pmap[y, x] = p * n_out + o
    return pmap


@jit
def extract_region(image, y0, x0, out):  # pragma: no cover - compiled
    """Copy the window ``image[y0:y0+h, x0:x0+w]`` into ``out`` (shape (h, w)); returns None."""
    h, w = out.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = image[y0 + i, x0 + j]


@jit
def extract_regions(image, corners, out):  # pragma: no cover - compiled
    """Copy several equal windows of an image into a stack.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Frame.
    corners : ndarray, integer, shape (n, 2)
        ``(y0, x0)`` pixel of each window's top-left corner.
    out : ndarray, shape (n, h, w)
        ``out[k] = image[y0_k:y0_k+h, x0_k:x0_k+w]``, written in place.

    Returns
    -------
    None
    """
    n, h, w = out.shape
    for k in range(n):
        y0 = corners[k, 0]
        x0 = corners[k, 1]
        for i in range(h):
            for j in range(w):
                out[k, i, j] = image[y0 + i, x0 + j]

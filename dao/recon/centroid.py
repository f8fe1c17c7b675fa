"""Shack-Hartmann centroiding over a map of valid subapertures.

Conventions
-----------
* A subaperture is an ``h`` by ``w`` pixel window whose top-left pixel is ``corners[k]``
  (``(y0, x0)``, row then column).
* Positions are in pixels from the window's centre ``((h - 1) / 2, (w - 1) / 2)``; ``x`` along
  columns, ``y`` along rows.
* ``slopes`` has length ``2 n``: the ``n`` x positions then the ``n`` y positions, minus the
  reference slopes. A subaperture with no (positive) signal gets slope 0.
* ``flux[k]`` is the sum of the window's pixels (frame units), before any threshold.

Methods (:class:`ShackHartmann` ``method=``):

``"cog"``
    Plain centre of gravity.
``"tcog"``
    Thresholded: pixels are ``max(I - threshold, 0)``.
``"wcog"``
    Weighted by a weight map (one for all subapertures or one each).
``"brightest"``
    Brightest-N pixels: the (N+1)-th brightest value of the window is subtracted and only the
    N brighter pixels are kept, so the estimate varies continuously with the pixels.
``"correlation"``
    Cross-correlation with a reference spot image over shifts of up to ``search`` pixels,
    then 3-point Gaussian (or parabolic) interpolation of the peak.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ._jit import FASTMATH, jit, pjit

__all__ = [
    "COG",
    "TCOG",
    "WCOG",
    "BRIGHTEST",
    "centre_of_gravity",
    "correlate",
    "ShackHartmann",
    "subaperture_corners",
    "circular_valid_mask",
]

COG, TCOG, WCOG, BRIGHTEST = 0, 1, 2, 3
_METHODS = {"cog": COG, "tcog": TCOG, "wcog": WCOG, "brightest": BRIGHTEST}
INTERP_PARABOLIC, INTERP_GAUSSIAN = 0, 1

_PAR_MIN_PIXELS = 1 << 14  # below this many subaperture pixels, run on the calling thread


def _slp(dispatcher):
    """Compile ``dispatcher`` with LLVM's SLP (straight-line) vectoriser on.

    Numba leaves it off by default; the unrolled 8x8 kernels need it to keep the 8 column sums
    of a window in one vector register (2-4 times faster). The setting is switched only while
    this function compiles (or loads from the cache), under Numba's global compiler lock.
    """
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock

    plain = dispatcher.compile

    def compile(sig):
        with global_compiler_lock:
            old = config.SLP_VECTORIZE
            config.SLP_VECTORIZE = 1
            try:
                return plain(sig)
            finally:
                config.SLP_VECTORIZE = old

    dispatcher.compile = compile
    return dispatcher


def _inline(fn):
    """Per-window helper, inlined into its caller at the Numba IR level: no call, no reference
    counting of the frame per subaperture (an atomic operation that threads would fight over).
    Inlined code takes the caller's fast-math flags."""
    return numba.njit(inline="always", nogil=True)(fn)


@_inline
def _cog8(frame, y0, x0):  # pragma: no cover - compiled
    # plain centre of gravity of an 8x8 window, unrolled across columns (flux = sum).
    # No array views here: their reference counting is an atomic operation on the frame that
    # the threads would fight over.
    z = np.float32(0.0)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = z
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = z
    for i in range(8):
        fi = np.float32(i)
        yi = y0 + np.uint64(i)
        v0 = np.float32(frame[yi, x0 + np.uint64(0)])
        v1 = np.float32(frame[yi, x0 + np.uint64(1)])
        v2 = np.float32(frame[yi, x0 + np.uint64(2)])
        v3 = np.float32(frame[yi, x0 + np.uint64(3)])
        v4 = np.float32(frame[yi, x0 + np.uint64(4)])
        v5 = np.float32(frame[yi, x0 + np.uint64(5)])
        v6 = np.float32(frame[yi, x0 + np.uint64(6)])
        v7 = np.float32(frame[yi, x0 + np.uint64(7)])
        a0 += v0
        a1 += v1
        a2 += v2
        a3 += v3
        a4 += v4
        a5 += v5
        a6 += v6
        a7 += v7
        b0 += v0 * fi
        b1 += v1 * fi
        b2 += v2 * fi
        b3 += v3 * fi
        b4 += v4 * fi
        b5 += v5 * fi
        b6 += v6 * fi
        b7 += v7 * fi
    s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7
    sx = (a1 + np.float32(2.0) * a2 + np.float32(3.0) * a3 + np.float32(4.0) * a4
          + np.float32(5.0) * a5 + np.float32(6.0) * a6 + np.float32(7.0) * a7)
    sy = b0 + b1 + b2 + b3 + b4 + b5 + b6 + b7
    return s, s, sx, sy

@_inline
def _sums8(frame, y0, x0, t, floor, wk, kw):  # pragma: no cover - compiled
    # 8x8 window, fully unrolled across columns so that LLVM keeps the 8 column sums of each
    # quantity in one vector register. Pixel value used: max(v - t, floor) * weight.
    z = np.float32(0.0)
    f0 = f1 = f2 = f3 = f4 = f5 = f6 = f7 = z
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = z
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = z
    for i in range(8):
        fi = np.float32(i)
        ii = np.uint64(i)
        yi = y0 + ii
        v0 = np.float32(frame[yi, x0 + np.uint64(0)])
        v1 = np.float32(frame[yi, x0 + np.uint64(1)])
        v2 = np.float32(frame[yi, x0 + np.uint64(2)])
        v3 = np.float32(frame[yi, x0 + np.uint64(3)])
        v4 = np.float32(frame[yi, x0 + np.uint64(4)])
        v5 = np.float32(frame[yi, x0 + np.uint64(5)])
        v6 = np.float32(frame[yi, x0 + np.uint64(6)])
        v7 = np.float32(frame[yi, x0 + np.uint64(7)])
        f0 += v0
        f1 += v1
        f2 += v2
        f3 += v3
        f4 += v4
        f5 += v5
        f6 += v6
        f7 += v7
        v0 = v0 - t
        v0 = (v0 if v0 > floor else floor) * wk[kw, ii, np.uint64(0)]
        v1 = v1 - t
        v1 = (v1 if v1 > floor else floor) * wk[kw, ii, np.uint64(1)]
        v2 = v2 - t
        v2 = (v2 if v2 > floor else floor) * wk[kw, ii, np.uint64(2)]
        v3 = v3 - t
        v3 = (v3 if v3 > floor else floor) * wk[kw, ii, np.uint64(3)]
        v4 = v4 - t
        v4 = (v4 if v4 > floor else floor) * wk[kw, ii, np.uint64(4)]
        v5 = v5 - t
        v5 = (v5 if v5 > floor else floor) * wk[kw, ii, np.uint64(5)]
        v6 = v6 - t
        v6 = (v6 if v6 > floor else floor) * wk[kw, ii, np.uint64(6)]
        v7 = v7 - t
        v7 = (v7 if v7 > floor else floor) * wk[kw, ii, np.uint64(7)]
        a0 += v0
        a1 += v1
        a2 += v2
        a3 += v3
        a4 += v4
        a5 += v5
        a6 += v6
        a7 += v7
        b0 += v0 * fi
        b1 += v1 * fi
        b2 += v2 * fi
        b3 += v3 * fi
        b4 += v4 * fi
        b5 += v5 * fi
        b6 += v6 * fi
        b7 += v7 * fi
    flux = f0 + f1 + f2 + f3 + f4 + f5 + f6 + f7
    s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7
    sx = (a1 + np.float32(2.0) * a2 + np.float32(3.0) * a3 + np.float32(4.0) * a4
          + np.float32(5.0) * a5 + np.float32(6.0) * a6 + np.float32(7.0) * a7)
    sy = b0 + b1 + b2 + b3 + b4 + b5 + b6 + b7
    return flux, s, sx, sy


@_inline
def _sums(frame, y0, x0, h, w, t, floor, wk, kw):  # pragma: no cover - compiled
    z = np.float32(0.0)
    flux = z
    s = z
    sx = z
    sy = z
    for i in range(h):
        yi = y0 + i
        rf = z
        rs = z
        rx = z
        for j in range(w):
            v = np.float32(frame[yi, x0 + j])
            rf += v
            v = v - t
            v = (v if v > floor else floor) * wk[kw, i, j]
            rs += v
            rx += v * np.float32(j)
        flux += rf
        s += rs
        sx += rx
        sy += rs * np.float32(i)
    return flux, s, sx, sy


@_inline
def _tcog8(frame, y0, x0, t):  # pragma: no cover - compiled
    # thresholded centre of gravity of an 8x8 window: pixel value max(v - t, 0)
    z = np.float32(0.0)
    f0 = f1 = f2 = f3 = f4 = f5 = f6 = f7 = z
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = z
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = z
    for i in range(8):
        fi = np.float32(i)
        yi = y0 + np.uint64(i)
        v0 = np.float32(frame[yi, x0 + np.uint64(0)])
        v1 = np.float32(frame[yi, x0 + np.uint64(1)])
        v2 = np.float32(frame[yi, x0 + np.uint64(2)])
        v3 = np.float32(frame[yi, x0 + np.uint64(3)])
        v4 = np.float32(frame[yi, x0 + np.uint64(4)])
        v5 = np.float32(frame[yi, x0 + np.uint64(5)])
        v6 = np.float32(frame[yi, x0 + np.uint64(6)])
        v7 = np.float32(frame[yi, x0 + np.uint64(7)])
        f0 += v0
        f1 += v1
        f2 += v2
        f3 += v3
        f4 += v4
        f5 += v5
        f6 += v6
        f7 += v7
        v0 = max(v0 - t, z)
        v1 = max(v1 - t, z)
        v2 = max(v2 - t, z)
        v3 = max(v3 - t, z)
        v4 = max(v4 - t, z)
        v5 = max(v5 - t, z)
        v6 = max(v6 - t, z)
        v7 = max(v7 - t, z)
        a0 += v0
        a1 += v1
        a2 += v2
        a3 += v3
        a4 += v4
        a5 += v5
        a6 += v6
        a7 += v7
        b0 += v0 * fi
        b1 += v1 * fi
        b2 += v2 * fi
        b3 += v3 * fi
        b4 += v4 * fi
        b5 += v5 * fi
        b6 += v6 * fi
        b7 += v7 * fi
    flux = f0 + f1 + f2 + f3 + f4 + f5 + f6 + f7
    s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7
    sx = (a1 + np.float32(2.0) * a2 + np.float32(3.0) * a3 + np.float32(4.0) * a4
          + np.float32(5.0) * a5 + np.float32(6.0) * a6 + np.float32(7.0) * a7)
    sy = b0 + b1 + b2 + b3 + b4 + b5 + b6 + b7
    return flux, s, sx, sy


@_inline
def _count_ge8(frame, y0, x0, m):  # pragma: no cover - compiled
    # number of pixels of the 8x8 window >= m; unrolled across columns (one vector compare
    # per row), counted in float32 so that the sums stay in vector registers
    one = np.float32(1.0)
    z = np.float32(0.0)
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = z
    for i in range(8):
        yi = y0 + np.uint64(i)
        c0 += one if np.float32(frame[yi, x0 + np.uint64(0)]) >= m else z
        c1 += one if np.float32(frame[yi, x0 + np.uint64(1)]) >= m else z
        c2 += one if np.float32(frame[yi, x0 + np.uint64(2)]) >= m else z
        c3 += one if np.float32(frame[yi, x0 + np.uint64(3)]) >= m else z
        c4 += one if np.float32(frame[yi, x0 + np.uint64(4)]) >= m else z
        c5 += one if np.float32(frame[yi, x0 + np.uint64(5)]) >= m else z
        c6 += one if np.float32(frame[yi, x0 + np.uint64(6)]) >= m else z
        c7 += one if np.float32(frame[yi, x0 + np.uint64(7)]) >= m else z
    return int(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7)


@_inline
def _min_ge8(frame, y0, x0, m):  # pragma: no cover - compiled
    # smallest pixel of the 8x8 window that is >= m (unrolled across columns)
    inf = np.float32(np.inf)
    r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = inf
    for i in range(8):
        yi = y0 + np.uint64(i)
        v0 = np.float32(frame[yi, x0 + np.uint64(0)])
        v1 = np.float32(frame[yi, x0 + np.uint64(1)])
        v2 = np.float32(frame[yi, x0 + np.uint64(2)])
        v3 = np.float32(frame[yi, x0 + np.uint64(3)])
        v4 = np.float32(frame[yi, x0 + np.uint64(4)])
        v5 = np.float32(frame[yi, x0 + np.uint64(5)])
        v6 = np.float32(frame[yi, x0 + np.uint64(6)])
        v7 = np.float32(frame[yi, x0 + np.uint64(7)])
        r0 = min(r0, v0 if v0 >= m else inf)
        r1 = min(r1, v1 if v1 >= m else inf)
        r2 = min(r2, v2 if v2 >= m else inf)
        r3 = min(r3, v3 if v3 >= m else inf)
        r4 = min(r4, v4 if v4 >= m else inf)
        r5 = min(r5, v5 if v5 >= m else inf)
        r6 = min(r6, v6 if v6 >= m else inf)
        r7 = min(r7, v7 if v7 >= m else inf)
    return min(min(min(r0, r1), min(r2, r3)), min(min(r4, r5), min(r6, r7)))


@_inline
def _minmax8(frame, y0, x0):  # pragma: no cover - compiled
    # smallest and largest pixel of the 8x8 window (unrolled across columns)
    lo0 = lo1 = lo2 = lo3 = lo4 = lo5 = lo6 = lo7 = np.float32(np.inf)
    hi0 = hi1 = hi2 = hi3 = hi4 = hi5 = hi6 = hi7 = np.float32(-np.inf)
    for i in range(8):
        yi = y0 + np.uint64(i)
        v0 = np.float32(frame[yi, x0 + np.uint64(0)])
        v1 = np.float32(frame[yi, x0 + np.uint64(1)])
        v2 = np.float32(frame[yi, x0 + np.uint64(2)])
        v3 = np.float32(frame[yi, x0 + np.uint64(3)])
        v4 = np.float32(frame[yi, x0 + np.uint64(4)])
        v5 = np.float32(frame[yi, x0 + np.uint64(5)])
        v6 = np.float32(frame[yi, x0 + np.uint64(6)])
        v7 = np.float32(frame[yi, x0 + np.uint64(7)])
        lo0 = min(lo0, v0)
        hi0 = max(hi0, v0)
        lo1 = min(lo1, v1)
        hi1 = max(hi1, v1)
        lo2 = min(lo2, v2)
        hi2 = max(hi2, v2)
        lo3 = min(lo3, v3)
        hi3 = max(hi3, v3)
        lo4 = min(lo4, v4)
        hi4 = max(hi4, v4)
        lo5 = min(lo5, v5)
        hi5 = max(hi5, v5)
        lo6 = min(lo6, v6)
        hi6 = max(hi6, v6)
        lo7 = min(lo7, v7)
        hi7 = max(hi7, v7)
    lo = min(min(min(lo0, lo1), min(lo2, lo3)), min(min(lo4, lo5), min(lo6, lo7)))
    hi = max(max(max(hi0, hi1), max(hi2, hi3)), max(max(hi4, hi5), max(hi6, hi7)))
    return lo, hi


@_inline
def _nth_brightest8(frame, y0, x0, nb1):  # pragma: no cover - compiled
    # value of the nb1-th brightest pixel of an 8x8 window, exactly (ties included), by
    # bisection on the value with vectorised counts: t = max {x : #(pixels >= x) >= nb1}.
    # Each step keeps #(>= lo) >= nb1 > #(>= hi); it stops as soon as #(>= mid) == nb1 (then
    # the nb1 pixels >= mid are the brightest ones) or when no float32 is left between lo and
    # hi. Typically 5-10 steps of 64 compares.
    if nb1 > 64:
        return np.float32(0.0)
    lo, hi = _minmax8(frame, y0, x0)
    if _count_ge8(frame, y0, x0, hi) >= nb1:
        return hi
    half = np.float32(0.5)
    while True:
        mid = lo + (hi - lo) * half
        if not (lo < mid < hi):
            break
        c = _count_ge8(frame, y0, x0, mid)
        if c >= nb1:
            lo = mid
            if c == nb1:
                break
        else:
            hi = mid
    return _min_ge8(frame, y0, x0, lo)


@jit
def _nth_brightest(frame, y0, x0, h, w, top, k):  # pragma: no cover - compiled
    # value of the top.size-th brightest pixel of the window (insertion into `top`)
    nb = top.shape[1]
    for q in range(nb):
        top[k, q] = -np.inf
    last = -np.inf
    for i in range(h):
        for j in range(w):
            v = float(frame[y0 + i, x0 + j])
            if v > last:
                q = nb - 1
                while q > 0 and top[k, q - 1] < v:
                    top[k, q] = top[k, q - 1]
                    q -= 1
                top[k, q] = v
                last = top[k, nb - 1]
    return last if last > -np.inf else 0.0


@_inline
def _store(k, n, f, s, sx, sy, c, ref, slopes, flux):  # pragma: no cover - compiled
    flux[k] = f
    if s > 0.0:
        slopes[k] = sx / s - c - ref[k]
        slopes[n + k] = sy / s - c - ref[n + k]
    else:
        slopes[k] = 0.0
        slopes[n + k] = 0.0


@_slp
@jit(fastmath=FASTMATH)
def _range8(method, frame, corners, t, wk, nb1, ref, slopes, flux, k0, k1):  # pragma: no cover
    # 8x8 windows: one loop per method, so that nothing is decided per subaperture
    # window corners as unsigned integers: the compiler then drops the negative-index
    # wraparound of every pixel access, which otherwise blocks vectorisation
    n = corners.shape[0]
    c = np.float32(3.5)
    if method == COG:
        for k in range(k0, k1):
            f, s, sx, sy = _cog8(frame, np.uint64(corners[k, 0]), np.uint64(corners[k, 1]))
            _store(k, n, f, s, sx, sy, c, ref, slopes, flux)
    elif method == TCOG:
        for k in range(k0, k1):
            f, s, sx, sy = _tcog8(frame, np.uint64(corners[k, 0]), np.uint64(corners[k, 1]), t)
            _store(k, n, f, s, sx, sy, c, ref, slopes, flux)
    elif method == BRIGHTEST:
        for k in range(k0, k1):
            y0 = np.uint64(corners[k, 0])
            x0 = np.uint64(corners[k, 1])
            tk = _nth_brightest8(frame, y0, x0, nb1)
            f, s, sx, sy = _tcog8(frame, y0, x0, tk)
            _store(k, n, f, s, sx, sy, c, ref, slopes, flux)
    else:
        nw = wk.shape[0]
        z = np.float32(0.0)
        ninf = np.float32(-np.inf)
        for k in range(k0, k1):
            f, s, sx, sy = _sums8(frame, np.uint64(corners[k, 0]), np.uint64(corners[k, 1]), z,
                                  ninf, wk, np.uint64(k if nw > 1 else 0))
            _store(k, n, f, s, sx, sy, c, ref, slopes, flux)


@_slp
@jit(fastmath=FASTMATH)
def _centroid_range(frame, corners, h, w, method, threshold, weights, scratch, ref,
                    slopes, flux, k0, k1):  # pragma: no cover - compiled
    if h == 8 and w == 8:
        _range8(method, frame, corners, np.float32(threshold), weights, scratch.shape[1], ref,
                slopes, flux, k0, k1)
        return
    n = corners.shape[0]
    nw = weights.shape[0]
    cy = np.float32(0.5 * (h - 1))
    cx = np.float32(0.5 * (w - 1))
    t = np.float32(0.0)
    floor = np.float32(-np.inf)
    if method == TCOG:
        t = np.float32(threshold)
        floor = np.float32(0.0)
    elif method == BRIGHTEST:
        floor = np.float32(0.0)
    for k in range(k0, k1):
        y0 = corners[k, 0]
        x0 = corners[k, 1]
        kw = k if nw > 1 else 0
        if method == BRIGHTEST:
            t = np.float32(_nth_brightest(frame, y0, x0, h, w, scratch, k))
        f, s, sx, sy = _sums(frame, y0, x0, h, w, t, floor, weights, kw)
        flux[k] = f
        if s > 0.0:
            slopes[k] = sx / s - cx - ref[k]
            slopes[n + k] = sy / s - cy - ref[n + k]
        else:
            slopes[k] = 0.0
            slopes[n + k] = 0.0


@pjit
def _centroid_parallel(frame, corners, h, w, method, threshold, weights, scratch, ref, slopes,
                       flux):  # pragma: no cover - compiled
    n = corners.shape[0]
    n_blocks = (n + 15) // 16
    for b in prange(n_blocks):
        _centroid_range(frame, corners, h, w, method, threshold, weights, scratch, ref,
                        slopes, flux, b * 16, min(n, (b + 1) * 16))


@jit
def centre_of_gravity(frame, corners, h, w, method, threshold, weights, scratch, ref, slopes,
             flux):  # pragma: no cover - compiled
    """Centre-of-gravity slopes of every valid subaperture.

    Parameters
    ----------
    frame : ndarray, shape (H, W)
        Calibrated frame (any real dtype; ADU or photo-electrons).
    corners : ndarray, int64, shape (n, 2)
        ``(y0, x0)`` of each subaperture window.
    h, w : int
        Window size, pixels (8 by 8 has a fully unrolled fast path).
    method : int
        :data:`COG`, :data:`TCOG`, :data:`WCOG` or :data:`BRIGHTEST`.
    threshold : float
        Threshold subtracted for ``TCOG`` (frame units); ignored otherwise.
    weights : ndarray, float32, shape (1 or n, h, w)
        Weight maps (one shared, or one per subaperture): pass ones except for ``WCOG``.
    scratch : ndarray, float64, shape (n, N + 1)
        Work space for ``BRIGHTEST`` keeping N pixels (N >= 1); any (n, 1) array otherwise.
    ref : ndarray, float32, shape (2 n,)
        Reference slopes subtracted, pixels.
    slopes : ndarray, float32, shape (2 n,)
        Output: x then y positions minus ``ref``, pixels.
    flux : ndarray, float32, shape (n,)
        Output: sum of each window's pixels.

    Returns
    -------
    None

    Notes
    -----
    Sums are accumulated in float32: the positions carry a relative rounding error of about
    ``1e-6`` of the window size.
    """
    n = corners.shape[0]
    if n * h * w < _PAR_MIN_PIXELS:
        _centroid_range(frame, corners, h, w, method, threshold, weights, scratch, ref,
                        slopes, flux, 0, n)
    else:
        _centroid_parallel(frame, corners, h, w, method, threshold, weights, scratch, ref,
                           slopes, flux)


@_inline
def _peak_offset(cm, c0, cp, interp):  # pragma: no cover - compiled
    if interp == INTERP_GAUSSIAN and cm > 0.0 and c0 > 0.0 and cp > 0.0:
        lm = math.log(cm)
        l0 = math.log(c0)
        lp = math.log(cp)
        den = lm - 2.0 * l0 + lp
        if den < 0.0:
            return 0.5 * (lm - lp) / den
    den = cm - 2.0 * c0 + cp
    if den < 0.0:
        return 0.5 * (cm - cp) / den
    return 0.0


@jit
def _correlate_one(frame, y0, x0, h, w, refs, kr, search, interp, cbufs, k):  # pragma: no cover
    ns = 2 * search + 1
    total = 0.0
    for i in range(h):
        for j in range(w):
            total += float(frame[y0 + i, x0 + j])
    best = -np.inf
    bi = search
    bj = search
    for a in range(ns):
        dy = a - search
        i0 = max(0, dy)
        i1 = min(h, h + dy)
        for b in range(ns):
            dx = b - search
            j0 = max(0, dx)
            j1 = min(w, w + dx)
            c = 0.0
            for i in range(i0, i1):
                for j in range(j0, j1):
                    c += float(frame[y0 + i, x0 + j]) * refs[kr, i - dy, j - dx]
            cbufs[k, a, b] = c
            if c > best:
                best = c
                bi = a
                bj = b
    if not best > 0.0:
        return 0.0, 0.0, total, False
    oy = 0.0
    ox = 0.0
    if 0 < bi < ns - 1:
        oy = _peak_offset(cbufs[k, bi - 1, bj], best, cbufs[k, bi + 1, bj], interp)
    if 0 < bj < ns - 1:
        ox = _peak_offset(cbufs[k, bi, bj - 1], best, cbufs[k, bi, bj + 1], interp)
    return bj - search + ox, bi - search + oy, total, True


@jit
def _correlate_range(frame, corners, reference, search, interp, scratch, ref, slopes, flux,
                     k0, k1):  # pragma: no cover - compiled
    n = corners.shape[0]
    nr = reference.shape[0]
    h = reference.shape[1]
    w = reference.shape[2]
    for k in range(k0, k1):
        kr = k if nr > 1 else 0
        x, y, f, ok = _correlate_one(frame, corners[k, 0], corners[k, 1], h, w, reference, kr,
                                     search, interp, scratch, k)
        flux[k] = f
        if ok:
            slopes[k] = x - ref[k]
            slopes[n + k] = y - ref[n + k]
        else:
            slopes[k] = 0.0
            slopes[n + k] = 0.0


@pjit
def _correlate_parallel(frame, corners, reference, search, interp, scratch, ref, slopes,
                        flux):  # pragma: no cover - compiled
    n = corners.shape[0]
    n_blocks = (n + 7) // 8
    for b in prange(n_blocks):
        _correlate_range(frame, corners, reference, search, interp, scratch, ref, slopes,
                         flux, b * 8, min(n, (b + 1) * 8))


@_inline
def _xcorr8(frame, y0, x0, pr, kr, s2, a, b):  # pragma: no cover - compiled
    # sum over the 8x8 window of I(i, j) P(i - a + 2s, j - b + 2s), P the zero-padded reference
    c = np.float32(0.0)
    for i in range(8):
        yi = y0 + np.uint64(i)
        ri = np.uint64(i + s2 - a)
        for j in range(8):
            c += np.float32(frame[yi, x0 + np.uint64(j)]) * pr[kr, ri, np.uint64(j + s2 - b)]
    return c


@_slp
@jit(fastmath=FASTMATH)
def _correlate8_range(frame, corners, padded, search, interp, cbufs, ref, slopes, flux,
                      k0, k1):  # pragma: no cover - compiled
    # 8x8 windows against zero-padded references: fixed-size loops, no bounds per shift
    n = corners.shape[0]
    nr = padded.shape[0]
    ns = 2 * search + 1
    s2 = 2 * search
    for k in range(k0, k1):
        y0 = np.uint64(corners[k, 0])
        x0 = np.uint64(corners[k, 1])
        kr = np.uint64(k if nr > 1 else 0)
        total = np.float32(0.0)
        for i in range(8):
            for j in range(8):
                total += np.float32(frame[y0 + np.uint64(i), x0 + np.uint64(j)])
        best = -np.inf
        bi = search
        bj = search
        for a in range(ns):
            for b in range(ns):
                c = _xcorr8(frame, y0, x0, padded, kr, s2, a, b)
                cbufs[k, a, b] = c
                if c > best:
                    best = c
                    bi = a
                    bj = b
        flux[k] = total
        if best > 0.0:
            oy = 0.0
            ox = 0.0
            if 0 < bi < ns - 1:
                oy = _peak_offset(cbufs[k, bi - 1, bj], best, cbufs[k, bi + 1, bj], interp)
            if 0 < bj < ns - 1:
                ox = _peak_offset(cbufs[k, bi, bj - 1], best, cbufs[k, bi, bj + 1], interp)
            slopes[k] = bj - search + ox - ref[k]
            slopes[n + k] = bi - search + oy - ref[n + k]
        else:
            slopes[k] = 0.0
            slopes[n + k] = 0.0


@pjit
def _correlate8_parallel(frame, corners, padded, search, interp, cbufs, ref, slopes,
                         flux):  # pragma: no cover - compiled
    n = corners.shape[0]
    n_blocks = (n + 7) // 8
    for b in prange(n_blocks):
        _correlate8_range(frame, corners, padded, search, interp, cbufs, ref, slopes, flux,
                          b * 8, min(n, (b + 1) * 8))


@jit
def _correlate8(frame, corners, padded, search, interp, cbufs, ref, slopes,
                flux):  # pragma: no cover - compiled
    # :func:`correlate` for 8x8 windows, the reference(s) given zero-padded by ``search``
    # pixels on every side (see :func:`_pad_reference`)
    n = corners.shape[0]
    if n * 64 * (2 * search + 1) ** 2 < 16 * _PAR_MIN_PIXELS:
        _correlate8_range(frame, corners, padded, search, interp, cbufs, ref, slopes, flux,
                          0, n)
    else:
        _correlate8_parallel(frame, corners, padded, search, interp, cbufs, ref, slopes, flux)


def _pad_reference(reference: np.ndarray, search: int) -> np.ndarray:
    """Reference spot(s) ``(m, h, w)`` zero-padded by ``search`` pixels on every side, float32."""
    r = np.asarray(reference, dtype=np.float32)
    return np.ascontiguousarray(np.pad(r, ((0, 0), (search, search), (search, search))))


@jit
def correlate(frame, corners, reference, search, interp, scratch, ref, slopes,
              flux):  # pragma: no cover - compiled
    """Correlation slopes: shift of each subaperture image against a reference spot.

    For shifts ``(dy, dx)`` with ``|dy|, |dx| <= search``, ``C = sum I(y, x) R(y - dy, x - dx)``
    over the overlap of the window and the shifted reference; the integer peak is refined by
    3-point interpolation along each axis (no refinement on the search window's edge).

    Parameters
    ----------
    frame : ndarray, shape (H, W)
        Calibrated frame (background removed: a flat pedestal pulls the estimate to 0).
    corners : ndarray, int64, shape (n, 2)
        ``(y0, x0)`` of each subaperture window.
    reference : ndarray, float64, shape (1 or n, h, w)
        Reference spot image(s), shared or one per subaperture.
    search : int
        Largest shift tried, pixels.
    interp : int
        :data:`INTERP_GAUSSIAN` (log-parabola, exact for Gaussian spots) or
        :data:`INTERP_PARABOLIC`.
    scratch : ndarray, float64, shape (n, 2 search + 1, 2 search + 1)
        Work space (the correlation maps are left there).
    ref : ndarray, shape (2 n,)
        Reference slopes subtracted, pixels.
    slopes : ndarray, float32, shape (2 n,)
        Output: x then y shifts minus ``ref``, pixels.
    flux : ndarray, float32, shape (n,)
        Output: sum of each window's pixels.

    Returns
    -------
    None
    """
    n = corners.shape[0]
    h = reference.shape[1]
    w = reference.shape[2]
    if n * h * w * (2 * search + 1) ** 2 < 16 * _PAR_MIN_PIXELS:
        _correlate_range(frame, corners, reference, search, interp, scratch, ref, slopes,
                         flux, 0, n)
    else:
        _correlate_parallel(frame, corners, reference, search, interp, scratch, ref, slopes,
                            flux)


def circular_valid_mask(n: int, obscuration: float = 0.0, min_fill: float = 0.5,
                        oversample: int = 8) -> np.ndarray:
    """Valid subapertures of an ``n`` by ``n`` lenslet array on a circular (annular) pupil.

    Parameters
    ----------
    n : int
        Subapertures across the pupil diameter.
    obscuration : float
        Central obscuration, as a fraction of the diameter.
    min_fill : float
        Smallest illuminated fraction of a subaperture's area for it to be valid.
    oversample : int
        Samples per subaperture side used to compute the illuminated fraction.

    Returns
    -------
    ndarray, bool, shape (n, n)
    """
    m = n * oversample
    c = (np.arange(m) + 0.5) / m * 2.0 - 1.0
    r = np.hypot(c[:, None], c[None, :])
    inside = (r <= 1.0) & (r >= obscuration)
    fill = inside.reshape(n, oversample, n, oversample).mean(axis=(1, 3))
    return fill >= min_fill


def subaperture_corners(valid: np.ndarray, size: int | tuple[int, int],
                        origin: tuple[int, int] = (0, 0),
                        pitch: int | tuple[int, int] | None = None) -> np.ndarray:
    """Corners of the valid subapertures of a regular lenslet grid.

    Parameters
    ----------
    valid : ndarray, bool, shape (ny, nx)
        Valid-subaperture map (e.g. :func:`circular_valid_mask`).
    size : int or (int, int)
        Window size ``(h, w)``, pixels.
    origin : (int, int)
        Pixel ``(y, x)`` of the top-left corner of subaperture ``(0, 0)``.
    pitch : int or (int, int), optional
        Distance between neighbouring windows, pixels (default: ``size``).

    Returns
    -------
    ndarray, int64, shape (n_valid, 2)
        ``(y0, x0)`` of each valid window, in row-major order of the grid.
    """
    h, w = (size, size) if np.isscalar(size) else size
    py, px = (h, w) if pitch is None else ((pitch, pitch) if np.isscalar(pitch) else pitch)
    iy, ix = np.nonzero(np.asarray(valid, dtype=bool))
    return np.stack([origin[0] + iy * py, origin[1] + ix * px], axis=1).astype(np.int64)


class ShackHartmann:
    """Centroider of a Shack-Hartmann sensor, holding its map, reference and output arrays.

    Parameters
    ----------
    corners : array_like, int, shape (n, 2)
        ``(y0, x0)`` of each valid subaperture's window (see :func:`subaperture_corners`).
    size : int or (int, int)
        Window size ``(h, w)``, pixels.
    method : str
        ``"cog"``, ``"tcog"``, ``"wcog"``, ``"brightest"`` or ``"correlation"``.
    threshold : float
        Threshold for ``"tcog"``, frame units.
    weights : array_like, shape (h, w) or (n, h, w), optional
        Weight map(s) for ``"wcog"`` (default: a Gaussian of FWHM ``h / 2`` centred on the
        window).
    n_bright : int
        Number of pixels kept by ``"brightest"``.
    reference : array_like, shape (h, w) or (n, h, w), optional
        Reference spot(s) for ``"correlation"`` (default: a centred Gaussian of FWHM 2 pixels);
        refresh it from a frame with :meth:`update_reference`.
    search : int
        Largest shift tried by ``"correlation"``, pixels.
    interpolation : str
        ``"gaussian"`` or ``"parabolic"`` peak interpolation for ``"correlation"``.
    reference_slopes : array_like, shape (2 n,), optional
        Subtracted from every measurement, pixels (default 0).

    Attributes
    ----------
    slopes : ndarray, float32, shape (2 n,)
        Last slopes (x then y), pixels.
    flux : ndarray, float32, shape (n,)
        Last flux per subaperture, frame units.

    Examples
    --------
    >>> import numpy as np
    >>> sh = ShackHartmann(subaperture_corners(np.ones((2, 2), bool), 8), 8)
    >>> frame = np.zeros((16, 16), np.float32); frame[4, 4] = 1.0
    >>> s = sh.measure(frame)
    >>> float(s[0]), float(s[4])  # x and y of subaperture 0, pixels from the centre (3.5)
    (0.5, 0.5)
    """

    def __init__(self, corners, size, method: str = "cog", threshold: float = 0.0,
                 weights=None, n_bright: int = 8, reference=None, search: int = 2,
                 interpolation: str = "gaussian", reference_slopes=None) -> None:
        self.corners = np.ascontiguousarray(corners, dtype=np.int64).reshape(-1, 2)
        self.h, self.w = (int(size), int(size)) if np.isscalar(size) else map(int, size)
        n = self.n_subapertures = self.corners.shape[0]
        if method not in (*_METHODS, "correlation"):
            raise ValueError(f"unknown centroiding method {method!r}; "
                             f"use one of {sorted((*_METHODS, 'correlation'))}")
        self.method = method
        self.threshold = float(threshold)
        self.slopes = np.zeros(2 * n, dtype=np.float32)
        self.flux = np.zeros(n, dtype=np.float32)
        self.reference_slopes = np.zeros(2 * n, dtype=np.float32)
        if reference_slopes is not None:
            self.set_reference_slopes(reference_slopes)
        yy, xx = np.mgrid[: self.h, : self.w]
        yy = yy - (self.h - 1) / 2
        xx = xx - (self.w - 1) / 2
        if weights is None:
            sig = self.h / 2 / 2.3548
            weights = np.exp(-(xx**2 + yy**2) / (2 * sig**2))
        self.weights = self._stack(weights, "weights", np.float32)
        self._ones = np.ones((1, self.h, self.w), dtype=np.float32)
        if n_bright < 1:
            raise ValueError("n_bright must be at least 1")
        self.n_bright = int(n_bright)
        self.search = int(search)
        if interpolation not in ("gaussian", "parabolic"):
            raise ValueError("interpolation must be 'gaussian' or 'parabolic'")
        self.interpolation = interpolation
        self._interp = INTERP_GAUSSIAN if interpolation == "gaussian" else INTERP_PARABOLIC
        if reference is None:
            sig = 2.0 / 2.3548
            reference = np.exp(-(xx**2 + yy**2) / (2 * sig**2))
        self.reference = self._stack(reference, "reference")
        if method == "correlation":
            self._scratch = np.zeros((n, 2 * self.search + 1, 2 * self.search + 1))
        elif method == "brightest":
            self._scratch = np.zeros((n, self.n_bright + 1))
        else:
            self._scratch = np.zeros((n, 1))
        self._code = _METHODS.get(method, -1)

    def _stack(self, a, what: str, dtype=np.float64) -> np.ndarray:
        a = np.asarray(a, dtype=dtype)
        if a.shape == (self.h, self.w):
            a = a[None]
        if a.shape not in ((1, self.h, self.w), (self.n_subapertures, self.h, self.w)):
            raise ValueError(f"{what} must have shape {(self.h, self.w)} or "
                             f"{(self.n_subapertures, self.h, self.w)}, got {a.shape}")
        return np.ascontiguousarray(a)

    @classmethod
    def from_valid_mask(cls, valid, size, origin=(0, 0), **kw) -> ShackHartmann:
        """Centroider for a regular grid of ``size``-pixel windows; ``valid``: (ny, nx) bool."""
        return cls(subaperture_corners(valid, size, origin), size, **kw)

    def set_reference_slopes(self, slopes) -> None:
        """Set the reference slopes (length ``2 n``, pixels) subtracted from measurements."""
        s = np.asarray(slopes, dtype=np.float32).ravel()
        if s.shape != self.reference_slopes.shape:
            raise ValueError(f"reference slopes must have {self.reference_slopes.size} values")
        self.reference_slopes[:] = s

    def measure(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Slopes of one frame, written into ``out`` (default :attr:`slopes`) and returned.

        :attr:`flux` is updated too. Allocates nothing.
        """
        o = self.slopes if out is None else out
        if self._code >= 0:
            w = self.weights if self._code == WCOG else self._ones
            centre_of_gravity(frame, self.corners, self.h, self.w, self._code, self.threshold,
                     w, self._scratch, self.reference_slopes, o, self.flux)
        elif self._padded is not None:
            _correlate8(frame, self.corners, self._padded, self.search, self._interp,
                        self._scratch, self.reference_slopes, o, self.flux)
        else:
            correlate(frame, self.corners, self.reference, self.search, self._interp,
                      self._scratch, self.reference_slopes, o, self.flux)
        return o

    @property
    def reference(self) -> np.ndarray:
        """Correlation reference spot(s), float64, shape ``(1 or n, h, w)``.

        Assign a new one (or use :meth:`update_reference`) rather than writing into it: the
        kernel works from a zero-padded copy made on assignment.
        """
        return self._reference

    @reference.setter
    def reference(self, value) -> None:
        self._reference = self._stack(value, "reference")
        self._padded = (_pad_reference(self._reference, self.search)
                        if (self.h, self.w) == (8, 8) else None)

    __call__ = measure

    def update_reference(self, frame: np.ndarray, shared: bool = False) -> None:
        """Take the correlation reference spot(s) from a frame.

        Each subaperture's window becomes its own reference (``shared=False``) or the mean of
        all windows becomes the shared one; images are normalised to unit sum. Slopes measured
        afterwards are shifts relative to the spots of this frame.
        """
        stack = np.empty((self.n_subapertures, self.h, self.w))
        for k, (y0, x0) in enumerate(self.corners):
            stack[k] = frame[y0 : y0 + self.h, x0 : x0 + self.w]
        if shared:
            stack = stack.mean(axis=0, keepdims=True)
        s = stack.sum(axis=(1, 2), keepdims=True)
        self.reference = np.ascontiguousarray(stack / np.where(s > 0, s, 1.0))

    def calibrate_reference_slopes(self, frame: np.ndarray) -> np.ndarray:
        """Make the current frame the zero: reference slopes := slopes measured on ``frame``."""
        self.reference_slopes[:] = 0.0
        self.measure(frame)
        self.reference_slopes[:] = self.slopes
        return self.reference_slopes.copy()

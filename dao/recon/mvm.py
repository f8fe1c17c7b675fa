"""Dense matrix-vector multiply in float32, ``out = matrix @ vector``, split across threads by rows.

The kernel keeps eight rows in flight (each slope value loaded once feeds eight fused
multiply-adds) and lets LLVM vectorise each row's sum with several independent partial sums
(re-association is allowed on this reduction only). Matrices smaller than
:data:`PARALLEL_MIN_ELEMENTS` are done on the calling thread: waking the thread pool costs more
than it saves there. Results differ from a float64 product by float32 rounding of the partial
sums: a relative error of order ``1e-6 * sqrt(n_columns)`` of ``|matrix| @ |vector|``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import FASTMATH, jit, pjit

__all__ = ["PARALLEL_MIN_ELEMENTS", "mvm", "mvm_serial", "MatrixVectorMultiply"]

#: Matrices with fewer elements than this (256 KiB of float32) are multiplied on one thread.
PARALLEL_MIN_ELEMENTS = 1 << 16

_BLOCK = 8  # rows per block


@jit(fastmath=FASTMATH)
def _rows(matrix, vector, out, r0, r1):  # pragma: no cover - compiled
    m_view = matrix[r0:r1]
    o_view = out[r0:r1]
    m = m_view.shape[0]
    n = m_view.shape[1]
    i = 0
    while i + 8 <= m:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        a4 = np.float32(0.0)
        a5 = np.float32(0.0)
        a6 = np.float32(0.0)
        a7 = np.float32(0.0)
        for j in range(n):
            x = vector[j]
            a0 += m_view[i, j] * x
            a1 += m_view[i + 1, j] * x
            a2 += m_view[i + 2, j] * x
            a3 += m_view[i + 3, j] * x
            a4 += m_view[i + 4, j] * x
            a5 += m_view[i + 5, j] * x
            a6 += m_view[i + 6, j] * x
            a7 += m_view[i + 7, j] * x
        o_view[i] = a0
        o_view[i + 1] = a1
        o_view[i + 2] = a2
        o_view[i + 3] = a3
        o_view[i + 4] = a4
        o_view[i + 5] = a5
        o_view[i + 6] = a6
        o_view[i + 7] = a7
        i += 8
    while i < m:
        a = np.float32(0.0)
        for j in range(n):
            a += m_view[i, j] * vector[j]
        o_view[i] = a
        i += 1


@jit
def mvm_serial(matrix, vector, out):  # pragma: no cover - compiled
    """``out = matrix @ vector`` on the calling thread.

    Parameters
    ----------
    matrix : ndarray, float32, shape (m, n), C-contiguous
        E.g. a control matrix: actuators (or modes) by slopes.
    vector : ndarray, float32, shape (n,)
        E.g. slopes, in pixels.
    out : ndarray, float32, shape (m,)
        Written in place (units: those of ``matrix`` times those of ``vector``).

    Returns
    -------
    None
        The result is in ``out``; nothing is allocated.
    """
    _rows(matrix, vector, out, 0, matrix.shape[0])


@pjit
def _mvm_parallel(matrix, vector, out):  # pragma: no cover - compiled
    m = matrix.shape[0]
    n_blocks = (m + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        _rows(matrix, vector, out, b * _BLOCK, min(m, (b + 1) * _BLOCK))


@jit
def mvm(matrix, vector, out):  # pragma: no cover - compiled
    """``out = matrix @ vector`` in float32, split by rows over Numba's threads when large.

    Parameters
    ----------
    matrix : ndarray, float32, shape (m, n), C-contiguous
        E.g. a control matrix (actuators by slopes, actuator units per pixel).
    vector : ndarray, float32, shape (n,)
        E.g. the slopes of one frame, in pixels.
    out : ndarray, float32, shape (m,)
        Preallocated output, written in place.

    Returns
    -------
    None
        The result is in ``out``; nothing is allocated, the GIL is not held.

    Notes
    -----
    Matrices of fewer than :data:`PARALLEL_MIN_ELEMENTS` elements run on the calling thread.
    Larger ones are cut into groups of 8 rows shared evenly (contiguously) between Numba's
    threads (``numba.set_num_threads`` sets how many).
    """
    if matrix.size < PARALLEL_MIN_ELEMENTS:
        _rows(matrix, vector, out, 0, matrix.shape[0])
    else:
        _mvm_parallel(matrix, vector, out)


class MatrixVectorMultiply:
    """A matrix held as C-contiguous float32 with its preallocated output.

    Parameters
    ----------
    matrix : array_like, shape (m, n)
        Converted once to C-contiguous float32.

    Examples
    --------
    >>> import numpy as np
    >>> r = MatrixVectorMultiply(np.eye(3))
    >>> r(np.ones(3, np.float32)).tolist()
    [1.0, 1.0, 1.0]
    """

    def __init__(self, matrix) -> None:
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if self.matrix.ndim != 2:
            raise ValueError(f"matrix must be 2-D, got shape {self.matrix.shape}")
        self.out = np.zeros(self.matrix.shape[0], dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the matrix."""
        return self.matrix.shape

    def __call__(self, vector: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return ``matrix @ vector`` written into ``out`` (default: the held output array)."""
        o = self.out if out is None else out
        mvm(self.matrix, vector, o)
        return o

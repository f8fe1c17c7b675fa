"""Calibration: interaction matrix by poking, control matrix by SVD or Tikhonov.

The interaction matrix ``D`` (slopes by actuators) is measured through a user function
``measure(command) -> slopes`` that applies a command to the deformable mirror and returns the
averaged slopes. Push-pull: ``column = (measure(+a p) - measure(-a p)) / (2 a)``, which cancels
the static aberration and the even (quadratic) part of the sensor's response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "hadamard",
    "measure_interaction_matrix",
    "ControlMatrix",
    "control_matrix_svd",
    "control_matrix_tikhonov",
]


def hadamard(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix of order ``n`` (a power of 2), entries +-1, ``H H.T = n I``."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard order must be a power of 2, got {n}")
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def measure_interaction_matrix(
    measure: Callable[[np.ndarray], np.ndarray],
    n_actuators: int,
    amplitude: float,
    pattern: str = "hadamard",
    push_pull: bool = True,
    modes: np.ndarray | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Measure an interaction matrix by poking patterns and decoding them per actuator.

    Parameters
    ----------
    measure : callable
        ``measure(command) -> slopes``: applies ``command`` (float32, shape
        ``(n_actuators,)``) and returns the resulting slopes (any shape, flattened).
    n_actuators : int
        Length of the command vector.
    amplitude : float
        Poke amplitude, command units (each actuator moves by +-amplitude).
    pattern : str
        ``"hadamard"`` (all actuators move in every poke, for ``2^k >= n`` pokes: better
        signal-to-noise per poke) or ``"identity"`` (one actuator at a time).
    push_pull : bool
        Poke ``+a`` and ``-a`` and difference (True) or ``+a`` against the unpoked slopes.
    modes : ndarray, shape (n_actuators, n_modes), optional
        Poke these command vectors instead (a modal interaction matrix: columns per mode);
        ``pattern`` is then ignored.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ndarray, float64, shape (n_slopes, n_actuators or n_modes)
        Slopes per unit command (or per unit mode coefficient).
    """
    if modes is not None:
        pokes = np.asarray(modes, dtype=np.float64)
        decode = None
    elif pattern == "identity":
        pokes = np.eye(n_actuators)
        decode = None
    elif pattern == "hadamard":
        size = 1 << max(0, (n_actuators - 1).bit_length())
        h = hadamard(size)[:n_actuators]  # rows stay orthogonal: h @ h.T = size I
        pokes = h
        decode = h.T / size
    else:
        raise ValueError("pattern must be 'hadamard' or 'identity'")
    n_pokes = pokes.shape[1]
    amplitude = float(np.float32(amplitude))  # the amplitude actually sent, in float32
    rng = range(n_pokes)
    if progress:
        from tqdm.auto import tqdm

        rng = tqdm(rng, desc="interaction matrix", unit="poke")
    zero = None
    if not push_pull:
        zero = np.asarray(measure(np.zeros(n_actuators, dtype=np.float32)),
                          dtype=np.float64).ravel()
    columns = None
    for i in rng:
        cmd = (amplitude * pokes[:, i]).astype(np.float32)
        plus = np.asarray(measure(cmd), dtype=np.float64).ravel()
        if push_pull:
            minus = np.asarray(measure(-cmd), dtype=np.float64).ravel()
            col = (plus - minus) / (2.0 * amplitude)
        else:
            col = (plus - zero) / amplitude
        if columns is None:
            columns = np.empty((col.size, n_pokes))
        columns[:, i] = col
    measure(np.zeros(n_actuators, dtype=np.float32))  # leave the mirror flat
    return columns if decode is None else columns @ decode


@dataclass
class ControlMatrix:
    """A control matrix with what its inversion kept and dropped.

    Attributes
    ----------
    matrix : ndarray, float32, shape (n_act, n_slopes)
        Reconstructor ``R`` (command per slope).
    singular_values : ndarray, float64
        All singular values of the interaction matrix, descending.
    n_modes : int
        Modes kept (SVD) or, for Tikhonov, modes with a filter factor above 0.5.
    condition_number : float
        Largest over smallest singular value kept (SVD), or the effective one with the
        regularisation (``s_max / sqrt(s_min**2 + alpha**2)``) for Tikhonov.
    """

    matrix: np.ndarray
    singular_values: np.ndarray
    n_modes: int
    condition_number: float


def control_matrix_svd(interaction: np.ndarray, n_modes: int | None = None,
                       rcond: float | None = None) -> ControlMatrix:
    """Truncated-SVD pseudo-inverse of an interaction matrix.

    Parameters
    ----------
    interaction : ndarray, shape (n_slopes, n_act)
        ``D``.
    n_modes : int, optional
        Keep this many largest singular values (drop the rest).
    rcond : float, optional
        Or keep those above ``rcond * s_max``; default: all non-zero (``1e-10``).
    """
    u, s, vt = np.linalg.svd(np.asarray(interaction, dtype=np.float64), full_matrices=False)
    if n_modes is None:
        n_modes = int(np.sum(s > (1e-10 if rcond is None else rcond) * s[0]))
    n_modes = int(min(max(n_modes, 1), s.size))
    inv = vt[:n_modes].T @ (u[:, :n_modes].T / s[:n_modes, None])
    return ControlMatrix(inv.astype(np.float32), s, n_modes, float(s[0] / s[n_modes - 1]))


def control_matrix_tikhonov(interaction: np.ndarray, alpha: float) -> ControlMatrix:
    """Tikhonov-regularised inverse ``(D^T D + alpha^2 I)^-1 D^T``.

    Parameters
    ----------
    interaction : ndarray, shape (n_slopes, n_act)
        ``D``.
    alpha : float
        Regularisation, in singular-value units (slopes per command unit): modes with
        singular values well below ``alpha`` are damped.
    """
    u, s, vt = np.linalg.svd(np.asarray(interaction, dtype=np.float64), full_matrices=False)
    filt = s / (s**2 + alpha**2)
    inv = vt.T @ (u.T * filt[:, None])
    kept = int(np.sum(s**2 / (s**2 + alpha**2) > 0.5))
    cond = float(s[0] / np.sqrt(s[-1] ** 2 + alpha**2))
    return ControlMatrix(inv.astype(np.float32), s, kept, cond)

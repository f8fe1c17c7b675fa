"""Simulated deformable mirror: a square actuator grid with Gaussian influence functions.

The actuators sit on an ``(n + 1) x (n + 1)`` grid at the corners of the ``n x n``
subapertures (Fried geometry), pitch ``d = D / n``. An actuator's influence function is the
Gaussian ``exp(-r^2 / (2 sigma^2))`` whose value at the neighbouring actuators is ``coupling``,
i.e. ``sigma^2 = d^2 / (-2 ln coupling)``. A Gaussian is separable, so the OPD of a command is
``G_y C G_x^T`` with ``C`` the command on the full grid: ``O(n_pix^2 n_act_across)``, a few
tens of microseconds for a 20x20 system.

Units: commands are optical path difference (OPD) in metres, i.e. the wavefront change
produced by a unit command is one metre (the factor 2 of the reflection is included in the
command); ``stroke`` is the largest absolute command, metres of OPD.
"""

from __future__ import annotations

import math

import numpy as np

from ._checks import checked_int, checked_number
from .interfaces import DeformableMirror

__all__ = ["fried_valid_actuators", "SimulatedDeformableMirror"]


def fried_valid_actuators(valid_subapertures: np.ndarray) -> np.ndarray:
    """Actuators of an ``(n+1) x (n+1)`` Fried grid that are corners of a valid subaperture.

    Parameters
    ----------
    valid_subapertures : ndarray, bool, shape (n, n)

    Returns
    -------
    ndarray, bool, shape (n + 1, n + 1)
    """
    v = np.asarray(valid_subapertures, dtype=bool)
    a = np.zeros((v.shape[0] + 1, v.shape[1] + 1), dtype=bool)
    a[:-1, :-1] |= v
    a[1:, :-1] |= v
    a[:-1, 1:] |= v
    a[1:, 1:] |= v
    return a


class SimulatedDeformableMirror(DeformableMirror):
    """Continuous-facesheet DM with Gaussian influence functions on a Fried grid.

    Parameters
    ----------
    n_subapertures : int
        Subapertures across the pupil; the grid has ``n + 1`` actuators across.
    diameter : float
        Pupil diameter, metres (the grid spans it: pitch ``diameter / n``).
    n_pixels : int
        Pupil grid size of the OPD map, pixels (pixel ``diameter / n_pixels``).
    coupling : float
        Influence of an actuator at its neighbours' positions (0..1), dimensionless.
    stroke : float
        Largest absolute command, metres of OPD.
    valid : ndarray, bool, shape (n + 1, n + 1), optional
        Actuators driven (default: every one on the grid). :func:`fried_valid_actuators`
        gives those that a Shack-Hartmann sensor sees.

    Raises
    ------
    ValueError
        An argument out of range (named in the message): ``n_subapertures`` or ``n_pixels``
        not an integer >= 1, ``diameter`` or ``stroke`` not > 0, ``coupling`` not in
        ``(0, 1)``.

    Attributes
    ----------
    command : ndarray, float32, shape (n_actuators,)
        The last command applied (after clipping), metres of OPD.
    positions : ndarray, shape (n_actuators, 2)
        Actuator ``(y, x)`` in the pupil, metres from the centre.
    """

    def __init__(self, n_subapertures: int, diameter: float, n_pixels: int,
                 coupling: float = 0.3, stroke: float = 10e-6,
                 valid: np.ndarray | None = None) -> None:
        n_sub = checked_int("n_subapertures", n_subapertures)
        n_across = n_sub + 1
        self.n_across = n_across
        self.diameter = checked_number("diameter", diameter, gt=0, unit="m")
        self.n_pixels = checked_int("n_pixels", n_pixels)
        self.coupling = checked_number("coupling", coupling, gt=0, lt=1,
                                       unit="influence at the neighbouring actuators")
        self.pitch = self.diameter / n_sub
        self._stroke = checked_number("stroke", stroke, gt=0, unit="m of OPD")
        if valid is None:
            valid = np.ones((n_across, n_across), dtype=bool)
        self.valid = np.asarray(valid, dtype=bool)
        if self.valid.shape != (n_across, n_across):
            raise ValueError(f"valid must have shape {(n_across, n_across)}")
        self._index = np.flatnonzero(self.valid)
        a = (np.arange(n_across) - (n_across - 1) / 2) * self.pitch
        ay, ax = np.meshgrid(a, a, indexing="ij")
        self.positions = np.stack([ay.ravel()[self._index], ax.ravel()[self._index]], axis=1)
        px = (np.arange(self.n_pixels) + 0.5) * self.diameter / self.n_pixels - self.diameter / 2
        sig2 = self.pitch**2 / (-2.0 * math.log(self.coupling))
        # separable influence: g[p, k] = exp(-(x_p - a_k)^2 / (2 sigma^2))
        self._g = np.exp(-((px[:, None] - a[None, :]) ** 2) / (2.0 * sig2))
        self._gt = np.ascontiguousarray(self._g.T)
        self._grid = np.zeros((n_across, n_across))
        self.command = np.zeros(self.n_actuators, dtype=np.float32)
        self._opd = np.zeros((self.n_pixels, self.n_pixels))

    @property
    def n_actuators(self) -> int:
        """Number of driven actuators."""
        return int(self._index.size)

    @property
    def stroke(self) -> tuple[float, float]:
        """Command limits ``(low, high)``, metres of OPD."""
        return (-self._stroke, self._stroke)

    def set_command(self, command: np.ndarray) -> None:
        """Apply a command (shape (n_actuators,), metres of OPD), clipped to the stroke."""
        c = np.asarray(command, dtype=np.float32).ravel()
        if c.size != self.n_actuators:
            raise ValueError(f"command must have {self.n_actuators} values, got {c.size}")
        np.clip(c, -self._stroke, self._stroke, out=self.command)
        self._grid.ravel()[self._index] = self.command
        np.matmul(self._g @ self._grid, self._gt, out=self._opd)

    def opd(self) -> np.ndarray:
        """OPD of the mirror for the current command, metres, shape (n_pixels, n_pixels).

        The array is the mirror's own buffer: copy it to keep it.
        """
        return self._opd

    def influence_functions(self) -> np.ndarray:
        """OPD of each actuator for a unit command, shape (n_actuators, n_pixels, n_pixels)."""
        iy, ix = np.unravel_index(self._index, self.valid.shape)
        return self._g[:, iy].T[:, :, None] * self._g[:, ix].T[:, None, :]

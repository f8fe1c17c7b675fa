"""Modal bases (Zernike, Karhunen-Loeve, DM modes) and modal reconstruction.

Pupil grids: ``pupil_grid(n)`` samples an ``n`` by ``n`` square at pixel centres over
``[-1, 1]``; phase maps are flattened over the pupil's valid pixels (``mask``).
"""

from __future__ import annotations

import math

import numpy as np

from .mvm import mvm

__all__ = [
    "noll_to_nm",
    "pupil_grid",
    "zernike",
    "von_karman_covariance",
    "karhunen_loeve",
    "gaussian_influence_functions",
    "dm_modes",
    "ModalReconstructor",
]


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order ``n`` and signed azimuthal order ``m`` of Noll index ``j`` (j >= 1)."""
    if j < 1:
        raise ValueError("Noll indices start at 1")
    n = int((math.sqrt(8 * j - 7) - 1) // 2)
    p = j - n * (n + 1) // 2  # 1-based position in the order
    m = n % 2 + 2 * ((p - 1 + (n + 1) % 2) // 2)
    return n, (m if j % 2 == 0 else -m) if m else 0


def pupil_grid(n: int, obscuration: float = 0.0):
    """Normalised radius, angle and pupil mask of an ``n`` by ``n`` grid.

    Returns
    -------
    r, theta : ndarray, shape (n, n)
        Radius (1 at the pupil edge) and angle (radians) at pixel centres.
    mask : ndarray, bool, shape (n, n)
        ``obscuration <= r <= 1``.
    """
    c = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(x, y)
    return r, np.arctan2(y, x), (r <= 1.0) & (r >= obscuration)


def zernike(n_modes: int, npix: int, obscuration: float = 0.0, first: int = 1) -> np.ndarray:
    """Zernike polynomials (Noll indexing, Noll normalisation) on a circular pupil.

    Parameters
    ----------
    n_modes : int
        Number of modes, Noll indices ``first .. first + n_modes - 1`` (``first=2`` drops
        piston).
    npix : int
        Pupil grid size, pixels across.
    obscuration : float
        Central obscuration (fraction of the diameter); the polynomials are those of the full
        disc sampled on the annulus (not re-orthogonalised).

    Returns
    -------
    ndarray, float64, shape (n_modes, npix, npix)
        Zero outside the pupil; unit RMS over the full disc (radians RMS per unit coefficient).
    """
    r, th, mask = pupil_grid(npix, obscuration)
    out = np.zeros((n_modes, npix, npix))
    for k in range(n_modes):
        n, m = noll_to_nm(first + k)
        am = abs(m)
        rad = np.zeros_like(r)
        for s in range((n - am) // 2 + 1):
            c = ((-1) ** s * math.factorial(n - s)
                 / (math.factorial(s) * math.factorial((n + am) // 2 - s)
                    * math.factorial((n - am) // 2 - s)))
            rad += c * r ** (n - 2 * s)
        if m == 0:
            z = math.sqrt(n + 1) * rad
        elif m > 0:
            z = math.sqrt(2 * (n + 1)) * rad * np.cos(am * th)
        else:
            z = math.sqrt(2 * (n + 1)) * rad * np.sin(am * th)
        out[k] = np.where(mask, z, 0.0)
    return out


_VK_C = (math.gamma(11 / 6) / (2 ** (5 / 6) * math.pi ** (8 / 3))
         * (24 / 5 * math.gamma(6 / 5)) ** (5 / 6))


def _u56_k56(u: np.ndarray) -> np.ndarray:
    """``u^(5/6) K_{5/6}(u)`` for ``u >= 0`` (integral form, tabulated and interpolated)."""
    nu = 5 / 6
    u = np.asarray(u, dtype=np.float64)
    out = np.full(u.shape, 2 ** (nu - 1) * math.gamma(nu))  # the limit at u = 0
    pos = u > 0
    if not np.any(pos):
        return out
    lo, hi = np.log(u[pos].min()), np.log(u[pos].max())
    grid = np.exp(np.linspace(lo, hi + 1e-12, 600)) if hi > lo else np.array([np.exp(lo)])
    # K_nu(x) = int_0^inf exp(-x cosh t) cosh(nu t) dt, trapezoid on t up to x cosh t ~ 700
    vals = np.empty(grid.size)
    for i, x in enumerate(grid):
        tmax = math.acosh(max(700.0 / x, 1.0)) + 1.0
        t = np.linspace(0.0, tmax, 4001)
        f = np.exp(-x * np.cosh(t)) * np.cosh(nu * t)
        vals[i] = (t[1] - t[0]) * (f.sum() - 0.5 * (f[0] + f[-1])) * x**nu
    out[pos] = np.interp(np.log(u[pos]), np.log(grid), vals) if grid.size > 1 else vals[0]
    return out


def von_karman_covariance(distance: np.ndarray, r0: float, L0: float) -> np.ndarray:
    """Phase covariance of von Karman turbulence, rad^2 at the wavelength of ``r0``.

    ``B(r) = C (L0/r0)^(5/3) u^(5/6) K_{5/6}(u)``, ``u = 2 pi r / L0``, with
    ``C = Gamma(11/6) / (2^(5/6) pi^(8/3)) (24/5 Gamma(6/5))^(5/6)``; ``B(0)`` is the
    phase variance ``0.0863 (L0/r0)^(5/3)``, and ``2 (B(0) - B(r)) -> 6.88 (r/r0)^(5/3)`` for
    ``r << L0``.

    Parameters
    ----------
    distance : ndarray
        Separations, metres.
    r0, L0 : float
        Fried parameter and outer scale, metres.
    """
    u = 2.0 * math.pi * np.asarray(distance, dtype=np.float64) / L0
    return _VK_C * (L0 / r0) ** (5 / 3) * _u56_k56(u)


def karhunen_loeve(basis: np.ndarray, coords: np.ndarray, r0: float, L0: float,
                   n_modes: int | None = None, remove_piston: bool = True):
    """Karhunen-Loeve modes of von Karman turbulence in the span of a basis.

    The phase covariance on the sample points is projected on the basis and diagonalised
    with the basis' geometric covariance (double diagonalisation), so the modes are
    orthonormal over the pupil and statistically independent.

    Parameters
    ----------
    basis : ndarray, shape (n_points, n_basis)
        Basis functions sampled on the pupil points (e.g. DM influence functions, or the
        identity for the pupil pixels themselves).
    coords : ndarray, shape (n_points, 2)
        ``(y, x)`` of the points, metres.
    r0, L0 : float
        Fried parameter and outer scale, metres.
    n_modes : int, optional
        Modes returned (default: all, ``n_basis`` minus one if piston is removed).
    remove_piston : bool
        Take piston out of the covariance (it is then the last, zero-variance mode, dropped).

    Returns
    -------
    modes : ndarray, shape (n_points, n_modes)
        Mode shapes on the points, unit RMS (``modes.T @ modes / n_points = I``).
    coefficients : ndarray, shape (n_basis, n_modes)
        The modes in the basis: ``modes = basis @ coefficients`` (for a DM: commands).
    variances : ndarray, shape (n_modes,)
        Turbulent variance of each mode's coefficient, rad^2, descending.
    """
    b = np.asarray(basis, dtype=np.float64)
    npts = b.shape[0]
    d = np.hypot(*(coords[:, None, :] - coords[None, :, :]).transpose(2, 0, 1))
    cov = von_karman_covariance(d, r0, L0)
    if remove_piston:
        cov = cov - cov.mean(axis=0, keepdims=True)
        cov = cov - cov.mean(axis=1, keepdims=True)
    g = b.T @ b / npts  # geometric covariance of the basis
    w, v = np.linalg.eigh(g)
    keep = w > w.max() * 1e-10
    g_isqrt = v[:, keep] / np.sqrt(w[keep])  # G^(-1/2) on the basis' range
    # covariance of the coefficients a (phase = b a, a = G^-1 b^T phi / npts)
    proj = b @ g_isqrt / npts  # n_points x k
    c = proj.T @ cov @ proj
    lam, u = np.linalg.eigh(c)
    order = np.argsort(lam)[::-1]
    lam, u = lam[order], u[:, order]
    if n_modes is None:
        n_modes = lam.size - (1 if remove_piston else 0)
    coef = g_isqrt @ u[:, :n_modes]
    return b @ coef, coef, np.maximum(lam[:n_modes], 0.0)


def gaussian_influence_functions(n_across: int, npix: int, coupling: float = 0.3,
                                 obscuration: float = 0.0, margin: float = 0.5):
    """Gaussian influence functions of a square-grid DM over a circular pupil.

    Parameters
    ----------
    n_across : int
        Actuators across the pupil diameter (pitch ``2 / (n_across - 1)`` in pupil radii).
    npix : int
        Pupil grid size, pixels.
    coupling : float
        Influence of an actuator at its neighbours' positions (0..1).
    margin : float
        Actuators within ``1 + margin * pitch`` of the centre are kept.

    Returns
    -------
    influence : ndarray, shape (n_pupil_pixels, n_act)
        Surface per unit command on the valid pupil pixels.
    mask : ndarray, bool, shape (npix, npix)
        The pupil.
    positions : ndarray, shape (n_act, 2)
        Actuator ``(y, x)``, pupil radii.
    """
    r, _, mask = pupil_grid(npix, obscuration)
    c = (np.arange(npix) + 0.5) / npix * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    pitch = 2.0 / (n_across - 1)
    a = np.linspace(-1.0, 1.0, n_across)
    ay, ax = np.meshgrid(a, a, indexing="ij")
    keep = np.hypot(ay, ax) <= 1.0 + margin * pitch
    pos = np.stack([ay[keep], ax[keep]], axis=1)
    sig2 = pitch**2 / (-2.0 * math.log(coupling))
    py, px = yy[mask], xx[mask]
    infl = np.exp(-((py[:, None] - pos[None, :, 0]) ** 2
                    + (px[:, None] - pos[None, :, 1]) ** 2) / (2.0 * sig2))
    return infl, mask, pos


def dm_modes(influence: np.ndarray, n_modes: int | None = None, remove_piston: bool = True):
    """Modes of a deformable mirror: the SVD of its influence matrix.

    Parameters
    ----------
    influence : ndarray, shape (n_points, n_act)
        Surface per unit command on the pupil points.
    n_modes : int, optional
        Modes kept (largest singular values first).
    remove_piston : bool
        Project piston out of the influence functions first.

    Returns
    -------
    modes : ndarray, shape (n_points, n_modes)
        Orthonormal on the pupil, unit RMS (``modes.T @ modes / n_points = I``).
    commands : ndarray, shape (n_act, n_modes)
        Command vectors making each mode: ``influence @ commands = modes`` (up to a piston
        when ``remove_piston``).
    singular_values : ndarray
        Of the (piston-free) influence matrix, all of them.
    """
    f = np.asarray(influence, dtype=np.float64)
    npts = f.shape[0]
    if remove_piston:
        f = f - f.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    nz = int(np.sum(s > s[0] * 1e-10))
    n = nz if n_modes is None else min(n_modes, nz)
    scale = math.sqrt(npts)
    modes = u[:, :n] * scale
    commands = vt[:n].T / s[:n] * scale
    return modes, commands, s


class ModalReconstructor:
    """Slopes to modes to actuator commands, with modal gains applied in between.

    ``modes = S2M @ slopes``, ``modes *= gains``, ``commands = M2C @ modes``.

    Parameters
    ----------
    slopes_to_modes : array_like, shape (n_modes, n_slopes)
    modes_to_commands : array_like, shape (n_act, n_modes)
    gains : float or array_like (n_modes,)
    """

    def __init__(self, slopes_to_modes, modes_to_commands, gains=1.0) -> None:
        self.s2m = np.ascontiguousarray(slopes_to_modes, dtype=np.float32)
        self.m2c = np.ascontiguousarray(modes_to_commands, dtype=np.float32)
        nm = self.s2m.shape[0]
        if self.m2c.shape[1] != nm:
            raise ValueError(f"modes_to_commands must have {nm} columns")
        g = np.asarray(gains, dtype=np.float32)
        self.gains = np.full(nm, g, dtype=np.float32) if g.ndim == 0 else g.copy()
        self.modes = np.zeros(nm, dtype=np.float32)
        self.commands = np.zeros(self.m2c.shape[0], dtype=np.float32)

    def __call__(self, slopes: np.ndarray) -> np.ndarray:
        """Commands for ``slopes`` (written into :attr:`commands`); modes in :attr:`modes`."""
        mvm(self.s2m, slopes, self.modes)
        np.multiply(self.modes, self.gains, out=self.modes)
        mvm(self.m2c, self.modes, self.commands)
        return self.commands

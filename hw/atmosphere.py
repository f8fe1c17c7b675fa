"""Von Karman turbulence: infinitely extending frozen-flow phase screens.

Each layer is a square phase screen slightly larger than the pupil. It is first drawn by FFT
(with Lane et al. 1992 subharmonics for the low orders) on a grid at least twice larger, then
regenerated row by row by the autoregressive method below (a burn-in that restores the power
an FFT screen lacks at the pixel scale). It then flows with its wind: whenever the
accumulated shift passes one pixel, a new row or column is drawn on the upwind side by the
autoregressive method of Assemat, Wilson & Gendron (2006, Opt. Express 14, 988), conditioned
on a stencil of the existing screen, and the downwind one is dropped. The screen therefore
never repeats and has no seam. Sub-pixel shifts are bilinear interpolations of the screen.

Units: lengths in metres, speeds in m/s, angles in radians; ``r0`` is given at 500 nm and a
screen is stored as optical path difference (OPD, metres), which is achromatic; its phase at a
wavelength ``lambda`` is ``2 pi OPD / lambda``.

Statistics. Phase structure function at the wavelength of ``r0``:

* Kolmogorov: ``D(r) = 6.88 (r / r0)^(5/3)``;
* von Karman: ``D(r) = 2 (B(0) - B(r))`` with the covariance
  ``B(r) = C (L0/r0)^(5/3) u^(5/6) K_{5/6}(u)``, ``u = 2 pi r / L0`` (see
  :func:`dao.recon.von_karman_covariance`), which tends to the Kolmogorov law for ``r << L0``.

Several layers add their OPD; layer ``i`` gets the fraction ``w_i`` of the integrated
``Cn2``, so its Fried parameter is ``r0 w_i^(-3/5)``.

Time is simulated: :meth:`Atmosphere.advance` moves every layer by ``v dt``, independently of
the wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from dao.recon import von_karman_covariance

from ._checks import checked_int, checked_number

__all__ = [
    "R0_WAVELENGTH",
    "kolmogorov_structure_function",
    "von_karman_structure_function",
    "von_karman_psd",
    "fft_phase_screen",
    "ARExtender",
    "InfinitePhaseScreen",
    "Atmosphere",
]

#: Wavelength at which ``r0`` is given, metres.
R0_WAVELENGTH = 500e-9


def kolmogorov_structure_function(r, r0: float) -> np.ndarray:
    """Kolmogorov phase structure function ``6.88 (r / r0)^(5/3)``, rad^2 at ``r0``'s wavelength.

    Parameters
    ----------
    r : array_like
        Separations, metres.
    r0 : float
        Fried parameter, metres.
    """
    return 6.883877 * (np.asarray(r, dtype=np.float64) / r0) ** (5 / 3)


def von_karman_structure_function(r, r0: float, L0: float) -> np.ndarray:  # noqa: N803
    """Exact von Karman phase structure function ``2 (B(0) - B(r))``, rad^2.

    ``B`` is :func:`dao.recon.von_karman_covariance`, which evaluates ``K_{5/6}`` by
    numerical integration of ``K_nu(x) = int_0^inf exp(-x cosh t) cosh(nu t) dt``.

    Parameters
    ----------
    r : array_like
        Separations, metres.
    r0, L0 : float
        Fried parameter and outer scale, metres.
    """
    r = np.asarray(r, dtype=np.float64)
    b = von_karman_covariance(np.concatenate([[0.0], r.ravel()]), r0, L0)
    return (2.0 * (b[0] - b[1:])).reshape(r.shape)


def von_karman_psd(f, r0: float, L0: float) -> np.ndarray:  # noqa: N803
    """Von Karman phase power spectral density, rad^2 m^2.

    ``W(f) = 0.0229 r0^(-5/3) (f^2 + 1/L0^2)^(-11/6)``, ``f`` in cycles per metre.
    """
    f = np.asarray(f, dtype=np.float64)
    return 0.022896 * r0 ** (-5 / 3) * (f**2 + 1.0 / L0**2) ** (-11 / 6)


def fft_phase_screen(n: int, pixel_scale: float, r0: float, L0: float,  # noqa: N803
                     rng: np.random.Generator, subharmonics: bool = True,
                     crop: int | None = None) -> np.ndarray:
    """One periodic von Karman phase screen drawn by FFT, radians at ``r0``'s wavelength.

    Parameters
    ----------
    n : int
        Screen size, pixels.
    pixel_scale : float
        Pixel size, metres.
    r0, L0 : float
        Fried parameter and outer scale, metres.
    rng : numpy.random.Generator
        Random source.
    subharmonics : bool
        Add three levels of Lane et al. subharmonics for the scales larger than the screen.
    crop : int, optional
        Return only the top-left ``crop x crop`` corner (the subharmonics are then computed
        on that corner only, which is much faster).

    Returns
    -------
    ndarray, float64, shape (n, n) or (crop, crop)
    """
    size = n * pixel_scale
    df = 1.0 / size
    f = np.fft.fftfreq(n, pixel_scale)
    fr = np.hypot(f[:, None], f[None, :])
    amp = np.sqrt(von_karman_psd(fr, r0, L0)) * df
    amp[0, 0] = 0.0
    c = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) * amp
    k = n if crop is None else int(crop)
    screen = np.fft.fft2(c).real[:k, :k].copy()  # real part of a complex field: right variance
    if subharmonics:
        y = (np.arange(k) - n / 2) * pixel_scale
        low = np.zeros((k, k))
        for p in range(1, 4):
            dfp = df / 3**p
            for i in (-1, 0, 1):
                ey = np.exp(2j * np.pi * i * dfp * y)
                for j in (-1, 0, 1):
                    if i == 0 and j == 0:
                        continue
                    a = math.sqrt(von_karman_psd(math.hypot(i * dfp, j * dfp), r0, L0)) * dfp
                    cc = (rng.standard_normal() + 1j * rng.standard_normal()) * a
                    ex = np.exp(2j * np.pi * j * dfp * y)
                    low += (cc * ey[:, None] * ex[None, :]).real
        screen += low - low.mean()
    return screen


class ARExtender:
    """Autoregressive generator of the next row of a phase screen (Assemat et al. 2006).

    The new row ``x`` (``n`` pixels, one pixel before row 0 of the screen) is drawn as
    ``x = A z + B w`` where ``z`` holds the screen's values on a stencil (the first two rows in
    full, then farther rows, sampled more sparsely the farther they are) and ``w`` is white
    Gaussian noise; ``A = C_xz C_zz^-1`` and ``B B^T = C_xx - A C_zx`` from the von Karman
    covariance, so ``(x, z)`` has exactly the von Karman joint statistics.

    The matrices are computed for ``r0 = 1`` (radians at ``r0``'s wavelength); scale the result
    by ``r0^(-5/6)``.

    Parameters
    ----------
    n : int
        Screen width (pixels along the new row).
    pixel_scale : float
        Pixel size, metres.
    L0 : float
        Outer scale, metres.
    n_full_rows : int
        Rows next to the new one taken in full in the stencil.

    Raises
    ------
    ValueError
        ``n`` or ``n_full_rows`` not an integer >= 1, ``pixel_scale`` or ``L0`` not > 0.
    """

    def __init__(self, n: int, pixel_scale: float, L0: float,  # noqa: N803
                 n_full_rows: int = 2) -> None:
        self.n = checked_int("n", n)
        checked_number("pixel_scale", pixel_scale, gt=0, unit="m")
        checked_number("L0", L0, gt=0, unit="outer scale, m")
        n_full_rows = checked_int("n_full_rows", n_full_rows)
        rows, cols = [], []
        for d in range(n_full_rows):
            rows.append(np.full(n, d))
            cols.append(np.arange(n))
        d = 2 * n_full_rows
        while d < n:
            step = max(1, d // 2)
            c = np.unique(np.r_[np.arange(0, n, step), n - 1])
            rows.append(np.full(c.size, d - 1))
            cols.append(c)
            d *= 2
        self.stencil_rows = np.concatenate(rows).astype(np.int64)
        self.stencil_cols = np.concatenate(cols).astype(np.int64)
        # coordinates in metres: new row at y = -1, stencil at y = row
        ny = np.r_[np.full(n, -1.0), self.stencil_rows.astype(float)]
        nx = np.r_[np.arange(n, dtype=float), self.stencil_cols.astype(float)]
        pos = np.stack([ny, nx], axis=1) * pixel_scale
        dist = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
        cov = von_karman_covariance(dist, 1.0, L0)
        cxx, cxz = cov[:n, :n], cov[:n, n:]
        czz = cov[n:, n:]
        jitter = 1e-9 * cov[0, 0]
        czz = czz + jitter * np.eye(czz.shape[0])
        self.A = np.linalg.solve(czz, cxz.T).T
        bbt = cxx - self.A @ cxz.T
        w, v = np.linalg.eigh(0.5 * (bbt + bbt.T))
        self.B = v * np.sqrt(np.clip(w, 0.0, None))

    def next_row(self, screen: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        """New row to put before ``screen[0]``, in the screen's units.

        Parameters
        ----------
        screen : ndarray, shape (m, n)
            Current screen (row 0 is next to the new row).
        rng : numpy.random.Generator
            Random source.
        scale : float
            Amplitude of the innovation for the screen's units (``r0^(-5/6)`` times the
            conversion from radians at ``r0``'s wavelength).
        """
        z = screen[self.stencil_rows, self.stencil_cols]
        return self.A @ z + scale * (self.B @ rng.standard_normal(self.n))


@njit(cache=True, nogil=True)
def _add_shifted(screen, oy, ox, margin, weight, out):  # pragma: no cover - compiled
    """``out += weight * screen`` sampled at ``(margin + i - oy, margin + j - ox)``, bilinear."""
    ny, nx = out.shape
    fy = math.floor(-oy)
    fx = math.floor(-ox)
    ty = -oy - fy
    tx = -ox - fx
    w00 = weight * (1.0 - ty) * (1.0 - tx)
    w01 = weight * (1.0 - ty) * tx
    w10 = weight * ty * (1.0 - tx)
    w11 = weight * ty * tx
    for i in range(ny):
        y = margin + i + fy
        for j in range(nx):
            x = margin + j + fx
            out[i, j] += (w00 * screen[y, x] + w01 * screen[y, x + 1]
                          + w10 * screen[y + 1, x] + w11 * screen[y + 1, x + 1])


class InfinitePhaseScreen:
    """One frozen-flow turbulent layer that extends forever in any wind direction.

    Parameters
    ----------
    n : int
        Size of the window seen through the pupil, pixels.
    pixel_scale : float
        Pixel size, metres.
    r0 : float
        Fried parameter of this layer at 500 nm, metres.
    L0 : float
        Outer scale, metres.
    velocity : (float, float)
        Wind ``(vy, vx)``, m/s (``y`` along rows, ``x`` along columns).
    rng : numpy.random.Generator
        Random source (the layer keeps it).
    extender : ARExtender, optional
        Shared row generator (layers with the same ``n``, ``pixel_scale`` and ``L0`` may share
        one: it is computed for ``r0 = 1``).

    Raises
    ------
    ValueError
        ``n`` not an integer >= 1, ``pixel_scale``, ``r0`` or ``L0`` not > 0, ``velocity``
        not two finite numbers.

    Attributes
    ----------
    screen : ndarray, float64, shape (n + 2 margin, n + 2 margin)
        The stored screen, OPD in metres.
    offset : ndarray, shape (2,)
        Sub-pixel shift ``(oy, ox)`` of the window, pixels, each in ``(-1, 1)``.
    rows_added : int
        Rows and columns drawn by the autoregressive extension so far.
    """

    margin = 2

    def __init__(self, n: int, pixel_scale: float, r0: float, L0: float,  # noqa: N803
                 velocity: tuple[float, float], rng: np.random.Generator,
                 extender: ARExtender | None = None) -> None:
        self.n = checked_int("n", n)
        self.pixel_scale = checked_number("pixel_scale", pixel_scale, gt=0, unit="m")
        self.r0 = checked_number("r0", r0, gt=0, unit="Fried parameter at 500 nm, m")
        self.L0 = checked_number("L0", L0, gt=0, unit="outer scale, m")
        self.velocity = np.asarray(velocity, dtype=np.float64)
        if self.velocity.shape != (2,) or not np.all(np.isfinite(self.velocity)):
            raise ValueError(f"velocity = {velocity!r}: must be two finite numbers (vy, vx), m/s")
        self.rng = rng
        m = self.n + 2 * self.margin
        self.extender = extender or ARExtender(m, pixel_scale, L0)
        if self.extender.n != m:
            raise ValueError(f"extender is for width {self.extender.n}, need {m}")
        big = 1 << max(6, (2 * m - 1).bit_length())
        phase = fft_phase_screen(big, pixel_scale, r0, L0, rng, crop=m)
        to_opd = R0_WAVELENGTH / (2 * math.pi)
        self.screen = phase * to_opd
        self._scale = r0 ** (-5 / 6) * to_opd
        self.offset = np.zeros(2)
        self.rows_added = 0
        # burn-in: replace the FFT screen row by row (it lacks the power beyond its Nyquist
        # frequency, about -10 % on the structure function at one pixel), keeping its low
        # orders through the stencil
        for _ in range(m):
            self._add_line(0, True)
        self.rows_added = 0

    def _add_line(self, axis: int, upstream_first: bool) -> None:
        s = self.screen
        v = s if axis == 0 else s.T
        if not upstream_first:
            v = v[::-1]
        new = self.extender.next_row(v, self.rng, self._scale)
        v[1:] = v[:-1].copy()
        v[0] = new
        self.rows_added += 1

    def advance(self, dt: float) -> None:
        """Move the layer by ``velocity * dt`` (seconds), extending it as needed."""
        self.offset += self.velocity * dt / self.pixel_scale
        for axis in (0, 1):
            while self.offset[axis] >= 1.0:
                self._add_line(axis, True)
                self.offset[axis] -= 1.0
            while self.offset[axis] <= -1.0:
                self._add_line(axis, False)
                self.offset[axis] += 1.0

    def add_to(self, out: np.ndarray, weight: float = 1.0) -> None:
        """Add ``weight`` times the current window's OPD (metres) to ``out`` (n by n)."""
        _add_shifted(self.screen, self.offset[0], self.offset[1], self.margin, weight, out)

    def opd(self) -> np.ndarray:
        """Current window's OPD, metres, shape (n, n)."""
        out = np.zeros((self.n, self.n))
        self.add_to(out)
        return out


def _per_layer(value, n: int | None, name: str, low: float | None = None, unit: str = "",
               strict: bool = False) -> np.ndarray:
    """``value`` (one number, or one per layer) as ``n`` floats (``n`` None: as many as
    given), all finite and ``>= low`` (``> low`` if ``strict``); a ValueError naming ``name``
    otherwise."""
    try:
        a = np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        a = np.array([np.nan])
    op = ">" if strict else ">="
    allowed = "a finite number" if low is None else f"a number {op} {low:g}"
    if (a.ndim != 1 or a.size == 0 or isinstance(value, bool) or not np.all(np.isfinite(a))
            or (low is not None and (np.any(a <= low) if strict else np.any(a < low)))):
        raise ValueError(f"{name} = {value!r}: must be {allowed} or a list of them, one per "
                         f"layer ({unit})")
    if n is None:
        return a
    if a.size == 1:
        a = np.full(n, a[0])
    if a.size != n:
        raise ValueError(f"{name} = {value!r}: must have one value or one per layer ({n}, the "
                         "layers of cn2_weights)")
    return a


class Atmosphere:
    """Several frozen-flow von Karman layers seen on-axis through a pupil.

    Parameters
    ----------
    n : int
        Pupil grid size, pixels.
    pixel_scale : float
        Pixel size, metres.
    r0 : float
        Integrated Fried parameter at 500 nm, metres.
    L0 : float
        Outer scale, metres.
    cn2_weights : sequence of float
        Fraction of the integrated ``Cn2`` in each layer (normalised to sum to 1).
    wind_speed : float or sequence of float
        Wind speed of each layer, m/s.
    wind_direction : float or sequence of float, optional
        Direction the wind blows towards, radians from the ``+x`` (column) axis (default:
        layer ``i`` towards ``2.1 i`` radians).
    frame_period : float
        Default time step of :meth:`advance`, seconds.
    seed : int, optional
        Seed of the random source.

    Raises
    ------
    ValueError
        An argument out of range (named in the message): ``n`` not an integer >= 1,
        ``pixel_scale``, ``r0``, ``L0`` or ``frame_period`` not > 0, ``cn2_weights`` not
        numbers > 0, ``wind_speed`` not numbers >= 0, ``wind_direction`` not finite, or a
        per-layer list of the wrong length.

    Attributes
    ----------
    time : float
        Simulated time, seconds.
    layers : list of InfinitePhaseScreen
    """

    def __init__(self, n: int, pixel_scale: float, r0: float = 0.15, L0: float = 25.0,  # noqa: N803
                 cn2_weights: Sequence[float] = (0.5, 0.3, 0.2),
                 wind_speed: float | Sequence[float] = 10.0,
                 wind_direction: float | Sequence[float] | None = None,
                 frame_period: float = 1e-3, seed: int | None = None) -> None:
        self.n = checked_int("n", n)
        self.pixel_scale = checked_number("pixel_scale", pixel_scale, gt=0, unit="m")
        self.r0 = checked_number("r0", r0, gt=0, unit="Fried parameter at 500 nm, m")
        self.L0 = checked_number("L0", L0, gt=0, unit="outer scale, m")
        self.frame_period = checked_number("frame_period", frame_period, gt=0, unit="s")
        w = _per_layer(cn2_weights, None, "cn2_weights", 0.0, "fraction of Cn2", strict=True)
        self.cn2_weights = w / w.sum()
        nl = w.size
        self.wind_speed = _per_layer(wind_speed, nl, "wind_speed", 0.0, "m/s")
        if wind_direction is None:
            wind_direction = 2.1 * np.arange(nl)
        self.wind_direction = _per_layer(wind_direction, nl, "wind_direction",
                                         unit="radians from +x")
        self.time = 0.0
        self.rng = np.random.default_rng(seed)
        ext = ARExtender(self.n + 2 * InfinitePhaseScreen.margin, pixel_scale, L0)
        self.layers = []
        for i in range(nl):
            v = self.wind_speed[i] * np.array([math.sin(self.wind_direction[i]),
                                                math.cos(self.wind_direction[i])])
            r0_i = self.r0 * self.cn2_weights[i] ** (-3 / 5)
            self.layers.append(InfinitePhaseScreen(self.n, pixel_scale, r0_i, L0, v,
                                                   self.rng, ext))
        self._opd = np.zeros((self.n, self.n))

    @property
    def effective_wind_speed(self) -> float:
        """``(sum w_i v_i^(5/3))^(3/5)``, m/s (the speed entering ``tau0``)."""
        return float(np.sum(self.cn2_weights * self.wind_speed ** (5 / 3)) ** (3 / 5))

    def tau0(self, wavelength: float = R0_WAVELENGTH) -> float:
        """Coherence time ``0.314 r0(lambda) / v_eff``, seconds."""
        return 0.314 * self.r0_at(wavelength) / self.effective_wind_speed

    def r0_at(self, wavelength: float) -> float:
        """Fried parameter at ``wavelength`` (metres): ``r0 (lambda / 500 nm)^(6/5)``."""
        return self.r0 * (wavelength / R0_WAVELENGTH) ** (6 / 5)

    def advance(self, dt: float | None = None) -> None:
        """Move every layer by one time step (default :attr:`frame_period`), seconds."""
        dt = self.frame_period if dt is None else float(dt)
        for layer in self.layers:
            layer.advance(dt)
        self.time += dt

    def opd(self, out: np.ndarray | None = None) -> np.ndarray:
        """Total OPD through the pupil grid now, metres, shape (n, n)."""
        o = self._opd if out is None else out
        o[:] = 0.0
        for layer in self.layers:
            layer.add_to(o)
        return o

    def phase(self, wavelength: float) -> np.ndarray:
        """Total phase now at ``wavelength`` (metres), radians, shape (n, n)."""
        return self.opd(np.empty((self.n, self.n))) * (2 * math.pi / wavelength)

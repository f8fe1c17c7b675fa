"""Statistics of the simulated turbulence.

Reference: the exact von Karman phase structure function
``D(r) = 2 (B(0) - B(r))``, ``B(r) = C (L0/r0)^(5/3) u^(5/6) K_{5/6}(u)``, ``u = 2 pi r / L0``
(:func:`dao.hw.von_karman_structure_function`, ``K_{5/6}`` by numerical integration). It
tends to the Kolmogorov law ``6.88 (r/r0)^(5/3)`` only for ``r << L0`` *and* large ``L0``:
the first correction is ``-1.485 (r/L0)^(1/3)``, already 25 % at ``r = L0 / 200``, so with
``L0 = 25 m`` the screens are compared to the von Karman law, and the Kolmogorov limit is
checked separately with ``L0 = 1e5 m``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dao.hw import (
    ARExtender,
    Atmosphere,
    InfinitePhaseScreen,
    fft_phase_screen,
    kolmogorov_structure_function,
    von_karman_structure_function,
)

N, PX, R0, L0 = 128, 8.0 / 128, 0.15, 25.0  # 8 m screens, 6.25 cm pixels
SEPS = np.array([2, 4, 8, 16, 32])  # pixels: 12.5 cm .. D/4 = 2 m
K500 = 2 * math.pi / 500e-9  # OPD (m) to radians at 500 nm


def structure_function(screen: np.ndarray, axis: int, seps=SEPS) -> np.ndarray:
    """Mean squared difference at separations ``seps`` (pixels) along ``axis``."""
    out = []
    for d in seps:
        a = np.take(screen, np.arange(d, screen.shape[axis]), axis=axis)
        b = np.take(screen, np.arange(0, screen.shape[axis] - d), axis=axis)
        out.append(np.mean((a - b) ** 2))
    return np.array(out)


def test_von_karman_tends_to_kolmogorov_for_large_outer_scale():
    """``D_vK / D_Kol = 1 - 1.485 (r/L0)^(1/3) + 5.383 (r/L0)^2 + ...`` for ``r << L0``."""
    r = np.array([0.05, 0.1, 0.5, 1.0])
    for outer, tol in ((1e5, 0.005), (25.0, 0.03)):
        ratio = (von_karman_structure_function(r, 0.15, outer)
                 / kolmogorov_structure_function(r, 0.15))
        x = r / outer
        expansion = 1 - 1.485 * x ** (1 / 3) + 5.383 * x**2
        assert np.all(np.abs(ratio - expansion) < tol), (outer, ratio, expansion)


def test_fft_screens_match_von_karman():
    rng = np.random.default_rng(1)
    theory = von_karman_structure_function(SEPS * PX, R0, L0)
    acc = np.zeros(SEPS.size)
    n_screens = 150
    for _ in range(n_screens):
        s = fft_phase_screen(2 * N, PX, R0, L0, rng, crop=N)
        acc += 0.5 * (structure_function(s, 0) + structure_function(s, 1))
    ratio = acc / n_screens / theory
    assert np.all(np.abs(ratio - 1) < 0.10), ratio


def test_extended_screen_matches_von_karman_along_and_across_the_flow():
    """Screens made only of autoregressive rows keep the von Karman statistics."""
    m = N + 2 * InfinitePhaseScreen.margin
    ext = ARExtender(m, PX, L0)
    theory = von_karman_structure_function(SEPS * PX, R0, L0)
    along, across = [], []
    for seed in range(12):
        layer = InfinitePhaseScreen(N, PX, R0, L0, (0.0, 10.0), np.random.default_rng(seed), ext)
        for _ in range(5):  # each time a whole new screen, far from the initial FFT one
            for _ in range(m):
                layer._add_line(1, True)
            s = layer.screen * K500
            along.append(structure_function(s, 1))
            across.append(structure_function(s, 0))
    ra = np.mean(along, axis=0) / theory
    rc = np.mean(across, axis=0) / theory
    assert np.all(np.abs(ra - 1) < 0.10), ra
    assert np.all(np.abs(rc - 1) < 0.10), rc


def test_no_seam_between_initial_and_extended_parts():
    """Pixels added by the flow continue the screen: pairs straddling the boundary between
    the screen as it was and the new columns have the von Karman structure function."""
    n = 64
    m = n + 2 * InfinitePhaseScreen.margin
    ext = ARExtender(m, PX, L0)
    seps = np.array([1, 2, 4, 8, 16])
    k = m // 2  # columns [0, k) extended, [k, m) from the initial FFT screen
    theory = von_karman_structure_function(seps * PX, R0, L0)
    seam = np.zeros(seps.size)
    inside = np.zeros(seps.size)
    count = 0
    for seed in range(60):
        layer = InfinitePhaseScreen(n, PX, R0, L0, (0.0, 1.0), np.random.default_rng(seed), ext)
        for _ in range(k):
            layer._add_line(1, True)
        s = layer.screen * K500
        for i, d in enumerate(seps):
            j = np.arange(k - d, k)  # pairs (j, j + d) with j < k <= j + d
            seam[i] += np.mean((s[:, j + d] - s[:, j]) ** 2)
            inside[i] += np.mean((s[:, k + d:] - s[:, k:-d]) ** 2)
        count += 1
    r_seam = seam / count / theory
    r_inside = inside / count / theory
    assert np.all(np.abs(r_seam - 1) < 0.10), r_seam
    assert np.all(np.abs(r_seam / r_inside - 1) < 0.10), (r_seam, r_inside)


@pytest.mark.parametrize("velocity", [(0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0)])
def test_frozen_flow_moves_the_screen_by_whole_pixels(velocity):
    """After v dt = one pixel, the window has moved by exactly one pixel along the wind."""
    px, dt = 0.0625, 0.0625  # exact in binary: one pixel per step at 1 m/s
    layer = InfinitePhaseScreen(32, px, 0.15, 25.0, velocity, np.random.default_rng(3))
    before = layer.opd()
    layer.advance(dt)
    after = layer.opd()
    vy, vx = velocity
    if vx > 0:
        np.testing.assert_array_equal(after[:, 1:], before[:, :-1])
    elif vx < 0:
        np.testing.assert_array_equal(after[:, :-1], before[:, 1:])
    elif vy > 0:
        np.testing.assert_array_equal(after[1:], before[:-1])
    else:
        np.testing.assert_array_equal(after[:-1], before[1:])
    assert layer.rows_added == 1


def test_atmosphere_is_seeded_and_runs_on_simulated_time():
    a = Atmosphere(32, 0.25, r0=0.15, L0=25.0, wind_speed=10.0, frame_period=1e-3, seed=7)
    b = Atmosphere(32, 0.25, r0=0.15, L0=25.0, wind_speed=10.0, frame_period=1e-3, seed=7)
    for _ in range(300):  # 3 m of wind: 12 new rows/columns per layer
        a.advance()
        b.advance()
    np.testing.assert_array_equal(a.opd(), b.opd())
    assert a.time == pytest.approx(0.3)
    assert all(layer.rows_added >= 12 for layer in a.layers)
    c = Atmosphere(32, 0.25, seed=8)
    assert not np.allclose(c.opd(), a.opd())


def test_atmosphere_phase_scales_with_wavelength_and_layers_add_up():
    atm = Atmosphere(64, 0.125, r0=0.15, L0=25.0, cn2_weights=(0.6, 0.4), seed=2)
    opd = atm.opd().copy()
    np.testing.assert_allclose(atm.phase(1.65e-6), opd * 2 * np.pi / 1.65e-6)
    total = sum(layer.opd() for layer in atm.layers)
    np.testing.assert_allclose(opd, total)
    # r0 of each layer from its Cn2 fraction; the integrated r0^(-5/3) is the sum
    r0s = np.array([layer.r0 for layer in atm.layers])
    assert np.sum(r0s ** (-5 / 3)) == pytest.approx(0.15 ** (-5 / 3))
    assert atm.r0_at(1.65e-6) == pytest.approx(0.15 * 3.3**1.2)
    assert atm.tau0() == pytest.approx(0.314 * 0.15 / 10.0)


def test_long_run_never_repeats():
    """The screen is drawn anew as it flows: no periodicity after many screen widths."""
    atm = Atmosphere(16, 0.5, cn2_weights=(1.0,), wind_speed=50.0, wind_direction=0.0,
                     frame_period=0.01, seed=4)
    first = atm.opd().copy()
    width_steps = int(round(16 * 0.5 / (50.0 * 0.01)))  # steps to cross one screen width
    worst = np.inf
    for i in range(1, 6 * width_steps + 1):
        atm.advance()
        if i % width_steps == 0:
            worst = min(worst, float(np.std(atm.opd() - first)))
    assert worst > 0.3 * float(np.std(first))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 0}, r"^n = 0: must be an integer >= 1$"),
    ({"n": 16.0}, r"n = 16.0: must be an integer >= 1"),
    ({"pixel_scale": 0.0}, r"pixel_scale = 0.0: must be a number > 0"),
    ({"r0": -0.15}, r"r0 = -0.15: must be a number > 0"),
    ({"r0": math.inf}, r"r0 = inf: must be a number > 0"),
    ({"L0": 0}, r"L0 = 0: must be a number > 0"),
    ({"frame_period": 0.0}, r"frame_period = 0.0: must be a number > 0"),
    ({"cn2_weights": (1.0, -0.5)}, r"cn2_weights = \(1.0, -0.5\): must be a number > 0"),
    ({"cn2_weights": ()}, r"cn2_weights = \(\): must be"),
    ({"wind_speed": -10.0}, r"wind_speed = -10.0: must be a number >= 0"),
    ({"wind_speed": "fast"}, r"wind_speed = 'fast': must be a number >= 0"),
    ({"wind_speed": (10.0, 5.0)}, r"wind_speed = \(10.0, 5.0\): must have one value or one "
                                  r"per layer \(3"),
    ({"wind_direction": math.nan}, r"wind_direction = nan: must be a finite number"),
])
def test_atmosphere_refuses_nonsense_arguments(kwargs, message):
    args = {"n": 16, "pixel_scale": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        Atmosphere(**args)


def test_layer_and_extender_refuse_nonsense_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"r0 = 0: must be a number > 0"):
        InfinitePhaseScreen(16, 0.5, 0, 25.0, (0.0, 10.0), rng)
    with pytest.raises(ValueError, match=r"velocity = .*: must be two finite numbers"):
        InfinitePhaseScreen(16, 0.5, 0.15, 25.0, (0.0, math.nan), rng)
    with pytest.raises(ValueError, match=r"L0 = -1.0: must be a number > 0"):
        ARExtender(20, 0.5, -1.0)
    with pytest.raises(ValueError, match=r"n = 2.5: must be an integer >= 1"):
        ARExtender(2.5, 0.5, 25.0)

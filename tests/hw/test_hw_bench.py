"""The simulated bench as a whole: determinism, simulated time, science output."""

from __future__ import annotations

import numpy as np
import pytest

from dao.hw import SimulatedBench, error_budget


@pytest.fixture
def small():
    return dict(diameter=2.0, n_subap=6, r0=0.15, wind=10.0, frame_rate=500.0)


def test_seeded_bench_is_reproducible(small):
    a, b = SimulatedBench(seed=3, **small), SimulatedBench(seed=3, **small)
    for _ in range(5):
        ia, na = a.step()
        ib, nb = b.step()
        np.testing.assert_array_equal(ia, ib)
        assert na == nb
    c = SimulatedBench(seed=4, **small)
    assert not np.array_equal(c.step()[0], ia)


def test_step_advances_simulated_time_and_counts_frames(small):
    bench = SimulatedBench(seed=1, **small)
    img, frame = bench.step(np.zeros(bench.n_actuators, np.float32))
    assert frame == 1 and bench.time == pytest.approx(1 / 500)
    assert img.shape == (48, 48) and img.dtype == np.float32
    for _ in range(9):
        img, frame = bench.step()
    assert frame == 10 and bench.time == pytest.approx(10 / 500)
    # a flat wavefront puts the flux on each subaperture (times its illuminated fraction),
    # of which an 8x8-pixel window (4 lambda/d) holds about 96 %
    flat = bench.calibration_image(np.zeros(bench.n_actuators, np.float32))
    p = bench.wfs.pupil_pixels_per_subaperture
    fill = bench.wfs.pupil.reshape(6, p, 6, p).mean(axis=(1, 3))[bench.wfs.valid]
    assert 0.9 < flat.sum() / (bench.wfs.flux * fill.sum()) <= 1.0
    assert bench.frame_number == 10  # calibration images are not frames


def test_mirror_adds_to_the_turbulence(small):
    bench = SimulatedBench(seed=1, **small)
    bench.step()
    turbulence = bench.atmosphere.opd().copy()
    cmd = np.full(bench.n_actuators, 1e-7, np.float32)
    bench.mirror.set_command(cmd)
    bench._update_residual()
    np.testing.assert_allclose(bench.residual_opd(), turbulence + bench.mirror.opd())


def test_science_at_two_wavelengths(small):
    bench = SimulatedBench(seed=2, **small)
    bench.step()
    h = bench.science()
    k = bench.science(2.2e-6)
    assert h.wavelength == pytest.approx(1.65e-6) and k.wavelength == pytest.approx(2.2e-6)
    assert h.residual_opd_rms == pytest.approx(k.residual_opd_rms)
    assert k.residual_rms == pytest.approx(h.residual_rms * 1.65 / 2.2)
    assert 0 < h.strehl < k.strehl <= 1


def test_error_budget_formulas():
    b = error_budget(8.0, 20, 0.15, 10.0, 1e-3, 1.65e-6)
    r0 = 0.15 * (1.65 / 0.5) ** 1.2
    assert b["r0"] == pytest.approx(r0)
    assert b["fitting"] == pytest.approx(0.28 * (0.4 / r0) ** (5 / 3))
    assert b["tau0"] == pytest.approx(0.314 * r0 / 10.0)
    assert b["servo"] == pytest.approx((1e-3 / b["tau0"]) ** (5 / 3))
    assert b["strehl"] == pytest.approx(np.exp(-b["total"]))

"""The simulated bench as a whole: determinism, simulated time, science output, sensors."""

from __future__ import annotations

import inspect
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from dao import recon
from dao.hw import SimulatedBench, error_budget, fried_valid_actuators


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


def test_unknown_sensor_is_refused(small):
    with pytest.raises(ValueError, match="shack-hartmann, pyramid"):
        SimulatedBench(sensor="curvature", **small)


def test_pyramid_bench_builds_and_steps(small):
    bench = SimulatedBench(seed=1, sensor="pyramid", **small)
    assert bench.sensor == "pyramid"
    # 6 pixels across each pupil image, 4 samples a pixel (samples < r0/2 at 700 nm),
    # padding 3: a 72-sample plane binned 4 times
    assert bench.wfs.pupil_samples == 24 and bench.wfs.n_pixels == 6
    img, frame = bench.step(np.zeros(bench.n_actuators, np.float32))
    assert img.shape == (18, 18) and img.dtype == np.float32 and frame == 1
    assert bench.camera.grab().shape == bench.camera.shape == (18, 18)
    assert bench.frame_number == 2 and bench.time == pytest.approx(2 / 500)
    # the same pupil and fill rule as the Shack-Hartmann: the same mirror
    sh = SimulatedBench(seed=1, **small)
    assert bench.wfs.valid.shape == (6, 6)
    np.testing.assert_array_equal(bench.wfs.valid, sh.wfs.valid)
    np.testing.assert_array_equal(bench.mirror.valid, fried_valid_actuators(bench.wfs.valid))
    assert bench.n_actuators == sh.n_actuators == 45
    # flux per pupil pixel: the whole image holds flux * valid pixels
    flat = bench.calibration_image(np.zeros(bench.n_actuators, np.float32))
    assert flat.sum() == pytest.approx(1000.0 * bench.wfs.n_valid, rel=1e-4)
    assert bench.frame_number == 2
    assert 0 < bench.science().strehl <= 1


def test_pyramid_sees_a_coarser_grid_than_the_science_camera():
    """20x20 pyramid: 4 samples a detector pixel (80 across) averaged from the bench's 160-sample
    grid, which the mirror and the science camera keep (their fitting error is not lost)."""
    bench = SimulatedBench(n_subap=20, seed=1, sensor="pyramid")
    assert bench.wfs.pupil_shape == (80, 80)
    assert bench.residual_opd().shape == bench.science_camera.pupil.shape == (160, 160)
    tilt = np.add.outer(np.zeros(160), np.linspace(-1, 1, 160)) * 100e-9
    coarse = bench._wfs_opd(tilt)
    np.testing.assert_allclose(coarse, tilt.reshape(80, 2, 80, 2).mean(axis=(1, 3)))
    img, _ = bench.step()
    assert img.shape == bench.wfs.shape
    same = SimulatedBench(n_subap=20, seed=1, sensor="pyramid", pyramid_samples_per_pixel=8)
    assert same.wfs.pupil_shape == (160, 160)
    with pytest.raises(ValueError, match="must divide"):
        SimulatedBench(n_subap=20, sensor="pyramid", pyramid_samples_per_pixel=3)


def test_pyramid_bench_is_reproducible(small):
    a, b = (SimulatedBench(seed=3, sensor="pyramid", **small) for _ in range(2))
    for _ in range(3):
        np.testing.assert_array_equal(a.step()[0], b.step()[0])


def test_slope_estimators(small):
    sh = SimulatedBench(seed=1, **small)
    assert isinstance(sh.slope_estimator(method="cog"), recon.ShackHartmann)
    assert isinstance(sh.centroider(), recon.ShackHartmann)
    bench = SimulatedBench(seed=1, sensor="pyramid", **small)
    est = bench.slope_estimator()
    assert isinstance(est, recon.Pyramid) and est.mode == "slopes"
    assert est.indices.shape == (4, bench.wfs.n_valid)
    assert bench.slope_estimator(mode="intensities").signal.size == 4 * bench.wfs.n_valid
    with pytest.raises(ValueError, match="slope_estimator"):
        bench.centroider()
    zero = np.zeros(bench.n_actuators, np.float32)
    flat = est.measure(bench.calibration_image(zero))
    assert np.abs(flat).max() < 1e-5
    # an OPD increasing with x (mirror tilt) moves the spot towards +x: positive sx
    measure = bench.calibration_slopes(est)
    n = bench.wfs.n_valid
    tilt = measure((bench.mirror.positions[:, 1] * 2e-8).astype(np.float32))
    assert tilt[:n].mean() > 0.01 and abs(tilt[n:].mean()) < 0.01 * tilt[:n].mean()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frame_rate": 0}, r"^frame_rate = 0: must be a number > 0 \(frames per second, Hz\)$"),
    ({"frame_rate": -500.0}, r"frame_rate = -500.0: must be a number > 0"),
    ({"n_subap": 2.5}, r"^n_subap = 2.5: must be an integer >= 2$"),
    ({"n_subap": 0}, r"n_subap = 0: must be an integer >= 2"),
    ({"n_subap": True}, r"n_subap = True: must be an integer"),
    ({"diameter": -8.0}, r"diameter = -8.0: must be a number > 0"),
    ({"r0": 0.0}, r"r0 = 0.0: must be a number > 0"),
    ({"r0": math.nan}, r"r0 = nan: must be a number > 0"),
    ({"L0": 0}, r"L0 = 0: must be a number > 0"),
    ({"wind": -5.0}, r"wind = -5.0: must be a number >= 0 or a list of them, one per layer"),
    ({"wind": [10.0, 5.0]}, r"wind = \[10.0, 5.0\]: must have one value or one per layer \(3"),
    ({"wind_direction": [0.0, 1.0]}, r"wind_direction = \[0.0, 1.0\]: must have one value"),
    ({"cn2_weights": (0.5, 0.0)}, r"cn2_weights = \(0.5, 0.0\): must be a number > 0 or a list"),
    ({"wavelength_wfs": 0}, r"wavelength_wfs = 0: must be a number > 0"),
    ({"wavelength_science": -1e-6}, r"wavelength_science = -1e-06: must be a number > 0"),
    ({"flux": 0}, r"flux = 0: must be a number > 0"),
    ({"seed": -1}, r"seed = -1: must be an integer >= 0 or None"),
    ({"pupil_pixels_per_subaperture": 0}, r"pupil_pixels_per_subaperture = 0: must be an int"),
    ({"pixels_per_subaperture": 32}, r"pixels_per_subaperture = 32: must be at most .* 16"),
    ({"coupling": 1.0}, r"coupling = 1.0: must be a number > 0 and < 1"),
    ({"stroke": 0.0}, r"stroke = 0.0: must be a number > 0"),
    ({"read_noise": -1.0}, r"read_noise = -1.0: must be a number >= 0"),
    ({"sensor": "pyramid", "modulation": -1.0}, r"modulation = -1.0: must be a number >= 0"),
    ({"sensor": "pyramid", "padding": 1}, r"padding = 1: must be an integer >= 2"),
    ({"sensor": "pyramid", "pyramid_samples_per_pixel": 0},
     r"pyramid_samples_per_pixel = 0: must be an integer >= 1"),
])
def test_nonsense_arguments_are_refused_with_their_name(small, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatedBench(**{**small, **kwargs})


#: Arguments that only the pyramid reads (a Shack-Hartmann bench ignores them).
PYRAMID_ONLY = {"modulation", "n_modulation", "padding", "pyramid_samples_per_pixel"}


def test_the_bench_refuses_every_bench_value_the_loop_config_refuses(small):
    """Each ``bench.*`` entry of the loop config corpus, given to the bench directly, is
    refused with the argument named: a user of dao.hw gets the same checks."""
    corpus = Path(__file__).parents[1] / "fixtures" / "bad_loop_configs.toml"
    cases = [c for c in tomllib.loads(corpus.read_text())["cases"]
             if c["key"].startswith("bench.")]
    arguments = set(inspect.signature(SimulatedBench).parameters)
    checked = 0
    for case in cases:
        (name, value), = tomllib.loads(case["toml"])["bench"].items()
        if name not in arguments:  # an unknown key: the bench's TypeError
            continue
        sensor = "pyramid" if name in PYRAMID_ONLY else "shack-hartmann"
        with pytest.raises(ValueError, match=name):
            SimulatedBench(**{**small, name: value, "sensor": sensor})
        checked += 1
    assert checked >= 40

"""AO loop benchmark: camera frame to DM command latency across processes (dao.loop).

For 10x10, 20x20 and 40x40 Shack-Hartmann systems and a 20x20 pyramid (10x10 with
``--quick``) on the simulated bench, the loop of
:func:`dao.loop.run_loop` (bench camera, slopes and controller components, each in its own
process, lock-step) is closed and the latency from the WFS frame's write timestamp to the DM
command's, matched by frame number, is reported (p50 and p99) beside the sum of the numerics'
own kernel times measured in one process (slopes, MVM, integrator: p50 of each), so the
cost of crossing processes (two stream hops, wake-ups, Python per frame) is visible.

Figures (JSON lines, see ``benchmarks/_report.py``): ``loop_latency_p50_<n>x<n>[_pyramid]``
and ``loop_latency_p99_...`` in us, baseline the kernel sum (ratio below 1: the overhead).
Extra keys: loop rate, closed/open-loop Strehl, the per-stage latencies. Also the simulated
pyramid's cost, ``pyramid_model_<samples>`` in ms a frame, beside the FFTs alone of the
direct model (two complex128 FFTs a modulation point).

Run: ``python benchmarks/loop.py [--quick]`` (``--quick`` finishes in under 60 s).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit, machine, parser, timeit  # noqa: E402

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from dao.latency import percentiles  # noqa: E402


def kernel_times(n_subap: int, repeat: int, sensor: str = "shack-hartmann"
                 ) -> dict[str, float]:
    """p50 of the slopes, MVM and integrator kernels for an ``n x n`` system, seconds."""
    from dao import recon
    from dao.hw import SimulatedBench

    bench = SimulatedBench(n_subap=n_subap, seed=1, sensor=sensor)
    est = bench.slope_estimator()
    img, _ = bench.step()
    img = img.copy()
    n_act, n_slopes = bench.n_actuators, est.measure(img).size
    rng = np.random.default_rng(0)
    mvm = recon.MatrixVectorMultiply(rng.standard_normal((n_act, n_slopes)).astype(np.float32))
    err = np.zeros(n_act, np.float32)
    integ = recon.Integrator(n_act, gain=0.5)
    slopes = est.measure(img)
    return {
        "slopes": percentiles(timeit(lambda: est.measure(img), repeat), (50,))[0],
        "mvm": percentiles(timeit(lambda: mvm(slopes, out=err), repeat), (50,))[0],
        "integrator": percentiles(timeit(lambda: integ.step(err), repeat), (50,))[0],
    }


def pyramid_model(samples: int, repeat: int) -> None:
    """The pyramid forward model's time a frame beside the FFTs of the direct model.

    The direct model takes a forward and an inverse complex128 FFT of the padded plane for
    each modulation point; ours one forward and one inverse complex64 FFT a point.
    """
    from dao.hw import SimulatedPyramid

    p = SimulatedPyramid(samples // 4, 8.0, pupil_samples=samples, padding=3,
                         modulation=3.0, n_modulation=16, photon_noise=False)
    opd = np.random.default_rng(0).standard_normal(p.pupil_shape) * 50e-9
    ours = timeit(lambda: p.expected_image(opd), repeat)
    plane = np.zeros((p.fft_size, p.fft_size), np.complex128)

    def direct() -> None:
        for _ in range(p.n_modulation):
            np.fft.ifft2(np.fft.fft2(plane))

    base = timeit(direct, repeat)
    emit(f"pyramid_model_{samples}", percentiles(ours, (50,))[0] * 1e3, "ms",
         percentiles(base, (50,))[0] * 1e3, n=repeat, baseline_name="direct_model_ffts_only",
         p99_ms=percentiles(ours, (99,))[0] * 1e3, fft_size=p.fft_size,
         modulation_points=p.n_modulation)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    from dao.loop import run_loop

    print(json.dumps(machine()), flush=True)
    for samples in (40, 80):
        pyramid_model(samples, 20 if args.quick else 100)
    frames = {10: 300, 20: 300, 40: 100} if args.quick else {10: 3000, 20: 3000, 40: 1500}
    lead = 30 if args.quick else 50  # open and settling frames
    # --quick: the pyramid at 10x10 (its 20x20 bench steps in 7 ms: too slow for a minute)
    systems = [("shack-hartmann", 10), ("shack-hartmann", 20), ("shack-hartmann", 40),
               ("pyramid", 10 if args.quick else 20)]
    for sensor, n in systems:
        k = kernel_times(n, 200 if args.quick else 2000, sensor)
        ksum = sum(k.values())
        cfg = {"bench": {"n_subap": n}, "sensor": {"type": sensor},
               "run": {"open_frames": lead, "settle_frames": lead, "closed_frames": frames[n]}}
        r = run_loop(cfg, telemetry="")
        extra = {
            "n": r["latency_samples"], "baseline_name": "kernel_sum_p50",
            "kernels_us": {a: round(b * 1e6, 2) for a, b in k.items()},
            "loop_rate_hz": round(r["loop_rate_hz"], 1),
            "strehl_open": round(r["strehl_open"], 4),
            "strehl_closed": round(r["strehl_closed"], 4),
            "camera_to_slopes_p50_us": round(r["latency_camera_to_slopes_p50_s"] * 1e6, 1),
            "slopes_to_command_p50_us": round(r["latency_slopes_to_command_p50_s"] * 1e6, 1),
        }
        tag = f"{n}x{n}" if sensor == "shack-hartmann" else f"{n}x{n}_pyramid"
        for q in ("p50", "p99"):
            emit(f"loop_latency_{q}_{tag}", r[f"latency_{q}_s"] * 1e6, "us", ksum * 1e6,
                 **extra)


if __name__ == "__main__":
    main()

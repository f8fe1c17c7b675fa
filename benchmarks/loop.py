"""AO loop benchmark: camera frame to DM command latency across processes (dao.loop).

For 10x10, 20x20 and 40x40 Shack-Hartmann systems on the simulated bench, the loop of
:func:`dao.loop.run_loop` (bench camera, slopes and controller components, each in its own
process, lock-step) is closed and the latency from the WFS frame's write timestamp to the DM
command's, matched by frame number, is reported (p50 and p99) beside the sum of the numerics'
own kernel times measured in one process (centroiding, MVM, integrator: p50 of each), so the
cost of crossing processes (two stream hops, wake-ups, Python per frame) is visible.

Figures (JSON lines, see ``benchmarks/_report.py``): ``loop_latency_p50_<n>x<n>`` and
``loop_latency_p99_<n>x<n>`` in us, baseline the kernel sum (ratio below 1: the overhead).
Extra keys: loop rate, closed/open-loop Strehl, the per-stage latencies.

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


def kernel_times(n_subap: int, repeat: int) -> dict[str, float]:
    """p50 of the centroiding, MVM and integrator kernels for an ``n x n`` system, seconds."""
    from dao import recon
    from dao.hw import SimulatedBench

    bench = SimulatedBench(n_subap=n_subap, seed=1)
    sh = bench.centroider()
    img, _ = bench.step()
    img = img.copy()
    n_act, n_slopes = bench.n_actuators, 2 * sh.n_subapertures
    rng = np.random.default_rng(0)
    mvm = recon.MatrixVectorMultiply(rng.standard_normal((n_act, n_slopes)).astype(np.float32))
    err = np.zeros(n_act, np.float32)
    integ = recon.Integrator(n_act, gain=0.5)
    slopes = sh.measure(img)
    return {
        "centroid": float(np.median(timeit(lambda: sh.measure(img), repeat))),
        "mvm": float(np.median(timeit(lambda: mvm(slopes, out=err), repeat))),
        "integrator": float(np.median(timeit(lambda: integ.step(err), repeat))),
    }


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    from dao.loop import run_loop

    print(json.dumps(machine()), flush=True)
    frames = {10: 400, 20: 400, 40: 150} if args.quick else {10: 3000, 20: 3000, 40: 1500}
    for n in (10, 20, 40):
        k = kernel_times(n, 200 if args.quick else 2000)
        ksum = sum(k.values())
        cfg = {"bench": {"n_subap": n},
               "run": {"open_frames": 50, "settle_frames": 50, "closed_frames": frames[n]}}
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
        for q in ("p50", "p99"):
            emit(f"loop_latency_{q}_{n}x{n}", r[f"latency_{q}_s"] * 1e6, "us", ksum * 1e6,
                 **extra)


if __name__ == "__main__":
    main()

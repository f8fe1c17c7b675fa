"""Latency model against the measured loop (issue 14), in the same run.

This machine is calibrated first (:func:`dao.latency.calibrate` on the loops below, then the
hops of a running 10x10 loop, :func:`dao.latency.measure_loop_hops`). Then, for each loop (the
demo's configuration at 10x10, 20x20 and 40x40 Shack-Hartmann and 20x20 pyramid; ``--quick``:
10x10 and 20x20), the model's prediction (:func:`dao.latency.predict_loop`) and the loop run
closed (:func:`dao.latency.measure_loop`): per measured stage (camera to slopes, slopes to
command) and end to end, p50 and p99.

Each JSON line (``benchmarks/_report.py``): ``value`` the prediction, ``baseline`` the
measurement (microseconds), ``predicted_over_measured`` and whether it is within the issue's
target (p50 within 15%, p99 within 30%). ``ratio`` is the report's usual "how many times
better", meaningless for a model: read ``predicted_over_measured``.

Run: ``python benchmarks/latency.py [--quick]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit, machine, parser  # noqa: E402

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dao.latency import calibrate, measure_loop, measure_loop_hops, predict_loop  # noqa: E402
from dao.latency.loopmodel import MEASURED_STAGES  # noqa: E402

#: (label of dao.latency.profile.LOOPS, sensor, subapertures across)
LOOPS = [("sh10", "shack-hartmann", 10), ("sh20", "shack-hartmann", 20),
         ("sh40", "shack-hartmann", 40), ("pyr20", "pyramid", 20)]
TARGET = {"p50": 0.15, "p99": 0.30}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    loops = LOOPS[:2] if args.quick else LOOPS
    frames = 1500 if args.quick else 4000
    print(json.dumps(machine()), flush=True)
    profile = calibrate(quick=args.quick, loops=[label for label, _, _ in loops])
    measure_loop_hops(profile, 10, frames)
    for label, sensor, n in loops:
        pred = predict_loop(None, profile, n_subap=n, sensor=sensor, frames=4000)
        meas = measure_loop(None, n_subap=n, sensor=sensor, frames=frames)
        for stage in (*MEASURED_STAGES, "end_to_end"):
            key = "latency" if stage == "end_to_end" else f"latency_{stage}"
            for q in ("p50", "p99"):
                p, m = pred[f"{key}_{q}_s"] * 1e6, meas[f"{key}_{q}_s"] * 1e6
                emit(f"latency_model_{label}_{stage}_{q}", p, "us", m,
                     predicted_over_measured=round(p / m, 3),
                     within_target=abs(p / m - 1) <= TARGET[q],
                     target=f"within {TARGET[q]:.0%}", frames_measured=frames,
                     loop_rate_hz=round(meas["loop_rate_hz"], 1))


if __name__ == "__main__":
    main()

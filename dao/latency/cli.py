"""``dao latency``: calibrate this machine, and predict a loop's latency (issue 14)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_latency_parser", "cmd_latency"]

_US = 1e6


def add_latency_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``latency``."""
    p = subparsers.add_parser(
        "latency", help="calibrate this machine, predict a loop's latency",
        description="'dao latency calibrate -o PROFILE' measures this machine (memory, hops "
        "between processes, the loop's kernels at each loop size, the hops of each running "
        "loop) "
        "into a JSON profile; 'dao latency [CONFIG] --profile PROFILE' prints the predicted "
        "latency of a loop configuration (default: the demo's) per stage and end to end, "
        "p50 and p99, the loop delay in frames and the stage to speed up first; --measure "
        "also runs the loop and prints the measured figures beside them.")
    p.add_argument("target", nargs="?", default="demo", metavar="CONFIG|calibrate",
                   help="a loop configuration (TOML), 'demo' (the default one), or "
                   "'calibrate'")
    p.add_argument("--profile", "-o", default="dao-latency-profile.json",
                   help="the profile file to write (calibrate) or read (default "
                   "dao-latency-profile.json)")
    p.add_argument("--quick", action="store_true", help="calibrate: a quick, rougher profile")
    p.add_argument("--loops", help="calibrate: loops to measure, comma-separated labels of "
                   "dao.latency.profile.LOOPS (default all)")
    p.add_argument("--no-camera-beside", action="store_true",
                   help="calibrate: measure the components on a quiet machine (a loop with a "
                   "real camera) rather than beside the simulated camera of the demo's loop")
    p.add_argument("--n-subap", type=int, help="override the loop's subapertures across")
    p.add_argument("--sensor", choices=("shack-hartmann", "pyramid"),
                   help="override the loop's sensor")
    p.add_argument("--period-ms", type=float, help="milliseconds between camera frames")
    p.add_argument("--measure", action="store_true",
                   help="also run the loop and print what it measures")
    p.set_defaults(func=cmd_latency)
    return p


def _progress(fraction: float, message: str) -> None:
    print(f"[{fraction * 100:3.0f}%] {message}", file=sys.stderr, flush=True)


def cmd_latency(args: argparse.Namespace) -> int:
    """Handler of ``dao latency``."""
    from dao.latency.loopmodel import MEASURED_STAGES, measure_loop, measure_loop_hops, predict_loop
    from dao.latency.profile import LOOPS, HardwareProfile, calibrate

    if args.target == "calibrate":
        loops = args.loops.split(",") if args.loops else list(LOOPS)
        # the kernels take about a third of the time, the running loops' hops the rest
        profile = calibrate(quick=args.quick, progress=lambda f, m: _progress(f / 3, m),
                            loops=loops, camera_beside=not args.no_camera_beside)
        for i, label in enumerate(loops):
            sensor, n = LOOPS[label]
            _progress((1 + 2 * i / len(loops)) / 3, f"the hops of a running {sensor} {n}x{n} "
                      "loop")
            measure_loop_hops(profile, n, 500 if args.quick else 2000, sensor,
                              settle=300 if args.quick else 1000, runs=1 if args.quick else 3)
        _progress(1.0, "done")
        path = profile.save(args.profile)
        print(f"profile of {profile.name} written to {path}")
        return 0
    profile = HardwareProfile.load(args.profile)
    config = None if args.target == "demo" else args.target
    kw = {"n_subap": args.n_subap, "sensor": args.sensor}
    period = None if args.period_ms is None else args.period_ms * 1e-3
    got = predict_loop(config, profile, period_s=period, **kw)
    measured = measure_loop(config, **kw) if args.measure else None
    pred = got["prediction"]
    print(f"profile: {profile.source}")
    head = f"{'stage':24s} {'p50 (us)':>10s} {'p99 (us)':>10s}"
    print(head + (f" {'measured p50':>13s} {'measured p99':>13s}" if measured else ""))
    rows = [(name, f"latency_{name}") for name in MEASURED_STAGES]
    rows.append(("end to end", "latency"))
    for label, key in rows:
        line = (f"{label:24s} {got[key + '_p50_s'] * _US:10.1f} "
                f"{got[key + '_p99_s'] * _US:10.1f}")
        if measured:
            line += (f" {measured[key + '_p50_s'] * _US:13.1f} "
                     f"{measured[key + '_p99_s'] * _US:13.1f}")
        print(line)
    print(f"loop delay: {pred.loop_delay_frames_p50:.2f} frames (p50, AOT definition), "
          f"speed up first: {got['bottleneck']}")
    return 0

"""Stream benchmarks: wake-up latency between two processes and set_data throughput.

Baselines, measured in the same run:
- wake-up latency: a plain C hand-off between two processes (benchmarks/c/handoff.c, built
  here with gcc): the writer stamps the clock and posts a semaphore (or bumps a counter), the
  reader wakes and reads the clock;
- set_data: a numpy copy of the same bytes into a preallocated array.

Prints one JSON object per line (see benchmarks/_report.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _report import emit, machine, parser, timeit  # noqa: E402

import dao  # noqa: E402
from dao.latency import percentiles  # noqa: E402
from dao.testing import run_pair, temporary_stream_dir, unique_name  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def build_handoff() -> str:
    """Compile the C baseline; return the binary's path."""
    out_dir = os.path.join(HERE, ".build")
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, "handoff")
    src = os.path.join(HERE, "c", "handoff.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.run(["gcc", "-O2", "-o", exe, src, "-lpthread"], check=True)
    return exe


def c_handoff(exe: str, mode: str, n: int, period_s: float) -> np.ndarray:
    """Latencies (us) of the C hand-off."""
    res = subprocess.run([exe, mode, str(n), str(period_s * 1e6)], capture_output=True,
                         text=True, check=True, timeout=600)
    return np.array(res.stdout.split(), dtype=np.float64) / 1e3


def latency(n: int, period: float, rounds: int, tag: str = "") -> None:
    exe = build_handoff()
    ours = {"sem": [], "spin": []}
    base = {"sem": [], "spin": []}
    with temporary_stream_dir():
        s = dao.shm(unique_name("bench"), np.zeros((64, 64), np.float32))
        for _ in range(rounds):  # interleaved, so drifts of the machine hit both alike
            for mode in ("sem", "spin"):
                base[mode].append(c_handoff(exe, mode, n, period))
                r = run_pair(s.path, n, period, mode, timeout=600)
                ours[mode].append(r.latency_ns / 1e3)
        s.close()
    o = {m: np.concatenate(v) for m, v in ours.items()}
    b = {m: np.concatenate(v) for m, v in base.items()}
    for mode, label in (("sem", "semaphore"), ("spin", "spin")):
        po, pb = percentiles(o[mode]), percentiles(b[mode])
        for q, vo, vb in zip(("p50", "p99", "p99.9"), po, pb, strict=True):
            emit(f"wakeup_{label}{tag}_{q}", vo, "us", vb, n=len(o[mode]), n_baseline=len(b[mode]),
                 baseline_name=f"C {label} hand-off", period_us=period * 1e6)
    # the target: spin p50 at most a fifth of the semaphore's (baseline = our semaphore p50)
    emit(f"wakeup_spin_vs_semaphore{tag}_p50", percentiles(o["spin"], (50,))[0], "us",
         percentiles(o["sem"], (50,))[0], baseline_name="dao semaphore wake-up p50")


def throughput(repeat: int) -> None:
    with temporary_stream_dir():
        for side in (64, 256, 1024):
            frame = np.random.default_rng(0).random((side, side), dtype=np.float32)
            s = dao.shm(unique_name("tp"), frame)
            dst = np.empty_like(frame)
            ours = timeit(lambda s=s, f=frame: s.set_data(f), repeat)
            ref = timeit(lambda d=dst, f=frame: np.copyto(d, f), repeat)
            mb = frame.nbytes / 1e6
            emit(f"set_data_{side}x{side}_float32", mb / percentiles(ours, (50,))[0], "MB/s",
                 mb / percentiles(ref, (50,))[0], baseline_name="numpy copy of the same bytes",
                 p99_us=percentiles(ours * 1e6, [99])[0], baseline_p99_us=percentiles(
                     ref * 1e6, [99])[0])
            s.delete()


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    print(__import__("json").dumps(machine()), flush=True)
    if args.quick:
        latency(n=10_000, period=2e-4, rounds=1)
        throughput(repeat=200)
    else:
        latency(n=20_000, period=2e-4, rounds=3)
        latency(n=10_000, period=1e-3, rounds=1, tag="_1kHz")
        throughput(repeat=2000)


if __name__ == "__main__":
    main()

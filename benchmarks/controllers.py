"""Control-law benchmark: where a law runs, and what a swap costs the loop (dao.loop).

A 10x10 loop (20x20 without ``--quick``) on the simulated bench, closed, lock-step. Each law
writes the DM command for a few thousand frames; the slopes-to-command latency (the slopes'
write time to the command's, matched by frame number) is reported as p50 and p99 against the
stock controller in its own process (the baseline, measured in the same run):

- ``law_kernel_numpy``: a leaky integrator written with numpy in a ``ControlLaw`` and run by a
  thread of this process (:class:`dao.loop.LocalController`), as a notebook cell would;
- ``law_kernel_numba``: the same with a ``numba.njit(nogil=True)`` step;
- ``law_process_numba``: the numba law shipped to the controller process.

The swap: ``swap_stall`` is the longest camera frame interval around a swap (the loop waits
for the handover, lock-step) over many swaps back and forth, against the median frame
interval (baseline), with the count of frames without exactly one command (must be 0) and of
late frames. Figures: JSON lines (``benchmarks/_report.py``).

Run: ``python benchmarks/controllers.py [--quick]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit, machine, parser  # noqa: E402

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numba  # noqa: E402

from dao.latency import percentiles  # noqa: E402
from dao.loop import AOLoop, ControlLaw  # noqa: E402


class NumpyLeaky(ControlLaw):
    """A leaky integrator in numpy (allocates a temporary a frame, as notebook code does)."""

    def __init__(self, calibration, gain=0.4, leak=0.999):
        super().__init__(calibration)
        self.cm, self.gain, self.leak = calibration.control_matrix, gain, leak

    def step(self, slopes, command):
        command *= self.leak
        command -= self.gain * (self.cm @ slopes)


@numba.njit(nogil=True, cache=False, fastmath=True)
def _leaky(cm, slopes, command, gain, leak):
    for i in range(command.size):
        acc = np.float32(0.0)
        for j in range(slopes.size):
            acc += cm[i, j] * slopes[j]
        command[i] = leak * command[i] - gain * acc


class NumbaLeaky(ControlLaw):
    """The same law, its step compiled by Numba without the GIL."""

    def __init__(self, calibration, gain=0.4, leak=0.999):
        super().__init__(calibration)
        self.cm = np.ascontiguousarray(calibration.control_matrix, np.float32)
        self.gain, self.leak = np.float32(gain), np.float32(leak)

    def step(self, slopes, command):
        _leaky(self.cm, slopes, command, self.gain, self.leak)


def slopes_to_command(ao: AOLoop, first: int, last: int) -> np.ndarray:
    """Seconds from each frame's slopes to its command, frames ``first..last``."""
    s = ao.streams["slopes"].history_metadata()
    c = ao.streams["dm_command"].history_metadata()
    ts = dict(zip(s.cnt2.tolist(), s.time_ns.tolist(), strict=True))
    out = [tc - ts[f] for f, tc in zip(c.cnt2.tolist(), c.time_ns.tolist(), strict=True)
           if first <= f <= last and f in ts]
    return np.asarray(out, np.float64) * 1e-9


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n, frames, swaps = (10, 1500, 10) if args.quick else (20, 4000, 30)
    print(__import__("json").dumps(machine()))
    with AOLoop({"run": {"start": "closed"}}, n_subap=n, history=16384) as ao:
        ao.wait(200)
        runs = {}
        for label, law, where in (("stock_process", None, "kernel"),
                                  ("law_kernel_numpy", NumpyLeaky, "kernel"),
                                  ("law_kernel_numba", NumbaLeaky, "kernel"),
                                  ("law_process_numba", NumbaLeaky, "process")):
            if law is None:
                ao.swap(None)
            elif where == "process":
                ao.swap(law, where="process", ship=(_leaky,))
            else:
                ao.swap(law)
            ao.wait(100)
            first = ao.frame + 1
            ao.wait(frames)
            runs[label] = percentiles(slopes_to_command(ao, first, ao.frame), (50, 99))
        ao.swap(None)
        base = runs["stock_process"]
        for label in ("law_kernel_numpy", "law_kernel_numba", "law_process_numba"):
            p50, p99 = runs[label]
            emit(f"{label}_p50", p50 * 1e6, "us", base[0] * 1e6, n_subap=n, frames=frames)
            emit(f"{label}_p99", p99 * 1e6, "us", base[1] * 1e6, n_subap=n, frames=frames)
        # swaps back and forth: the frame interval at each swap against the median
        first = ao.frame + 1
        at = []
        for _ in range(swaps):
            ao.wait(30)
            at.append(ao.swap(NumbaLeaky))
            ao.wait(30)
            at.append(ao.swap(None))
        ao.wait(30)
        fr = ao.streams["frames"].get_history(ao.frame - first)[:, :, 0]
        t = dict(zip(fr[:, 0].tolist(), fr[:, 1].tolist(), strict=True))
        dt = np.diff(fr[:, 1]) * 1e-9
        stall = [(t[h] - t[h - 1]) * 1e-9 for h in at if h in t and h - 1 in t]
        c = ao.streams["dm_command"].history_metadata().cnt2
        c = c[c >= first]
        missing = int(np.sum(np.diff(c) != 1))
        emit("swap_stall_max", max(stall) * 1e3, "ms", float(np.median(dt)) * 1e3,
             swaps=len(stall), stall_p50_ms=float(np.median(stall)) * 1e3, n_subap=n,
             frames_missing_or_repeated=missing, late=int(fr[-1, 2] - fr[0, 2]))


if __name__ == "__main__":
    main()

"""Shared helpers of the benchmark scripts: statistics and the JSON-lines report format.

Every figure is printed as one JSON object per line with the keys ``name``, ``value``,
``unit``, ``baseline`` (the same figure for the baseline, measured in the same run, same unit)
and ``ratio`` (how many times better ours is than the baseline: above 1 means we beat it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

#: Units for which a smaller value is better.
LOWER_IS_BETTER = {"s", "ms", "us", "ns", "cycles", "msg/s"}


def emit(name: str, value: float, unit: str, baseline: float, **extra) -> dict:
    """Print one figure as a JSON line and return it.

    Parameters
    ----------
    name : str
        What was measured, e.g. ``"sem_wakeup_p50"``.
    value, baseline : float
        Our figure and the baseline's, in ``unit``.
    unit : str
        Unit of both figures. Times (``s``, ``ms``, ``us``, ``ns``) are better when lower,
        everything else (``MB/s``, ``GB/s``, ``frames/s``...) when higher.
    **extra
        Further keys to print (e.g. ``n`` samples, ``baseline_name``).
    """
    if unit in LOWER_IS_BETTER:
        ratio = baseline / value if value > 0 else float("inf")
    else:
        ratio = value / baseline if baseline > 0 else float("inf")
    rec = {"name": name, "value": float(value), "unit": unit, "baseline": float(baseline),
           "ratio": round(float(ratio), 4), **extra}
    print(json.dumps(rec), flush=True)
    return rec


def timeit(fn, repeat: int, warmup: int = 3) -> np.ndarray:
    """Wall time of ``repeat`` calls of ``fn()``, in seconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--quick`` flag every benchmark script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer repeats: finishes in under 60 s")
    return p


def machine() -> dict:
    """A short description of the machine, printed with the results."""
    import os

    return {"name": "machine", "python": sys.version.split()[0], "cpu": platform.processor()
            or platform.machine(), "cores": os.cpu_count(), "numpy": np.__version__}

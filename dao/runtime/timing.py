"""Timing: the per-frame timing record every component keeps, and the percentile helper.

Every timing in ``dao`` is an integer count of nanoseconds of CLOCK_REALTIME
(``time.time_ns()``), the clock of the streams' write timestamps, so the times a component
records and the times its output frames carry compare directly. :func:`percentiles` is the one
percentile helper of the runtime, the loop report (:mod:`dao.latency`) and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["TIMING_FIELDS", "percentiles", "summary"]

#: Rows of a ``<name>_timing`` record (int64; see :mod:`dao.runtime.component`): the trigger
#: input's counter, processing start and end (ns of CLOCK_REALTIME), the source frame id.
TIMING_FIELDS = ("input_cnt0", "start_ns", "end_ns", "frame_id")


def percentiles(samples: Any, qs: Sequence[float] = (50, 99, 99.9)) -> list[float]:
    """Percentiles ``qs`` (0-100) of ``samples``, in the samples' unit; NaN each if none."""
    a = np.asarray(samples, dtype=np.float64).ravel()
    if a.size == 0:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(a, list(qs))]


def summary(prefix: str, seconds: Any) -> dict[str, float]:
    """``{prefix}_p50_s`` and ``{prefix}_p99_s`` of a sample of durations in seconds."""
    p50, p99 = percentiles(seconds, (50, 99))
    return {f"{prefix}_p50_s": p50, f"{prefix}_p99_s": p99}

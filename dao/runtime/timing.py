"""Timing: the per-frame timing record every component keeps, the percentile helper, and
per-stage latencies of a pipeline of streams.

Every timing in ``dao`` is an integer count of nanoseconds of CLOCK_REALTIME
(``time.time_ns()``), the clock of the streams' write timestamps, so the times a component
records and the times its output frames carry compare directly. :func:`percentiles` is the one
percentile helper of the runtime, the loop and the benchmarks. These live here, in the lowest
layer that needs them; :mod:`dao.latency` is their public home.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dao.streams.frames import Frames

__all__ = ["TIMING_FIELDS", "percentiles", "summary", "frame_times", "stage_latencies",
           "pipeline_latency"]

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


def frame_times(frames: Frames) -> dict[int, int]:
    """``{cnt2: write time in ns}``: when each source frame (by its id) reached a stream."""
    return dict(zip(frames.cnt2.tolist(), frames.time_ns.tolist(), strict=True))


def stage_latencies(source: Mapping[int, int], stages: Sequence[tuple[str, Frames]]
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-frame latency of each hop of a pipeline, matched by source frame id.

    Parameters
    ----------
    source : mapping of int to int
        ``{frame id: time in ns}`` of the source.
    stages : sequence of (str, Frames)
        The streams downstream, in pipeline order, with name (see :func:`pipeline_latency`).

    Returns
    -------
    ids : numpy.ndarray
        The source frame ids that every stage saw, in order.
    hops : dict of str to numpy.ndarray
        Latency in s of each of those frames: ``"<a>_to_<b>"`` per hop (the source is
        ``"source"``) and ``"total"`` from the source to the last stage.
    """
    times = [frame_times(f) for _, f in stages]
    done = sorted(set(source).intersection(*times))
    t = [np.array([source[f] for f in done], np.int64)]
    t += [np.array([ts[f] for f in done], np.int64) for ts in times]
    names = ["source", *[name for name, _ in stages]]
    hops = {f"{names[i - 1]}_to_{names[i]}": (t[i] - t[i - 1]) * 1e-9 for i in range(1, len(t))}
    hops["total"] = (t[-1] - t[0]) * 1e-9
    return np.array(done, np.int64), hops


def pipeline_latency(source: Mapping[int, int], stages: Sequence[tuple[str, Frames]],
                     prefix: str = "latency") -> dict[str, Any]:
    """Latency of each stage of a pipeline, matched by source frame id.

    Parameters
    ----------
    source : mapping of int to int
        ``{frame id: time in ns}`` of the source (e.g. when the camera read each frame).
    stages : sequence of (str, Frames)
        The streams downstream, in pipeline order, with name; each frame's ``cnt2`` names the
        source frame it came from (see :meth:`dao.shm.history_metadata`).
    prefix : str
        Prefix of the end-to-end keys.

    Returns
    -------
    dict
        ``rate_hz`` (of the source frames), ``{prefix}_p50_s`` / ``{prefix}_p99_s`` from the
        source to the last stage, ``{prefix}_{a}_to_{b}_p50_s`` / ``..._p99_s`` per hop (the
        source is ``a`` = "source" unless named otherwise by the caller), ``{prefix}_samples``:
        the source frames seen by every stage.
    """
    ids = sorted(source)
    span = (source[ids[-1]] - source[ids[0]]) * 1e-9 if ids else 0.0
    out: dict[str, Any] = {"rate_hz": (len(ids) - 1) / span if span > 0 else float("nan")}
    done, hops = stage_latencies(source, stages)
    out.update(summary(prefix, hops.pop("total")))
    for hop, seconds in hops.items():
        out.update(summary(f"{prefix}_{hop}", seconds))
    out[f"{prefix}_samples"] = len(done)
    return out

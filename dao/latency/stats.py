"""Measured timing statistics: per-stage latencies of a pipeline of streams, and the
percentile helper (:func:`percentiles`, defined with the timing record in
:mod:`dao.runtime.timing`, the lowest layer that needs it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dao.runtime.timing import percentiles, summary
from dao.streams.frames import Frames

__all__ = ["percentiles", "summary", "frame_times", "pipeline_latency"]


def frame_times(frames: Frames) -> dict[int, int]:
    """``{cnt2: write time in ns}``: when each source frame (by its id) reached a stream."""
    return dict(zip(frames.cnt2.tolist(), frames.time_ns.tolist(), strict=True))


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
    times = [frame_times(f) for _, f in stages]
    done = sorted(set(source).intersection(*times))
    ids = sorted(source)
    span = (source[ids[-1]] - source[ids[0]]) * 1e-9 if ids else 0.0
    out: dict[str, Any] = {"rate_hz": (len(ids) - 1) / span if span > 0 else float("nan")}
    t = [np.array([source[f] for f in done], np.int64)]
    t += [np.array([ts[f] for f in done], np.int64) for ts in times]
    out.update(summary(prefix, (t[-1] - t[0]) * 1e-9))
    names = ["source", *[name for name, _ in stages]]
    for i in range(1, len(t)):
        out.update(summary(f"{prefix}_{names[i - 1]}_to_{names[i]}", (t[i] - t[i - 1]) * 1e-9))
    out[f"{prefix}_samples"] = len(done)
    return out

"""Latency: measured timing statistics, where the latency model will grow.

The percentile helper and the per-stage latencies of a pipeline of streams (matched by source
frame id) are defined in :mod:`dao.runtime.timing`, the lowest layer that needs them (the
runtime's heartbeats and the loop's report use them too); this package is their public home.
"""

from dao.runtime.timing import (
    frame_times,
    percentiles,
    pipeline_latency,
    stage_latencies,
    summary,
)

__all__ = ["frame_times", "percentiles", "pipeline_latency", "stage_latencies", "summary"]

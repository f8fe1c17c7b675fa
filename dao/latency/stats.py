"""Measured timing statistics: the percentile helper and per-stage latencies of a pipeline of
streams matched by source frame id.

They are defined in :mod:`dao.runtime.timing`, the lowest layer that needs them (the runtime's
heartbeats and the loop's report use them too); this module is their public home, where the
latency model will grow.
"""

from dao.runtime.timing import frame_times, percentiles, pipeline_latency, summary

__all__ = ["percentiles", "summary", "frame_times", "pipeline_latency"]

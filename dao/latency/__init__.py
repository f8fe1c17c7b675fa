"""Latency: measured timing statistics (and, later, the pipeline model that predicts them).

- :mod:`dao.latency.stats`: percentiles, and per-stage latencies of a pipeline of streams
  matched by source frame id.
"""

from dao.latency.stats import frame_times, percentiles, pipeline_latency, summary

__all__ = ["frame_times", "percentiles", "pipeline_latency", "summary"]

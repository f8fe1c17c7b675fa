"""Latency: measured timing statistics and the pipeline latency model (issue 14).

- :mod:`~dao.latency.model`: a pipeline of stages cut into packets, each waiting for all its
  inputs, its previous packet and a free server of the resource it shares (a max-plus flow
  shop with contention), costs as distributions of seconds; :func:`predict` gives per-stage
  and end-to-end p50/p99, the loop delay in frames, and the stage to speed up first. Units
  are explicit (seconds, bytes, bytes per second; bits only through named conversions).
- The percentile helper and the per-stage latencies of a pipeline of streams (matched by
  source frame id) are defined in :mod:`dao.runtime.timing`, the lowest layer that needs them
  (the runtime's heartbeats and the loop's report use them too); this package is their public
  home.
"""

from dao.latency.model import (
    BITS_PER_BYTE,
    Cost,
    Pipeline,
    Prediction,
    Resource,
    Stage,
    Timeline,
    bits_to_bytes,
    bytes_to_bits,
    gbit_per_s,
    gbyte_per_s,
    mbit_per_s,
    predict,
    roofline_s,
    transfer_s,
)
from dao.runtime.timing import (
    frame_times,
    percentiles,
    pipeline_latency,
    stage_latencies,
    summary,
)

__all__ = [
    "BITS_PER_BYTE", "Cost", "Pipeline", "Prediction", "Resource", "Stage", "Timeline",
    "bits_to_bytes", "bytes_to_bits", "frame_times", "gbit_per_s", "gbyte_per_s",
    "mbit_per_s", "percentiles", "pipeline_latency", "predict", "roofline_s",
    "stage_latencies", "summary", "transfer_s",
]

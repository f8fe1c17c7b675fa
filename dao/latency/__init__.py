"""Latency: measured timing statistics and the pipeline latency model (issue 14).

- :mod:`~dao.latency.model`: a pipeline of stages cut into packets, each waiting for all its
  inputs, its previous packet and a free server of the resource it shares (a max-plus flow
  shop with contention), costs as distributions of seconds; :func:`predict` gives per-stage
  and end-to-end p50/p99, the loop delay in frames, and the stage to speed up first. Units
  are explicit (seconds, bytes, bytes per second; bits only through named conversions).
- :mod:`~dao.latency.profile`: what this machine costs (``dao latency calibrate``): memory
  bandwidth, hops between processes (quiet, and in a running loop), the loop's per-frame
  calls at each loop size, as quantiles; :mod:`~dao.latency.catalogue`: other hardware, not
  measured, with sources;
- :mod:`~dao.latency.loopmodel`: a loop configuration as a pipeline costed by a profile,
  predicted as the loop measures itself (``dao latency CONFIG``).
- The percentile helper and the per-stage latencies of a pipeline of streams (matched by
  source frame id) are defined in :mod:`dao.runtime.timing`, the lowest layer that needs them
  (the runtime's heartbeats and the loop's report use them too); this package is their public
  home.
"""

from dao.latency.loopmodel import loop_pipeline, measure_loop, measure_loop_hops, predict_loop
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
from dao.latency.profile import (
    ExtrapolationError,
    HardwareProfile,
    KernelTable,
    ProfileError,
    Quantiles,
    calibrate,
)
from dao.runtime.timing import (
    frame_times,
    percentiles,
    pipeline_latency,
    stage_latencies,
    summary,
)

__all__ = [
    "BITS_PER_BYTE", "Cost", "ExtrapolationError", "HardwareProfile", "KernelTable", "Pipeline",
    "Prediction", "ProfileError", "Quantiles", "Resource", "Stage", "Timeline", "calibrate",
    "loop_pipeline", "measure_loop", "measure_loop_hops", "predict_loop",
    "bits_to_bytes", "bytes_to_bits", "frame_times", "gbit_per_s", "gbyte_per_s",
    "mbit_per_s", "percentiles", "pipeline_latency", "predict", "roofline_s",
    "stage_latencies", "summary", "transfer_s",
]

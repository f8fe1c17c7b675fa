"""dao.latency: the percentile helper and per-stage latencies matched by frame id."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dao.latency import percentiles, pipeline_latency, summary
from dao.streams import Frames


def _meta(ids, times_ns) -> Frames:
    ids = np.asarray(ids, np.uint64)
    return Frames(None, np.arange(1, len(ids) + 1, dtype=np.uint64), ids,
                  np.asarray(times_ns, np.int64))


def test_percentiles_match_numpy_and_empty_is_nan():
    x = np.random.default_rng(1).exponential(size=1001)
    assert percentiles(x, (50, 99)) == pytest.approx(np.percentile(x, [50, 99]).tolist())
    assert all(math.isnan(v) for v in percentiles([], (50, 99, 99.9)))
    assert summary("t", [1.0, 3.0]) == {"t_p50_s": 2.0, "t_p99_s": pytest.approx(2.98)}


def test_pipeline_latency_matches_frames_by_id():
    # camera frames 1..10 every 1 ms; slopes 100 us later, commands 300 us after the camera;
    # frame 4 never reached the commands, frame 11 is downstream only (not from this window)
    cam = {f: 1_000_000 * f for f in range(1, 11)}
    slopes = _meta(list(range(1, 12)), [1_000_000 * f + 100_000 for f in range(1, 12)])
    ids = [f for f in range(1, 12) if f != 4]
    cmd = _meta(ids, [1_000_000 * f + 300_000 for f in ids])
    r = pipeline_latency(cam, [("slopes", slopes), ("cmd", cmd)])
    assert r["rate_hz"] == pytest.approx(1000.0)
    assert r["latency_samples"] == 9
    assert r["latency_p50_s"] == pytest.approx(300e-6)
    assert r["latency_source_to_slopes_p99_s"] == pytest.approx(100e-6)
    assert r["latency_slopes_to_cmd_p50_s"] == pytest.approx(200e-6)


def test_pipeline_latency_without_frames_is_nan_not_an_error():
    r = pipeline_latency({}, [("slopes", _meta([], []))])
    assert math.isnan(r["rate_hz"]) and math.isnan(r["latency_p99_s"])
    assert r["latency_samples"] == 0

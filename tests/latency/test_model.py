"""dao.latency.model: the pipeline latency model, against hand-computed max-plus timelines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dao.latency.model import (
    Cost,
    Pipeline,
    Resource,
    Stage,
    bits_to_bytes,
    bytes_to_bits,
    gbit_per_s,
    gbyte_per_s,
    mbit_per_s,
    predict,
    roofline_s,
    transfer_s,
)

MS = 1e-3
US = 1e-6
METHODS = ["event", "maxplus"]


def _approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


# --- the max-plus flow shop -------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("r", "c"), [(100 * US, 300 * US), (300 * US, 100 * US)])
def test_readout_then_compute_fills_the_pipeline_as_the_max_plus_formula(method, r, c):
    # camera reads P packets of r each, compute takes c per packet once its packet is read:
    # end_j = max(end_{j-1}, (j + 1) r) + c  =>  end_j = max_{m<=j} ((m + 1) r + (j - m + 1) c)
    # so the frame ends at r + c + (P - 1) max(r, c)
    p = 5
    pipe = Pipeline([Stage("cam", p * r, packets=p),
                     Stage("calc", p * c, ["cam"], packets=p)], period_s=10 * MS)
    tl = pipe.simulate(3, method=method)
    expect = [max((m + 1) * r + (j - m + 1) * c for m in range(j + 1)) for j in range(p)]
    for k in range(3):
        assert tl.end_s["calc"][k] == _approx(expect)
        assert tl.end_s["cam"][k] == _approx([(j + 1) * r for j in range(p)])
    assert tl.end_to_end_s() == _approx([r + c + (p - 1) * max(r, c)] * 3)
    assert tl.end_to_end_s()[0] == _approx(1.6 * MS)


@pytest.mark.parametrize("method", METHODS)
def test_per_packet_overhead_is_added_to_each_packet(method):
    pipe = Pipeline([Stage("cam", 4 * MS, packets=4, overhead_s=0.5 * MS)], period_s=10 * MS)
    tl = pipe.simulate(2, method=method)
    assert tl.end_s["cam"][1] == _approx([1.5 * MS, 3 * MS, 4.5 * MS, 6 * MS])


@pytest.mark.parametrize("method", METHODS)
def test_a_stage_waits_for_all_its_inputs_not_the_last_one(method):
    # the slow input is listed first: "last input only" would finish at 1 + 1 = 2 ms
    pipe = Pipeline([Stage("slow", 3 * MS), Stage("fast", 1 * MS),
                     Stage("merge", 1 * MS, ["slow", "fast"])], period_s=10 * MS)
    tl = pipe.simulate(4, method=method)
    assert tl.ready_s["merge"][:, 0] == _approx([3 * MS] * 4)
    assert tl.end_to_end_s() == _approx([4 * MS] * 4)
    assert tl.sinks == ("merge",)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("p_in", "p", "ready"), [
    (4, 2, [2, 4]),                # packet j needs input packets 0..2j+1
    (2, 4, [1, 1.25, 2, 2.25]),    # packets 0, 1 need input packet 0; 2, 3 need 1
    (3, 2, [2, 3]),                # ceil(1.5) - 1 = 1, ceil(3) - 1 = 2
    (1, 3, [1, 1 + 1 / 3, 1 + 2 / 3]),
])
def test_packets_need_the_input_packets_covering_the_same_part_of_the_frame(method, p_in, p,
                                                                            ready):
    # the camera reads p_in packets of 1 ms; the stage takes 1 ms per frame
    pipe = Pipeline([Stage("cam", p_in * MS, packets=p_in),
                     Stage("x", 1 * MS, ["cam"], packets=p)], period_s=20 * MS)
    tl = pipe.simulate(2, method=method)
    assert tl.ready_s["x"][1] == _approx([v * MS for v in ready])
    assert tl.end_s["x"][1] == _approx([v * MS + MS / p for v in ready])


# --- contention ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("servers", "e2e"), [(1, 5 * MS), (2, 3 * MS), (3, 3 * MS)])
def test_stages_sharing_a_resource_serialize_on_one_server_and_overlap_on_two(servers, e2e):
    pipe = Pipeline([Stage("a", 2 * MS, resource="cpu"), Stage("b", 3 * MS, resource="cpu"),
                     Stage("sink", 0.0, ["a", "b"])],
                    [Resource("cpu", servers)], period_s=10 * MS)
    assert pipe.contended == (("cpu",) if servers < 2 else ())
    tl = pipe.simulate(5)
    assert tl.end_to_end_s() == _approx([e2e] * 5)
    if servers == 1:  # ready together: the upstream (first listed) stage goes first
        assert tl.end_s["a"][:, 0] == _approx([2 * MS] * 5)
        assert tl.start_s["b"][:, 0] == _approx([2 * MS] * 5)
        assert tl.ready_s["b"][:, 0] == _approx([0.0] * 5)


def test_a_shared_core_is_first_come_first_served_by_ready_time():
    # cam reads 2 packets of 1 ms; x and y (1 ms per packet) share one core.
    # x0, y0 ready at 1: x0 1-2, y0 2-3; x1 ready at 2 waits until 3: 3-4; y1 ready 3: 4-5
    pipe = Pipeline([Stage("cam", 2 * MS, packets=2),
                     Stage("x", 2 * MS, ["cam"], "core", 2),
                     Stage("y", 2 * MS, ["cam"], "core", 2)], [Resource("core")], 10 * MS)
    tl = pipe.simulate(2)
    for k in range(2):
        assert tl.ready_s["x"][k] == _approx([1 * MS, 2 * MS])
        assert tl.start_s["x"][k] == _approx([1 * MS, 3 * MS])
        assert tl.start_s["y"][k] == _approx([2 * MS, 4 * MS])
        assert tl.ready_s["y"][k] == _approx([1 * MS, 3 * MS])
    assert tl.end_to_end_s() == _approx([5 * MS] * 2)


def test_contended_schedules_respect_dependencies_capacity_and_never_idle_a_waited_server():
    rng = np.random.default_rng(3)
    pipe = Pipeline([Stage("cam", Cost.lognormal(300 * US, 400 * US), packets=6),
                     Stage("a", Cost.lognormal(200 * US, 500 * US), ["cam"], "cpu", 3, 5 * US),
                     Stage("b", Cost.lognormal(250 * US, 400 * US), ["cam"], "cpu", 6),
                     Stage("c", Cost.lognormal(100 * US, 300 * US), ["a", "b"], "cpu", 2),
                     Stage("d", 50 * US, ["c"], "gpu", 1)],
                    [Resource("cpu", 2), Resource("gpu", 1)], period_s=400 * US)
    tl = pipe.simulate(300, rng)
    t0 = tl.frame_start_s[:, None]
    ivals = []  # (ready, start, end) in absolute time of every cpu packet
    for s in ("a", "b", "c"):
        assert np.all(tl.start_s[s] >= tl.ready_s[s] - 1e-15)
        ivals += zip(*((t + t0).ravel() for t in (tl.ready_s[s], tl.start_s[s], tl.end_s[s])),
                     strict=True)
    # dependencies: c's packet j waits for the covering packets of a and b
    for j, (ja, jb) in enumerate([(1, 2), (2, 5)]):
        need = np.maximum(tl.end_s["a"][:, ja], tl.end_s["b"][:, jb])
        assert np.all(tl.ready_s["c"][:, j] >= need - 1e-15)
    r, b, e = (np.array(v) for v in zip(*ivals, strict=True))
    running = lambda t: int(np.sum((b <= t) & (t < e)))  # noqa: E731
    waited = np.flatnonzero(b > r + 1e-12)
    assert waited.size > 50  # the case does exercise contention
    for i in range(b.size):  # never more than 2 on the two cores
        assert running(b[i]) <= 2
    for i in waited:  # a packet only waits while both cores are busy
        assert running((r[i] + b[i]) / 2) == 2


# --- frame after frame ----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_stage_slower_than_the_period_builds_a_queue(method):
    # cam 0.5 ms, calc 1 ms, a frame every 0.8 ms: calc ends at 1.5 + k ms, i.e. 1.5 + 0.2 k ms
    # after its frame's start; with a 2 ms period it stays 1.5 ms
    cam, calc = Stage("cam", 0.5 * MS), Stage("calc", 1 * MS, ["cam"])
    k = np.arange(20)
    tl = Pipeline([cam, calc], period_s=0.8 * MS).simulate(20, method=method)
    assert tl.end_to_end_s() == _approx((1.5 + 0.2 * k) * MS)
    assert tl.stage_latency_s("cam") == _approx([0.5 * MS] * 20)
    tl = Pipeline([cam, calc], period_s=2 * MS).simulate(20, method=method)
    assert tl.end_to_end_s() == _approx([1.5 * MS] * 20)
    # a camera slower than the period falls behind too (frame k read from k ms to k + 1 ms)
    tl = Pipeline([Stage("cam", 1 * MS)], period_s=0.8 * MS).simulate(20, method=method)
    assert tl.end_to_end_s() == _approx((1 + 0.2 * k) * MS)


@pytest.mark.parametrize("method", METHODS)
def test_free_running_single_source_starts_each_frame_when_the_readout_ends(method):
    pipe = Pipeline([Stage("cam", 1 * MS, packets=4), Stage("x", 0.4 * MS, ["cam"], packets=4)])
    tl = pipe.simulate(10, method=method)
    assert tl.frame_start_s == _approx(np.arange(10) * MS)
    assert tl.period_s == _approx(1 * MS)
    assert tl.end_to_end_s() == _approx([1.1 * MS] * 10)


def test_free_running_sources_start_together_when_the_slowest_is_done():
    pipe = Pipeline([Stage("a", 1 * MS), Stage("b", 2 * MS), Stage("c", 0.5 * MS, ["a", "b"])])
    tl = pipe.simulate(6)
    assert tl.frame_start_s == _approx(np.arange(6) * 2 * MS)
    assert tl.stage_latency_s("a") == _approx([1 * MS] * 6)
    assert tl.end_to_end_s() == _approx([2.5 * MS] * 6)
    with pytest.raises(ValueError, match="method='event'"):
        pipe.simulate(6, method="maxplus")


def _reference_ends(stages, period, frames):
    """Absolute end times by the recurrence written out packet by packet (no contention)."""
    end = {}
    for k in range(frames):
        for s in stages:
            d = s.cost.mean / s.packets + s.overhead_s
            ends = []
            for j in range(s.packets):
                r = k * period if not s.inputs else -math.inf
                for u in s.inputs:
                    pu = len(end[k, u])
                    r = max(r, end[k, u][math.ceil((j + 1) * pu / s.packets) - 1])
                if j:
                    r = max(r, ends[-1])
                elif k:
                    r = max(r, end[k - 1, s.name][-1])
                ends.append(r + d)
            end[k, s.name] = ends
    return end


@pytest.mark.parametrize("seed", range(6))
def test_both_methods_match_the_recurrence_on_random_dags(seed):
    rng = np.random.default_rng(seed)
    stages = []
    for i in range(7):
        k = int(rng.integers(0, min(i, 3) + 1)) if i else 0
        ins = [f"s{u}" for u in sorted(rng.choice(i, size=k, replace=False))] if k else []
        stages.append(Stage(f"s{i}", float(rng.uniform(0, 2 * MS)), ins,
                            resource="gpu" if i % 2 else None,
                            packets=int(rng.integers(1, 7)),
                            overhead_s=float(rng.uniform(0, 20 * US))))
    period = float(rng.uniform(0.5, 3)) * MS
    # 8 servers for at most 4 stages: the shared gpu never queues
    pipe = Pipeline(reversed(stages), [Resource("gpu", 8)], period)  # order given is not topo
    ref = _reference_ends(stages, period, 12)
    for method in METHODS:
        tl = pipe.simulate(12, method=method)
        for s in stages:
            got = tl.end_s[s.name] + tl.frame_start_s[:, None]
            assert got == _approx(np.array([ref[k, s.name] for k in range(12)]))


# --- costs ------------------------------------------------------------------------------------


def test_empirical_cost_bootstraps_the_profile():
    x = np.random.default_rng(1).gamma(4.0, 50 * US, size=5000)
    c = Cost.samples(x)
    assert c.p50 == np.percentile(x, 50)
    assert c.p99 == np.percentile(x, 99)
    assert c.mean == pytest.approx(x.mean())
    d = c.draw(np.random.default_rng(2), 200_000)
    assert np.isin(d, x).all()
    assert np.percentile(d, 50) == pytest.approx(c.p50, rel=0.02)
    assert np.percentile(d, 99) == pytest.approx(c.p99, rel=0.05)


def test_lognormal_cost_has_the_percentiles_asked_for():
    c = Cost.lognormal(100 * US, 300 * US)
    assert (c.p50, c.p99) == (pytest.approx(100 * US), pytest.approx(300 * US))
    d = c.draw(np.random.default_rng(0), 400_000)
    assert np.percentile(d, 50) == pytest.approx(100 * US, rel=0.01)
    assert np.percentile(d, 99) == pytest.approx(300 * US, rel=0.03)
    assert d.mean() == pytest.approx(c.mean, rel=0.01)
    assert Cost.lognormal(1e-3, 1e-3).is_constant


def test_cost_arithmetic_scales_and_adds_independent_draws():
    c = Cost.lognormal(100 * US, 300 * US)
    assert (c * 2.0).p50 == pytest.approx(200 * US)
    assert (0.5 * c).p99 == pytest.approx(150 * US)
    assert (c / 4).mean == pytest.approx(c.mean / 4)
    shifted = c + 1 * MS
    assert (shifted.p50, shifted.p99) == (pytest.approx(1.1 * MS), pytest.approx(1.3 * MS))
    assert (Cost.constant(1.0) + 2.0).is_constant and (Cost.constant(1.0) + 2.0).p99 == 3.0
    two = c + Cost.lognormal(100 * US, 300 * US)
    assert two.mean == pytest.approx(2 * c.mean)
    # independent sum: its p99 is below the sum of p99s, its p50 above the sum of p50s
    assert 2 * c.p50 < two.p50 and two.p99 < 2 * c.p99
    d = two.draw(np.random.default_rng(5), 100_000)
    assert np.percentile(d, 99) == pytest.approx(two.p99, rel=0.05)


def test_cost_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least one"):
        Cost.samples([])
    with pytest.raises(ValueError, match="finite and >= 0"):
        Cost.samples([1e-3, float("nan")])
    with pytest.raises(ValueError, match="p99_s >= p50_s"):
        Cost.lognormal(2e-3, 1e-3)
    with pytest.raises(ValueError, match="scale factor"):
        Cost.constant(1.0) * -1
    with pytest.raises(ValueError, match="stage 'a'.*>= 0"):
        Stage("a", -1e-3)
    with pytest.raises(ValueError, match="stage 'a'.*number of seconds or a Cost"):
        Stage("a", "1 ms")


def test_a_frame_cost_is_drawn_once_and_split_over_the_packets():
    # drawn per packet, a 4-packet frame would often mix 1 ms and 2 ms quarters
    pipe = Pipeline([Stage("cam", Cost.samples([1 * MS, 2 * MS]), packets=4)], period_s=5 * MS)
    lat = pipe.simulate(400, rng=1).stage_latency_s("cam")
    ones = np.isclose(lat, 1 * MS, rtol=0, atol=1e-12)
    twos = np.isclose(lat, 2 * MS, rtol=0, atol=1e-12)
    assert (ones | twos).all() and 100 < ones.sum() < 300


def test_same_seed_same_draws_and_a_scaled_stage_keeps_its_draws():
    pipe = Pipeline([Stage("cam", Cost.lognormal(1 * MS, 2 * MS)),
                     Stage("calc", Cost.lognormal(0.3 * MS, 0.5 * MS), ["cam"])],
                    period_s=10 * MS)
    a, b = pipe.simulate(50, rng=7), pipe.simulate(50, rng=7)
    assert np.array_equal(a.end_to_end_s(), b.end_to_end_s())
    assert not np.array_equal(a.end_to_end_s(), pipe.simulate(50, rng=8).end_to_end_s())
    fast = pipe.replace(pipe["cam"].scaled(0.9)).simulate(50, rng=7)
    assert fast.stage_latency_s("cam") == _approx(0.9 * a.stage_latency_s("cam"))
    calc = a.end_to_end_s() - a.stage_latency_s("cam")
    assert fast.end_to_end_s() - fast.stage_latency_s("cam") == _approx(calc)


# --- prediction -------------------------------------------------------------------------------


def test_bottleneck_is_on_the_critical_path_not_the_largest_cost():
    # cam 1 ms, then x (3.5 ms) in parallel with y (2.2 ms) -> z (1.8 ms): the critical path is
    # cam -> y -> z (5 ms). 10 % faster: cam -0.1, x 0, y -0.22, z -0.18 ms
    pipe = Pipeline([Stage("cam", 1 * MS), Stage("x", 3.5 * MS, ["cam"]),
                     Stage("y", 2.2 * MS, ["cam"]), Stage("z", 1.8 * MS, ["y"]),
                     Stage("dm", 0.0, ["x", "z"])], period_s=10 * MS)
    r = predict(pipe, frames=50)
    assert r.end_to_end_p50_s == _approx(5 * MS)
    assert r.bottleneck == "y"
    assert r.gain_s == {"cam": _approx(0.1 * MS), "x": _approx(0.0), "y": _approx(0.22 * MS),
                        "z": _approx(0.18 * MS), "dm": _approx(0.0)}
    assert r.stage_p50_s["x"] == _approx(4.5 * MS)


def test_bottleneck_under_contention_counts_the_shared_core():
    # a and b share one core, a ready first: a 1 ms then b 2 ms; c (4 ms) runs alone.
    # sink waits for b (3 ms) and c (4 ms): c is the bottleneck although a+b use the core 3 ms
    pipe = Pipeline([Stage("a", 1 * MS, resource="core"), Stage("b", 2 * MS, resource="core"),
                     Stage("c", 4 * MS), Stage("sink", 0.0, ["b", "c", "a"])],
                    [Resource("core")], period_s=10 * MS)
    r = predict(pipe, frames=20)
    assert r.end_to_end_p50_s == _approx(4 * MS)
    assert r.bottleneck == "c" and r.gain_s["c"] == _approx(0.4 * MS)


def test_aot_loop_delay_counts_half_the_exposure_the_latency_and_half_a_frame_of_hold():
    pipe = Pipeline([Stage("cam", 0.25 * MS), Stage("rtc", 0.25 * MS, ["cam"])], period_s=MS)
    r = predict(pipe, frames=10)
    assert r.latency_frames_p50 == _approx(0.5)
    assert r.loop_delay_frames_p50 == _approx(1.5)  # 0.5 (exposure/2) + 0.5 + 0.5 (hold)
    r = predict(pipe, frames=10, exposure_s=0.5 * MS)
    assert r.loop_delay_frames_p99 == _approx(1.25)
    d = r.as_dict()
    assert d["end_to_end_p50_s"] == _approx(0.5 * MS) and d["rtc_p99_s"] == _approx(0.5 * MS)
    assert d["bottleneck"] == "cam"  # ties go to the upstream stage


def test_summary_keys_carry_units_and_the_timeline_exports_to_xarray():
    pipe = Pipeline([Stage("cam", 1 * MS, packets=4), Stage("calc", 1 * MS, ["cam"], packets=2)],
                    period_s=2 * MS)
    tl = pipe.simulate(5)
    assert list(tl.summary()) == ["cam_p50_s", "cam_p99_s", "calc_p50_s", "calc_p99_s",
                                  "end_to_end_p50_s", "end_to_end_p99_s"]
    ds = tl.to_xarray()
    assert ds["calc_end_s"].dims == ("frame", "calc_packet")
    assert ds["cam_ready_s"].shape == (5, 4)
    assert ds["calc_end_s"].values[:, -1] == _approx(tl.end_to_end_s())
    assert ds.attrs["period_s"] == 2 * MS


def test_six_stages_of_twenty_packets_on_two_cores():
    stages = [Stage("cam", 500 * US, packets=20)]
    for name in ["calib", "cent", "net", "recon"]:
        stages.append(Stage(name, Cost.lognormal(100 * US, 200 * US), [stages[-1].name],
                            "cpu", 20, 1 * US))
    stages.append(Stage("dm", 20 * US, ["recon", "cent"], "cpu"))
    pipe = Pipeline(stages, [Resource("cpu", 2)], period_s=1 * MS)
    assert pipe.contended == ("cpu",)
    tl = pipe.simulate(2000, 0)  # about 0.1 s (speed is measured in benchmarks, not here)
    e2e = tl.end_to_end_s()
    assert e2e.shape == (2000,) and np.all(np.isfinite(e2e))
    # every packet of a stage on the 2-core resource starts no earlier than it was ready
    for name in ["calib", "cent", "net", "recon", "dm"]:
        assert np.all(tl.start_s[name] >= tl.ready_s[name])


# --- units and validation ---------------------------------------------------------------------


def test_link_rates_in_bits_are_converted_to_bytes_once():
    assert bits_to_bytes(8) == 1 and bytes_to_bits(1) == 8
    assert gbit_per_s(10) == 1.25e9  # 10 GbE moves 1.25 GB/s, not 10
    assert mbit_per_s(100) == 12.5e6
    assert gbyte_per_s(2) == 2e9
    # 1 MB over 10 Gbit/s: 0.8 ms (0.1 ms if bits were taken for bytes), plus latency
    assert transfer_s(1e6, gbit_per_s(10)) == pytest.approx(0.8 * MS)
    assert transfer_s(1e6, gbit_per_s(10), latency_s=5 * US) == pytest.approx(0.805 * MS)
    with pytest.raises(ValueError, match="bytes_per_s must be"):
        transfer_s(1e6, 0)


def test_roofline_takes_the_larger_of_compute_and_memory_time():
    # 2 Gflop at 1 Tflop/s = 2 ms; 1 GB at 1 TB/s = 1 ms: 2 ms, not 3 ms
    assert roofline_s(2e9, 1e9, 1e12, gbyte_per_s(1000)) == pytest.approx(2 * MS)
    assert roofline_s(1e6, 4e9, 1e12, gbyte_per_s(1000)) == pytest.approx(4 * MS)


@pytest.mark.parametrize(("build", "match"), [
    (lambda: Pipeline([Stage("a", 1.0, ["c"]), Stage("b", 1.0, ["a"]), Stage("c", 1.0, ["b"])]),
     r"cycle: a -> b -> c -> a"),
    (lambda: Pipeline([Stage("a", 1.0, ["a"])]), r"cycle: a -> a"),
    (lambda: Pipeline([Stage("cam", 1.0), Stage("b", 1.0, ["cma"])]),
     r"stage 'b' has unknown input\(s\) \['cma'\]; known stages: cam, b"),
    (lambda: Stage("a", 1.0, packets=0), r"stage 'a': packets must be an integer >= 1"),
    (lambda: Stage("a", 1.0, packets=2.5), r"packets must be an integer >= 1.*2\.5"),
    (lambda: Stage("a", 1.0, packets=True), r"packets must be an integer"),
    (lambda: Pipeline([Stage("a", 1.0, resource="gpu")]),
     r"stage 'a' runs on unknown resource 'gpu'; pass Resource\('gpu', servers=...\)"),
    (lambda: Pipeline([Stage("a", 1.0), Stage("a", 2.0)]), r"two stages are named 'a'"),
    (lambda: Pipeline([Stage("a", 1.0, resource=Resource("cpu", 2))], [Resource("cpu", 1)]),
     r"resource 'cpu' is given twice"),
    (lambda: Resource("cpu", 0), r"servers must be an integer >= 1"),
    (lambda: Pipeline([Stage("a", 1.0)], period_s=0), r"period_s must be a finite number > 0"),
    (lambda: Stage("b", 1.0, ["a", "a"]), r"lists input\(s\) \['a'\] more than once"),
    (lambda: Stage("end_to_end", 1.0), r"reserved"),
    (lambda: Pipeline([Stage("a", 1.0)]).simulate(0), r"frames must be an integer >= 1"),
    (lambda: Pipeline([]), r"at least one Stage"),
])
def test_invalid_pipelines_are_refused_saying_what_to_fix(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_a_resource_given_to_a_stage_joins_the_pipeline():
    gpu = Resource("gpu", 1)
    pipe = Pipeline([Stage("a", 1 * MS, resource=gpu), Stage("b", 1 * MS, resource="gpu")],
                    period_s=5 * MS)
    assert pipe.resources == {"gpu": gpu} and pipe.contended == ("gpu",)
    assert pipe.simulate(3).end_to_end_s() == _approx([2 * MS] * 3)

"""Hardware profiles (dao.latency.profile, dao.latency.catalogue): a real quick calibration,
its shape (not its timing values), the JSON file, the log-log interpolation, the catalogue."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from dao.latency import catalogue
from dao.latency.profile import (
    LOOPS,
    N_QUANTILES,
    SCHEMA,
    ExtrapolationError,
    HardwareProfile,
    KernelTable,
    ProfileError,
    Quantiles,
    calibrate,
    load,
)


@pytest.fixture(scope="module")
def profile() -> HardwareProfile:
    """One quick calibration, on two loop sizes (the whole set: ``calibrate(quick=True)``)."""
    steps: list[tuple[float, str]] = []
    p = calibrate(quick=True, progress=lambda f, m: steps.append((f, m)),
                  loops=["sh10", "sh20", "pyr10"])
    assert steps[0][0] == 0.0 and steps[-1] == (1.0, "done")
    return p


def _ok(q: Quantiles) -> None:
    s = np.asarray(q.samples_s)
    assert s.shape == (N_QUANTILES,)
    assert np.all(np.isfinite(s)) and np.all(s > 0)
    assert np.all(np.diff(s) >= 0)
    assert 0 < q.p50_s <= q.p90_s <= q.p99_s and math.isfinite(q.p99_s)
    assert q.n >= 2


def test_calibrate_quick(profile):
    p = profile
    assert p.measured and p.source.startswith("measured on ") and "dao latency calibrate" in \
        p.source
    assert p.cores >= 1
    assert p.memory_bandwidth_bytes_per_s > 1e8 and math.isfinite(p.memory_bandwidth_bytes_per_s)
    for hop in (p.hop_stream_s, p.hop_zmq_s):
        _ok(hop)
        assert hop.n >= 100  # many hops, never one
    assert p.hop_frame_bytes > 0
    # the hops went to a second OS process
    me, others = p.notes["hop_pids"].split(" -> ")
    assert int(me) == os.getpid()
    pids = [int(v.split()[0]) for v in others.split(", ")]
    assert all(pid != os.getpid() for pid in pids)
    assert set(p.loops) == {"sh10", "sh20", "pyr10"}
    for name in ("slopes.shack-hartmann.cog", "slopes.pyramid.slopes",
                 "slopes.subtract_reference", "law.modal", "law.integrator", "stream.write",
                 "stream.write_cold", "stream.read", "component.slopes.shack-hartmann",
                 "component.slopes.pyramid", "component.controller.modal"):
        table = p.kernels[name]
        assert table.points, name
        for pt in table.points:
            _ok(pt.cost)
            assert pt.loop in LOOPS
    # the components ran once per frame period of the loop's own camera, rendering beside
    periods = {label: float(p.notes[f"components_{label}"].split()[2]) for label in p.loops}
    assert all(v > 0 for v in periods.values())
    assert periods["sh20"] > periods["sh10"]  # a larger camera renders more slowly
    assert "simulated camera" in p.notes["components_sh10"]


def _renderers() -> list[int]:
    """Processes of this one running dao.latency.profile._render."""
    out = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"_render" in cmd and ppid == os.getpid():
            out.append(int(pid))
    return out


def test_camera_beside_runs_while_measuring_then_stops():
    from dao.latency.profile import _camera_beside

    with _camera_beside("shack-hartmann", 10) as period:
        assert 0 < period < 0.1
        assert len(_renderers()) == 1  # rendering in a second process meanwhile
    assert _renderers() == []
    with pytest.raises(ProfileError, match="simulated camera.*failed: ValueError: sensor.type"), \
            _camera_beside("curvature", 10):
        pass
    assert _renderers() == []


def test_cold_bytes_is_a_cores_cache():
    from dao.latency.profile import cache_sizes, cold_bytes

    sizes = cache_sizes()
    assert all(isinstance(k, int) and v > 0 for k, v in sizes.items())
    assert cold_bytes() == sizes.get(2, 2 << 20)
    assert 64 << 10 <= cold_bytes() <= 256 << 20


def test_kernel_cost_grows_with_size(profile):
    # 316 vs 80 subapertures, 14x the matrix elements: the medians must grow
    for name in ("slopes.shack-hartmann.cog", "law.modal"):
        small, large = profile.kernels[name].points[0], profile.kernels[name].points[-1]
        assert large.size > small.size
        assert large.cost.p50_s > small.cost.p50_s, name
    writes = profile.kernels["stream.write"].points
    assert writes[-1].size > 100 * writes[0].size


def test_loop_costs_and_geometry(profile):
    geo = profile.loops["sh20"]
    assert geo["n_slopes"] == 2 * geo["estimator_size"]
    assert geo["matrix_elements"] == geo["n_actuators"] * geo["n_slopes"]
    costs = profile.loop_costs("sh20")
    assert costs["slopes.shack-hartmann.cog"] is profile.cost("slopes.shack-hartmann.cog",
                                                              geo["estimator_size"])
    with pytest.raises(ProfileError, match="no loop 'sh99'"):
        profile.loop_costs("sh99")
    with pytest.raises(ProfileError, match="no kernel 'fft'"):
        profile.cost("fft", 10)


def test_save_load_round_trip(profile, tmp_path):
    path = tmp_path / "profile.json"
    profile.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = load(path)
    assert back == profile
    doc = json.loads(path.read_text())
    assert doc["schema"] == SCHEMA
    # saving over a file of another mode leaves it 0600
    os.chmod(path, 0o644)
    profile.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_bad_files_refused(profile, tmp_path):
    good = tmp_path / "good.json"
    profile.save(good)
    text = good.read_text()
    cases = {
        "truncated": (text[: len(text) // 2], "not JSON"),
        "foreign": ('{"hello": 1}', "no 'schema' key"),
        "binary": (None, "not JSON"),
        "schema": (text.replace(SCHEMA, "dao.latency.profile/99"), "schema"),
    }
    doc = json.loads(text)
    doc["profile"]["colour"] = "blue"
    cases["unknown key"] = (json.dumps(doc), "unknown key.*colour")
    doc = json.loads(text)
    del doc["profile"]["kernels"]
    cases["missing key"] = (json.dumps(doc), "missing key.*kernels")
    doc = json.loads(text)
    k = next(iter(doc["profile"]["kernels"]))
    doc["profile"]["kernels"][k]["points"][0]["cost"]["samples_s"] = [1.0, 0.5]
    cases["bad samples"] = (json.dumps(doc), "ascending")
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        if content is None:
            path.write_bytes(b"\x93NUMPY\x01\x00\xff\xfe")
        else:
            path.write_text(content)
        with pytest.raises(ProfileError, match=message):
            load(path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.json")


def _q(scale: float) -> Quantiles:
    return Quantiles.from_samples(scale * np.linspace(1.0, 2.0, 1000))


def test_interpolation_log_log():
    t = KernelTable("k", "elements", "k()")
    t.add(100, _q(1e-6))
    t.add(10_000, _q(1e-4))  # cost proportional to size
    mid = t.cost(1000)
    assert mid.p50_s == pytest.approx(1e-5 * 1.5, rel=1e-6)  # exact on a power law
    assert np.allclose(mid.samples_s, np.asarray(_q(1e-5).samples_s), rtol=1e-9)
    assert t.cost(100) == _q(1e-6)  # a measured size: as measured
    # a little beyond the range: the end segment's slope
    assert t.cost(12_000).p50_s == pytest.approx(1.2e-4 * 1.5, rel=1e-6)
    with pytest.raises(ExtrapolationError, match="outside the measured 100 .. 10000"):
        t.cost(100_000)
    with pytest.raises(ExtrapolationError, match="outside"):
        t.cost(10)
    with pytest.raises(ValueError, match="> 0"):
        t.cost(0)
    one = KernelTable("one", "bytes", "x()")
    one.add(64, _q(1e-6))
    assert one.cost(64) == _q(1e-6)
    with pytest.raises(ExtrapolationError, match="one size measured only"):
        one.cost(65)


def test_quantiles():
    q = Quantiles.from_samples(np.arange(1, 1001) * 1e-6)
    assert q.p50_s == pytest.approx(500.5e-6)
    assert q.p99_s == pytest.approx(990.01e-6)
    d = q.draw(10_000, np.random.default_rng(0))
    assert d.min() >= q.samples_s[0] and d.max() <= q.samples_s[-1]
    assert np.median(d) == pytest.approx(q.p50_s, rel=0.05)
    assert q.scaled(2).p99_s == pytest.approx(2 * q.p99_s)
    with pytest.raises(ValueError):
        Quantiles.from_samples([1.0])
    with pytest.raises(ValueError):
        Quantiles.from_samples([1.0, float("nan")])


def test_median_of_runs_ignores_one_noisy_tail():
    rng = np.random.default_rng(3)
    calm = [Quantiles.from_samples(rng.uniform(10e-6, 20e-6, 2000)) for _ in range(2)]
    noisy = Quantiles.from_samples(np.r_[rng.uniform(10e-6, 20e-6, 1960), np.full(40, 5e-3)])
    m = Quantiles.median_of([calm[0], noisy, calm[1]])
    assert m.p99_s < 25e-6 < noisy.p99_s  # the spell of load in one run is not the tail
    assert m.p50_s == pytest.approx(15e-6, rel=0.05)
    assert np.all(np.diff(m.samples_s) >= 0) and m.n == 6000
    assert Quantiles.median_of([noisy]) == noisy
    with pytest.raises(ValueError, match="at least one"):
        Quantiles.median_of([])


def test_catalogue(profile, tmp_path):
    assert catalogue.LINKS["pcie3-x16"].bandwidth_bytes_per_s == pytest.approx(15.75e9,
                                                                               rel=1e-3)
    assert catalogue.LINKS["pcie4-x16"].bandwidth_bytes_per_s == pytest.approx(31.5e9, rel=1e-3)
    assert catalogue.LINKS["10gbe"].bandwidth_bytes_per_s == 1.25e9
    assert catalogue.LINKS["100gbe"].transfer_s(12_500) == pytest.approx(1e-6)
    assert catalogue.MACHINES["amd-epyc-9654"].memory_bandwidth_bytes_per_s == 460.8e9
    assert set(catalogue.CATALOGUE) == set(catalogue.MACHINES) | set(catalogue.LINKS)
    for entry in catalogue.CATALOGUE.values():
        assert entry.source
    d = catalogue.derive("amd-epyc-9654", profile)
    assert not d.measured and d.source.startswith("NOT MEASURED")
    f = float(d.notes["kernel_scale"].split()[0])
    name = "slopes.shack-hartmann.cog"
    assert d.kernels[name].points[0].cost.p50_s == pytest.approx(
        f * profile.kernels[name].points[0].cost.p50_s, rel=1e-3)
    assert d.hop_stream_s == profile.hop_stream_s
    d.save(tmp_path / "epyc.json")
    assert load(tmp_path / "epyc.json") == d
    with pytest.raises(KeyError, match="no machine"):
        catalogue.derive("cray-1", profile)

"""dao.latency.published: published AO RTC latencies beside the model's figure of the same
quantity, each within the band its case states (and explains)."""

from __future__ import annotations

import math

import pytest

from dao.latency.model import Pipeline
from dao.latency.published import (
    CASES,
    LAST_PIXEL_TO_DM,
    PublishedCase,
    compare,
    model_latency_s,
    sfpdp_bytes_per_s,
)


def test_at_least_three_cases():
    assert len(CASES) >= 3


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_is_documented(name):
    case = CASES[name]
    assert isinstance(case, PublishedCase) and case.name == name
    cit = case.citation
    assert cit.authors and cit.title and cit.venue and 1990 < cit.year < 2100
    assert str(cit)
    assert case.measures and case.published_kind and case.why and case.inputs_source
    assert case.assumptions, "every case states what it assumes"
    lo, hi = case.tolerance
    assert 0 <= lo < hi


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_builds_and_is_within_its_stated_band(name):
    case = CASES[name]
    pipe = case.pipeline()
    assert isinstance(pipe, Pipeline)
    assert [s.name for s in pipe.stages] == ["readout", "pixels", "mvm", "dm_send"]
    model = case.model_s()
    assert math.isfinite(model) and model > 0
    lo, hi = case.tolerance
    ratio = model / case.published_s
    assert lo <= ratio <= hi, f"{name}: model {model:.3g} s vs published {case.published_s:.3g} s"


def test_elt_cases_are_mvm_bound_and_within_2x():
    # the two ELT-scale cases: the memory-bound MVM dominates and the model lands within 2x
    for name in ("elt_scao_sh_knl", "elt_scao_pyramid_knl"):
        pred = CASES[name].predict()
        assert pred.bottleneck == "mvm"
        assert 0.5 <= model_latency_s(pred) / CASES[name].published_s <= 2.0


def test_units():
    # sFPDP 2.5 Gbaud, 8b/10b: 2.0 Gbit/s payload = 250e6 bytes/s, not bits
    assert sfpdp_bytes_per_s(2.5) == pytest.approx(250e6)
    knl = CASES["elt_scao_sh_knl"]
    assert knl.link_bytes_per_s == pytest.approx(5e9)  # 40 Gbit/s = 5e9 B/s
    assert knl.memory_bytes_per_s == pytest.approx(450e9)
    # the MVM's bytes: 5318 x 9232 float32 = 196.4 MB; at 0.85 x 450 GB/s: 513.6 us
    assert knl.stage_costs_s()["mvm"] == pytest.approx(
        (4 * 9232 * 5318 + 4 * (9232 + 5318)) / (0.85 * 450e9))
    # 800x800 16-bit pixels over 5e9 B/s: 256 us
    assert knl.stage_costs_s()["readout"] == pytest.approx(800 * 800 * 2 / 5e9)


def test_compare_rows():
    rows = compare()
    assert {r["name"] for r in rows} == set(CASES)
    for r in rows:
        assert r["measures"] == LAST_PIXEL_TO_DM
        assert r["ratio"] == pytest.approx(r["model_s"] / r["published_s"])
        assert r["source"] and r["assumptions"]

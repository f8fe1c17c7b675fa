"""The loop configuration refuses what no part of the loop would read, before calibrating.

``tests/fixtures/bad_loop_configs.toml`` holds the wrong configurations, one wrong value each,
with the key the error must name.
"""

from __future__ import annotations

import inspect
import math
import tomllib
from pathlib import Path

import pytest

from dao.hw import SimulatedBench
from dao.loop import DEFAULT_CONFIG, load_loop_config
from dao.loop import config as loop_config

CORPUS = Path(__file__).parents[1] / "fixtures" / "bad_loop_configs.toml"
CASES = tomllib.loads(CORPUS.read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["toml"] for c in CASES])
def test_each_wrong_config_of_the_corpus_is_refused_with_its_key_named(case):
    with pytest.raises(ValueError) as exc:
        load_loop_config(tomllib.loads(case["toml"]))
    assert case["key"] in str(exc.value)


def test_a_wrong_file_is_refused_like_its_dict(tmp_path):
    f = tmp_path / "loop.toml"
    f.write_text("[bench]\nframe_rate = 0\n")
    with pytest.raises(ValueError, match=r"^bench.frame_rate = 0: must be a number > 0 "
                                         r"\(frames per second, Hz\)$"):
        load_loop_config(f)


def test_every_rule_has_a_case_in_the_corpus():
    named = {c["key"] for c in CASES}
    assert set(loop_config._RULES) <= named, sorted(set(loop_config._RULES) - named)


def test_every_key_has_a_rule_and_every_default_passes_it():
    default = tomllib.loads(DEFAULT_CONFIG)
    bench = set(inspect.signature(SimulatedBench).parameters) - {"sensor", "wavelength_science"}
    keys = {f"bench.{k}" for k in bench}
    keys |= {f"sensor.{k}" for k in loop_config._EXTRA_KEYS["sensor"]}
    keys |= {f"{t}.{k}" for t, v in default.items() if t not in ("streams", "components")
             for k in v}
    assert keys == set(loop_config._RULES)
    for table, values in default.items():
        for key, value in values.items():
            rule = loop_config._RULES.get(f"{table}.{key}")
            assert rule is None or rule.ok(value), (table, key, value)


@pytest.mark.parametrize(("key", "value"), [
    ("bench.frame_rate", 0), ("bench.n_subap", 2.5), ("run.priority", 100),
    ("sensor.method", "centroid"), ("controller.kp", math.nan),
])
def test_a_refused_value_is_named_with_its_key_and_what_is_allowed(key, value):
    table, k = key.split(".")
    with pytest.raises(ValueError) as exc:
        load_loop_config({table: {k: value}})
    assert str(exc.value) == f"{key} = {value!r}: must be {loop_config._RULES[key].allowed}"


@pytest.mark.parametrize(("config", "message"), [
    ({"run": {"history_frame": 3}},
     r"unknown key run.history_frame \(did you mean run.history_frames\?\): \[run\] has"),
    ({"bench": {"n_subaps": 12}}, r"unknown key bench.n_subaps .*\[bench\] has .*n_subap"),
    ({"bench": {"n_subaps": 12, "frame_rates": 1}}, "unknown keys bench.frame_rates"),
    ({"components": {"camera": {"nam": "x"}}}, "components.camera.nam: components.camera has "
                                               "name and class"),
    ({"components": {"dm": {"name": "x"}}}, "unknown component role components.dm"),
    ({"components": {"camera": {"name": "a/b"}}}, r"components.camera.name = 'a/b'"),
    ({"science": {"every": 0}}, r"science.every = 0: must be an integer >= 1"),
    ({"run": {"history_frames": -1}}, r"run.history_frames = -1: must be an integer >= 0"),
    ({"controller": {"gain": "0.4"}}, r"controller.gain = '0.4': must be a number >= 0 and <= 2"),
    ({"run": {"command_timeout": 0}}, "run.command_timeout"),
    ({"streams": {"slopes": "/tmp/s"}}, r"streams.slopes = '/tmp/s' is not a stream name"),
    ({"streams": {"slopes": ""}}, "streams.slopes = '' is not a stream name"),
    ({"streams": {"slopes": "s", "dm_command": "s"}},
     "streams.slopes and streams.dm_command are both 's'"),
    ({"contoller": {"gain": 0.3}}, r"unknown loop config table 'contoller' \(did you mean "
                                   r"controller\?\)"),
    ({"sensor": {"type": "curvature"}}, "shack-hartmann, pyramid"),
])
def test_bad_keys_and_values_are_refused_with_the_key_named(config, message):
    with pytest.raises(ValueError, match=message):
        load_loop_config(config)


def test_overrides_are_checked_like_the_file():
    """``AOLoop(n_subap=0)`` and the like pass their values as overrides."""
    with pytest.raises(ValueError, match=r"bench.n_subap = 0: must be an integer >= 2"):
        load_loop_config(None, bench={"n_subap": 0})
    with pytest.raises(ValueError, match="unknown loop config table 'benches'"):
        load_loop_config(None, benches={"n_subap": 10})
    assert load_loop_config(None, bench={"n_subap": 10})["bench"]["n_subap"] == 10


def test_the_defaults_and_good_values_load(tmp_path):
    cfg = load_loop_config()
    assert cfg == tomllib.loads(DEFAULT_CONFIG)
    cal = tmp_path / "cal.npz"
    cal.write_bytes(b"")
    good = {
        "bench": {"wind": [10.0, 5.0], "cn2_weights": [0.7, 0.3], "wind_direction": 0.5,
                  "n_subap": 2, "seed": None, "frame_rate": 500, "read_noise": 1.5,
                  "flux": 200.0, "pyramid_samples_per_pixel": 4},
        "sensor": {"type": "pyramid", "n_modulation": 8, "mode": "slopes_global"},
        "calibration": {"file": str(cal), "drop_modes": 0},
        "controller": {"law": "pid", "gain": 2, "leak": 0, "modal_gains": [1.0, 0.5, 0],
                       "kp": -0.1, "kd": 0.2, "basis": "svd"},
        "run": {"start": "closed", "priority": 99, "history_frames": 0},
    }
    cfg = load_loop_config(good)
    assert cfg["bench"]["wind"] == [10.0, 5.0] and cfg["sensor"]["n_modulation"] == 8
    assert cfg["calibration"]["file"] == str(cal) and cfg["run"]["start"] == "closed"
    assert "[bench]" in DEFAULT_CONFIG


def test_a_component_class_that_cannot_be_loaded_is_refused_early():
    with pytest.raises(ValueError, match=r"components.slopes.class .*dao.loop.components:Slopes"):
        load_loop_config({"components": {"slopes": {"class": "dao.loop_components:Slopes"}}})


def test_kernel_threads_half_the_cores_by_default():
    import os

    from dao.loop.aoloop import kernel_threads

    cores = len(os.sched_getaffinity(0))
    assert kernel_threads(0) == max(1, cores // 2)
    assert kernel_threads(3) == 3
    assert load_loop_config({"run": {"kernel_threads": 2}})["run"]["kernel_threads"] == 2

"""The loop configuration refuses what no part of the loop would read, before calibrating."""

from __future__ import annotations

import pytest

from dao.loop import DEFAULT_CONFIG, load_loop_config


@pytest.mark.parametrize(("config", "message"), [
    ({"run": {"history_frame": 3}}, r"unknown key\(s\) \['history_frame'\] in \[run\]"),
    ({"bench": {"n_subaps": 12}}, r"unknown key\(s\) \['n_subaps'\] in \[bench\].*n_subap"),
    ({"components": {"camera": {"nam": "x"}}}, "use name and class"),
    ({"components": {"dm": {"name": "x"}}}, "unknown component role components.dm"),
    ({"science": {"every": 0}}, "science.every must be a number of at least 1"),
    ({"run": {"history_frames": -1}}, "run.history_frames must be .* at least 0"),
    ({"controller": {"gain": "0.4"}}, "controller.gain must be a number"),
    ({"run": {"command_timeout": 0}}, "run.command_timeout"),
    ({"streams": {"slopes": "/tmp/s"}}, r"streams.slopes = '/tmp/s' is not a stream name"),
    ({"streams": {"slopes": ""}}, "streams.slopes = '' is not a stream name"),
    ({"streams": {"slopes": "s", "dm_command": "s"}},
     "streams.slopes and streams.dm_command are both 's'"),
])
def test_bad_keys_and_values_are_refused_with_the_key_named(config, message):
    with pytest.raises(ValueError, match=message):
        load_loop_config(config)


def test_every_default_key_and_the_bench_arguments_are_accepted():
    cfg = load_loop_config({"bench": {"read_noise": 1.5, "flux": 200.0},
                            "sensor": {"type": "pyramid", "n_modulation": 8}})
    assert cfg["bench"]["read_noise"] == 1.5 and cfg["sensor"]["n_modulation"] == 8
    assert "[bench]" in DEFAULT_CONFIG


def test_a_component_class_that_cannot_be_loaded_is_refused_early():
    with pytest.raises(ValueError, match=r"components.slopes.class .*dao.loop.components:Slopes"):
        load_loop_config({"components": {"slopes": {"class": "dao.loop_components:Slopes"}}})

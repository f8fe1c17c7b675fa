"""Published parameters and the Component base class, in one process, with real streams."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from dao.examples import Counter, Faulty, Relay
from dao.runtime.component import TIMING_FIELDS, Component, ComponentError, Input, Output
from dao.runtime.parameters import Parameter, ParameterError, dump_parameters, parameters
from dao.runtime.state import HookError, State
from dao.testing import unique_name, wait_for


# -- parameters ------------------------------------------------------------------------------
class Params:
    gain = Parameter(0.5, float, unit="", bounds=(0, 1), doc="loop gain")
    exposure = Parameter(1e-3, float, unit="s", bounds=(1e-6, None))
    n = Parameter(3, int, bounds=(1, 10))
    flag = Parameter(False, bool)
    mode = Parameter("a", str, choices=("a", "b"))
    offsets = Parameter([0.0, 0.0], list)
    even = Parameter(2, int, validator=lambda o, v: None if v % 2 == 0 else 1 / 0)
    clip = Parameter(1.0, float, validator=lambda o, v: min(v, o.n))


def test_parameter_defaults_and_assignment():
    p = Params()
    assert p.gain == 0.5
    p.gain = 1  # an int is a number
    assert p.gain == 1.0 and isinstance(p.gain, float)
    assert Params().gain == 0.5  # per instance
    p.n = 4.0
    assert p.n == 4 and isinstance(p.n, int)
    p.clip = 7.5
    assert p.clip == 4  # the validator's replacement value


@pytest.mark.parametrize(
    "name,value,match",
    [
        ("gain", 2, "above the upper bound 1"),
        ("exposure", 0, r"below the lower bound 1e-06 s"),
        ("gain", "0.3", "expected a number"),
        ("gain", float("nan"), "NaN"),
        ("gain", True, "expected a number"),
        ("n", 2.5, "fractional"),
        ("flag", "yes", "expected a bool"),
        ("mode", "c", "not one of"),
        ("even", 3, "even"),
    ],
)
def test_parameter_refusals(name, value, match):
    p = Params()
    before = getattr(p, name)
    with pytest.raises(ParameterError, match=match):
        setattr(p, name, value)
    assert getattr(p, name) == before


def test_parameter_parse_and_format():
    ps = parameters(Params)
    assert ps["gain"].parse(" 0.25 ") == 0.25
    assert ps["n"].parse("4") == 4 and ps["n"].parse("4.0") == 4
    assert ps["flag"].parse("on") is True and ps["flag"].parse("False") is False
    assert ps["mode"].parse("b") == "b" and ps["mode"].parse('"b"') == "b"
    assert ps["offsets"].parse("[1, 2.5]") == [1, 2.5]
    assert ps["gain"].format(0.1) == "0.1"
    assert ps["flag"].format(True) == "true"
    assert ps["offsets"].format([1, 2]) == "[1, 2]"
    assert list(ps) == ["gain", "exposure", "n", "flag", "mode", "offsets", "even", "clip"]
    assert dump_parameters(Params())["exposure"] == 1e-3
    assert ps["exposure"].describe()["unit"] == "s"


def test_on_change_callback():
    seen = []

    class P:
        gain = Parameter(0.5, float, on_change=lambda o, old, new: seen.append((old, new)))

    p = P()
    p.gain = 0.25
    assert seen == [(0.5, 0.25)]


def test_bad_default_is_refused_at_class_creation():
    with pytest.raises(ParameterError):
        Parameter("x", float)


# -- component lifecycle -----------------------------------------------------------------------
def test_counter_runs_only_in_running(stream_dir):
    name = unique_name("cnt")
    c = Counter(name, period=1e-3, step=3)
    with pytest.raises(ComponentError, match="opened at Enable"):
        c.counter  # noqa: B018
    c.init()
    c.enable()
    out = c.counter
    assert out.path.endswith(f"{name}_counter.im.shm")
    time.sleep(0.03)
    assert int(out.get_data()[0, 0]) == 0  # Idle: nothing written
    c.run()
    wait_for(lambda: int(out.get_data()[0, 0]) >= 30)
    c.idle()
    v = int(out.get_data()[0, 0])
    time.sleep(0.03)
    assert int(out.get_data()[0, 0]) == v and v % 3 == 0
    # parameters change while running
    c.run()
    c.handle_command("SETUP", "step=1000")
    wait_for(lambda: int(out.get_data()[0, 0]) > v + 1000)
    c.goto("Off")
    assert c.state is State.OFF
    c.close()


def test_timing_fifo_is_written(stream_dir):
    import dao

    name = unique_name("tim")
    c = Counter(name, period=1e-3)
    c.goto("Running")
    wait_for(lambda: c.iterations >= 20)
    c.idle()
    timing = dao.shm(f"{name}_timing")
    assert timing.depth == c.timing_depth and timing.shape == (len(TIMING_FIELDS), 1)
    assert timing.dtype == np.int64
    assert TIMING_FIELDS == ("input_cnt0", "start_ns", "end_ns", "frame_id")
    cnt, start, end, frame_id = (int(v) for v in timing.get_data()[:, 0])
    assert abs(start - time.time_ns()) < 60e9 and end >= start  # CLOCK_REALTIME, ns
    assert cnt == c.iterations - 1 and frame_id == -1
    # the records are the stream's history: one per iteration, in order
    hist = timing.get_history(10)[:, :, 0]
    assert np.all(np.diff(hist[:, 0]) == 1) and np.all(np.diff(hist[:, 1]) > 0)
    assert timing.get_timestamp_ns() >= end  # written after the end: same clock as streams
    stats = json.loads(c.query("stats"))
    # durations only as sane values: how fast is for benchmarks/runtime.py, not a loaded CI
    assert stats["iterations"] >= 20 and stats["period_mean"] > 0
    assert 0 < stats["processing_p50_s"] <= stats["processing_p99_s"]
    assert json.loads(c.query("timing_fields")) == list(TIMING_FIELDS)
    timing.close()
    c.close()


def test_timing_records_the_trigger_frame(stream_dir):
    import dao

    src_name = unique_name("src")
    src = dao.shm(src_name, np.zeros((4, 4), np.float32))
    r = Relay(unique_name("rel"), config={"streams": {"source": src_name}})
    r.goto("Running")
    timing = dao.shm(r.timing_name)
    for i in range(1, 4):
        src.set_data(np.full((4, 4), i, np.float32), cnt2=100 + i)
        wait_for(lambda i=i: r.iterations == i, timeout=5.0)
    cnt, start, end, frame_id = (int(v) for v in timing.get_data()[:, 0])
    assert cnt == src.get_counter() and frame_id == 103
    assert start >= src.get_timestamp_ns()  # woken after the frame was written
    r.goto("Off")
    r.close()
    timing.close()
    src.delete()


def test_exception_in_process_goes_to_error_and_recover(stream_dir):
    c = Faulty(unique_name("flt"), period=1e-3, fail_at=5)
    c.goto("Running")
    wait_for(lambda: c.state is State.ERROR)
    assert "deliberate failure at count 5" in c.error_reason
    assert "Traceback" in c.error_reason
    assert c.thread.state == "waiting"  # the loop stopped
    n = int(c.counter.get_data()[0, 0])
    assert c.recover() is State.IDLE and c.error_reason is None
    c.run()
    wait_for(lambda: int(c.counter.get_data()[0, 0]) > n + 3)  # counting on
    c.goto("Off")
    c.close()


def test_relay_wakes_on_its_input(stream_dir):
    import dao

    src_name = unique_name("src")
    src = dao.shm(src_name, np.zeros((8, 8), np.float32))
    r = Relay(unique_name("rel"), config={"streams": {"source": src_name}})
    r.goto("Running")
    sink = r.sink
    assert sink.shape == (8, 8) and sink.dtype == np.float32  # like= the input
    for i in range(1, 6):
        src.set_data(np.full((8, 8), i, np.float32))
        wait_for(lambda i=i: sink.get_data()[0, 0] == i, timeout=2.0)
    time.sleep(0.05)
    assert r.iterations == 5  # one iteration per frame, none for stale posts
    # frames written while Idle are not processed after Run
    r.idle()
    for _ in range(3):
        src.set_data(np.zeros((8, 8), np.float32))
    r.run()
    time.sleep(0.05)
    assert r.iterations == 5
    r.goto("Off")
    r.close()
    src.delete()


def test_missing_input_stream_is_a_clear_error(stream_dir):
    r = Relay(unique_name("rel"))
    r.init()
    with pytest.raises(HookError, match="has no stream"):
        r.enable()
    assert r.state is State.ERROR and "streams" in r.error_reason
    r2 = Relay(unique_name("rel"), config={"streams": {"source": "does_not_exist"}})
    r2.init()
    with pytest.raises(HookError):
        r2.enable()
    assert "does_not_exist" in r2.error_reason
    r.close()
    r2.close()


def test_config_sets_parameters_at_init_and_update(stream_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("step = 7\nperiod = 0.002\ncustom = 'hello'\n")

    class Custom(Counter):
        def configure(self, config):
            self.custom = config["custom"]

    c = Custom(unique_name("cfg"), config=str(cfg))
    assert c.step == 1  # static configuration is loaded at Init
    c.init()
    assert c.step == 7 and c.period == 0.002 and c.custom == "hello"
    c.step = 2
    cfg.write_text("step = 9\nperiod = 0.002\ncustom = 'x'\n")
    assert c.handle_command("UPDATE", "") == "updated"
    assert c.step == 9
    c.close()


def test_bad_config_at_init_goes_to_error(stream_dir):
    c = Counter(unique_name("bad"), config={"step": 1.5})
    with pytest.raises(HookError, match="on_init"):
        c.init()
    assert c.state is State.ERROR and "expected an int" in c.error_reason


def test_unknown_constructor_parameter():
    with pytest.raises(ParameterError, match="no parameter 'gian'"):
        Counter("x", gian=0.3)


def test_user_component_in_a_few_lines(stream_dir):
    import dao

    src_name = unique_name("in")
    src = dao.shm(src_name, np.zeros(4, np.float64))

    class Integrator(Component):
        slopes = Input()
        command = Output((4,), np.float64)
        gain = Parameter(0.5, float, bounds=(0, 1))
        leak = Parameter(1.0, float, bounds=(0, 1))

        def allocate(self):
            self.acc = np.zeros(4)

        def process(self, slopes):
            self.acc *= self.leak
            self.acc -= self.gain * slopes
            self.command.set_data(self.acc)

    comp = Integrator(unique_name("int"), config={"streams": {"slopes": src_name}})
    comp.goto("Running")
    src.set_data(np.ones(4))
    wait_for(lambda: comp.command.get_data()[0] == -0.5)
    src.set_data(np.ones(4))
    wait_for(lambda: comp.command.get_data()[0] == -1.0)
    assert comp.streams() == {
        "slopes": src_name,
        "command": f"{comp.name}_command",
        "timing": f"{comp.name}_timing",
    }
    comp.goto("Off")
    comp.close()
    src.delete()


def test_goto_from_error(stream_dir):
    c = Counter(unique_name("g"), period=1e-3)
    c.goto("Idle")
    c.fail("test")
    assert c.goto("Running") is State.RUNNING
    assert c.goto("Standby") is State.STANDBY
    c.close()


def test_re_enable_keeps_the_timing_history_without_a_blank_record():
    import dao

    c = Counter(unique_name("ren"), period=1e-3)
    c.goto("Running")
    wait_for(lambda: c.iterations >= 5)
    c.goto("Standby")
    c.goto("Running")
    wait_for(lambda: c.iterations >= 10)
    c.idle()
    timing = dao.shm(c.timing_name)
    rows = timing.get_history()[:, :, 0]
    assert np.all(rows[:, 1] > 0)  # every record has a start time: none is a blank
    timing.close()
    c.close()

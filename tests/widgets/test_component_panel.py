"""The component panel, at model level: a real component in its own process (``dao run``), a
real pump thread, the panel's own widgets clicked and edited as the page would; its state is
checked with a separate command client. Every wait is bounded."""

from __future__ import annotations

import html
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import ipywidgets
import pytest

from dao.runtime import (
    CommandTimeout,
    Component,
    ComponentClient,
    LogForwarder,
    Parameter,
    ParameterError,
)
from dao.testing import child_environment, free_port, unique_name, wait_equal, wait_for
from dao.widgets import get_pump
from dao.widgets.component_panel import ComponentPanel, edit_array
from dao.widgets.plots import BokehWidget
from dao.widgets.pump import Pump

DAO = [sys.executable, "-m", "dao.cli"]
WAIT = 15.0  # seconds: generous bounds for a loaded 2-core machine

#: The events legal from each state, written out (the oracle, not the state table).
LEGAL = {
    "Off": {"Init"},
    "Standby": {"Stop", "Enable"},
    "Idle": {"Disable", "Run", "OnFailure"},
    "Running": {"Idle", "OnFailure"},
    "Error": {"Recover"},
}


@dataclass
class Remote:
    port: int
    name: str
    log_address: str


@pytest.fixture
def bus():
    fwd = LogForwarder("tcp://127.0.0.1:0", "tcp://127.0.0.1:0").start()
    yield fwd
    fwd.stop()


@pytest.fixture
def remote(procs, bus) -> Remote:
    """A ``dao.examples:Faulty`` run by ``dao run`` in its own process, publishing its log to
    ``bus``; output to files (a pipe nobody reads would block it)."""
    import subprocess

    name = unique_name("pnl")
    port = free_port()
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    p = subprocess.Popen(
        [*DAO, "run", "dao.examples:Faulty", "--port", str(port), "--name", name,
         "--log-bus", bus.frontend],
        env=child_environment(), stdout=out, stderr=err, text=True)
    p.files = (out, err)
    procs.append(p)
    with ComponentClient(port, timeout=0.5) as c:
        c.wait_ready(60.0)
    return Remote(port, name, bus.backend)


@pytest.fixture
def pump():
    p = Pump()
    yield p
    p.stop()


@pytest.fixture
def client(remote):
    c = ComponentClient(remote.port, timeout=10.0)
    yield c
    c.close()


@pytest.fixture
def panel(remote, pump):
    pnl = ComponentPanel(remote.port, pump=pump, log_address=remote.log_address)
    yield pnl
    pnl.close()


def shown_state(panel: ComponentPanel) -> str | None:
    """The state the panel's state label shows."""
    m = re.search(r">(\w+)</span>", panel.state_label.value)
    return m.group(1) if m else None


def enabled(panel: ComponentPanel) -> set[str]:
    return {n for n, b in panel.buttons.items() if not b.disabled}


def settle(get, want, timeout: float = WAIT, what: str = ""):
    """Wait until ``get()`` equals ``want`` (bounded); fail with the last value seen."""
    return wait_equal(get, want, timeout, what)


def shows(panel: ComponentPanel, state: str) -> None:
    """Wait until the panel shows ``state``, with exactly its legal buttons enabled."""
    settle(lambda: (shown_state(panel), enabled(panel)), (state, LEGAL[state]),
           what=f"panel showing {state}")


# -- state and events ----------------------------------------------------------------------------
def test_run_and_idle_clicks_change_the_component_state(panel, client):
    shows(panel, "Off")
    client.goto("Idle")  # by someone else: the panel learns it from the events
    shows(panel, "Idle")
    panel.buttons["Run"].click()
    settle(client.state, "Running", what="the component's state after clicking Run")
    shows(panel, "Running")
    # the heartbeat events give the iteration rate and the processing time
    wait_for(lambda: (panel.heartbeat.get("rate_hz") or 0) > 10, WAIT, what="a running beat")
    wait_for(lambda: re.search(r"[1-9][\d.]* Hz", panel.status_label.value), WAIT,
             what="the rate shown")
    assert "processing p50" in panel.status_label.value
    assert "µs" in panel.status_label.value or "ms" in panel.status_label.value
    panel.buttons["Idle"].click()
    settle(client.state, "Idle", what="the component's state after clicking Idle")
    shows(panel, "Idle")
    wait_for(lambda: "Idle: now Idle" in panel.message_label.value, WAIT, what="the reply")


def test_only_the_events_legal_from_each_state_are_enabled(panel, client):
    shows(panel, "Off")
    for step in ("init", "enable", "run", "fail", "recover", "run", "idle", "disable",
                 "stop"):
        getattr(client, step)()
        shows(panel, client.state())
    # a click on a disabled button (possible from the kernel): the component says no, shown
    panel.buttons["Run"].click()
    wait_for(lambda: "illegal in state" in panel.message_label.value, WAIT,
             what="the component's refusal shown")
    assert "Run refused" in panel.message_label.value
    assert client.state() == "Off"
    shows(panel, "Off")


def test_clicks_walk_the_whole_state_machine(panel, client):
    """Init, Enable, Run, OnFailure, Recover, Disable, Stop: all by the panel's buttons."""
    for event, state in (("Init", "Standby"), ("Enable", "Idle"), ("Run", "Running"),
                         ("OnFailure", "Error"), ("Recover", "Idle"), ("Disable", "Standby"),
                         ("Stop", "Off")):
        shows(panel, panel.state)  # settled: the previous reply is in
        settle(lambda: panel.busy, None, what="no command in flight")
        panel.buttons[event].click()
        settle(client.state, state, what=f"the component after {event}")
        shows(panel, state)


# -- parameters ----------------------------------------------------------------------------------
def test_parameter_controls_come_from_what_the_component_publishes(panel):
    assert panel.parameters_source == "component"
    assert set(panel.controls) == {"step", "period", "fail_at"}
    period = panel.controls["period"]
    assert isinstance(period, ipywidgets.FloatText) and period.value == 0.01
    assert period.description == "period (s)"
    assert "loop period" in period.tooltip and "[1e-05, 60] s" in period.tooltip
    assert isinstance(panel.controls["step"], ipywidgets.IntText)
    assert "[0, ∞)" in panel._hints["fail_at"].value


def test_a_refused_write_shows_the_reason_and_the_control_returns(panel, client):
    ctl = panel.controls["period"]
    settle(lambda: ctl.value, 0.01)
    ctl.value = 100.0  # as typed in the page: out of the bounds (1e-05, 60) s
    wait_for(lambda: "above the upper bound 60.0 s" in panel.notes["period"].value, WAIT,
             what="the component's reason")
    settle(lambda: ctl.value, 0.01, what="the control back at the component's value")
    assert client.query("period") == "0.01"
    ctl.value = -3.0
    wait_for(lambda: "below the lower bound" in panel.notes["period"].value, WAIT,
             what="the second reason")
    settle(lambda: ctl.value, 0.01, what="the control back again")


def test_a_good_write_is_read_back_and_shown(panel, client):
    ctl = panel.controls["period"]
    settle(lambda: ctl.value, 0.01)
    ctl.value = 0.02
    wait_for(lambda: "read back 0.02 s" in panel.notes["period"].value, WAIT,
             what="the read-back shown")
    assert client.query("period") == "0.02"
    assert panel.values["period"] == 0.02 and ctl.value == 0.02
    # a change made by someone else comes with the component's parameter event
    client.setup("step", 7)
    settle(lambda: panel.controls["step"].value, 7, what="the step control after a setup")


# -- errors --------------------------------------------------------------------------------------
def test_error_shows_the_reason_and_recover_brings_it_back(panel, client):
    client.goto("Running")
    shows(panel, "Running")
    panel.controls["fail_at"].value = 1  # process() raises at the next iteration
    shows(panel, "Error")
    wait_for(lambda: "deliberate failure at count" in panel.error_label.value, WAIT,
             what="the error reason")
    assert "RuntimeError" in panel.error_label.value and "Traceback" in panel.error_label.value
    assert panel._error_box.layout.display == "flex" and not panel.recover_button.disabled
    assert "deliberate failure" in panel.error_reason
    panel.recover_button.click()
    settle(client.state, "Idle", what="the component after Recover")
    shows(panel, "Idle")
    settle(lambda: panel._error_box.layout.display, "none", what="the error box hidden")
    assert panel.error_label.value == "" and panel.recover_button.disabled
    client.fail("DM saturated (test)")  # an OnFailure from elsewhere, with its reason
    shows(panel, "Error")
    wait_for(lambda: "DM saturated (test)" in panel.error_label.value, WAIT, what="reason")


# -- log -----------------------------------------------------------------------------------------
def test_the_log_tail_shows_the_component_log(panel, client):
    n = 0

    def logged() -> bool:
        nonlocal n
        n += 1
        client.setup("step", n)  # logs "SETUP step=n" (repeated: the bus joins late)
        return any(f"SETUP step={k}" in line for line in panel.log_tail for k in range(1, n + 1))

    wait_for(logged, WAIT, interval=0.2, what="a SETUP record in the log tail")
    wait_for(lambda: "SETUP step=" in panel.log_view.value, WAIT, what="the tail shown")
    assert len(panel.log_tail) <= 20


def test_without_a_log_bus_the_panel_says_how_to_get_one(remote, pump, monkeypatch):
    monkeypatch.delenv("DAO_LOG_BUS_OUT", raising=False)
    pnl = ComponentPanel(remote.port, pump=pump)
    try:
        wait_for(lambda: "--log-bus" in pnl.log_view.value, WAIT, what="the hint")
    finally:
        pnl.close()


# -- the pump ------------------------------------------------------------------------------------
def test_closing_leaves_the_pump_and_the_pump_stops(remote):
    pump = Pump()
    pnl = ComponentPanel(remote.port, pump=pump)
    assert pnl.running and pump.running and pump.sources == [pnl]
    children = list(pnl._widgets)
    pnl.close()
    assert pnl not in pump.sources and not pnl.running
    wait_for(lambda: not pump.running, WAIT, what="the pump thread ended")
    assert pnl._sub.closed
    assert pnl.comm is None and all(c.comm is None for c in children)
    pnl.close()  # twice is harmless
    # the kernel's pump, by default
    pnl = ComponentPanel(f"tcp://127.0.0.1:{remote.port}")
    assert pnl in get_pump().sources
    pnl.close()
    assert pnl not in get_pump().sources


def test_the_panel_sends_at_most_its_budget_per_tick(remote, client, monkeypatch):
    """A pump of 20 messages/s with a burst of 1: every tick gives a budget of 1; the panel
    spreads what changed over several ticks and still gets there."""
    sent: list[int] = [0]
    real_send = ipywidgets.Widget._send

    def counting(self, msg, buffers=None):
        if threading.current_thread().name == "dao-widgets-pump":
            sent[0] += 1
        return real_send(self, msg, buffers)

    monkeypatch.setattr(ipywidgets.Widget, "_send", counting)
    pump = Pump(max_rate=20.0, burst=0.05)
    ticks: list[tuple[int, int, int]] = []
    pnl = ComponentPanel(remote.port, pump=pump)
    real_tick = pnl.pump_tick

    def tick(now: float, budget: int) -> int:
        before = sent[0]
        k = real_tick(now, budget)
        ticks.append((budget, k, sent[0] - before))
        return k

    pnl.pump_tick = tick
    try:
        t0 = time.monotonic()
        client.goto("Running")
        settle(lambda: (shown_state(pnl), enabled(pnl)), ("Running", LEGAL["Running"]),
               what="the panel at Running, one message a tick")
        elapsed = time.monotonic() - t0
    finally:
        pnl.close()
        pump.stop()
    assert ticks and all(real <= budget and real == k for budget, k, real in ticks), ticks
    assert all(budget == 1 for budget, _, _ in ticks)
    assert sum(1 for _, k, _ in ticks if k) >= 3  # the changes took several ticks
    assert pump.stats()["messages"] <= 20.0 * elapsed + 2


# -- other targets -------------------------------------------------------------------------------
class Tuned(Component):
    """Parameters of every kind, no streams."""

    timing_depth = 0
    gain = Parameter(0.5, float, bounds=(0, 1), doc="loop gain")
    modes = Parameter(10, int, bounds=(1, 1000), doc="controlled modes")
    closed = Parameter(False, bool, doc="loop closed")
    basis = Parameter("modal", str, choices=("modal", "zonal"), doc="control space")
    label = Parameter("", str, doc="free text")
    weights = Parameter([1.0, 2.0], list, doc="per-mode weights")
    serial = Parameter("A1", str, readonly=True, doc="serial number")
    delay = Parameter(1e-3, float, unit="s", bounds=(0, None), doc="loop delay")


@pytest.fixture
def local(stream_dir):
    comp = Tuned(unique_name("tun"))
    yield comp
    comp.close()


def test_a_local_component_gets_a_control_per_parameter_type(local, pump):
    local.set_log_level("INFO")
    pnl = ComponentPanel(local, pump=pump)
    try:
        assert local.server is not None  # served on a free loopback port for the panel
        c = pnl.controls
        assert isinstance(c["gain"], ipywidgets.FloatText)
        assert isinstance(c["modes"], ipywidgets.IntText)
        assert isinstance(c["closed"], ipywidgets.Checkbox)
        assert isinstance(c["basis"], ipywidgets.Dropdown)
        assert c["basis"].options == (("modal", "modal"), ("zonal", "zonal"))
        assert isinstance(c["label"], ipywidgets.Text) and isinstance(c["weights"],
                                                                      ipywidgets.Text)
        assert c["weights"].value == "[1.0, 2.0]"
        assert c["serial"].disabled and "read-only" in c["serial"].tooltip
        assert c["delay"].description == "delay (s)" and "loop delay" in c["delay"].tooltip
        assert "[0, 1]" in pnl._hints["gain"].value
        c["closed"].value = True
        c["basis"].value = "zonal"
        c["weights"].value = "[3, 4.5]"
        c["label"].value = "night 1"
        wait_for(lambda: (local.closed, local.basis, local.weights, local.label)
                 == (True, "zonal", [3, 4.5], "night 1"), WAIT, what="the writes applied")
        for name in ("closed", "basis", "weights", "label"):
            wait_for(lambda n=name: "read back" in pnl.notes[n].value, WAIT, what=name)
        c["weights"].value = "[3,"  # not JSON: said, not sent, and the control returns
        wait_for(lambda: "not JSON" in pnl.notes["weights"].value, WAIT, what="JSON refusal")
        settle(lambda: c["weights"].value, "[3, 4.5]", what="the weights control back")
        c["modes"].value = 5000
        wait_for(lambda: "above the upper bound 1000" in pnl.notes["modes"].value, WAIT,
                 what="the bound refusal")
        settle(lambda: c["modes"].value, 10, what="modes back")
        # its log records are shown without a log bus
        wait_for(lambda: any("SETUP closed=true" in line for line in pnl.log_tail), WAIT,
                 what="the local log")
        pnl.buttons["Init"].click()
        wait_for(lambda: local.state.value == "Standby", WAIT, what="Init by click")
        shows(pnl, "Standby")
    finally:
        pnl.close()


def test_the_panel_watches_events_and_never_polls_the_command_socket(local, pump):
    pnl = ComponentPanel(local, pump=pump)
    try:
        served = local.server.served  # the first contact: QUERY parameters, events_address
        local.goto("Running")  # in this process: not through the command socket
        shows(pnl, "Running")
        beat = pnl.heartbeat.get("time")
        wait_for(lambda: pnl.heartbeat.get("time") != beat and pnl.heartbeat["iterations"] > 0,
                 WAIT, what="a new heartbeat")
        assert local.server.served == served  # shown from events: no command was sent
    finally:
        pnl.close()


class Undescribed(Tuned):
    """A component that does not describe its parameters (as a non-dao one would not)."""

    def query(self, key: str) -> str:
        if key == "parameters":
            raise ParameterError(f"no parameter {key!r}")
        return super().query(key)


def test_without_descriptions_controls_are_guessed_from_the_values(stream_dir, pump):
    comp = Undescribed(unique_name("und"))
    pnl = ComponentPanel(comp, pump=pump)
    try:
        assert pnl.parameters_source == "values"
        assert isinstance(pnl.controls["gain"], ipywidgets.FloatText)
        assert isinstance(pnl.controls["modes"], ipywidgets.IntText)
        assert isinstance(pnl.controls["closed"], ipywidgets.Checkbox)
        assert isinstance(pnl.controls["basis"], ipywidgets.Text)
        pnl.controls["gain"].value = 0.25
        wait_for(lambda: comp.gain == 0.25 and "read back" in pnl.notes["gain"].value, WAIT,
                 what="the write")
    finally:
        pnl.close()
        comp.close()


def test_a_component_without_events_is_read_every_second(stream_dir, pump):
    comp = Tuned(unique_name("nev"))
    comp.serve(0, events=False)
    pnl = ComponentPanel(comp.server.address, pump=pump, timeout=5.0)
    try:
        shows(pnl, "Off")
        assert "no events from this component" in pnl.status_label.value
        pnl.buttons["Init"].click()
        wait_for(lambda: comp.state.value == "Standby", WAIT, what="Init by click")
        shows(pnl, "Standby")
    finally:
        pnl.close()
        comp.close()


def test_bad_targets_fail_clearly():
    with pytest.raises(TypeError, match="ComponentClient, a command address"):
        ComponentPanel(object())
    with pytest.raises(CommandTimeout, match="no component answers at .* start it"):
        ComponentPanel(free_port(), timeout=0.3)
    with pytest.raises(ValueError, match="timeout must be positive"):
        ComponentPanel(1234, timeout=0)


# -- array parameters ----------------------------------------------------------------------------
GAINS_MODULE = """
import numpy as np
from dao.runtime import Component, Parameter

class Gains(Component):
    timing_depth = 0
    modal_gains = Parameter(np.round(np.linspace(0.2, 1.0, 60), 6), np.ndarray, bounds=(0, 2),
                            doc="gain factor of each control mode")
    offsets = Parameter([0.0, 0.1, 0.2], list, doc="a short list: a JSON control")
"""
GAINS0 = [round(0.2 + 0.8 * i / 59, 6) for i in range(60)]


@pytest.fixture
def gains(procs, tmp_path) -> int:
    """A component with a 60-value ndarray parameter (bounds (0, 2)), run by ``dao run`` in
    its own process; its command port."""
    import subprocess

    (tmp_path / "dao_panel_gains.py").write_text(GAINS_MODULE)
    env = child_environment()
    env["PYTHONPATH"] = os.pathsep.join((str(tmp_path), env["PYTHONPATH"]))
    port = free_port()
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    p = subprocess.Popen([*DAO, "run", "dao_panel_gains:Gains", "--port", str(port), "--name",
                          unique_name("gns")], env=env, stdout=out, stderr=err, text=True)
    p.files = (out, err)
    procs.append(p)
    with ComponentClient(port, timeout=0.5) as c:
        c.wait_ready(60.0)
    return port


@pytest.fixture
def gains_client(gains):
    c = ComponentClient(gains, timeout=10.0)
    yield c
    c.close()


@pytest.fixture
def gains_panel(gains, pump):
    pnl = ComponentPanel(gains, pump=pump)
    yield pnl
    pnl.close()


def drawn(panel: ComponentPanel, name: str = "modal_gains") -> list[float]:
    """The values the chart draws (its bokeh data source, as sent to the browser)."""
    return list(panel._charts[name].source.data["v"])


def component_gains(client: ComponentClient) -> list[float]:
    return json.loads(client.query("modal_gains"))


def test_an_array_parameter_is_a_chart_of_the_component_value(gains_panel, gains_client):
    pnl = gains_panel
    assert component_gains(gains_client) == GAINS0
    assert set(pnl.charts) == {"modal_gains"}  # the 3-value list keeps its JSON control
    assert isinstance(pnl.controls["offsets"], ipywidgets.Text)
    assert pnl.controls["offsets"].value == "[0.0, 0.1, 0.2]"
    chart = pnl.charts["modal_gains"]
    assert isinstance(chart, BokehWidget)
    assert drawn(pnl) == GAINS0
    assert list(pnl._charts["modal_gains"].source.data["i"]) == list(range(60))
    fig = pnl._charts["modal_gains"].figure
    assert fig.xaxis[0].axis_label == "mode"  # "one per control mode"
    assert (fig.y_range.start, fig.y_range.end) == pytest.approx((-0.08, 2.08))
    spans = [r.location for r in fig.center if type(r).__name__ == "Span"]
    assert sorted(spans) == [2]  # the upper bound, dashed (0 is the bars' base)
    settle(lambda: pnl.summaries["modal_gains"].value.count("60 values · min 0.2 · median 0.6 "
                                                            "· max 1"), 1, what="the summary")
    ctl = pnl.controls["modal_gains"]
    assert isinstance(ctl, ipywidgets.Text) and ctl.value == ""
    assert "0:10 = 0.3" in ctl.placeholder and "[0, 2]" in pnl._hints["modal_gains"].value
    assert "gain factor of each control mode" in ctl.tooltip and "JSON list of 60" in ctl.tooltip


def test_a_slice_assignment_sets_exactly_those_elements(gains_panel, gains_client):
    pnl, ctl = gains_panel, gains_panel.controls["modal_gains"]
    ctl.value = "10:20 = 0"  # as typed in the page (Enter)
    want = [0.0 if 10 <= i < 20 else g for i, g in enumerate(GAINS0)]
    settle(lambda: component_gains(gains_client), want, what="the component's gains")
    wait_for(lambda: "read back: 10 of 60 values changed" in pnl.notes["modal_gains"].value,
             WAIT, what="the read-back note")
    settle(lambda: drawn(pnl), want, what="the chart redrawn")
    settle(lambda: ctl.value, "", what="the edit field emptied for the next edit")
    assert "min 0 ·" in pnl.summaries["modal_gains"].value
    # several assignments, negative indices and a sub-list at once
    ctl.value = "5 = 1.5; -1 = 0.05; 0:3 = [0.1, 0.2, 0.3]"
    want[5], want[-1], want[0:3] = 1.5, 0.05, [0.1, 0.2, 0.3]
    settle(lambda: component_gains(gains_client), want, what="the second edit")
    settle(lambda: drawn(pnl), want, what="the chart after the second edit")
    # one number: every value
    ctl.value = "0.4"
    settle(lambda: component_gains(gains_client), [0.4] * 60, what="all gains at 0.4")
    settle(lambda: drawn(pnl), [0.4] * 60, what="the flat chart")
    wait_for(lambda: "min 0.4 · median 0.4 · max 0.4" in pnl.summaries["modal_gains"].value,
             WAIT, what="the summary")


def test_an_out_of_bounds_value_is_refused_and_the_chart_keeps_its_data(gains_panel,
                                                                        gains_client):
    pnl, ctl = gains_panel, gains_panel.controls["modal_gains"]
    ctl.value = "30:40 = 2.5"  # the bounds are (0, 2): the component says no
    wait_for(lambda: "above the upper bound 2" in pnl.notes["modal_gains"].value, WAIT,
             what="the component's reason")
    note = pnl.notes["modal_gains"].value
    assert "[… 60 values]" in note and len(note) < 300  # not the 60 numbers it quotes
    assert component_gains(gains_client) == GAINS0
    assert drawn(pnl) == GAINS0 and pnl.values["modal_gains"] == GAINS0
    assert ctl.value == "30:40 = 2.5"  # kept, to be corrected
    ctl.value = "30:40 = 1.9"
    settle(lambda: drawn(pnl)[30:40], [1.9] * 10, what="the corrected write drawn")
    assert component_gains(gains_client)[30:40] == [1.9] * 10


@pytest.mark.parametrize("text, why", [
    ("60 = 1", "index 60 is out of range (the indices go from 0 to 59)"),
    ("50:70 = 1", "range 50:70 goes beyond the 60 values"),
    ("[1, 2, 3]", "the list has 3 numbers, not 60"),
    ("gain", "'gain' is not a number"),
    ("0:10", "'0:10' is neither a number nor an assignment"),
    ("0:2 = [1]", "the list for 0:2 has 1 numbers, not 2"),
])
def test_bad_text_is_refused_by_the_panel_with_the_accepted_forms(gains_panel, gains_client,
                                                                  text, why):
    pnl, ctl = gains_panel, gains_panel.controls["modal_gains"]
    served = gains_client.query("modal_gains")
    ctl.value = text
    def note() -> str:
        return html.unescape(pnl.notes["modal_gains"].value)

    wait_for(lambda: why in note(), WAIT, what="the panel's refusal")
    assert "Write one number for all 60 values (0.3)" in note()
    assert "0:10 = 0.3; 5 = 0" in note() and "JSON list of 60 numbers" in note()
    assert ctl.value == text and drawn(pnl) == GAINS0
    assert gains_client.query("modal_gains") == served  # nothing was sent


def test_a_change_made_elsewhere_is_drawn(gains_panel, gains_client):
    pnl = gains_panel
    new = [round(1.5 - i / 60, 4) for i in range(60)]
    gains_client.setup("modal_gains", new)  # a notebook's client.setup(...): an event
    settle(lambda: drawn(pnl), new, what="the chart after a setup elsewhere")
    wait_for(lambda: "max 1.5" in pnl.summaries["modal_gains"].value, WAIT,
             what="the summary after a setup elsewhere")
    # and the next edit starts from the component's new value
    pnl.controls["modal_gains"].value = "0 = 0"
    settle(lambda: component_gains(gains_client), [0.0, *new[1:]], what="the edit")


def test_edit_array_forms():
    cur = [0.5] * 10
    assert edit_array(cur, " 0.3 ") == ([0.3] * 10, 10)
    assert edit_array(cur, "0:10:2 = 1")[0] == [1.0, 0.5] * 5
    assert edit_array(cur, ":3 = 0; 8: = 2;")[0] == [0, 0, 0] + [0.5] * 5 + [2, 2]
    assert edit_array(cur, json.dumps(list(range(10))))[0] == list(range(10))
    assert edit_array(list(range(10)), "3 = 7") == ([0, 1, 2, 7, 4, 5, 6, 7, 8, 9], 1)
    for bad, why in (("3 = 0.5", "not an integer"), ("", "nothing written"),
                     ("nan", "not a finite number"), ("3:1 = 0", "selects no value"),
                     ("0:10:-1 = 0", "must be positive"), ("x = 1", "'x' is not an index")):
        with pytest.raises(ValueError, match=re.escape(why)):
            edit_array(list(range(10)) if bad.startswith("3 =") else cur, bad)


class _Idle(Pump):
    """A pump that registers sources but never runs: the test calls ``pump_tick`` itself."""

    def add(self, source) -> None:
        with self._lock:
            self._sources.append(source)


class LocalGains(Component):
    timing_depth = 0
    modal_gains = Parameter([0.5] * 300, list, bounds=(0, 2), doc="per-mode gains")


def test_a_chart_redraw_waits_for_a_budget_that_holds_it(stream_dir):
    """A redraw is one bokeh document patch (3 messages): never sent on a smaller budget, and
    nothing else is held back meanwhile."""
    comp = LocalGains(unique_name("lgn"))
    pnl = ComponentPanel(comp, pump=_Idle(), min_interval=0.0)
    sent: list[tuple[int, int]] = []

    def tick(budget: int) -> int:
        k = pnl.pump_tick(time.monotonic(), budget)
        sent.append((budget, k))
        return k

    try:
        assert pnl._charts["modal_gains"].figure.xaxis[0].axis_label == "mode"
        for _ in range(300):  # the first showing, one message a tick
            if tick(1) == 0 and not pnl._left:
                break
        comp.modal_gains = [1.0] * 300  # in its process: the panel learns it from the event
        summary = pnl.summaries["modal_gains"]
        wait_for(lambda: tick(2) >= 0 and "max 1" in summary.value, WAIT,
                 what="the summary shown on a budget of 2")
        for _ in range(10):
            tick(2)
        assert drawn(pnl) == [0.5] * 300 and pnl._left  # the redraw waits
        chart = pnl.charts["modal_gains"]
        m0, c0 = pnl.messages, chart.messages
        assert tick(3) == 3 and drawn(pnl) == [1.0] * 300
        assert pnl.messages - m0 == 3 and chart.messages - c0 == 3
        for _ in range(5):
            tick(3)
        assert chart.messages - c0 == 3  # drawn once: the same values are not sent again
        assert all(k <= budget for budget, k in sent), sent
    finally:
        pnl.close()
        comp.close()


def test_a_chart_fits_values_small_against_their_bounds():
    """Gain factors of 1 under a bound of 10 fill the chart, not a strip at its bottom."""
    from dao.widgets.component_panel import _Chart

    chart = _Chart("modal_gains", {"value": [1.0] * 99, "bounds": [0.0, 10.0], "unit": "",
                                   "type": "ndarray"})
    fig = chart.figure
    assert type(fig.y_range).__name__ == "DataRange1d" and fig.y_range.start == 0.0
    assert fig.yaxis[0].axis_label == "modal_gains"
    wide = _Chart("g", {"value": [0.5, 1.8], "bounds": [0.0, 2.0], "unit": "",
                        "type": "ndarray"})
    assert (wide.figure.y_range.start, wide.figure.y_range.end) == pytest.approx((-0.08, 2.08))

"""The component panel, at model level: a real component in its own process (``dao run``), a
real pump thread, the panel's own widgets clicked and edited as the page would; its state is
checked with a separate command client. Every wait is bounded."""

from __future__ import annotations

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
from dao.widgets.component_panel import ComponentPanel
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

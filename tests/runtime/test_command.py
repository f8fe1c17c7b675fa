"""The command server and client, in one process (no streams needed)."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
import zmq

from dao.errors import DaoError
from dao.proto import CommandMessage, ReplyMessage
from dao.runtime.command import (
    CommandFailed,
    CommandServer,
    CommandTimeout,
    ComponentClient,
    normalize_address,
)
from dao.runtime.component import Component
from dao.runtime.logbus import TRACE
from dao.runtime.parameters import Parameter
from dao.testing import free_port


class Loop(Component):
    """A component with parameters and no streams."""

    timing_depth = 0
    gain = Parameter(0.5, float, bounds=(0, 1), doc="loop gain")
    leak = Parameter(0.99, float, bounds=(0, 1), doc="leak")
    modes = Parameter(10, int, bounds=(1, 1000), doc="number of controlled modes")
    closed = Parameter(False, bool, doc="loop closed")
    label = Parameter("modal", str, choices=("modal", "zonal"))
    serial = Parameter("A1", str, readonly=True)

    def update(self, payload=""):
        self.updated = payload
        return "reloaded " + payload

    def other(self, payload):
        if payload == "fail":
            raise RuntimeError("asked to fail")
        return payload[::-1]


@pytest.fixture
def served():
    comp = Loop("loop")
    server = comp.serve(0)
    client = ComponentClient(server.address, timeout=2.0)
    yield comp, client
    client.close()
    comp.close()


def test_exec_walks_the_state_machine(served):
    comp, c = served
    assert c.state() == "Off"
    assert c.init() == "Standby"
    assert c.enable() == "Idle"
    assert c.run() == "Running"
    assert c.state() == "Running" and comp.state.value == "Running"
    assert c.idle() == "Idle"
    assert c.fail("dm saturated") == "Error"
    assert comp.error_reason == "dm saturated"
    assert c.query("error_reason") == "dm saturated"
    assert c.recover() == "Idle"
    assert c.disable() == "Standby"
    assert c.stop() == "Off"


def test_illegal_and_unknown_events_fail_clearly(served):
    _, c = served
    with pytest.raises(CommandFailed, match="'Run' is illegal in state 'Off'") as info:
        c.run()
    assert info.value.command == "EXEC"
    ok, payload = c.request("EXEC", "Launch")
    assert not ok and "unknown event 'Launch'" in payload
    ok, payload = c.request("EXEC", "")
    assert not ok
    assert c.state() == "Off"


def test_setup_query_dump(served):
    comp, c = served
    assert c.setup("gain", 0.3) == "gain=0.3"
    assert comp.gain == 0.3 and c.query("gain") == "0.3"
    assert c.setup("modes=12") == "modes=12"
    assert c.setup("closed", True) == "closed=true" and comp.closed is True
    assert c.setup("label", "zonal") == "label=zonal"
    assert c.call("SETUP", '{"gain": 0.25, "leak": 0.9}') == "gain=0.25, leak=0.9"
    dump = c.dump()
    assert dump == {
        "gain": 0.25,
        "leak": 0.9,
        "modes": 12,
        "closed": True,
        "label": "zonal",
        "serial": "A1",
    }
    desc = json.loads(c.query("parameters"))
    assert desc["gain"]["bounds"] == [0, 1] and desc["gain"]["doc"] == "loop gain"


@pytest.mark.parametrize(
    "payload,match",
    [
        ("gain=1.5", "above the upper bound"),
        ("gain=-1", "below the lower bound"),
        ("gain=abc", "cannot parse"),
        ("modes=2.5", "expected an int"),
        ("label=fourier", "not one of"),
        ("closed=maybe", "true/false"),
        ("nope=1", "no parameter 'nope'"),
        ("serial=B2", "read-only"),
        ("gain", "key=value"),
    ],
)
def test_setup_refused(served, payload, match):
    comp, c = served
    ok, reply = c.request("SETUP", payload)
    assert not ok and match in reply
    assert comp.gain == 0.5  # unchanged


def test_query_unknown(served):
    _, c = served
    with pytest.raises(CommandFailed, match="no parameter 'zzz'"):
        c.query("zzz")


def test_ping_update_other_log_level(served):
    comp, c = served
    assert c.ping() == os.getpid()
    assert c.update("matrices") == "reloaded matrices"
    assert c.other("abc") == "cba"
    with pytest.raises(CommandFailed, match="asked to fail"):
        c.other("fail")
    assert c.set_log_level("TRACE") == "TRACE"
    assert comp.log.level == TRACE
    assert c.set_log_level(logging.WARNING) == "WARNING"
    assert comp.log.level == logging.WARNING
    with pytest.raises(CommandFailed, match="unknown log level"):
        c.set_log_level("LOUD")


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xff\xff\xff",  # truncated varint
        b"garbage that is not protobuf",
        b"\x0a\x10short",  # length past the end
        b"\x10\x63",  # function = 99: not a COMMAND value
    ],
)
def test_malformed_messages_get_failure_and_server_lives(served, raw):
    comp, c = served
    rep = c.request_raw(raw)
    assert rep.status == ReplyMessage.FAILURE
    assert rep.payload.startswith("malformed CommandMessage")
    assert c.state() == "Off"  # still serving
    assert comp.server.malformed == 1


def test_multipart_message_gets_failure(served):
    _, c = served
    rep = c.request_raw([b"a", b"b"])
    assert rep.status == ReplyMessage.FAILURE and "got 2" in rep.payload
    assert c.ping() == os.getpid()


def test_empty_message_is_exec_of_nothing(served):
    _, c = served
    rep = c.request_raw(b"")  # a valid, empty CommandMessage: EXEC ""
    assert rep.status == ReplyMessage.FAILURE
    assert c.state() == "Off"


def test_raw_bytes_from_a_foreign_client(served):
    """A client that builds bytes by hand (as a C++ tool would) is understood."""
    _, c = served
    rep = c.request_raw(b"\x0a\x04loop\x10\x04")  # component "loop", STATE
    assert rep.status == ReplyMessage.SUCCESS and rep.payload == "Off"


def test_timeout_names_address_and_client_recovers():
    port = free_port()
    c = ComponentClient(port, timeout=0.2)
    with pytest.raises(CommandTimeout, match=f"127.0.0.1:{port}") as info:
        c.ping()
    assert isinstance(info.value, TimeoutError)
    # now a server appears at that port: the same client works (socket re-created)
    comp = Loop("late")
    comp.serve(port)
    try:
        assert c.ping() == os.getpid()
        assert c.state() == "Off"
    finally:
        c.close()
        comp.close()


def test_server_stop_is_prompt_and_port_reusable():
    comp = Loop("a")
    server = comp.serve(0)
    port = server.port
    comp.close()
    comp2 = Loop("b")
    # ZeroMQ closes a listening socket in its I/O thread, after close() returns: on a loaded
    # machine the port may stay taken for a moment; reusable within a second is prompt enough
    deadline = time.monotonic() + 1.0
    while True:
        try:
            comp2.serve(port)
            break
        except DaoError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with ComponentClient(port) as c:
        assert c.state() == "Off"
    comp2.close()


def test_bind_conflict_is_a_clear_error():
    comp = Loop("a")
    server = comp.serve(0)
    try:
        other = CommandServer(lambda *a: "", server.address)
        with pytest.raises(Exception, match="cannot bind"):
            other.start()
    finally:
        comp.close()


def test_handler_exceptions_become_failures():
    def handler(fn, payload, msg):
        if fn == "PING":
            return "pong"
        raise KeyError("nope")

    with CommandServer(handler, "tcp://127.0.0.1:0") as server:
        with ComponentClient(server.address) as c:
            assert c.request("PING") == (True, "pong")
            ok, text = c.request("STATE")
            assert not ok and "nope" in text


def test_normalize_address():
    assert normalize_address(5555) == "tcp://127.0.0.1:5555"
    assert normalize_address("5555") == "tcp://127.0.0.1:5555"
    assert normalize_address("rtc:5555") == "tcp://rtc:5555"
    assert normalize_address("tcp://10.0.0.2:7") == "tcp://10.0.0.2:7"
    assert normalize_address("ipc:///tmp/x") == "ipc:///tmp/x"
    with pytest.raises(ValueError, match="bad address"):
        normalize_address("nohost")


def test_unknown_command_name_is_refused_before_sending():
    c = ComponentClient(1)
    with pytest.raises(ValueError, match="unknown command"):
        c.request("RESET")


def test_command_message_enum_matches_client():
    assert CommandMessage.COMMAND.Value("SET_LOG_LEVEL") == 5
    assert zmq.REP  # pyzmq importable

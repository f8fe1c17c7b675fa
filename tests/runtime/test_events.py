"""Events: components and supervisors publish their state, parameters, errors, heartbeats and
health as JSON on ZeroMQ PUB sockets; ``dao events`` prints them. Real sockets on loopback, real
processes where the issue asks for them."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from dao.examples import Counter, Faulty
from dao.runtime import (
    ComponentClient,
    EventError,
    EventSubscriber,
    EventTimeout,
    Supervisor,
    subscribe,
)
from dao.runtime.events import decode_event, encode_event
from dao.testing import child_environment, free_port, unique_name, wait_for

DAO = [sys.executable, "-m", "dao.cli"]




@pytest.fixture
def served(stream_dir):
    """A Counter serving commands and events in this process."""
    c = Counter(unique_name("ev"), period=1e-3)
    c.serve(0)
    client = ComponentClient(c.server.address, timeout=5.0)
    yield c, client
    client.close()
    c.close()


class Lines:
    """The lines a process prints, read by a thread, handed out with timeouts."""

    def __init__(self, stream):
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.q.put(line)

    def get(self, timeout: float) -> str:
        line = self.q.get(timeout=timeout)
        self.seen.append(line)
        return line

    def wait_for(self, predicate, timeout: float) -> tuple[str, dict]:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching line within {timeout} s; got {self.seen}")
            try:
                line = self.get(left)
            except queue.Empty:
                continue
            ev = json.loads(line)
            if predicate(ev):
                return line, ev


# -- one process ---------------------------------------------------------------------------------
def test_snapshot_state_parameter_error_and_heartbeat_events(served):
    comp, c = served
    with subscribe(c.address) as sub:
        snap = sub.get(5)  # the current state, at once
        assert snap["kind"] == "state" and snap["snapshot"] is True
        assert snap["state"] == "Off" and snap["component"] == comp.name
        assert snap["pid"] == os.getpid()
        assert snap["parameters"] == {"step": 1, "period": 1e-3}
        c.goto("Running")
        got = [sub.wait_for(kind="state", state=s, timeout=5) for s in ("Standby", "Idle",
                                                                           "Running")]
        assert [(e["old"], e["event"]) for e in got] == [("Off", "Init"), ("Standby", "Enable"),
                                                          ("Idle", "Run")]
        assert all(e["reason"] is None and isinstance(e["time"], float) for e in got)
        assert all(e["pid"] == os.getpid() and "snapshot" not in e for e in got)
        assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
        c.setup("step", 5)
        ev = sub.wait_for(kind="parameter", timeout=5)
        assert (ev["name"], ev["old"], ev["new"], ev["state"]) == ("step", 1, 5, "Running")
        c.setup("step", 5)  # the same value: no event
        t_set, between = time.time(), []
        # a heartbeat made after the SETUP returned: any event of that SETUP came before it
        beat = sub.wait_for(predicate=lambda e: between.append(e) or (
            e["kind"] == "heartbeat" and e["time"] > t_set and e["samples"] > 0), timeout=10)
        assert [e for e in between if e["kind"] == "parameter"] == []
        assert beat["state"] == "Running" and beat["iterations"] > 0 and beat["pid"] == os.getpid()
        assert beat["rate_hz"] > 0 and 0 < beat["processing_p50_s"] <= beat["processing_p99_s"]
        c.fail("injected for the test")
        st = sub.wait_for(kind="state", state="Error", timeout=5)
        assert st["event"] == "OnFailure" and st["reason"] == "injected for the test"
        err = sub.wait_for(kind="error", timeout=5)
        assert err["message"] == "injected for the test" and err["state"] == "Error"


def test_processing_failure_is_an_error_event_with_the_traceback(stream_dir):
    comp = Faulty(unique_name("flt"), period=1e-3, fail_at=5)
    comp.serve(0)
    try:
        with subscribe(comp.server.address, kinds=["error"]) as sub:
            comp.goto("Running")
            ev = sub.wait_for(timeout=10)
            assert ev["kind"] == "error" and ev["state"] == "Error"
            assert "deliberate failure at count 5" in ev["message"]
            assert "Traceback" in ev["reason"]
    finally:
        comp.close()


def test_a_late_subscriber_gets_the_current_state_at_once(served):
    comp, c = served
    c.goto("Running")
    c.setup("step", 3)
    for _ in range(3):  # every new subscriber, however late
        with subscribe(c.address, kinds=["state"], timeout=5) as sub:
            ev = sub.get(0)  # already there: subscribe() waited for it
            assert ev["snapshot"] and ev["state"] == "Running"
            assert ev["parameters"]["step"] == 3


def port_pair() -> int:
    """A free port whose next one is free too (a fresh pair for each use: a port just closed
    by ZeroMQ may still be bound for a while)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    pytest.skip("no free pair of ports")


def test_event_address_convention_and_query(stream_dir):
    port = port_pair()
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", port + 1))
        busy.listen()
    except OSError:
        busy.close()
        pytest.skip("port + 1 is taken by someone else")
    comp = Counter(unique_name("pt"))
    try:
        comp.serve(port)  # port + 1 is busy: any free port, said by QUERY
        addr = comp.events.address
        assert addr != f"tcp://127.0.0.1:{port + 1}"
        with ComponentClient(port) as c:
            assert c.query("events_address") == addr == c.events_address()
    finally:
        busy.close()
        comp.close()
    port = port_pair()  # a fresh pair: the first one may still be held by the closed sockets
    comp = Counter(unique_name("pt"))
    try:
        comp.serve(port)  # free: the command port + 1
        assert comp.events.address == f"tcp://127.0.0.1:{port + 1}"
    finally:
        comp.close()


def test_bad_input_is_a_clear_error():
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        with EventSubscriber(f"tcp://127.0.0.1:{port}") as sub:
            def garbage():
                pub.send(b"\x80\x04not json")  # e.g. a pickle: refused
                try:
                    return sub.get(0.05) or False
                except EventError as exc:
                    return exc

            exc = wait_for(garbage, timeout=10)
            assert isinstance(exc, EventError) and "not JSON" in str(exc)
            assert "events_address" in str(exc)
    finally:
        pub.close()
    with pytest.raises(EventError, match="a 'kind'"):
        decode_event(b"[1, 2]")
    assert decode_event(encode_event({"kind": "x", "v": np.float32(0.5),
                                      "nan": float("nan")})) == {"kind": "x", "v": 0.5,
                                                                 "nan": None}
    with pytest.raises(ValueError, match="unknown event kinds"):
        EventSubscriber("tcp://127.0.0.1:1", kinds=["stat"])
    with pytest.raises(TimeoutError, match="no event"):  # nobody publishes there
        subscribe(f"tcp://127.0.0.1:{free_port()}", direct=True, timeout=0.3)
    sub = EventSubscriber(f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(EventTimeout, match="state='Idle'"):
        sub.wait_for(kind="state", state="Idle", timeout=0.1)
    sub.close()


# -- across processes ----------------------------------------------------------------------------
def dao_run(procs, cls: str, name: str, *extra: str) -> int:
    port = free_port()
    p = subprocess.Popen(  # output not read: not piped (a full pipe would block the child)
        [*DAO, "run", cls, "--port", str(port), "--name", name, *extra],
        env=child_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    procs.append(p)
    with ComponentClient(port, timeout=0.5) as c:
        c.wait_ready(30.0)
    return port


def test_dao_events_prints_a_state_event_after_ctl_exec(procs):
    """The issue's check: ``dao run`` in one process, ``dao events P`` in another, then
    ``dao ctl P EXEC Init`` makes ``dao events`` print ``"state": "Standby"`` promptly."""
    name = unique_name("cnt")
    port = dao_run(procs, "dao.examples:Counter", name)
    ev_proc = subprocess.Popen([*DAO, "events", str(port)], env=child_environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(ev_proc)
    lines = Lines(ev_proc.stdout)
    _, first = lines.wait_for(lambda e: e["kind"] == "state", 30)  # subscribed: the snapshot
    assert first["state"] == "Off" and first["snapshot"] and first["component"] == name
    r = subprocess.run([*DAO, "ctl", str(port), "EXEC", "Init"], env=child_environment(),
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "Standby"), r.stderr
    line, ev = lines.wait_for(lambda e: e["kind"] == "state", 3.0)  # "within a second"
    assert '"state": "Standby"' in line
    assert (ev["event"], ev["old"], ev["component"]) == ("Init", "Off", name)
    assert all(k in ev for k in ("component", "kind", "time", "state"))
    ev_proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean exit
    assert ev_proc.wait(15) == 0
    assert "Traceback" not in ev_proc.stderr.read()


def test_dao_events_of_nothing_fails_clearly():
    r = subprocess.run([*DAO, "events", str(free_port()), "--timeout", "0.3"],
                       env=child_environment(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no reply" in r.stderr
    # an event address where nobody publishes: a bounded wait, then exit status 2
    addr = f"tcp://127.0.0.1:{free_port()}"
    r = subprocess.run([*DAO, "events", "--direct", addr, "--timeout", "0.5"],
                       env=child_environment(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"no event from {addr}" in r.stderr
    assert "Traceback" not in r.stderr


def test_supervisor_publishes_health(stream_dir):
    a, b = unique_name("a"), unique_name("b")
    sup = Supervisor({"component": [
        {"name": a, "class": "dao.examples:Counter", "state": "Running",
         "args": {"period": 0.005}},
        {"name": b, "class": "dao.examples:Counter"},
    ]}, heartbeat_interval=0.5)
    with sup:
        with sup.subscribe(kinds=["health"]) as sub:
            seen = {}
            while len(seen) < 2:  # the snapshot: every component's health at once
                ev = sub.wait_for(timeout=10)
                seen[ev["component"]] = ev
            assert seen[a]["alive"] and seen[a]["state"] == "Running"
            assert seen[b]["alive"] and seen[b]["restarts"] == 0 and seen[b]["pid"] > 0
            assert seen[a]["events_address"] == sup.health()[0]["events_address"]
            pid = seen[b]["pid"]
            os.kill(pid, signal.SIGKILL)
            died = sub.wait_for(component=b, why="died", timeout=30)
            assert died["alive"] is False and died["last_exit_code"] == -9
            assert died["pid"] == pid and died["state"] == "Off"
            beat = sub.wait_for(component=a, why="heartbeat", timeout=10)
            assert beat["alive"] and beat["uptime_s"] > 0
        # the CLI sees the same events
        r = subprocess.run([*DAO, "events", "--direct", sup.events_address, "--count", "2",
                            "--kind", "health"], env=child_environment(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        evs = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(evs) == 2 and {e["kind"] for e in evs} == {"health"}
        assert sup.poll() and sup.poll() == []  # the death, reported once


def test_restart_restores_state_and_parameters(stream_dir):
    """A component killed with SIGKILL comes back in the state and with the parameter values
    it last had, not the configured ones."""
    import dao

    name = unique_name("rs")
    sup = Supervisor({"component": [{"name": name, "class": "dao.examples:Counter",
                                     "state": "Idle", "restart": True,
                                     "args": {"period": 0.002, "step": 2}}]})
    with sup:
        c = sup.client(name)
        c.setup("step", 7)
        assert c.goto("Running") == "Running"
        wait_for(lambda: sup.last_known(name) == {
            "state": "Running", "parameters": {"step": 7, "period": 0.002}}, timeout=10)
        pid = sup.health()[0]["pid"]
        with sup.subscribe(kinds=["health"]) as sub:
            os.kill(pid, signal.SIGKILL)
            ev = sub.wait_for(component=name, why="restarted", timeout=30)
        assert ev["alive"] and ev["pid"] != pid and ev["restarts"] == 1
        assert ev["last_exit_code"] == -9
        assert c.state() == "Running" and c.dump() == {"step": 7, "period": 0.002}
        counter = dao.shm(f"{name}_counter")
        wait_for(lambda: int(counter.get_data()[0, 0]) >= 70, timeout=20)
        assert int(counter.get_data()[0, 0]) % 7 == 0  # counting by the restored step
        counter.close()
        reports = wait_for(lambda: sup.poll(), timeout=30)  # made once the restart is done
        assert len(reports) == 1 and "back to Running with step=7" in reports[0]
        assert "not restored" not in reports[0]


def test_client_goto_without_waiting(served):
    comp, c = served
    st = c.goto("Running", wait=False)
    assert st.wait(10) == "Running" and st.success and comp.state.value == "Running"
    done = []
    st.add_callback(done.append)
    assert done == [st]
    assert c.goto("Standby") == "Standby"
    with pytest.raises(ValueError, match="unknown state"):
        c.goto("Runnning")
    assert c.goto("Idle", 30) == "Idle"  # the same order as Component.goto: timeout second
    with pytest.raises(TimeoutError, match="not driven to Running within"):
        c.goto("Running", timeout=1e-9)  # the whole operation's limit, not each command's
    st = c.goto("Running", timeout=1e-9, wait=False)
    with pytest.raises(TimeoutError):
        st.wait(10)


def test_subscribe_waits_for_every_publishers_snapshot(stream_dir):
    comps = [Counter(unique_name("sw"), period=1e-3) for _ in range(2)]
    try:
        for c in comps:
            c.serve(0)
        addrs = [c.events.address for c in comps]
        for k in range(3):
            with subscribe(addrs, direct=True, kinds=["state"], timeout=10) as sub:
                # connected to both when it returns: no later event is missed (no slow joiner)
                target = ("Standby", "Off")[k % 2]
                for c in comps:
                    c.goto(target)
                names = {c.name for c in comps}
                got: list[dict] = []

                def seen(kind_snapshot: bool, got=got, target=target) -> set[str]:
                    return {e["component"] for e in got if bool(e.get("snapshot")) is
                            kind_snapshot and (kind_snapshot or e["state"] == target)}

                end = time.monotonic() + 30
                while (seen(True) != names or seen(False) != names) and time.monotonic() < end:
                    if (e := sub.get(1.0)) is not None:
                        got.append(e)
                assert seen(True) == names and seen(False) == names, got
        nobody = f"tcp://127.0.0.1:{free_port()}"
        with pytest.raises(EventTimeout, match=f"no event from {nobody} within"):
            subscribe([addrs[0], nobody], direct=True, timeout=0.5)
    finally:
        for c in comps:
            c.close()


def test_a_publisher_whose_thread_died_stops_queuing(caplog):
    from dao.runtime import EventPublisher

    pub = EventPublisher("tcp://127.0.0.1:0", "boom").start()

    def broken() -> None:
        raise RuntimeError("the thread fails")

    pub._drain = broken  # what the thread does when an event is queued
    assert pub.alive and pub.send(pub.make("state", state="Off"))
    wait_for(lambda: not pub.alive, timeout=10)
    with caplog.at_level("ERROR", logger="dao.runtime.events"):
        assert pub.send(pub.make("state", state="Idle")) is False  # dropped, not queued
        assert pub.send(pub.make("state", state="Idle")) is False
    assert pub._queue.qsize() == 1  # only the event sent before the thread died
    said = [r for r in caplog.records if "no longer sent" in r.getMessage()]
    assert len(said) == 1  # said once
    pub.stop()
    assert pub.send(pub.make("state", state="Off")) is False  # stopped: dropped silently


def test_a_full_event_queue_drops_and_counts_rather_than_grows():
    from dao.runtime import EventPublisher

    pub = EventPublisher("tcp://127.0.0.1:0", "q", max_queue=10)  # not started: nothing drains
    sent = [pub.send({"kind": "parameter", "component": "q"}) for _ in range(15)]
    assert sent == [True] * 10 + [False] * 5 and pub.dropped == 5

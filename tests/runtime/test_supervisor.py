"""Cross-process: components run with ``dao run`` (as ``python -m dao.runtime.cli run``),
driven by ``dao ctl`` and the Python client, watched by the supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dao.proto import ReplyMessage
from dao.runtime.command import CommandFailed, CommandTimeout, ComponentClient
from dao.runtime.logbus import LogForwarder, LogSubscriber
from dao.runtime.supervisor import Supervisor, SupervisorError
from dao.testing import child_environment, free_port, unique_name, wait_equal, wait_for

CLI = [sys.executable, "-m", "dao.runtime.cli"]




def dao_run(procs, cls: str, name: str, *extra: str) -> tuple[subprocess.Popen, int]:
    """Start ``dao run``; its output goes to files (``output(p)``): a pipe nobody reads
    while it runs would fill up and block the component."""
    port = free_port()
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    p = subprocess.Popen(
        [*CLI, "run", cls, "--port", str(port), "--name", name, *extra],
        env=child_environment(), stdout=out, stderr=err, text=True,
    )
    p.files = (out, err)
    procs.append(p)
    with ComponentClient(port, timeout=0.5) as c:
        c.wait_ready(30.0)
    return p, port


def output(p: subprocess.Popen) -> tuple[str, str]:
    """What a process started by :func:`dao_run` printed: (stdout, stderr)."""
    texts = []
    for f in p.files:
        f.seek(0)
        texts.append(f.read())
    return texts[0], texts[1]


def ctl(port, *args: str, timeout: float = 2.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "ctl", str(port), *args, "--timeout", str(timeout)],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_dao_run_driven_by_ctl_and_client(stream_dir, procs):
    import dao

    name = unique_name("cnt")
    p, port = dao_run(procs, "dao.examples:Counter", name, "--config", '{"period": 0.002}')
    # through dao ctl
    r = ctl(port, "STATE")
    assert (r.returncode, r.stdout.strip()) == (0, "Off")
    for ev, st in (("Init", "Standby"), ("Enable", "Idle"), ("Run", "Running")):
        r = ctl(port, "EXEC", ev)
        assert (r.returncode, r.stdout.strip()) == (0, st), r.stderr
    r = ctl(port, "EXEC", "Init")
    assert r.returncode == 1 and "illegal in state 'Running'" in r.stderr
    r = ctl(port, "PING")
    assert r.returncode == 0 and int(r.stdout) == p.pid
    # through the Python client, while it runs
    c = ComponentClient(port)
    assert c.state() == "Running"
    counter = dao.shm(f"{name}_counter")
    wait_for(lambda: int(counter.get_data()[0, 0]) > 5)
    assert c.setup("step", 100) == "step=100"
    assert c.query("step") == "100"
    v = int(counter.get_data()[0, 0])
    wait_for(lambda: int(counter.get_data()[0, 0]) >= v + 300)
    assert c.dump() == {"step": 100, "period": 0.002}
    r = ctl(port, "SETUP", "step=-x")
    assert r.returncode == 1 and "cannot parse" in r.stderr
    # and back to Off
    assert c.idle() == "Idle"
    r = ctl(port, "EXEC", "Disable")
    assert r.stdout.strip() == "Standby"
    assert c.stop() == "Off"
    counter.close()
    # SIGTERM: clean exit
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    out, err = output(p)
    assert f"serving tcp://127.0.0.1:{port}" in out
    assert "exited cleanly" in err
    c.close()


def test_exception_in_loop_goes_to_error_and_recover(stream_dir, procs):
    _, port = dao_run(
        procs,
        "dao.examples:Faulty",
        unique_name("flt"),
        "--config",
        '{"period": 0.001, "fail_at": 10}',
        "--state",
        "Running",
    )
    c = ComponentClient(port)
    wait_for(lambda: c.state() == "Error")
    reason = c.query("error_reason")
    assert "deliberate failure at count 10" in reason and "Traceback" in reason
    with pytest.raises(CommandFailed, match="illegal in state 'Error'"):
        c.run()
    assert c.recover() == "Idle"
    assert c.run() == "Running"
    time.sleep(0.05)
    assert c.state() == "Running"
    c.close()


def test_failing_start_state_keeps_serving_in_error(procs):
    _, port = dao_run(procs, "dao.examples:Relay", unique_name("rel"), "--state", "Running")
    c = ComponentClient(port)
    assert c.state() == "Error"
    assert "has no stream" in c.query("error_reason")
    c.close()


def test_bad_class_spec_exits_with_a_message():
    r = subprocess.run(
        [*CLI, "run", "dao.examples:Nope", "--port", "0"],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "cannot load dao.examples:Nope" in r.stderr


def test_garbage_gets_failure_and_component_lives(procs):
    _, port = dao_run(procs, "dao.examples:Counter", unique_name("g"))
    c = ComponentClient(port)
    for raw in (b"\xde\xad\xbe\xef", b"\x0a\xff", os.urandom(64)):
        rep = c.request_raw(raw)
        if rep.status == ReplyMessage.FAILURE:
            assert rep.payload
    rep = c.request_raw(b"\xde\xad\xbe\xef")
    assert rep.status == ReplyMessage.FAILURE and "malformed" in rep.payload
    assert c.state() == "Off"
    c.close()


def test_ctl_exit_codes_and_addresses(procs):
    _, port = dao_run(procs, "dao.examples:Counter", unique_name("c"))
    for addr in (str(port), f"127.0.0.1:{port}", f"tcp://127.0.0.1:{port}"):
        assert ctl(addr, "state").stdout.strip() == "Off"
    r = ctl(port, "QUERY", "nothing")
    assert r.returncode == 1
    r = ctl(free_port(), "PING", timeout=0.3)
    assert r.returncode == 2 and "no reply" in r.stderr
    r = ctl(port, "DUMP")
    assert json.loads(r.stdout) == {"step": 1, "period": 0.01}


def test_component_logs_reach_the_bus(procs):
    with (
        LogForwarder("tcp://127.0.0.1:0", "tcp://127.0.0.1:0") as fwd,
        LogSubscriber(fwd.backend) as sub,
    ):
        name = unique_name("log")
        _, port = dao_run(
            procs, "dao.examples:Counter", name, "--log-bus", fwd.frontend, "--log-level", "TRACE"
        )
        c = ComponentClient(port)
        got = []
        end = time.monotonic() + 10
        while time.monotonic() < end and not any("SETUP" in r.message for r in got):
            c.setup("step", 2)
            rec = sub.recv(0.1)
            while rec is not None:
                got.append(rec)
                rec = sub.recv(0.01)
        c.close()
    assert any(r.component == name and "SETUP step=2" in r.message for r in got)


def write_config(tmp_path, text: str) -> Path:
    p = tmp_path / "loop.toml"
    p.write_text(text)
    return p


def test_supervisor_starts_reports_and_stops(stream_dir, tmp_path):
    a, b = unique_name("a"), unique_name("b")
    cfg = write_config(
        tmp_path,
        f"""
[[component]]
name = "{a}"
class = "dao.examples:Counter"
state = "Running"
args = {{ step = 2, period = 0.005 }}

[[component]]
name = "{b}"
class = "dao.examples:Counter"
port = {free_port()}
""",
    )
    sup = Supervisor.from_file(cfg)
    try:
        sup.start_all()
        st = {s["name"]: s for s in sup.status()}
        assert st[a]["alive"] and st[a]["state"] == "Running"
        assert st[b]["alive"] and st[b]["state"] == "Off"
        assert sup.client(a).query("step") == "2"
        # a process killed from outside is seen (restart = false: reported, not restarted)
        os.kill(st[b]["pid"], signal.SIGKILL)
        events = wait_for(lambda: sup.poll(), timeout=10)
        assert f"{b} (pid {st[b]['pid']}) died" in events[0] and "-9" in events[0]
        st2 = {s["name"]: s for s in sup.status()}
        assert not st2[b]["alive"] and st2[b]["state"] == "dead"
        assert st2[b]["exit_codes"] == [-9]
        assert sup.poll() == []  # said once
    finally:
        codes = sup.stop_all()
    assert codes[a] == 0  # stopped cleanly by commands + SIGTERM
    assert codes[b] == -9


@pytest.mark.slow
def test_supervisor_restarts_a_dead_process(stream_dir, tmp_path):
    name = unique_name("r")
    cfg = write_config(
        tmp_path,
        f"""
[[component]]
name = "{name}"
class = "dao.examples:Counter"
state = "Idle"
restart = true
""",
    )
    with Supervisor.from_file(cfg) as sup:
        pid = sup.status()[0]["pid"]
        os.kill(pid, signal.SIGKILL)
        events = wait_for(lambda: sup.poll(), timeout=60)
        assert "restarted as pid" in events[0]
        st = sup.status()[0]
        assert st["alive"] and st["pid"] != pid and st["restarts"] == 1
        assert st["state"] == "Idle"  # driven back to its configured state


@pytest.mark.slow
def test_restarts_back_off_when_a_process_keeps_dying(stream_dir):
    name = unique_name("b")
    # no monitor thread: only poll() checks (and restarts), so nothing restarts the process
    # behind the test's back between two of its looks
    sup = Supervisor({"component": [{"name": name, "class": "dao.examples:Counter",
                                     "restart": True}]}, backoff=(0.4, 0.8),
                     monitor_interval=None)
    with sup:
        def kill_and_poll():
            os.kill(sup.status()[0]["pid"], signal.SIGKILL)
            return wait_for(lambda: sup.poll(), timeout=60)

        assert "restarted as pid" in kill_and_poll()[0]  # the first death: at once
        events = kill_and_poll()  # died again soon after its start: waits
        assert "restart in 0.4 s" in events[0]
        assert not sup.status()[0]["alive"]
        events = wait_for(lambda: sup.poll(), timeout=60)
        assert "back-off over; restarted as pid" in events[0]  # after the wait, not at once
        assert sup.status()[0]["alive"]
        assert "restart in 0.8 s" in kill_and_poll()[0]  # doubled
        assert "restart in 0.8 s" in (wait_for(lambda: sup.poll(), timeout=60)
                                      and kill_and_poll())[0]
        assert sup.status()[0]["restarts"] == 3


def test_supervisor_config_errors(tmp_path):
    with pytest.raises(SupervisorError, match="unknown keys"):
        Supervisor({"component": [{"name": "x", "class": "a:B", "prot": 1}]})
    with pytest.raises(SupervisorError, match="unique"):
        Supervisor({"component": [{"name": "x", "class": "a:B"}, {"name": "x", "class": "a:B"}]})
    sup = Supervisor(
        {"component": [{"name": "x", "class": "no.such.module:Thing"}]}, ready_timeout=10
    )
    with pytest.raises(SupervisorError, match="exited with status"):
        sup.start_all()
    assert sup.status()[0]["alive"] is False


def test_timeout_error_is_a_timeout():
    c = ComponentClient(free_port(), timeout=0.1)
    with pytest.raises(TimeoutError):
        c.state()
    assert issubclass(CommandTimeout, TimeoutError)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().split()
    except OSError:
        return False
    return stat[2] != "Z"


def test_components_stop_when_their_supervisor_dies(stream_dir, tmp_path):
    """A supervisor (e.g. a notebook kernel) killed with SIGKILL leaves no orphan running."""
    name = unique_name("o")
    script = tmp_path / "sup.py"
    script.write_text(
        "import sys, time\n"
        "from dao.runtime.supervisor import Supervisor\n"
        f"sup = Supervisor({{'component': [{{'name': '{name}', "
        "'class': 'dao.examples:Counter', 'state': 'Running', "
        "'args': {'period': 0.01}}]})\n"
        "sup.start_all()\n"
        "print(sup.status()[0]['pid'], flush=True)\n"
        "time.sleep(60)\n"
    )
    sup = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                           env=child_environment())
    child = 0
    try:
        child = int(sup.stdout.readline())
        assert _alive(child)
        sup.kill()
        sup.wait(10)
        wait_for(lambda: not _alive(child), timeout=10)
    finally:
        sup.kill()
        sup.stdout.close()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_components_started_from_a_thread_outlive_it(stream_dir, monkeypatch):
    """Children die with their parent *thread* (PR_SET_PDEATHSIG): a component started from a
    short-lived thread (a ``wait=False`` operation) must not die when that thread ends."""
    import threading

    forked_by = []
    real_popen = subprocess.Popen

    def popen(*args, **kw):
        forked_by.append(threading.current_thread())
        return real_popen(*args, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    name = unique_name("t")
    sup = Supervisor({"component": [{"name": name, "class": "dao.examples:Counter",
                                     "state": "Idle"}]})
    try:
        th = threading.Thread(target=sup.start_all)
        th.start()
        th.join(60)
        # the cause: the child was forked by the supervisor's long-lived spawner thread, not
        # by the thread that asked (whose end sends the child its death signal)
        assert forked_by and all(t is not th and t.is_alive() for t in forked_by)
        pid = sup.status()[0]["pid"]
        # the effect: heartbeats keep coming well after the thread's end (a SIGTERM makes the
        # child close its event socket and exit), and no death is reported
        t_end = time.time()
        with sup.client(name).subscribe(kinds=["heartbeat"]) as sub:
            for _ in range(2):  # one a second
                sub.wait_for(predicate=lambda e, t=t_end: e["time"] > t and e["pid"] == pid,
                             timeout=30)
                t_end = time.time()
        assert _alive(pid) and sup.client(name).state() == "Idle"
        assert sup.poll() == []
    finally:
        codes = sup.stop_all()
    assert codes[name] == 0


# -- restarts that fail, what a restart brings back, who owns the recorded state ----------------
HELPERS = '''
import os
import time

from dao.examples import Counter


class Forgetful(Counter):
    """Forgets its step at every Init (so a restart cannot bring it back)."""

    def configure(self, config):
        self.step = 1


class Gated(Counter):
    """Init waits while the file named by config["gate"] exists (at most 60 s)."""

    def configure(self, config):
        gate, end = config.get("gate"), time.monotonic() + 60
        while gate and os.path.exists(gate) and time.monotonic() < end:
            time.sleep(0.02)
'''


@pytest.fixture
def helpers(tmp_path):
    """The environment of children that import ``helpers`` (components made for the tests)."""
    (tmp_path / "helpers.py").write_text(HELPERS)
    root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), root])}


class Reports:
    """Every report of a supervisor, gathered over several polls."""

    def __init__(self, sup: Supervisor):
        self.sup, self.seen = sup, []

    def wait(self, text: str, timeout: float = 60.0) -> str:
        def find():
            self.seen.extend(self.sup.poll())
            return next((r for r in self.seen if text in r), None)

        return wait_for(find, timeout=timeout, what=f"a report with {text!r}")


def test_a_failed_restart_kills_its_process_and_tries_again(stream_dir):
    """The restarted process cannot reach its state (its input stream is gone): it is killed,
    not left running unwatched, and the restart is tried again until it works."""
    import numpy as np

    import dao

    src_name, name = unique_name("src"), unique_name("rl")
    src = dao.shm(src_name, np.zeros((4, 4), np.float32))
    sup = Supervisor({"component": [{"name": name, "class": "dao.examples:Relay",
                                     "state": "Idle", "restart": True,
                                     "args": {"streams": {"source": src_name}}}]},
                     backoff=(0.3, 0.6))
    reports = Reports(sup)
    with sup:
        pid = sup.health()[0]["pid"]
        with sup.subscribe(kinds=["health"]) as sub:
            src.delete()  # Enable of the next process fails: no input stream
            os.kill(pid, signal.SIGKILL)
            failed = sub.wait_for(component=name, why="failed", timeout=60)
        assert failed["pid"] != pid and failed["alive"] is False
        assert not _alive(failed["pid"])  # killed, not left in Error unwatched
        report = reports.wait("restart failed")
        assert f"{name} (pid {pid}) died with status -9" in report
        assert "EXEC Enable failed" in report and "no stream at" in report  # why
        assert "the process was killed, next try in" in report
        src = dao.shm(src_name, np.zeros((4, 4), np.float32))  # the input is back
        report = reports.wait("restarted as pid", timeout=120)
        h = sup.health()[0]
        assert h["alive"] and f"restarted as pid {h['pid']}" in report
        assert sup.client(name).state() == "Idle"
    src.delete()


def test_a_restart_report_says_which_parameters_did_not_come_back(stream_dir, helpers):
    name = unique_name("fg")
    sup = Supervisor({"component": [{"name": name, "class": "helpers:Forgetful",
                                     "state": "Idle", "restart": True, "env": helpers,
                                     "args": {"period": 0.01}}]})
    with sup:
        sup.client(name).setup("step", 7)
        wait_for(lambda: sup.last_known(name)["parameters"].get("step") == 7, timeout=30)
        os.kill(sup.health()[0]["pid"], signal.SIGKILL)
        report = Reports(sup).wait("restarted as pid")
        assert "back to Idle with step=7" in report  # what was asked...
        assert "parameters not restored: step=1 (was 7)" in report  # ... and what came back


def test_the_monitor_goes_on_while_a_restart_is_under_way(stream_dir, helpers, tmp_path):
    """A restart that takes long (its Init waits on a file) does not stop the monitor: another
    component's death is reported meanwhile."""
    a, b = unique_name("a"), unique_name("b")
    gate = tmp_path / "gate"
    sup = Supervisor({"component": [
        {"name": a, "class": "helpers:Gated", "state": "Standby", "restart": True,
         "env": helpers, "args": {"gate": str(gate)}},
        {"name": b, "class": "dao.examples:Counter"},
    ]}, command_timeout=90)
    reports = Reports(sup)
    try:
        sup.start_all()
        pid_a, pid_b = (h["pid"] for h in sup.health())
        gate.write_text("")  # the next Init of a waits
        with sup.subscribe(kinds=["health"]) as sub:
            os.kill(pid_a, signal.SIGKILL)
            sub.wait_for(component=a, why="died", timeout=30)
            os.kill(pid_b, signal.SIGKILL)
            reports.wait(f"{b} (pid {pid_b}) died", timeout=30)
        assert not any("restarted" in r for r in reports.seen)  # seen while a restarts
        assert sup.health()[0]["restarts"] == 0  # a's restart is still waiting
        gate.unlink()
        assert "restarted as pid" in reports.wait(f"{a} (pid {pid_a}) died", timeout=60)
        assert sup.client(a).state() == "Standby"
    finally:
        gate.unlink(missing_ok=True)
        sup.stop_all()


def test_the_recorded_state_never_goes_back(stream_dir):
    """The start drives the component and records its state; the events read later (the
    component's snapshot, the state changes of the start itself, a dead process's last words)
    never take the record back to an older state."""
    name = unique_name("st")
    sup = Supervisor({"component": [{"name": name, "class": "dao.examples:Counter",
                                     "state": "Running", "args": {"period": 0.005}}]},
                     heartbeat_interval=0.3)
    try:
        with sup.subscribe(kinds=["health"]) as sub:  # subscribed before the start
            sup.start_all()
            pid = sup.health()[0]["pid"]
            seen: list[dict] = []
            beats = 0
            while beats < 3:  # a few rounds after the start, state events included
                ev = sub.wait_for(component=name, timeout=30)
                seen.append(ev)
                beats += ev["why"] == "heartbeat"
        started = next(i for i, e in enumerate(seen) if e["why"] == "started")
        assert [e["state"] for e in seen[started:]] == ["Running"] * len(seen[started:]), seen
        p = sup.procs[name]
        now = time.time()
        sup._on_event({"kind": "state", "component": name, "state": "Off", "time": now,
                       "pid": pid + 100000})  # another (a dead) process
        sup._on_event({"kind": "state", "component": name, "state": "Idle",
                       "time": p.synced_at - 1.0, "pid": pid})  # older than the start's end
        assert sup.last_known(name)["state"] == "Running"
        sup._on_event({"kind": "state", "component": name, "state": "Idle", "time": now,
                       "pid": pid})  # news of the current process: followed
        assert sup.last_known(name)["state"] == "Idle"
    finally:
        sup.stop_all()


def test_every_component_gets_its_own_ports():
    fixed = free_port()
    sup = Supervisor({"component": [{"name": f"c{i}", "class": "x:Y"} for i in range(40)]
                      + [{"name": "fixed", "class": "x:Y", "port": fixed,
                          "events_port": fixed + 1}]})
    ports = [q for p in sup.procs.values() for q in (p.port, p.events_port)]
    assert len(set(ports)) == len(ports) == 82


# -- a component in Error: known at once, with its reason ---------------------------------------
def test_health_gives_the_error_reason_with_the_error_state(stream_dir):
    """The Error state and its reason arrive together in health() (and in the health event),
    and leave together on Recover."""
    name = unique_name("er")
    sup = Supervisor({"component": [{"name": name, "class": "dao.examples:Faulty",
                                     "state": "Running", "args": {"period": 0.002}}]})
    samples: list[tuple] = []

    def health():
        h = sup.health()[0]
        samples.append((h["state"], h["error_reason"]))
        return h

    def state_and_reason():
        h = health()
        return h["state"], h["error_reason"]

    with sup:
        c = sup.client(name)
        assert state_and_reason() == ("Running", None)
        with sup.subscribe(kinds=["health"]) as sub:
            c.setup("fail_at", 1)  # process() raises at its next iteration
            h = wait_for(lambda: (h := health())["state"] == "Error" and h, timeout=10,
                         what="health() to say Error")
            ev = sub.wait_for(component=name, state="Error", timeout=10)
        for reason in (h["error_reason"], ev["error_reason"]):
            assert "deliberate failure at count" in reason and "Traceback" in reason
        assert ev["why"] == "state"
        assert c.recover() == "Idle"
        wait_equal(state_and_reason, ("Idle", None), what="health() after Recover")
        c.fail("the camera is gone\nunplugged at 12:03")  # a client's reason, as given
        wait_equal(lambda: health()["error_reason"], "the camera is gone\nunplugged at 12:03",
                   what="the client's reason")
        assert c.recover() == "Idle"
        wait_equal(lambda: health()["error_reason"], None, what="the reason, cleared")
    # never Error without its reason, never a reason outside Error
    assert all((st == "Error") == (why is not None) for st, why in samples), samples


def test_a_heartbeat_saying_error_first_gets_the_reason_asked(stream_dir):
    """Error seen in a heartbeat before any reason came: the supervisor asks the component
    for it before recording the state (no monitor here: the events are fed by hand)."""
    name = unique_name("hb")
    sup = Supervisor({"component": [{"name": name, "class": "dao.examples:Counter",
                                     "state": "Idle"}]}, monitor_interval=None)
    with sup:
        pid = sup.health()[0]["pid"]
        sup.client(name).fail("the shutter jammed")
        sup._on_event({"kind": "heartbeat", "component": name, "state": "Error",
                       "time": time.time(), "pid": pid})
        h = sup.health()[0]
        assert (h["state"], h["error_reason"]) == ("Error", "the shutter jammed")
        sup._on_event({"kind": "state", "component": name, "state": "Idle",
                       "time": time.time(), "pid": pid})
        assert sup.health()[0]["error_reason"] is None

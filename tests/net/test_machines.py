"""Streams across machines under faults, and bidirectional mirrors (issue 13).

Each machine is a ``dao server`` process in a network namespace of its own behind a veth pair
when the tests run as root (as in CI), else on its own loopback address (see the testbed in
conftest.py); a real redis-server; clients here or in processes of their own; bounded waits.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from conftest import NAMESPACES  # noqa: I001 - tests/net/conftest.py

import dao
from dao.net import lease, remote, wire
from dao.net.connect import redis_client
from dao.net.mirror import MirrorError
from dao.net.remote import LeaseError, RemoteError
from dao.testing import child_environment, unique_name, wait_equal, wait_for


def ls_mirror_row(stream_dir: str, local: str) -> list[str]:
    """The row of ``local`` in the MIRROR table of ``dao ls``, split on runs of 2 spaces."""
    out = subprocess.run([sys.executable, "-m", "dao.cli", "ls", "--interval", "0", "--dir",
                          stream_dir], capture_output=True, text=True, timeout=60,
                         env=child_environment()).stdout
    table = out[out.index("MIRROR"):].splitlines()
    header = re.split(r"\s{2,}", table[0].strip())
    assert header == ["MIRROR", "LINK", "SILENT", "NEWEST", "LOST", "SOURCE CNT0"], out
    for line in table[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] == local:
            return cells
    raise AssertionError(f"no mirror {local} in:\n{out}")


def written_stream(testbed, writer, period: float = 0.02) -> tuple:
    """Start machine m1 with a writer process of a stream (50 Hz by default); return
    ``(url, m1, name)`` once the stream is registered."""
    testbed.start("m1")
    url, m1 = testbed.redis.url, testbed.machines["m1"]
    name = unique_name()
    writer(m1.folder, name, period)
    wait_for(lambda: name in remote.streams(url, "m1"), 3.0, what="registered")
    return url, m1, name


def quiet_stream(testbed, shape=(4,), dtype=np.float32, **start) -> tuple:
    """Start machine m1 with a stream of zeros that nobody writes (a DM command, say);
    return ``(url, m1, name, source)`` once the stream is registered."""
    testbed.start("m1", **start)
    url, m1 = testbed.redis.url, testbed.machines["m1"]
    name = unique_name("dm")
    src = dao.shm(m1.path(name), np.zeros(shape, dtype), depth=8)
    wait_for(lambda: name in remote.streams(url, "m1"), 3.0, what="registered")
    return url, m1, name, src


def fresh_frames(m, n: int = 3, timeout: float = 5.0) -> None:
    """Wait until the mirror writes ``n`` more frames."""
    before = m.mirror.written
    wait_for(lambda: m.mirror.written >= before + n, timeout, what=f"{n} more mirrored frames")


def test_machines_are_separate_hosts(testbed, writer):
    testbed.start("m1", "m2")
    m1 = testbed.machines["m1"]
    if os.geteuid() == 0:  # as root (CI): each machine in a namespace of its own
        assert NAMESPACES and m1.netns and m1.ip.startswith("198.18.")
    assert {x["host"]: x["ip"] for x in remote.machines(testbed.redis.url)} == {
        "m1": m1.ip, "m2": testbed.machines["m2"].ip}
    name = unique_name()
    writer(m1.folder, name)
    wait_for(lambda: name in remote.streams(testbed.redis.url, "m1"), 3.0, what="registered")
    # the server measures each stream's rate (the writer's ~50 Hz)
    wait_for(lambda: 30 < (remote.streams(testbed.redis.url, "m1")[name]["rate"] or 0) < 55,
             5.0, what="the stream's rate in the registry")
    with remote.mirror(testbed.redis.url, "m1", name, local_name=unique_name()) as m:
        assert m.address.startswith(f"tcp://{m1.ip}:")
        fresh_frames(m)
        assert m.status()["link"] == "up"


# -- faults -----------------------------------------------------------------------------------


def test_redis_restarted_mid_stream(testbed, writer):
    url, _, name = written_stream(testbed, writer, 0.005)
    with remote.mirror(url, "m1", name, local_name=unique_name(), mode="every",
                       depth=64) as m:
        fresh_frames(m, 20)
        testbed.redis.stop()
        fresh_frames(m, 100)  # frames flow without Redis
        testbed.redis.start()  # empty: persistence is off
        t0 = time.monotonic()
        wait_for(lambda: (remote.streams(url, "m1").get(name, {}).get("connections") or
                          [{}])[0].get("clients") == [m.client], 2.0,
                 what="the machine, its stream and its client back in the registry")
        assert time.monotonic() - t0 < 2.0
        time.sleep(6.0)  # past the server's client check and grace: still published
        fresh_frames(m, 100)
        st = m.status()
        assert st["link"] == "up" and st["lost"] == 0 and st["malformed"] == 0
        assert st["resets"] == 0  # the same publisher all along


def test_server_killed_and_back(testbed, writer, stream_dir):
    url, m1, name = written_stream(testbed, writer)
    with remote.mirror(url, "m1", name, local_name=unique_name()) as m, \
            remote.mirror(url, "m1", name, local_name=unique_name(), mode="every",
                          depth=2048) as e:
        fresh_frames(m)
        fresh_frames(e)
        first = m.address
        row = ls_mirror_row(stream_dir, m.local_name)  # dao ls shows the freshness too
        assert row[1] == "up" and row[4] == "0" and int(row[5]) > 0
        m1.kill(signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda: m.status()["link"] == "down", 2.0, what="link reported down")
        assert time.monotonic() - t0 <= 2.0
        time.sleep(0.5)
        assert ls_mirror_row(stream_dir, m.local_name)[1] == "down"
        # back on other ports: the mirrors follow the publisher to its new address
        lo = int(m1.ports.split("-")[0]) + 10
        m1.start("--ports", f"{lo}-{lo + 9}")
        wait_for(lambda: m.status()["link"] == "up", 15.0, what="the link back up")
        fresh_frames(m)
        fresh_frames(e)
        assert m.address != first and m.address.startswith(f"tcp://{m1.ip}:{lo}")
        assert ls_mirror_row(stream_dir, m.local_name)[1] == "up"
        frame = dao.shm(m.local_name)
        try:
            assert frame.get_data()[0, 0] == frame.get_frame_id() - 1000
        finally:
            frame.close()
        # every mode: the frames written while the server was down are counted as lost
        hist = dao.shm(e.local_name)
        try:
            ids = np.asarray(hist.get_history(hist.frames_available, meta=True).cnt2)
        finally:
            hist.close()
        ids = ids[ids > 0]  # the zeros the mirror started with
        missing = int(ids.max() - ids.min() + 1 - len(np.unique(ids)))
        st = e.status()
        assert missing > 20 and st["lost"] == missing, (missing, st)


def test_one_writer_per_local_stream(testbed, writer, procs):
    url, _, name = written_stream(testbed, writer)
    local = unique_name()
    with remote.mirror(url, "m1", name, local_name=local):
        with pytest.raises(MirrorError, match="another mirror of this process"):
            remote.mirror(url, "m1", name, local_name=local)
    other = unique_name()
    p, _ = start_client(procs, url, name, other)
    with pytest.raises(MirrorError, match=f"written by pid {p.pid}"):
        remote.mirror(url, "m1", name, local_name=other, bidirectional=True)
    with remote.mirror(url, "m1", name, local_name=unique_name()) as m:  # nothing left over
        fresh_frames(m)
    p.kill()
    p.wait(10)
    dao.shm(other).delete()


def test_dead_machine_is_announced_once(testbed):
    from dao.net.registry import Registry

    testbed.start("m1", "m2", "m3")
    with Registry(testbed.redis.url, host="watcher") as reg, reg.subscribe() as changes:
        testbed.machines["m3"].kill(signal.SIGTERM)  # a clean stop: its own "removed"
        testbed.machines["m2"].kill(signal.SIGKILL)  # dies without a word
        t0 = time.monotonic()
        events = []
        while time.monotonic() - t0 < 5 + 5 / 3 + 3:  # its TTL, a heartbeat of the others
            e = changes.get(0.5)
            if e and e["kind"] == "machine":
                events.append(e)
            if any(x.get("reason") == "expired" for x in events):
                break
        time.sleep(2)  # m1 and any late announcer: still one event
        while (e := changes.get(0.1)) is not None:
            if e["kind"] == "machine":
                events.append(e)
    gone = [(e["host"], e["event"], e.get("reason")) for e in events]
    assert sorted(gone) == [("m2", "removed", "expired"), ("m3", "removed", None)], gone
    assert {m["host"] for m in remote.machines(testbed.redis.url)} == {"m1"}


# A client of its own: mirrors stream argv[2] of m1 into argv[3] (bidirectional and holding
# the lease if argv[4] is "write"), says "ready CLIENT_ID", then waits to be killed.
CLIENT = r"""
import sys, time
from dao.net import remote
write = sys.argv[4] == "write"
m = remote.mirror(sys.argv[1], "m1", sys.argv[2], local_name=sys.argv[3], bidirectional=write)
if write:
    m.acquire()
print("ready", m.client, flush=True)
time.sleep(600)
"""


def start_client(procs, url: str, name: str, local: str, write: bool = False) -> tuple:
    """A client process mirroring ``name``; returns ``(process, client id)`` once ready."""
    p = subprocess.Popen([sys.executable, "-c", CLIENT, url, name, local,
                          "write" if write else "read"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=child_environment())
    procs.append(p)
    line = p.stdout.readline()
    assert line.startswith("ready"), p.stderr.read()
    return p, line.split()[1]


def test_killed_client_stops_its_publisher(testbed, writer, procs):
    url, _, name = written_stream(testbed, writer)
    local = unique_name()
    p, client = start_client(procs, url, name, local)

    def clients():
        conn = remote.streams(url, "m1")[name]["connections"]
        return conn[0]["clients"] if conn else []

    assert clients() == [client]
    p.kill()
    p.wait(10)
    t0 = time.monotonic()
    # the client's key expires after HEARTBEAT_TTL_S; the server checks every second
    wait_equal(clients, [], remote.HEARTBEAT_TTL_S + 2.5, what="publisher stopped")
    assert time.monotonic() - t0 <= remote.HEARTBEAT_TTL_S + 2.5
    assert "no client left" in testbed.machines["m1"].log_text()
    dao.shm(local).delete()  # what the killed client left behind


def test_garbage_on_the_data_ports(testbed, writer):
    testbed.start("m1")
    url = testbed.redis.url
    name = unique_name()
    dm = unique_name("dm")
    writer(testbed.machines["m1"].folder, name)
    src = dao.shm(testbed.machines["m1"].path(dm), np.zeros(4, np.float32))
    wait_for(lambda: {name, dm} <= set(remote.streams(url, "m1")), 3.0, what="registered")
    with remote.mirror(url, "m1", name, local_name=unique_name()) as m, \
            remote.mirror(url, "m1", dm, local_name=unique_name(), bidirectional=True) as w:
        fresh_frames(m)
        uplink = w.mirror.uplink
        for address in (m.address, uplink):  # raw bytes, not even ZeroMQ
            host, port = address[len("tcp://"):].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.sendall(os.urandom(4096) + b"\xff" * 64)
                time.sleep(0.1)
        ctx = zmq.Context()
        try:  # well-formed ZeroMQ, bad content: no lease, wrong parts, a foreign header
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(uplink)
            frame = wire.encode(np.full(4, 7, np.float32), 1, 1, time.time_ns(), 0)
            for parts in ([b"nobody:0", *frame], [b"x"], [b"a:b", b"DAOF" + bytes(60), b""],
                          [b"a:b", os.urandom(64), os.urandom(16)]):
                push.send_multipart(parts)
            time.sleep(0.3)
            push.close(0)
        finally:
            ctx.term()
        fresh_frames(m)  # the publisher goes on
        assert src.counter == 0  # nothing written by the garbage
        with w.lease():  # and the writer still writes for the lease holder
            loc = dao.shm(w.local_name)
            loc.set_data(np.full(4, 3, np.float32))
            loc.close()
            wait_equal(lambda: src.counter, 1, 3.0, what="the leased write")
        assert np.all(src.get_data() == 3)
    src.close()
    assert testbed.machines["m1"].proc.poll() is None


def test_recreated_with_another_shape(testbed):
    testbed.start("m1")
    url, m1 = testbed.redis.url, testbed.machines["m1"]
    name = unique_name()
    src = dao.shm(m1.path(name), np.zeros((3, 3), np.int16))
    src.set_data(np.full((3, 3), 5, np.int16))
    wait_for(lambda: name in remote.streams(url, "m1"), 3.0, what="registered")
    with remote.mirror(url, "m1", name, local_name=unique_name(), depth=4) as m:
        local = dao.shm(m.local_name)  # exists at once, with the source's shape
        assert local.shape == (3, 3) and local.dtype == np.int16
        # the quiet source's newest frame is sent to the newcomer
        wait_for(lambda: local.counter == 1, 3.0, what="the newest frame")
        assert np.all(local.get_data() == 5)
        local.close()
        src.close()
        src = dao.shm(m1.path(name), np.zeros((5, 2), np.float64), replace=True)
        wait_for(lambda: remote.streams(url, "m1")[name]["shape"] == (5, 2), 2.0,
                 what="re-registered")
        src.set_data(np.arange(10.0).reshape(5, 2), cnt2=77)

        def mirrored():
            s = dao.shm(m.local_name)
            try:
                return s.shape == (5, 2) and s.get_frame_id() == 77 and np.array_equal(
                    s.get_data(), np.arange(10.0).reshape(5, 2))
            finally:
                s.close()

        wait_for(mirrored, 5.0, what="the mirror re-created with the new shape")
    src.delete()


# -- bidirectional ----------------------------------------------------------------------------


def test_bidirectional_lease_and_no_echo(testbed):
    url, m1, dm, src = quiet_stream(testbed, (6,))
    a = remote.mirror(url, "m1", dm, local_name=unique_name(), bidirectional=True, depth=8)
    b = remote.mirror(url, "m1", dm, local_name=unique_name(), bidirectional=True)
    watcher = remote.mirror(url, "m1", dm, local_name=unique_name(), depth=8)
    try:
        la, lw = dao.shm(a.local_name), dao.shm(watcher.local_name)
        # without the lease, a local write stays local, counted
        la.set_data(np.full(6, 1, np.float32))
        wait_equal(lambda: a.status()["not_sent"], 1, 3.0, what="the write counted as not sent")
        time.sleep(0.3)
        assert src.counter == 0
        with pytest.raises(RemoteError, match="read-only.*bidirectional=True"):
            watcher.acquire()
        a.acquire()
        assert a.holds_lease and a.lease_holder() == a.client
        with pytest.raises(LeaseError, match=a.client) as err:
            b.acquire(timeout=0.2)
        assert err.value.holder == a.client
        # with the lease: the frame reaches the source, keeping its write time and cnt2
        la.set_data(np.full(6, 2, np.float32), cnt2=42)
        t_write = la.get_timestamp_ns()
        wait_equal(lambda: src.counter, 1, 3.0, what="the write at the source")
        assert np.all(src.get_data() == 2) and src.get_frame_id() == 42
        assert src.get_timestamp_ns() == t_write
        # the other mirrors get it; the writer's own mirror gets no echo
        wait_equal(lambda: lw.counter, 1, 3.0, what="the write at another client")
        assert np.all(lw.get_data() == 2)
        wait_equal(lambda: a.status()["echoes"], 1, 3.0, what="the echo recognised")
        time.sleep(0.3)
        assert la.counter == 2  # 1 and 2 written here, nothing more
        assert a.status()["uplinked"] == 1
        # a frame written at the source comes down as usual
        src.set_data(np.full(6, 9, np.float32), cnt2=43)
        wait_equal(lambda: la.counter, 3, 3.0, what="a source frame")
        assert np.all(la.get_data() == 9) and la.get_frame_id() == 43
        # a frame of the wrong shape cannot be written locally at all (clear error)
        with pytest.raises(dao.StreamMismatchError):
            la.set_data(np.zeros(5, np.float32))
        # hand over: b waits for a's release
        a.release()
        b.acquire(timeout=1.0)
        lb = dao.shm(b.local_name)
        lb.set_data(np.full(6, 4, np.float32))
        wait_equal(lambda: src.counter, 3, 3.0, what="b's write at the source")
        assert np.all(src.get_data() == 4)
        la.set_data(np.full(6, 5, np.float32))  # a no longer holds it: not sent
        wait_equal(lambda: a.status()["not_sent"], 2, 3.0, what="a's write refused")
        time.sleep(0.3)
        assert src.counter == 3
        for s in (la, lw, lb):
            s.close()
    finally:
        for m in (a, b, watcher):
            m.close()
    with redis_client(url) as conn:  # b held it when closed: released
        assert lease.holder(conn, "m1", dm) is None
    src.delete()


def test_lease_freed_when_its_holder_dies(testbed, procs):
    url, m1, dm, src = quiet_stream(testbed, (3,))
    local = unique_name()
    p, holder = start_client(procs, url, dm, local, write=True)
    with remote.mirror(url, "m1", dm, local_name=unique_name(), bidirectional=True) as me:
        with pytest.raises(LeaseError, match=holder):
            me.acquire()
        p.kill()
        p.wait(10)
        me.acquire(timeout=remote.LEASE_TTL_S + 2)  # freed by its TTL
        assert me.holds_lease
    dao.shm(local).delete()
    src.delete()


def test_read_only_server_refuses_writers(testbed):
    url, m1, dm, src = quiet_stream(testbed, (3,), extra=("--read-only",))
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match="read-only"):
        remote.mirror(url, "m1", dm, bidirectional=True, timeout=5.0)
    assert time.monotonic() - t0 < 2.0  # refused at once, not timed out
    with remote.mirror(url, "m1", dm, local_name=unique_name()) as m:  # reading is fine
        assert m.status()["mode"] == "latest"
    src.delete()


def test_cli_mirror_write(testbed, procs):
    url, m1, dm, src = quiet_stream(testbed)
    local = unique_name()
    cmd = [sys.executable, "-m", "dao.cli", "remote", "mirror", "m1", dm, "--write", "--local",
           local, "--redis", url, "--timeout", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=child_environment())
    procs.append(p)
    line = p.stdout.readline()
    assert "writes sent back (lease held)" in line, p.stderr.read()
    # a local writer (any process: here this one) writes into the mirror: it reaches m1
    loc = dao.shm(local)
    loc.set_data(np.arange(4, dtype=np.float32))
    wait_equal(lambda: src.counter, 1, 3.0, what="the write at the source")
    assert np.array_equal(src.get_data(), np.arange(4, dtype=np.float32))
    loc.close()
    # a second writer is refused, naming the first
    second = subprocess.run([*cmd[:-6], "--local", unique_name(), "--redis", url, "--timeout",
                             "0.5"], capture_output=True, text=True, timeout=60,
                            env=child_environment())
    assert second.returncode == 2 and "is being written by client" in second.stderr
    assert "Traceback" not in second.stderr
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    assert not os.path.exists(dao.streams.stream.stream_path(local))
    with remote.mirror(url, "m1", dm, local_name=unique_name(), bidirectional=True) as m:
        m.acquire()  # freed by the first one's clean exit
    src.delete()

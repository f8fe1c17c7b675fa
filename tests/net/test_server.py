"""The per-machine stream server and remote mirrors (issue 13): a real redis-server, two
"machines" (two ``dao server`` processes on 127.0.0.2 and 127.0.0.3, each with its own stream
folder), a writer process on m1, mirrors here; bounded waits everywhere."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import redis

import dao
from dao.net import remote
from dao.net.registry import RegistryError
from dao.net.remote import RemoteError
from dao.net.server import StreamServer, parse_ports, reply_key, request_channel, request_key
from dao.streams.stream import remove
from dao.testing import child_environment, free_port, unique_name, wait_for


@pytest.fixture
def machines(redis_url, procs):
    """Start two servers, m1 (127.0.0.2) and m2 (127.0.0.3); yield ``{host: (dir, proc)}``."""
    out = {}
    base = random.randrange(20000, 60000, 100)
    for i, (host, ip) in enumerate((("m1", "127.0.0.2"), ("m2", "127.0.0.3"))):
        folder = tempfile.mkdtemp(prefix="dao", dir="/tmp")
        log = open(os.path.join(folder, "server.log"), "w+")  # noqa: SIM115 - procs closes it
        p = subprocess.Popen(
            [sys.executable, "-m", "dao.net.cli", "server", "--redis", redis_url, "--host", host,
             "--bind", ip, "--ports", f"{base + 20 * i}-{base + 20 * i + 19}", "--ttl", "5"],
            stdout=subprocess.DEVNULL, stderr=log, env=child_environment(DAO_SHM_DIR=folder),
        )  # fmt: skip
        p.files = [log]
        procs.append(p)
        out[host] = (folder, p)
    wait_for(lambda: {m["host"] for m in remote.machines(redis_url)} >= {"m1", "m2"}, 20,
             what="both servers registered")
    yield out
    for folder, p in out.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(10)
        for f in dao.list_streams(folder):
            remove(f)


def log_of(machines, host: str) -> str:
    f = machines[host][1].files[0]
    f.flush()
    with open(f.name) as g:
        return g.read()


def check_mirror(m, timeout: float = 5.0) -> int:
    """Wait for a fresh frame in the mirror; check its data against its cnt2; return cnt2."""
    wait_for(lambda: m.mirror.written > 0, timeout, what="a mirrored frame")
    local = dao.shm(m.local_name)
    try:
        before = m.mirror.written
        wait_for(lambda: m.mirror.written > before + 2, timeout, what="more mirrored frames")
        cnt2 = local.get_frame_id()
        data = local.get_data()
        i = cnt2 - 1000
        assert i > 0
        assert data.shape == (8, 16) and data.dtype == np.float32
        # latest mode: the frame read may be newer than cnt2 read just before, never older
        assert data[0, 0] >= i and np.all(data == data[0, 0])
        return cnt2
    finally:
        local.close()


def test_streams_appear_and_disappear(machines, redis_url):
    folder = machines["m1"][0]
    name = unique_name()
    path = os.path.join(folder, name + ".im.shm")
    s = dao.shm(path, np.zeros((3, 5), np.int16), depth=2)
    s.close()
    info = wait_for(lambda: remote.streams(redis_url, "m1").get(name), 2.0,
                    what="the stream registered")
    assert info["shape"] == (3, 5) and info["dtype"] == "int16" and info["depth"] == 2
    assert name not in remote.streams(redis_url, "m2")
    # re-created with another shape: registered again
    dao.shm(path, np.zeros((4, 4), np.float64), replace=True).close()
    wait_for(lambda: remote.streams(redis_url, "m1").get(name, {}).get("shape") == (4, 4), 2.0,
             what="the new shape registered")
    remove(path)
    wait_for(lambda: name not in remote.streams(redis_url, "m1"), 2.0,
             what="the stream unregistered")


def test_mirror_two_clients_and_server_death(machines, redis_url, writer):
    folder = machines["m1"][0]
    name = unique_name()
    writer(folder, name)
    wait_for(lambda: name in remote.streams(redis_url, "m1"), 2.0, what="registered")
    with remote.mirror(redis_url, "m1", name, local_name=unique_name()) as a:
        assert a.address.startswith("tcp://127.0.0.2:")
        check_mirror(a)
        conn = remote.streams(redis_url, "m1")[name]["connections"]
        assert len(conn) == 1 and conn[0]["clients"] == [a.client]
        b = remote.mirror(redis_url, "m1", name, local_name=unique_name(), mode="every",
                          depth=4)
        try:
            assert b.address == a.address  # one publisher for both
            check_mirror(b)
            wait_for(lambda: sorted(remote.streams(redis_url, "m1")[name]["connections"][0]
                                    ["clients"]) == sorted([a.client, b.client]), 3.0,
                     what="both clients recorded")
            a.close()
            # the first left: the second keeps receiving, past a few server scans
            before = b.mirror.written
            wait_for(lambda: b.mirror.written > before + 150, 10.0,
                     what="frames after the first client left")
            assert b.status()["link"] == "up"
            assert remote.streams(redis_url, "m1")[name]["connections"][0]["clients"] == [
                b.client]
            # the server dies: the link is reported down within 2 s
            machines["m1"][1].send_signal(signal.SIGKILL)
            machines["m1"][1].wait(5)
            wait_for(lambda: b.status()["link"] == "down", 2.0, what="link down")
        finally:
            b.close()
    assert not os.path.exists(dao.streams.stream.stream_path(b.local_name))


def test_publisher_stops_without_clients(machines, redis_url, writer):
    folder = machines["m2"][0]
    name = unique_name()
    writer(folder, name)
    wait_for(lambda: name in remote.streams(redis_url, "m2"), 2.0, what="registered")
    m = remote.mirror(redis_url, "m2", name, local_name=unique_name())
    assert m.address.startswith("tcp://127.0.0.3:")
    check_mirror(m)
    m.close()
    wait_for(lambda: remote.streams(redis_url, "m2")[name]["connections"] == [], 5.0,
             what="publisher stopped")
    assert "no client left" in log_of(machines, "m2")
    # and it serves again on request
    with remote.mirror(redis_url, "m2", name, local_name=unique_name()) as m:
        check_mirror(m)


def test_garbage_requests_are_ignored(machines, redis_url, writer):
    folder = machines["m1"][0]
    name = unique_name()
    writer(folder, name)
    wait_for(lambda: name in remote.streams(redis_url, "m1"), 2.0, what="registered")
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        for value in ("{not json", "[1, 2]", json.dumps({"client": "a:b"}), "\x00\xff"):
            r.set(request_key("m1", name), value)
            r.publish(request_channel("m1"), name)
            wait_for(lambda: not r.exists(request_key("m1", name)), 3.0, what="request read")
        r.publish(request_channel("m1"), "no*such:name")
        r.set(request_key("m1", "nosuch"), json.dumps({"client": "c1"}))
        r.publish(request_channel("m1"), "nosuch")
        wait_for(lambda: log_of(machines, "m1").count("malformed") >= 4, 3.0,
                 what="malformed requests logged")
        wait_for(lambda: "publishes no stream 'nosuch'" in log_of(machines, "m1"), 3.0,
                 what="unknown stream logged")
        assert "publishes no stream 'nosuch'" in r.get(reply_key("m1", "nosuch", "c1"))
    assert machines["m1"][1].poll() is None
    with remote.mirror(redis_url, "m1", name, local_name=unique_name()) as m:
        check_mirror(m)


def test_mirror_errors(machines, redis_url):
    with pytest.raises(RemoteError, match=r"no machine 'm9'.*m1, m2"):
        remote.mirror(redis_url, "m9", "x")
    with pytest.raises(RemoteError, match=r"machine 'm1' has no stream 'x'"):
        remote.mirror(redis_url, "m1", "x")
    with pytest.raises(RegistryError, match="cannot reach Redis"):
        remote.mirror(f"redis://127.0.0.1:{free_port()}/0", "m1", "x")


def test_mirror_timeout_names_host_and_stream(redis_url, stream_dir):
    # a machine registered by hand, with no server answering
    from dao.net.registry import Registry

    with Registry(redis_url, host="ghost") as reg:
        reg.register_machine("127.0.0.1")
        reg.register_stream("s1", (2, 2), "float32")
        with pytest.raises(TimeoutError, match=r"'ghost'.*'s1'.*within 0.5 s"):
            remote.mirror(redis_url, "ghost", "s1", timeout=0.5)


def test_server_in_a_thread_allow_and_stop(redis_url, stream_dir):
    a, b = unique_name("keep"), unique_name("skip")
    dao.shm(a, np.zeros(4, np.uint8)).close()
    dao.shm(b, np.zeros(4, np.uint8)).close()
    server = StreamServer(redis_url, host="th", allow=["keep*"], scan_interval=0.2).start()
    try:
        assert set(remote.streams(redis_url, "th")) == {a}
    finally:
        server.stop()
    assert server._thread is not None and not server._thread.is_alive()
    assert "th" not in {m["host"] for m in remote.machines(redis_url)}


def test_parse_ports():
    assert parse_ports("40000-40009") == (40000, 40009)
    assert parse_ports("5000") == (5000, 5000)
    assert parse_ports(None) is None
    for bad in ("a-b", "9-1", "0-3", "1-70000"):
        with pytest.raises(ValueError, match="port range"):
            parse_ports(bad)


def test_cli_errors(redis_url):
    url = f"redis://127.0.0.1:{free_port()}/0"
    for argv in (["server", "--redis", url, "--host", "x"], ["remote", "ls", "--redis", url],
                 ["remote", "mirror", "m1", "s", "--redis", url],
                 ["server", "--redis", redis_url, "--ports", "9-1"]):
        p = subprocess.run([sys.executable, "-m", "dao.net.cli", *argv], capture_output=True,
                           text=True, timeout=30, env=child_environment())
        assert p.returncode == 2, (argv, p.stderr)
        assert "Traceback" not in p.stderr and p.stderr.startswith("dao "), p.stderr


def test_server_refuses_what_cannot_work(machines, redis_url, tmp_path):
    base = ["server", "--redis", redis_url, "--ttl", "3"]
    cases = [
        (["--host", "m1", "--bind", "127.0.0.4"], "registered by another live dao server"),
        (["--host", "m9", "--dir", str(tmp_path / "nothing")], "does not exist"),
        (["--host", "m9", "--bind", "192.0.2.77"], "is it an address of this machine"),
    ]
    for extra, why in cases:
        p = subprocess.run([sys.executable, "-m", "dao.net.cli", *base, *extra],
                           capture_output=True, text=True, timeout=60, env=child_environment())
        assert p.returncode == 2 and why in p.stderr, (extra, p.stderr)
        assert "Traceback" not in p.stderr
    # the real m1 was not disturbed
    assert {m["host"]: m["ip"] for m in remote.machines(redis_url)}["m1"] == "127.0.0.2"
    assert machines["m1"][1].poll() is None


def test_cli_remote_ls(machines, redis_url):
    name = unique_name()
    dao.shm(os.path.join(machines["m2"][0], name + ".im.shm"), np.zeros((2, 3))).close()
    wait_for(lambda: remote.streams(redis_url, "m2").get(name, {}).get("rate") == 0, 4.0,
             what="registered, its rate measured")
    p = subprocess.run([sys.executable, "-m", "dao.net.cli", "remote", "ls", "--redis",
                        redis_url], capture_output=True, text=True, timeout=30,
                       env=child_environment())
    assert p.returncode == 0, p.stderr
    assert "m1  127.0.0.2" in p.stdout and "m2  127.0.0.3" in p.stdout
    line = next(x for x in p.stdout.splitlines() if name in x)
    assert "2x3" in line and "0.0 Hz" in line

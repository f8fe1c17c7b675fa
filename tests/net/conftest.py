"""Fixtures of the network tests: a private redis-server on a loopback port (never skipped:
without Debian's redis-server, ``redis_server()`` fails saying how to install it)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

import dao
from dao.streams.stream import remove
from dao.testing import RedisServer, child_environment, redis_server, wait_for


@pytest.fixture(scope="module")
def module_redis():
    """One redis-server for the module's tests (persistence off, always stopped)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_url(module_redis) -> str:
    """The URL of the module's redis-server, emptied before the test."""
    import redis

    if not module_redis.running():  # a test stopped it
        module_redis.start()
    with redis.Redis.from_url(module_redis.url, socket_timeout=5) as r:
        r.flushall()
    return module_redis.url


@pytest.fixture
def own_redis():
    """A redis-server of the test's own, which it may stop or restart."""
    with redis_server() as server:
        yield server


# -- machines ---------------------------------------------------------------------------------
# Each "machine" is a `dao server` process with its own stream folder. As root (as in CI) each
# runs in a network namespace of its own, reached through a veth pair on a /30 of the
# benchmarking range 198.18.0.0/15 (never routed), so frames really cross an interface;
# otherwise on its own loopback address (127.0.0.2, 127.0.0.3, ...).


def _can_make_namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"daop{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return made


NAMESPACES = _can_make_namespaces()


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Machine:
    """One machine of a :class:`Testbed`: a ``dao server`` on :attr:`ip`, with its folder."""

    def __init__(self, bed: Testbed, host: str, index: int) -> None:
        self.bed = bed
        self.host = host
        self.folder = tempfile.mkdtemp(prefix="dao", dir="/tmp")
        self.ports = f"{bed.port_base + 20 * index}-{bed.port_base + 20 * index + 19}"
        self.proc: subprocess.Popen | None = None
        self.netns = None
        if NAMESPACES:
            prefix = f"198.18.{bed.subnet}."
            gateway, self.ip = prefix + str(4 * index + 1), prefix + str(4 * index + 2)
            self.netns = f"dao{os.getpid()}m{index}"
            veth = f"dv{os.getpid() % 100000}{index}"
            outside, inside = veth + "a", veth + "b"
            _ip("netns", "add", self.netns)
            bed.namespaces.append(self.netns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns",
                self.netns)
            _ip("addr", "add", f"{gateway}/30", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("-n", self.netns, "addr", "add", f"{self.ip}/30", "dev", inside)
            _ip("-n", self.netns, "link", "set", inside, "up")
            _ip("-n", self.netns, "link", "set", "lo", "up")
            self.gateway = gateway
        else:
            self.ip = f"127.0.0.{index + 2}"
            self.gateway = "127.0.0.1"
        self.log = os.path.join(self.folder, "server.log")

    def start(self, *extra: str) -> subprocess.Popen:
        """Start (or restart) the machine's server; do not wait for it."""
        url = self.bed.redis.url_at(self.gateway)
        cmd = [sys.executable, "-m", "dao.net.cli", "server", "--redis", url, "--host",
               self.host, "--bind", self.ip, "--ports", self.ports, "--ttl", "5", *extra]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                         env=child_environment(DAO_SHM_DIR=self.folder))
        self.bed.procs.append(self.proc)
        return self.proc

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(10)

    def log_text(self) -> str:
        with open(self.log) as f:
            return f.read()

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name + ".im.shm")


class Testbed:
    """A private redis-server and machines that register in it."""

    def __init__(self, procs: list) -> None:
        self.procs = procs
        self.subnet = random.randrange(256)
        self.port_base = random.randrange(20000, 60000, 100)
        self.namespaces: list[str] = []
        self.machines: dict[str, Machine] = {}
        self.redis = None

    def __enter__(self) -> Testbed:
        return self

    def add(self, host: str) -> Machine:
        m = self.machines[host] = Machine(self, host, len(self.machines))
        return m

    def start(self, *hosts: str, extra: tuple[str, ...] = ()) -> None:
        """Start the registry, then the servers of ``hosts`` and wait until registered."""
        from dao.net import remote

        for h in hosts:
            self.add(h)
        self.redis = RedisServer(also_bind=[m.gateway for m in self.machines.values()
                                            if m.gateway != "127.0.0.1"])
        self.redis.start()
        for m in self.machines.values():
            m.start(*extra)
        wait_for(lambda: {x["host"] for x in remote.machines(self.redis.url)} >= set(hosts),
                 20, what="the servers registered")

    def close(self) -> None:
        for m in self.machines.values():
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
            for f in dao.list_streams(m.folder):
                with contextlib.suppress(OSError):
                    remove(f)
            shutil.rmtree(m.folder, ignore_errors=True)
        if self.redis is not None:
            self.redis.close()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def testbed(procs):
    """A :class:`Testbed`; call ``testbed.start("m1", "m2")``. Always cleaned up."""
    bed = Testbed(procs)
    try:
        yield bed
    finally:
        bed.close()


# A writer on a machine: creates the stream, then writes frame i = full(i) with cnt2 = 1000 + i
# every PERIOD seconds until killed.
WRITER = r"""
import sys, time
import numpy as np
import dao
path, period = sys.argv[1], float(sys.argv[2])
s = dao.shm(path, np.zeros((8, 16), np.float32), depth=4, replace=True)
print("ready", flush=True)
i = 0
while True:
    i += 1
    s.set_data(np.full((8, 16), i, np.float32), cnt2=1000 + i)
    time.sleep(period)
"""


@pytest.fixture
def writer(procs):
    """``writer(folder, name, period=0.02)`` starts a writer process of stream ``name`` in
    ``folder`` (frames ``full((8, 16), i)``, cnt2 ``1000 + i``) and returns it once the
    stream exists; killed at teardown."""

    def start(folder: str, name: str, period: float = 0.02) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, os.path.join(folder, name + ".im.shm"), str(period)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_environment(),
        )  # fmt: skip
        procs.append(p)
        assert p.stdout.readline().startswith("ready"), p.stderr.read()
        return p

    return start

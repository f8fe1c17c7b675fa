"""The Redis registry of machines and streams (dao.net.registry), against a real redis-server."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime

import pytest
import redis

from dao.errors import DaoError
from dao.net.registry import CHANNEL, Registry, RegistryError
from dao.testing import free_port, redis_server, wait_for

MACHINE_FIELDS = ("ip", "hostname", "role", "last_connect")  # the spec's
OUR_FIELDS = ("instance",)  # this server's run and heartbeat interval (Registry.claim_host)


@pytest.fixture
def registries():
    """Registries to close at teardown, whatever happened."""
    made: list[Registry] = []
    yield made
    for r in made:
        r.close()


@pytest.fixture
def make(redis_url, registries):
    def make(host: str, **kw) -> Registry:
        reg = Registry(redis_url, host=host, **kw)
        registries.append(reg)
        return reg

    return make


def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def next_event(changes, timeout: float = 1.0) -> dict:
    event = changes.get(timeout=timeout)
    assert event is not None, f"no change event within {timeout} s"
    return event


def test_machine_keys_as_in_the_spec(make, redis_url):
    reg = make("wfs1", ttl=30)
    reg.register_machine("10.0.0.7", role="master", hostname="wfs1.lab")
    r = raw(redis_url)
    assert sorted(r.keys("dao:*")) == sorted(f"dao:machines:wfs1:{f}"
                                             for f in MACHINE_FIELDS + OUR_FIELDS)
    assert r.get("dao:machines:wfs1:ip") == "10.0.0.7"
    assert r.get("dao:machines:wfs1:instance") == reg.instance
    assert r.get("dao:machines:wfs1:hostname") == "wfs1.lab"
    assert r.get("dao:machines:wfs1:role") == "master"
    stamp = datetime.fromisoformat(r.get("dao:machines:wfs1:last_connect"))
    assert stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 5
    for f in MACHINE_FIELDS + OUR_FIELDS:
        assert 25_000 < r.pttl(f"dao:machines:wfs1:{f}") <= 30_000
    assert reg.machines() == [
        {
            "host": "wfs1",
            "ip": "10.0.0.7",
            "hostname": "wfs1.lab",
            "role": "master",
            "last_connect": r.get("dao:machines:wfs1:last_connect"),
        }
    ]


def test_stream_keys_as_in_the_spec(make, redis_url):
    reg = make("wfs1", ttl=30)
    assert reg.register_stream("slopes", (2, 40), "float32", depth=4, labels=["y", "x"]) == "added"
    r = raw(redis_url)
    base = "dao:machines:wfs1:shm:slopes"
    assert json.loads(r.get(f"{base}:dimensions")) == [2, 40]
    assert r.get(f"{base}:dtype") == "float32"
    assert json.loads(r.get(f"{base}:connections")) == []
    assert json.loads(r.get(f"{base}:depth")) == 4
    assert json.loads(r.get(f"{base}:labels")) == ["y", "x"]
    assert json.loads(r.get(f"{base}:rate")) is None
    for key in r.keys(f"{base}:*"):
        assert 25_000 < r.pttl(key) <= 30_000
    reg.set_connections("slopes", [{"address": "10.0.0.8", "port": 5555}])
    assert reg.streams("wfs1")["slopes"] == {
        "host": "wfs1",
        "name": "slopes",
        "shape": (2, 40),
        "dtype": "float32",
        "depth": 4,
        "labels": ["y", "x"],
        "rate": None,
        "connections": [{"address": "10.0.0.8", "port": 5555}],
    }
    reg.heartbeat()  # keeps the connections the publisher wrote
    assert reg.streams("wfs1")["slopes"]["connections"] == [{"address": "10.0.0.8", "port": 5555}]
    reg.unregister_stream("slopes")
    assert r.keys(f"{base}:*") == []
    assert reg.streams("wfs1") == {}


def test_two_machines_see_each_other(make):
    a, b = make("rtc"), make("cam")
    a.register_machine("10.0.0.1", role="master")
    b.register_machine("10.0.0.2")
    a.register_stream("dm", (97,), "float64", rate=1000.0)
    b.register_stream("frame", (64, 64), "uint16")
    b.register_stream("slopes", (80,), "float32")
    assert [m["host"] for m in a.machines()] == ["cam", "rtc"]
    assert [m["role"] for m in b.machines()] == ["minion", "master"]
    assert sorted(a.streams("cam")) == ["frame", "slopes"]
    assert b.streams("rtc")["dm"]["rate"] == 1000.0
    everything = a.streams()
    assert sorted(everything) == ["cam", "rtc"]
    assert everything["cam"]["frame"]["shape"] == (64, 64)
    assert everything["cam"]["frame"]["dtype"] == "uint16"
    assert a.streams("nobody") == {}


def test_change_events_added_changed_removed(make):
    a, b = make("rtc"), make("cam")
    with a.subscribe() as changes:
        t0 = time.monotonic()
        assert b.register_stream("frame", (64, 64), "uint16") == "added"
        e = next_event(changes)
        assert (e["kind"], e["event"], e["host"], e["name"]) == ("stream", "added", "cam", "frame")
        assert (e["shape"], e["dtype"]) == ([64, 64], "uint16")
        assert b.register_stream("frame", (64, 64), "uint16") is None  # as is: no event
        assert changes.get(timeout=0.2) is None
        assert b.register_stream("frame", (128, 128), "uint16") == "changed"
        e = next_event(changes)
        assert (e["event"], e["shape"], e["dtype"]) == ("changed", [128, 128], "uint16")
        assert b.register_stream("frame", (128, 128), "float32") == "changed"
        assert next_event(changes)["dtype"] == "float32"
        assert b.streams("cam")["frame"]["dtype"] == "float32"
        b.unregister_stream("frame")
        e = next_event(changes)
        assert (e["event"], e["host"], e["name"]) == ("removed", "cam", "frame")
        b.register_machine("10.0.0.2")
        e = next_event(changes)
        assert (e["kind"], e["event"], e["ip"]) == ("machine", "added", "10.0.0.2")
        b.unregister_machine()
        assert next_event(changes)["event"] == "removed"
        assert time.monotonic() - t0 < 3
    assert a.machines() == []


def test_change_events_are_plain_json(make, redis_url):
    reg = make("cam")
    with raw(redis_url).pubsub() as ps:
        ps.subscribe(CHANNEL)
        assert ps.get_message(timeout=2)["type"] == "subscribe"
        reg.register_stream("frame", (4,), "int32")
        msg = wait_for(lambda: ps.get_message(timeout=0.1), timeout=2, what="a message")
        assert msg["channel"] == "dao:changes"
        event = json.loads(msg["data"])  # plain JSON, readable from any language
        assert (event["event"], event["host"], event["name"]) == ("added", "cam", "frame")


def test_silent_machine_is_evicted_by_its_ttl(make):
    dead, alive, watcher = make("dead", ttl=1.0), make("alive", ttl=1.0), make("watcher")
    dead.register_machine("10.0.0.3")
    dead.register_stream("frame", (8,), "uint8")
    alive.register_machine("10.0.0.4")
    alive.register_stream("frame", (8,), "uint8")
    t0 = time.monotonic()

    def dead_gone():
        alive.heartbeat()  # every 50 ms: the live machine keeps its keys
        return [m["host"] for m in watcher.machines()] == ["alive"]

    wait_for(dead_gone, timeout=3, interval=0.05, what="eviction of the silent machine")
    assert 0.8 < time.monotonic() - t0 < 3
    assert sorted(watcher.streams()) == ["alive"]
    # it comes back whole at its next heartbeat, with events
    with watcher.subscribe() as changes:
        assert dead.heartbeat() is True
        events = [next_event(changes), next_event(changes)]
    assert [(e["kind"], e["event"]) for e in events] == [("machine", "added"), ("stream", "added")]
    assert sorted(watcher.streams()) == ["alive", "dead"]
    assert dead.heartbeat() is False


def test_heartbeat_renews_ttl_and_last_connect(make, redis_url):
    reg = make("cam", ttl=1.0)
    reg.register_machine("10.0.0.2")
    reg.register_stream("frame", (8,), "uint8")
    r = raw(redis_url)
    first = r.get("dao:machines:cam:last_connect")
    end = time.monotonic() + 1.6  # longer than the TTL
    while time.monotonic() < end:
        assert reg.heartbeat() is False
        time.sleep(0.2)
    assert r.get("dao:machines:cam:last_connect") > first
    assert [m["host"] for m in reg.machines()] == ["cam"]
    assert r.pttl("dao:machines:cam:shm:frame:dtype") > 500


def test_redis_down_raises_registry_error_quickly():
    url = f"redis://127.0.0.1:{free_port()}/0"
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="start redis-server") as info:
        Registry(url, host="cam", timeout=1.0)
    assert time.monotonic() - t0 < 1.5
    assert url in str(info.value)
    assert isinstance(info.value, DaoError) and isinstance(info.value, ConnectionError)


def test_silent_server_times_out_without_hanging():
    """A peer that accepts connections but never answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match="did not answer within 0.5 s") as info:
            Registry(url, host="cam", timeout=0.5)
        assert time.monotonic() - t0 < 2
        assert url in str(info.value)


def test_redis_stopped_then_restarted(own_redis, registries):
    reg = Registry(own_redis.url, host="cam", ttl=30, timeout=1.0)
    registries.append(reg)
    reg.register_machine("10.0.0.2")
    reg.register_stream("frame", (64, 64), "uint16")
    changes = reg.subscribe()
    own_redis.stop()
    for call in (reg.heartbeat, reg.machines, lambda: changes.get(timeout=0.5)):
        t0 = time.monotonic()
        with pytest.raises(RegistryError, match=own_redis.url):
            call()
        assert time.monotonic() - t0 < 2.5
    own_redis.start()  # empty: no persistence
    assert raw(own_redis.url).keys("*") == []
    assert reg.heartbeat() is True  # the registry is whole again
    assert [m["host"] for m in reg.machines()] == ["cam"]
    assert reg.streams("cam")["frame"]["shape"] == (64, 64)
    other = Registry(own_redis.url, host="rtc")
    registries.append(other)
    with other.subscribe() as fresh:
        reg.register_stream("frame", (32, 32), "uint16")
        assert next_event(fresh)["event"] == "changed"


def test_redis_restart_between_heartbeats(own_redis, registries):
    reg = Registry(own_redis.url, host="cam", ttl=30, timeout=1.0)
    registries.append(reg)
    reg.register_machine("10.0.0.2")
    reg.register_stream("frame", (8,), "uint8")
    own_redis.restart()  # the pooled connection is stale: retried once
    assert reg.heartbeat() is True
    assert sorted(reg.streams()) == ["cam"]


def test_password():
    with redis_server(password="s3cret") as server:
        assert server.url.startswith("redis://:s3cret@127.0.0.1:")
        with Registry(server.url, host="cam") as reg:
            reg.register_machine("10.0.0.2")
            assert [m["host"] for m in reg.machines()] == ["cam"]
        bad = server.url.replace("s3cret", "wrong")
        with pytest.raises(RegistryError, match="password") as info:
            Registry(bad, host="cam")
        assert "wrong" not in str(info.value)  # the password is never shown
        assert f"redis://:***@127.0.0.1:{server.port}/0" in str(info.value)
        with pytest.raises(RegistryError, match="password"):
            Registry(f"redis://127.0.0.1:{server.port}/0", host="cam")


@pytest.mark.parametrize("bad", ["a:b", "x*", "", "a b", "h?", "[h]"])
def test_names_are_validated(make, bad):
    with pytest.raises(ValueError, match="invalid host name"):
        Registry("redis://127.0.0.1:1/0", host=bad)
    reg = make("cam")
    with pytest.raises(ValueError, match="invalid stream name"):
        reg.register_stream(bad, (2,), "float32")
    with pytest.raises(ValueError, match="invalid stream name"):
        reg.unregister_stream(bad)
    with pytest.raises(ValueError, match="invalid host name"):
        reg.streams(bad)


def test_values_are_validated(make):
    reg = make("cam")
    with pytest.raises(ValueError, match="role"):
        reg.register_machine("10.0.0.2", role="boss")
    with pytest.raises(ValueError, match="IP address"):
        reg.register_machine("not-an-ip")
    with pytest.raises(ValueError, match="dtype"):
        reg.register_stream("s", (2,), "notadtype")
    with pytest.raises(ValueError, match="negative"):
        reg.register_stream("s", (-1,), "float32")
    with pytest.raises(ValueError, match="ttl"):
        Registry("redis://127.0.0.1:1/0", host="cam", ttl=0)
    assert reg.streams() == {}

"""The write lease of a stream (issue 13) on a real redis-server: one holder at a time,
renewed and released only by its holder, freed by its TTL."""

from __future__ import annotations

import time

import pytest

from dao.net import lease
from dao.net.connect import redis_client


@pytest.fixture
def conn(redis_url):
    c = redis_client(redis_url)
    yield c
    c.close()


def test_one_holder_at_a_time(conn):
    a = lease.acquire(conn, "h", "dm", "alice", 5.0)
    assert a is not None and a.startswith("alice:")
    assert lease.acquire(conn, "h", "dm", "bob", 5.0) is None
    assert lease.holder(conn, "h", "dm") == a and lease.client_of(a) == "alice"
    assert lease.acquire(conn, "h", "other", "bob", 5.0)  # per stream
    assert not lease.release(conn, "h", "dm", "bob:123")  # not bob's to free
    assert lease.holder(conn, "h", "dm") == a
    assert lease.release(conn, "h", "dm", a)
    assert lease.holder(conn, "h", "dm") is None
    b = lease.acquire(conn, "h", "dm", "bob", 5.0)
    assert b is not None and b != a
    assert not lease.renew(conn, "h", "dm", a, 5.0)  # alice's old lease: taken
    assert lease.holder(conn, "h", "dm") == b


def test_expires_and_renews(conn):
    a = lease.acquire(conn, "h", "dm", "alice", 0.3)
    assert lease.renew(conn, "h", "dm", a, 0.3)
    time.sleep(0.5)
    assert lease.holder(conn, "h", "dm") is None  # its holder stopped renewing it
    assert lease.renew(conn, "h", "dm", a, 5.0)  # free: taken again by the same holder
    assert lease.holder(conn, "h", "dm") == a
    assert conn.pttl(lease.lease_key("h", "dm")) > 4000

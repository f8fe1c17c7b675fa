"""Fixtures of the network tests: a private redis-server on a loopback port (never skipped:
without Debian's redis-server, ``redis_server()`` fails saying how to install it)."""

from __future__ import annotations

import pytest

from dao.testing import redis_server


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

"""The write lease of a stream: one remote writer at a time (issue 13).

Clients of a bidirectional mirror (:func:`dao.net.remote.mirror` with
``bidirectional=True``) send their writes back to the source only while they hold the
stream's lease, a Redis key ``dao:leases:<host>:<name>`` whose value is the holder's
identity ``<client>:<token>`` (a fresh random token per acquisition). It is taken with
``SET NX`` and a TTL, renewed by its holder, and released (or renewed) only by the holder
(compare-and-delete in one Lua script), so a holder that dies frees the stream within the
TTL and a late release never frees someone else's lease. The source's
:class:`~dao.net.uplink.StreamWriter` writes a frame only if the identity it carries is the
key's value.
"""

from __future__ import annotations

import secrets

import redis

from dao.errors import DaoError
from dao.net.registry import PREFIX

__all__ = ["LeaseError", "lease_key", "client_of", "acquire", "renew", "release", "holder"]

_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_IF_MINE_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseError(DaoError, RuntimeError):
    """Another client holds the write lease of the stream.

    Attributes
    ----------
    holder : str or None
        The client id of the holder.
    """

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


def lease_key(host: str, name: str) -> str:
    """The Redis key of the write lease of ``host``'s stream ``name``."""
    return f"{PREFIX}:leases:{host}:{name}"


def client_of(identity: str | None) -> str | None:
    """The client id of a lease identity ``<client>:<token>``."""
    return None if identity is None else identity.rpartition(":")[0]


def acquire(conn: redis.Redis, host: str, name: str, client: str, ttl: float) -> str | None:
    """Take the lease if it is free.

    Parameters
    ----------
    conn : redis.Redis
        A client with ``decode_responses=True``.
    host, name : str
        The source machine and stream.
    client : str
        This client's id.
    ttl : float
        Seconds the lease lives unless renewed.

    Returns
    -------
    str or None
        The identity now holding the lease (``<client>:<token>``), or None if another client
        holds it (see :func:`holder`).
    """
    identity = f"{client}:{secrets.token_hex(8)}"
    if conn.set(lease_key(host, name), identity, nx=True, px=max(1, round(ttl * 1000))):
        return identity
    return None


def renew(conn: redis.Redis, host: str, name: str, identity: str, ttl: float) -> bool:
    """Extend the lease by ``ttl`` seconds if ``identity`` still holds it, or take it again if
    it is free (it expired, or Redis restarted empty); False if another client holds it."""
    return bool(conn.eval(_RENEW, 1, lease_key(host, name), identity,
                          max(1, round(ttl * 1000))))


def release(conn: redis.Redis, host: str, name: str, identity: str) -> bool:
    """Free the lease if ``identity`` holds it; False if it did not (expired, or taken)."""
    return bool(conn.eval(_IF_MINE_DELETE, 1, lease_key(host, name), identity))


def holder(conn: redis.Redis, host: str, name: str) -> str | None:
    """The identity holding the lease now, or None."""
    return conn.get(lease_key(host, name))

"""Streams of other machines (``dao.remote``, issue 13): list them and mirror one locally.

A :class:`~dao.net.server.StreamServer` (``dao server``) runs on each machine and publishes
its streams in the shared Redis registry. Here a client:

- :func:`machines` and :func:`streams` read the registry;
- :func:`mirror` asks a machine's server for a stream (a client heartbeat key, then a
  request key and a notification, see :mod:`dao.net.server`), waits for the publisher's
  connection record, and opens a :class:`~dao.net.mirror.Mirror` to it. A small thread keeps
  the client heartbeat key alive (refreshed every :data:`HEARTBEAT_S` seconds, expiring after
  :data:`HEARTBEAT_TTL_S`), so the server keeps publishing while this client lives, and stops
  once every client closed or died.

Example::

    from dao.net import remote
    with remote.mirror("redis://10.0.0.1:6379/0", "wfs-pc", "wfs1") as m:
        frame = dao.shm(m.local_name).get_data(check=True)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from dao.errors import DaoError
from dao.net import lease
from dao.net.connect import redact as _redact
from dao.net.connect import redis_client
from dao.net.mirror import Mirror
from dao.net.registry import DEFAULT_URL, PREFIX, Registry, _check_name, _error
from dao.net.server import heartbeat_key, reply_key, request_channel, request_key

__all__ = ["machines", "streams", "mirror", "RemoteMirror", "RemoteError", "LeaseError",
           "HEARTBEAT_S", "HEARTBEAT_TTL_S", "LEASE_TTL_S"]

LeaseError = lease.LeaseError

log = logging.getLogger("dao.net.remote")

#: Seconds between refreshes of a client's heartbeat key.
HEARTBEAT_S = 2.0
#: Seconds a client's heartbeat key lives unless refreshed.
HEARTBEAT_TTL_S = 6.0
#: Seconds a write lease lives unless renewed (renewed every :data:`HEARTBEAT_S`).
LEASE_TTL_S = 6.0


class RemoteError(DaoError, LookupError):
    """No such machine or stream in the registry; the message names those that exist."""


def default_url() -> str:
    """``$DAO_REDIS``, or ``redis://127.0.0.1:6379/0``."""
    return os.environ.get("DAO_REDIS", DEFAULT_URL)


def _registry(url: str | None) -> Registry:
    return Registry(url or default_url(), host="client", timeout=2.0)


def machines(redis_url: str | None = None) -> list[dict[str, Any]]:
    """The machines registered now, sorted by host (``host``, ``ip``, ``hostname``, ``role``,
    ``last_connect`` each).

    Raises
    ------
    RegistryError
        Redis cannot be reached.
    """
    with _registry(redis_url) as reg:
        return reg.machines()


def streams(redis_url: str | None = None, host: str | None = None) -> dict:
    """The streams registered now: ``{name: info}`` of ``host``, or ``{host: {name: info}}``
    of every machine (see :meth:`dao.net.registry.Registry.streams`).

    Raises
    ------
    RegistryError
        Redis cannot be reached.
    """
    with _registry(redis_url) as reg:
        return reg.streams(host)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RemoteMirror:
    """A local mirror of a remote stream, kept alive by a client heartbeat (from
    :func:`mirror`).

    A thread renews the client's heartbeat key every :data:`HEARTBEAT_S` seconds (and the
    write lease while held), and follows the publisher: when the link is down (its server
    was restarted, say) the request is made again every second, and the mirror moves to the
    publisher's new address as soon as the server records it.

    Attributes
    ----------
    host, name : str
        The remote machine and stream.
    client : str
        This client's id in the heartbeat key.
    address : str
        The publisher's ZeroMQ endpoint (followed when it changes).
    local_name : str
        The local mirror stream.
    bidirectional : bool
        Whether local writes flow back to the source (while this client holds the lease).
    mirror : Mirror
        The mirror itself (its counters, ``status()``).
    """

    def __init__(self, url: str, host: str, name: str, client: str, mode: str,
                 bidirectional: bool, conn: redis.Redis) -> None:
        self.url = url
        self.host = host
        self.name = name
        self.client = client
        self.mode = mode
        self.bidirectional = bidirectional
        self.mirror: Mirror | None = None
        self._redis = conn
        self._key = heartbeat_key(host, name, client)
        self._identity: str | None = None  # the lease, while held
        self._identity_b: bytes | None = None
        self._lease_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.local_name = mirror.local_name
        self._thread = threading.Thread(target=self._beat, name=f"dao-remote-{self.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return self.mirror.address

    def __repr__(self) -> str:
        return (f"RemoteMirror({self.host!r}, {self.name!r} -> {self.local_name!r}, "
                f"{self.address!r}{', bidirectional' if self.bidirectional else ''})")

    def __enter__(self) -> RemoteMirror:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """The mirror's freshness (:meth:`dao.net.mirror.Mirror.status`), plus ``host``,
        ``name``, ``client``, and for a bidirectional mirror ``lease`` (whether this client
        holds the write lease)."""
        out = {**self.mirror.status(), "host": self.host, "name": self.name,
               "client": self.client}
        if self.bidirectional:
            out["lease"] = self.holds_lease
        return out

    # -- write lease ---------------------------------------------------------------------------
    @property
    def holds_lease(self) -> bool:
        """Whether this client holds the stream's write lease now."""
        return self._identity is not None

    def lease_holder(self) -> str | None:
        """The client id holding the stream's write lease, or None.

        Raises
        ------
        RegistryError
            Redis cannot be reached.
        """
        try:
            return lease.client_of(lease.holder(self._redis, self.host, self.name))
        except redis.RedisError as exc:
            raise _error(self.url, "read the write lease", exc, 2.0) from exc

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the write lease of the stream: from now on, frames written into the local
        mirror are written into the source too. Renewed every :data:`HEARTBEAT_S` seconds
        while this mirror lives; freed by :meth:`release`, :meth:`close`, or
        :data:`LEASE_TTL_S` seconds after this process dies.

        Parameters
        ----------
        timeout : float
            Seconds to wait for another holder to release it.

        Raises
        ------
        LeaseError
            Another client still holds it after ``timeout`` (``.holder`` names it).
        RemoteError
            The mirror was not opened with ``bidirectional=True``.
        RegistryError
            Redis cannot be reached.
        """
        if not self.bidirectional:
            raise RemoteError(f"the mirror of {self.host}:{self.name} is read-only: open it "
                              "with remote.mirror(..., bidirectional=True) to write")
        end = time.monotonic() + timeout
        while True:
            with self._lease_lock:
                if self._identity is not None:
                    return
                try:
                    got = lease.acquire(self._redis, self.host, self.name, self.client,
                                        LEASE_TTL_S)
                    who = None if got else lease.holder(self._redis, self.host, self.name)
                except redis.RedisError as exc:
                    raise _error(self.url, "take the write lease", exc, 2.0) from exc
                if got:
                    self._identity, self._identity_b = got, got.encode()
                    return
            if time.monotonic() >= end:
                holder = lease.client_of(who)
                raise lease.LeaseError(
                    f"stream {self.name!r} of {self.host!r} is being written by client "
                    f"{holder!r}: wait for it to release the lease (acquire(timeout=...), or "
                    "--timeout of dao remote mirror --write), "
                    "or stop that client", holder)
            time.sleep(0.05)

    def release(self) -> None:
        """Free the write lease (no-op if not held): local writes are no longer sent."""
        with self._lease_lock:
            identity, self._identity, self._identity_b = self._identity, None, None
        if identity is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                lease.release(self._redis, self.host, self.name, identity)

    @contextlib.contextmanager
    def lease(self, timeout: float = 0.0) -> Iterator[RemoteMirror]:
        """``with m.lease():`` hold the write lease for the block (see :meth:`acquire`)."""
        self.acquire(timeout)
        try:
            yield self
        finally:
            self.release()

    def _lease(self) -> bytes | None:
        return self._identity_b

    # -- thread --------------------------------------------------------------------------------
    def _beat(self) -> None:
        warned = False
        next_beat = 0.0
        next_ask = 0.0
        while not self._stop.wait(0.25):
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_S
                    self._redis.set(self._key, _now(), px=int(HEARTBEAT_TTL_S * 1000))
                    self._renew()
                if now >= next_ask and self.mirror.status()["link"] == "down":
                    next_ask = now + 1.0
                    self._follow()
                warned = False
            except (redis.RedisError, OSError) as exc:
                if not warned:
                    log.warning("mirror of %s:%s: cannot reach the registry: %s (retrying)",
                                self.host, self.name, exc)
                    warned = True

    def _renew(self) -> None:
        with self._lease_lock:
            identity = self._identity
            if identity is None:
                return
            if lease.renew(self._redis, self.host, self.name, identity, LEASE_TTL_S):
                return
            self._identity = self._identity_b = None
        log.warning("mirror of %s:%s: the write lease was lost (taken by %s while this client "
                    "could not renew it); local writes are no longer sent", self.host,
                    self.name, lease.client_of(lease.holder(self._redis, self.host, self.name)))

    def _follow(self) -> None:
        """Ask again, and move to the publisher's address if the server recorded another."""
        _request(self._redis, self.host, self.name, self.client, self.mode,
                 self.bidirectional, 10.0)
        rec = _record(self._redis, self.host, self.name, self.client)
        if rec is None:
            return
        address, uplink = rec["address"], rec.get("uplink")
        if address != self.mirror.address or (uplink and uplink != self.mirror.uplink):
            log.info("mirror of %s:%s: following the publisher to %s", self.host, self.name,
                     address)
            self.mirror.connect(address, uplink)

    def close(self) -> None:
        """Release the lease, stop the heartbeat, delete the heartbeat key (the server stops
        publishing once no client is left), close the mirror and delete the local stream.
        Bounded (a few seconds even if Redis is down)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self.release()
        with contextlib.suppress(redis.RedisError, OSError):
            self._redis.delete(self._key)
        with contextlib.suppress(Exception):
            self._redis.close()
        if self.mirror is not None:
            self.mirror.close()


def mirror(
    redis_url: str | None,
    host: str,
    name: str,
    local_name: str | None = None,
    mode: str = "latest",
    depth: int = 1,
    bidirectional: bool = False,
    client: str | None = None,
    timeout: float = 5.0,
) -> RemoteMirror:
    """Mirror stream ``name`` of machine ``host`` into a local stream.

    The local stream is created at once with the source's shape and dtype (zeros, counter 0,
    until the newest source frame arrives, within a few ms when the link is up), so local
    readers can open it right away.

    Parameters
    ----------
    redis_url : str or None
        The registry (None: ``$DAO_REDIS`` or ``redis://127.0.0.1:6379/0``).
    host, name : str
        The machine (as registered by its ``dao server --host``) and its stream.
    local_name : str, optional
        The local stream (default ``<name>@<host>``).
    mode : {"latest", "every"}
        See :class:`~dao.net.mirror.Mirror`.
    depth : int
        FIFO depth of the local stream.
    bidirectional : bool
        Let frames written into the local stream flow back to the source, while this client
        holds the stream's write lease (:meth:`RemoteMirror.acquire`,
        :meth:`RemoteMirror.lease`). Refused by a read-only server.
    client : str, optional
        This client's id (default ``<hostname>-<pid>-<random>``).
    timeout : float
        Seconds to wait for the server to publish the stream.

    Raises
    ------
    RemoteError
        ``host`` is not registered, has no stream ``name`` (the message lists what exists),
        or its server refused the request (the message says why, e.g. it is read-only).
    TimeoutError
        The server did not publish the stream within ``timeout`` seconds.
    RegistryError
        Redis cannot be reached.
    ValueError
        Bad ``mode`` or names.
    """
    url = redis_url or default_url()
    if mode not in ("latest", "every"):
        raise ValueError(f"mirror mode must be 'latest' or 'every', not {mode!r}")
    _check_name(host, "host name")
    _check_name(name, "stream name")
    if client is None:
        client = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    _check_name(client, "client id")
    with _registry(url) as reg:
        hosts = [m["host"] for m in reg.machines()]
        if host not in hosts:
            raise RemoteError(f"no machine {host!r} in the registry at {_redact(url)}; "
                              "registered: "
                              f"{', '.join(hosts) or 'none'} (is 'dao server' running there?)")
        known = reg.streams(host)
        if name not in known:
            raise RemoteError(f"machine {host!r} has no stream {name!r}; it has: "
                              f"{', '.join(sorted(known)) or 'none'} (its server publishes "
                              "the streams of its folder that its --allow patterns match)")
        info = known[name]
    conn = redis_client(url, timeout=2.0)
    rm = RemoteMirror(url, host, name, client, mode, bidirectional, conn)
    try:
        rec = _ask(conn, url, host, name, client, mode, bidirectional, timeout)
        m = Mirror(rec["address"], local_name or f"{name}@{host}", mode, depth=depth,
                   shape=info["shape"], dtype=info["dtype"],
                   uplink=rec.get("uplink") if bidirectional else None,
                   lease=rm._lease if bidirectional else None)
    except BaseException:
        rm.close()
        raise
    rm._start(m)
    return rm


def _request(conn: redis.Redis, host: str, name: str, client: str, mode: str,
             bidirectional: bool, timeout: float) -> None:
    """Write the request and notify the server (a notification may be lost: the server also
    finds request keys at each scan)."""
    request = json.dumps({"client": client, "mode": mode, "bidirectional": bidirectional,
                          "time": _now()})
    pipe = conn.pipeline(transaction=True)
    pipe.set(heartbeat_key(host, name, client), _now(), px=int(HEARTBEAT_TTL_S * 1000))
    pipe.set(request_key(host, name), request, px=max(1000, int(timeout * 1000)))
    pipe.publish(request_channel(host), name)
    pipe.execute()


def _record(conn: redis.Redis, host: str, name: str, client: str) -> dict | None:
    """The server's connection record that lists ``client``, if any."""
    raw = conn.get(f"{PREFIX}:machines:{host}:shm:{name}:connections")
    try:
        records = json.loads(raw) if raw else []
    except ValueError:
        return None
    for rec in records if isinstance(records, list) else []:
        if (isinstance(rec, dict) and client in rec.get("clients", ())
                and isinstance(rec.get("address"), str)):
            return rec
    return None


def _ask(conn: redis.Redis, url: str, host: str, name: str, client: str, mode: str,
         bidirectional: bool, timeout: float) -> dict:
    """Make the request and wait for the publisher's connection record (with an ``uplink``
    for a bidirectional request), or the server's refusal."""
    end = time.monotonic() + timeout
    asked = 0.0
    answer = reply_key(host, name, client)
    try:
        conn.delete(answer)
        while True:
            now = time.monotonic()
            if now - asked >= 1.0:  # again every second: a notification may be lost
                _request(conn, host, name, client, mode, bidirectional, timeout)
                asked = now
            rec = _record(conn, host, name, client)
            if rec is not None and (not bidirectional or isinstance(rec.get("uplink"), str)):
                return rec
            refused = conn.get(answer)
            if refused is not None:
                conn.delete(answer)
                try:
                    why = json.loads(refused)["error"]
                except (ValueError, TypeError, KeyError):
                    why = refused[:200]
                raise RemoteError(f"the server of {host!r} refused to serve {name!r}: {why}")
            if now > end:
                raise TimeoutError(
                    f"the server of machine {host!r} did not publish stream {name!r} within "
                    f"{timeout:g} s (is its 'dao server' alive? see its log)")
            time.sleep(0.05)
    except redis.RedisError as exc:  # not OSError: TimeoutError is one
        raise _error(url, f"ask {host!r} for stream {name!r}", exc, 2.0) from exc

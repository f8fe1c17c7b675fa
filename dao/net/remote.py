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
from datetime import UTC, datetime
from typing import Any

import redis

from dao.errors import DaoError
from dao.net.mirror import Mirror
from dao.net.registry import DEFAULT_URL, Registry, _check_name, _error
from dao.net.server import heartbeat_key, request_channel, request_key

__all__ = ["machines", "streams", "mirror", "RemoteMirror", "RemoteError", "HEARTBEAT_S",
           "HEARTBEAT_TTL_S"]

log = logging.getLogger("dao.net.remote")

#: Seconds between refreshes of a client's heartbeat key.
HEARTBEAT_S = 2.0
#: Seconds a client's heartbeat key lives unless refreshed.
HEARTBEAT_TTL_S = 6.0


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

    Attributes
    ----------
    host, name : str
        The remote machine and stream.
    client : str
        This client's id in the heartbeat key.
    address : str
        The publisher's ZeroMQ endpoint.
    local_name : str
        The local mirror stream.
    mirror : Mirror
        The mirror itself (its counters, ``status()``).
    """

    def __init__(self, url: str, host: str, name: str, client: str, address: str,
                 mirror: Mirror, conn: redis.Redis) -> None:
        self.url = url
        self.host = host
        self.name = name
        self.client = client
        self.address = address
        self.mirror = mirror
        self.local_name = mirror.local_name
        self._redis = conn
        self._key = heartbeat_key(host, name, client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"dao-remote-{name}",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return (f"RemoteMirror({self.host!r}, {self.name!r} -> {self.local_name!r}, "
                f"{self.address!r})")

    def __enter__(self) -> RemoteMirror:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """The mirror's freshness (:meth:`dao.net.mirror.Mirror.status`), plus ``host``,
        ``name``, ``address`` and ``client``."""
        return {**self.mirror.status(), "host": self.host, "name": self.name,
                "address": self.address, "client": self.client}

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._redis.set(self._key, _now(), px=int(HEARTBEAT_TTL_S * 1000))
                warned = False
            except (redis.RedisError, OSError) as exc:
                if not warned:
                    log.warning("mirror of %s:%s: cannot renew the client heartbeat: %s",
                                self.host, self.name, exc)
                    warned = True

    def close(self) -> None:
        """Stop the heartbeat, delete the heartbeat key (the server stops publishing once no
        client is left), close the mirror and delete the local stream. Bounded (a few
        seconds even if Redis is down)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with contextlib.suppress(redis.RedisError, OSError):
            self._redis.delete(self._key)
        with contextlib.suppress(Exception):
            self._redis.close()
        self.mirror.close()


def mirror(
    redis_url: str | None,
    host: str,
    name: str,
    local_name: str | None = None,
    mode: str = "latest",
    depth: int = 1,
    client: str | None = None,
    timeout: float = 5.0,
) -> RemoteMirror:
    """Mirror stream ``name`` of machine ``host`` into a local stream.

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
    client : str, optional
        This client's id (default ``<hostname>-<pid>-<random>``).
    timeout : float
        Seconds to wait for the server to publish the stream.

    Raises
    ------
    RemoteError
        ``host`` is not registered, or has no stream ``name`` (the message lists what
        exists).
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
            raise RemoteError(f"no machine {host!r} in the registry at {reg!r}; registered: "
                              f"{', '.join(hosts) or 'none'} (is 'dao server' running there?)")
        known = reg.streams(host)
        if name not in known:
            raise RemoteError(f"machine {host!r} has no stream {name!r}; it has: "
                              f"{', '.join(sorted(known)) or 'none'}")
        conn = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                    decode_responses=True)
        try:
            address = _ask(conn, reg, url, host, name, client, mode, timeout)
        except BaseException:
            with contextlib.suppress(redis.RedisError, OSError):
                conn.delete(heartbeat_key(host, name, client))
            conn.close()
            raise
    try:
        m = Mirror(address, local_name or f"{name}@{host}", mode, depth=depth)
    except BaseException:
        with contextlib.suppress(redis.RedisError, OSError):
            conn.delete(heartbeat_key(host, name, client))
        conn.close()
        raise
    return RemoteMirror(url, host, name, client, address, m, conn)


def _ask(conn: redis.Redis, reg: Registry, url: str, host: str, name: str, client: str,
         mode: str, timeout: float) -> str:
    """Make the request and wait for the publisher's address."""
    request = json.dumps({"client": client, "mode": mode, "time": _now()})
    end = time.monotonic() + timeout
    notified = 0.0
    try:
        # the heartbeat first: the server never sees a request without a live client
        conn.set(heartbeat_key(host, name, client), _now(), px=int(HEARTBEAT_TTL_S * 1000))
        while True:
            now = time.monotonic()
            if now - notified >= 1.0:  # again every second: a notification may be lost
                pipe = conn.pipeline(transaction=True)
                pipe.set(request_key(host, name), request, px=max(1000, int(timeout * 1000)))
                pipe.publish(request_channel(host), name)
                pipe.execute()
                notified = now
            info = reg.streams(host).get(name)
            for rec in (info or {}).get("connections") or []:
                if isinstance(rec, dict) and client in rec.get("clients", ()):
                    if isinstance(rec.get("address"), str):
                        return rec["address"]
            if info is None:
                raise RemoteError(f"stream {name!r} of machine {host!r} left the registry "
                                  "while waiting for it")
            if now > end:
                raise TimeoutError(
                    f"the server of machine {host!r} did not publish stream {name!r} within "
                    f"{timeout:g} s (is its 'dao server' alive? see its log)")
            time.sleep(0.05)
    except redis.RedisError as exc:  # not OSError: TimeoutError is one
        raise _error(url, f"ask {host!r} for stream {name!r}", exc, 2.0) from exc

"""The Redis registry of machines and their streams, and its change bus.

One server per machine publishes what it has in a shared Redis, under the keys of the Durham
server (spec: control-and-network.md, section 4)::

    dao:machines:<host>:ip                        IPv4 address
    dao:machines:<host>:hostname                  host name
    dao:machines:<host>:role                      "master" or "minion"
    dao:machines:<host>:last_connect              ISO-8601 UTC time of the last heartbeat
    dao:machines:<host>:shm:<name>:dimensions     JSON list, the shape
    dao:machines:<host>:shm:<name>:dtype          numpy dtype name, e.g. "float32"
    dao:machines:<host>:shm:<name>:connections    JSON list of connection records

plus ``...:shm:<name>:depth`` (JSON int), ``:labels`` (JSON list or null) and ``:rate``
(JSON number or null), and ``dao:machines:<host>:instance`` (``<token>/<heartbeat s>``: which
server run registers the host, see :meth:`Registry.claim_host`). Every value is a JSON or plain
string: never pickle.

Unlike the Durham server there is no master that evicts silent machines: every key is written
with a time-to-live (``ttl``), which :meth:`Registry.heartbeat` renews, so a machine that dies
disappears by itself and no single process is needed to clean up. Changes are not found by
polling with SCAN: each one is published as a JSON message on the channel ``dao:changes``
(:meth:`Registry.subscribe`)::

    {"kind": "stream", "event": "added" | "changed" | "removed", "host": ..., "name": ...,
     "shape": [...], "dtype": ..., "time": ISO-8601}
    {"kind": "machine", "event": "added" | "removed", "host": ..., "ip": ..., "role": ...,
     "time": ...}

A machine whose keys expired cannot say so itself, and Redis does not tell: the other
servers notice it at their heartbeats (:meth:`Registry.announce_expired`) and the first one
publishes ``{"kind": "machine", "event": "removed", "host": ..., "reason": "expired"}`` (a
marker key ``dao:gone:<host>``, also set by a clean stop, keeps it to one event). Its next
heartbeat, or a heartbeat after Redis was restarted empty, writes everything again and
publishes ``added`` for the machine and each of its streams.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import socket
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dao.errors import DaoError
from dao.net.connect import error_hint, redis_client
from dao.net.connect import redact as _redact

__all__ = ["Registry", "Changes", "RegistryError", "PREFIX", "CHANNEL", "DEFAULT_URL"]

PREFIX = "dao"
CHANNEL = "dao:changes"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
ROLES = ("master", "minion")

# ':' separates the parts of a key; glob characters would break SCAN patterns
_BAD_NAME = re.compile(r"[:*?\[\]\\\s]")


class RegistryError(DaoError, ConnectionError):
    """The Redis registry could not be reached or refused a request (server down, refused
    connection, wrong password, no answer within the timeout). The message names the URL
    (password hidden) and what to do."""


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or _BAD_NAME.search(value):
        raise ValueError(
            f"invalid {what} {value!r}: it must be a non-empty string without ':', '*', '?', "
            "'[', ']', '\\' or white space (they separate or match the parts of Redis keys)"
        )
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _error(url: str, what: str, exc: Exception, timeout: float) -> RegistryError:
    """The :class:`RegistryError` for a Redis failure ``exc`` while doing ``what``."""
    where = _redact(url)
    text = str(exc) or type(exc).__name__
    hint = error_hint(exc)
    if isinstance(exc, redis.TimeoutError):
        return RegistryError(f"Redis at {where} did not answer within {timeout:g} s while "
                             f"trying to {what}: {hint}")
    if isinstance(exc, redis.ConnectionError | OSError) and not isinstance(
        exc, redis.AuthenticationError
    ):
        return RegistryError(f"cannot reach Redis at {where} to {what} ({text}): {hint}")
    if hint:
        return RegistryError(f"Redis at {where} refused to {what} ({text}): {hint}")
    return RegistryError(f"Redis at {where} failed to {what}: {type(exc).__name__}: {text}")


def _loads(value: str | None, default: Any = None) -> Any:
    if value is None:
        return default
    try:
        return json.loads(value)
    except ValueError:
        return default


class Registry:
    """This machine's view of the shared Redis registry.

    Parameters
    ----------
    url : str
        ``redis://[:PASSWORD@]HOST:PORT/DB``, or any form of :mod:`dao.net.connect` (TLS,
        Unix socket, Sentinel).
    host : str, optional
        This machine's name in the keys (default: ``socket.gethostname()``). No ``:`` or
        ``*``.
    ttl : float
        Seconds every key written lives unless renewed by :meth:`heartbeat`; call it a few
        times per ``ttl``.
    timeout : float
        Seconds to connect and to wait for each answer; past it a call raises
        :class:`RegistryError` (a stale connection, e.g. after Redis restarted, is retried
        once at once).

    Raises
    ------
    RegistryError
        Redis cannot be reached (the constructor pings it).
    ValueError
        ``host`` is not a valid name.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        host: str | None = None,
        ttl: float = 10.0,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.host = _check_name(host if host is not None else socket.gethostname(), "host name")
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 s, not {ttl!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 s, not {timeout!r}")
        self.ttl = float(ttl)
        self.timeout = float(timeout)
        self._machine: dict[str, str] | None = None
        #: Identity of this registry's run and its heartbeat interval in seconds
        #: (``ttl / 3``, see :meth:`claim_host`), in ``dao:machines:<host>:instance``.
        self.instance = f"{secrets.token_hex(8)}/{self.ttl / 3:.3f}"
        self._streams: dict[str, dict[str, str]] = {}
        self._subscriptions: list[Changes] = []
        self._redis = redis_client(
            url, timeout=self.timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            retry_on_timeout=False,
        )
        self._call("ping it", self._redis.ping)

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (redis.RedisError, OSError) as exc:
            raise _error(self.url, what, exc, self.timeout) from exc

    def _key(self, *parts: str) -> str:
        return ":".join((PREFIX, "machines", self.host, *parts))

    @property
    def _px(self) -> int:
        return max(1, round(self.ttl * 1000))

    def _event(self, kind: str, event: str, **fields) -> str:
        return json.dumps(
            {"kind": kind, "event": event, "host": self.host, **fields, "time": _now()}
        )

    def _write_machine(self, pipe) -> None:
        assert self._machine is not None
        for field, value in self._machine.items():
            pipe.set(self._key(field), value, px=self._px)
        pipe.set(self._key("last_connect"), _now(), px=self._px)

    def _write_stream(self, pipe, name: str) -> None:
        for field, value in self._streams[name].items():
            pipe.set(self._key("shm", name, field), value, px=self._px)
        # connections belong to the publisher (set_connections): keep them, renew their TTL
        conn = self._key("shm", name, "connections")
        pipe.set(conn, "[]", px=self._px, nx=True)
        pipe.pexpire(conn, self._px)

    def _stream_event(self, event: str, name: str) -> str:
        f = self._streams[name]
        return self._event(
            "stream", event, name=name, shape=json.loads(f["dimensions"]), dtype=f["dtype"]
        )

    # -- machine ---------------------------------------------------------------------------

    def register_machine(self, ip: str, role: str = "minion", hostname: str | None = None) -> None:
        """Write this machine's keys (``ip``, ``hostname``, ``role``, ``last_connect``) with
        the TTL and publish a ``machine added`` event.

        Parameters
        ----------
        ip : str
            The address other machines reach this one at.
        role : {"master", "minion"}
        hostname : str, optional
            Default: ``socket.gethostname()``.
        """
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise ValueError(f"invalid IP address {ip!r}, e.g. '192.168.1.10'") from None
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        self._machine = {
            "ip": ip,
            "hostname": hostname or socket.gethostname(),
            "role": role,
            "instance": self.instance,
        }
        pipe = self._redis.pipeline(transaction=True)
        self._write_machine(pipe)
        pipe.delete(f"{PREFIX}:gone:{self.host}")
        pipe.publish(CHANNEL, self._event("machine", "added", ip=ip, role=role))
        self._call(f"register machine {self.host!r}", pipe.execute)

    def claim_host(self) -> None:
        """Make sure no other live server registers this host name.

        If the registry holds another run's ``instance`` for this host, watch its
        ``last_connect`` for one of its heartbeat intervals and a second: if it changes, that
        server is alive and this one must not start; if not, it died (killed, its keys not
        yet expired) and this one takes over.

        Raises
        ------
        RegistryError
            Another live server registers this host name.
        """
        keys = [self._key("instance"), self._key("last_connect"), self._key("ip")]
        first = self._call("read the host's keys", self._redis.mget, keys)
        if first[0] is None or first[0] == self.instance:
            return
        try:
            beat_s = float(first[0].rpartition("/")[2])
        except ValueError:
            beat_s = self.ttl / 3
        end = time.monotonic() + min(beat_s, 60.0) + 1.0
        while time.monotonic() < end:
            time.sleep(0.25)
            now = self._call("read the host's keys", self._redis.mget, keys)
            if now[0] is None:
                return  # its keys expired meanwhile
            if now[0] != first[0] or now[1] != first[1]:
                raise RegistryError(
                    f"the machine name {self.host!r} is registered by another live dao server "
                    f"(ip {now[2]}, last heartbeat {now[1]}): stop it, or give this one "
                    "another name (--host)")

    def heartbeat(self) -> bool:
        """Renew the TTL of every key this registry wrote and set ``last_connect`` to now.

        Everything is written again, so after the keys expired or Redis restarted empty the
        registry is whole again; then ``added`` events are published for the machine and its
        streams.

        Returns
        -------
        bool
            True if the machine's keys were missing and had to be registered again.
        """
        pipe = self._redis.pipeline(transaction=True)
        pipe.exists(self._key("ip"))
        if self._machine is not None:
            self._write_machine(pipe)
        for name in self._streams:
            self._write_stream(pipe, name)
        found = self._call("send a heartbeat", pipe.execute)[0]
        if found or self._machine is None:
            return False
        pipe = self._redis.pipeline(transaction=True)
        m = self._machine
        pipe.publish(CHANNEL, self._event("machine", "added", ip=m["ip"], role=m["role"]))
        for name in self._streams:
            pipe.publish(CHANNEL, self._stream_event("added", name))
        self._call("publish the re-registration", pipe.execute)
        return True

    def unregister_machine(self) -> None:
        """Delete every key of this machine (its streams too) and publish ``removed`` events,
        as a server does when it stops cleanly."""
        pipe = self._redis.pipeline(transaction=True)
        for name in list(self._streams):
            pipe.delete(*self._stream_keys(name))
            pipe.publish(CHANNEL, self._stream_event("removed", name))
        pipe.delete(*(self._key(f) for f in ("ip", "hostname", "role", "last_connect",
                                             "instance")))
        pipe.set(f"{PREFIX}:gone:{self.host}", "stopped", px=self._px)  # nobody announces it
        pipe.publish(CHANNEL, self._event("machine", "removed"))
        self._call(f"unregister machine {self.host!r}", pipe.execute)
        self._streams.clear()
        self._machine = None

    def machines(self) -> list[dict[str, str | None]]:
        """The machines registered now (whose keys have not expired), sorted by host.

        Returns
        -------
        list of dict
            ``{"host", "ip", "hostname", "role", "last_connect"}`` each.
        """
        hosts = []
        for key in self._scan(f"{PREFIX}:machines:*:ip"):
            parts = key.split(":")
            if len(parts) == 4:
                hosts.append(parts[2])
        hosts.sort()
        fields = ("ip", "hostname", "role", "last_connect")
        pipe = self._redis.pipeline(transaction=False)
        for h in hosts:
            pipe.mget([f"{PREFIX}:machines:{h}:{f}" for f in fields])
        out = []
        for h, values in zip(hosts, self._call("read the machines", pipe.execute), strict=True):
            if values[0] is not None:  # expired between SCAN and MGET
                out.append({"host": h, **dict(zip(fields, values, strict=True))})
        return out

    def announce_expired(self, before: set[str]) -> tuple[set[str], list[str]]:
        """Publish ``removed`` (``"reason": "expired"``) for the machines of ``before`` whose
        keys expired since, unless another registry did already or they stopped cleanly.

        Parameters
        ----------
        before : set of str
            The hosts seen at the previous call (empty at first).

        Returns
        -------
        hosts : set of str
            The hosts registered now, for the next call.
        announced : list of str
            The hosts this call announced.
        """
        now = {m["host"] for m in self.machines()}
        announced = []
        for host in sorted(before - now - {self.host}):
            first = self._call("mark an expired machine", self._redis.set,
                               f"{PREFIX}:gone:{host}", "expired", nx=True, px=self._px)
            if first:
                self._call("publish an expired machine", self._redis.publish, CHANNEL,
                           json.dumps({"kind": "machine", "event": "removed", "host": host,
                                       "reason": "expired", "time": _now()}))
                announced.append(host)
        return now, announced

    def _scan(self, pattern: str) -> list[str]:
        return self._call(
            "list keys", lambda: list(self._redis.scan_iter(match=pattern, count=1000))
        )

    # -- streams ---------------------------------------------------------------------------

    def _stream_keys(self, name: str) -> list[str]:
        return [
            self._key("shm", name, f)
            for f in ("dimensions", "dtype", "connections", "depth", "labels", "rate")
        ]

    def register_stream(
        self,
        name: str,
        shape: Sequence[int],
        dtype: Any,
        depth: int = 1,
        labels: Sequence[str] | None = None,
        rate: float | None = None,
    ) -> str | None:
        """Publish a local stream: write its keys with the TTL (renewed by
        :meth:`heartbeat`) and publish ``added``, or ``changed`` if the registry held it with
        another shape or dtype.

        Parameters
        ----------
        name : str
            Stream name, without ``:`` or ``*``.
        shape : sequence of int
        dtype : numpy dtype or its name
        depth : int
            Frames kept in its FIFO.
        labels : sequence of str, optional
            Axis labels.
        rate : float, optional
            Frames per second, if known.

        Returns
        -------
        str or None
            ``"added"``, ``"changed"``, or None if it was registered already as is.
        """
        _check_name(name, "stream name")
        try:
            dims = [int(n) for n in shape]
        except (TypeError, ValueError):
            raise ValueError(
                f"stream {name!r}: shape must be a sequence of ints, not {shape!r}"
            ) from None
        if any(n < 0 for n in dims):
            raise ValueError(f"stream {name!r}: shape {dims} has a negative size")
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise ValueError(f"stream {name!r}: invalid dtype {dtype!r} ({exc})") from None
        if dt.fields is not None:
            raise ValueError(f"stream {name!r}: structured dtype {dt} is not a stream dtype")
        if int(depth) < 1:
            raise ValueError(f"stream {name!r}: depth must be >= 1, not {depth!r}")
        fields = {
            "dimensions": json.dumps(dims),
            "dtype": dt.name,
            "depth": json.dumps(int(depth)),
            "labels": json.dumps(None if labels is None else [str(x) for x in labels]),
            "rate": json.dumps(None if rate is None else float(rate)),
        }
        before = self._call(
            f"read stream {name!r}",
            self._redis.mget,
            [self._key("shm", name, "dimensions"), self._key("shm", name, "dtype")],
        )
        if before[0] is None and before[1] is None:
            event = "added"
        elif _loads(before[0]) != dims or before[1] != dt.name:
            event = "changed"
        else:
            event = None
        self._streams[name] = fields
        pipe = self._redis.pipeline(transaction=True)
        self._write_stream(pipe, name)
        if event == "changed":  # a new stream: its old connections are void
            pipe.set(self._key("shm", name, "connections"), "[]", px=self._px)
        if event is not None:
            pipe.publish(CHANNEL, self._stream_event(event, name))
        self._call(f"register stream {name!r}", pipe.execute)
        return event

    def unregister_stream(self, name: str) -> None:
        """Delete a stream's keys and publish ``removed`` (also if it was not registered
        here, e.g. by a previous run of the server)."""
        _check_name(name, "stream name")
        self._streams.pop(name, None)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(*self._stream_keys(name))
        pipe.publish(CHANNEL, self._event("stream", "removed", name=name))
        self._call(f"unregister stream {name!r}", pipe.execute)

    def set_rate(self, name: str, rate: float | None) -> None:
        """Set the measured frame rate (frames per second) of a registered stream; no event
        is published (rates change all the time)."""
        if name not in self._streams:
            raise KeyError(f"stream {name!r} is not registered by this registry")
        value = json.dumps(None if rate is None else float(rate))
        self._streams[name]["rate"] = value
        self._call(f"set the rate of stream {name!r}", self._redis.set,
                   self._key("shm", name, "rate"), value, px=self._px)

    def set_connections(self, name: str, connections: Sequence[dict]) -> None:
        """Replace the JSON list of active connection records of a registered stream."""
        if name not in self._streams:
            raise KeyError(f"stream {name!r} is not registered by this registry")
        self._call(
            f"set the connections of {name!r}",
            self._redis.set,
            self._key("shm", name, "connections"),
            json.dumps(list(connections)),
            px=self._px,
        )

    def streams(self, host: str | None = None) -> dict:
        """The streams registered now.

        Parameters
        ----------
        host : str, optional
            Only this machine's streams.

        Returns
        -------
        dict
            With ``host``: ``{name: info}``; without: ``{host: {name: info}}``. ``info`` is
            ``{"host", "name", "shape" (tuple), "dtype", "depth", "labels", "rate",
            "connections"}``.
        """
        h = "*" if host is None else _check_name(host, "host name")
        found = []
        for key in self._scan(f"{PREFIX}:machines:{h}:shm:*:dimensions"):
            parts = key.split(":")
            if len(parts) == 6:
                found.append((parts[2], parts[4]))
        found.sort()
        fields = ("dimensions", "dtype", "connections", "depth", "labels", "rate")
        pipe = self._redis.pipeline(transaction=False)
        for sh, sn in found:
            pipe.mget([f"{PREFIX}:machines:{sh}:shm:{sn}:{f}" for f in fields])
        out: dict[str, dict] = {}
        values_all = self._call("read the streams", pipe.execute)
        for (sh, sn), values in zip(found, values_all, strict=True):
            v = dict(zip(fields, values, strict=True))
            if v["dimensions"] is None or v["dtype"] is None:
                continue  # expired or removed meanwhile
            info = {
                "host": sh,
                "name": sn,
                "shape": tuple(_loads(v["dimensions"], [])),
                "dtype": v["dtype"],
                "depth": _loads(v["depth"]),
                "labels": _loads(v["labels"]),
                "rate": _loads(v["rate"]),
                "connections": _loads(v["connections"], []),
            }
            out.setdefault(sh, {})[sn] = info
        return out.get(host, {}) if host is not None else out

    # -- changes ---------------------------------------------------------------------------

    def subscribe(self) -> Changes:
        """Listen to the change events of every machine (see the module's docstring).

        The subscription is in place when this returns: no later change is missed.
        """
        changes = Changes(self)
        self._subscriptions.append(changes)
        return changes

    def close(self) -> None:
        """Close the subscriptions and the connections. The keys stay until their TTL runs
        out (use :meth:`unregister_machine` first for a clean leave)."""
        for c in self._subscriptions:
            c.close()
        self._subscriptions.clear()
        self._redis.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({_redact(self.url)!r}, host={self.host!r}, ttl={self.ttl:g})"


class Changes:
    """A subscription to the registry's change events (from :meth:`Registry.subscribe`).

    ``get(timeout)`` returns the next event (a dict) or None; iterating yields events until
    :meth:`close`. Events published while Redis was unreachable are lost: re-read
    :meth:`Registry.streams` after a :class:`RegistryError`.
    """

    def __init__(self, registry: Registry) -> None:
        self._reg = registry
        self._pubsub = registry._redis.pubsub(ignore_subscribe_messages=False)
        self._closed = False
        registry._call("subscribe to changes", self._pubsub.subscribe, CHANNEL)
        end = time.monotonic() + registry.timeout
        while True:  # wait for the confirmation: from now on nothing is missed
            msg = registry._call(
                "subscribe to changes", self._pubsub.get_message, timeout=registry.timeout
            )
            if msg is not None and msg.get("type") == "subscribe":
                break
            if time.monotonic() > end:
                self._pubsub.close()
                raise _error(
                    registry.url, "subscribe to changes", redis.TimeoutError(), registry.timeout
                )

    def get(self, timeout: float | None = 1.0) -> dict | None:
        """The next change event, or None if none came within ``timeout`` seconds (None:
        wait without limit).

        Raises
        ------
        RegistryError
            The connection to Redis was lost and could not be made again.
        """
        if self._closed:
            raise ValueError("this subscription is closed")
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if end is None else max(0.0, end - time.monotonic())
            msg = self._reg._call(
                "wait for changes", self._pubsub.get_message, timeout=min(left, 1.0)
            )
            if msg is not None and msg.get("type") == "message":
                try:
                    return json.loads(msg["data"])
                except ValueError:
                    pass  # not ours: skip
            if end is not None and time.monotonic() >= end:
                return None

    def __iter__(self) -> Iterator[dict]:
        while not self._closed:
            event = self.get(timeout=1.0)
            if event is not None:
                yield event

    def close(self) -> None:
        """Stop listening."""
        if not self._closed:
            self._closed = True
            try:
                self._pubsub.close()
            except (redis.RedisError, OSError):
                pass

    def __enter__(self) -> Changes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

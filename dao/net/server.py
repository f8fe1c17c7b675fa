"""The per-machine stream server (``dao server``, issue 13, spec ``control-and-network.md``
section 4).

A :class:`StreamServer` runs on each machine whose streams others may mirror. It

- registers the machine in the Redis registry (:class:`~dao.net.registry.Registry`, its IP
  is the address it binds publishers on) and renews every key's TTL (heartbeat); at each
  heartbeat it also announces machines whose keys expired (they died without a word);
- scans its stream folder every ``scan_interval`` seconds and keeps the registry true:
  a new stream is registered, one re-created with another shape or dtype is registered again
  (``changed``), a removed one is unregistered;
- serves requests: a client writes ``dao:connections:<host>:<name>`` (a JSON object with its
  ``client`` id) and publishes the stream name on :func:`request_channel` (``dao:requests:
  <host>``). The server starts a :class:`~dao.net.mirror.StreamPublisher` for the stream on its
  interface (a port of ``ports``, or any free one), records it in the stream's
  ``connections`` (``address``, ``ip``, ``port``, ``clients``, ``started``) and deletes the
  request. Request keys are also looked for at every scan, so a notification lost (Redis
  restarted, say) only delays the answer by one scan;
- stops a publisher once no client heartbeat key ``dao:heartbeats:<host>:<name>:<client>``
  is left (clients keep theirs alive with a TTL; see :func:`dao.net.remote.mirror`), so a
  client leaving never drops the others.

- serves bidirectional requests (``"bidirectional": true``) with a
  :class:`~dao.net.uplink.StreamWriter` beside the publisher (its address in the record's
  ``uplink``), which writes into the stream the frames of the client holding the stream's
  write lease (:mod:`dao.net.lease`); a ``read_only`` server refuses them.

A request that cannot be served (unknown stream, read-only server, no free port) is answered
with a reply key :func:`reply_key` holding ``{"error": ...}``, so the client fails at once
with the reason. A malformed request (not JSON, no client id) is logged and deleted, never
raised. Redis being unreachable is logged and retried: the server goes on publishing (and
writing for the lease holder it knew), and registers everything again as soon as Redis
answers (its keys may have expired, or Redis restarted empty), giving clients
:data:`RECOVER_S` seconds to renew their heartbeat keys before any publisher is stopped.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis

from dao.errors import DaoError
from dao.net import lease
from dao.net.connect import redis_client
from dao.net.mirror import BindError, StreamPublisher
from dao.net.registry import PREFIX, Registry, RegistryError, _check_name, _error
from dao.net.uplink import StreamWriter

__all__ = ["StreamServer", "request_channel", "request_key", "heartbeat_key", "reply_key",
           "parse_ports"]

log = logging.getLogger("dao.net.server")

SUFFIX = ".im.shm"
#: Seconds a new publisher is kept even if no client heartbeat key is seen yet.
GRACE_S = 2.0
#: Seconds given to clients to renew their heartbeat keys after a Redis outage.
RECOVER_S = 5.0
#: Seconds a lease holder read from Redis is trusted before it is read again.
LEASE_CACHE_S = 0.1
#: Seconds a lease holder read from Redis is still trusted while Redis cannot be reached.
LEASE_OUTAGE_S = 6.0


def request_channel(host: str) -> str:
    """The Redis channel a client publishes a stream name on to notify ``host``'s server."""
    return f"{PREFIX}:requests:{host}"


def request_key(host: str, name: str) -> str:
    """The key of a pending request for ``host``'s stream ``name``."""
    return f"{PREFIX}:connections:{host}:{name}"


def heartbeat_key(host: str, name: str, client: str) -> str:
    """The key a client keeps alive while it mirrors ``host``'s stream ``name``."""
    return f"{PREFIX}:heartbeats:{host}:{name}:{client}"


def reply_key(host: str, name: str, client: str) -> str:
    """The key where ``host``'s server answers ``client`` when its request for ``name``
    cannot be served (``{"error": reason}``, expires after 30 s)."""
    return f"{PREFIX}:replies:{host}:{name}:{client}"


def parse_ports(spec: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"A-B"``, ``"A"`` or ``(A, B)`` as an inclusive port range, checked.

    Raises
    ------
    ValueError
        Not a range of ports within 1..65535 with A <= B.
    """
    if spec is None:
        return None
    try:
        if isinstance(spec, str):
            a, _, b = spec.partition("-")
            lo, hi = int(a), int(b or a)
        else:
            lo, hi = (int(x) for x in spec)
    except (TypeError, ValueError):
        raise ValueError(f"invalid port range {spec!r}: want A-B, e.g. 40000-40099") from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"invalid port range {spec!r}: want 1 <= A <= B <= 65535")
    return lo, hi


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _Served:
    """A publisher of one stream (and its writer, once a client is bidirectional) and what the
    server knows of it."""

    def __init__(self, publisher: StreamPublisher, record: dict[str, Any]) -> None:
        self.publisher = publisher
        self.writer: StreamWriter | None = None
        self.record = record
        self.since = time.monotonic()  # no client key needed before since + GRACE_S


class StreamServer:
    """Publish this machine's streams in the registry and serve them to remote mirrors.

    Parameters
    ----------
    redis_url : str
        The shared registry, ``redis://[:PASSWORD@]HOST:PORT/DB``.
    host : str, optional
        This machine's name in the registry (default ``socket.gethostname()``).
    bind : str
        IPv4 address the publishers bind on; also the machine's ``ip`` in the registry.
    ports : str or (int, int), optional
        Inclusive port range for publishers (``"40000-40099"``); default any free port.
    allow : sequence of str, optional
        Glob patterns of the stream names to publish (default all). Mirrors of other
        machines' streams (``name@host``, :func:`dao.net.remote.mirror`'s default name) are
        never published again.
    read_only : bool
        Never let a client write to a stream: bidirectional requests are refused.
    ttl : float
        Seconds every registry key lives unless renewed; renewed every ``ttl / 3``.
    scan_interval : float
        Seconds between scans of the stream folder (and of pending requests and clients).
    stream_dir : str, optional
        Folder of the streams (default ``$DAO_SHM_DIR``, ``/tmp``).

    Raises
    ------
    RegistryError
        Redis cannot be reached.
    ValueError
        A bad host name, address or port range.
    """

    def __init__(
        self,
        redis_url: str,
        host: str | None = None,
        bind: str = "127.0.0.1",
        ports: str | tuple[int, int] | None = None,
        allow: list[str] | tuple[str, ...] | None = None,
        read_only: bool = False,
        ttl: float = 10.0,
        scan_interval: float = 1.0,
        stream_dir: str | None = None,
    ) -> None:
        from dao.streams.stream import shm_dir

        if not scan_interval > 0:
            raise ValueError(f"scan_interval must be > 0 s, not {scan_interval!r}")
        self.url = redis_url
        self.bind = bind
        self.ports = parse_ports(ports)
        self.allow = list(allow) if allow else None
        self.read_only = bool(read_only)
        self.scan_interval = float(scan_interval)
        self.stream_dir = os.path.abspath(stream_dir or shm_dir())
        if not os.path.isdir(self.stream_dir):
            raise ValueError(f"the stream folder {self.stream_dir} does not exist: create it, or "
                             "give an existing folder (--dir)")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((bind, 0))
        except OSError as exc:
            raise ValueError(f"cannot publish on {bind!r}: {exc.strerror or exc} (is it an "
                             "address of this machine? --bind takes one of its IPv4 "
                             "addresses, e.g. 127.0.0.1)") from None
        self.registry = Registry(redis_url, host=host, ttl=ttl)
        self.host = self.registry.host
        self._redis = redis_client(redis_url, timeout=2.0)
        self._pubsub = None
        self._known: dict[str, tuple] = {}  # name -> identity (dev, ino, size) of its file
        self._bad_names: set[str] = set()
        self._served: dict[str, _Served] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registered = False
        self._redis_ok = True
        self._leases: dict[str, tuple[str | None, float]] = {}  # name -> (holder, read at)
        self._peers: set[str] = set()  # hosts seen at the last heartbeat
        # name -> [open stream, counter, monotonic time of the counter, rate in the registry]
        self._counters: dict[str, list] = {}

    def __repr__(self) -> str:
        return f"StreamServer(host={self.host!r}, bind={self.bind!r}, dir={self.stream_dir!r})"

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> StreamServer:
        """Run :meth:`run` in a daemon thread; return once the machine and its streams are
        registered (or raise what registering raised)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def body() -> None:
            try:
                self.run(ready=ready)
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=body, name=f"dao-server-{self.host}", daemon=True)
        self._thread.start()
        ready.wait(30.0)
        if failure:
            raise failure[0]
        return self

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: publishers stopped, the machine unregistered, Redis closed. Waits at
        most about ``timeout`` seconds for the thread of :meth:`start`."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def served(self) -> dict[str, dict[str, Any]]:
        """The streams published now: ``{name: connection record}``."""
        return {n: dict(s.record) for n, s in self._served.items()}

    def run(self, ready: threading.Event | None = None) -> None:
        """Serve until :meth:`request_stop` or :meth:`stop`; clean up on the way out.

        Raises
        ------
        RegistryError
            Redis could not be reached when starting (later outages are logged and retried).
        """
        try:
            self.registry.claim_host()
            self.registry.register_machine(self.bind)
            self._registered = True
            self._subscribe()
            self._scan()
            log.info("server %s on %s: %d stream(s) in %s", self.host, self.bind,
                     len(self._known), self.stream_dir)
            if ready is not None:
                ready.set()
            next_scan = time.monotonic() + self.scan_interval
            next_beat = time.monotonic() + self.registry.ttl / 3
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.registry.ttl / 3
                    self._guard("send a heartbeat", self._heartbeat)
                if now >= next_scan:
                    next_scan = now + self.scan_interval
                    self._guard("scan", self._scan)
                    self._guard("read pending requests", self._pending)
                    self._guard("check clients", self._clients)
                self._guard("wait for requests", self._listen, 0.1)
        finally:
            self._cleanup()

    def _guard(self, what: str, fn, *args) -> None:
        """Call ``fn``; log Redis failures (once per outage) instead of raising."""
        try:
            fn(*args)
        except (RegistryError, redis.RedisError, OSError) as exc:
            if self._redis_ok:
                log.warning("server %s: cannot %s: %s (retrying)", self.host, what, exc)
            self._redis_ok = False
            self._close_pubsub()
            self._stop.wait(0.2)
        else:
            if not self._redis_ok:
                try:  # the call may not have needed Redis: ask it
                    self._redis.ping()
                except (redis.RedisError, OSError):
                    return
                log.info("server %s: Redis answers again", self.host)
                self._redis_ok = True
                self._recovered()
                self._guard("send a heartbeat", self._heartbeat)

    def _recovered(self) -> None:
        """After an outage: give clients time to renew their heartbeat keys, and the other
        servers time to register again (none is announced as expired)."""
        self._peers = set()
        later = time.monotonic() + RECOVER_S - GRACE_S
        for s in self._served.values():
            s.since = later

    def _heartbeat(self) -> None:
        if self.registry.heartbeat():
            log.info("server %s: registered again (keys had expired or Redis restarted)",
                     self.host)
            self._recovered()
            for name, s in self._served.items():
                self.registry.set_connections(name, [s.record])
        self._peers, gone = self.registry.announce_expired(self._peers)
        for host in gone:
            log.info("server %s: machine %s left the registry without a word (its keys "
                     "expired): announced", self.host, host)

    def _cleanup(self) -> None:
        for name in list(self._served):
            self._drop(name, "server stopping", update=False)
        for name in list(self._counters):
            self._close_counter(name)
        self._close_pubsub()
        if self._registered:
            with contextlib.suppress(RegistryError, redis.RedisError, OSError):
                self.registry.unregister_machine()
            self._registered = False
        with contextlib.suppress(Exception):
            self.registry.close()
        with contextlib.suppress(Exception):
            self._redis.close()

    # -- streams -------------------------------------------------------------------------------
    def _allowed(self, name: str) -> bool:
        if "@" in name:  # a mirror of another machine's stream: that machine serves it
            return False
        return self.allow is None or any(fnmatch.fnmatchcase(name, g) for g in self.allow)

    def _local(self) -> dict[str, tuple[str, tuple]]:
        """``{name: (path, identity)}`` of the streams in the folder that may be published."""
        out = {}
        try:
            entries = list(os.scandir(self.stream_dir))
        except OSError as exc:
            log.warning("server %s: cannot list %s: %s", self.host, self.stream_dir, exc)
            return out
        for e in entries:
            if not e.name.endswith(SUFFIX):
                continue
            name = e.name[: -len(SUFFIX)]
            if not self._allowed(name):
                continue
            try:
                _check_name(name, "stream name")
                st = e.stat(follow_symlinks=False)
            except ValueError:
                if name not in self._bad_names:
                    self._bad_names.add(name)
                    log.warning("server %s: stream %r not published: its name cannot be a "
                                "registry key", self.host, name)
                continue
            except OSError:
                continue
            out[name] = (e.path, (st.st_dev, st.st_ino, st.st_size))
        return out

    def _scan(self) -> None:
        from dao.streams.labels import get_labels
        from dao.streams.stream import shm

        local = self._local()
        for name in [n for n in self._known if n not in local]:
            self._drop(name, "stream removed", update=False)
            self.registry.unregister_stream(name)
            del self._known[name]
            self._close_counter(name)
            log.info("server %s: stream %s removed", self.host, name)
        for name, (path, ident) in local.items():
            if self._known.get(name) == ident:
                continue
            try:
                s = shm(path)
            except (DaoError, OSError, ValueError):
                continue  # being created or removed, or not a stream: next scan
            try:
                shape, dtype, depth = tuple(s.shape), s.dtype, s.depth
                dims = get_labels(s).get("dims")
            except (DaoError, OSError, ValueError):
                s.close()
                continue
            self._close_counter(name)
            self._counters[name] = [s, s.counter, time.monotonic(), None]
            event = self.registry.register_stream(name, shape, dtype, depth=depth, labels=dims)
            self._known[name] = ident
            if event:
                log.info("server %s: stream %s %s %s %s", self.host, name, event, shape, dtype)
            if event == "changed" and name in self._served:  # publisher reopens by itself
                self.registry.set_connections(name, [self._served[name].record])
        self._rates()

    def _rates(self) -> None:
        """Measure each stream's frame rate since the last scan; registry updated when it
        changed by more than 5 % (or started or stopped)."""
        now = time.monotonic()
        for name, entry in self._counters.items():
            s, before, t, shown = entry
            dt = now - t
            if dt < 0.5:
                continue
            try:
                count = s.counter
            except (DaoError, OSError, ValueError):
                continue
            rate = max(0, count - before) / dt
            entry[1:3] = count, now
            if shown is None or abs(rate - shown) > 0.05 * max(rate, shown):
                self.registry.set_rate(name, round(rate, 3))
                entry[3] = rate

    def _close_counter(self, name: str) -> None:
        entry = self._counters.pop(name, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                entry[0].close()

    # -- requests ------------------------------------------------------------------------------
    def _subscribe(self) -> None:
        ps = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            ps.subscribe(request_channel(self.host))
        except (redis.RedisError, OSError) as exc:
            with contextlib.suppress(Exception):
                ps.close()
            raise _error(self.url, "subscribe to requests", exc, 2.0) from exc
        self._pubsub = ps

    def _close_pubsub(self) -> None:
        ps, self._pubsub = self._pubsub, None
        if ps is not None:
            with contextlib.suppress(Exception):
                ps.close()

    def _listen(self, timeout: float) -> None:
        if self._pubsub is None:
            self._subscribe()
            self._pending()  # what was asked while we were not listening
        msg = self._pubsub.get_message(timeout=timeout)
        if msg is None or msg.get("type") != "message":
            return
        data = msg.get("data")
        name = data.strip() if isinstance(data, str) else ""
        try:
            _check_name(name, "stream name")
        except ValueError:
            log.warning("server %s: ignored a malformed notification %r on %s", self.host,
                        str(data)[:80], request_channel(self.host))
            return
        self._request(name)

    def _pending(self) -> None:
        prefix = request_key(self.host, "")
        for key in self._redis.scan_iter(match=prefix + "*", count=1000):
            self._request(key[len(prefix):])

    def _reply(self, name: str, client: str, error: str) -> None:
        """Tell ``client`` why its request for ``name`` is not served (and log it)."""
        log.warning("server %s: request from %s for %r refused: %s", self.host, client, name,
                    error)
        self._redis.set(reply_key(self.host, name, client), json.dumps({"error": error}),
                        px=30_000)

    def _request(self, name: str) -> None:
        key = request_key(self.host, name)
        raw = self._redis.get(key)
        if raw is None:
            return  # served already (notification and scan both saw it)
        self._redis.delete(key)
        try:
            req = json.loads(raw)
            client = req["client"]
            _check_name(client, "client id")
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("server %s: ignored a malformed request for %r: %r (%s)", self.host,
                        name, raw[:80], exc)
            return
        both = bool(req.get("bidirectional"))
        if both and self.read_only:
            self._reply(name, client, f"the server of {self.host!r} is read-only: its streams "
                        "cannot be written from other machines (mirror it without "
                        "bidirectional=True or --write, or run that server without "
                        "--read-only)")
            return
        if name not in self._known:
            self._reply(name, client, f"{self.host!r} publishes no stream {name!r} (it has: "
                        f"{', '.join(sorted(self._known)) or 'none'})")
            return
        s = self._served.get(name)
        if s is None or not s.publisher.running:
            if s is not None:
                self._drop(name, "publisher died", update=False)
            s = self._serve(name, client)
            if s is None:
                return
        elif client not in s.record["clients"]:
            s.record["clients"] = sorted({*s.record["clients"], client})
            log.info("server %s: %s joins %s at %s", self.host, client, name,
                     s.record["address"])
        if both and s.writer is None:
            s.writer = self._bind(name, client, "writer", lambda address: StreamWriter(
                os.path.join(self.stream_dir, name + SUFFIX), address,
                check=lambda identity: self._holds_lease(name, identity)))
            if s.writer is not None:
                s.record["uplink"] = s.writer.address
                log.info("server %s: writing %s from %s for the lease holder", self.host, name,
                         s.writer.address)
        self.registry.set_connections(name, [s.record])

    def _holds_lease(self, name: str, identity: bytes) -> bool:
        """Whether ``identity`` holds the write lease of ``name`` (from the writer's thread;
        Redis read at most every :data:`LEASE_CACHE_S` s, its last answer trusted for
        :data:`LEASE_OUTAGE_S` s while it cannot be reached)."""
        now = time.monotonic()
        held, at = self._leases.get(name, (None, -1e9))
        if now - at > LEASE_CACHE_S:
            try:
                held, at = lease.holder(self._redis, self.host, name), now
                self._leases[name] = (held, at)
            except (redis.RedisError, OSError):
                if now - at > LEASE_OUTAGE_S:
                    return False
        return held is not None and held.encode() == identity

    def _bind(self, name: str, client: str, what: str, make):
        """``make(address)`` on the first free port of the range (or any port); None, the
        client told why, if none is free."""
        if self.ports is None:
            candidates = ["*"]
        else:
            candidates = [str(p) for p in range(self.ports[0], self.ports[1] + 1)]
        in_use = set()
        for s in self._served.values():
            in_use.add(s.record["port"])
            if s.writer is not None:
                in_use.add(int(s.writer.address.rsplit(":", 1)[1]))
        refused = "every port is taken"
        for port in candidates:
            if port != "*" and int(port) in in_use:
                continue
            try:
                return make(f"tcp://{self.bind}:{port}")
            except BindError as exc:
                refused = str(exc.__cause__ or exc)
                continue
            except (DaoError, OSError, ValueError) as exc:
                self._reply(name, client, f"cannot start the {what} of {name!r}: {exc}")
                return None
        if self.ports is None:
            self._reply(name, client, f"cannot bind the {what} of {name!r} on {self.bind}: "
                        f"{refused}")
        else:
            self._reply(name, client, f"no free port for the {what} of {name!r} in "
                        f"{self.ports[0]}-{self.ports[1]} on {self.bind} (widen the server's "
                        "--ports)")
        return None

    def _serve(self, name: str, client: str) -> _Served | None:
        path = os.path.join(self.stream_dir, name + SUFFIX)
        pub = self._bind(name, client, "publisher", lambda address: StreamPublisher(path,
                                                                                    address))
        if pub is None:
            return None
        port = int(pub.address.rsplit(":", 1)[1])
        record = {"address": pub.address, "ip": self.bind, "port": port, "clients": [client],
                  "started": _now()}
        s = self._served[name] = _Served(pub, record)
        log.info("server %s: publishing %s at %s for %s", self.host, name, pub.address, client)
        return s

    # -- clients -------------------------------------------------------------------------------
    def _clients(self) -> None:
        for name, s in list(self._served.items()):
            prefix = heartbeat_key(self.host, name, "")
            clients = sorted(
                k[len(prefix):] for k in self._redis.scan_iter(match=prefix + "*", count=1000)
            )
            if not clients:
                if time.monotonic() - s.since > GRACE_S:
                    self._drop(name, "no client left")
                continue
            if clients != s.record["clients"]:
                s.record["clients"] = clients
                self.registry.set_connections(name, [s.record])

    def _drop(self, name: str, why: str, update: bool = True) -> None:
        s = self._served.pop(name, None)
        if s is None:
            return
        s.publisher.stop()
        if s.writer is not None:
            s.writer.stop()
        log.info("server %s: stopped publishing %s at %s (%s)", self.host, name,
                 s.record["address"], why)
        if update and name in self._known:
            with contextlib.suppress(KeyError):
                self.registry.set_connections(name, [])

"""Connect to the Redis a site already runs: one URL names the server, its password, TLS
files or Sentinel service.

Every part of :mod:`dao.net` that talks to Redis gets its client from :func:`redis_client`,
so ``--redis URL`` (and ``Registry(url)``) accept the same forms::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]          plain TCP (port 6379, db 0 by default)
    rediss://[[USER]:PASSWORD@]HOST[:PORT][/DB]?ssl_ca_certs=/path/ca.pem
                                                         TLS
    unix://[[USER]:PASSWORD@]/path/redis.sock[?db=DB]    Unix socket
    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]
                                                         the current master of a Sentinel service
    rediss+sentinel://...                                the same, TLS to data nodes and sentinels

Examples::

    redis://127.0.0.1:6379/0
    redis://:s3cret@redis.lab:6379/2
    redis://dao:s3cret@redis.lab/0                        an ACL user (Redis 6+)
    unix:///run/redis/redis-server.sock?db=1
    rediss://:s3cret@redis.lab:6380/0?ssl_ca_certs=/etc/dao/ca.pem
    rediss://redis.lab:6380/0?ssl_ca_certs=ca.pem&ssl_certfile=me.pem&ssl_keyfile=me.key
    redis+sentinel://:s3cret@sent1:26379,sent2:26379,sent3:26379/aomaster/0
    redis+sentinel://:s3cret@sent1,sent2/aomaster/0?sentinel_password=sentpw

The user name and password of the URL (``USER:PASSWORD@``, percent-encoded if they hold
``@ : / ? #`` or ``%``) are those of the Redis data nodes, as in ``requirepass`` or an ACL
user; ``USER`` is usually left empty. The host and port of a TCP URL are those of one server:
for a replicated Redis give the master's, or, better, let Sentinel find it.

With ``redis+sentinel``, the hosts are the Sentinel daemons (port 26379 by default; any one
that answers is enough), ``SERVICE`` is the name of the monitored master (``sentinel monitor
SERVICE ...`` in their configuration) and the client always talks to the master the
sentinels currently name: after a failover, the next command reconnects to the new master.
The password of the URL is still that of the data nodes (the master and its replicas, all
with the same ``requirepass``/``masterauth``). Sentinels usually have no password; if theirs
(``requirepass`` in ``sentinel.conf``) is set, give it as ``?sentinel_password=...`` (and
``sentinel_username=...`` for an ACL user), even when it is the same as the data nodes'.

Query parameters (anything else is refused, with the list):

``db``
    The database number (the only way to give it in a ``unix://`` URL).
``username``, ``password``
    As ``USER:PASSWORD@`` (what redis-py accepts for ``unix://``); the ``@`` form is clearer.
``ssl_ca_certs``, ``ssl_ca_path``
    (TLS only) PEM file, or folder of hashed PEM files, of the CA(s) that signed the server's
    certificate. Without them the system's CAs are trusted: a site CA must be given.
``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``
    (TLS only) this client's certificate and key (PEM; the key may be in the certificate
    file), for a server that checks clients (``tls-auth-clients yes``); ``ssl_password``
    unlocks an encrypted key.
``ssl_cert_reqs``
    (TLS only) ``required`` (default), ``optional`` or ``none`` (no check of the server:
    for tests only; it also turns ``ssl_check_hostname`` off).
``ssl_check_hostname``
    (TLS only) ``true`` (default) or ``false``: whether the certificate must name ``HOST``.
``sentinel_username``, ``sentinel_password``
    (Sentinel only) the credentials of the Sentinel daemons.

File names are checked when the client is made: a missing one raises
:class:`FileNotFoundError` naming the parameter. A wrong URL raises :class:`ValueError`
naming the accepted forms. Passwords never appear in messages: :func:`redact` hides them.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["redis_client", "redact", "error_hint", "URL_FORMS", "SENTINEL_PORT"]

SENTINEL_PORT = 26379
REDIS_PORT = 6379

URL_FORMS = (
    "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], "
    "rediss://[[USER]:PASSWORD@]HOST[:PORT][/DB][?ssl_ca_certs=CA.pem] (TLS), "
    "unix://[[USER]:PASSWORD@]/PATH/redis.sock[?db=DB], "
    "redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB] "
    "(or rediss+sentinel:// for TLS)"
)

_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
_COMMON = ("db", "username", "password")
_TLS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_password",
        "ssl_cert_reqs", "ssl_check_hostname")  # fmt: skip
_SENTINEL = ("sentinel_username", "sentinel_password")
_FILES = {  # parameter: (what it names, is a folder)
    "ssl_ca_certs": ("CA certificate file", False),
    "ssl_ca_path": ("CA certificate folder", True),
    "ssl_certfile": ("client certificate file", False),
    "ssl_keyfile": ("client key file", False),
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*))(?::(?P<port>[^:]*))?$"
)


@dataclass
class _Target:
    """What a URL names (the private result of :func:`_parse`)."""

    scheme: str
    hosts: list[tuple[str, int]] = field(default_factory=list)
    path: str | None = None  # unix socket
    service: str | None = None  # sentinel
    db: int | None = None
    username: str | None = None
    password: str | None = None
    tls: dict[str, Any] = field(default_factory=dict)
    sentinel_auth: dict[str, str] = field(default_factory=dict)

    @property
    def sentinel(self) -> bool:
        return self.scheme.endswith("+sentinel")

    @property
    def ssl(self) -> bool:
        return self.scheme.startswith("rediss")


# -- redaction -------------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***``.

    Hides the password of ``USER:PASSWORD@`` and the value of every query parameter whose
    name contains ``password`` (``password``, ``sentinel_password``, ``ssl_password``). It
    works on malformed URLs too (a password with an unencoded ``/`` or ``#`` is hidden
    with what follows it), so that error messages can always show the URL.

    Parameters
    ----------
    url : str
        A Redis URL, in any of the forms of this module, valid or not.

    Returns
    -------
    str
        The URL to show.

    Examples
    --------
    >>> redact("redis://:s3cret@host:6379/0")
    'redis://:***@host:6379/0'
    >>> redact("redis+sentinel://s1,s2/svc?sentinel_password=pw&db=1")
    'redis+sentinel://s1,s2/svc?sentinel_password=***&db=1'
    """
    if not isinstance(url, str):
        return "<not a string>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # userinfo ends at the last '@': a password may hold '/', '?', '#', '=' or '@' that the
    # user forgot to percent-encode (an '@' in the query hides more than needed: never less)
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:***@{rest[at + 1 :]}"
    query_at = rest.find("?", rest.find("@") + 1)
    head, tail = (rest, "") if query_at < 0 else (rest[:query_at], rest[query_at:])
    if tail:
        tail = re.sub(r"((?:^\?|&)[^=&#]*password[^=&#]*=)[^&#]*", r"\1***", tail,
                      flags=re.IGNORECASE)  # fmt: skip
    return f"{scheme}{sep}{head}{tail}"


# -- parsing ---------------------------------------------------------------------------------


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"invalid Redis URL {redact(url)!r}: {why}; the accepted forms are "
                      f"{URL_FORMS}")  # fmt: skip


def _port(url: str, text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _bad(url, f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _host_port(url: str, text: str, default_port: int, default_host: str | None) -> tuple[str, int]:
    m = _HOST_PORT.match(text)
    if m is None:
        raise _bad(url, f"{text!r} is not HOST[:PORT] (an IPv6 address goes in brackets, "
                        "[::1]:6379)")  # fmt: skip
    host = urllib.parse.unquote(m["v6"] or m["host"] or "")
    if not host:
        if default_host is None:
            raise _bad(url, f"a host name is missing in {text!r}")
        host = default_host
    return host, _port(url, m["port"], default_port)


def _db(url: str, text: str) -> int:
    if not text.isdigit():
        raise _bad(url, f"the database {text!r} is not a number (0, 1, ...)")
    return int(text)


def _bool(url: str, name: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise _bad(url, f"{name}={text!r} is not true or false")


def _parse(url: str) -> _Target:
    """Split ``url`` into a :class:`_Target`; raise :class:`ValueError` if it is not one of
    :data:`URL_FORMS`. Files are not looked at."""
    if not isinstance(url, str):
        raise TypeError(f"a Redis URL is a string, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        what = f"unknown scheme {scheme + '://'!r}" if sep else "no scheme (such as redis://)"
        raise _bad(url, what)
    m = re.match(r"([^/?#]*)([^?#]*)(?:\?([^#]*))?(#.*)?$", rest, re.DOTALL)
    assert m is not None  # the pattern matches any string
    netloc, path, query, fragment = m.group(1), m.group(2), m.group(3) or "", m.group(4)
    if "@" in path + query + (fragment or ""):  # checked first: the message echoes nothing
        raise _bad(
            url,
            "an '@' follows the host: percent-encode '/', '?', '#' and '@' in a password "
            "(%2F, %3F, %23, %40)",
        )
    if fragment:
        raise _bad(url, "it has a '#' part (percent-encode a '#' in a password as %23)")
    target = _Target(scheme)

    # user and password
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        target.username = urllib.parse.unquote(user) or None
        if colon:
            target.password = urllib.parse.unquote(password) or None

    # query parameters
    allowed = _COMMON + (_TLS if target.ssl else ()) + (_SENTINEL if target.sentinel else ())
    params: dict[str, str] = {}
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _bad(url, "its query is not NAME=VALUE&NAME=VALUE...") from None
    for name, value in pairs:
        if name not in allowed:
            if name in _TLS:
                why = f"{name} is for TLS: use rediss:// (or rediss+sentinel://)"
            elif name in _SENTINEL:
                why = f"{name} is for Sentinel: use redis+sentinel://"
            else:
                why = f"unknown parameter {name!r} (known here: {', '.join(allowed)})"
            raise _bad(url, why)
        if name in params:
            raise _bad(url, f"{name} is given twice")
        params[name] = value

    # where
    if scheme == "unix":
        if hosts:
            raise _bad(url, f"a unix:// URL names no host ({hosts!r}): write unix:///PATH, "
                            "with three slashes")  # fmt: skip
        if not path or path == "/":
            raise _bad(url, "the path of the socket is missing (unix:///run/redis.sock)")
        target.path = urllib.parse.unquote(path)
    elif target.sentinel:
        if not hosts:
            raise _bad(url, "the sentinels' HOST:PORT list is missing")
        target.hosts = [_host_port(url, h, SENTINEL_PORT, None) for h in hosts.split(",")]
        parts = path.split("/")[1:] if path else []
        if parts and parts[-1] == "":
            parts.pop()  # a trailing slash
        if not parts or not parts[0]:
            raise _bad(url, "the Sentinel service name (the monitored master's name) is "
                            "missing after the hosts: .../SERVICE[/DB]")  # fmt: skip
        if len(parts) > 2:
            raise _bad(url, f"the path {path!r} is not /SERVICE[/DB]")
        target.service = urllib.parse.unquote(parts[0])
        if len(parts) == 2:
            target.db = _db(url, parts[1])
    else:
        if "," in hosts:
            raise _bad(url, "several hosts are given: a redis:// URL names one server; for "
                            "a replicated Redis use redis+sentinel://")  # fmt: skip
        target.hosts = [_host_port(url, hosts, REDIS_PORT, "localhost")]
        db = path.strip("/")
        if "/" in db:
            raise _bad(url, f"the path {path!r} is not /DB")
        if db:
            target.db = _db(url, db)

    # parameters
    if "db" in params:
        db = _db(url, params.pop("db"))
        if target.db is not None and target.db != db:
            raise _bad(url, f"it gives two databases ({target.db} and db={db})")
        target.db = db
    for name in ("username", "password"):
        if name in params:
            value = params.pop(name)
            if getattr(target, name) is not None:
                raise _bad(url, f"{name} is given both before '@' and as ?{name}=")
            setattr(target, name, value or None)
    for name in _SENTINEL:
        if name in params:
            target.sentinel_auth[name.removeprefix("sentinel_")] = params.pop(name)
    if "ssl_cert_reqs" in params:
        reqs = params.pop("ssl_cert_reqs").lower()
        if reqs not in ("none", "optional", "required"):
            raise _bad(url, f"ssl_cert_reqs={reqs!r} is not none, optional or required")
        target.tls["ssl_cert_reqs"] = reqs
    if "ssl_check_hostname" in params:
        target.tls["ssl_check_hostname"] = _bool(
            url, "ssl_check_hostname", params.pop("ssl_check_hostname")
        )
    if target.tls.get("ssl_cert_reqs") == "none":
        if target.tls.get("ssl_check_hostname"):
            raise _bad(url, "ssl_check_hostname=true needs a certificate check: drop "
                            "ssl_cert_reqs=none")  # fmt: skip
        target.tls["ssl_check_hostname"] = False
    if "ssl_keyfile" in params and "ssl_certfile" not in params:
        raise _bad(url, "ssl_keyfile is given without ssl_certfile (the client certificate)")
    for name, value in params.items():  # the file names and ssl_password
        if not value:
            raise _bad(url, f"{name} is empty")
        target.tls[name] = os.path.expanduser(value) if name in _FILES else value
    return target


def _check_files(url: str, tls: dict[str, Any]) -> None:
    """Raise :class:`FileNotFoundError` (or :class:`PermissionError`) for a TLS file of the
    URL that is missing (or unreadable)."""
    for name, (what, folder) in _FILES.items():
        path = tls.get(name)
        if path is None:
            continue
        exists = os.path.isdir(path) if folder else os.path.isfile(path)
        if not exists:
            raise FileNotFoundError(
                f"the {what} {path!r} given by {name} in the Redis URL {redact(url)!r} "
                f"{'is not a folder' if os.path.exists(path) else 'does not exist'}"
            )
        if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
            raise PermissionError(
                f"the {what} {path!r} given by {name} in the Redis URL {redact(url)!r} "
                "cannot be read by this user"
            )


# -- the client ------------------------------------------------------------------------------


class _SentinelRedis(redis.Redis):
    """A client of a Sentinel-managed master that also closes its connections to the
    sentinels when closed."""

    _dao_sentinel: redis.sentinel.Sentinel | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            sentinel, self._dao_sentinel = self._dao_sentinel, None
            for client in sentinel.sentinels if sentinel is not None else ():
                client.close()


def _owning(pool: redis.ConnectionPool) -> redis.Redis:
    """A client that closes ``pool`` when closed (``Redis.from_pool`` of redis-py >= 5.0.1)."""
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def redis_client(url: str, timeout: float = 2.0, **kwargs: Any) -> redis.Redis:
    """A Redis client for ``url``, in any form of this module (see its documentation).

    Nothing is sent yet: the first command connects (and, for a Sentinel URL, asks the
    sentinels for the master), so a server that is down or refuses the password is found
    by that command (:class:`redis.ConnectionError`, :class:`redis.AuthenticationError`,
    :class:`redis.TimeoutError`; :func:`error_hint` says what to do).

    Parameters
    ----------
    url : str
        ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
        ``rediss+sentinel://`` URL.
    timeout : float
        Seconds to connect and to wait for each answer (``socket_connect_timeout`` and
        ``socket_timeout``), to the sentinels too.
    **kwargs
        More arguments of :class:`redis.Redis` (e.g. ``retry``), or overrides of the
        defaults: ``decode_responses=True`` (answers are ``str``), the two timeouts. They
        do not override what the URL gives.

    Returns
    -------
    redis.Redis
        For a Sentinel URL, a client of the current master
        (:meth:`redis.sentinel.Sentinel.master_for`) which reconnects to the new master
        after a failover; closing it also closes the connections to the sentinels.

    Raises
    ------
    ValueError
        The URL is not one of the accepted forms (they are named in the message), or
        ``timeout`` is not > 0.
    FileNotFoundError
        A TLS file it names (``ssl_ca_certs``, ``ssl_certfile``, ...) does not exist.
    PermissionError
        Such a file cannot be read.

    Examples
    --------
    >>> r = redis_client("redis://:s3cret@127.0.0.1:6379/0")  # doctest: +SKIP
    >>> r.ping()  # doctest: +SKIP
    True
    >>> r = redis_client("redis+sentinel://s1:26379,s2:26379/aomaster/0")  # doctest: +SKIP
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 s, not {timeout!r}")
    target = _parse(url)
    _check_files(url, target.tls)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
    }
    options.update(kwargs)
    mine: dict[str, Any] = {k: v for k, v in (("db", target.db), ("username", target.username),
                            ("password", target.password)) if v is not None}  # fmt: skip
    if target.ssl:
        mine["ssl"] = True
        mine.update(target.tls)
    clash = sorted(set(mine) & set(kwargs))
    if clash:
        raise ValueError(f"{', '.join(clash)} given both in the Redis URL {redact(url)!r} and "
                         "as arguments: give it once")  # fmt: skip
    options.update(mine)
    # a pool, as Redis.from_url makes: the connections' own defaults (no retry unless asked),
    # not the client constructor's (3 retries with back-off, even on a wrong password)
    if target.path is not None:
        pool = redis.ConnectionPool(
            connection_class=redis.UnixDomainSocketConnection, path=target.path, **options
        )
        return _owning(pool)
    if not target.sentinel:
        host, port = target.hosts[0]
        options.pop("ssl", None)
        cls = redis.SSLConnection if target.ssl else redis.Connection
        pool = redis.ConnectionPool(connection_class=cls, host=host, port=port, **options)
        return _owning(pool)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),  # each sentinel is asked once, in turn
        **target.sentinel_auth,
    }
    if target.ssl:  # one CA and client certificate for the whole topology
        sentinel_options["ssl"] = True
        sentinel_options.update(target.tls)
    sentinel = redis.sentinel.Sentinel(target.hosts, sentinel_kwargs=sentinel_options)
    client = sentinel.master_for(target.service, redis_class=_SentinelRedis, **options)
    client._dao_sentinel = sentinel
    return client


# -- errors ----------------------------------------------------------------------------------


def error_hint(exc: BaseException) -> str:
    """What to do about a failure of a client made by :func:`redis_client`, in a sentence.

    Parameters
    ----------
    exc : BaseException
        What a command raised.

    Returns
    -------
    str
        A hint to append to an error message, or ``""`` for an error that is not about
        reaching Redis.
    """
    text = str(exc)
    low = text.lower()
    if isinstance(exc, redis.AuthenticationError) or any(
        k in text for k in ("NOAUTH", "WRONGPASS", "invalid password", "invalid username")
    ):
        return (
            "give the right password in the URL, redis://:PASSWORD@HOST:PORT/DB (for "
            "Sentinel, the data nodes' one; the sentinels' own is ?sentinel_password=)"
        )
    if "certificate verify failed" in low or "certificate_verify_failed" in low:
        if "hostname" in low or "ip address mismatch" in low:
            return (
                "the server's certificate does not name the host of the URL: connect "
                "with a name it holds, or add ?ssl_check_hostname=false"
            )
        return (
            "the server's TLS certificate is not signed by a CA this client trusts: give "
            "the site CA with ?ssl_ca_certs=/path/ca.pem"
        )
    if any(
        k in low
        for k in (
            "wrong version number",
            "record layer failure",
            "unexpected eof",
            "packet length too long",
        )
    ):
        return (
            "the TLS handshake failed: is the server plain Redis (use redis://), or does "
            "it want a client certificate (?ssl_certfile=...&ssl_keyfile=...)?"
        )
    if "certificate required" in low or "tlsv13 alert certificate" in low:
        return (
            "the server wants a client certificate: add ?ssl_certfile=CERT.pem&"
            "ssl_keyfile=KEY.pem to the rediss:// URL"
        )
    if isinstance(exc, redis.sentinel.MasterNotFoundError):
        return (
            "no sentinel named a healthy master for this service: check the service "
            "name (sentinel monitor NAME ...), that a sentinel answers on the HOST:PORT "
            "list, and their password (?sentinel_password=)"
        )
    if isinstance(exc, redis.TimeoutError):
        return (
            "check that redis-server runs there and is reachable (a rediss:// URL to a "
            "plain server also ends so), or pass --redis URL"
        )
    if isinstance(exc, redis.ConnectionError | OSError):
        if "connection reset" in low or "connection closed by server" in low:
            return (
                "the server closed the connection: a TLS-only server needs rediss://, "
                "or it refuses this client"
            )
        return "start redis-server there or pass --redis URL"
    return ""

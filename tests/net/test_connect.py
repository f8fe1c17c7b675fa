"""dao.net.connect: the URL forms of a site Redis (password, ACL user, Unix socket, TLS,
Sentinel), against real redis-server processes started here (TLS certificates made with the
openssl command line, Sentinel with ``redis-server --sentinel``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dao.net.connect import URL_FORMS, error_hint, redact, redis_client
from dao.testing import free_port, redis_server, wait_for

PASSWORD = "s3cret-Pw"
SENTINEL_PASSWORD = "sent-Pw"


# -- helpers: servers with extra arguments -----------------------------------------------------


class _Server:
    """One redis-server (or sentinel) process on a loopback port."""

    def __init__(self, proc: subprocess.Popen, port: int, log: str) -> None:
        self.proc, self.port, self.log = proc, port, log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def _answers(client_for: Callable[[int], redis.Redis]) -> Callable[[int], bool]:
    """Whether the server on a port answers PING (or asks for a password) to
    ``client_for(port)``, asked once: no retry, no back-off."""

    def ready(port: int) -> bool:
        try:
            with client_for(port) as r:
                r.connection_pool.connection_kwargs["retry"] = Retry(NoBackoff(), 0)
                return bool(r.ping())
        except redis.AuthenticationError:
            return True  # up, wants a password
        except (redis.RedisError, OSError):
            return False

    return ready


def _plain_ready(port: int) -> bool:
    return _answers(lambda p: redis.Redis(host="127.0.0.1", port=p, socket_timeout=0.5))(port)


@contextlib.contextmanager
def _server(
    folder: str,
    args: list[str],
    ready: Callable[[int], bool] = _plain_ready,
    port_option: str = "--port",
    conf: str | None = None,
) -> Iterator[_Server]:
    """Run ``redis-server [CONF] ARGS PORT_OPTION PORT`` on a free loopback port until the
    block ends (stopped even if the test fails); ``conf`` is a configuration text (written
    to a file: Sentinel needs one it can rewrite)."""
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed (scripts/system-deps.sh test)"
    server = None
    for attempt in range(3):  # a free port may be taken between pick and bind
        port = free_port()
        log = os.path.join(folder, f"redis-{port}.log")
        cmd = [exe]
        if conf is not None:
            path = os.path.join(folder, f"redis-{port}.conf")
            with open(path, "w") as f:
                f.write(conf)
            cmd.append(path)
        cmd += [*args, port_option, str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", folder, "--logfile", "",
                "--daemonize", "no"]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        candidate = _Server(proc, port, log)
        end = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < end and not ready(port):
            time.sleep(0.02)
        if proc.poll() is None and time.monotonic() < end:
            server = candidate
            break
        candidate.stop()
        if attempt == 2:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"{' '.join(cmd)} did not start: {f.read()[-2000:]}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def folder() -> Iterator[str]:
    """A short folder for sockets and logs (a Unix socket path must stay under 108 bytes)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="daoconn", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _no_password(text: str) -> None:
    assert PASSWORD not in text and SENTINEL_PASSWORD not in text, text


# -- URLs, without a server ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://127.0.0.1:6379/0", "unknown scheme 'http://'"),
        ("127.0.0.1:6379", "no scheme"),
        ("redis://127.0.0.1:70000/0", "port '70000'"),
        ("redis://127.0.0.1:6379/zero", "database 'zero'"),
        ("redis://h1:6379,h2:6379/0", "redis+sentinel://"),
        ("redis://h/1?db=2", "two databases"),
        ("redis://h/0?ssl_ca_certs=/ca.pem", "use rediss://"),
        ("redis://h/0?timeout=3", "unknown parameter 'timeout'"),
        ("rediss://h/0?ssl_keyfile=k.pem", "without ssl_certfile"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "none, optional or required"),
        ("redis://h/0?sentinel_password=x", "use redis+sentinel://"),
        ("unix://localhost/run/redis.sock", "three slashes"),
        ("unix://", "path of the socket"),
        ("redis+sentinel://s1:26379", "service name"),
        ("redis+sentinel://s1:26379/svc/0/1", "/SERVICE[/DB]"),
        ("redis+sentinel://:26379/svc", "host name is missing"),
        (f"redis://:{PASSWORD}@h/0?db=1&db=1", "given twice"),
        (f"redis://:{PASSWORD}#x@h/0", "percent-encode"),
        (f"redis://:{PASSWORD}/x@h/0", "percent-encode"),
        (f"redis://:{PASSWORD}?x@h:port/0", "percent-encode"),
    ],
)
def test_a_wrong_url_is_a_value_error_naming_the_forms(url, why):
    with pytest.raises(ValueError) as err:
        redis_client(url)
    text = str(err.value)
    assert why in text and URL_FORMS in text, text
    _no_password(text)


def test_redact_hides_every_password():
    assert redact(f"redis://:{PASSWORD}@h:6379/0") == "redis://:***@h:6379/0"
    assert redact(f"redis://dao:{PASSWORD}@h/0") == "redis://dao:***@h/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    url = (f"rediss+sentinel://:{PASSWORD}@s1,s2:26380/svc/1?ssl_ca_certs=/ca.pem"
           f"&sentinel_password={SENTINEL_PASSWORD}&ssl_password={PASSWORD}")  # fmt: skip
    assert redact(url) == ("rediss+sentinel://:***@s1,s2:26380/svc/1?ssl_ca_certs=/ca.pem"
                           "&sentinel_password=***&ssl_password=***")  # fmt: skip
    assert redact(f"unix:///run/r.sock?db=1&password={PASSWORD}") == (
        "unix:///run/r.sock?db=1&password=***"
    )
    for bad in ("p/w", "p?w", "p#w", "p@w", "p=w"):  # not percent-encoded
        text = redact(f"redis://:{PASSWORD}{bad}@h/0")
        assert text == "redis://:***@h/0", text


def test_timeout_and_arguments_are_checked():
    with pytest.raises(ValueError, match="timeout"):
        redis_client("redis://h/0", timeout=0)
    with pytest.raises(ValueError, match="password given both") as err:
        redis_client(f"redis://:{PASSWORD}@h/0", password="other")
    _no_password(str(err.value))
    r = redis_client("redis://h:1234/3", timeout=0.5, decode_responses=False)
    kw = r.connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"], kw["socket_timeout"]) == ("h", 1234, 3, 0.5)
    assert kw["decode_responses"] is False
    r.close()


def test_a_missing_tls_file_is_named(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    for param, what in (("ssl_ca_certs", "CA certificate file"),
                        ("ssl_certfile", "client certificate file")):  # fmt: skip
        url = f"rediss://:{PASSWORD}@127.0.0.1/0?ssl_ca_certs={ca}&{param}={tmp_path}/nope.pem"
        if param == "ssl_ca_certs":
            url = f"rediss://:{PASSWORD}@127.0.0.1/0?ssl_ca_certs={tmp_path}/nope.pem"
        with pytest.raises(FileNotFoundError) as err:
            redis_client(url)
        text = str(err.value)
        assert what in text and param in text and "nope.pem" in text, text
        _no_password(text)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        redis_client(f"rediss://127.0.0.1/0?ssl_ca_path={ca}")


# -- password, ACL user, Unix socket --------------------------------------------------------------


def test_password_url_works_and_a_wrong_one_is_refused_clearly():
    with redis_server(password=PASSWORD) as server:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/2"
        with redis_client(url) as r:
            r.set("k", "v")
            assert r.get("k") == "v"  # str: decode_responses
            assert r.connection_pool.connection_kwargs["db"] == 2
        for bad in (f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0",
                    f"redis://127.0.0.1:{server.port}/0"):  # fmt: skip
            with redis_client(bad) as r, pytest.raises(redis.AuthenticationError) as err:
                r.ping()
            assert "password" in error_hint(err.value)
            _no_password(str(err.value))


def test_acl_user(folder):
    with redis_server(password=PASSWORD) as server:
        with redis_client(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0") as admin:
            admin.acl_setuser("dao", enabled=True, passwords=[f"+{PASSWORD}x"],
                              keys=["dao:*"], commands=["+@all"])  # fmt: skip
        with redis_client(f"redis://dao:{PASSWORD}x@127.0.0.1:{server.port}/0") as r:
            r.set("dao:k", "1")
            with pytest.raises(redis.ResponseError, match="no permissions"):
                r.set("other", "1")
        with redis_client(f"redis://dao:bad@127.0.0.1:{server.port}/0") as r:
            with pytest.raises(redis.AuthenticationError):
                r.ping()


def test_unix_socket(folder):
    sock = os.path.join(folder, "redis.sock")
    ready = _answers(lambda _: redis.Redis(unix_socket_path=sock, socket_timeout=0.5))
    with _server(folder, ["--unixsocket", sock, "--requirepass", PASSWORD], ready=ready):
        with redis_client(f"unix://:{PASSWORD}@{sock}?db=3") as r:
            r.set("k", "unix")
        with redis_client(f"unix://{sock}?db=3&password={PASSWORD}") as r:
            assert r.get("k") == "unix"
        with redis_client(f"unix://{sock}?db=0&password={PASSWORD}") as r:
            assert r.get("k") is None


# -- TLS -------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: str) -> None:
    exe = shutil.which("openssl")
    assert exe, "the openssl command is not installed (apt-get install openssl)"
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, str]:
    """A throw-away CA, a certificate of 127.0.0.1/localhost signed by it (for the server
    and, as client certificate, for the client), and a second CA that signed nothing."""
    d = str(tmp_path_factory.mktemp("tls"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN=dao {name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)  # fmt: skip
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")  # fmt: skip
    _openssl("req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", "node.key", "-out", "node.csr",
             cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "node.pem",
             cwd=d)  # fmt: skip
    return {k: os.path.join(d, f"{k}.pem") for k in ("ca", "other-ca", "node")} | {
        "key": os.path.join(d, "node.key")
    }


def _tls_args(certs: dict[str, str], auth_clients: str) -> list[str]:
    return ["--port", "0", "--tls-cert-file", certs["node"], "--tls-key-file", certs["key"],
            "--tls-ca-cert-file", certs["ca"], "--tls-auth-clients", auth_clients]  # fmt: skip


def _tls_ready(certs: dict[str, str]) -> Callable[[int], bool]:
    return _answers(
        lambda p: redis.Redis(
            host="127.0.0.1",
            port=p,
            ssl=True,
            ssl_ca_certs=certs["ca"],
            ssl_certfile=certs["node"],
            ssl_keyfile=certs["key"],
            socket_timeout=0.5,
        )  # fmt: skip
    )


@pytest.fixture(scope="module")
def tls_port(certs, tmp_path_factory) -> Iterator[int]:
    """A TLS-only redis-server with a password, that does not ask for client certificates."""
    d = str(tmp_path_factory.mktemp("tlsredis"))
    args = [*_tls_args(certs, "no"), "--requirepass", PASSWORD]
    with _server(d, args, ready=_tls_ready(certs), port_option="--tls-port") as server:
        yield server.port


def test_tls_with_the_site_ca(certs, tls_port):
    for host in ("127.0.0.1", "localhost"):  # both named by the certificate
        url = f"rediss://:{PASSWORD}@{host}:{tls_port}/1?ssl_ca_certs={certs['ca']}"
        with redis_client(url) as r:
            r.set("k", host)
            assert r.get("k") == host


def test_tls_without_the_ca_is_refused_clearly(certs, tls_port):
    for query in ("", f"?ssl_ca_certs={certs['other-ca']}"):
        with redis_client(f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0{query}") as r:
            with pytest.raises(redis.ConnectionError) as err:
                r.ping()
        text = str(err.value)
        assert "certificate verify failed" in text.lower(), text
        assert "ssl_ca_certs" in error_hint(err.value)
        _no_password(text)
    # no check at all: only for tests
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_cert_reqs=none"
    with redis_client(url) as r:
        assert r.ping()


def test_plain_url_to_a_tls_server_fails_clearly(tls_port):
    with redis_client(f"redis://:{PASSWORD}@127.0.0.1:{tls_port}/0", timeout=1.0) as r:
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)) as err:
            r.ping()
    assert "rediss://" in error_hint(err.value), (err.value, error_hint(err.value))
    _no_password(str(err.value))


def test_tls_client_certificate(certs, folder):
    base = f"rediss://127.0.0.1:{{port}}/0?ssl_ca_certs={certs['ca']}"
    args = _tls_args(certs, "yes")
    with _server(folder, args, ready=_tls_ready(certs), port_option="--tls-port") as server:
        with redis_client(base.format(port=server.port)) as r:
            with pytest.raises(redis.ConnectionError) as err:
                r.ping()
        assert error_hint(err.value), err.value
        mine = f"&ssl_certfile={certs['node']}&ssl_keyfile={certs['key']}"
        with redis_client(base.format(port=server.port) + mine) as r:
            assert r.ping()


# -- Sentinel --------------------------------------------------------------------------------------


def _sentinel_conf(master_port: int, down_ms: int = 5000) -> str:
    return (
        f"sentinel monitor svc 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds svc {down_ms}\n"
        "sentinel failover-timeout svc 5000\n"
        f"sentinel auth-pass svc {PASSWORD}\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
    )


def _sentinel_ready(port: int) -> bool:
    return _answers(
        lambda p: redis.Redis(
            host="127.0.0.1", port=p, password=SENTINEL_PASSWORD, socket_timeout=0.5
        )  # fmt: skip
    )(port)


def _data_node(folder: str, *extra: str):
    args = ["--requirepass", PASSWORD, "--masterauth", PASSWORD,
            "--repl-diskless-sync-delay", "0", *extra]  # fmt: skip
    return _server(folder, args)


def test_sentinel_gives_the_master(folder):
    with (
        _data_node(folder) as master,
        _server(
            folder, ["--sentinel"], ready=_sentinel_ready, conf=_sentinel_conf(master.port)
        ) as sentinel,  # fmt: skip
    ):
        dead = free_port()  # a sentinel that is down: another one answering is enough
        hosts = f"127.0.0.1:{dead},localhost:{sentinel.port}"
        url = f"redis+sentinel://:{PASSWORD}@{hosts}/svc/4?sentinel_password={SENTINEL_PASSWORD}"
        with redis_client(url, timeout=1.0) as r:
            r.set("k", "via sentinel")
            assert int(r.info("server")["tcp_port"]) == master.port
            ps = r.pubsub(ignore_subscribe_messages=True)  # as the stream server listens
            ps.subscribe("dao:test")
            r.publish("dao:test", "hello")
            got = wait_for(lambda: ps.get_message(timeout=0.1), 5, what="published message")
            assert got["data"] == "hello"
            ps.close()
        with redis.Redis(port=master.port, password=PASSWORD, db=4, decode_responses=True) as m:
            assert m.get("k") == "via sentinel"
        for bad in (
            url.replace("/svc/", "/nosuch/"),  # unknown service
            url.split("?")[0],  # no sentinel password
            url.replace(f"sentinel_password={SENTINEL_PASSWORD}", "sentinel_password=bad"),
        ):
            with redis_client(bad, timeout=1.0) as r, pytest.raises(redis.ConnectionError) as e:
                r.ping()
            assert "sentinel" in error_hint(e.value), (e.value, error_hint(e.value))
            _no_password(str(e.value))
        with redis_client(url.replace(f":{PASSWORD}@", ":bad@"), timeout=1.0) as r:
            with pytest.raises(redis.AuthenticationError):
                r.ping()


def test_sentinel_client_follows_a_failover(folder):
    """The master crashes: the sentinel promotes the replica, and the same client writes
    to it (a few seconds: the sentinel waits down-after-milliseconds, then promotes)."""
    with _data_node(folder) as master, _data_node(folder, "--replicaof", "127.0.0.1",
                                                  str(master.port)) as replica:  # fmt: skip
        with redis.Redis(port=master.port, password=PASSWORD) as m:
            wait_for(lambda: m.info("replication").get("slave0", {}).get("state") == "online", 10,
                     what="replica in sync")  # fmt: skip
        conf = _sentinel_conf(master.port, down_ms=300)
        with _server(folder, ["--sentinel"], ready=_sentinel_ready, conf=conf) as sentinel:
            with redis.Redis(port=sentinel.port, password=SENTINEL_PASSWORD) as s:
                wait_for(lambda: s.sentinel_slaves("svc"), 10, what="sentinel sees the replica")
            url = (f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/svc/0"
                   f"?sentinel_password={SENTINEL_PASSWORD}")  # fmt: skip
            with redis_client(url, timeout=1.0) as r:
                r.set("before", "1")
                assert int(r.info("server")["tcp_port"]) == master.port
                # replicated before the crash (the first stream waits for the replica's
                # first acknowledgement, up to 1 s)
                wait_for(lambda: r.wait(1, 300) == 1, 10, what="replicated")
                master.kill()

                def on_new_master():
                    try:
                        r.set("after", "2")
                        return int(r.info("server")["tcp_port"]) == replica.port
                    except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                        time.sleep(0.1)
                        return False

                wait_for(on_new_master, 30, what="the client writes to the new master")
                assert r.get("before") == "1" and r.get("after") == "2"


def test_sentinel_over_tls(certs, folder):
    """rediss+sentinel: TLS to the sentinel and to the master, with one CA."""
    tls = _tls_args(certs, "no")
    with _server(folder, [*tls, "--requirepass", PASSWORD], ready=_tls_ready(certs),
                 port_option="--tls-port") as master:  # fmt: skip
        conf = _sentinel_conf(master.port) + "tls-replication yes\n"
        with _server(folder, ["--sentinel", *tls], ready=_tls_ready(certs), conf=conf,
                     port_option="--tls-port") as sentinel:  # fmt: skip
            url = (f"rediss+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/svc/0"
                   f"?sentinel_password={SENTINEL_PASSWORD}"
                   f"&ssl_ca_certs={certs['ca']}")  # fmt: skip
            with redis_client(url, timeout=1.0) as r:
                r.set("k", "tls")
                assert r.get("k") == "tls"
                assert int(r.info("server")["tcp_port"]) == master.port  # its TLS port

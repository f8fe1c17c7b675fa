"""Helpers to test and measure streams across processes, shipped so users can test their own.

The worker functions run in child processes (``multiprocessing`` with the ``spawn`` start
method, so each is a fresh interpreter, as a separate DAO process would be) and report through a
queue. :func:`run_pair` starts a writer and a reader and gathers what they measured; ``dao
demo`` and ``benchmarks/streams.py`` are built on it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "child_environment",
    "free_port",
    "redis_server",
    "RedisServer",
    "wait_for",
    "wait_equal",
    "temporary_stream_dir",
    "unique_name",
    "sleep_until",
    "writer",
    "reader",
    "run_pair",
    "PairResult",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` (loopback by default) right now."""
    from dao.runtime.supervisor import free_port as _free_port

    return _free_port(host)


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a child process that imports this ``dao`` (see
    :func:`dao.runtime.supervisor.child_environment`)."""
    from dao.runtime.supervisor import child_environment as _child_environment

    return _child_environment(**extra)


def wait_for(condition, timeout: float = 10.0, interval: float = 0.01, what: str = ""):
    """Call ``condition()`` until it returns something true, and return that.

    Parameters
    ----------
    condition : callable
        Called with no argument.
    timeout : float
        Seconds before giving up.
    interval : float
        Seconds between calls.
    what : str
        What is awaited, for the error message.

    Raises
    ------
    TimeoutError
        ``condition`` stayed false for ``timeout`` seconds.
    """
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout:g} s")
        time.sleep(interval)


def wait_equal(get, want, timeout: float = 10.0, what: str = "", interval: float = 0.02):
    """Call ``get()`` until it returns ``want``, and return it.

    Raises
    ------
    AssertionError
        ``get()`` did not return ``want`` within ``timeout`` seconds; the message names the
        last value seen.
    """
    end = time.monotonic() + timeout
    while True:
        got = get()
        if got == want:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"{what or get}: {got!r} != {want!r} after {timeout:g} s")
        time.sleep(interval)


class RedisServer:
    """A throw-away ``redis-server`` on a loopback port, persistence off (see
    :func:`redis_server`).

    Attributes
    ----------
    port : int
        The TCP port on 127.0.0.1; kept across :meth:`restart`.
    password : str or None
        The password clients must give (``requirepass``), if any.
    url : str
        ``redis://[:PASSWORD@]127.0.0.1:PORT/0``, for :class:`dao.net.registry.Registry`.
    """

    def __init__(self, password: str | None = None, timeout: float = 10.0) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError(
                "redis-server is not installed: apt-get install redis-server "
                "(scripts/system-deps.sh test) or conda install redis"
            )
        self._exe = exe
        self.password = password
        self.timeout = timeout
        self.port = 0
        self._proc: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="daoredis", dir="/tmp")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def __str__(self) -> str:
        return self.url

    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (on :attr:`port` if set, else on a free port) and wait until it
        answers PING.

        Raises
        ------
        RuntimeError
            The server exited or did not answer within ``timeout`` seconds (its log is in
            the message).
        """
        if self.running():
            return
        tries = 1 if self.port else 3  # a fresh port may be taken between pick and bind
        for attempt in range(tries):
            port = self.port or free_port()
            try:
                self._spawn(port)
            except RuntimeError:
                if attempt == tries - 1:
                    raise
                continue
            self.port = port
            return

    def _spawn(self, port: int) -> None:
        args = [self._exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self._dir, "--daemonize", "no",
                "--logfile", "", "--loglevel", "warning"]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        log = open(os.path.join(self._dir, f"redis-{port}.log"), "wb")
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        end = time.monotonic() + self.timeout
        while True:
            if self._proc.poll() is not None or time.monotonic() > end:
                self.stop()
                with open(os.path.join(self._dir, f"redis-{port}.log"), "rb") as f:
                    text = f.read().decode(errors="replace")[-2000:]
                raise RuntimeError(
                    f"redis-server on port {port} did not start within {self.timeout:g} s: "
                    f"{text.strip() or 'no log'}"
                )
            if _answers_ping(port):
                return
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after 5 s. Its data are lost."""
        p, self._proc = self._proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def restart(self) -> None:
        """Stop the server and start a fresh, empty one on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _answers_ping(port: int) -> bool:
    """Whether a Redis server answers on 127.0.0.1:``port`` (``-NOAUTH`` counts)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(password: str | None = None, timeout: float = 10.0) -> Iterator[RedisServer]:
    """Run a private ``redis-server`` for the duration of a ``with`` block.

    Debian's ``redis-server`` package starts no daemon, and tests must not touch a shared one:
    this starts one on a free loopback port with persistence off (``--save "" --appendonly
    no``), waits until it answers PING, and always stops it (terminate, then kill).

    Parameters
    ----------
    password : str, optional
        Require this password (``requirepass``); it is part of the yielded URL.
    timeout : float
        Seconds to wait for the server to answer.

    Yields
    ------
    RedisServer
        ``.url`` is ``redis://127.0.0.1:PORT/0`` (``str()`` gives it too); ``.restart()``
        replaces it with an empty server on the same port, ``.stop()`` / ``.start()`` take it
        down and up.

    Raises
    ------
    FileNotFoundError
        ``redis-server`` is not installed.
    RuntimeError
        It did not start.

    Examples
    --------
    >>> with redis_server() as server:  # doctest: +SKIP
    ...     reg = dao.net.registry.Registry(server.url)
    """
    server = RedisServer(password=password, timeout=timeout)
    try:
        server.start()
        yield server
    finally:
        server.close()


def unique_name(prefix: str = "t") -> str:
    """A stream name no other process uses (semaphore names are machine-wide)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def temporary_stream_dir() -> Iterator[str]:
    """Point ``$DAO_SHM_DIR`` at a fresh short folder; remove its streams afterwards.

    The folder is directly under ``/tmp`` so that stream paths stay well under 80 bytes.
    """
    from dao.streams.stream import list_streams, remove

    folder = tempfile.mkdtemp(prefix="dao", dir="/tmp")
    old = os.environ.get("DAO_SHM_DIR")
    os.environ["DAO_SHM_DIR"] = folder
    try:
        yield folder
    finally:
        for p in list_streams(folder):
            with contextlib.suppress(OSError):
                remove(p)
        shutil.rmtree(folder, ignore_errors=True)
        if old is None:
            os.environ.pop("DAO_SHM_DIR", None)
        else:
            os.environ["DAO_SHM_DIR"] = old


def sleep_until(t: float) -> None:
    """Wait until ``time.perf_counter()`` reaches ``t``: sleep, then spin the last 150 us.

    Paces a writer like a camera: the frame comes on time, and readers are asleep before it.
    """
    while (left := t - time.perf_counter()) > 0:
        if left > 2e-4:
            time.sleep(left - 1.5e-4)


def writer(path: str, n: int, period: float, queue=None, start_delay: float = 0.0) -> None:
    """Write ``n`` frames to an existing stream, frame k filled with the value k + 1.

    Parameters
    ----------
    path : str
        Stream to write.
    n : int
        Frames to write.
    period : float
        Seconds between frames (0: as fast as possible). Paced with a short sleep then a
        spin, so the reader is asleep when each frame comes, as in a camera-driven loop.
    queue : multiprocessing.Queue, optional
        Receives ``("writer", elapsed_s)`` at the end.
    start_delay : float
        Seconds to wait before the first frame (lets readers block first).
    """
    import dao

    s = dao.shm(path)
    frame = np.empty(s.shape, s.dtype)
    time.sleep(start_delay)
    t0 = time.perf_counter()
    nxt = t0
    for k in range(n):
        if period:
            nxt += period
            sleep_until(nxt)
        frame.fill(k + 1)
        s.set_data(frame)
    if queue is not None:
        queue.put(("writer", time.perf_counter() - t0))
    s.close()


def reader(
    path: str,
    n: int,
    mode: str,
    queue,
    timeout: float = 5.0,
    ready=None,
) -> None:
    """Read new frames of a stream until frame ``n`` (value n) and report what was seen.

    Parameters
    ----------
    mode : {"sem", "spin", "poll"}
        Wake on a claimed semaphore, busy-spin on the counter, or read without waiting.
    queue : multiprocessing.Queue
        Receives ``("reader", dict)`` with ``values`` (first element of each frame),
        ``latency_ns`` (frame timestamp to return of ``get_data``), ``torn`` (frames whose
        elements were not all equal), ``timeouts`` and ``elapsed_s``; or ``("error", str)``.
    ready : multiprocessing.Event, optional
        Set once the reader has claimed its semaphore and is about to wait.
    """
    import dao
    from dao import _shm

    try:
        s = dao.shm(path)
        if mode != "poll":
            s.claim_semaphore()
        out = np.empty(s.shape, s.dtype)
        flat = out.reshape(-1)
        values = np.zeros(n, np.float64)
        lat = np.zeros(n, np.int64)
        torn = timeouts = 0
        if ready is not None:
            ready.set()
        t0 = time.perf_counter()
        i = 0
        # Binary semaphores coalesce posts that come while the reader is busy, so a waiting
        # reader may skip frames: read until the last frame (value n) is seen.
        while i < n:
            try:
                s.get_data(check=mode != "poll", timeout=timeout, spin=mode == "spin", out=out)
            except dao.StreamTimeout:
                timeouts += 1
                break
            lat[i] = _shm.now_ns() - s.last_read.time_ns
            values[i] = flat[0]
            if flat.min() != flat.max():
                torn += 1
            i += 1
            if flat[0] >= n:
                break
        queue.put(
            (
                "reader",
                {
                    "values": values[:i],
                    "latency_ns": lat[:i],
                    "torn": torn,
                    "timeouts": timeouts,
                    "elapsed_s": time.perf_counter() - t0,
                },
            )
        )
        s.close()
    except Exception as exc:  # reported to the parent, which raises it
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


@dataclass
class PairResult:
    """What a writer/reader pair measured (see :func:`run_pair`)."""

    frames: int
    elapsed_s: float
    latency_ns: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    torn: int = 0
    timeouts: int = 0
    written: int = 0
    write_s: float = 0.0

    @property
    def rate_hz(self) -> float:
        """Frames written per second."""
        return self.written / self.write_s if self.write_s else 0.0

    def latency_us(self, q: float) -> float:
        """Wake-up latency percentile ``q`` (0-100), in microseconds."""
        from dao.runtime.timing import percentiles

        return percentiles(self.latency_ns, (q,))[0] / 1e3 if len(self.latency_ns) else 0.0


def run_pair(
    path: str, n: int, period: float, mode: str = "sem", timeout: float = 60.0
) -> PairResult:
    """Start a writer and a reader process on stream ``path``; wait for both; return the stats.

    The reader claims a semaphore and blocks before the writer starts.

    Raises
    ------
    RuntimeError
        If either process fails or does not finish within ``timeout`` seconds.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ready = ctx.Event()
    r = ctx.Process(target=reader, args=(path, n, mode, q, 5.0, ready), daemon=True)
    r.start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if not r.is_alive() or time.monotonic() > deadline:
            r.kill()
            raise RuntimeError(f"the reader process did not start (exit code {r.exitcode})")
    w = ctx.Process(target=writer, args=(path, n, period, q, 0.05), daemon=True)
    w.start()
    got = {}
    try:
        while len(got) < 2:
            kind, payload = q.get(timeout=max(0.1, deadline - time.monotonic()))
            if kind == "error":
                raise RuntimeError(f"reader process failed: {payload}")
            got[kind] = payload
    except Exception as exc:
        if isinstance(exc, RuntimeError):
            raise
        raise RuntimeError(f"writer/reader pair did not finish within {timeout} s") from exc
    finally:
        for p in (r, w):
            p.join(5)
            if p.is_alive():
                p.kill()
    res = got["reader"]
    return PairResult(
        frames=len(res["values"]),
        elapsed_s=res["elapsed_s"],
        latency_ns=res["latency_ns"],
        values=res["values"],
        torn=res["torn"],
        timeouts=res["timeouts"],
        written=n,
        write_s=got["writer"],
    )

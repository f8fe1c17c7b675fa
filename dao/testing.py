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
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
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
    "moving_spot",
    "spot_position",
    "camera_source",
    "SimulatedMachine",
    "simulated_machine",
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
    also_bind : tuple of str
        Addresses it listens on besides 127.0.0.1 (e.g. the host side of a test network
        namespace's veth); :meth:`url_at` gives the URL through one of them.
    """

    def __init__(self, password: str | None = None, timeout: float = 10.0,
                 also_bind: Sequence[str] = ()) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError(
                "redis-server is not installed: apt-get install redis-server "
                "(scripts/system-deps.sh test) or conda install redis"
            )
        self._exe = exe
        self.password = password
        self.timeout = timeout
        self.also_bind = tuple(also_bind)
        self.port = 0
        self._proc: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="daoredis", dir="/tmp")

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, address: str) -> str:
        """The server's URL through ``address`` (127.0.0.1 or one of :attr:`also_bind`)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{address}:{self.port}/0"

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
        args = [self._exe, "--port", str(port), "--bind", "127.0.0.1", *self.also_bind,
                "--save", "",
                "--appendonly", "no", "--dir", self._dir, "--daemonize", "no",
                "--logfile", "", "--loglevel", "warning"]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        elif self.also_bind:  # clients on those addresses are the tests' own namespaces
            args += ["--protected-mode", "no"]
        log = open(os.path.join(self._dir, f"redis-{port}.log"), "wb")
        try:
            self._proc = subprocess.Popen(  # stopped with this process, even if killed
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
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


def _die_with_parent() -> None:
    """In a child before exec: ask Linux to send it SIGTERM when its parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # SET_PDEATHSIG


def _answers_ping(port: int) -> bool:
    """Whether a Redis server answers on 127.0.0.1:``port`` (``-NOAUTH`` counts)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(password: str | None = None, timeout: float = 10.0,
                 also_bind: Sequence[str] = ()) -> Iterator[RedisServer]:
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
    also_bind : sequence of str
        Addresses to listen on besides 127.0.0.1.

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
    server = RedisServer(password=password, timeout=timeout, also_bind=also_bind)
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


# -- a simulated remote machine (notebook 06, tests of dao.net) ------------------------------


def moving_spot(k: int, shape: tuple[int, int] = (64, 64), period: int = 200,
                sigma: float = 3.0) -> np.ndarray:
    """Frame ``k`` of a simulated camera: a Gaussian spot circling the centre, on a noisy
    background.

    The same ``k`` gives the same frame, bit for bit, in every process (the noise is seeded by
    ``k``), so a reader can check a frame it received against the one written.

    Parameters
    ----------
    k : int
        Frame number (>= 0).
    shape : (int, int)
        Frame shape (rows, columns).
    period : int
        Frames per turn of the spot.
    sigma : float
        Width of the spot, in pixels.

    Returns
    -------
    numpy.ndarray
        float32, ``shape``: a background of about 100 (noise 5) and a spot of peak 1000.
    """
    ny, nx = shape
    cx, cy = spot_position(k, shape, period)
    y, x = np.mgrid[:ny, :nx]
    spot = 1000.0 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma**2))
    noise = np.random.default_rng(k).normal(100.0, 5.0, shape)
    return (spot + noise).astype(np.float32)


def spot_position(k: int, shape: tuple[int, int] = (64, 64),
                  period: int = 200) -> tuple[float, float]:
    """Centre ``(x, y)`` in pixels of the spot of :func:`moving_spot` in frame ``k``."""
    ny, nx = shape
    angle = 2.0 * np.pi * (k % period) / period
    return ((nx - 1) / 2 + 0.3 * nx * np.cos(angle), (ny - 1) / 2 + 0.3 * ny * np.sin(angle))


def camera_source(folder: str, rate: float = 100.0, names: tuple[str, str] = ("camera",
                  "tip_tilt"), frames: int | None = None) -> None:
    """Write a simulated camera into streams of ``folder`` until killed (or ``frames``
    frames): frame ``k`` (from 0) of stream ``names[0]`` is :func:`moving_spot` (k) and that
    of ``names[1]`` the spot's position relative to the centre (float32, x then y), both with
    frame id ``cnt2 = k``, ``rate`` times a second.

    The streams are created (replaced if they exist) before the first frame; streams of the
    same names left elsewhere by dead processes (a run killed before it cleaned up) are
    removed first, as their semaphores would clash.
    """
    import dao
    from dao.streams.stream import _semaphore_users, remove, stream_holders

    for n in names:
        for other in _semaphore_users(os.path.join(folder, n + ".im.shm")):
            if stream_holders(other).dead_owner:
                remove(other)
    cam = dao.shm(os.path.join(folder, names[0] + ".im.shm"), moving_spot(0), depth=64,
                  replace=True)
    tt = dao.shm(os.path.join(folder, names[1] + ".im.shm"), np.zeros(2, np.float32),
                 depth=64, replace=True)
    cam.set_labels(("y", "x"), attrs={"units": "ADU"})
    tt.set_labels(("axis",), coords={"axis": ["x", "y"]}, attrs={"units": "pixel"})
    centre = np.array([(cam.shape[1] - 1) / 2, (cam.shape[0] - 1) / 2])
    t = time.perf_counter()
    k = 0
    while frames is None or k < frames:
        frame = moving_spot(k, cam.shape)
        sleep_until(t)
        cam.set_data(frame, cnt2=k)
        tt.set_data((np.array(spot_position(k, cam.shape)) - centre).astype(np.float32), cnt2=k)
        k += 1
        t += 1.0 / rate
    cam.close()
    tt.close()


#: Run first in the children of :class:`SimulatedMachine`: stop (SIGTERM) when the process
#: that started them dies (Linux ``PR_SET_PDEATHSIG``), so none outlives a crashed kernel.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(os.environ["DAO_PARENT_PID"]):
        sys.exit(0)
"""


class SimulatedMachine:
    """Another machine, simulated on this one: its ``dao server`` and a camera writing its
    streams, each a separate OS process (see :func:`simulated_machine`).

    The server binds a loopback address of its own (``bind``, e.g. 127.0.0.2: Linux answers on
    all of 127.0.0.0/8) and serves a stream folder of its own, as ``dao server --redis URL
    --host HOST --bind IP --dir FOLDER`` would on a real real-time computer. The camera
    (:func:`camera_source`) writes two streams into that folder.

    Parameters
    ----------
    redis_url : str
        The registry the server registers in.
    host : str
        The machine's name in the registry.
    bind : str
        The machine's IP address (a loopback one).
    rate : float
        Frames per second of the camera.
    names : (str, str)
        The camera's streams: image and spot position. Stream names are machine-wide (their
        semaphores are): no other stream on this computer may have them.
    timeout : float
        Seconds to wait for the machine and its streams to be registered.

    Attributes
    ----------
    folder : str
        The machine's stream folder (a fresh one under /tmp); removed by :meth:`close`.
    server, source : subprocess.Popen or None
        The two processes, once started.
    command : list of str
        The ``dao server`` command line the server runs.
    """

    def __init__(self, redis_url: str, host: str = "rtc1", bind: str = "127.0.0.2",
                 rate: float = 100.0, names: tuple[str, str] = ("camera", "tip_tilt"),
                 timeout: float = 20.0) -> None:
        self.redis_url = redis_url
        self.host = host
        self.bind = bind
        self.rate = float(rate)
        self.names = tuple(names)
        self.timeout = timeout
        self.folder = tempfile.mkdtemp(prefix="daom", dir="/tmp")
        self.server: subprocess.Popen | None = None
        self.source: subprocess.Popen | None = None
        self.command = ["dao", "server", "--redis", redis_url, "--host", host, "--bind", bind,
                        "--dir", self.folder, "--scan", "0.5"]

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"<SimulatedMachine {self.host} on {self.bind} ({state}), streams in {self.folder}>"

    def __enter__(self) -> SimulatedMachine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def running(self) -> bool:
        """Whether both processes are alive."""
        return all(p is not None and p.poll() is None for p in (self.server, self.source))

    def _spawn(self, code: str, args: list[str], log: str) -> subprocess.Popen:
        with open(os.path.join(self.folder, log), "wb") as f:
            return subprocess.Popen(
                [sys.executable, "-c", _DIE_WITH_PARENT + code, *args], stdin=subprocess.DEVNULL,
                stdout=f, stderr=subprocess.STDOUT,
                env=child_environment(DAO_SHM_DIR=self.folder, DAO_PARENT_PID=str(os.getpid())),
            )

    def log(self, which: str = "server") -> str:
        """The output of the ``"server"`` or the ``"source"`` process so far."""
        try:
            with open(os.path.join(self.folder, f"{which}.log"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def start(self) -> SimulatedMachine:
        """Start the camera, then the server; return once the machine and both streams are
        in the registry.

        Raises
        ------
        RuntimeError
            A process exited, or the streams were not registered within ``timeout`` seconds
            (the processes' output is in the message); both processes are stopped then.
        """
        from dao.net import remote

        if self.running():
            return self
        try:
            self.source = self._spawn(
                "import sys\nfrom dao.testing import camera_source\n"
                "camera_source(sys.argv[1], float(sys.argv[2]), tuple(sys.argv[3:5]))",
                [self.folder, repr(self.rate), *self.names], "source.log")
            paths = [os.path.join(self.folder, n + ".im.shm") for n in self.names]
            self._wait(lambda: all(map(os.path.exists, paths)), "the camera's streams")
            self.server = self._spawn(
                "import sys\nfrom dao.net.cli import main\nsys.exit(main(sys.argv[1:]))",
                self.command[1:], "server.log")

            def registered() -> bool:
                try:
                    return set(self.names) <= set(remote.streams(self.redis_url, self.host))
                except OSError:
                    return False
            self._wait(registered, f"machine {self.host!r} and its streams in the registry")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, condition, what: str) -> None:
        end = time.monotonic() + self.timeout
        while not condition():
            dead = [n for n, p in (("server", self.server), ("source", self.source))
                    if p is not None and p.poll() is not None]
            if dead or time.monotonic() > end:
                why = f"the {dead[0]} process exited" if dead else f"not within {self.timeout:g} s"
                raise RuntimeError(f"simulated machine {self.host!r}: {what} did not appear "
                                   f"({why}); "
                                   f"server: {self.log('server')[-1500:].strip() or '-'}; "
                                   f"camera: {self.log('source')[-1500:].strip() or '-'}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (it leaves the registry) and the camera: SIGTERM, then SIGKILL
        after 10 s. The streams stay in :attr:`folder`."""
        procs = [p for p in (self.server, self.source) if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def close(self) -> None:
        """Stop both processes, delete the streams (and their semaphores) and the folder."""
        from dao.streams.stream import list_streams, remove

        self.stop()
        for path in list_streams(self.folder):
            with contextlib.suppress(OSError):
                remove(path)
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def simulated_machine(redis_url: str, host: str = "rtc1", bind: str = "127.0.0.2",
                      rate: float = 100.0, names: tuple[str, str] = ("camera", "tip_tilt"),
                      timeout: float = 20.0) -> Iterator[SimulatedMachine]:
    """Run a simulated remote machine for the duration of a ``with`` block: a ``dao server``
    process on its own loopback address and stream folder, and a camera process writing two
    streams there (see :class:`SimulatedMachine`); always stopped and cleaned up.

    The processes also stop (SIGTERM) when the thread that started them ends, or this process
    dies (Linux ``PR_SET_PDEATHSIG``).

    Yields
    ------
    SimulatedMachine
        Started: the machine and its streams are in the registry.

    Raises
    ------
    RuntimeError
        It did not start (the processes' output is in the message).

    Examples
    --------
    >>> with redis_server() as reg, simulated_machine(reg.url) as rtc1:  # doctest: +SKIP
    ...     with dao.net.remote.mirror(reg.url, "rtc1", "camera") as m:
    ...         ...
    """
    machine = SimulatedMachine(redis_url, host=host, bind=bind, rate=rate, names=names,
                               timeout=timeout)
    try:
        machine.start()
        yield machine
    finally:
        machine.close()

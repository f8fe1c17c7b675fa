"""Network benchmarks: a stream mirrored over ZeroMQ (dao.net, issue 13) against bare pyzmq.

Everything runs over loopback TCP (127.0.0.1) between two long-lived OS processes, the same
two for the mirror and for its baseline:

- the *source* process holds the source stream with its :class:`dao.net.StreamPublisher`
  thread (how ``dao server`` runs it: a thread beside the stream), and a bare ZeroMQ PUB
  socket;
- the *receiver* process holds the :class:`dao.net.Mirror` thread and a reader of the mirror
  stream (its main thread), and a bare ZeroMQ SUB socket read by its main thread.

Both sides of a figure therefore have one sending and one receiving OS process, each with its
own ZeroMQ I/O thread; the mirror adds, by design, a publisher thread (woken by the stream's
semaphore) and a mirror thread (writing the local stream) whose reader is woken by a semaphore.

Figures (JSON lines, see ``benchmarks/_report.py``):

1. ``mirror_latency_64x64_<rate>_p50/_p99/_p99.9``: from the source write to the frame read
   from the local mirror stream, beside the same frame's bytes sent by a bare PUB (header:
   send time and frame id) and copied out of the SUB message into a numpy buffer. The source
   stamps the write (``set_data``'s ``CLOCK_REALTIME`` timestamp, which the mirror keeps; the
   bare sender's ``time.time_ns()`` just before ``send``); the receiver stamps
   ``time.time_ns()`` once the frame is in its buffer (``get_data_next`` returned / the copy
   is done): one clock, two processes of one machine. Same frames, same pacing (absolute
   schedule: sleep, then spin the last 0.3 ms yielding the GIL), rounds of mirror and bare
   alternated (the order swaps every round) so that machine noise hits both alike;
   ``ratio_median_of_rounds`` is the median over rounds of the per-round ratios.
   Target of issue 13: within 1.2x of bare pyzmq (ratio >= 0.83).
2. ``mirror_throughput_1024x1024`` (frames/s) and ``..._MBps`` (MB/s): ``every`` mode, frames
   written to the mirror stream per second, counted at the receiver, beside frames received
   and copied out by a bare SUB. Both senders are kept busy without flooding the
   high-water marks: the bare sender sends zero-copy and keeps at most as many frames in
   flight (ZeroMQ trackers) as the publisher has buffers (four); the source writer stays less
   than the source depth ahead of the publisher. Target: ratio >= 0.8.
3. ``mirror_every_64x64_<rate>``: ``every`` mode at 1 kHz and 10 kHz (60 s each; 5 s with
   ``--quick``): frames written per second to the mirror stream, against the source's
   achieved write rate (the baseline); the extra keys give frames written at the source,
   published, received, written, lost (``Mirror.status()``) and the gaps found in the mirror
   stream's ``cnt2`` sequence (read in order by the receiver's main thread): ``lost`` counts
   the publisher's sequence gaps (frames dropped by ZeroMQ), ``source_overwrites`` the times
   the source writer lapped the publisher, ``cnt2_gaps`` every frame missing from the mirror
   stream whatever the cause. Frames lost must be 0 (``ok``). The writer shares the source
   process with the publisher thread (and its GIL); ``source_late_max_ms`` is its worst
   lateness against the schedule.

Run: ``python benchmarks/net.py [--quick]`` (``--quick``: about 30 s).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import struct
import sys
import time
import traceback
from collections import deque

import numpy as np

from dao.net.mirror import _NBUF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit, machine, parser  # noqa: E402

#: Header of a bare frame: sender time (int64 ns since the epoch) and frame id.
BARE_HEADER = struct.Struct("<qq")
#: Last part of a paced wait that is spun (yielding the GIL) rather than slept.
SPIN_S = 3e-4
LOCAL = "tcp://127.0.0.1:*"


def pace_until(t: float) -> None:
    """Wait until ``time.perf_counter()`` reaches ``t``: sleep, then spin the last
    :data:`SPIN_S` seconds with ``time.sleep(0)``, which lets other threads of the process
    (the publisher) take the GIL while the writer waits."""
    while (left := t - time.perf_counter()) > 0:
        if left > SPIN_S:
            time.sleep(left - SPIN_S)
        else:
            time.sleep(0)


# -- the source process ---------------------------------------------------------------------
class Source:
    """Source side: per link a stream, its StreamPublisher and a bare PUB socket."""

    def __init__(self) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.links: dict[str, dict] = {}

    def setup(self, tag: str, name: str, shape: tuple, depth: int) -> dict:
        import dao
        from dao.net import StreamPublisher
        from dao.net.mirror import queue_frames

        frame = np.random.default_rng(1).random(shape, dtype=np.float32)
        s = dao.shm(name, frame, depth=depth)
        pub = StreamPublisher(name, LOCAL)  # its default high-water mark, for both
        sock = self.ctx.socket(self.zmq.PUB)
        sock.setsockopt(self.zmq.LINGER, 0)
        sock.setsockopt(self.zmq.SNDHWM, queue_frames(frame.nbytes))
        sock.bind(LOCAL)
        bare = sock.getsockopt_string(self.zmq.LAST_ENDPOINT)
        self.links[tag] = {"s": s, "pub": pub, "sock": sock, "frame": frame, "depth": depth}
        return {"mirror": pub.address, "bare": bare}

    def _wait_published(self, pub, target: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while pub.sent < target and time.monotonic() < deadline:
            time.sleep(1e-3)

    def paced(self, tag: str, kind: str, n: int, period: float, first_id: int) -> dict:
        """Write (``kind="mirror"``) or send (``"bare"``) ``n`` frames on an absolute
        schedule of ``period`` seconds, with ids ``first_id``..."""
        link = self.links[tag]
        s, pub, sock, frame = link["s"], link["pub"], link["sock"], link["frame"]
        flat = frame.reshape(-1)
        sent0, over0 = pub.sent, pub.overwrites
        pack = BARE_HEADER.pack
        times = np.empty(n)
        nxt = time.perf_counter() + period
        for k in range(n):
            pace_until(nxt)
            nxt += period
            times[k] = time.perf_counter()
            flat[0] = k  # the frame changes, as a camera's does
            if kind == "mirror":
                s.set_data(frame, cnt2=first_id + k)
            else:
                sock.send_multipart([pack(time.time_ns(), first_id + k), frame], copy=False)
        if kind == "mirror":
            self._wait_published(pub, sent0 + n)
        span = times[-1] - times[0] if n > 1 else 0.0
        return {
            "written": n,
            "rate": (n - 1) / span if span > 0 else 0.0,
            "late_max_s": float(np.max(times - (times[0] + period * np.arange(n)))),
            "published": pub.sent - sent0,
            "overwrites": pub.overwrites - over0,
        }

    def flood(self, tag: str, kind: str, n: int, first_id: int) -> dict:
        """Send ``n`` frames as fast as the link takes them (see the module docstring)."""
        link = self.links[tag]
        s, pub, sock, frame = link["s"], link["pub"], link["sock"], link["frame"]
        sent0, over0 = pub.sent, pub.overwrites
        ahead = link["depth"] - 2
        t0 = time.perf_counter()
        if kind == "mirror":
            for k in range(n):
                while k - (pub.sent - sent0) >= ahead:
                    time.sleep(2e-5)
                s.set_data(frame, cnt2=first_id + k)
            self._wait_published(pub, sent0 + n)
        else:
            inflight: deque = deque()
            for k in range(n):
                if len(inflight) >= _NBUF:
                    inflight.popleft().wait()
                inflight.append(
                    sock.send_multipart(
                        [BARE_HEADER.pack(time.time_ns(), first_id + k), frame],
                        copy=False,
                        track=True,
                    )
                )
            for t in inflight:
                t.wait()
        return {
            "elapsed": time.perf_counter() - t0,
            "published": pub.sent - sent0,
            "overwrites": pub.overwrites - over0,
        }

    def close(self) -> None:
        for link in self.links.values():
            link["pub"].stop()
            link["sock"].close(0)
            link["s"].delete()
        self.ctx.term()


# -- the receiver process -------------------------------------------------------------------
class Receiver:
    """Receiver side: per link a Mirror, a reader of its stream, and a bare SUB socket."""

    def __init__(self, conn) -> None:
        import zmq

        self.zmq = zmq
        self.conn = conn
        self.ctx = zmq.Context()
        self.links: dict[str, dict] = {}

    def setup(
        self,
        tag: str,
        addresses: dict,
        local: str,
        shape: tuple,
        depth: int,
        rcvhwm: int | None = None,
    ) -> bool:
        from dao.net import Mirror

        m = Mirror(addresses["mirror"], local, "every", depth=depth, rcvhwm=rcvhwm)
        sock = self.ctx.socket(self.zmq.SUB)
        sock.setsockopt(self.zmq.LINGER, 0)
        sock.setsockopt(self.zmq.RCVHWM, rcvhwm or 1000)  # the mirror's "every" default
        sock.setsockopt(self.zmq.SUBSCRIBE, b"")
        sock.connect(addresses["bare"])
        self.links[tag] = {
            "m": m,
            "sock": sock,
            "local": local,
            "r": None,
            "buf": np.empty(shape, np.float32),
        }
        return True

    def warm(self, tag: str, timeout: float = 0.3) -> dict:
        """After warm-up frames: open the mirror stream once it exists, drain both sides.
        Returns what arrived (the caller retries until both did)."""
        import dao

        link = self.links[tag]
        if link["r"] is None and link["m"].written > 0:
            r = dao.shm(link["local"])
            r.claim_semaphore()
            link["r"] = r
        if link["r"] is not None:
            link["r"].reset_tail()
        got = 0
        sock = link["sock"]
        while sock.poll(int(timeout * 1000)):
            sock.recv_multipart()
            got += 1
        return {"mirror": link["r"] is not None, "bare": got > 0}

    def _drain(self, link: dict) -> None:
        link["r"].reset_tail()
        sock = link["sock"]
        while sock.poll(0):
            sock.recv_multipart()

    def latency(self, tag: str, kind: str, n: int, timeout: float = 2.0):
        """Receive ``n`` paced frames; latencies (ns) and the frame ids seen."""
        link = self.links[tag]
        self._drain(link)
        buf = link["buf"]
        lat = np.zeros(n, np.int64)
        ids = np.zeros(n, np.int64)
        i = 0
        self.conn.send(("ready", None))
        if kind == "mirror":
            r = link["r"]
            timeout_status = r.DAO_TIMEOUT
            while i < n:
                status, _ = r.get_data_next(wait=True, timeout=timeout, out=buf)
                t = time.time_ns()
                if status == timeout_status:
                    break
                info = r.last_read
                lat[i] = t - info.time_ns
                ids[i] = info.cnt2
                i += 1
        else:
            sock = link["sock"]
            unpack = BARE_HEADER.unpack
            shape = buf.shape
            while i < n:
                if not sock.poll(int(timeout * 1000)):
                    break
                head, body = sock.recv_multipart(copy=False)
                np.copyto(buf, np.frombuffer(body.buffer, np.float32).reshape(shape))
                t = time.time_ns()
                t_send, fid = unpack(head.bytes)
                lat[i] = t - t_send
                ids[i] = fid
                i += 1
        return {"lat_ns": lat[:i], "ids": ids[:i]}

    def rate(self, tag: str, kind: str, n: int, last_id: int, timeout: float = 2.0) -> dict:
        """Count the frames of a flood until frame ``last_id`` (or ``timeout`` s of
        silence); frames per second between the first and the last arrival."""
        link = self.links[tag]
        self._drain(link)
        m = link["m"]
        st0 = m.status()
        self.conn.send(("ready", None))
        if kind == "mirror":
            r = link["r"]
            w0 = m.written
            t_first = t_last = None
            w_first = w_last = w0
            quiet = time.monotonic()
            while True:
                w = m.written
                now = time.perf_counter()
                if w != w_last:
                    quiet = time.monotonic()
                    if t_first is None:
                        t_first, w_first = now, w
                    t_last, w_last = now, w
                    if r.get_frame_id() == last_id:
                        break
                elif time.monotonic() - quiet > timeout:
                    break
                time.sleep(1e-3)  # light polling: the mirror thread needs the GIL
            st1 = m.status()
            got = w_last - w0
            span = (t_last - t_first) if t_first is not None else 0.0
            frames = w_last - w_first
        else:
            sock = link["sock"]
            buf = link["buf"]
            shape = buf.shape
            got = 0
            ids = []
            t_first = t_last = None
            while sock.poll(int(timeout * 1000)):
                head, body = sock.recv_multipart(copy=False)
                np.copyto(buf, np.frombuffer(body.buffer, np.float32).reshape(shape))
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                t_last = now
                got += 1
                fid = BARE_HEADER.unpack(head.bytes)[1]
                ids.append(fid)
                if fid == last_id:
                    break
            span = (t_last - t_first) if t_first is not None else 0.0
            frames = got - 1
            st1 = st0
            gaps = int(np.sum(np.maximum(np.diff(ids) - 1, 0))) if len(ids) > 1 else 0
        return {
            "received": got,
            "rate": frames / span if span > 0 else 0.0,
            "lost": (st1["lost"] - st0["lost"]) if kind == "mirror" else gaps,
        }

    def every(self, tag: str, first_id: int, last_id: int, timeout: float = 2.0) -> dict:
        """Follow the mirror stream in order while the source writes frames ``first_id`` to
        ``last_id``: count the frames seen and the gaps of their ``cnt2`` sequence."""
        link = self.links[tag]
        self._drain(link)
        m, r = link["m"], link["r"]
        st0 = m.status()
        out = r.frames_buffer(r.depth)
        seen = gaps = backwards = lapped = 0
        prev = first_id - 1
        first_seen = t_first = t_last = None
        n_first = 0
        quiet = time.monotonic()
        self.conn.send(("ready", None))
        while True:
            got = r.read_new(out=out)
            if len(got):
                quiet = t_last = time.monotonic()
                lapped += got.lost
                ids = got.cnt2.astype(np.int64)
                if first_seen is None:
                    first_seen, t_first, n_first = int(ids[0]), t_last, len(ids)
                d = np.diff(ids, prepend=prev)
                gaps += int(np.sum(np.maximum(d - 1, 0)))
                backwards += int(np.sum(d < 1))
                seen += len(ids)
                prev = int(ids[-1])
                if prev >= last_id:
                    break
            elif time.monotonic() - quiet > timeout:
                break
            time.sleep(0.01)
        st1 = m.status()
        span = (t_last - t_first) if t_first is not None else 0.0
        return {
            "seen": seen,
            "rate": (seen - n_first) / span if span > 0 else 0.0,
            "cnt2_gaps": gaps + (last_id - prev if prev < last_id else 0),
            "cnt2_backwards": backwards,
            "reader_lapped": lapped,
            "first_seen": first_seen,
            "received": st1["received"] - st0["received"],
            "written": st1["written"] - st0["written"],
            "lost": st1["lost"] - st0["lost"],
            "malformed": st1["malformed"] - st0["malformed"],
        }

    def close(self) -> None:
        for link in self.links.values():
            if link["r"] is not None:
                link["r"].close()
            link["m"].close()
            link["sock"].close(0)
        self.ctx.term()


def _serve(role: str, conn) -> None:
    """Main of a worker process: run the commands sent by the parent until ``close``."""
    obj = Source() if role == "source" else Receiver(conn)
    while True:
        cmd, kw = conn.recv()
        try:
            res = getattr(obj, cmd)(**kw)
        except Exception:
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("done", res))
        if cmd == "close":
            return


class Worker:
    """A worker process and its command pipe."""

    def __init__(self, role: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(role, child), daemon=True, name=role)
        self.proc.start()
        self.role = role

    def send(self, cmd: str, **kw) -> None:
        self.conn.send((cmd, kw))

    def reply(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.1):
            if not self.proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the {self.role} process did not answer (exit code {self.proc.exitcode})"
                )
        kind, res = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"{self.role} process failed:\n{res}")
        return res

    def call(self, cmd: str, timeout: float = 60.0, **kw):
        self.send(cmd, **kw)
        return self.reply(timeout)

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                self.call("close", timeout=10)
            except (RuntimeError, OSError):
                pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


class Bench:
    """The two processes and the frame ids used so far."""

    def __init__(self) -> None:
        self.src = Worker("source")
        self.rcv = Worker("receiver")
        self.next_id = 1

    def ids(self, n: int) -> int:
        first = self.next_id
        self.next_id += n
        return first

    def link(
        self, tag: str, shape: tuple, src_depth: int, mirror_depth: int, rcvhwm: int | None = None
    ) -> None:
        """Set up a link and send warm-up frames until both paths deliver."""
        from dao.testing import unique_name

        addr = self.src.call(
            "setup", tag=tag, name=unique_name(f"net{tag}"), shape=shape, depth=src_depth
        )
        self.rcv.call(
            "setup",
            tag=tag,
            addresses=addr,
            local=unique_name(f"mir{tag}"),
            shape=shape,
            depth=mirror_depth,
            rcvhwm=rcvhwm,
        )
        for _ in range(50):
            for kind in ("mirror", "bare"):
                self.src.call("paced", tag=tag, kind=kind, n=5, period=0.01, first_id=self.ids(5))
            ok = self.rcv.call("warm", tag=tag)
            if ok["mirror"] and ok["bare"]:
                return
        raise RuntimeError(f"link {tag}: no frames came through ({ok})")

    def pair(self, rx_cmd: str, rx_kw: dict, tx_cmd: str, tx_kw: dict, timeout: float):
        """Start the receiver, wait until it is ready, run the source; both results."""
        self.rcv.send(rx_cmd, **rx_kw)
        self.rcv.reply(10)  # "ready"
        tx = self.src.call(tx_cmd, timeout=timeout, **tx_kw)
        rx = self.rcv.reply(timeout)
        return tx, rx

    def stop(self) -> None:
        self.rcv.stop()
        self.src.stop()


def _pct(x: np.ndarray, qs=(50, 99, 99.9)) -> np.ndarray:
    from dao.latency import percentiles

    return percentiles(x, qs)


# -- 1. latency -----------------------------------------------------------------------------
def bench_latency(b: Bench, n: int, rounds: int, period: float) -> None:
    ours: list[np.ndarray] = []
    base: list[np.ndarray] = []
    missing = {"mirror": 0, "bare": 0}
    for rnd in range(rounds):
        order = ("mirror", "bare") if rnd % 2 == 0 else ("bare", "mirror")
        for kind in order:
            first = b.ids(n)
            _, rx = b.pair(
                "latency",
                {"tag": "small", "kind": kind, "n": n},
                "paced",
                {"tag": "small", "kind": kind, "n": n, "period": period, "first_id": first},
                timeout=n * period + 30,
            )
            missing[kind] += n - len(rx["lat_ns"])
            (ours if kind == "mirror" else base).append(rx["lat_ns"] / 1e3)
    o, bb = np.concatenate(ours), np.concatenate(base)
    po, pb = _pct(o), _pct(bb)
    rate = f"{1 / period / 1e3:g}kHz"
    for j, q in enumerate(("p50", "p99", "p99.9")):
        per_round = [
            _pct(y, (float(q[1:]),))[0] / _pct(x, (float(q[1:]),))[0]
            for x, y in zip(ours, base, strict=True)
        ]
        emit(
            f"mirror_latency_64x64_{rate}_{q}",
            po[j],
            "us",
            pb[j],
            baseline_name="bare pyzmq PUB/SUB of the same bytes into a numpy buffer",
            ratio_median_of_rounds=round(float(np.median(per_round)), 4),
            round_ratios=[round(float(r), 3) for r in per_round],
            n=len(o),
            n_baseline=len(bb),
            rounds=rounds,
            period_us=period * 1e6,
            missing=missing,
            **({"target": "ratio >= 0.83 (within 1.2x)"} if q == "p50" else {}),
        )


# -- 2. throughput --------------------------------------------------------------------------
def bench_throughput(b: Bench, n: int, rounds: int) -> None:
    res: dict[str, list] = {"mirror": [], "bare": []}
    lost = {"mirror": 0, "bare": 0}
    for rnd in range(rounds):
        order = ("mirror", "bare") if rnd % 2 == 0 else ("bare", "mirror")
        for kind in order:
            first = b.ids(n)
            _, rx = b.pair(
                "rate",
                {"tag": "big", "kind": kind, "n": n, "last_id": first + n - 1},
                "flood",
                {"tag": "big", "kind": kind, "n": n, "first_id": first},
                timeout=120,
            )
            res[kind].append(rx["rate"])
            lost[kind] += rx["lost"]
    o, bb = float(np.median(res["mirror"])), float(np.median(res["bare"]))
    per_round = [x / y for x, y in zip(res["mirror"], res["bare"], strict=True)]
    mb = 1024 * 1024 * 4 / 1e6
    extra = {
        "baseline_name": "bare pyzmq PUB/SUB, zero-copy, 2 frames in flight",
        "ratio_median_of_rounds": round(float(np.median(per_round)), 4),
        "round_rates": [round(x, 1) for x in res["mirror"]],
        "round_rates_baseline": [round(x, 1) for x in res["bare"]],
        "frames_per_round": n,
        "rounds": rounds,
        "lost": lost,
    }
    emit("mirror_throughput_1024x1024", o, "frames/s", bb, target="ratio >= 0.8", **extra)
    emit(
        "mirror_throughput_1024x1024_MBps",
        o * mb,
        "MB/s",
        bb * mb,
        baseline_name=extra["baseline_name"],
    )


# -- 3. every mode at a rate ----------------------------------------------------------------
def bench_every(b: Bench, rate: float, seconds: float) -> None:
    n = int(rate * seconds)
    period = 1.0 / rate
    first = b.ids(n)
    tx, rx = b.pair(
        "every",
        {"tag": "small", "first_id": first, "last_id": first + n - 1},
        "paced",
        {"tag": "small", "kind": "mirror", "n": n, "period": period, "first_id": first},
        timeout=seconds * 3 + 30,
    )
    emit(
        f"mirror_every_64x64_{rate / 1e3:g}kHz",
        rx["rate"],
        "frames/s",
        tx["rate"],
        baseline_name="the source's achieved write rate",
        target_rate=rate,
        seconds=seconds,
        sent=tx["written"],
        published=tx["published"],
        source_overwrites=tx["overwrites"],
        received=rx["received"],
        written=rx["written"],
        lost=rx["lost"],
        cnt2_gaps=rx["cnt2_gaps"],
        cnt2_backwards=rx["cnt2_backwards"],
        seen_in_order=rx["seen"],
        reader_lapped=rx["reader_lapped"],
        malformed=rx["malformed"],
        source_late_max_ms=round(tx["late_max_s"] * 1e3, 3),
        ok=rx["lost"] == 0 and rx["cnt2_gaps"] == 0 and rx["written"] == tx["written"],
    )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        choices=("latency", "throughput", "every"),
        action="append",
        help="run only this part (repeatable); default all",
    )
    args = p.parse_args()
    parts = args.only or ["latency", "throughput", "every"]
    print(json.dumps(machine()), flush=True)
    from dao.testing import temporary_stream_dir

    with temporary_stream_dir():
        b = Bench()
        try:
            b.link("small", (64, 64), src_depth=1024, mirror_depth=1024)
            if "throughput" in parts:
                b.link("big", (1024, 1024), src_depth=8, mirror_depth=2, rcvhwm=16)
            if "latency" in parts:
                if args.quick:
                    bench_latency(b, n=500, rounds=4, period=1e-3)
                else:
                    bench_latency(b, n=1000, rounds=6, period=1e-3)
            if "throughput" in parts:
                bench_throughput(b, n=60 if args.quick else 300, rounds=2 if args.quick else 4)
            if "every" in parts:
                for rate in (1e3, 1e4):
                    bench_every(b, rate, 5.0 if args.quick else 60.0)
        finally:
            b.stop()


if __name__ == "__main__":
    main()

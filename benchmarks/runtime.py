"""Runtime benchmarks: real-time thread timing, command round trip, component wake-to-output.

Figures (JSON lines, see ``benchmarks/_report.py``):

- ``rtthread_jitter_std`` / ``rtthread_jitter_p99`` / ``rtthread_period_error``: a 1 kHz
  :class:`dao.runtime.threads.RTThread` (absolute schedule, short spin before each deadline,
  SCHED_FIFO when permitted) beside a naive ``time.sleep(period)`` loop thread with the same
  priority;
- ``command_rtt_p50`` / ``command_rtt_p99``: PING to a component running in another process
  (``dao run``), beside a bare ZeroMQ REQ/REP echo in another process;
- ``component_wake_p50`` / ``component_wake_to_output_p50`` / ``..._p99``: a
  :class:`dao.examples.Relay` in another process, from the input frame's write timestamp to the
  component's wake-up (``start_ns`` of its timing record) and to the end of its processing
  (``end_ns``), beside the stream's raw wake-up latency (:func:`dao.testing.run_pair`, a bare
  reader process). All percentiles: :func:`dao.latency.percentiles`.

Run: ``python benchmarks/runtime.py [--quick]`` (``--quick`` finishes in under 60 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit, machine, parser  # noqa: E402

from dao.latency import percentiles  # noqa: E402
from dao.testing import child_environment, free_port  # noqa: E402

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# -- 1. real-time thread period and jitter ------------------------------------------------------
def bench_rtthread(seconds: float, period: float = 1e-3) -> None:
    from dao.runtime.threads import RTThread, set_realtime

    core = sorted(os.sched_getaffinity(0))[-1]
    prio = 50
    t = RTThread("bench", period=period, spin=1e-4, core=core, priority=prio)
    t.spawn()
    t.start()
    time.sleep(seconds)
    t.stop()
    t.exit()
    ours = t.periods
    fifo = bool(t.realtime.get("fifo"))

    starts: list[float] = []
    stop = threading.Event()

    def naive() -> None:
        set_realtime(0, core, prio)
        while not stop.is_set():
            starts.append(time.perf_counter())
            time.sleep(period)

    th = threading.Thread(target=naive)
    th.start()
    time.sleep(seconds)
    stop.set()
    th.join()
    base = np.diff(np.asarray(starts))
    us = 1e6
    extra = {
        "n": len(ours),
        "period_us": period * us,
        "fifo": fifo,
        "core": core,
        "baseline_name": "time.sleep(period) loop, same core and priority",
    }
    emit("rtthread_jitter_std", ours.std() * us, "us", base.std() * us, **extra)
    emit(
        "rtthread_jitter_p99",
        percentiles(np.abs(ours - period), (99,))[0] * us,
        "us",
        percentiles(np.abs(base - period), (99,))[0] * us,
        **extra,
    )
    emit(
        "rtthread_period_error",
        abs(ours.mean() - period) * us,
        "us",
        abs(base.mean() - period) * us,
        measured_period_us=ours.mean() * us,
        baseline_period_us=base.mean() * us,
        **extra,
    )


# -- 2. command round trip -------------------------------------------------------------------------
_ECHO = """
import sys, zmq
s = zmq.Context().socket(zmq.REP)
s.bind(sys.argv[1])
print("ready", flush=True)
while True:
    m = s.recv()
    if m == b"quit":
        s.send(b"bye")
        break
    s.send(m)
"""


def bench_command(n: int) -> None:
    import zmq

    from dao.runtime.command import ComponentClient

    # bare REQ/REP echo in another process
    addr = f"tcp://127.0.0.1:{free_port()}"
    echo = subprocess.Popen([sys.executable, "-c", _ECHO, addr], stdout=subprocess.PIPE, text=True)
    try:
        echo.stdout.readline()
        req = zmq.Context.instance().socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(addr)
        msg = b"\x10\x03"  # the bytes of a PING CommandMessage
        base = np.empty(n)
        for i in range(-200, n):
            t0 = time.perf_counter()
            req.send(msg)
            req.recv()
            if i >= 0:
                base[i] = time.perf_counter() - t0
        req.send(b"quit")
        req.recv()
        req.close()
    finally:
        echo.wait(5)
        echo.stdout.close()

    # a component run with dao run, PING through the client
    port = free_port()
    comp = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dao.runtime.cli",
            "run",
            "dao.examples:Counter",
            "--port",
            str(port),
            "--name",
            f"bench{os.getpid()}",
            "--log-level",
            "WARNING",
        ],
        env=child_environment(),
        stdout=subprocess.DEVNULL,
    )
    try:
        c = ComponentClient(port, timeout=2.0)
        c.wait_ready(20)
        ours = np.empty(n)
        for i in range(-200, n):
            t0 = time.perf_counter()
            c.request("PING")
            if i >= 0:
                ours[i] = time.perf_counter() - t0
        setup = np.empty(min(n, 2000))
        for i in range(len(setup)):
            t0 = time.perf_counter()
            c.request("SETUP", "step=2")
            setup[i] = time.perf_counter() - t0
        c.close()
    finally:
        comp.terminate()
        comp.wait(10)
    us = 1e6
    (o50, o99), (b50, b99) = percentiles(ours, (50, 99)), percentiles(base, (50, 99))
    extra = {"n": n, "baseline_name": "bare zmq REQ/REP echo, other process"}
    emit("command_rtt_p50", o50 * us, "us", b50 * us, command="PING", **extra)
    emit("command_rtt_p99", o99 * us, "us", b99 * us, command="PING", **extra)
    s50, s99 = percentiles(setup, (50, 99))
    emit("command_setup_rtt_p50", s50 * us, "us", b50 * us, command="SETUP step=2", **extra)


# -- 3. component wake-to-output -------------------------------------------------------------------
def bench_component(n: int, period: float = 1e-3) -> None:
    import dao
    from dao.runtime.command import ComponentClient
    from dao.testing import run_pair, sleep_until, temporary_stream_dir, unique_name

    with temporary_stream_dir():
        # baseline: raw wake-up latency of a bare reader process on a stream
        raw_name = unique_name("raw")
        raw = dao.shm(raw_name, np.zeros((16, 16), np.float32))
        pair = run_pair(raw.path, n, period, mode="sem")
        raw.delete()
        base = pair.latency_ns / 1e3

        # ours: a Relay component in its own process
        src_name, relay = unique_name("src"), unique_name("rel")
        src = dao.shm(src_name, np.zeros((16, 16), np.float32))
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dao.runtime.cli",
                "run",
                "dao.examples:Relay",
                "--port",
                str(port),
                "--name",
                relay,
                "--config",
                f'{{"streams": {{"source": "{src_name}"}}}}',
                "--state",
                "Running",
                "--log-level",
                "WARNING",
            ],
            env=child_environment(),
            stdout=subprocess.DEVNULL,
        )
        try:
            c = ComponentClient(port, timeout=5.0)
            c.wait_ready(20)
            deadline = time.monotonic() + 20
            while c.state() != "Running" and time.monotonic() < deadline:
                time.sleep(0.05)
            timing = dao.shm(f"{relay}_timing")
            timing.claim_semaphore()
            frame = np.zeros((16, 16), np.float32)
            wake, out = [], []
            nxt = time.perf_counter()
            for k in range(n + 50):
                nxt += period
                sleep_until(nxt)
                frame.fill(k + 1)
                src.set_data(frame)
                t_in = src.get_timestamp_ns()
                cnt = src.get_counter()
                try:  # the timing record: input_cnt0, start_ns, end_ns, frame_id (int64)
                    row = timing.get_data(check=True, timeout=1.0)[:, 0]
                except dao.StreamTimeout:
                    continue
                if int(row[0]) != cnt or k < 50:
                    continue
                wake.append((int(row[1]) - t_in) * 1e-3)
                out.append((int(row[2]) - t_in) * 1e-3)
            timing.close()
            c.close()
        finally:
            proc.terminate()
            proc.wait(10)
            src.delete()
    wake_a, out_a = np.asarray(wake), np.asarray(out)
    b50, b99 = percentiles(base, (50, 99))
    extra = {
        "n": len(out_a),
        "period_us": period * 1e6,
        "baseline_name": "raw stream wake-up latency, bare reader process",
    }
    emit("component_wake_p50", percentiles(wake_a, (50,))[0], "us", b50, **extra)
    emit("component_wake_to_output_p50", percentiles(out_a, (50,))[0], "us", b50, **extra)
    emit("component_wake_to_output_p99", percentiles(out_a, (99,))[0], "us", b99, **extra)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    import json

    print(json.dumps(machine()), flush=True)
    if args.quick:
        bench_rtthread(2.0)
        bench_command(3000)
        bench_component(1000)
    else:
        bench_rtthread(10.0)
        bench_command(20000)
        bench_component(5000)


if __name__ == "__main__":
    main()

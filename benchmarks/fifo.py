"""FIFO benchmarks: get_history and the telemetry recorder.

Baselines, measured in the same run:
- get_history(n): a numpy copy of the same bytes (n frames) into a preallocated array;
- recorder: numpy.save of the same frames to the same folder (frames/s and MB/s).

Prints one JSON object per line (see benchmarks/_report.py).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _report import emit, machine, parser, timeit  # noqa: E402

import dao  # noqa: E402
from dao.latency import percentiles  # noqa: E402
from dao.streams.telemetry import Recorder  # noqa: E402
from dao.testing import temporary_stream_dir, unique_name  # noqa: E402

SHAPE = (64, 64)


def history(repeat: int) -> None:
    s = dao.shm(unique_name("hist"), np.zeros(SHAPE, np.float32), depth=1024)
    for k in range(1024):
        s.set_data(np.full(SHAPE, k, np.float32))
    for n in (16, 256, 1024):
        out = np.empty((n, *SHAPE), np.float32)
        src = np.random.default_rng(0).random((n, *SHAPE), dtype=np.float32)
        ours = timeit(lambda n=n, out=out: s.get_history(n, out=out), repeat)
        ref = timeit(lambda out=out, src=src: np.copyto(out, src), repeat)
        emit(f"get_history_{n}x64x64_float32", percentiles(ours, (50,))[0] * 1e6, "us",
             percentiles(ref, (50,))[0] * 1e6, baseline_name="numpy copy of the same bytes",
             p99=percentiles(ours * 1e6, [99])[0], baseline_p99=percentiles(ref * 1e6, [99])[0])
    s.delete()


def _hammer(path: str, n: int, go) -> None:
    s = dao.shm(path)
    frame = np.empty(s.shape, s.dtype)
    go.wait(60)
    for k in range(n):
        frame.fill(k)
        s.set_data(frame)


def recorder(n: int, folder: str) -> None:
    s = dao.shm(unique_name("rec"), np.zeros(SHAPE, np.float32), depth=n)
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    p = ctx.Process(target=_hammer, args=(s.path, n, go), daemon=True)
    p.start()
    time.sleep(1.0)
    out = os.path.join(folder, "bench.nc")
    rec = Recorder(s, out, frames=n, chunk=1024).start()
    go.set()
    res = rec.wait(600)
    p.join(60)
    frames = np.random.default_rng(1).random((n, *SHAPE), dtype=np.float32)
    t0 = time.perf_counter()
    np.save(os.path.join(folder, "bench.npy"), frames)
    t_save = time.perf_counter() - t0
    mb = frames.nbytes / 1e6
    emit("recorder_frames_per_s", res.frames[s.name] / res.seconds, "frames/s", n / t_save,
         baseline_name="numpy.save of the same frames", lost=res.lost[s.name], frames=n)
    emit("recorder_MB_per_s", mb / res.seconds, "MB/s", mb / t_save,
         baseline_name="numpy.save of the same frames")
    s.delete()


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    print(json.dumps(machine()), flush=True)
    with temporary_stream_dir(), tempfile.TemporaryDirectory(dir="/tmp") as folder:
        history(repeat=200 if args.quick else 2000)
        recorder(20_000 if args.quick else 100_000, folder)


if __name__ == "__main__":
    main()

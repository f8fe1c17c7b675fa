"""Benchmark of the AO numerics in :mod:`dao.recon` against numpy, in one run.

* memory read bandwidth (a threaded streaming sum far beyond cache) beside ``np.add.reduce``;
* the float32 MVM ``command = M @ slopes`` for 10x10 to 80x80 Shack-Hartmann systems
  (``2 * 0.8 n^2`` slopes, ``(n + 1)^2`` actuators) beside numpy/BLAS ``sgemv`` with the same
  threads, and its effective bandwidth (matrix bytes / time) beside the measured bandwidth;
* centroiding per frame, 10x10 to 80x80 subapertures of 8x8 pixels, beside vectorised numpy;
* the control step (leaky integrator with per-mode gains and clipping) beside numpy.

Usage: ``python benchmarks/numerics.py [--quick]`` (JSON lines on stdout).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numba  # noqa: E402
from _report import emit, machine, parser, timeit  # noqa: E402

from dao.latency import percentiles  # noqa: E402
from dao.recon import Integrator, ShackHartmann, circular_valid_mask, mvm  # noqa: E402
from dao.recon._jit import FASTMATH, jit, pjit  # noqa: E402

SIZES = (10, 20, 40, 80)


@jit(fastmath=FASTMATH)
def _sum_range(a, r0, r1):  # pragma: no cover - compiled
    s = np.float32(0.0)
    b = a[r0:r1]
    for j in range(b.size):
        s += b[j]
    return s


@pjit
def _stream_sum(a, acc):  # pragma: no cover - compiled
    n = a.size
    nch = acc.size
    for c in numba.prange(nch):
        acc[c] = _sum_range(a, n * c // nch, n * (c + 1) // nch)


def bandwidth(quick: bool) -> float:
    """Read bandwidth, GB/s: best of a threaded streaming sum over 256/512 MiB."""
    a = np.ones((64 if quick else 128) * 1024 * 1024, dtype=np.float32)
    acc = np.zeros(numba.get_num_threads() * 4, dtype=np.float32)
    t = timeit(lambda: _stream_sum(a, acc), repeat=5 if quick else 15, warmup=2)
    tn = timeit(lambda: np.add.reduce(a), repeat=3 if quick else 8, warmup=1)
    ours = a.nbytes / percentiles(t, (50,))[0] / 1e9
    emit("memory_read_bandwidth", ours, "GB/s", a.nbytes / percentiles(tn, (50,))[0] / 1e9,
         baseline_name="np.add.reduce (one thread)", threads=numba.get_num_threads(),
         bytes=a.nbytes)
    return ours


def bench_mvm(n: int, bw: float, quick: bool) -> None:
    n_slopes, n_act = int(2 * 0.8 * n * n), (n + 1) ** 2
    rng = np.random.default_rng(n)
    m = rng.standard_normal((n_act, n_slopes), dtype=np.float32)
    s = rng.standard_normal(n_slopes, dtype=np.float32)
    out = np.empty(n_act, dtype=np.float32)
    out_np = np.empty(n_act, dtype=np.float32)
    big = m.nbytes > 64e6
    rep = (20 if big else 300) if quick else (100 if big else 3000)
    ours, base = [], []
    for _ in range(3):  # interleave to share the machine's noise
        # pause between blocks: OpenBLAS's threads spin for a while after a call and would
        # otherwise take the cores from whichever block runs next
        time.sleep(0.3)
        ours.append(timeit(lambda: mvm(m, s, out), rep // 3, warmup=3))
        time.sleep(0.3)
        base.append(timeit(lambda: np.dot(m, s, out=out_np), rep // 3, warmup=3))
    ours, base = np.concatenate(ours) * 1e6, np.concatenate(base) * 1e6
    assert np.allclose(out, out_np, rtol=1e-3, atol=1e-3 * np.abs(out_np).max())
    p_o, p_b = percentiles(ours, (50, 99)), percentiles(base, (50, 99))
    emit(f"mvm_{n}x{n}", p_o[0], "us", p_b[0], p99=p_o[1], baseline_p99=p_b[1],
         baseline_name="numpy/OpenBLAS sgemv", shape=[n_act, n_slopes],
         threads=numba.get_num_threads(), n=ours.size)
    emit(f"mvm_{n}x{n}_bandwidth", m.nbytes / p_o[0] / 1e3, "GB/s", bw,
         baseline_name="memory_read_bandwidth", matrix_bytes=m.nbytes,
         beyond_cache=bool(m.nbytes > 32 * 2**20),
         numpy_GBps=round(m.nbytes / p_b[0] / 1e3, 2))


def np_centroid(frame, n, valid, xw, method, thr=8.0, weights=None, nb=8):
    """Vectorised numpy centroiding of a regular grid of 8x8 subapertures."""
    sub = frame.reshape(n, 8, n, 8).transpose(0, 2, 1, 3)[valid]  # (k, 8, 8)
    flux = sub.sum(axis=(1, 2))
    if method == "tcog":
        sub = np.maximum(sub - thr, 0)
    elif method == "wcog":
        sub = sub * weights
    elif method == "brightest":
        flat = sub.reshape(len(sub), 64)
        t = -np.partition(-flat, nb, axis=1)[:, nb]
        sub = np.maximum(sub - t[:, None, None], 0)
    s = sub.sum(axis=(1, 2))
    x = sub.sum(axis=1) @ xw / s
    y = sub.sum(axis=2) @ xw / s
    return np.concatenate([x, y]), flux


def np_correlate(frame, n, valid, ref, search=2):
    """Vectorised numpy correlation centroiding (same algorithm as the kernel)."""
    sub = frame.reshape(n, 8, n, 8).transpose(0, 2, 1, 3)[valid].astype(np.float64)
    ns = 2 * search + 1
    c = np.empty((len(sub), ns, ns))
    for a in range(ns):
        dy = a - search
        for b in range(ns):
            dx = b - search
            i0, i1, j0, j1 = max(0, dy), min(8, 8 + dy), max(0, dx), min(8, 8 + dx)
            c[:, a, b] = (sub[:, i0:i1, j0:j1]
                          * ref[i0 - dy : i1 - dy, j0 - dx : j1 - dx]).sum(axis=(1, 2))
    k = c.reshape(len(sub), -1).argmax(axis=1)
    bi, bj = np.clip(k // ns, 1, ns - 2), np.clip(k % ns, 1, ns - 2)
    idx = np.arange(len(sub))
    lc = np.log(np.maximum(c, 1e-30))
    dy = 0.5 * (lc[idx, bi - 1, bj] - lc[idx, bi + 1, bj]) / (
        lc[idx, bi - 1, bj] - 2 * lc[idx, bi, bj] + lc[idx, bi + 1, bj])
    dx = 0.5 * (lc[idx, bi, bj - 1] - lc[idx, bi, bj + 1]) / (
        lc[idx, bi, bj - 1] - 2 * lc[idx, bi, bj] + lc[idx, bi, bj + 1])
    return np.concatenate([bj - search + dx, bi - search + dy])


def bench_centroid(n: int, methods, quick: bool) -> None:
    valid = circular_valid_mask(n, 0.1)
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[:8, :8] - 3.5
    spot = np.exp(-(xx**2 + yy**2) / (2 * 1.2**2))
    frame = np.tile(spot * 500, (n, n)) + rng.normal(0, 3, (8 * n, 8 * n))
    frame = frame.astype(np.float32)
    xw = np.arange(8) - 3.5
    for method in methods:
        sh = ShackHartmann.from_valid_mask(valid, 8, method=method, threshold=8.0, n_bright=8)
        if method == "correlation":
            def base(sh=sh):
                return np_correlate(frame, n, valid, sh.reference[0])
        else:
            def base(sh=sh, method=method):
                return np_centroid(frame, n, valid, xw, method, 8.0, sh.weights[0], 8)
        rep_o = (200 if n < 80 else 100) if quick else 2000
        rep_b = (30 if n < 80 else 10) if quick else 200
        t_o = timeit(lambda sh=sh: sh.measure(frame), rep_o, warmup=5) * 1e6
        t_b = timeit(base, rep_b, warmup=2) * 1e6
        ref = base()
        ref = ref[0] if isinstance(ref, tuple) else ref
        err = float(np.abs(sh.slopes - ref).max())
        p_o, p_b = percentiles(t_o, (50, 99)), percentiles(t_b, (50, 99))
        emit(f"centroid_{method}_{n}x{n}", p_o[0], "us", p_b[0], p99=p_o[1],
             baseline_p99=p_b[1], baseline_name="vectorised numpy", n_subapertures=int(
                 valid.sum()), max_abs_diff_px=round(err, 6), threads=numba.get_num_threads())


def bench_control(quick: bool) -> None:
    n = 81 * 81
    rng = np.random.default_rng(0)
    g = rng.uniform(0.2, 0.5, n).astype(np.float32)
    ctl = Integrator(n, gain=g, leak=0.99, stroke=1.0)
    e = rng.normal(0, 0.01, n).astype(np.float32)
    c = np.zeros(n, np.float32)
    tmp = np.empty(n, np.float32)

    def numpy_step():
        np.multiply(g, e, out=tmp)
        np.multiply(c, np.float32(0.99), out=c)
        np.subtract(c, tmp, out=c)
        np.clip(c, -1.0, 1.0, out=c)

    rep = 2000 if quick else 20000
    t_o = timeit(lambda: ctl.step(e), rep, warmup=10) * 1e6
    t_b = timeit(numpy_step, rep, warmup=10) * 1e6
    p_o, p_b = percentiles(t_o, (50, 99)), percentiles(t_b, (50, 99))
    emit("control_step_integrator_6561", p_o[0], "us", p_b[0], p99=p_o[1], baseline_p99=p_b[1],
         baseline_name="numpy ufuncs with out=", n_actuators=n)


def compile_times() -> None:
    """First-call time of the kernels in this process (cache load or compile)."""
    from dao.recon import Pyramid, pupil_indices

    t0 = time.perf_counter()
    m = np.ones((16, 16), np.float32)
    mvm(m, np.ones(16, np.float32), np.empty(16, np.float32))
    t1 = time.perf_counter()
    ShackHartmann.from_valid_mask(np.ones((2, 2), bool), 8).measure(np.ones((16, 16),
                                                                            np.float32))
    t2 = time.perf_counter()
    Pyramid(pupil_indices((20, 20), [(5, 15), (15, 15), (5, 5), (15, 5)], 3)).measure(
        np.ones((20, 20), np.float32))
    t3 = time.perf_counter()
    print(f'{{"name": "first_call_s", "mvm": {t1 - t0:.3f}, "centroid_cog": {t2 - t1:.3f}, '
          f'"pyramid": {t3 - t2:.3f}}}', flush=True)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    import json

    print(json.dumps({**machine(), "numba_threads": numba.get_num_threads(),
                      "threading_layer_env": os.environ.get("NUMBA_THREADING_LAYER", "default"),
                      "openblas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS", "all")}),
          flush=True)
    compile_times()
    bw = bandwidth(args.quick)
    for n in SIZES:
        bench_mvm(n, bw, args.quick)
    methods = ("cog",) if args.quick else ("cog", "tcog", "wcog", "brightest", "correlation")
    for n in SIZES:
        bench_centroid(n, methods, args.quick)
    if args.quick:
        bench_centroid(40, ("tcog", "brightest", "correlation"), args.quick)
    bench_control(args.quick)


if __name__ == "__main__":
    main()

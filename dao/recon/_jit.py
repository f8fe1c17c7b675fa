"""Numba compilation settings shared by every kernel of :mod:`dao.recon`.

All kernels are compiled with ``cache=True`` (the machine code is stored next to the sources,
or under ``NUMBA_CACHE_DIR`` when that is set, so a new process only loads it) and
``nogil=True`` (a real-time thread can run them while other Python threads keep going).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba

__all__ = ["FASTMATH", "jit", "pjit", "nrt_allocations", "numba_threads"]

#: Fast-math flags for reductions: re-association (so LLVM keeps several independent partial
#: sums in vector registers), FMA contraction, signed zeros and reciprocal approximations.
#: ``nnan``/``ninf`` are left out on purpose: NaN and infinity still propagate.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def jit(fn=None, *, fastmath=False):
    """``numba.njit(cache=True, nogil=True)``, serial."""
    deco = numba.njit(cache=True, nogil=True, fastmath=fastmath)
    return deco if fn is None else deco(fn)


def pjit(fn=None, *, fastmath=False):
    """``numba.njit(cache=True, nogil=True, parallel=True)``: kernels with a ``prange`` loop."""
    deco = numba.njit(cache=True, nogil=True, parallel=True, fastmath=fastmath)
    return deco if fn is None else deco(fn)


def nrt_allocations() -> int:
    """Number of arrays allocated so far by compiled code (Numba runtime statistics).

    Calling a compiled function from Python wraps each array argument in a small Numba
    "MemInfo" record (about 64 bytes, freed on return, no data copied): that counts as one
    allocation per array argument. Anything beyond that is an allocation made by the kernel;
    the tests use this to check that the loop kernels make none.
    """
    from numba.core.runtime import _nrt_python, rtsys

    _nrt_python.memsys_enable_stats()  # idempotent; counting starts at the first reading
    return int(rtsys.get_allocation_stats().alloc)


@contextlib.contextmanager
def numba_threads(n: int) -> Iterator[int]:
    """Run the block with Numba's parallel kernels on ``n`` threads (at most
    ``NUMBA_NUM_THREADS``, at least 1); the number before is restored after. Yields the
    number set.

    On a machine whose other cores are busy (a loop's processes), fewer threads are faster:
    with every core's thread, a parallel kernel called between other work waits for workers
    that are descheduled. On 2 cores, a 40x40 interaction matrix took 26 s with 2 threads
    and 10 s with 1.
    """
    before = numba.get_num_threads()
    k = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(k)
    try:
        yield k
    finally:
        numba.set_num_threads(before)

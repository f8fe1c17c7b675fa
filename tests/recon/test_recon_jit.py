"""dao.recon._jit.numba_threads: the parallel kernels' thread count for a block, restored."""

from __future__ import annotations

import numba
import pytest

from dao.recon._jit import numba_threads


def test_threads_set_for_the_block_and_restored():
    top = numba.config.NUMBA_NUM_THREADS
    before = numba.get_num_threads()
    with numba_threads(1) as k:
        assert k == 1 and numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with numba_threads(10 * top) as k:  # clamped to what Numba started with
        assert k == top == numba.get_num_threads()
    with numba_threads(0) as k:  # at least one
        assert k == 1
    with pytest.raises(RuntimeError, match="inside"), numba_threads(1):
        raise RuntimeError("raised inside")
    assert numba.get_num_threads() == before


def test_loop_calibration_runs_on_the_components_threads(monkeypatch):
    """dao.loop.calibration.calibrate measures with the loop's kernel_threads."""
    from dao.loop import calibration
    from dao.loop.aoloop import kernel_threads
    from dao.loop.config import load_loop_config

    seen = []
    monkeypatch.setattr(calibration, "_measure",
                        lambda cfg, path: seen.append(numba.get_num_threads()))
    calibration.calibrate(load_loop_config(None, bench={"n_subap": 10}))
    assert seen == [min(kernel_threads(), numba.config.NUMBA_NUM_THREADS)]
    calibration.calibrate(load_loop_config(None, bench={"n_subap": 10},
                                           run={"kernel_threads": 1}))
    assert seen[-1] == 1

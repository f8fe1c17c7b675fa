"""MVM against numpy in float64: relative error <= 1e-5 of |M| @ |x| (float32 partial sums)."""

import numpy as np
import pytest

from dao.recon import MatrixVectorMultiply, mvm, mvm_serial
from dao.recon._jit import nrt_allocations


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (121, 160), (441, 640), (1000, 97), (9, 9000)])
def test_mvm_matches_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    m = rng.standard_normal(shape, dtype=np.float32)
    x = rng.standard_normal(shape[1], dtype=np.float32)
    ref = m.astype(np.float64) @ x
    scale = np.abs(m).astype(np.float64) @ np.abs(x)
    for fn in (mvm, mvm_serial):
        out = np.full(shape[0], np.nan, np.float32)
        assert fn(m, x, out) is None
        assert np.all(np.abs(out - ref) <= 1e-5 * scale)


def test_mvm_allocates_nothing_and_class_returns_out():
    """Per call only the 3 argument wrappers (one per array passed from Python, no data)."""
    rng = np.random.default_rng(0)
    for shape in [(121, 160), (441, 640), (1681, 2560)]:
        r = MatrixVectorMultiply(rng.standard_normal(shape))
        x = rng.standard_normal(shape[1]).astype(np.float32)
        nrt_allocations()
        r(x)
        before = nrt_allocations()
        for _ in range(5):
            y = r(x)
        assert nrt_allocations() - before == 5 * 3
        assert y is r.out
        ref = r.matrix.astype(np.float64) @ x
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.abs(ref).max() + 1e-4)

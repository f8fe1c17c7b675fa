"""Closed calibration test on a known linear system.

The "sensor" is ``s = D c + s0 + q (D c)^2 + noise`` (static aberration ``s0``, a quadratic
non-linearity ``q`` that push-pull cancels). Stated errors: the measured interaction matrix
is within 1e-9 (noise-free) / 2% RMS (noisy) of ``D``; the control matrix reconstructs known
modes with relative error < 1e-6 (all modes kept) and < 2% with the noisy matrix.
"""

import numpy as np
import pytest

from dao.recon import (
    control_matrix_svd,
    control_matrix_tikhonov,
    hadamard,
    measure_interaction_matrix,
)


def _system(n_slopes=120, n_act=37, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n_slopes, n_act))
    s0 = rng.normal(size=n_slopes)
    calls = []

    def measure(cmd):
        calls.append(cmd.copy())
        lin = d @ cmd.astype(np.float64)
        return lin + s0 + 0.05 * lin**2 + rng.normal(0, noise, n_slopes)

    return d, measure, calls


def test_hadamard_orthogonal():
    h = hadamard(16)
    np.testing.assert_array_equal(h @ h.T, 16 * np.eye(16))
    with pytest.raises(ValueError):
        hadamard(12)


@pytest.mark.parametrize("pattern", ["hadamard", "identity"])
def test_interaction_matrix_recovered(pattern):
    d, measure, calls = _system()
    im = measure_interaction_matrix(measure, 37, 0.1, pattern=pattern, progress=False)
    np.testing.assert_allclose(im, d, atol=1e-9)
    n_pokes = 64 if pattern == "hadamard" else 37
    assert len(calls) == 2 * n_pokes + 1 and not calls[-1].any()  # mirror left flat


def test_hadamard_beats_identity_with_noise():
    errs = {}
    for pattern in ["hadamard", "identity"]:
        d, measure, _ = _system(noise=0.05, seed=1)
        im = measure_interaction_matrix(measure, 37, 0.1, pattern=pattern, progress=False)
        errs[pattern] = np.sqrt(np.mean((im - d) ** 2))
    assert errs["hadamard"] < errs["identity"] and errs["hadamard"] < 0.2


def test_control_matrix_reconstructs_modes():
    d, measure, _ = _system()
    im = measure_interaction_matrix(measure, 37, 0.1, progress=True)
    cm = control_matrix_svd(im)
    assert cm.n_modes == 37 and cm.matrix.shape == (37, 120)
    sv = np.linalg.svd(d, compute_uv=False)
    np.testing.assert_allclose(cm.singular_values, sv, rtol=1e-8)
    assert cm.condition_number == pytest.approx(sv[0] / sv[-1], rel=1e-8)
    modes = np.random.default_rng(5).normal(size=(37, 5))
    rec = cm.matrix.astype(np.float64) @ (d @ modes)
    assert np.linalg.norm(rec - modes) / np.linalg.norm(modes) < 1e-5


def test_svd_cutoff_and_tikhonov():
    rng = np.random.default_rng(2)
    u, _ = np.linalg.qr(rng.normal(size=(60, 10)))
    v, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    s = np.logspace(0, -6, 10)
    d = u @ np.diag(s) @ v.T
    cut = control_matrix_svd(d, n_modes=7)
    assert cut.n_modes == 7 and cut.condition_number == pytest.approx(1e4, rel=1e-6)
    # the 7 kept modes are reconstructed exactly, the others not at all
    np.testing.assert_allclose(cut.matrix @ (d @ v[:, :7]), v[:, :7], atol=1e-4)
    assert np.abs(cut.matrix @ (d @ v[:, 9])).max() < 1e-4
    tik = control_matrix_tikhonov(d, alpha=1e-3)
    assert tik.n_modes == 5  # singular values above alpha: 1, 0.22, 0.046, 0.01, 0.0022
    assert tik.condition_number < 1.1e3
    np.testing.assert_allclose(tik.matrix @ (d @ v[:, 0]), v[:, 0], atol=1e-5)

"""Modal bases and the modal reconstructor."""

import numpy as np
import pytest

from dao.recon import (
    ModalReconstructor,
    dm_modes,
    gaussian_influence_functions,
    karhunen_loeve,
    noll_to_nm,
    pupil_grid,
    von_karman_covariance,
    zernike,
)


def test_noll_indices():
    assert [noll_to_nm(j) for j in range(1, 12)] == [
        (0, 0), (1, 1), (1, -1), (2, 0), (2, -2), (2, 2), (3, -1), (3, 1), (3, -3), (3, 3),
        (4, 0)]


def test_zernike_orthonormal_on_disc():
    z = zernike(15, 128)
    _, _, mask = pupil_grid(128)
    zz = z[:, mask]
    gram = zz @ zz.T / mask.sum()
    assert np.abs(gram - np.eye(15)).max() < 0.02  # pixelisation of a 128-pixel disc
    # tip (j=2) is x: proportional to the column coordinate
    x = (np.arange(128) + 0.5) / 64 - 1
    np.testing.assert_allclose(z[1][mask], (2 * np.broadcast_to(x, (128, 128)))[mask])


def test_von_karman_limits():
    assert von_karman_covariance(np.array([0.0]), 0.1, 20.0)[0] == pytest.approx(
        0.0863 * 200 ** (5 / 3), rel=2e-3)
    # structure function -> Kolmogorov 6.88 (r/r0)^(5/3) with the finite-L0 correction
    r0, L0 = 0.1, 1e4
    r = np.array([0.001, 0.01, 0.05])
    dfun = 2 * (von_karman_covariance(np.array([0.0]), r0, L0)
                - von_karman_covariance(r, r0, L0))
    kolmo = 6.88 * (r / r0) ** (5 / 3) * (1 - 1.485 * (r / L0) ** (1 / 3))
    np.testing.assert_allclose(dfun, kolmo, rtol=2e-3)


def test_dm_modes_and_kl():
    infl, mask, pos = gaussian_influence_functions(9, 40)
    modes, cmds, sv = dm_modes(infl)
    n = modes.shape[1]
    np.testing.assert_allclose(modes.T @ modes / infl.shape[0], np.eye(n), atol=1e-8)
    f0 = infl - infl.mean(axis=0)
    np.testing.assert_allclose(f0 @ cmds, modes, atol=1e-6)
    c = (np.arange(40) + 0.5) / 40 * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    coords = np.stack([yy[mask], xx[mask]], axis=1) * 4.0  # 8 m pupil
    kl, coef, var = karhunen_loeve(infl, coords, r0=0.15, L0=25.0, n_modes=20)
    np.testing.assert_allclose(kl.T @ kl / kl.shape[0], np.eye(20), atol=1e-6)
    assert np.all(np.diff(var) <= 1e-9) and var[0] > 10 * var[19]
    np.testing.assert_allclose(infl @ coef, kl, atol=1e-8)
    # the two most energetic KL modes are tip and tilt
    tt = zernike(2, 40, first=2)[:, mask].T
    proj = np.linalg.lstsq(tt, kl[:, :2], rcond=None)[0]
    assert np.linalg.norm(tt @ proj - kl[:, :2]) / np.linalg.norm(kl[:, :2]) < 0.2
    # KL modes are (nearly) uncorrelated under the model: variances sum to the projected one
    assert var.sum() > 0


def test_modal_reconstructor():
    rng = np.random.default_rng(4)
    s2m = rng.normal(size=(6, 30))
    m2c = rng.normal(size=(12, 6))
    g = np.array([1, 0.5, 0.5, 0.2, 0.2, 0.0])
    rec = ModalReconstructor(s2m, m2c, gains=g)
    s = rng.normal(size=30).astype(np.float32)
    out = rec(s)
    assert out is rec.commands
    np.testing.assert_allclose(out, m2c @ (g * (s2m @ s)), rtol=1e-4, atol=1e-4)

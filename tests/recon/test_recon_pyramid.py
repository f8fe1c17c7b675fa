"""Pyramid processing against numpy (1e-5 relative), on a synthetic four-pupil frame."""

import numpy as np

from dao.recon import Pyramid, pupil_indices


def _setup(seed=0):
    centers = [(12, 36), (36, 36), (12, 12), (36, 12)]  # I1 (+x,+y) ... I4 (-x,-y)
    idx = pupil_indices((48, 48), centers, 9.5, obscuration=0.2)
    frame = np.random.default_rng(seed).gamma(3.0, 20.0, (48, 48)).astype(np.float32)
    quads = frame.ravel()[idx].astype(np.float64)
    return idx, frame, quads


def test_slopes_local_and_global_match_numpy():
    idx, frame, (a, b, c, d) = _setup()
    tot = a + b + c + d
    for mode, norm in [("slopes", tot), ("slopes_global", tot.mean())]:
        p = Pyramid(idx, mode)
        s = p.measure(frame)
        np.testing.assert_allclose(s, np.concatenate([(a + b - c - d) / norm,
                                                      (a - b + c - d) / norm]), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(p.flux, tot.mean(), rtol=1e-6)
        np.testing.assert_allclose(p.pixel_flux, tot, rtol=1e-6)
        p.calibrate_reference(frame)
        np.testing.assert_allclose(p.measure(frame), 0, atol=1e-6)


def test_intensities_match_numpy():
    idx, frame, quads = _setup(1)
    p = Pyramid(idx, "intensities")
    out = p.measure(frame)
    ref = (quads / quads.sum(axis=0).mean()).ravel()
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    assert abs(out.sum() - idx.shape[1]) < 1e-2


def test_quadrant_convention_sign():
    idx, frame, _ = _setup()
    frame[:] = 1.0
    frame.ravel()[idx[0]] = 3.0  # brighter I1 at (+x, +y): both slopes positive
    s = Pyramid(idx).measure(frame)
    n = idx.shape[1]
    assert np.all(s[:n] > 0) and np.all(s[n:] > 0)

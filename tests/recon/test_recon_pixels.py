"""Pixel kernels against numpy: float32 results equal to numpy's float32 within 1e-6 relative."""

import numpy as np

from dao.recon import (
    apply_threshold,
    calibrate,
    descramble,
    extract_region,
    extract_regions,
    multi_output_pixel_map,
    scramble,
    subtract_dark,
)


def _frames(shape, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 4000, shape).astype(np.uint16)
    dark = rng.normal(100, 5, shape).astype(np.float32)
    gain = rng.normal(1, 0.05, shape).astype(np.float32)
    bg = rng.normal(10, 1, shape).astype(np.float32)
    return raw, dark, gain, bg


def test_calibrate_matches_numpy_small_and_large():
    for shape in [(24, 24), (400, 320)]:  # serial and threaded paths
        raw, dark, gain, bg = _frames(shape)
        out = np.empty(shape, np.float32)
        calibrate(raw, dark, gain, bg, 500.0, out)
        ref = (raw.astype(np.float32) - dark) * gain - bg
        ref = np.where(ref >= 500.0, ref, 0)
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-3)
        subtract_dark(raw, dark, out)
        np.testing.assert_allclose(out, raw - dark, rtol=1e-6)


def test_threshold_keep_and_subtract():
    img = np.random.default_rng(1).normal(0, 10, (16, 16)).astype(np.float32)
    out = np.empty_like(img)
    apply_threshold(img, 3.0, False, out)
    np.testing.assert_array_equal(out, np.where(img < 3, 0, img))
    apply_threshold(img, 3.0, True, out)
    np.testing.assert_allclose(out, np.maximum(img - 3, 0))


def test_descramble_inverts_multi_output_readout():
    pmap = multi_output_pixel_map(240, 240, 4, 2, prescan=6)
    n_raw = 240 * 240 + 6 * 8 * 120
    assert np.unique(pmap).size == pmap.size and pmap.max() < n_raw
    img = np.random.default_rng(2).integers(0, 2**14, (240, 240)).astype(np.uint16)
    raw = np.zeros(n_raw, np.uint16)
    scramble(img, pmap, raw)
    # the stream interleaves the 8 outputs: its first 8 pixels are the 8 tiles' first reads
    assert raw[0] == 0  # prescan
    first = raw[6 * 8 : 7 * 8]
    assert first[0] == img[0, 0] and first[3] == img[0, 239] and first[4] == img[239, 0]
    out = np.empty((240, 240), np.float32)
    descramble(raw, pmap, out)
    np.testing.assert_array_equal(out, img)


def test_extract_regions():
    img = np.arange(100.0).reshape(10, 10)
    corners = np.array([[0, 0], [2, 5], [6, 6]])
    out = np.empty((3, 4, 4))
    extract_regions(img, corners, out)
    for k, (y, x) in enumerate(corners):
        np.testing.assert_array_equal(out[k], img[y : y + 4, x : x + 4])
    one = np.empty((3, 2))
    extract_region(img, 4, 7, one)
    np.testing.assert_array_equal(one, img[4:7, 7:9])

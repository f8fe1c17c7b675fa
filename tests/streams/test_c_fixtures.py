"""Streams written by the Durham C library itself (tests/fixtures/dao-c-streams) read by dao.

Each fixture is copied to a temporary folder under a new name: opening must not depend on the
/tmp path stored inside.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import dao
from dao.testing import unique_name

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dao-c-streams"
NAMES = sorted(p.name[: -len(".im.shm")] for p in FIXTURES.glob("*.im.shm"))


def expected(name: str) -> dict[str, str]:
    lines = (FIXTURES / f"{name}.expected.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def frame_values(k: int, n: int, dtype: np.dtype) -> np.ndarray:
    """Frame k as the C writer made it: element i = k*1000 + i with C conversion rules."""
    re = (k * 1000 + np.arange(n)).astype(np.int64)
    if dtype.kind == "c":
        return re.astype(np.float64) + 1j * (re + 0.5)
    return re.astype(dtype)  # integer conversion wraps like C


def test_fixtures_are_present():
    assert len(NAMES) == 6, f"fixtures not found in {FIXTURES}"


@pytest.fixture(params=NAMES)
def fixture_copy(request, stream_dir):
    name = request.param
    new = unique_name(name[:6])
    dst = os.path.join(stream_dir, new + ".im.shm")
    shutil.copyfile(FIXTURES / f"{name}.im.shm", dst)
    os.chmod(dst, 0o600)
    return name, dst


def test_read_what_the_c_library_wrote(fixture_copy):
    name, path = fixture_copy
    exp = expected(name)
    s = dao.shm(path)
    shape = tuple(int(v) for v in exp["size"].split(","))[: int(exp["naxis"])]
    assert s.shape == shape
    assert s.dtype == np.dtype(exp["dtype"])
    assert s.depth == int(exp["fifo_size"])
    m = s.get_meta_data()
    for key in ("naxis", "atype", "nelement", "sem", "NBkw", "shared", "fifo_size",
                "fifo_last_written", "cnt0", "cnt1", "cnt2", "write", "atime_ns"):
        want = int(exp[key])
        got = s.get_meta_data(0)[key] if key == "sem" else m[key]
        assert got == want, key
    assert m["name"] == exp["name"]  # the stored name is kept, though we opened elsewhere
    assert abs(m["creation_time"] - float(exp["creation_time"])) < 1e-5
    assert os.path.getsize(path) == int(exp["memsize"])
    assert s.get_counter() == int(exp["cnt0"])

    newest = s.get_data()
    flat = newest.reshape(-1)
    assert flat.real.sum() == pytest.approx(float(exp["checksum"]))
    assert flat[0].real == float(exp["first_element"])
    assert flat[-1].real == float(exp["last_element"])
    if "checksum_im" in exp:
        assert flat.imag.sum() == pytest.approx(float(exp["checksum_im"]))

    for slot in range(s.depth):
        info = s.get_meta_data(slot)
        assert info["cnt0"] == int(exp[f"slot{slot}.cnt0"])
        assert info["write"] == int(exp[f"slot{slot}.write"])
        assert info["atime_ns"] == int(exp[f"slot{slot}.atime_ns"])
        frame = s._frames[slot].reshape(-1)
        assert frame.real.sum() == pytest.approx(float(exp[f"slot{slot}.checksum"]))
        want = frame_values(info["cnt0"] - 1, frame.size, s.dtype)
        np.testing.assert_array_equal(frame, want)


def test_dao_continues_a_c_written_stream(fixture_copy):
    name, path = fixture_copy
    exp = expected(name)
    s = dao.shm(path)
    before = s.get_counter()
    last = int(exp["fifo_last_written"])
    frame = np.ones(s.shape, s.dtype)
    s.set_data(frame)
    assert s.get_counter() == before + 1
    m = s.get_meta_data()
    assert m["slot"] == (last + 1) % s.depth == m["fifo_last_written"]
    np.testing.assert_array_equal(dao.shm(path).get_data(), frame)

"""Any bytes in place of a stream file give a clear exception, never a crash (hypothesis)."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dao
from dao.testing import unique_name

EXPECTED = (dao.StreamError, ValueError, OSError)


def _valid_stream_bytes(depth: int) -> bytes:
    path = os.path.join(os.environ["DAO_SHM_DIR"], "fuzzsrc.im.shm")
    s = dao.shm(path, np.arange(6, dtype=np.float32).reshape(2, 3), depth=depth, nbkw=1)
    data = open(path, "rb").read()
    s.delete()
    return data


def _fresh_file(folder: str, blob: bytes) -> str:
    """A new file per example: rewriting a file that is still mapped would be a SIGBUS."""
    path = os.path.join(folder, unique_name("fz") + ".im.shm")
    with open(path, "wb") as f:
        f.write(blob)
    return path


def _exercise(path: str) -> None:
    try:
        s = dao.shm(path)
    except EXPECTED:
        return
    try:
        _read_all(s)
    finally:
        s.close()


def _read_all(s: dao.shm) -> None:
    # it opened: so it is a consistent stream, and every read must work (a slot whose write
    # flag is stuck set is reported, after a bounded wait)
    try:
        s.get_data()
    except dao.StreamError as e:
        assert "stayed under write" in str(e)
    s.get_meta_data()
    s.get_meta_data(s.depth - 1)
    dict(s.keywords)
    s.get_counter()
    _ = s.view


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=9000))
def test_random_bytes(stream_dir, blob):
    _exercise(_fresh_file(stream_dir, blob))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    depth=st.sampled_from([1, 3]),
    patches=st.lists(
        st.tuples(st.integers(0, 4400), st.binary(min_size=1, max_size=16)), max_size=4
    ),
    cut=st.one_of(st.none(), st.integers(0, 10000)),
)
def test_mutated_headers(stream_dir, depth, patches, cut):
    buf = bytearray(_valid_stream_bytes(depth))
    for off, b in patches:
        buf[off: off + len(b)] = b
    if cut is not None:
        del buf[cut:]
    _exercise(_fresh_file(stream_dir, bytes(buf)))

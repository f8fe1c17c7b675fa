"""Header bytes of streams written by dao, read with struct at the spec's offsets.

Independent of the C core and of dao.streams._layout: the offsets below are typed in from
shm-format.md.
"""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest

import dao

ATYPES = {1: "u1", 2: "i1", 3: "<u2", 4: "<i2", 5: "<u4", 6: "<i4", 7: "<u8", 8: "<i8",
          9: "<f4", 10: "<f8", 11: "<c8", 12: "<c16"}
META = 4304


def field(buf: bytes, slot: int, offset: int, fmt: str):
    return struct.unpack_from("<" + fmt, buf, slot * META + offset)[0]


@pytest.mark.parametrize("depth", [1, 4])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2)])
@pytest.mark.parametrize("atype", list(ATYPES))
def test_header_bytes(name, atype, shape, depth):
    dtype = np.dtype(ATYPES[atype])
    frames = [(np.arange(np.prod(shape)) + 10 * k).astype(dtype).reshape(shape)
              for k in range(3)]
    t0 = time.time()
    s = dao.shm(name, np.zeros_like(frames[0]), depth=depth, nbkw=2)  # no frame written
    s.set_data(frames[0])
    s.set_data(frames[1], cnt2=7)
    s.set_data(frames[2])
    t1 = time.time()
    buf = open(s.path, "rb").read()
    nel = int(np.prod(shape))
    fbytes = nel * dtype.itemsize
    assert len(buf) == depth * META + depth * fbytes + 2 * 120

    for k in range(depth):
        assert buf[k * META: k * META + 80].rstrip(b"\0") == s.path.encode()
        assert buf[k * META + len(s.path)] == 0
        assert field(buf, k, 80, "B") == len(shape)
        size = struct.unpack_from("<3I", buf, k * META + 84)
        assert size == tuple(shape) + (0,) * (3 - len(shape))
        assert field(buf, k, 96, "Q") == nel
        assert field(buf, k, 104, "B") == atype
        ct = field(buf, k, 112, "d")
        assert t0 - 1 <= ct <= t1 + 1 and field(buf, k, 120, "d") == ct
        assert field(buf, k, 128, "q") == 0  # atime_sec stays 0
        assert field(buf, k, 144, "B") == 1  # shared
        assert field(buf, k, 148, "H") == (10 if k == 0 else 0)
        assert field(buf, k, 176, "B") == 0  # write flag clear
        assert field(buf, k, 178, "H") == 2  # NBkw
        assert field(buf, k, 4296, "I") == (depth if k == 0 else 0)
        if k:
            assert field(buf, k, 4300, "I") == 0

    # three frames: frame j in slot j % depth with cnt0 = j + 1
    newest = 2 % depth
    assert field(buf, 0, 4300, "I") == newest
    for j in range(3):
        slot = j % depth
        if depth == 1 and j < 2:
            continue
        assert field(buf, slot, 152, "Q") == j + 1
        at = field(buf, slot, 136, "q")
        assert int(t0 * 1e9) - 10**9 <= at <= int(t1 * 1e9) + 10**9
        off = depth * META + slot * fbytes
        got = np.frombuffer(buf, dtype, count=nel, offset=off).reshape(shape)
        np.testing.assert_array_equal(got, frames[j])
    if depth == 4:
        assert field(buf, 1, 168, "Q") == 7  # cnt2 of frame 1
        assert field(buf, 3, 152, "Q") == 0  # never written
        assert field(buf, 0, 136, "q") < field(buf, 1, 136, "q") <= field(buf, 2, 136, "q")
    kw = depth * META + depth * fbytes
    for i in range(2):
        assert buf[kw + i * 120 + 16: kw + i * 120 + 17] == b"N"
    s.delete()


def test_new_stream_before_any_write(name):
    from dao import _shm

    path = os.path.join(os.environ["DAO_SHM_DIR"], name + ".im.shm")
    st = _shm.create(path, (2, 2), 9, depth=3)
    buf = open(path, "rb").read()
    assert [field(buf, k, 152, "Q") for k in range(3)] == [0, 0, 0]
    assert field(buf, 0, 4300, "I") == 2  # N - 1: the first write lands in slot 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    st.close()
    dao.remove(path)


def test_group_mode(name):
    s = dao.shm(name, np.zeros(2, np.float32), group=True)
    assert os.stat(s.path).st_mode & 0o777 == 0o660


def test_keyword_record_bytes(name):
    s = dao.shm(name, np.zeros(2, np.float32), nbkw=3)
    s.keywords.set("gain", 0.25, "loop gain")
    s.keywords.set("nact", 97)
    s.keywords.set("mode", "closed")
    buf = open(s.path, "rb").read()
    base = META + 8
    recs = [buf[base + i * 120: base + (i + 1) * 120] for i in range(3)]
    assert recs[0][:16].rstrip(b"\0") == b"gain" and recs[0][16:17] == b"D"
    assert struct.unpack_from("<d", recs[0], 24)[0] == 0.25
    assert recs[0][40:120].rstrip(b"\0") == b"loop gain"
    assert recs[1][16:17] == b"L" and struct.unpack_from("<q", recs[1], 24)[0] == 97
    assert recs[2][16:17] == b"S" and recs[2][24:40].rstrip(b"\0") == b"closed"

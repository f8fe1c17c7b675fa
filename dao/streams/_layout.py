"""The byte layout of DAO stream files as numpy dtypes, and the dtype <-> type-code tables.

These mirror ``kernels_ext/stream.h`` (the C core checks the same offsets at compile time) and
the spec ``shm-format.md``: a metadata block of 4304 bytes per FIFO slot, then the frames, then
120-byte keyword records.
"""

from __future__ import annotations

import numpy as np

__all__ = ["META_DTYPE", "KW_DTYPE", "META_SIZE", "KW_SIZE", "ATYPE_OF", "DTYPE_OF", "atype_of"]

META_SIZE = 4304
KW_SIZE = 120

_META_FIELDS = [
    ("name", "S80", 0),
    ("naxis", "u1", 80),
    ("size", ("<u4", (3,)), 84),
    ("nelement", "<u8", 96),
    ("atype", "u1", 104),
    ("creation_time", "<f8", 112),
    ("last_access", "<f8", 120),
    ("atime_sec", "<i8", 128),
    ("atime_ns", "<i8", 136),
    ("shared", "u1", 144),
    ("status", "u1", 145),
    ("logflag", "u1", 146),
    ("sem", "<u2", 148),
    ("cnt0", "<u8", 152),
    ("cnt1", "<u8", 160),
    ("cnt2", "<u8", 168),
    ("write", "u1", 176),
    ("NBkw", "<u2", 178),
    ("lastPos", "<u4", 180),
    ("lastNb", "<u4", 184),
    ("packetNb", "<u4", 188),
    ("packetTotal", "<u4", 192),
    ("lastNbArray", ("<u8", (512,)), 200),
    ("fifo_size", "<u4", 4296),
    ("fifo_last_written", "<u4", 4300),
]

#: One metadata block (one per FIFO slot).
META_DTYPE = np.dtype(
    {
        "names": [f[0] for f in _META_FIELDS],
        "formats": [f[1] for f in _META_FIELDS],
        "offsets": [f[2] for f in _META_FIELDS],
        "itemsize": META_SIZE,
    }
)

#: One keyword record; the three ``value_*`` fields overlay the same 16 bytes.
KW_DTYPE = np.dtype(
    {
        "names": ["name", "type", "value_i", "value_d", "value_s", "comment"],
        "formats": ["S16", "S1", "<i8", "<f8", "S16", "S80"],
        "offsets": [0, 16, 24, 24, 24, 40],
        "itemsize": KW_SIZE,
    }
)

#: DAO data type codes (spec section 4).
ATYPE_OF: dict[np.dtype, int] = {
    np.dtype(t): code
    for code, t in enumerate(
        ["u1", "i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8", "<c8", "<c16"],
        start=1,
    )
}
DTYPE_OF: dict[int, np.dtype] = {code: dt for dt, code in ATYPE_OF.items()}


def atype_of(dtype) -> int:
    """DAO type code of a numpy dtype.

    Raises
    ------
    TypeError
        For any dtype a DAO stream cannot hold (bool, float16, object, strings, structured,
        big-endian...), naming the twelve that it can.
    """
    dt = np.dtype(dtype)
    code = ATYPE_OF.get(dt.newbyteorder("<") if dt.byteorder == "=" else dt)
    if code is None:
        allowed = ", ".join(str(d) for d in ATYPE_OF)
        order = " (big-endian)" if dt.byteorder == ">" else ""
        raise TypeError(
            f"unsupported dtype {dt}{order}: DAO streams hold little-endian {allowed}; "
            "convert the data first, e.g. data.astype(np.float32)"
        )
    return code

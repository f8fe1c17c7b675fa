"""dao: a Python-first adaptive-optics real-time workbench.

Shared-memory image streams byte-compatible with the Durham AO (DAO) C library, with a C core
(:mod:`dao._shm`) under a Python API that keeps the Durham names::

    import numpy as np, dao
    s = dao.shm("wfs", np.zeros((64, 64), np.float32))   # creates /tmp/wfs.im.shm
    frame = dao.shm("wfs").get_data(check=True, timeout=1.0)
"""

from dao.errors import (
    DaoError,
    DaoWarning,
    SemaphoreConflictError,
    StreamError,
    StreamFormatError,
    StreamMismatchError,
    StreamNotFoundError,
    StreamTimeout,
)
from dao.shm import FrameInfo, Keywords, combine, list_streams, remove, shm, stream_path

__version__ = "0.1.0"

__all__ = [
    "DaoError",
    "DaoWarning",
    "FrameInfo",
    "Keywords",
    "SemaphoreConflictError",
    "StreamError",
    "StreamFormatError",
    "StreamMismatchError",
    "StreamNotFoundError",
    "StreamTimeout",
    "combine",
    "list_streams",
    "remove",
    "shm",
    "stream_path",
]

"""Streams: shared-memory image streams byte-compatible with the Durham AO (DAO) C library.

- :mod:`dao.streams.stream`: the :class:`shm` class (the Durham API plus Pythonic extras),
  keywords, listing and removal;
- :mod:`dao.streams.frames`: frames with their metadata (:class:`Frames`, :class:`Frame`);
- :mod:`dao.streams.labels`: labelled xarray views and histories;
- :mod:`dao.streams.telemetry`: recording streams to NetCDF, Zarr or FITS, and reading them;
- :mod:`dao.streams._layout`: the byte layout (the C core checks the same offsets when it
  is compiled).
"""

from dao.streams.frames import Frame, FrameInfo, Frames
from dao.streams.stream import Keywords, combine, list_streams, remove, shm, shm_dir, stream_path

__all__ = [
    "Frame",
    "FrameInfo",
    "Frames",
    "Keywords",
    "combine",
    "list_streams",
    "remove",
    "shm",
    "shm_dir",
    "stream_path",
]

"""Frames with their metadata: what a stream's FIFO reads return.

A :class:`Frames` batch holds the data of consecutive frames of one stream with, per frame, the
counters and write time from its slot's header; :class:`Frame` is one frame read by a cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["Frame", "FrameInfo", "Frames"]


class FrameInfo(NamedTuple):
    """Counters and timestamp of one frame, as read from its slot's header (see
    :attr:`dao.shm.last_read`)."""

    cnt0: int
    """Frame counter in the stream (the first frame written is 1)."""
    cnt2: int
    """Frame id of the source (e.g. the camera's frame number)."""
    time_ns: int
    """Write time, in integer ns since the epoch (CLOCK_REALTIME)."""
    slot: int
    """FIFO slot the frame was read from."""

    @property
    def counter(self) -> int:
        """Alias of :attr:`cnt0` (the Durham name, ``get_counter``)."""
        return self.cnt0

    @property
    def frame_id(self) -> int:
        """Alias of :attr:`cnt2` (the Durham name, ``get_frame_id``)."""
        return self.cnt2

    @property
    def timestamp_ns(self) -> int:
        """Alias of :attr:`time_ns`."""
        return self.time_ns


class Frame(NamedTuple):
    """One frame read in order by a reader's cursor (see :meth:`dao.shm.iter_frames`)."""

    data: np.ndarray
    """The frame (a copy)."""
    cnt0: int
    """Frame counter in the stream (the first frame written is 1)."""
    cnt2: int
    """Frame id of the source (e.g. the camera's frame number)."""
    time_ns: int
    """Write time, in integer ns since the epoch (CLOCK_REALTIME)."""
    lost: int
    """Frames overwritten before they could be read, just before this one (0: none)."""


@dataclass(frozen=True, eq=False)
class Frames:
    """Consecutive frames of one stream, oldest first, with their metadata.

    Returned by :meth:`dao.shm.get_history` (``meta=True``), :meth:`dao.shm.read_new` and
    :meth:`dao.shm.history_metadata` (``data`` is None there).

    Attributes
    ----------
    data : numpy.ndarray or None
        ``(n, *shape)`` frames, in the stream's dtype.
    cnt0 : numpy.ndarray
        ``(n,)`` uint64 frame counters; consecutive (``cnt0[i + 1] == cnt0[i] + 1``).
    cnt2 : numpy.ndarray
        ``(n,)`` uint64 frame ids of the source (e.g. the camera frame each frame came from).
    time_ns : numpy.ndarray
        ``(n,)`` int64 write times, in ns since the epoch (CLOCK_REALTIME, the clock of the
        stream header's ``atime_ns``).
    lost : int
        Frames the writer overwrote before this reader could copy them, just before
        ``cnt0[0]`` (0 for a history: it is always complete).
    """

    data: np.ndarray | None
    cnt0: np.ndarray
    cnt2: np.ndarray
    time_ns: np.ndarray
    lost: int = 0

    def __len__(self) -> int:
        return int(self.cnt0.shape[0])

    @property
    def time(self) -> np.ndarray:
        """Write times as ``datetime64[ns]`` (UTC)."""
        return self.time_ns.astype("datetime64[ns]")

    @property
    def duration_s(self) -> float:
        """Time from the first frame's write to the last's, in seconds (0 for fewer than 2)."""
        if len(self) < 2:
            return 0.0
        return float(self.time_ns[-1] - self.time_ns[0]) * 1e-9

    def __iter__(self):
        raise TypeError(
            "a Frames batch is not a tuple: use its fields .data, .cnt0, .cnt2, .time_ns and "
            ".lost (get_history(n, meta=True) no longer returns (frames, counters, times)), "
            "or iterate over frames.data"
        )

    def __getitem__(self, index: slice) -> Frames:
        """A sub-batch: ``frames[-10:]`` (a slice only, so the frames stay consecutive)."""
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("Frames takes a slice with step 1, e.g. frames[-10:]")
        start = index.indices(len(self))[0]
        return Frames(
            None if self.data is None else self.data[index],
            self.cnt0[index],
            self.cnt2[index],
            self.time_ns[index],
            self.lost if start == 0 else 0,
        )

    def __repr__(self) -> str:
        if not len(self):
            return "<Frames: none>"
        shape = "" if self.data is None else f" of {self.data.shape[1:]} {self.data.dtype}"
        lost = f", {self.lost} lost before" if self.lost else ""
        return (f"<Frames {len(self)}{shape}: cnt0 {int(self.cnt0[0])}..{int(self.cnt0[-1])}, "
                f"{self.duration_s:.3g} s{lost}>")

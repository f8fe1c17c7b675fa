"""Shared-memory image streams, byte-compatible with the Durham AO (DAO) C library.

The :class:`shm` class keeps the Durham Python names (``set_data``, ``get_data``,
``get_counter``...) so Durham scripts run unchanged, and adds what a notebook user expects:
a context manager, properties, zero-copy views, keywords, semaphore claiming, deletion and clear
errors. The hot paths run in the C core :mod:`dao._shm` with the GIL released while waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import warnings
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import numpy as np

from dao import _shm
from dao.errors import (
    DaoWarning,
    SemaphoreConflictError,
    StreamError,
    StreamMismatchError,
    StreamNotFoundError,
    StreamTimeout,
)
from dao.streams._layout import DTYPE_OF, KW_DTYPE, META_DTYPE, META_SIZE, atype_of
from dao.streams.frames import Frame, FrameInfo, Frames

__all__ = [
    "shm",
    "Frame",
    "FrameInfo",
    "Frames",
    "Keywords",
    "stream_path",
    "list_streams",
    "remove",
    "combine",
]

SUFFIX = ".im.shm"
#: Where semaphores (and our claim and owner files) live on Linux.
SEM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
#: Default busy-spin budget of ``get_data(check=True, spin=True)``, in seconds.
SPIN_TIME = 0.01


def shm_dir() -> str:
    """The folder of streams given by bare name: ``$DAO_SHM_DIR``, default ``/tmp``."""
    return os.environ.get("DAO_SHM_DIR", "/tmp")


def stream_path(name: str | os.PathLike) -> str:
    """Full path of a stream.

    A bare name (no ``/``) becomes ``$DAO_SHM_DIR/<name>.im.shm``; anything else is made
    absolute.

    Raises
    ------
    ValueError
        If the path is 80 bytes or more (DAO keeps it in an 80-byte field).
    """
    p = os.fspath(name)
    if not p:
        raise ValueError("empty stream name")
    if "/" not in p:
        p = os.path.join(shm_dir(), p if p.endswith(SUFFIX) else p + SUFFIX)
    p = os.path.abspath(p)
    n = len(p.encode())
    if n >= 80:
        raise ValueError(
            f"stream path {p!r} is {n} bytes; DAO stores it in an 80-byte field, so it must be "
            "at most 79 bytes: use a shorter name or set DAO_SHM_DIR to a shorter folder"
        )
    return p


def _base(path: str) -> str:
    return _shm.semaphore_base(path)


def _owner_file(base: str) -> str:
    return os.path.join(SEM_DIR, f"dao.{base}.owner")


def _claim_file(base: str, index: int) -> str:
    return os.path.join(SEM_DIR, f"dao.{base}.sem{index:02d}.lock")


def _semaphore_users(path: str) -> list[str]:
    """Other existing streams whose semaphores would have the same names as ``path``'s."""
    base = _base(path)
    others = set()
    try:
        with open(_owner_file(base)) as f:
            owner = f.read().strip()
        if owner and owner != path and os.path.exists(owner):
            others.add(owner)
    except OSError:
        pass
    folder = os.path.dirname(path)
    for p in glob.glob(os.path.join(glob.escape(folder), glob.escape(base) + ".*")):
        if p != path and p.endswith(SUFFIX) and _base(p) == base:
            others.add(p)
    return sorted(others)


def _claim_owner(path: str) -> None:
    try:
        with open(_owner_file(_base(path)), "w") as f:
            f.write(path)
    except OSError:
        pass  # only a guard against conflicts; never a reason to fail a create


def list_streams(directory: str | os.PathLike | None = None) -> list[str]:
    """Paths of the stream files (``*.im.shm``) in a folder, sorted.

    Parameters
    ----------
    directory : str, optional
        Folder to list; default ``$DAO_SHM_DIR`` (``/tmp``).
    """
    folder = os.fspath(directory) if directory is not None else shm_dir()
    return sorted(glob.glob(os.path.join(glob.escape(folder), "*" + SUFFIX)))


def remove(name: str | os.PathLike) -> None:
    """Delete a stream: its file, its semaphores and dao's claim files.

    Works on damaged files too, since nothing is opened.

    Raises
    ------
    StreamNotFoundError
        If there is no such file.
    """
    path = stream_path(name)
    base = _base(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        raise StreamNotFoundError(2, f"no stream at {path}: nothing to remove") from None
    _shm.unlink_semaphores(base)
    owner = _owner_file(base)
    with contextlib.suppress(OSError):
        with open(owner) as f:
            if f.read().strip() == path:
                os.unlink(owner)
    for i in range(_shm.NSEM):
        with contextlib.suppress(OSError):
            os.unlink(_claim_file(base, i))
    with contextlib.suppress(OSError):
        os.unlink(path + ".xr.json")  # labels, see dao.streams.labels


def combine(sources: Sequence[shm], destination: shm) -> None:
    """Write into ``destination`` the sum of the newest frames of ``sources``.

    All streams must have the destination's shape and dtype; integer sums wrap as in C. Each
    source frame is read torn-free.
    """
    destination.combine(sources)


class Keywords(MutableMapping):
    """The keyword records of a stream, as a dict of ``name -> int | float | str``.

    Names are at most 15 ASCII characters; strings at most 15 bytes. The number of records is
    fixed when the stream is created (``nbkw``). Use :meth:`set` to store a comment too.
    """

    def __init__(self, records: np.ndarray, path: str):
        self._kw = records
        self._path = path

    def _find(self, name: str) -> int | None:
        key = name.encode()
        for i, r in enumerate(self._kw):
            if r["type"] != b"N" and r["type"] != b"\x00" and r["name"] == key:
                return i
        return None

    def __getitem__(self, name: str) -> int | float | str:
        i = self._find(name)
        if i is None:
            raise KeyError(name)
        r = self._kw[i]
        t = r["type"]
        if t == b"L":
            return int(r["value_i"])
        if t == b"D":
            return float(r["value_d"])
        return r["value_s"].decode(errors="replace")

    def comment(self, name: str) -> str:
        """The comment stored with keyword ``name``."""
        i = self._find(name)
        if i is None:
            raise KeyError(name)
        return self._kw[i]["comment"].decode(errors="replace")

    def set(self, name: str, value: int | float | str, comment: str = "") -> None:
        """Store keyword ``name`` with ``value`` and a ``comment`` (at most 79 bytes)."""
        key = name.encode()
        if not key or len(key) > 15 or not name.isascii():
            raise ValueError(f"keyword name {name!r}: 1 to 15 ASCII characters")
        c = comment.encode()
        if len(c) > 79:
            raise ValueError(f"keyword comment is {len(c)} bytes; at most 79")
        if isinstance(value, bool | np.bool_):
            value = int(value)
        if isinstance(value, int | np.integer):
            kind = b"L"
            if not -(2**63) <= int(value) < 2**63:
                raise ValueError(f"keyword {name}: {value} does not fit in an int64")
        elif isinstance(value, float | np.floating):
            kind = b"D"
        elif isinstance(value, str):
            kind = b"S"
            if len(value.encode()) > 15:
                raise ValueError(f"keyword {name}: string values are at most 15 bytes")
        else:
            raise TypeError(f"keyword {name}: values are int, float or str, not {type(value)}")
        i = self._find(name)
        if i is None:
            free = [j for j, r in enumerate(self._kw) if r["type"] in (b"N", b"\x00")]
            if not free:
                raise StreamError(
                    f"all {len(self._kw)} keyword records of {self._path} are used: delete one, "
                    "or re-create the stream with a larger nbkw"
                )
            i = free[0]
        r = self._kw[i : i + 1]
        r["value_s"] = b""
        if kind == b"L":
            r["value_i"] = int(value)
        elif kind == b"D":
            r["value_d"] = float(value)
        else:
            r["value_s"] = value.encode()
        r["name"] = key
        r["comment"] = c
        r["type"] = kind

    def __setitem__(self, name: str, value: int | float | str) -> None:
        i = self._find(name)
        self.set(name, value, self.comment(name) if i is not None else "")

    def __delitem__(self, name: str) -> None:
        i = self._find(name)
        if i is None:
            raise KeyError(name)
        self._kw[i : i + 1]["type"] = b"N"
        self._kw[i : i + 1]["name"] = b""

    def __iter__(self) -> Iterator[str]:
        for r in self._kw:
            if r["type"] in (b"L", b"D", b"S"):
                yield r["name"].decode(errors="replace")

    @property
    def capacity(self) -> int:
        """Number of keyword records of the stream (fixed at creation)."""
        return len(self._kw)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Keywords({dict(self)!r})"


class shm:  # noqa: N801 - the Durham name, kept so Durham scripts run unchanged
    """A shared-memory image stream, byte-compatible with the DAO C library.

    ``shm(path, data)`` creates a stream holding frames shaped like ``data``, with ``data`` as
    its initial content and no frame written yet (counter 0, as a stream the DAO C library
    creates); ``shm(path)`` opens an existing one.

    Parameters
    ----------
    path : str or os.PathLike
        Full path, or a bare name for ``$DAO_SHM_DIR/<name>.im.shm`` (default folder
        ``/tmp``). At most 79 bytes once expanded.
    data : array_like, optional
        Initial content: 1 to 3 axes, one of the 12 DAO dtypes. It is not a frame: the
        counter stays 0 and histories are empty until the first :meth:`set_data`. If a stream
        with the same shape, dtype and depth already exists at ``path``, it is reused (its
        readers stay attached, its counters go on, and ``data`` is written as a new frame);
        otherwise a new one replaces it.
    depth : int
        FIFO depth N: the stream keeps its last N frames. Default 1.
    nbkw : int
        Number of keyword records (fixed at creation). Default 16.
    group : bool
        Create the file and semaphores with group read/write access (mode 0660, not 0600).

    Raises
    ------
    StreamNotFoundError
        Opening a path where no stream exists.
    StreamFormatError
        Opening a file that is not a valid stream (empty, truncated, foreign, inconsistent).
    SemaphoreConflictError
        Creating a stream whose semaphore names another existing stream already uses.
    TypeError, ValueError
        Unsupported dtype, more than 3 axes, empty frames, a path of 80 bytes or more.
    PermissionError
        No permission on the file.

    Notes
    -----
    The DAO C library's opener refuses 1-D streams: give C consumers an ``(n, 1)`` shape.

    Examples
    --------
    >>> import numpy as np, dao
    >>> s = dao.shm("doc_example", np.zeros((4, 4), np.float32))
    >>> s.set_data(np.ones((4, 4), np.float32))
    >>> float(s.get_data().sum()), s.get_counter()
    (16.0, 1)
    >>> s.delete()
    """

    DAO_SUCCESS = _shm.SUCCESS
    DAO_ERROR = _shm.ERROR
    DAO_TIMEOUT = _shm.TIMEOUT
    DAO_OVERWRITE = _shm.OVERWRITE
    DAO_NOTREADY = _shm.NOTREADY

    def __init__(
        self,
        path: str | os.PathLike,
        data: Any = None,
        depth: int = 1,
        *,
        nbkw: int = 16,
        group: bool = False,
    ):
        self._s = None
        self._claim: tuple[int, int] | None = None
        self.spin_time = SPIN_TIME
        p = stream_path(path)
        if data is None:
            if not os.path.exists(p):
                raise StreamNotFoundError(
                    2, f"no stream at {p}: create it with dao.shm(path, data)"
                )
            self._s = _shm.open(p)
            others = _semaphore_users(p)
            if others:
                warnings.warn(
                    f"{p} shares its semaphore names with {', '.join(others)}: readers of one "
                    "are woken by writes to the other; rename one of them",
                    DaoWarning,
                    stacklevel=2,
                )
        else:
            reused = self._create(p, data, depth, nbkw, group)
        self._map()
        if data is not None:
            if reused:  # readers of the existing stream see the new data as a frame
                self.set_data(data)
            else:  # a new stream holds ``data`` but no frame yet, as one the C library made
                self._frames[self._stream.newest()] = np.asarray(data)
        self.reset_tail()

    # -- creation and mapping ----------------------------------------------------------------
    def _create(self, p: str, data: Any, depth: int, nbkw: int, group: bool) -> bool:
        """Create the stream at ``p``, or reuse one of the same geometry (then True)."""
        arr = np.asarray(data)
        atype = atype_of(arr.dtype)
        if not 1 <= arr.ndim <= 3:
            raise ValueError(
                f"a DAO stream has 1 to 3 axes; data has {arr.ndim} (shape {arr.shape}): "
                "reshape it, e.g. to (n, 1) for a scalar or vector"
            )
        if arr.size == 0:
            raise ValueError(f"cannot create a stream of empty frames (shape {arr.shape})")
        if int(depth) < 1:
            raise ValueError(f"FIFO depth must be at least 1, not {depth}")
        others = _semaphore_users(p)
        if others:
            raise SemaphoreConflictError(
                f"cannot create {p}: its semaphores would be named like those of "
                f"{', '.join(others)} (same base name {_base(p)!r}), so each stream's readers "
                "would be woken by the other's writes; choose another name or delete that stream"
            )
        with contextlib.suppress(StreamError, OSError):
            old = _shm.open(p)
            same = (
                old.depth == depth
                and self._geometry(old) == (tuple(arr.shape), DTYPE_OF[atype])
                and not old.readonly
            )
            if same:
                self._s = old
                _claim_owner(p)
                return True
            old.close()
        self._s = _shm.create(
            p, arr.shape, atype, depth=int(depth), nbkw=int(nbkw), mode=0o660 if group else 0o600
        )
        _claim_owner(p)
        return False

    @staticmethod
    def _geometry(s) -> tuple[tuple[int, ...], np.dtype]:
        m = np.frombuffer(s, dtype=META_DTYPE, count=1)[0]
        return tuple(int(v) for v in m["size"][: m["naxis"]]), DTYPE_OF[int(m["atype"])]

    def _map(self) -> None:
        s = self._s
        depth = s.depth
        self._meta = np.frombuffer(s, dtype=META_DTYPE, count=depth)
        shape, dtype = self._geometry(s)
        self._shape = shape
        self._dtype = dtype
        self._frames = np.frombuffer(
            s, dtype=dtype, count=depth * int(np.prod(shape)), offset=depth * META_SIZE
        ).reshape((depth, *shape))
        kw_offset = depth * (META_SIZE + s.frame_bytes)
        self._kw = np.frombuffer(s, dtype=KW_DTYPE, count=s.nbkw, offset=kw_offset)
        self.keywords = Keywords(self._kw, s.path)

    # -- properties ----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """Full path of the stream file."""
        return self._stream.path

    @property
    def name(self) -> str:
        """Base name of the stream (also that of its semaphores)."""
        return self._stream.base

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one frame."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the frames."""
        return self._dtype

    @property
    def depth(self) -> int:
        """FIFO depth: how many of the last frames the stream keeps."""
        return self._stream.depth

    @property
    def counter(self) -> int:
        """Frame counter (cnt0) of the newest frame: how many frames were written."""
        return self._stream.counter()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._s is None or self._s.closed

    @property
    def semaphore(self) -> int | None:
        """Semaphore index claimed by this reader with :meth:`claim_semaphore`, or None."""
        return self._claim[0] if self._claim else None

    @property
    def _stream(self):
        s = self._s
        if s is None or s.closed:
            raise StreamError("the stream is closed: open it again with dao.shm(path)")
        return s

    @property
    def last_read(self) -> FrameInfo:
        """Counter, frame id, timestamp and slot of the frame the last :meth:`get_data` read."""
        s = self._stream
        return FrameInfo(s.last_cnt0, s.last_cnt2, s.last_atime_ns, s.last_slot)

    @property
    def view(self) -> np.ndarray:
        """Zero-copy, read-only view of the newest frame.

        No copy is made, so a writer may change the frame while you read it (a torn read). For
        depth 1 the view always shows the live frame. Use :meth:`get_data` for a consistent
        copy.
        """
        v = self._frames[self._stream.newest()]
        v.flags.writeable = False
        return v

    # -- Durham API ----------------------------------------------------------------------------
    def set_data(self, data: Any, cnt2: int | None = None, atime_ns: int | None = None) -> None:
        """Write one frame and wake the readers.

        Parameters
        ----------
        data : array_like
            The frame; its shape and dtype must be the stream's.
        cnt2 : int, optional
            Frame id of the source (e.g. camera frame number), stored in cnt2.
        atime_ns : int, optional
            Timestamp in ns since the epoch (CLOCK_REALTIME); default now.

        Raises
        ------
        StreamMismatchError
            If the shape or dtype differ from the stream's.
        """
        s = self._stream
        if not isinstance(data, np.ndarray):
            data = np.asarray(data, dtype=self._dtype)
        if data.dtype != self._dtype or data.shape != self._shape:
            raise StreamMismatchError(
                f"{s.path} holds {self._dtype} frames of shape {self._shape}; got "
                f"{data.dtype} of shape {data.shape}: convert with "
                f"data.astype(np.{self._dtype.name}).reshape({self._shape})"
            )
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        s.write(data, -1 if cnt2 is None else cnt2, atime_ns or 0)

    def get_data(
        self,
        check: bool = False,
        semNb: int | None = None,  # noqa: N803 - Durham name
        timeout: float = 0,
        spin: bool = False,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read the newest frame, optionally waiting for a new one first.

        The copy is never torn: if a write overlaps it, it is made again.

        Parameters
        ----------
        check : bool
            Wait for a new frame before reading.
        semNb : int, optional
            Semaphore index (0-9) to wait on; default the one claimed with
            :meth:`claim_semaphore`, else 0. Each reader needs its own index.
        timeout : float
            Longest wait, in seconds; 0 waits until a frame comes (Ctrl-C interrupts).
        spin : bool
            Busy-spin on the frame counter (for :attr:`spin_time` seconds, then sleep on the
            semaphore) instead of sleeping on the semaphore: lower latency, burns a core.
        out : numpy.ndarray, optional
            Preallocated C-contiguous array of the stream's shape and dtype to read into, so
            the read allocates nothing.

        Returns
        -------
        numpy.ndarray
            The frame (``out`` if given).

        Raises
        ------
        StreamTimeout
            If no new frame came within ``timeout``.
        """
        s = self._stream
        if check:
            sem = semNb if semNb is not None else (self._claim[0] if self._claim else 0)
            t = timeout if timeout and timeout > 0 else None
            if spin:
                status = s.wait_counter(s.counter(), t, self.spin_time, sem)
            else:
                status = s.wait(sem, t)
            if status == _shm.TIMEOUT:
                raise StreamTimeout(
                    f"no new frame on {s.path} within {timeout} s "
                    f"({'spinning' if spin else f'semaphore {sem}'}): is its writer running?"
                )
        out = self._out(out)
        s.read(out)
        return out

    def get_counter(self) -> int:
        """Frame counter (cnt0) of the newest frame."""
        return self._stream.counter()

    def get_frame_id(self) -> int:
        """Frame id of the source (cnt2) of the newest frame."""
        return int(self._meta["cnt2"][self._stream.newest()])

    def get_timestamp(self) -> float:
        """Timestamp of the newest frame, in seconds since the epoch (CLOCK_REALTIME)."""
        return self.get_timestamp_ns() * 1e-9

    def get_timestamp_ns(self) -> int:
        """Timestamp of the newest frame, in integer ns since the epoch."""
        return int(self._meta["atime_ns"][self._stream.newest()])

    def get_meta_data(self, index: int | None = None) -> dict[str, Any]:
        """Every header field of a slot, as a dict.

        Parameters
        ----------
        index : int, optional
            FIFO slot; default the newest. ``fifo_size`` and ``fifo_last_written`` are always
            those of the stream (slot 0 holds them).
        """
        s = self._stream
        i = s.newest() if index is None else int(index) % s.depth
        m = self._meta[i].copy()
        out: dict[str, Any] = {}
        for field in META_DTYPE.names:
            v = m[field]
            if field == "name":
                out[field] = bytes(v).split(b"\0")[0].decode(errors="replace")
            elif field == "size":
                out[field] = tuple(int(x) for x in v)
            elif field == "lastNbArray":
                out[field] = np.array(v)
            else:
                out[field] = v.item()
        out["fifo_size"] = int(self._meta["fifo_size"][0])
        out["fifo_last_written"] = int(self._meta["fifo_last_written"][0])
        out["slot"] = i
        out["dtype"] = self._dtype
        out["shape"] = self._shape
        return out

    def close(self) -> None:
        """Close the stream in this process (the file and other processes are not touched)."""
        self.release_semaphore()
        if self._s is not None:
            self._s.close()

    # -- beyond the Durham API ------------------------------------------------------------------
    def delete(self) -> None:
        """Close the stream and delete its file, semaphores and claim files (if still there)."""
        path = self.path
        self.close()
        with contextlib.suppress(StreamNotFoundError):
            remove(path)

    def claim_semaphore(self, index: int | None = None) -> int:
        """Claim a semaphore index that no live process holds, for this reader.

        The claim is an advisory lock (``flock``) that the kernel drops when the process dies,
        so indexes of dead readers are reclaimed automatically. Index 0, the default of Durham
        readers, is claimed last. Stale posts on the claimed semaphore are drained.

        Parameters
        ----------
        index : int, optional
            Claim this index, or fail; default the first free one.

        Returns
        -------
        int
            The claimed index, used by :meth:`get_data` from now on.
        """
        s = self._stream
        if self._claim:
            return self._claim[0]
        order = [index] if index is not None else [*range(1, _shm.NSEM), 0]
        for i in order:
            if not 0 <= i < _shm.NSEM:
                raise ValueError(f"semaphore index {i} out of range 0-9")
            fd = os.open(_claim_file(s.base, i), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._claim = (i, fd)
            self.drain_semaphore(i)
            return i
        held = self.semaphore_claims()
        raise StreamError(
            f"semaphore index {index} of {s.path} is held by pid {held.get(index)}"
            if index is not None
            else f"all 10 semaphores of {s.path} are claimed by live processes {held}: "
            "close a reader first"
        )

    def drain_semaphore(self, index: int | None = None) -> None:
        """Clear stale posts of a semaphore (default: the claimed one, else 0).

        A semaphore is a "new frame" flag: a post made while nobody waited stays pending and
        wakes the next wait at once. Drain it to wait for a frame written from now on.
        """
        i = index if index is not None else (self._claim[0] if self._claim else 0)
        self._stream.drain(i)

    def release_semaphore(self) -> None:
        """Give back the semaphore index claimed with :meth:`claim_semaphore`."""
        if self._claim:
            os.close(self._claim[1])  # closing drops the flock
            self._claim = None

    def semaphore_claims(self) -> dict[int, int]:
        """Semaphore indexes claimed by live processes, as ``{index: pid}``."""
        base = self._stream.base
        out = {}
        for i in range(_shm.NSEM):
            try:
                fd = os.open(_claim_file(base, i), os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                pid = os.read(fd, 32).decode() or "0"
                out[i] = int(pid) if pid.isdigit() else -1
            finally:
                os.close(fd)
        return out

    @contextlib.contextmanager
    def writing(self, cnt2: int | None = None) -> Iterator[np.ndarray]:
        """Write the next frame in place, with no copy.

        Yields a writable view of the next FIFO slot; the frame is published (counter,
        timestamp, semaphores) when the block ends, or dropped if it raises.

        Examples
        --------
        >>> import numpy as np, dao
        >>> s = dao.shm("doc_inplace", np.zeros(3, np.float32))
        >>> with s.writing() as frame:
        ...     frame[:] = [1, 2, 3]
        >>> s.get_data().tolist(), s.get_counter()
        ([1.0, 2.0, 3.0], 2)
        >>> s.delete()
        """
        s = self._stream
        idx = s.begin_write()
        try:
            yield self._frames[idx]
        except BaseException:
            s.abort_write()
            raise
        s.finalize(-1 if cnt2 is None else cnt2, 0)

    def set_data_part(
        self, data: Any, position: int, packet_id: int, packet_total: int, frame_number: int
    ) -> None:
        """Write one packet of a frame (partial write), to be published by :meth:`finalize`.

        Parameters
        ----------
        data : array_like
            The packet's elements (stream dtype), placed at flat element ``position``.
        position : int
            Flat index of the packet's first element in the frame.
        packet_id, packet_total : int
            Id of this packet (0-511) and packets per frame, stored in packetNb/packetTotal.
        frame_number : int
            Frame the packet belongs to, stored in ``lastNbArray[packet_id]``.
        """
        arr = np.ascontiguousarray(data)
        if arr.dtype != self._dtype:
            raise StreamMismatchError(f"{self.path} holds {self._dtype}; packet is {arr.dtype}")
        self._stream.write_part(arr, position, packet_id, packet_total, frame_number)

    def finalize(self, cnt2: int | None = None) -> None:
        """Publish the frame assembled by :meth:`set_data_part` (counter, time, semaphores)."""
        self._stream.finalize(-1 if cnt2 is None else cnt2, 0)

    def combine(self, sources: Sequence[shm]) -> None:
        """Write into this stream the sum of the newest frames of ``sources``."""
        for src in sources:
            if src.shape != self.shape or src.dtype != self.dtype:
                raise StreamMismatchError(
                    f"cannot combine {src.path} ({src.dtype} {src.shape}) into {self.path} "
                    f"({self.dtype} {self.shape}): shapes and dtypes must match"
                )
        self._stream.combine([src._stream for src in sources])

    # -- FIFO reading (spec section 8) ---------------------------------------------------------
    def reset_tail(self) -> None:
        """Move this reader's FIFO cursor to the newest frame: the next frame read is the one
        written after it."""
        s = self._stream
        i = s.newest()
        self._tail = (i, int(self._meta["cnt0"][i]))

    def check_segment_overwrite(self) -> int:
        """``DAO_OVERWRITE`` if the slot under this reader's cursor is being rewritten or was
        rewritten since it was read, else ``DAO_SUCCESS``."""
        slot, cnt = self._tail
        m = self._meta[slot]
        if m["write"] or int(m["cnt0"]) != cnt:
            return self.DAO_OVERWRITE
        return self.DAO_SUCCESS

    @property
    def cursor(self) -> int:
        """cnt0 of the frame under this reader's FIFO cursor: the cursor reads
        (:meth:`get_data_next`, :meth:`read_new`) return the frames after it."""
        return self._tail[1]

    def wait_next(self, timeout: float | None = None, spin: bool = False) -> bool:
        """Wait until a frame after this reader's cursor is there, without reading it.

        Waits on the claimed semaphore (else 0) with the GIL released.

        Parameters
        ----------
        timeout : float, optional
            Longest wait in seconds (None: until a frame comes).
        spin : bool
            Busy-spin on the counter for :attr:`spin_time` seconds before sleeping.

        Returns
        -------
        bool
            True if a new frame is there, False on timeout.
        """
        s = self._stream
        cnt = self._tail[1]
        if s.counter() != cnt:
            return True
        sem = self._claim[0] if self._claim else 0
        return s.wait_counter(cnt, timeout, self.spin_time if spin else 0.0, sem) != _shm.TIMEOUT

    def get_data_next(
        self,
        wait: bool = False,
        timeout: float | None = None,
        spin: bool = False,
        *,
        out: np.ndarray | None = None,
    ) -> tuple[int, np.ndarray | None]:
        """Read the frame after this reader's cursor, in order, without missing one.

        Parameters
        ----------
        wait : bool
            If no new frame is there yet, wait for one (on the claimed semaphore, else 0).
        timeout : float, optional
            Longest wait in seconds; None waits until a frame comes (Ctrl-C interrupts).
        spin : bool
            Busy-spin on the counter for :attr:`spin_time` seconds before sleeping.
        out : numpy.ndarray, optional
            Preallocated frame to read into.

        Returns
        -------
        status : int
            ``DAO_SUCCESS`` (the next frame), ``DAO_OVERWRITE`` (the writer lapped this reader:
            frames were lost, and the cursor jumped to the newest frame, which is returned),
            ``DAO_NOTREADY`` (no new frame, not waiting) or ``DAO_TIMEOUT``.
        frame : numpy.ndarray or None
            The frame read, None for NOTREADY and TIMEOUT. Its counter and timestamp are in
            :attr:`last_read`.
        """
        s = self._stream
        slot, cnt = self._tail
        if s.counter() == cnt:
            if not wait:
                return self.DAO_NOTREADY, None
            sem = self._claim[0] if self._claim else 0
            t = timeout if timeout is not None and timeout >= 0 else None
            status = s.wait_counter(cnt, t, self.spin_time if spin else 0.0, sem)
            if status == _shm.TIMEOUT:
                return self.DAO_TIMEOUT, None
        out = self._out(out)
        nxt = (slot + 1) % s.depth
        got = s.read(out, nxt)
        if got == cnt + 1:
            self._tail = (nxt, got)
            return self.DAO_SUCCESS, out
        got = s.read(out, -1)  # lapped: resume on the newest frame
        self._tail = (s.last_slot, got)
        return self.DAO_OVERWRITE, out

    def read_new(self, max_frames: int | None = None, *, out: Frames | None = None) -> Frames:
        """Copy, in order, the frames after this reader's cursor, in one call.

        The batch form of :meth:`get_data_next`, for recorders: up to ``max_frames`` frames are
        copied torn-free with the GIL released, with their counters and write times, and the
        cursor advances past them. Returns at once (an empty batch if nothing is new).

        Parameters
        ----------
        max_frames : int, optional
            Most frames to copy; default the depth, or ``len(out)``.
        out : Frames, optional
            A preallocated batch (see :meth:`frames_buffer`) to copy into: nothing is
            allocated but the returned batch's views of its arrays.

        Returns
        -------
        Frames
            The frames copied, oldest first. ``lost`` counts frames the writer overwrote
            before they could be copied (the cursor then jumped to the newest frame, the
            first of the batch); 0 normally.
        """
        s = self._stream
        if out is None:
            out = self.frames_buffer(s.depth if max_frames is None else int(max_frames))
        elif out.data is None or out.data.dtype != self._dtype or out.data.shape[1:] != self._shape:
            raise StreamMismatchError(
                f"out must hold (k, *{self._shape}) frames of {self._dtype}: make it with "
                "frames_buffer(k)"
            )
        k = len(out) if max_frames is None else min(int(max_frames), len(out))
        slot, cnt = self._tail
        n = s.read_new(out.data[:k], slot, cnt, out.cnt0[:k], out.cnt2[:k], out.time_ns[:k])
        lost = 0
        if n < 0:  # lapped: resume on the newest frame
            got = s.read(out.data[0], -1)
            out.cnt0[0], out.cnt2[0], out.time_ns[0] = got, s.last_cnt2, s.last_atime_ns
            lost = got - cnt - 1
            self._tail = (s.last_slot, got)
            n = 1
        elif n:
            self._tail = ((slot + n) % s.depth, int(out.cnt0[n - 1]))
        return Frames(out.data[:n], out.cnt0[:n], out.cnt2[:n], out.time_ns[:n], lost)

    def frames_buffer(self, n: int) -> Frames:
        """An empty batch of ``n`` frames to read into with ``read_new(out=...)``."""
        if int(n) < 1:
            raise ValueError(f"a frame buffer holds at least 1 frame, not {n}")
        n = int(n)
        return Frames(np.empty((n, *self._shape), self._dtype), np.zeros(n, np.uint64),
                      np.zeros(n, np.uint64), np.zeros(n, np.int64))

    def get_data_arbitrary(self, index: int, *, out: np.ndarray | None = None) -> np.ndarray:
        """Read FIFO slot ``index % depth`` (a physical slot, not an age), torn-free."""
        s = self._stream
        out = self._out(out)
        s.read(out, int(index) % s.depth)
        return out

    @property
    def frames_available(self) -> int:
        """Frames a history can return now: the frames written, at most the depth."""
        return min(self.depth, self.get_counter())

    def get_history(
        self, n: int | None = None, *, out: np.ndarray | None = None, meta: bool = False
    ) -> np.ndarray | Frames:
        """The last ``n`` frames, oldest first, ending at the newest.

        The history is consistent: every frame is read torn-free and belongs to one run of
        consecutive counters; if the writer overwrites the oldest frames during the copy, the
        copy is made again from the new newest frame. It holds written frames only: never a
        slot that no write has filled yet.

        Parameters
        ----------
        n : int, optional
            Number of frames, 1 to :attr:`frames_available`; default all of them.
        out : numpy.ndarray, optional
            Preallocated ``(n, *shape)`` array to read into.
        meta : bool
            Return a :class:`Frames` batch: the frames with their ``cnt0``, ``cnt2`` and
            write times (ns since the epoch).

        Returns
        -------
        numpy.ndarray or Frames
            ``(n, *shape)`` frames, or the batch if ``meta``.

        Raises
        ------
        ValueError
            ``n`` is not 1 to the depth, or more frames than were written (none yet, say).
        StreamError
            The slot to copy stays under write: its writer died in the middle of a frame.
        """
        s = self._stream
        depth = s.depth
        have = self.frames_available
        n = have if n is None else int(n)
        if not 1 <= n <= depth:
            raise ValueError(f"history length must be 1 to the depth ({depth}), not {n}")
        if n > have:
            raise ValueError(
                f"{s.path} has {have} frame(s) to give, not {n}: ask for at most "
                "frames_available, or wait for the writer"
            )
        if out is not None and (out.shape != (n, *self._shape) or out.dtype != self._dtype):
            raise StreamMismatchError(f"out must be {(n, *self._shape)} of {self._dtype}")
        data = np.empty((n, *self._shape), self._dtype) if out is None else out
        cnt0, cnt2, times = np.empty(n, np.uint64), np.empty(n, np.uint64), np.empty(n, np.int64)
        for _ in range(100):
            newest = s.newest()
            last = int(self._meta["cnt0"][newest])
            # one C call copies frames last-n+1 ... last in order, checking each counter
            got = s.read_new(data, (newest - n) % depth, last - n, cnt0, cnt2, times)
            if got == n:
                return Frames(data, cnt0, cnt2, times) if meta else data
            # the writer overwrote the oldest frames during the copy: start again
        raise StreamError(f"{s.path} is written faster than its history can be copied")

    def history_metadata(self, n: int | None = None) -> Frames:
        """Counters and write times of the last ``n`` frames, without copying their data.

        A :class:`Frames` batch whose ``data`` is None; ``n`` defaults to
        :attr:`frames_available` (fewer are never returned silently: see
        :meth:`get_history`). The header fields are read as a seqlock: a set that the writer
        changed during the read is read again.
        """
        depth, have = self.depth, self.frames_available
        n = have if n is None else int(n)
        if not 0 <= n <= have:
            raise ValueError(f"{self.path} has {have} frame(s) to give, not {n}")
        m = self._meta
        for _ in range(100):
            newest = self._stream.newest()
            slots = (newest - n + 1 + np.arange(n)) % depth
            cnt0 = m["cnt0"][slots]
            cnt2, times, writing = m["cnt2"][slots], m["atime_ns"][slots], m["write"][slots]
            ok = (not writing.any() and np.array_equal(m["cnt0"][slots], cnt0)
                  and (n == 0 or int(cnt0[-1]) - int(cnt0[0]) == n - 1))
            if ok:
                return Frames(None, cnt0.astype(np.uint64), cnt2.astype(np.uint64),
                              times.astype(np.int64))
        raise StreamError(f"{self.path} is written faster than its metadata can be read")

    def iter_frames(
        self, timeout: float | None = None, spin: bool = False
    ) -> Iterator[Frame]:
        """Yield every new frame in order, as :class:`Frame` (data, cnt0, cnt2, time_ns, lost).

        Starts after the newest frame at the time of the call; ``lost`` counts frames the
        writer overwrote before they could be read (the FIFO was too shallow). Stops when no
        frame comes within ``timeout`` seconds (None: never stops by itself).
        """
        self.reset_tail()
        return self._follow(timeout, spin)

    def _follow(self, timeout: float | None, spin: bool) -> Iterator[Frame]:
        while True:
            prev = self._tail[1]
            status, frame = self.get_data_next(wait=True, timeout=timeout, spin=spin)
            if status == self.DAO_TIMEOUT:
                return
            st = self._stream
            cnt = self._tail[1]
            yield Frame(frame, cnt, st.last_cnt2, st.last_atime_ns, cnt - prev - 1)

    # -- labelled views (dao.streams.labels) -----------------------------------------------------
    def set_labels(self, dims, coords=None, attrs=None, name=None) -> None:
        """Store dims, coordinates and attributes of the frames; see
        :func:`dao.streams.labels.set_labels`.

        Examples
        --------
        >>> import numpy as np, dao
        >>> s = dao.shm("doc_slopes", np.zeros((2, 5), np.float32))
        >>> s.set_labels(("axis", "subaperture"), coords={"axis": ["x", "y"]},
        ...              attrs={"units": "pixel"})
        >>> dao.shm("doc_slopes").to_xarray().dims
        ('axis', 'subaperture')
        >>> s.delete()
        """
        from dao.streams import labels

        labels.set_labels(self, dims, coords, attrs, name)

    def to_xarray(self, copy: bool = False):
        """The newest frame as a labelled :class:`xarray.DataArray` (see
        :func:`dao.streams.labels.view`)."""
        from dao.streams import labels

        return labels.view(self, copy=copy)

    def history_xarray(self, n: int | None = None):
        """The last ``n`` frames as a DataArray with ``frame``, ``cnt0`` and ``time``."""
        from dao.streams import labels

        return labels.history(self, n)

    def _out(self, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            return np.empty(self._shape, self._dtype)
        if out.dtype != self._dtype or out.shape != self._shape or not out.flags.c_contiguous:
            raise StreamMismatchError(
                f"out must be a C-contiguous {self._dtype} array of shape {self._shape}"
            )
        return out

    def __enter__(self) -> shm:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<dao.shm (closed)>"
        return (
            f"<dao.shm {self.path} shape={self.shape} dtype={self.dtype} depth={self.depth} "
            f"counter={self.counter}>"
        )


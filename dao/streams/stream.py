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
import itertools
import math
import os
import stat
import time
import warnings
import weakref
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from dao import _shm
from dao.errors import (
    DaoWarning,
    NotAStreamError,
    SemaphoreConflictError,
    StreamBusyError,
    StreamError,
    StreamMismatchError,
    StreamNotFoundError,
    StreamTimeout,
)
from dao.streams._files import (
    RefusedFile,
    open_checked,
    open_private,
    read_private,
    write_private,
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
    "remove_dead",
    "dead_streams",
    "DeadStream",
    "stream_holders",
    "StreamHolders",
    "combine",
    "read_private",
    "write_private",
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


# -- files beside a stream: owner, claims, labels (see dao.streams._files) --------------------


def _stream_uid(path: str) -> int | None:
    """Owner of the stream file at ``path`` (without following a link), or None."""
    try:
        return os.lstat(path).st_uid
    except OSError:
        return None


def _read_owner(base: str, other_uid: int | None = None) -> tuple[str, int | None] | None:
    """(stream path, pid of its last writer) from the owner file of ``base``, or None."""
    text = read_private(_owner_file(base), other_uid)
    if not text:
        return None
    lines = text.splitlines()
    pid = lines[1].strip() if len(lines) > 1 else ""
    return lines[0].strip(), int(pid) if pid.isdigit() else None


def _open_owner(path: str) -> int | None:
    """Open (or create, mode 0600) the owner file of the stream at ``path``, before creating
    the stream. An owner file of the user who owns the stream file there (another member of
    the group of a ``group=True`` stream) is trusted. None when it cannot be used (no
    /dev/shm, or the owner file of another user's stream is not writable: it is only a guard,
    never a reason to fail); StreamError when it is a symbolic link or a stranger's file."""
    try:
        fd = open_private(_owner_file(_base(path)), other_uid=_stream_uid(path))
    except StreamError:
        raise
    except OSError:
        return None
    with contextlib.suppress(OSError):
        _shm.hold_pid(fd)  # live from now on: remove_dead leaves a stream being created alone
    return fd


def _record_owner(fd: int | None, path: str) -> int | None:
    """Record this process as a writer of the stream at ``path`` in its owner file ``fd``: the
    path and our pid, and the liveness lock of our pid (see :func:`stream_holders`). Returns
    the descriptor that holds the lock (close it to detach), or None."""
    if fd is None:
        return None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{path}\n{os.getpid()}\n".encode(), 0)
        _shm.hold_pid(fd)
    except OSError:
        os.close(fd)
        return None
    return fd


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` runs (a zombie, dead but not yet reaped, counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _claims(base: str) -> dict[int, int]:
    """Semaphore indexes of ``base`` claimed by live processes, as ``{index: pid}``."""
    out = {}
    for i in range(_shm.NSEM):
        try:
            fd, _ = open_checked(_claim_file(base, i))
        except (OSError, StreamError):
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "0"
            out[i] = int(pid) if pid.isdigit() else -1
        finally:
            os.close(fd)
    return out


class StreamHolders(NamedTuple):
    """Who holds a stream: see :func:`stream_holders`."""

    owner: int | None
    """pid of the last process that created or reused the stream as a writer (owner file)."""
    writers: tuple[int, ...]
    """Live processes that hold the stream open as writers (created or reused it)."""
    readers: dict[int, int]
    """Semaphore indexes claimed by live readers, as ``{index: pid}``."""

    @property
    def dead_owner(self) -> bool:
        """True if the stream's last writer died and no live process writes it."""
        return self.owner is not None and not self.writers and not _pid_alive(self.owner)

    def others(self) -> list[str]:
        """The live holders other than this process, e.g. ``["pid 12 (writer)"]``."""
        me = os.getpid()
        out = [f"pid {p} (writer)" for p in self.writers if p != me]
        out += [f"pid {p} (reader on semaphore {i})" for i, p in self.readers.items() if p != me]
        return out

    def describe(self) -> str:
        """One word or so for ``dao ls``: writers' pids, a dead owner, or ``-``."""
        if self.writers:
            return "pid " + ",".join(map(str, self.writers))
        if self.dead_owner:
            return f"dead owner pid {self.owner}"
        return "-"


def stream_holders(name: str | os.PathLike) -> StreamHolders:
    """The live processes that write or read a stream, and its last writer.

    Writers (processes that created or reused the stream with ``dao.shm(path, data)``) hold a
    lock on the stream's owner file (``/dev/shm/dao.<base>.owner``) while their stream is
    open; readers that claimed a semaphore hold its claim file. The kernel drops both when a
    process dies, so only live processes are listed. Readers that did not claim a semaphore,
    and processes of the DAO C library, are not seen.
    """
    path = stream_path(name)
    base = _base(path)
    uid = _stream_uid(path)
    rec = _read_owner(base, uid)
    owner, writers = None, ()
    if rec is not None and rec[0] == path:
        owner = rec[1]
        try:
            fd, _ = open_checked(_owner_file(base), other_uid=uid)
        except (OSError, StreamError):
            fd = -1
        if fd >= 0:
            try:
                writers = tuple(_shm.pid_holders(fd))
            except OSError:
                writers = ()
            finally:
                os.close(fd)
    return StreamHolders(owner, writers, _claims(base))


def _semaphore_users(path: str) -> list[str]:
    """Other existing streams whose semaphores would have the same names as ``path``'s."""
    base = _base(path)
    others = set()
    rec = _read_owner(base)
    if rec and rec[0] and rec[0] != path and os.path.exists(rec[0]):
        others.add(rec[0])
    folder = os.path.dirname(path)
    for p in glob.glob(os.path.join(glob.escape(folder), glob.escape(base) + ".*")):
        if p != path and p.endswith(SUFFIX) and _base(p) == base:
            others.add(p)
    return sorted(others)


def list_streams(directory: str | os.PathLike | None = None) -> list[str]:
    """Paths of the stream files (``*.im.shm``) in a folder, sorted.

    Parameters
    ----------
    directory : str, optional
        Folder to list; default ``$DAO_SHM_DIR`` (``/tmp``).
    """
    folder = os.fspath(directory) if directory is not None else shm_dir()
    return sorted(glob.glob(os.path.join(glob.escape(folder), "*" + SUFFIX)))


def _read_headers(path: str) -> tuple[bytes, bytes]:
    """The header of slot 0 of the file at ``path`` and that of its newest slot (the same if
    slot 0 is the newest or the index is invalid; either is short if the file is truncated),
    read without following a link.

    Raises
    ------
    RefusedFile
        ``path`` is a symbolic link or not a regular file.
    OSError
        It cannot be read (``FileNotFoundError`` if it is missing).
    """
    fd, _ = open_checked(path, any_owner=True)
    try:
        head = newest = os.pread(fd, META_SIZE, 0)
        if len(head) == META_SIZE:
            m = np.frombuffer(head, META_DTYPE, count=1)[0]
            i = int(m["fifo_last_written"])
            if 0 < i < int(m["fifo_size"]):
                newest = os.pread(fd, META_SIZE, i * META_SIZE)
        return head, newest
    finally:
        os.close(fd)


def _check_is_stream(path: str) -> None:
    """Raise unless ``path`` is a stream file: a regular ``*.im.shm`` file (not a link) whose
    header parses (a NUL-terminated name, 1 to 3 axes of nonzero length, a DAO type code).
    Its size and counts are not checked, so truncated or damaged streams can be removed."""
    if not path.endswith(SUFFIX):
        raise NotAStreamError(
            f"{path} does not end with {SUFFIX}, so it is not a stream: dao removes streams "
            "only; delete other files yourself"
        )
    try:
        head, _ = _read_headers(path)
    except FileNotFoundError:
        raise StreamNotFoundError(2, f"no stream at {path}: nothing to remove") from None
    except RefusedFile as e:
        if e.link:
            raise NotAStreamError(
                f"{path} is a symbolic link, not a stream: dao does not remove links or what "
                "they point to; delete it yourself if you are sure"
            ) from None
        why = "not a regular file"
    else:
        why = None
        if len(head) < META_SIZE:
            why = f"{len(head)} bytes, less than one {META_SIZE}-byte header"
        else:
            m = np.frombuffer(head, META_DTYPE, count=1)[0]
            naxis, size = int(m["naxis"]), [int(v) for v in m["size"]]
            if b"\0" not in bytes(head[:80]):
                why = "its name field is not NUL-terminated"
            elif not 1 <= naxis <= 3 or int(m["atype"]) not in DTYPE_OF:
                why = "its header has no valid axis count or data type"
            elif 0 in size[:naxis] or any(size[naxis:]):
                why = "its header holds no valid shape"
    if why:
        raise NotAStreamError(
            f"{path} is not a DAO stream ({why}): dao removes streams only; delete it yourself "
            "if you are sure"
        )


def _last_written_ns(path: str) -> int:
    """When the stream at ``path`` was last written: its newest frame's time, or its creation
    time if later (no frame yet), in ns since the epoch; 0 if the header cannot be read."""
    try:
        head, newest = _read_headers(path)
    except (OSError, StreamError):
        return 0
    if len(head) < META_SIZE:
        return 0
    created = float(np.frombuffer(head, META_DTYPE, count=1)[0]["creation_time"])
    t = int(created * 1e9) if math.isfinite(created) and 0 < created < 1e11 else 0
    if len(newest) == META_SIZE:
        t = max(t, int(np.frombuffer(newest, META_DTYPE, count=1)[0]["atime_ns"]))
    return t


def remove(name: str | os.PathLike) -> None:
    """Delete a stream: its file, its semaphores, and dao's owner, claim and labels files.

    Only streams are deleted: a ``*.im.shm`` regular file whose header parses (a truncated
    stream is still removed). Semaphores are kept if another existing stream uses the same
    names (see :class:`SemaphoreConflictError`).

    Raises
    ------
    StreamNotFoundError
        If there is no such file.
    NotAStreamError
        If the file is not a stream (another suffix, a symbolic link, a foreign file).
    """
    path = stream_path(name)
    _check_is_stream(path)
    base = _base(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        raise StreamNotFoundError(2, f"no stream at {path}: nothing to remove") from None
    rec = _read_owner(base)
    if rec is not None and rec[0] != path and rec[0] and os.path.exists(rec[0]):
        pass  # another stream uses these semaphore names: they stay
    else:
        _remove_semaphores(base)
    with contextlib.suppress(OSError):
        os.unlink(path + ".xr.json")  # labels, see dao.streams.labels (unlink never follows)


def _remove_semaphores(base: str) -> None:
    """Unlink the semaphores of ``base`` and dao's owner and claim files for it (ours only)."""
    _shm.unlink_semaphores(base)
    for f in [_owner_file(base), *(_claim_file(base, i) for i in range(_shm.NSEM))]:
        with contextlib.suppress(OSError):
            st = os.lstat(f)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
                os.unlink(f)


#: Seconds since its last write under which :func:`remove_dead` keeps a dead-owned stream.
RECENT_WRITE_S = 10.0
#: Name prefix of the private folders of :class:`dao.loop.AOLoop` (``calibration.npz``;
#: older versions kept the loop's streams there too, now in ``$DAO_SHM_DIR``).
LOOP_FOLDER_PREFIX = "daoloop"


class DeadStream(NamedTuple):
    """A stream whose last dao writer is gone: see :func:`dead_streams`."""

    path: str
    """Full path of the stream file."""
    owner: int
    """pid of its last writer (dead)."""
    idle_s: float
    """Seconds since its newest frame was written (or it was created, if later)."""


def dead_streams(
    directory: str | os.PathLike | None = None, *, outside: bool = False
) -> list[DeadStream]:
    """The streams whose last dao writer is gone and that no live process holds.

    "Dead" means: the process that last created or reused the stream as a writer (recorded
    in dao's owner file) is gone, however it ended (a crash, SIGKILL, or a normal exit), and
    no live process writes it through dao or reads it on a claimed semaphore. Processes of
    the DAO C library and readers without a claim are not seen: look at ``idle_s`` (a stream
    still written has a small one).

    Parameters
    ----------
    directory : str, optional
        Folder of streams to look at; default ``$DAO_SHM_DIR`` (``/tmp``). Streams of this
        user elsewhere are found through dao's owner files (``/dev/shm/dao.<base>.owner``):
        those made with another ``$DAO_SHM_DIR``, say (or in the private ``/tmp/daoloop*``
        folder of a killed :class:`dao.loop.AOLoop` of an older version).
    outside : bool
        Only the streams outside ``directory``.

    Returns
    -------
    list of DeadStream
        Those of ``directory`` first (sorted), then the others.
    """
    folder = os.path.abspath(os.fspath(directory) if directory is not None else shm_dir())
    paths = [] if outside else list_streams(folder)
    inside = set(paths)
    for owner_file in sorted(glob.glob(os.path.join(glob.escape(SEM_DIR), "dao.*.owner"))):
        rec = _read_owner(os.path.basename(owner_file)[len("dao."): -len(".owner")])
        if rec is None or not rec[0] or rec[0] in inside:
            continue
        p = rec[0]
        with contextlib.suppress(OSError):
            st = os.lstat(p)
            if (os.path.dirname(p) != folder and p.endswith(SUFFIX) and stat.S_ISREG(st.st_mode)
                    and st.st_uid == os.getuid()):
                paths.append(p)
                inside.add(p)
    out = []
    now = time.time_ns()
    for p in paths:
        try:
            h = stream_holders(p)
        except (ValueError, OSError):
            continue
        if h.dead_owner and not h.others():
            last = _last_written_ns(p)
            out.append(DeadStream(p, h.owner, (now - last) * 1e-9 if last else math.inf))
    return out


def _remove_loop_folder(folder: str) -> bool:
    """Remove ``folder`` if it is the private folder of an AOLoop (``daoloop*``, this user's)
    that holds nothing but what a loop leaves besides its streams: ``calibration.npz``, and
    temporary or labels files of streams (``*.im.shm.*``). True if it was removed."""
    if not os.path.basename(folder).startswith(LOOP_FOLDER_PREFIX):
        return False
    try:
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return False
        files = []
        for entry in os.listdir(folder):
            p = os.path.join(folder, entry)
            st = os.lstat(p)
            known = entry == "calibration.npz" or (SUFFIX + "." in entry)
            if not known or not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                return False  # a stream, or a file dao did not make: the folder stays
            files.append(p)
        for p in files:
            os.unlink(p)
        os.rmdir(folder)  # fails if anything came meanwhile
    except OSError:
        return False
    return True


def remove_dead(
    directory: str | os.PathLike | None = None, *, force: bool = False
) -> list[tuple[str, int | None]]:
    """Remove what processes that died (SIGKILL, a crash) or exited left behind.

    - the streams of :func:`dead_streams`: those of ``directory``, and those of this user
      elsewhere known from dao's owner files (those of another ``$DAO_SHM_DIR``, say)
      whose last dao writer is gone (a normal exit counts too) and that no live process
      writes or reads (on a claimed semaphore), with their semaphores, owner, claim and labels
      files; unless ``force``, those written (or created) in the last
      :data:`RECENT_WRITE_S` seconds stay, since a DAO C-library process may write them;
    - an older AOLoop's private stream folder (``daoloop*``) that this left empty but for its
      ``calibration.npz`` and temporary or labels files of streams;
    - anywhere, the semaphores, owner and claim files of this user whose stream file is gone
      and whose last writer died;
    - in ``directory``, temporary files of stream creations that were killed
      (``<name>.im.shm.XXXXXX``, this user's, untouched for 10 minutes).

    Streams whose owner is unknown (made by the DAO C library, say) are left alone.

    Parameters
    ----------
    directory : str, optional
        Folder of the streams; default ``$DAO_SHM_DIR`` (``/tmp``).
    force : bool
        Remove dead-owned streams even if they were written lately.

    Returns
    -------
    list of (str, int or None)
        What was removed: a stream path, a folder (its path ends with ``/``),
        ``<semaphores of BASE>`` or a temporary file, with the dead owner's pid (None for a
        temporary file).
    """
    removed: list[tuple[str, int | None]] = []
    folder = os.fspath(directory) if directory is not None else shm_dir()
    for p in glob.glob(os.path.join(glob.escape(folder), "*" + SUFFIX + ".??????")):
        with contextlib.suppress(OSError):
            st = os.lstat(p)
            if (stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()
                    and time.time() - st.st_mtime > 600):
                os.unlink(p)
                removed.append((p, None))
    for d in dead_streams(folder):
        if d.idle_s < RECENT_WRITE_S and not force:
            continue
        try:
            remove(d.path)
        except (StreamError, OSError):
            continue
        removed.append((d.path, d.owner))
        loop = os.path.dirname(d.path)
        if _remove_loop_folder(loop):
            removed.append((loop + os.sep, d.owner))
    for owner in glob.glob(os.path.join(glob.escape(SEM_DIR), "dao.*.owner")):
        base = os.path.basename(owner)[len("dao."): -len(".owner")]
        rec = _read_owner(base)
        if rec is None or not rec[0] or os.path.exists(rec[0]):
            continue
        try:
            h = stream_holders(rec[0])
        except (ValueError, OSError):
            continue
        if h.dead_owner and not h.others():
            _remove_semaphores(base)
            removed.append((f"<semaphores of {base}>", h.owner))
    return removed


def _close_fds(fds: dict[str, int]) -> None:
    """Close the descriptors a :class:`shm` holds besides its mapping (by :meth:`shm.close`,
    or by its finalizer when it is dropped unclosed)."""
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.popitem()[1])


def combine(sources: Sequence[shm | str], destination: shm | str) -> None:
    """Write into ``destination`` the sum of the newest frames of ``sources``.

    Streams are open streams or names (opened for the call). All must have the destination's
    shape and dtype; integer sums wrap as in C. Each source frame is read torn-free.
    """
    with contextlib.ExitStack() as opened:
        def _open(s: shm | str) -> shm:
            return s if isinstance(s, shm) else opened.enter_context(shm(s))

        _open(destination).combine([_open(s) for s in sources])


def _timeout(timeout: float | None, zero_waits_forever: bool = False) -> float | None:
    """Check a timeout in seconds: None (or 0 if ``zero_waits_forever``) means no limit."""
    if timeout is None:
        return None
    t = float(timeout)
    if math.isnan(t) or t < 0:
        raise ValueError(
            f"timeout must be a number of seconds >= 0 (or None to wait without limit), "
            f"not {timeout!r}"
        )
    return None if t == 0 and zero_waits_forever else t


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
        otherwise a new one replaces it, unless live processes use it (see ``replace``).
    depth : int
        FIFO depth N: the stream keeps its last N frames. 1 to 2**32 - 1; default 1.
    nbkw : int
        Number of keyword records (fixed at creation), 0 to 65535. Default 16.
    group : bool
        Create the file and semaphores with group read/write access (mode 0660, not 0600).
    replace : bool
        Replace an existing stream of another geometry even if live processes (other than
        this one) still write it or read it on a claimed semaphore. Without it, that is
        refused with :class:`~dao.errors.StreamBusyError` naming their pids, since they would
        be left on the old, deleted stream (their waits then raise StreamError). Reusing a
        stream of the same geometry never orphans anyone, so it is always allowed.

    Raises
    ------
    StreamNotFoundError
        Opening a path where no stream exists.
    StreamFormatError
        Opening a file that is not a valid stream (empty, truncated, foreign, inconsistent).
    StreamBusyError
        Replacing a stream that live processes use, without ``replace=True``.
    SemaphoreConflictError
        Creating a stream whose semaphore names another existing stream already uses.
    StreamError
        A semaphore or owner file of the stream is a symbolic link or another user's.
    TypeError, ValueError
        Unsupported dtype, more than 3 axes, empty frames, a path of 80 bytes or more, a
        depth or a frame size too large to be stored.
    OSError
        No permission on the file (PermissionError); no room for the stream on its
        filesystem (errno ENOSPC: the whole file is reserved at creation).

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
        replace: bool = False,
    ):
        self._s = None
        self._claim: int | None = None  # semaphore index claimed by this reader
        self._sem = 0  # semaphore waited on by default: the claimed one, else 0
        # descriptors held besides the mapping: "owner" (this writer's liveness lock on the
        # owner file) and "claim" (the claim file's flock). Dropping the object without
        # close() releases them too, so a stream re-created in a notebook cell is not "busy".
        self._fds: dict[str, int] = {}
        weakref.finalize(self, _close_fds, self._fds)
        self._seen: int | None = None  # cnt0 of the last frame get_data returned
        self.spin_time = SPIN_TIME
        p = stream_path(path)
        try:
            if data is None:
                if not os.path.exists(p):
                    raise StreamNotFoundError(
                        2, f"no stream at {p}: create it with dao.shm(path, data)"
                    )
                self._s = _shm.open(p)
                others = _semaphore_users(p)
                if others:
                    warnings.warn(
                        f"{p} shares its semaphore names with {', '.join(others)}: readers of "
                        "one are woken by writes to the other; rename one of them",
                        DaoWarning,
                        stacklevel=2,
                    )
            else:
                reused = self._create(p, data, depth, nbkw, group, replace)
            self._map()
            if data is not None:
                if reused:  # readers of the existing stream see the new data as a frame
                    self.set_data(data)
                else:  # a new stream holds ``data`` but no frame yet, as one the C library made
                    self._frames[self._stream.newest()] = np.asarray(data)
            self.reset_tail()
        except BaseException:
            self.close()
            raise

    # -- creation and mapping ----------------------------------------------------------------
    def _create(
        self, p: str, data: Any, depth: int, nbkw: int, group: bool, replace: bool
    ) -> bool:
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
        depth = int(depth)
        if not 1 <= depth < 2**32:
            raise ValueError(f"FIFO depth must be 1 to 2**32 - 1 (a uint32), not {depth}")
        if not 0 <= int(nbkw) < 2**16:
            raise ValueError(f"nbkw must be 0 to 65535 (a uint16), not {nbkw}")
        if max(arr.shape) >= 2**32:
            raise ValueError(
                f"frame shape {arr.shape}: DAO stores each axis length in a uint32, so at most "
                "4294967295"
            )
        others = _semaphore_users(p)
        if others:
            raise SemaphoreConflictError(
                f"cannot create {p}: its semaphores would be named like those of "
                f"{', '.join(others)} (same base name {_base(p)!r}), so each stream's readers "
                "would be woken by the other's writes; choose another name or delete that stream"
            )
        owner = _open_owner(p)  # refused now if planted: before anything is created
        try:
            try:
                old = _shm.open(p)
            except (StreamError, OSError, ValueError):
                old = None
            if old is not None:
                same = (
                    old.depth == depth
                    and self._geometry(old) == (tuple(arr.shape), DTYPE_OF[atype])
                    and not old.readonly
                )
                if same:
                    self._s = old
                    self._hold("owner", _record_owner(owner, p))
                    owner = None
                    return True
                old.close()
            if not replace and os.path.lexists(p):
                busy = stream_holders(p).others()
                if busy:
                    raise StreamBusyError(
                        f"cannot create {p}: a stream of another geometry is there and live "
                        f"processes use it: {', '.join(busy)}. Stop them (or close the stream "
                        "there) first, or pass replace=True to replace it anyway (their waits "
                        "on the old stream will then raise StreamError)"
                    )
            self._s = _shm.create(
                p, arr.shape, atype, depth=depth, nbkw=int(nbkw), mode=0o660 if group else 0o600
            )
            self._hold("owner", _record_owner(owner, p))
            owner = None
            return False
        finally:
            if owner is not None:  # not recorded: creation failed
                with contextlib.suppress(OSError):
                    if os.fstat(owner).st_size == 0:  # a file this call made: no trace left
                        os.unlink(_owner_file(_base(p)))
                os.close(owner)

    def _hold(self, what: str, fd: int | None) -> None:
        """Keep descriptor ``fd`` (if any) until :meth:`close`, or until this object is
        dropped."""
        if fd is not None:
            self._fds[what] = fd

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
            s, dtype=dtype, count=depth * math.prod(shape), offset=depth * META_SIZE
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
        return self._claim

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
        timeout: float | None = 0,
        spin: bool = False,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read the newest frame, optionally waiting for a new one first.

        The copy is never torn: if a write overlaps it, it is made again.

        Parameters
        ----------
        check : bool
            Wait for a frame newer than the last one this object's ``get_data`` returned,
            then read the newest. A semaphore post that brings no newer frame (a stale post:
            the writer wrote while the previous call was copying) is consumed and the wait
            goes on, so a frame is never returned twice. Until this object returned a frame,
            any post will do, as in the Durham library.
        semNb : int, optional
            Semaphore index (0-9) to wait on; default the one claimed with
            :meth:`claim_semaphore`, else 0. Each reader needs its own index.
        timeout : float or None
            Longest wait, in seconds. 0 (the Durham default) or None waits until a frame comes
            (Ctrl-C interrupts). Negative or NaN: ValueError.
        spin : bool
            Busy-spin on the frame counter (for :attr:`spin_time` seconds, then sleep on the
            semaphore) instead of sleeping on the semaphore: lower latency, burns a core.
        out : numpy.ndarray, optional
            Preallocated C-contiguous array of the stream's shape and dtype to read into, so
            the read allocates nothing.

        Returns
        -------
        numpy.ndarray
            The frame (``out`` if given); its counter, frame id and time are in
            :attr:`last_read`.

        Raises
        ------
        StreamTimeout
            If no new frame came within ``timeout``.
        StreamError
            The stream was closed by another thread during the wait; or the newest slot
            stayed under write for :attr:`stuck_timeout` seconds with its counter unchanged
            (its writer died in the middle of a frame).
        ValueError
            A negative or NaN ``timeout``.
        """
        s = self._stream
        if check:
            sem = semNb if semNb is not None else self._sem
            t = _timeout(timeout, zero_waits_forever=True)
            seen = self._seen
            if seen is None and spin:
                seen = s.counter()
            status = s.wait_new(seen, t, self.spin_time if spin else 0.0, sem)
            if status == _shm.TIMEOUT:
                raise StreamTimeout(
                    f"no new frame on {s.path} within {timeout} s "
                    f"({'spinning' if spin else f'semaphore {sem}'}): is its writer running?"
                )
        out = self._out(out)
        self._seen = s.read(out)
        return out

    #: Bounds of :attr:`stuck_timeout`, in seconds.
    STUCK_TIMEOUT_RANGE = (1e-3, 1e6)

    @property
    def stuck_timeout(self) -> float:
        """Seconds a slot's write flag may stay set, with every counter unchanged, before a
        read decides that its writer died in the middle of the frame and raises StreamError
        (default 1 s; 1 ms to 1e6 s, about 11.6 days). Raise it for writers that keep a frame
        open longer (slow partial writes)."""
        return self._stream.stuck_ns * 1e-9

    @stuck_timeout.setter
    def stuck_timeout(self, seconds: float) -> None:
        lo, hi = self.STUCK_TIMEOUT_RANGE
        t = float(seconds)
        if not lo <= t <= hi:  # NaN too
            raise ValueError(
                f"stuck_timeout must be {lo:g} to {hi:g} seconds, not {seconds!r}"
            )
        self._stream.stuck_ns = int(t * 1e9)

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
        """Close the stream in this process (the file and other processes are not touched).

        Safe while other threads wait on or read this object: they raise StreamError ("closed
        while this call waited") within about 10 ms, and the semaphores are released once the
        last of them has left.
        """
        self.release_semaphore()
        _close_fds(self._fds)  # drops this writer's liveness lock
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

        The claim is an advisory lock (``flock``) on ``/dev/shm/dao.<base>.semNN.lock`` that
        the kernel drops when the process dies, so indexes of dead readers are reclaimed
        automatically. Index 0, the default of Durham readers, is claimed last. Stale posts on
        the claimed semaphore are drained. A claim file that is a symbolic link or another
        user's is refused (StreamError).

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
        if self._claim is not None:
            return self._claim
        order = [index] if index is not None else [*range(1, _shm.NSEM), 0]
        for i in order:
            if not 0 <= i < _shm.NSEM:
                raise ValueError(f"semaphore index {i} out of range 0-9")
            fd = open_private(_claim_file(s.base, i))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._hold("claim", fd)
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._claim = self._sem = i
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
        i = index if index is not None else self._sem
        self._stream.drain(i)

    def release_semaphore(self) -> None:
        """Give back the semaphore index claimed with :meth:`claim_semaphore`."""
        fd = self._fds.pop("claim", None)
        if fd is not None:
            os.close(fd)  # closing drops the flock
        self._claim, self._sem = None, 0

    def semaphore_claims(self) -> dict[int, int]:
        """Semaphore indexes claimed by live processes, as ``{index: pid}``."""
        return _claims(self._stream.base)

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
        ([1.0, 2.0, 3.0], 1)
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
        """Write into this stream the sum of the newest frames of ``sources`` (open streams;
        :func:`dao.combine` also takes names)."""
        for src in sources:
            if not isinstance(src, shm):
                raise TypeError(f"combine takes open streams, not {src!r}: open it with "
                                "dao.shm(name), or call dao.combine(names, destination)")
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
            Longest wait in seconds (None: until a frame comes; 0: do not wait).
        spin : bool
            Busy-spin on the counter for :attr:`spin_time` seconds before sleeping.

        Returns
        -------
        bool
            True if a new frame is there, False on timeout.

        Raises
        ------
        StreamError
            The stream was closed by another thread during the wait.
        ValueError
            A negative or NaN ``timeout``.
        """
        s = self._stream
        t = _timeout(timeout)
        cnt = self._tail[1]
        if s.counter() != cnt:
            return True
        return s.wait_new(cnt, t, self.spin_time if spin else 0.0, self._sem) != _shm.TIMEOUT

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
            Longest wait in seconds; None waits until a frame comes (Ctrl-C interrupts), 0
            does not wait. Negative or NaN: ValueError.
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

        Raises
        ------
        StreamError
            The stream was closed by another thread during the wait, or the slot to read
            stayed under write with its counter unchanged (its writer died mid-frame).
        """
        s = self._stream
        t = _timeout(timeout)
        slot, cnt = self._tail
        if s.counter() == cnt:
            if not wait:
                return self.DAO_NOTREADY, None
            status = s.wait_new(cnt, t, self.spin_time if spin else 0.0, self._sem)
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

        Raises
        ------
        StreamError
            The next slot stayed under write for :attr:`stuck_timeout` seconds with its
            counter unchanged: its writer died in the middle of that frame (the frames before
            it are returned first). Or the stream was closed by another thread.
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
        if not 1 <= n <= depth and (have or n != 0):
            raise ValueError(f"history length must be 1 to the depth ({depth}), not {n}")
        if n > have or have == 0:
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
            # one C call copies frames last-n+1 ... last in order, checking each counter; a
            # slot left under write by a writer that died mid-frame raises StreamError at once
            got = s.read_new(data, (newest - n) % depth, last - n, cnt0, cnt2, times, False)
            if got == n:
                return Frames(data, cnt0, cnt2, times) if meta else data
            # the writer overwrote the oldest frames during the copy: start again
        raise StreamError(
            f"{s.path} is written faster than its last {n} frames can be copied (100 tries): "
            "ask for fewer frames, or give the stream a deeper FIFO"
        )

    def history_metadata(self, n: int | None = None) -> Frames:
        """Counters and write times of the last ``n`` frames, without copying their data.

        A :class:`Frames` batch whose ``data`` is None; ``n`` defaults to
        :attr:`frames_available` (fewer are never returned silently: see
        :meth:`get_history`). The header fields are read as a seqlock: a set that the writer
        changed during the read is read again.

        It reads the newest frames at the time of the call: to pair frames with their
        counters while a writer runs, read both at once (``get_history(n, meta=True)``), or
        match a separate read by ``cnt0``.

        Raises
        ------
        StreamError
            A slot of the range stayed under write for :attr:`stuck_timeout` seconds with the
            counter unchanged (its writer died mid-frame), or the writer kept changing the
            range for that long.
        """
        depth, have = self.depth, self.frames_available
        n = have if n is None else int(n)
        if not 0 <= n <= have:
            raise ValueError(f"{self.path} has {have} frame(s) to give, not {n}")
        m = self._meta
        since, seen, first = 0.0, -1, time.monotonic()
        for tries in itertools.count():
            newest = self._stream.newest()
            slots = (newest - n + 1 + np.arange(n)) % depth
            cnt0 = m["cnt0"][slots]
            cnt2, times, writing = m["cnt2"][slots], m["atime_ns"][slots], m["write"][slots]
            ok = (not writing.any() and np.array_equal(m["cnt0"][slots], cnt0)
                  and (n == 0 or int(cnt0[-1]) - int(cnt0[0]) == n - 1))
            if ok:
                return Frames(None, cnt0.astype(np.uint64), cnt2.astype(np.uint64),
                              times.astype(np.int64))
            if tries < 100:
                continue
            now, counter = time.monotonic(), self.get_counter()
            if counter != seen:  # the writer is alive: give it time
                since, seen = now, counter
            if now - first > max(1.0, 10 * self.stuck_timeout):
                raise StreamError(
                    f"{self.path} is written faster than the metadata of its last {n} frames "
                    "can be read: ask for fewer frames"
                )
            if now - since > self.stuck_timeout:
                if writing.any():
                    slot = int(slots[np.flatnonzero(writing)[0]])
                    raise StreamError(
                        f"slot {slot} of {self.path} stayed under write for "
                        f"{self.stuck_timeout:.1f} s while the counter stayed at {counter}: "
                        "its writer died (or hangs) in the middle of a frame. Restart the "
                        "writer, or recreate the stream with dao.shm(path, data, replace=True)"
                    )
                raise StreamError(
                    f"the counters of the last {n} slots of {self.path} are not consecutive "
                    f"({[int(c) for c in cnt0]}) and no writer changes them: its headers are "
                    "damaged; recreate the stream"
                )
            time.sleep(0.0005)
        raise AssertionError("unreachable")

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


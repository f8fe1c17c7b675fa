"""dao's small files in shared folders: owner, claim and labels files.

They live in folders everyone may write (``/dev/shm``, ``/tmp``), where anyone may plant a file
or a symbolic link under the names dao uses. So they are created with ``O_EXCL`` (a new file of
ours, mode 0600) or opened with ``O_NOFOLLOW``, and used only if they are regular files of this
user (or of the owner of the stream they serve). :func:`open_checked` is the one place that
opens such a file; the rest builds on it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid

from dao.errors import StreamError

__all__ = ["RefusedFile", "open_checked", "open_private", "read_private", "write_private"]

_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class RefusedFile(StreamError):
    """A file in a shared folder that dao does not use: a symbolic link (``link`` true), not a
    regular file, or another user's. ``why`` says which, as a phrase that follows the path."""

    def __init__(self, path: str, why: str, link: bool = False):
        super().__init__(f"{path} {why}")
        self.path = path
        self.why = why
        self.link = link


def _why_untrusted(st: os.stat_result, other_uid: int | None, any_owner: bool) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not any_owner and st.st_uid != os.getuid() and st.st_uid != other_uid:
        return (f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): another user made "
                "it, so dao does not trust it")
    return None


def open_checked(
    path: str, flags: int = os.O_RDONLY, other_uid: int | None = None, *, any_owner: bool = False
) -> tuple[int, os.stat_result]:
    """Open a file of a shared folder: never through a symbolic link, and only a regular file of
    this user (or of ``other_uid``, e.g. the owner of a group-shared stream).

    Parameters
    ----------
    path : str
        The file.
    flags : int
        ``os.O_RDONLY`` or ``os.O_RDWR`` (``O_NOFOLLOW``, ``O_CLOEXEC`` and ``O_NONBLOCK`` are
        added).
    other_uid : int, optional
        Another user whose files are trusted too.
    any_owner : bool
        Trust a regular file of any user (a stream file, say, that is only read).

    Returns
    -------
    fd : int
        The open descriptor: the caller closes it.
    st : os.stat_result
        Its ``fstat``.

    Raises
    ------
    RefusedFile
        ``path`` is a symbolic link, not a regular file, or another user's.
    OSError
        It cannot be opened (``FileNotFoundError`` if it is missing).
    """
    try:
        fd = os.open(path, flags | _FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RefusedFile(path, "is a symbolic link, which dao never follows in a shared "
                                    "folder", link=True) from None
        raise
    try:
        st = os.fstat(fd)
        why = _why_untrusted(st, other_uid, any_owner)
    except BaseException:
        os.close(fd)
        raise
    if why:
        os.close(fd)
        raise RefusedFile(path, why)
    return fd, st


def open_private(path: str, create: bool = True, other_uid: int | None = None) -> int:
    """Open for reading and writing a file of ours in a shared folder, creating it (mode 0600)
    if it is missing and ``create`` is true.

    Raises
    ------
    StreamError
        ``path`` is a symbolic link, not a regular file, or another user's (than this one and
        ``other_uid``): the message says to remove it.
    OSError
        The file cannot be opened (e.g. no permission on it or on its folder).
    """
    if create:
        with contextlib.suppress(FileExistsError):
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FLAGS, 0o600)
    try:
        fd, _ = open_checked(path, os.O_RDWR, other_uid)
    except RefusedFile as e:
        raise StreamError(f"{e}: remove it (as its owner or root; someone may have planted it), "
                          "or use another stream name") from None
    return fd


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically: a new temporary file (``O_EXCL``, ``mode``) in the
    same folder, renamed over ``path``. Never follows a symbolic link planted at either name."""
    folder, name = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode)
            break
        except FileExistsError:
            continue
    else:
        raise StreamError(f"cannot make a temporary file in {folder}")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # replaces a planted link itself, never what it points to
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_private(path: str, other_uid: int | None = None, max_bytes: int = 1 << 24) -> str | None:
    """Content of a file written with :func:`write_private`: None if it is absent, a symbolic
    link, not a regular file, or owned by another user than this one (or ``other_uid``, e.g.
    the owner of a group-shared stream), or larger than ``max_bytes``."""
    try:
        fd, st = open_checked(path, os.O_RDONLY, other_uid)
    except (OSError, StreamError):
        return None
    try:
        if st.st_size > max_bytes:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)

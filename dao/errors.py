"""Exceptions and warnings raised by :mod:`dao`.

Every error says what was wrong and what to do about it. The classes also derive from the
closest built-in exception, so ``except ValueError`` or ``except TimeoutError`` keep working.
"""

from __future__ import annotations

__all__ = [
    "DaoError",
    "DaoWarning",
    "StreamError",
    "StreamFormatError",
    "StreamMismatchError",
    "StreamNotFoundError",
    "StreamTimeout",
    "StreamBusyError",
    "NotAStreamError",
    "SemaphoreConflictError",
]


class DaoError(Exception):
    """Base class of every exception raised by :mod:`dao`."""


class DaoWarning(UserWarning):
    """Base class of the warnings issued by :mod:`dao`."""


class StreamError(DaoError):
    """A shared-memory stream could not be created, opened, read or written."""


class StreamNotFoundError(StreamError, FileNotFoundError):
    """No stream file exists at the requested path."""


class StreamFormatError(StreamError, ValueError):
    """A file is not a valid DAO stream (truncated, foreign or inconsistent header)."""


class StreamMismatchError(StreamError, ValueError):
    """Data whose shape or dtype differs from the stream's was written to it."""


class StreamTimeout(StreamError, TimeoutError):
    """A wait for a new frame ran past its timeout."""


class StreamBusyError(StreamError):
    """A stream cannot be replaced: live processes still write or read it (their pids are in
    the message). Stop them first, or pass ``replace=True``."""


class NotAStreamError(StreamFormatError, OSError):
    """A file that :func:`dao.remove` refuses to delete: it is not a DAO stream (a wrong suffix,
    a symbolic link, not a regular file, or a header that does not parse).

    Also an :class:`OSError`, like a refused file operation."""


class SemaphoreConflictError(StreamError):
    """Two streams would share the same semaphore names (same base name)."""

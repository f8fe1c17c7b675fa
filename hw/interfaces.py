"""Device interfaces and the adapters that connect devices to streams.

A real driver and a simulated device implement the same abstract class, so the loop (and the
stream adapters) work with either:

* :class:`Camera`: ``grab(out=None) -> frame``, ``shape``, ``dtype``, ``frame_rate``,
  ``frame_number``;
* :class:`WavefrontSensor`: a camera whose frames are wavefront-sensor images, with its
  sensing ``wavelength``;
* :class:`DeformableMirror`: ``set_command(cmd)``, ``n_actuators``, ``stroke``;
* :class:`ScienceCamera`: a camera at a science ``wavelength`` that also reports the image
  quality (``strehl``).

Adapters:

* :class:`CameraStreamWriter` grabs frames and writes each one to a :class:`dao.shm` stream
  with ``cnt2`` = the camera's frame number;
* :class:`DMStreamReader` reads commands from a stream and applies them to a mirror.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

__all__ = [
    "Camera",
    "WavefrontSensor",
    "DeformableMirror",
    "ScienceCamera",
    "CameraStreamWriter",
    "DMStreamReader",
]


class Camera(abc.ABC):
    """A detector delivering frames.

    Subclasses implement :meth:`grab` and the properties :attr:`shape`, :attr:`dtype`,
    :attr:`frame_rate` and :attr:`frame_number`.
    """

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int]:
        """Frame shape (rows, columns), pixels."""

    @property
    @abc.abstractmethod
    def dtype(self) -> np.dtype:
        """Pixel data type."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Frames per second, Hz."""

    @property
    @abc.abstractmethod
    def frame_number(self) -> int:
        """Number of the last frame grabbed (0 before the first)."""

    @abc.abstractmethod
    def grab(self, out: np.ndarray | None = None) -> np.ndarray:
        """Take the next frame; write it into ``out`` if given and return it.

        Parameters
        ----------
        out : ndarray, optional
            Preallocated array of :attr:`shape` and :attr:`dtype`.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release the device (default: nothing)."""

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WavefrontSensor(Camera):
    """A camera whose frames are wavefront-sensor images (Shack-Hartmann, pyramid...).

    The estimator turning its frames into slopes is separate (:mod:`dao.recon`).
    """

    @property
    @abc.abstractmethod
    def wavelength(self) -> float:
        """Sensing wavelength, metres."""


class ScienceCamera(Camera):
    """An imaging camera at a science wavelength."""

    @property
    @abc.abstractmethod
    def wavelength(self) -> float:
        """Imaging wavelength, metres."""

    @abc.abstractmethod
    def strehl(self) -> float:
        """Strehl ratio of the (long-exposure) image, dimensionless."""


class DeformableMirror(abc.ABC):
    """A deformable mirror driven by a vector of actuator commands."""

    @property
    @abc.abstractmethod
    def n_actuators(self) -> int:
        """Number of actuators (length of a command)."""

    @property
    @abc.abstractmethod
    def stroke(self) -> tuple[float, float]:
        """Command limits ``(low, high)``, command units (metres of OPD for the simulation)."""

    @abc.abstractmethod
    def set_command(self, command: np.ndarray) -> None:
        """Apply ``command`` (shape ``(n_actuators,)``), clipped to :attr:`stroke`."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release the device (default: nothing)."""

    def __enter__(self) -> DeformableMirror:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CameraStreamWriter:
    """Grab frames from a camera and write each to a stream, ``cnt2`` = frame number.

    Parameters
    ----------
    camera : Camera
        Any camera (real or simulated).
    stream : dao.shm or str
        The stream, or a name: it is then created (or reused) with the camera's shape and
        dtype.

    Examples
    --------
    >>> writer = CameraStreamWriter(camera, "wfs_image")  # doctest: +SKIP
    >>> frame = writer.step()                             # doctest: +SKIP
    """

    def __init__(self, camera: Camera, stream) -> None:
        from dao import shm

        self.camera = camera
        if isinstance(stream, str):
            stream = shm(stream, np.zeros(camera.shape, camera.dtype))
        self.stream = stream
        self._frame = np.zeros(camera.shape, camera.dtype)

    def step(self) -> np.ndarray:
        """Grab one frame, write it to the stream and return it (the writer's buffer)."""
        frame = self.camera.grab(out=self._frame)
        self.stream.set_data(frame, cnt2=self.camera.frame_number)
        return frame

    def run(self, n_frames: int) -> None:
        """Grab and write ``n_frames`` frames."""
        for _ in range(int(n_frames)):
            self.step()


class DMStreamReader:
    """Apply the commands written to a stream to a deformable mirror.

    Parameters
    ----------
    mirror : DeformableMirror
        Any mirror (real or simulated).
    stream : dao.shm or str
        The command stream, or a name: it is opened if it exists, else created with a flat
        command of shape ``(n_actuators, 1)`` float32.
    semaphore : int
        Semaphore index this reader waits on.
    """

    def __init__(self, mirror: DeformableMirror, stream, semaphore: int = 0) -> None:
        from dao import shm
        from dao.errors import StreamNotFoundError

        self.mirror = mirror
        if isinstance(stream, str):
            try:
                stream = shm(stream)
            except StreamNotFoundError:
                stream = shm(stream, np.zeros((mirror.n_actuators, 1), np.float32))
        self.stream = stream
        if self.stream.shape[0] * int(np.prod(self.stream.shape[1:])) != mirror.n_actuators:
            raise ValueError(f"stream {self.stream.name} holds {self.stream.shape}, the mirror "
                             f"has {mirror.n_actuators} actuators")
        self.semaphore = int(semaphore)
        self._buf = np.zeros(self.stream.shape, self.stream.dtype)
        self.commands_applied = 0
        self.last_frame_id = -1

    def apply_latest(self) -> np.ndarray:
        """Apply the newest command of the stream without waiting; return it."""
        self.stream.get_data(out=self._buf)
        return self._apply()

    def wait_and_apply(self, timeout: float = 1.0) -> np.ndarray:
        """Wait (at most ``timeout`` seconds) for a new command, apply it and return it.

        Raises
        ------
        dao.errors.StreamTimeout
            If no command came in time.
        """
        self.stream.get_data(check=True, semNb=self.semaphore, timeout=timeout, out=self._buf)
        return self._apply()

    def _apply(self) -> np.ndarray:
        cmd = self._buf.reshape(-1)
        self.mirror.set_command(cmd)
        self.commands_applied += 1
        self.last_frame_id = self.stream.get_frame_id()
        return cmd

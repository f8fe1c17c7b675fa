"""Telemetry: record streams to disk at loop rate without losing a frame.

A :class:`Recorder` follows each stream in FIFO order in a background thread: frames are
copied in batches (:meth:`dao.shm.read_new`, GIL released) into preallocated chunks, and a
writer thread appends full chunks to the file, so disk writes never stall the reading. No frame
is lost while the stream's FIFO depth covers the reader's pauses; frames lost when the writer
laps the reader anyway are counted and reported.

Files: NetCDF-4 (``.nc``, via h5netcdf) or Zarr (``.zarr``), one group per stream, each an
xarray Dataset with a ``frame`` dimension and ``cnt0`` (frame counter), ``cnt2`` (frame id of
the source) and ``time`` coordinates; FITS (``.fits``, via astropy) by export. Read back with
:func:`open_recording`. :func:`write_history` writes the histories streams hold now in the
same schema.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dao.errors import DaoError
from dao.streams.frames import Frames
from dao.streams.stream import shm

__all__ = ["Recorder", "RecordingResult", "record", "write_history", "open_recording", "align",
           "export_fits"]


class RecordingError(DaoError):
    """A recording could not be written."""


@dataclass
class RecordingResult:
    """What a recording wrote."""

    path: str
    frames: dict[str, int] = field(default_factory=dict)
    """Frames written, per stream."""
    lost: dict[str, int] = field(default_factory=dict)
    """Frames overwritten before they could be read, per stream (0 when the depth sufficed)."""
    seconds: float = 0.0
    """Wall time of the recording."""


def _format(path: str) -> str:
    for suffix, fmt in ((".nc", "netcdf"), (".nc4", "netcdf"), (".h5", "netcdf"),
                        (".zarr", "zarr"), (".fits", "fits"), (".fit", "fits")):
        if path.endswith(suffix):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r}: use .nc (NetCDF), .zarr or .fits")


def _chunk_frames(frame_shape: tuple[int, ...], itemsize: int) -> int:
    """Frames per on-disk chunk: about 4 MiB, 1 to 1024 frames."""
    return max(1, min(1024, (4 << 20) // max(1, itemsize * int(np.prod(frame_shape)))))


class _NetCDFSink:
    """One NetCDF-4 group per stream: the frames, ``cnt0``, ``cnt2`` and ``time``."""

    def __init__(self, path: str, streams: dict[str, shm]):
        import h5netcdf

        from dao.streams import labels as dxr

        self.f = h5netcdf.File(path, "w", invalid_netcdf=any(s.dtype.kind == "c"
                                                             for s in streams.values()))
        self.vars = {}
        for name, s in streams.items():
            spec = dxr.get_labels(s)
            shape = dxr.labelled_shape(s, spec)
            g = self.f.create_group(name)
            g.dimensions = {"frame": None, **dict(zip(spec["dims"], shape, strict=True))}
            v = g.create_variable(spec["name"] or name, ("frame", *spec["dims"]), s.dtype,
                                  chunks=(_chunk_frames(shape, s.dtype.itemsize), *shape))
            # the frame's metadata and the labels' non-dimension coordinates (x, y of
            # actuators or subapertures) are coordinates of the data when read back
            aux = [c for c in spec["coords"] if c not in spec["dims"]]
            v.attrs["coordinates"] = " ".join(["cnt0", "cnt2", "time", *aux])
            v.attrs["stream"] = s.path
            for k, val in spec["attrs"].items():
                v.attrs[k] = val
            counters = [g.create_variable(c, ("frame",), np.uint64, chunks=(4096,))
                        for c in ("cnt0", "cnt2")]
            t = g.create_variable("time", ("frame",), np.int64, chunks=(4096,))
            t.attrs["units"] = "nanoseconds since 1970-01-01"
            t.attrs["calendar"] = "proleptic_gregorian"
            for cname, (cdims, data) in dxr.coordinates(spec).items():
                if data.dtype.kind == "U":
                    import h5py

                    cv = g.create_variable(cname, cdims, dtype=h5py.string_dtype())
                    cv[...] = data.astype(object)
                else:
                    cv = g.create_variable(cname, cdims, data=data)
                cv.attrs["label"] = "coordinate"
            self.vars[name] = (g, v, *counters, t, shape)

    def append(self, name: str, frames: Frames) -> None:
        g, v, c0, c2, t, shape = self.vars[name]
        n0 = g.dimensions["frame"].size
        n = len(frames)
        g.resize_dimension("frame", n0 + n)
        v[n0:n0 + n] = frames.data.reshape((n, *shape))
        c0[n0:n0 + n] = frames.cnt0
        c2[n0:n0 + n] = frames.cnt2
        t[n0:n0 + n] = frames.time_ns

    def close(self) -> None:
        self.f.close()


class _ZarrSink:
    """One Zarr group per stream, the same schema as :class:`_NetCDFSink`."""

    def __init__(self, path: str, streams: dict[str, shm]):
        from dao.streams import labels as dxr

        self.path = path
        self.started: set[str] = set()
        self.specs = {k: dxr.get_labels(s) for k, s in streams.items()}
        self.shapes = {k: dxr.labelled_shape(s, self.specs[k]) for k, s in streams.items()}
        self.coords = {k: dxr.coordinates(self.specs[k]) for k in streams}

    def append(self, name: str, frames: Frames) -> None:
        import xarray as xr

        spec = self.specs[name]
        data = frames.data.reshape((len(frames), *self.shapes[name]))
        ds = xr.Dataset(
            {spec["name"] or name: (("frame", *spec["dims"]), data, spec["attrs"])},
            coords={"cnt0": ("frame", frames.cnt0), "cnt2": ("frame", frames.cnt2),
                    "time": ("frame", frames.time), **self.coords[name]},
        )
        if name in self.started:
            ds.to_zarr(self.path, group=name, mode="a", append_dim="frame", zarr_format=2)
        else:
            ds.to_zarr(self.path, group=name, mode="w" if not self.started else "a",
                       zarr_format=2)
            self.started.add(name)

    def close(self) -> None:
        pass


def _sink(path: str, streams: dict[str, shm]):
    fmt = _format(path)
    if fmt == "fits":
        raise ValueError("write .nc or .zarr, then export_fits() the file")
    return _NetCDFSink(path, streams) if fmt == "netcdf" else _ZarrSink(path, streams)


def write_history(streams, path: str | os.PathLike) -> RecordingResult:
    """Write the FIFO histories that streams hold now, in the schema of a recording.

    What a :class:`Recorder` would have written had it followed the streams: one group per
    stream with the frames, ``cnt0``, ``cnt2`` and ``time``; read it back with
    :func:`open_recording`. Works while the writers run (each history is copied consistent).

    Parameters
    ----------
    streams : dao.shm, a sequence of them, or a dict of group name to stream
        The streams; each contributes every frame it holds (:attr:`dao.shm.frames_available`),
        in a group named by its key or by the stream's name.
    path : str or os.PathLike
        ``.nc`` (NetCDF-4) or ``.zarr``.
    """
    groups, opened = _groups(streams)
    path = os.fspath(path)
    result = RecordingResult(path, dict.fromkeys(groups, 0), dict.fromkeys(groups, 0))
    t0 = time.monotonic()
    sink = _sink(path, groups)
    try:
        for name, s in groups.items():
            if s.frames_available:
                frames = s.get_history(meta=True)
                sink.append(name, frames)
                result.frames[name] = len(frames)
    finally:
        sink.close()
        for s in opened:
            s.close()
    result.seconds = time.monotonic() - t0
    return result


def _groups(streams) -> tuple[dict[str, shm], list[shm]]:
    """``{group name: open stream}`` from a stream, a sequence of them or a dict, and the
    streams opened here from names (to close when done)."""
    opened: list[shm] = []

    def _open(s) -> shm:
        if isinstance(s, shm):
            return s
        opened.append(shm(s))
        return opened[-1]

    if isinstance(streams, dict):
        return {str(k): _open(s) for k, s in streams.items()}, opened
    if isinstance(streams, (str, os.PathLike, shm)):
        streams = [streams]
    out = [_open(s) for s in streams]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        for s in opened:
            s.close()
        raise ValueError(f"two streams share a name in {names}: a recording has one group "
                         "per stream; pass a dict of group name to stream")
    return dict(zip(names, out, strict=True)), opened


class Recorder:
    """Record one or more streams, in order and without loss, in the background.

    Parameters
    ----------
    streams : str, dao.shm, a sequence of them, or a dict of group name to stream
        Streams to record (names, paths or open streams), each in a group named by its key or
        its stream name. Give them a FIFO depth that covers the longest pause of the
        recorder (a few thousand frames at kHz rates).
    path : str
        Output file: ``.nc`` (NetCDF-4), ``.zarr`` or ``.fits``.
    frames : int, optional
        Stop after this many frames of each stream.
    seconds : float, optional
        Stop after this many seconds. With neither, record until :meth:`stop`.
    chunk : int
        Frames per chunk written at once.
    flush_s : float
        Longest time, in seconds, a read frame waits in a partial chunk before it is written
        (so a slow stream's frames, and the progress, reach the file at least this often).

    Examples
    --------
    >>> rec = Recorder(["wfs", "dm"], "run1.nc", seconds=10).start()  # doctest: +SKIP
    >>> result = rec.wait()                                           # doctest: +SKIP
    """

    def __init__(
        self,
        streams,
        path: str | os.PathLike,
        frames: int | None = None,
        seconds: float | None = None,
        chunk: int = 512,
        flush_s: float = 0.5,
    ):
        self.groups, self._opened = _groups(streams)
        self.streams = list(self.groups.values())
        names = list(self.groups)
        self.path = os.fspath(path)
        self.format = _format(self.path)
        self.frames = frames
        self.seconds = seconds
        self.chunk = int(chunk)
        self.flush_s = float(flush_s)
        self.result = RecordingResult(self.path, {n: 0 for n in names}, {n: 0 for n in names})
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._free: dict[str, queue.SimpleQueue] = {n: queue.SimpleQueue() for n in names}
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._writer: threading.Thread | None = None
        self._t0 = 0.0

    # -- public --------------------------------------------------------------------------------
    def start(self) -> Recorder:
        """Start recording the frames written from now on; returns ``self``."""
        target = self.path
        if self.format == "fits":
            fd, target = tempfile.mkstemp(suffix=".nc", dir=os.path.dirname(
                os.path.abspath(self.path)))
            os.close(fd)
            self._fits_tmp = target
        sink = _sink(target, self.groups)
        self._t0 = time.monotonic()
        for name, s in self.groups.items():
            s.claim_semaphore()
            s.reset_tail()
            t = threading.Thread(target=self._guard, args=(self._read, name), daemon=True,
                                 name=f"dao-record-{name}")
            self._threads.append(t)
        writer = threading.Thread(target=self._guard, args=(self._write, sink), daemon=True,
                                  name="dao-record-writer")
        for t in self._threads:
            t.start()
        writer.start()
        self._writer = writer
        return self

    def stop(self) -> None:
        """Stop recording (frames already read are still written)."""
        self._stop.set()

    @property
    def done(self) -> bool:
        """True once every frame asked for is on disk."""
        return self._writer is not None and not self._writer.is_alive()

    def progress(self) -> int:
        """Frames written to the file so far, all streams together."""
        return sum(self.result.frames.values())

    def wait(self, timeout: float | None = None) -> RecordingResult:
        """Block until the recording ends; return what it wrote.

        Raises
        ------
        TimeoutError
            If it has not ended after ``timeout`` seconds.
        RecordingError
            If reading or writing failed.
        """
        self._writer.join(timeout)
        if self._writer.is_alive():
            raise TimeoutError(f"recording to {self.path} still running after {timeout} s")
        if self._error is not None:
            raise RecordingError(f"recording to {self.path} failed: {self._error}") \
                from self._error
        if self.format == "fits" and hasattr(self, "_fits_tmp"):
            export_fits(self._fits_tmp, self.path)
            os.unlink(self._fits_tmp)
            del self._fits_tmp
        return self.result

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.wait()

    # -- threads -------------------------------------------------------------------------------
    def _guard(self, fn, arg) -> None:
        try:
            fn(arg)
        except BaseException as e:  # reported by wait()
            self._error = e
            self._stop.set()
        finally:
            if fn == self._read:
                self._queue.put(None)

    def _buffer(self, name: str) -> Frames:
        try:
            return self._free[name].get_nowait()
        except queue.Empty:
            return self.groups[name].frames_buffer(self.chunk)

    def _read(self, name: str) -> None:
        s = self.groups[name]
        buf = self._buffer(name)
        fill = 0
        start = s.cursor  # frames are counted by counter, so lost frames cannot stall the end
        last = start
        t_flush = time.monotonic() + self.flush_s
        while True:
            want = self.chunk - fill
            if self.frames is not None:
                want = min(want, start + self.frames - last)
            got = s.read_new(out=buf[fill:fill + want]) if want else None
            n = len(got) if got is not None else 0
            if n:
                self.result.lost[name] += got.lost
                last = int(got.cnt0[-1])
                fill += n
                if self.frames is not None and last > start + self.frames:
                    over = last - start - self.frames  # a jump past the end: keep what fits
                    fill -= min(over, n)
                    last = start + self.frames
            finished = (self.frames is not None and last >= start + self.frames) \
                or self._stop.is_set() \
                or (self.seconds is not None and time.monotonic() - self._t0 >= self.seconds)
            now = time.monotonic()
            if fill == self.chunk or (fill and (finished or now >= t_flush)):
                self._queue.put((name, buf, fill))  # a slow stream is on disk within flush_s
                buf = self._buffer(name)
                fill = 0
                t_flush = now + self.flush_s
            if finished:
                return
            if n == 0:
                s.wait_next(0.05)

    def _write(self, sink) -> None:
        running = len(self.streams)
        try:
            while running:
                item = self._queue.get()
                if item is None:
                    running -= 1
                    continue
                name, buf, n = item
                sink.append(name, buf[:n])
                self.result.frames[name] += n
                self._free[name].put(buf)
        finally:
            sink.close()
            self.result.seconds = time.monotonic() - self._t0
            for s in self.streams:
                s.release_semaphore()
            for s in self._opened:
                s.close()


def record(streams, path, frames=None, seconds=None, chunk=512, progress=False):
    """Record streams to a file and return a :class:`RecordingResult` (blocking).

    Parameters as :class:`Recorder`; ``progress`` shows a tqdm progress bar.
    """
    rec = Recorder(streams, path, frames=frames, seconds=seconds, chunk=chunk).start()
    if progress:
        from tqdm import tqdm

        total = frames * len(rec.streams) if frames else None
        with tqdm(total=total, unit="frame", desc=f"recording {os.path.basename(path)}") as bar:
            while not rec.done:
                time.sleep(0.1)
                bar.update(rec.progress() - bar.n)
            bar.update(rec.progress() - bar.n)
    return rec.wait()


def open_recording(path: str) -> dict[str, Any]:
    """Open a recording: ``{stream name: xarray.Dataset}`` (lazily loaded)."""
    import xarray as xr

    fmt = _format(path)
    if fmt == "fits":
        raise ValueError("open FITS exports with astropy.io.fits")
    if fmt == "zarr":
        import zarr

        groups = list(zarr.open_group(path, mode="r").group_keys())
        return {g: xr.open_zarr(path, group=g) for g in groups}
    import h5netcdf

    with h5netcdf.File(path, "r") as f:
        groups = list(f.groups)
    return {g: xr.open_dataset(path, group=g, engine="h5netcdf") for g in groups}


def align(recording: dict[str, Any], on: str, tolerance_s: float | None = None):
    """Align the streams of a recording on the frame times of one of them.

    Each other stream is sampled at its newest frame not later than each frame of ``on``
    (what a loop saw at that moment); the result is one Dataset over ``on``'s frames.
    """
    import xarray as xr

    ref = recording[on]
    out = {}
    for name, ds in recording.items():
        ds = ds.swap_dims({"frame": "time"}).drop_vars(["cnt0", "cnt2"], errors="ignore")
        if name != on:
            tol = None if tolerance_s is None else np.timedelta64(int(tolerance_s * 1e9), "ns")
            ds = ds.reindex(time=ref["time"].values, method="ffill", tolerance=tol)
        out.update({f"{name}/{k}" if name != on else k: v for k, v in ds.data_vars.items()})
    return xr.Dataset(out)


def export_fits(recording_path: str, fits_path: str) -> None:
    """Write a NetCDF or Zarr recording as FITS: per stream an image cube (frames first in
    numpy order) and a table of cnt0 and time (ns since the epoch)."""
    from astropy.io import fits

    hdus = [fits.PrimaryHDU()]
    for name, ds in open_recording(recording_path).items():
        var = next(iter(ds.data_vars))
        img = fits.ImageHDU(np.asarray(ds[var].values), name=name.upper()[:68])
        img.header["STREAM"] = str(ds[var].attrs.get("stream", name))[:68]
        hdus.append(img)
        t = ds["time"].values.astype("datetime64[ns]").astype(np.int64)
        cols = [fits.Column(name=c.upper(), format="K", array=ds[c].values.astype(np.int64))
                for c in ("cnt0", "cnt2") if c in ds]
        cols.append(fits.Column(name="TIME_NS", format="K", array=t))
        hdus.append(fits.BinTableHDU.from_columns(cols, name=f"{name.upper()[:60]}_T"))
        ds.close()
    fits.HDUList(hdus).writeto(fits_path, overwrite=True)

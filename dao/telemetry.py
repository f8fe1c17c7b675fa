"""Telemetry: record streams to disk at loop rate without losing a frame.

A :class:`Recorder` follows each stream in FIFO order in a background thread: frames are
copied in batches (:meth:`dao.shm.read_new`, GIL released) into preallocated chunks, and a
writer thread appends full chunks to the file, so disk writes never stall the reading. No frame
is lost while the stream's FIFO depth covers the reader's pauses; frames lost when the writer
laps the reader anyway are counted and reported.

Files: NetCDF-4 (``.nc``, via h5netcdf) or Zarr (``.zarr``), one group per stream, each an
xarray Dataset with a ``frame`` dimension and ``cnt0`` and ``time`` coordinates; FITS
(``.fits``, via astropy) by export. Read back with :func:`open_recording`.
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
from dao.shm import shm

__all__ = ["Recorder", "RecordingResult", "record", "open_recording", "align", "export_fits"]


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


class _NetCDFSink:
    def __init__(self, path: str, streams: list[shm]):
        import h5netcdf

        from dao import xr as dxr

        self.f = h5netcdf.File(path, "w", invalid_netcdf=any(s.dtype.kind == "c"
                                                             for s in streams))
        self.vars = {}
        for s in streams:
            spec = dxr.get_labels(s)
            g = self.f.create_group(s.name)
            g.dimensions = {"frame": None, **dict(zip(spec["dims"], s.shape, strict=True))}
            chunk = (max(1, min(1024, (4 << 20) // max(1, s.dtype.itemsize * int(np.prod(
                s.shape))))), *s.shape)
            v = g.create_variable(spec["name"] or s.name, ("frame", *spec["dims"]), s.dtype,
                                  chunks=chunk)
            v.attrs["coordinates"] = "cnt0 time"
            v.attrs["stream"] = s.path
            for k, val in spec["attrs"].items():
                v.attrs[k] = val
            c = g.create_variable("cnt0", ("frame",), np.uint64, chunks=(4096,))
            t = g.create_variable("time", ("frame",), np.int64, chunks=(4096,))
            t.attrs["units"] = "nanoseconds since 1970-01-01"
            t.attrs["calendar"] = "proleptic_gregorian"
            for cname, (cdims, data) in dxr._coords(spec).items():
                if data.dtype.kind == "U":
                    import h5py

                    cv = g.create_variable(cname, cdims, dtype=h5py.string_dtype())
                    cv[...] = data.astype(object)
                else:
                    cv = g.create_variable(cname, cdims, data=data)
                cv.attrs["label"] = "coordinate"
            self.vars[s.name] = (g, v, c, t)

    def append(self, name: str, frames, counters, times) -> None:
        g, v, c, t = self.vars[name]
        n0 = g.dimensions["frame"].size
        n = len(counters)
        g.resize_dimension("frame", n0 + n)
        v[n0:n0 + n] = frames
        c[n0:n0 + n] = counters
        t[n0:n0 + n] = times

    def close(self) -> None:
        self.f.close()


class _ZarrSink:
    def __init__(self, path: str, streams: list[shm]):
        from dao import xr as dxr

        self.path = path
        self.started: set[str] = set()
        self.specs = {s.name: dxr.get_labels(s) for s in streams}
        self.coords = {s.name: dxr._coords(self.specs[s.name]) for s in streams}

    def append(self, name: str, frames, counters, times) -> None:
        import xarray as xr

        spec = self.specs[name]
        ds = xr.Dataset(
            {spec["name"] or name: (("frame", *spec["dims"]), frames, spec["attrs"])},
            coords={"cnt0": ("frame", counters),
                    "time": ("frame", times.astype("datetime64[ns]")), **self.coords[name]},
        )
        if name in self.started:
            ds.to_zarr(self.path, group=name, mode="a", append_dim="frame", zarr_format=2)
        else:
            ds.to_zarr(self.path, group=name, mode="w" if not self.started else "a",
                       zarr_format=2)
            self.started.add(name)

    def close(self) -> None:
        pass


class Recorder:
    """Record one or more streams, in order and without loss, in the background.

    Parameters
    ----------
    streams : str, dao.shm, or a sequence of them
        Streams to record (names, paths or open streams). Give them a FIFO depth that covers
        the longest pause of the recorder (a few thousand frames at kHz rates).
    path : str
        Output file: ``.nc`` (NetCDF-4), ``.zarr`` or ``.fits``.
    frames : int, optional
        Stop after this many frames of each stream.
    seconds : float, optional
        Stop after this many seconds. With neither, record until :meth:`stop`.
    chunk : int
        Frames per chunk written at once.

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
    ):
        if isinstance(streams, str | shm):
            streams = [streams]
        self.streams = [s if isinstance(s, shm) else shm(s) for s in streams]
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise ValueError(f"streams with the same name: {names}")
        self.path = os.fspath(path)
        self.format = _format(self.path)
        self.frames = frames
        self.seconds = seconds
        self.chunk = int(chunk)
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
        sink = (_ZarrSink if self.format == "zarr" else _NetCDFSink)(target, self.streams)
        self._t0 = time.monotonic()
        for s in self.streams:
            s.claim_semaphore()
            s.reset_tail()
            t = threading.Thread(target=self._guard, args=(self._read, s), daemon=True,
                                 name=f"dao-record-{s.name}")
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

    def _buffers(self, s: shm):
        try:
            return self._free[s.name].get_nowait()
        except queue.Empty:
            return (np.empty((self.chunk, *s.shape), s.dtype), np.empty(self.chunk, np.uint64),
                    np.empty(self.chunk, np.int64))

    def _read(self, s: shm) -> None:
        st = s._stream
        sem = s.semaphore or 0
        frames, counters, times = self._buffers(s)
        fill = 0
        start = s._tail[1]  # frames are counted by counter, so lost frames cannot stall the end
        last = start
        while True:
            want = self.chunk - fill
            if self.frames is not None:
                want = min(want, start + self.frames - last)
            n, lost = s.read_new(frames[fill:fill + want], counters[fill:fill + want],
                                 times[fill:fill + want]) if want else (0, 0)
            if n:
                self.result.lost[s.name] += lost
                last = int(counters[fill + n - 1])
                fill += n
                if self.frames is not None and last > start + self.frames:
                    over = last - start - self.frames  # a jump past the end: keep what fits
                    fill -= min(over, n)
                    last = start + self.frames
            finished = (self.frames is not None and last >= start + self.frames) \
                or self._stop.is_set() \
                or (self.seconds is not None and time.monotonic() - self._t0 >= self.seconds)
            if fill == self.chunk or (finished and fill):
                self._queue.put((s, frames, counters, times, fill))
                frames, counters, times = self._buffers(s)
                fill = 0
            if finished:
                return
            if n == 0:
                st.wait_counter(s._tail[1], 0.05, 0.0, sem)

    def _write(self, sink) -> None:
        running = len(self.streams)
        try:
            while running:
                item = self._queue.get()
                if item is None:
                    running -= 1
                    continue
                s, frames, counters, times, n = item
                sink.append(s.name, frames[:n], counters[:n], times[:n])
                self.result.frames[s.name] += n
                self._free[s.name].put((frames, counters, times))
        finally:
            sink.close()
            self.result.seconds = time.monotonic() - self._t0
            for s in self.streams:
                s.release_semaphore()


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
        ds = ds.swap_dims({"frame": "time"}).drop_vars("cnt0", errors="ignore")
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
        cols = [fits.Column(name="CNT0", format="K", array=ds["cnt0"].values.astype(np.int64)),
                fits.Column(name="TIME_NS", format="K", array=t)]
        hdus.append(fits.BinTableHDU.from_columns(cols, name=f"{name.upper()[:60]}_T"))
        ds.close()
    fits.HDUList(hdus).writeto(fits_path, overwrite=True)

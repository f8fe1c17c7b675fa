"""Labelled views of streams and FIFO histories as :class:`xarray.DataArray`.

Labels (dims, coordinates, attributes, a name) are stored with the stream, in a small JSON file
beside it (``<stream path>.xr.json``; the DAO C library never looks at it), so that any process
that opens the stream by name gets the same labelled view without being told.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from dao.streams.stream import read_private, shm, write_private

__all__ = ["set_labels", "get_labels", "default_dims", "labelled_shape", "view", "history",
           "labels_path"]

_DEFAULT_DIMS = {1: ("element",), 2: ("y", "x"), 3: ("plane", "y", "x")}


def labels_path(stream: shm) -> str:
    """Path of the file that holds a stream's labels."""
    return stream.path + ".xr.json"


def default_dims(ndim: int) -> tuple[str, ...]:
    """Dims of a stream without labels: ``element``; ``y, x``; ``plane, y, x``."""
    return _DEFAULT_DIMS[ndim]


def _fits(dims: tuple[str, ...] | list[str], shape: tuple[int, ...]) -> bool:
    """One dim per axis, or per axis but a last one of length 1 (an ``(n, 1)`` vector)."""
    return len(dims) == len(shape) or (len(dims) == len(shape) - 1 and shape[-1] == 1)


def labelled_shape(stream: shm, spec: dict[str, Any] | None = None) -> tuple[int, ...]:
    """Shape of a stream's frames as its labels see them.

    The same as the stream's shape, except for a vector stored as ``(n, 1)`` (the shape the
    DAO C library opens) and labelled with one dim: its frames are seen as ``(n,)``.
    """
    spec = get_labels(stream) if spec is None else spec
    return tuple(stream.shape[: len(spec["dims"])])


def _jsonable(values: Any) -> Any:
    a = np.asarray(values)
    if a.dtype.kind in "US":
        return a.astype(str).tolist()
    if a.dtype.kind == "M":
        return a.astype("datetime64[ns]").astype(np.int64).tolist()
    return a.tolist()


def set_labels(
    stream: shm,
    dims: tuple[str, ...] | list[str],
    coords: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
    name: str | None = None,
) -> None:
    """Store the labels of a stream's frames, for every process that opens it.

    Parameters
    ----------
    stream : dao.shm
        The stream.
    dims : sequence of str
        One name per axis of a frame, e.g. ``("axis", "subaperture")`` for slopes. A vector
        stored as ``(n, 1)`` for C consumers may take one dim, e.g. ``("actuator",)``: its
        views, histories and recordings are then ``(n,)`` vectors.
    coords : dict, optional
        Coordinates: ``{name: values}`` for a dim coordinate, or ``{name: (dims, values)}``
        (e.g. ``{"x": ("actuator", xs)}`` for actuator positions). Values are lists or
        arrays of numbers or strings.
    attrs : dict, optional
        JSON-serialisable attributes, e.g. ``{"units": "pixel"}``.
    name : str, optional
        Name of the DataArray (default the stream's name).

    Raises
    ------
    ValueError
        If the dims or a coordinate do not fit the frame shape.
    """
    dims = tuple(dims)
    if not _fits(dims, stream.shape):
        raise ValueError(f"{len(dims)} dims {dims} for frames of shape {stream.shape}: give "
                         "one name per axis")
    size = dict(zip(dims, stream.shape[: len(dims)], strict=True))
    spec = {"dims": list(dims), "coords": {}, "attrs": dict(attrs or {}),
            "name": name or stream.name}
    for cname, value in (coords or {}).items():
        cdims, values = value if isinstance(value, tuple) else ((cname,), value)
        cdims = (cdims,) if isinstance(cdims, str) else tuple(cdims)
        arr = np.asarray(values)
        want = tuple(size.get(d, -1) for d in cdims)
        if arr.shape != want:
            raise ValueError(f"coordinate {cname!r} has shape {arr.shape}, dims {cdims} "
                             f"need {want}")
        spec["coords"][cname] = {"dims": list(cdims), "data": _jsonable(arr),
                                 "dtype": str(arr.dtype)}
    # a new 0600 file (O_EXCL, never a link someone planted) renamed into place; group
    # streams get group-readable labels
    mode = 0o660 if os.stat(stream.path).st_mode & 0o060 else 0o600
    write_private(labels_path(stream), json.dumps(spec), mode)


def get_labels(stream: shm) -> dict[str, Any]:
    """The stored labels of a stream, or its default labels if none were stored."""
    try:  # a labels file of this user or of the stream's owner, never through a link
        text = read_private(labels_path(stream), os.stat(stream.path).st_uid)
        spec = json.loads(text) if text else None
        if spec and _fits(spec["dims"], stream.shape):
            return spec
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {"dims": list(default_dims(len(stream.shape))), "coords": {}, "attrs": {},
            "name": stream.name}


def coordinates(spec: dict[str, Any]) -> dict[str, Any]:
    """The coordinates of stored labels, as ``{name: (dims, values)}`` for xarray."""
    out = {}
    for cname, c in spec["coords"].items():
        data = np.asarray(c["data"])
        if c["dtype"].startswith("datetime64"):
            data = data.astype("datetime64[ns]")
        elif not c["dtype"].startswith(("<U", "|S", "str")):
            data = data.astype(c["dtype"])
        out[cname] = (tuple(c["dims"]), data)
    return out


def view(stream: shm, copy: bool = False):
    """The newest frame as a labelled :class:`xarray.DataArray`.

    Parameters
    ----------
    copy : bool
        False (default): wrap the zero-copy, read-only view, which follows the live stream
        (a frame may tear while you read it). True: a torn-free copy.
    """
    import xarray as xr

    spec = get_labels(stream)
    data = (stream.get_data() if copy else stream.view).reshape(labelled_shape(stream, spec))
    attrs = {**spec["attrs"], "stream": stream.path, "counter": stream.get_counter()}
    return xr.DataArray(data, dims=spec["dims"], coords=coordinates(spec), attrs=attrs,
                        name=spec["name"])


def history(stream: shm, n: int | None = None):
    """The last ``n`` frames (default all in the history) as a DataArray with a leading
    ``frame`` dim.

    The ``frame`` dim carries the coordinates ``cnt0`` (frame counter), ``cnt2`` (frame id
    of the source) and ``time`` (datetime64[ns], the frames' write times, UTC).
    """
    import xarray as xr

    spec = get_labels(stream)
    f = stream.get_history(n, meta=True)
    coords = coordinates(spec)
    coords["cnt0"] = ("frame", f.cnt0)
    coords["cnt2"] = ("frame", f.cnt2)
    coords["time"] = ("frame", f.time)
    data = f.data.reshape((len(f), *labelled_shape(stream, spec)))
    return xr.DataArray(data, dims=("frame", *spec["dims"]), coords=coords,
                        attrs={**spec["attrs"], "stream": stream.path}, name=spec["name"])

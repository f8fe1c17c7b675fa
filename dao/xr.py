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

from dao.shm import shm

__all__ = ["set_labels", "get_labels", "default_dims", "view", "history", "labels_path"]

_DEFAULT_DIMS = {1: ("element",), 2: ("y", "x"), 3: ("plane", "y", "x")}


def labels_path(stream: shm) -> str:
    """Path of the file that holds a stream's labels."""
    return stream.path + ".xr.json"


def default_dims(ndim: int) -> tuple[str, ...]:
    """Dims of a stream without labels: ``element``; ``y, x``; ``plane, y, x``."""
    return _DEFAULT_DIMS[ndim]


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
        One name per axis of a frame, e.g. ``("axis", "subaperture")`` for slopes.
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
    if len(dims) != len(stream.shape):
        raise ValueError(f"{len(dims)} dims {dims} for frames of shape {stream.shape}")
    size = dict(zip(dims, stream.shape, strict=True))
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
    tmp = labels_path(stream) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f)
    os.replace(tmp, labels_path(stream))


def get_labels(stream: shm) -> dict[str, Any]:
    """The stored labels of a stream, or its default labels if none were stored."""
    try:
        with open(labels_path(stream)) as f:
            spec = json.load(f)
        if len(spec["dims"]) == len(stream.shape):
            return spec
    except (OSError, ValueError, KeyError):
        pass
    return {"dims": list(default_dims(len(stream.shape))), "coords": {}, "attrs": {},
            "name": stream.name}


def _coords(spec: dict[str, Any]) -> dict[str, Any]:
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
    data = stream.get_data() if copy else stream.view
    attrs = {**spec["attrs"], "stream": stream.path, "counter": stream.get_counter()}
    return xr.DataArray(data, dims=spec["dims"], coords=_coords(spec), attrs=attrs,
                        name=spec["name"])


def history(stream: shm, n: int | None = None):
    """The last ``n`` frames (default the depth) as a DataArray with a leading ``frame`` dim.

    The ``frame`` dim carries the coordinates ``cnt0`` (frame counter) and ``time``
    (datetime64[ns], the frames' write times, UTC).
    """
    import xarray as xr

    spec = get_labels(stream)
    frames, counters, times = stream.get_history(n, meta=True)
    coords = _coords(spec)
    coords["cnt0"] = ("frame", counters)
    coords["time"] = ("frame", times.astype("datetime64[ns]"))
    return xr.DataArray(frames, dims=("frame", *spec["dims"]), coords=coords,
                        attrs={**spec["attrs"], "stream": stream.path}, name=spec["name"])

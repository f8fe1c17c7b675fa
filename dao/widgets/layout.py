"""How a stream's frames are drawn: as an image, as a map on a grid, or as curves.

:func:`frame_layout` reads a stream's labels (:mod:`dao.streams.labels`) and returns a
:class:`FrameLayout` that turns each frame into the array a view draws:

- ``"image"``: a 2-D frame (dims ``y``, ``x``, or no labels), or one plane of a 3-D frame;
- ``"grid"``: a vector placed on its grid, when its labels give each element a column ``x``
  and a row ``y`` (non-dimension coordinates along one dim): DM commands by ``actuator``,
  slopes by ``subaperture`` (with an ``axis`` dim, the x and y maps side by side). Cells
  without an element are NaN, drawn as background;
- ``"vector"``: curves against the element index, one per row of a 2-D frame (slopes as
  ``axis`` x/y over ``subaperture``), or one for a 1-D frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dao.streams.labels import get_labels, labelled_shape

__all__ = ["FrameLayout", "frame_layout", "layout_for", "KINDS"]

#: The ways of drawing a frame.
KINDS = ("image", "grid", "vector")

#: Most curves drawn for a 2-D vector frame; beyond it the frame is drawn as an image.
MAX_SERIES = 8

#: dtypes sent as they are; the others are sent as float32.
_SENT_AS_IS = {np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32",
                                     "float32")}


@dataclass
class FrameLayout:
    """How to turn a frame into what a view draws.

    Attributes
    ----------
    kind : str
        ``"image"``, ``"grid"`` or ``"vector"``.
    shape : tuple of int
        Shape of what is drawn: ``(rows, columns)`` of the image, or ``(series, elements)``.
    series : list of str
        The curves' names (vectors), or the panels' names (grids), else empty.
    dims : tuple of str
        The frame's labelled dims.
    """

    kind: str
    shape: tuple[int, int]
    series: list[str] = field(default_factory=list)
    dims: tuple[str, ...] = ()
    _frame_shape: tuple[int, ...] = ()
    _index: np.ndarray | None = None  # grid: flat target of every element
    _plane: int = 0

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """The C-contiguous array to draw for ``frame`` (a frame of the stream, any shape
        whose size matches): same dtype where the browser can hold it, else float32."""
        a = np.asarray(frame).reshape(self._frame_shape)
        if self.kind == "grid":
            out = np.full(self.shape[0] * self.shape[1], np.nan, np.float32)
            out[self._index] = a.ravel()
            return out.reshape(self.shape)
        if self.kind == "image" and a.ndim == 3:
            a = a[self._plane]
        a = a.reshape(self.shape)
        if a.dtype not in _SENT_AS_IS:
            a = a.astype(np.float32)
        return np.ascontiguousarray(a)


def _ranks(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Index of each value among the distinct values, and their number."""
    uniq, inv = np.unique(np.round(np.asarray(values, np.float64), 6), return_inverse=True)
    return inv.reshape(-1), len(uniq)


def _grid_dim(spec: dict[str, Any]) -> str | None:
    """The dim along which the labels give each element a column ``x`` and a row ``y``."""
    c = spec.get("coords", {})
    for d in spec["dims"]:
        if all(k in c and c[k]["dims"] == [d] and k != d for k in ("x", "y")):
            return d
    return None


def frame_layout(stream, kind: str | None = None, plane: int = 0) -> FrameLayout:
    """The layout that draws ``stream``'s frames (see the module's description).

    Parameters
    ----------
    stream : dao.shm
        The stream.
    kind : str, optional
        Force ``"image"``, ``"grid"`` or ``"vector"``; default: chosen from the labels.
    plane : int
        The plane drawn of a 3-D frame.

    Raises
    ------
    ValueError
        An unknown ``kind``, ``"grid"`` for a stream whose labels place no element on a grid,
        or ``"image"`` for a 1-D frame.
    """
    spec = get_labels(stream)
    return layout_for(spec, labelled_shape(stream, spec), kind, plane, stream.name)


def layout_for(spec: dict[str, Any], shape: tuple[int, ...], kind: str | None = None,
               plane: int = 0, name: str = "") -> FrameLayout:
    """The layout of frames of ``shape`` labelled by ``spec`` (the labels of
    :mod:`dao.streams.labels`: ``dims``, ``coords``, ``name``); see :func:`frame_layout`.
    ``name`` names the frames in error messages."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    dims = tuple(spec["dims"])
    shape = tuple(shape)
    gdim = _grid_dim(spec)
    if kind == "grid" and gdim is None:
        raise ValueError(f"{name!r} has no grid positions: label a dim with "
                         "coordinates x and y along it (dao.streams.labels.set_labels)")
    if kind is None:
        if gdim is not None:
            kind = "grid"
        elif len(shape) == 1 or (len(shape) == 2 and dims != ("y", "x")
                                 and shape[0] <= MAX_SERIES and "x" not in dims):
            kind = "vector"
        else:
            kind = "image"
    if kind == "grid":
        return _grid_layout(spec, dims, shape, gdim)
    if kind == "vector":
        if len(shape) == 1:
            return FrameLayout("vector", (1, shape[0]), [spec["name"]], dims, shape)
        rows = int(np.prod(shape[:-1]))
        names = _names(spec, dims[0], rows) if len(shape) == 2 else [f"row {i}" for i in
                                                                    range(rows)]
        return FrameLayout("vector", (rows, shape[-1]), names, dims, shape)
    if len(shape) < 2:
        raise ValueError(f"{name!r} has 1-D frames of shape {shape}: view it "
                         "as kind='vector' (or label it with grid positions x, y)")
    if len(shape) > 3:
        raise ValueError(f"{name!r} has {len(shape)}-D frames: views draw 1-D "
                         "to 3-D frames")
    if len(shape) == 3 and not 0 <= plane < shape[0]:
        raise ValueError(f"plane {plane} out of range: the frames have {shape[0]} planes")
    return FrameLayout("image", tuple(shape[-2:]), [], dims, shape, _plane=int(plane))


def _names(spec: dict[str, Any], dim: str, n: int) -> list[str]:
    """The labels of the ``n`` positions along ``dim``: its coordinate, else ``dim=i``."""
    c = spec.get("coords", {}).get(dim)
    if c is not None and c["dims"] == [dim]:
        return [str(v) for v in c["data"]]
    return [f"{dim}={i}" for i in range(n)]


def _grid_layout(spec: dict[str, Any], dims: tuple[str, ...], shape: tuple[int, ...],
                 gdim: str) -> FrameLayout:
    c = spec["coords"]
    col, nx = _ranks(c["x"]["data"])
    row, ny = _ranks(c["y"]["data"])
    row = (ny - 1) - row  # y grows upwards on the map
    g = dims.index(gdim)
    others = [i for i in range(len(shape)) if i != g]
    panels = int(np.prod([shape[i] for i in others])) if others else 1
    width = panels * nx + (panels - 1)  # a blank column between two panels
    idx = np.indices(shape)
    panel = np.zeros(shape, np.int64)
    for i in others:  # C-order number of the panel of every element
        panel = panel * shape[i] + idx[i]
    elem = idx[g]
    target = row[elem] * width + panel * (nx + 1) + col[elem]
    names = _names(spec, dims[others[0]], panels) if len(others) == 1 else []
    return FrameLayout("grid", (ny, width), names, dims, shape,
                       _index=target.ravel().astype(np.intp))

"""Hardware profiles: what this machine costs for each stage of the AO loop (issue 14).

A :class:`HardwareProfile` holds what the latency model needs to cost a loop on one machine:

- ``memory_bandwidth_bytes_per_s``: a copy of a large array (``numpy.copyto`` of float64),
  bytes moved per second with the read and the write each counted once (``2 x`` the array's
  bytes per copy; the write-allocate traffic of the destination is not counted);
- ``hop_stream_s``: the wake-up latency of a hop between two OS processes through a dao stream,
  from the writer's ``set_data`` (the frame's write timestamp) to the reader's
  ``get_data(check=True, semNb=...)`` returning (the call :class:`dao.runtime.Component` makes
  for its trigger input: it sleeps on the stream's semaphore), the reader's copy of the frame
  included;
- ``hop_zmq_s``: the same for a ZeroMQ PUB/SUB hop of a small frame (two parts: a 16-byte
  header and the payload) between two processes over loopback TCP (plain pyzmq, not
  :mod:`dao.net`);
- ``kernels``: the per-frame calls of the loop's components (:mod:`dao.loop.components`),
  measured in-process, warm (after Numba compilation), one by one, on the loops' own geometries
  (:data:`LOOPS`): each a :class:`KernelTable` of size -> :class:`Quantiles`, interpolated in
  log-log by :meth:`HardwareProfile.cost`.

Every duration is in seconds; every cost is a :class:`Quantiles` (p50, p90, p99 and 256
quantiles to draw from), never a single run. :func:`calibrate` measures a profile on this
machine; :meth:`HardwareProfile.save` / :meth:`HardwareProfile.load` keep it as JSON. Profiles
of other hardware (not measured: published figures, with their sources) are in
:mod:`dao.latency.catalogue`.

What the kernels are (the component, the call, the size unit):

============================================ ============================ ====================
kernel                                       call (per frame)             size
============================================ ============================ ====================
``slopes.shack-hartmann.<method>``           ``ShackHartmann.measure``    valid subapertures
``slopes.pyramid.<mode>``                    ``Pyramid.measure``          valid pupil pixels
``slopes.subtract_reference``                ``numpy.subtract`` (float32) slope values
``law.<name>``                               ``ControlLaw.step`` (stock)  matrix elements
``stream.write``                             ``shm.set_data``             frame bytes
``stream.write_cold``                        ``shm.set_data``, first pass frame bytes
``stream.read``                              ``shm.get_data(out=...)``    frame bytes
``component.slopes.shack-hartmann``          ``Slopes.process``           valid subapertures
``component.slopes.pyramid``                 ``Slopes.process``           valid pupil pixels
``component.controller.<law>``               ``Controller.process``       matrix elements
``hop.loop.<sensor>.wfs_to_slopes``          a running loop's hop         image bytes
``hop.loop.<sensor>.slopes_to_controller``   a running loop's hop         slopes bytes
============================================ ============================ ====================

``stream.write`` is a write into a FIFO whose pages were all written before (the steady
state); ``stream.write_cold`` one on the first pass through a new FIFO (every slot's pages
touched for the first time: page faults), the state of the demo's streams, whose depth (8192
frames, images up to 64 MiB) is more than a ``dao demo`` run writes. ``matrix elements`` is
``n_actuators * n_slopes``: the control matrix a law multiplies each
frame. ``component.*`` is a real component (:class:`dao.loop.components.Slopes`,
:class:`~dao.loop.components.Controller`) made, initialised and enabled in this process on
private streams, its ``process`` called directly (no sockets, no processing thread): the
estimator or the law, the reference subtraction, the output stream write and the Python
between them, called as in the demo's loop: once per frame period, while the loop's simulated
camera renders frames in another process (:func:`calibrate`, ``camera_beside``). A
component's per-frame work in the loop is then ``component.*`` + ``stream.write`` of its
32-byte timing record, after the hop that wakes it and reads its input: ``hop.loop.*``,
measured in running loops by :func:`dao.latency.loopmodel.measure_loop_hops` (the input
frame's write time to the component's start), else ``hop_stream_s`` + ``stream.read``.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime
import json
import math
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dao.errors import DaoError

__all__ = ["Quantiles", "KernelPoint", "KernelTable", "HardwareProfile", "ProfileError",
           "ExtrapolationError", "calibrate", "load", "loop_geometry", "LOOPS",
           "N_QUANTILES", "SCHEMA", "MAX_EXTRAPOLATION"]

#: The format written by :meth:`HardwareProfile.save` (refused by :meth:`~HardwareProfile.load`
#: when it differs).
SCHEMA = "dao.latency.profile/2"
#: Quantiles kept of each measured distribution (at levels ``(i + 0.5) / N_QUANTILES``).
N_QUANTILES = 256
#: How far :meth:`KernelTable.cost` goes beyond the measured sizes (a factor on the size).
MAX_EXTRAPOLATION = 1.5

#: The loops whose geometries are measured: label -> (sensor, subapertures across).
#: The demo's Shack-Hartmann at 10x10, 20x20, 40x40 and the pyramid at the same sizes.
LOOPS: dict[str, tuple[str, int]] = {
    "sh10": ("shack-hartmann", 10), "sh20": ("shack-hartmann", 20),
    "sh40": ("shack-hartmann", 40), "pyr10": ("pyramid", 10), "pyr20": ("pyramid", 20),
    "pyr40": ("pyramid", 40),
}
#: Shack-Hartmann centroiding methods and pyramid modes of the loop
#: (:data:`dao.loop.config.CENTROID_METHODS`, :data:`~dao.loop.config.PYRAMID_MODES`).
_SH_METHODS = ("cog", "tcog", "wcog", "brightest")
_PYR_MODES = ("slopes", "slopes_global", "intensities")
_LAWS = ("modal", "integrator", "pid", "pol")


class ProfileError(DaoError, ValueError):
    """A profile file that cannot be read (foreign, truncated, another schema, unknown keys)
    or a profile that lacks what was asked."""


class ExtrapolationError(ProfileError):
    """A cost asked for a size too far outside the measured ones."""


# -- quantiles --------------------------------------------------------------------------------
_LEVELS = (np.arange(N_QUANTILES) + 0.5) / N_QUANTILES


@dataclass(frozen=True)
class Quantiles:
    """A distribution of durations, in seconds, kept as quantiles.

    Attributes
    ----------
    p50_s, p90_s, p99_s : float
        Median, 90th and 99th percentiles of the raw samples, seconds.
    samples_s : tuple of float
        :data:`N_QUANTILES` quantiles at levels ``(i + 0.5) / N_QUANTILES`` (ascending),
        seconds: draw from them with :meth:`draw`.
    n : int
        Raw measurements behind them.
    """

    p50_s: float
    p90_s: float
    p99_s: float
    samples_s: tuple[float, ...]
    n: int

    @classmethod
    def from_samples(cls, seconds: Any) -> Quantiles:
        """The quantiles of raw durations (seconds; at least 2, finite, >= 0)."""
        a = np.asarray(seconds, np.float64).ravel()
        if a.size < 2 or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"need at least 2 finite durations >= 0, got {a.size}")
        p50, p90, p99 = np.percentile(a, (50, 90, 99))
        return cls(float(p50), float(p90), float(p99),
                   tuple(float(v) for v in np.quantile(a, _LEVELS)), int(a.size))

    @classmethod
    def median_of(cls, runs: Iterable[Quantiles]) -> Quantiles:
        """The typical run of several: each quantile level's median over the runs (a spell
        of another process' load in one run moves its tail, not the median's)."""
        qs = list(runs)
        if not qs:
            raise ValueError("median_of needs at least one run")
        med = np.median(np.array([q.samples_s for q in qs]), axis=0)
        p50, p90, p99 = (float(np.median([getattr(q, k) for q in qs]))
                         for k in ("p50_s", "p90_s", "p99_s"))
        return cls(p50, p90, p99, tuple(float(v) for v in med), sum(q.n for q in qs))

    def quantile(self, q: float) -> float:
        """The duration (s) at level ``q`` (0 to 1), interpolated between the kept quantiles."""
        return float(np.interp(q, _LEVELS, self.samples_s))

    @property
    def mean_s(self) -> float:
        """Mean of the kept quantiles, seconds."""
        return float(np.mean(self.samples_s))

    def draw(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``n`` durations (s) drawn from the distribution (inverse CDF of the quantiles)."""
        rng = np.random.default_rng() if rng is None else rng
        return np.interp(rng.random(n), _LEVELS, self.samples_s)

    def scaled(self, factor: float) -> Quantiles:
        """Every duration times ``factor`` (> 0)."""
        f = float(factor)
        if not f > 0 or not math.isfinite(f):
            raise ValueError(f"scale factor {factor!r}: must be a finite number > 0")
        return Quantiles(self.p50_s * f, self.p90_s * f, self.p99_s * f,
                         tuple(v * f for v in self.samples_s), self.n)

    def to_dict(self) -> dict[str, Any]:
        return {"p50_s": self.p50_s, "p90_s": self.p90_s, "p99_s": self.p99_s,
                "samples_s": list(self.samples_s), "n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "quantiles") -> Quantiles:
        _keys(d, {"p50_s", "p90_s", "p99_s", "samples_s", "n"}, where)
        s = np.asarray(d["samples_s"], np.float64)
        if s.shape != (N_QUANTILES,) or not np.all(np.isfinite(s)) or np.any(np.diff(s) < 0):
            raise ProfileError(f"{where}.samples_s: {N_QUANTILES} ascending finite durations "
                               "expected")
        return cls(float(d["p50_s"]), float(d["p90_s"]), float(d["p99_s"]),
                   tuple(float(v) for v in s), int(d["n"]))

    def __repr__(self) -> str:
        return (f"Quantiles(p50={self.p50_s * 1e6:.2f} us, p90={self.p90_s * 1e6:.2f} us, "
                f"p99={self.p99_s * 1e6:.2f} us, n={self.n})")


def _keys(d: Any, allowed: set[str], where: str, required: set[str] | None = None) -> None:
    """Refuse a non-mapping, unknown keys and missing ones (``required``: default all)."""
    if not isinstance(d, Mapping):
        raise ProfileError(f"{where}: a JSON object expected, got {type(d).__name__}")
    unknown = set(d) - allowed
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: "
                           f"{', '.join(sorted(allowed))}); written by a newer dao?")
    missing = (allowed if required is None else required) - set(d)
    if missing:
        raise ProfileError(f"{where}: missing key(s) {', '.join(sorted(missing))}: a truncated "
                           "or hand-edited profile? calibrate again")


# -- kernel tables ----------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelPoint:
    """One measured size of a kernel: ``size`` (in the table's unit), the loop it comes from
    (a :data:`LOOPS` label, or ``""``), and its cost."""

    size: float
    cost: Quantiles
    loop: str = ""


@dataclass
class KernelTable:
    """A kernel's cost against its size.

    Attributes
    ----------
    name : str
        The kernel (see the module docstring).
    size_unit : str
        What ``size`` counts (``valid subapertures``, ``matrix elements``, ``bytes``...).
    call : str
        The call measured.
    points : list of KernelPoint
        Ascending sizes.
    """

    name: str
    size_unit: str
    call: str
    points: list[KernelPoint] = field(default_factory=list)

    def add(self, size: float, cost: Quantiles, loop: str = "") -> None:
        """Add (or replace) the measurement at ``size``."""
        pts = [p for p in self.points if p.size != size]
        pts.append(KernelPoint(float(size), cost, loop))
        self.points = sorted(pts, key=lambda p: p.size)

    @property
    def sizes(self) -> list[float]:
        return [p.size for p in self.points]

    def cost(self, size: float, max_extrapolation: float = MAX_EXTRAPOLATION) -> Quantiles:
        """The cost at ``size``, interpolated in log-log between the measured sizes.

        Each quantile level is interpolated on its own (log of duration against log of size),
        so the quantiles stay ascending. Beyond the measured range the end segment's log-log
        slope (clipped to 0..2) is used, up to a factor ``max_extrapolation`` on the size.

        Raises
        ------
        ExtrapolationError
            ``size`` is farther than that from the measured sizes (or the kernel was measured
            at one size only and ``size`` is not it).
        """
        s = float(size)
        pts = self.points
        if not pts:
            raise ProfileError(f"kernel {self.name!r} has no measurement")
        if not s > 0 or not math.isfinite(s):
            raise ValueError(f"size {size!r} of {self.name!r}: must be a finite number > 0")
        lo, hi = pts[0].size, pts[-1].size
        for p in pts:
            if math.isclose(p.size, s, rel_tol=1e-9):
                return p.cost
        if len(pts) == 1 or s < lo / max_extrapolation or s > hi * max_extrapolation:
            raise ExtrapolationError(
                f"kernel {self.name!r}: size {s:g} {self.size_unit} is outside the measured "
                f"{lo:g} .. {hi:g} (extrapolation allowed up to a factor "
                f"{max_extrapolation:g}{'; one size measured only' if len(pts) == 1 else ''}): "
                "calibrate on a loop of that size (calibrate(loops=...), LOOPS) or use a "
                "size within range")
        i = bisect.bisect_left(self.sizes, s)
        i = min(max(i, 1), len(pts) - 1)
        a, b = pts[i - 1], pts[i]
        def logs_of(c: Quantiles) -> np.ndarray:  # p50, p90, p99, then the quantiles
            v = np.asarray([c.p50_s, c.p90_s, c.p99_s, *c.samples_s], np.float64)
            return np.log(np.maximum(v, 1e-15))

        la, lb = logs_of(a.cost), logs_of(b.cost)
        span = math.log(b.size) - math.log(a.size)
        t = (math.log(s) - math.log(a.size)) / span
        if 0.0 <= t <= 1.0:
            logs = (1.0 - t) * la + t * lb
        else:  # extrapolation: the end segment's slope, clipped to 0..2
            slope = np.clip((lb - la) / span, 0.0, 2.0)
            base, lbase = (a, la) if t < 0 else (b, lb)
            logs = lbase + slope * (math.log(s) - math.log(base.size))
        p50, p90, p99 = (float(v) for v in np.exp(logs[:3]))
        q = np.exp(np.maximum.accumulate(logs[3:]))
        return Quantiles(p50, p90, p99, tuple(float(v) for v in q), min(a.cost.n, b.cost.n))

    def to_dict(self) -> dict[str, Any]:
        return {"size_unit": self.size_unit, "call": self.call,
                "points": [{"size": p.size, "loop": p.loop, "cost": p.cost.to_dict()}
                           for p in self.points]}

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any], where: str) -> KernelTable:
        _keys(d, {"size_unit", "call", "points"}, where)
        if not isinstance(d["points"], list) or not d["points"]:
            raise ProfileError(f"{where}.points: a non-empty list expected")
        t = cls(name, str(d["size_unit"]), str(d["call"]))
        for i, p in enumerate(d["points"]):
            w = f"{where}.points[{i}]"
            _keys(p, {"size", "loop", "cost"}, w)
            size = float(p["size"])
            if not size > 0 or not math.isfinite(size):
                raise ProfileError(f"{w}.size: a finite number > 0 expected")
            t.add(size, Quantiles.from_dict(p["cost"], f"{w}.cost"), str(p["loop"]))
        return t


# -- the profile ------------------------------------------------------------------------------
_PROFILE_KEYS = {"name", "source", "measured", "cores", "memory_bandwidth_bytes_per_s",
                 "hop_stream_s", "hop_zmq_s", "hop_frame_bytes", "kernels", "loops", "notes",
}


@dataclass
class HardwareProfile:
    """What one machine costs for the AO loop's stages (see the module docstring).

    Attributes
    ----------
    name : str
        The machine (a host name, or a catalogue entry's name).
    source : str
        Where the figures come from: ``measured on <host> <ISO date> by dao latency
        calibrate``, or a catalogue entry's citations and derivation.
    cores : int
        CPU cores this process may run on.
    memory_bandwidth_bytes_per_s : float
        Copy of a large float64 array, bytes moved per second: read and write each counted
        once (2 x the array's bytes per copy), the median of many copies.
    hop_stream_s : Quantiles or None
        Latency of a dao stream hop between two processes (writer's frame timestamp to the
        sleeping reader's ``get_data(check=True)`` returning), seconds; None if unknown.
    hop_zmq_s : Quantiles or None
        The same through ZeroMQ PUB/SUB over loopback TCP, seconds; None if unknown.
    hop_frame_bytes : int
        Payload bytes of the frames of both hop measurements.
    kernels : dict of str to KernelTable
        Cost against size of each per-frame call of the loop (module docstring).
    loops : dict of str to dict
        The geometry of each loop measured (:func:`loop_geometry`), by :data:`LOOPS` label:
        the sizes to look the kernels up with.
    measured : bool
        True for a profile measured by :func:`calibrate`; False for a catalogue entry.
    notes : dict of str to str
        Anything else worth knowing: CPU model, versions, Numba threads, how long it took,
        derivation factors.
    """

    name: str
    source: str
    cores: int
    memory_bandwidth_bytes_per_s: float
    hop_stream_s: Quantiles | None = None
    hop_zmq_s: Quantiles | None = None
    hop_frame_bytes: int = 0
    kernels: dict[str, KernelTable] = field(default_factory=dict)
    loops: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured: bool = True
    notes: dict[str, str] = field(default_factory=dict)

    def cost(self, kernel: str, size: float,
             max_extrapolation: float = MAX_EXTRAPOLATION) -> Quantiles:
        """The cost of ``kernel`` at ``size`` (seconds; see :meth:`KernelTable.cost`).

        Raises
        ------
        ProfileError
            An unknown kernel (the known ones named).
        ExtrapolationError
            ``size`` too far outside the measured sizes.
        """
        table = self.kernels.get(kernel)
        if table is None:
            raise ProfileError(f"profile {self.name!r} has no kernel {kernel!r}; it has: "
                               f"{', '.join(sorted(self.kernels)) or 'none'}")
        return table.cost(size, max_extrapolation)

    def loop_costs(self, label: str) -> dict[str, Quantiles]:
        """The cost of every kernel at the sizes of the measured loop ``label`` (those
        measured on it, not interpolated), by kernel name."""
        if label not in self.loops:
            raise ProfileError(f"profile {self.name!r} has no loop {label!r}; it has: "
                               f"{', '.join(self.loops) or 'none'}")
        return {name: p.cost for name, t in self.kernels.items() for p in t.points
                if p.loop == label}

    # -- files --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "measured": self.measured,
            "cores": self.cores,
            "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
            "hop_stream_s": None if self.hop_stream_s is None else self.hop_stream_s.to_dict(),
            "hop_zmq_s": None if self.hop_zmq_s is None else self.hop_zmq_s.to_dict(),
            "hop_frame_bytes": self.hop_frame_bytes,
            "kernels": {k: t.to_dict() for k, t in sorted(self.kernels.items())},
            "loops": self.loops, "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "profile") -> HardwareProfile:
        """A profile from :meth:`to_dict`'s mapping (unknown or missing keys refused)."""
        _keys(d, _PROFILE_KEYS, where, _PROFILE_KEYS)
        try:
            bw = float(d["memory_bandwidth_bytes_per_s"])
            cores = int(d["cores"])
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"{where}: cores and memory_bandwidth_bytes_per_s must be "
                               f"numbers ({exc})") from exc
        if not bw > 0 or not math.isfinite(bw) or cores < 1:
            raise ProfileError(f"{where}: cores >= 1 and a finite memory bandwidth > 0 "
                               "expected")
        hops = {k: None if d[k] is None else Quantiles.from_dict(d[k], f"{where}.{k}")
                for k in ("hop_stream_s", "hop_zmq_s")}
        if not isinstance(d["kernels"], Mapping) or not isinstance(d["loops"], Mapping):
            raise ProfileError(f"{where}: kernels and loops must be JSON objects")
        if not isinstance(d["notes"], Mapping):
            raise ProfileError(f"{where}.notes: a JSON object expected")
        return cls(
            name=str(d["name"]), source=str(d["source"]), cores=cores,
            memory_bandwidth_bytes_per_s=bw, hop_frame_bytes=int(d["hop_frame_bytes"]),
            kernels={str(k): KernelTable.from_dict(str(k), t, f"{where}.kernels.{k}")
                     for k, t in d["kernels"].items()},
            loops={str(k): dict(v) for k, v in d["loops"].items()},
            measured=bool(d["measured"]), notes={str(k): str(v) for k, v in d["notes"].items()},
            **hops)

    def save(self, path: str | os.PathLike) -> str:
        """Write the profile to ``path`` as JSON (mode 0600, replaced atomically); return
        the path."""
        path = os.fspath(path)
        text = json.dumps({"schema": SCHEMA, "profile": self.to_dict()}, indent=1,
                          allow_nan=False)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(text + "\n")
            os.replace(tmp, path)
        except BaseException:
            with _suppress_oserror():
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> HardwareProfile:
        """Read a profile written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            No such file.
        ProfileError
            Not a dao hardware profile (not JSON, truncated, another schema, unknown or
            missing keys, malformed values), with what is wrong.
        """
        path = os.fspath(path)
        with open(path, "rb") as f:
            raw = f.read()
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError(f"{path} is not a dao hardware profile: not JSON ({exc}); is it "
                               "truncated? calibrate again (dao.latency.profile.calibrate)") \
                from exc
        if not isinstance(doc, dict) or "schema" not in doc:
            raise ProfileError(f"{path} is not a dao hardware profile (no 'schema' key)")
        if doc["schema"] != SCHEMA:
            raise ProfileError(f"{path} is a profile of schema {doc['schema']!r}; this dao "
                               f"reads {SCHEMA!r}: calibrate again")
        _keys(doc, {"schema", "profile"}, path)
        try:
            return cls.from_dict(doc["profile"], f"{path}: profile")
        except ProfileError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ProfileError(f"{path}: a malformed profile ({type(exc).__name__}: {exc})") \
                from exc


def load(path: str | os.PathLike) -> HardwareProfile:
    """:meth:`HardwareProfile.load`."""
    return HardwareProfile.load(path)


class _suppress_oserror:  # noqa: N801 - used as a context manager
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


# -- loop geometry ----------------------------------------------------------------------------
def _bench(sensor: str, n_subap: int) -> tuple[Any, Any, dict[str, Any]]:
    """The loop's simulated bench and slope estimator, as :func:`dao.loop.calibrate` makes
    them (default configuration at that size)."""
    from dao.hw import SimulatedBench
    from dao.loop.config import bench_arguments, load_loop_config

    cfg = load_loop_config({"bench": {"n_subap": int(n_subap)}, "sensor": {"type": sensor}})
    bench = SimulatedBench(**bench_arguments(cfg))
    sc = cfg["sensor"]
    if bench.sensor == "pyramid":
        est = bench.slope_estimator(mode=str(sc.get("mode", "slopes")))
    else:
        est = bench.slope_estimator(method=str(sc.get("method", "cog")))
    return bench, est, cfg


def _geometry(sensor: str, n_subap: int, bench: Any, est: Any, cfg: dict[str, Any]
              ) -> dict[str, Any]:
    n_est = int(est.n_pixels if sensor == "pyramid" else est.n_subapertures)
    n_slopes = 2 * n_est
    n_act = int(bench.n_actuators)
    wfs = tuple(int(v) for v in bench.wfs.shape)
    return {
        "sensor": sensor, "n_subap": int(n_subap), "wfs_shape": list(wfs),
        "estimator_size": n_est,
        "estimator_unit": "valid pupil pixels" if sensor == "pyramid" else "valid subapertures",
        "n_slopes": n_slopes, "n_actuators": n_act,
        "n_modes": n_act - int(cfg["calibration"].get("drop_modes", 2)),
        "matrix_elements": n_act * n_slopes, "wfs_bytes": 4 * wfs[0] * wfs[1],
        "slopes_bytes": 4 * n_slopes, "command_bytes": 4 * n_act, "timing_bytes": 32,
    }


def loop_geometry(sensor: str, n_subap: int) -> dict[str, Any]:
    """The sizes a loop's kernels are looked up with, for a loop of the default configuration
    with ``n_subap`` subapertures across and sensor ``sensor``.

    Returns
    -------
    dict
        ``sensor``, ``n_subap``, ``wfs_shape``; ``estimator_size`` (valid subapertures of a
        Shack-Hartmann, valid pupil pixels of a pyramid: the size of ``slopes.*`` and
        ``component.slopes.*``), ``n_slopes`` (the size of ``slopes.subtract_reference``),
        ``n_actuators``, ``n_modes``, ``matrix_elements`` (``n_actuators * n_slopes``: the
        size of ``law.*`` and ``component.controller.*``), and the bytes of each stream's
        frame: ``wfs_bytes``, ``slopes_bytes``, ``command_bytes``, ``timing_bytes`` (the
        sizes of ``stream.*``).
    """
    bench, est, cfg = _bench(sensor, n_subap)
    return _geometry(sensor, n_subap, bench, est, cfg)


# -- measuring --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Budget:
    """How long each measurement runs: at least ``min_reps`` calls, then until ``max_reps``
    calls or ``seconds`` have passed."""

    min_reps: int
    max_reps: int
    seconds: float
    hops: int
    copy_bytes: int
    copies: int


_QUICK = _Budget(min_reps=40, max_reps=3000, seconds=0.08, hops=500, copy_bytes=64 << 20,
                 copies=8)
_FULL = _Budget(min_reps=200, max_reps=20000, seconds=0.3, hops=3000, copy_bytes=256 << 20,
                copies=20)


#: Seconds slept between two calls of a stage measured "as in the loop" when no camera runs
#: beside (:func:`_time_calls` with ``cold=True``): the loop's processes sleep between frames.
COLD_GAP_S = 0.5e-3


def cache_sizes() -> dict[int, int]:
    """This machine's CPU caches: ``{level: bytes}`` (the largest of each level), from
    ``/sys/devices/system/cpu/cpu0/cache``; empty where the system does not say."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    out: dict[int, int] = {}
    try:
        entries = os.listdir(base)
    except OSError:
        return out
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for e in entries:
        try:
            with open(os.path.join(base, e, "level")) as f:
                level = int(f.read())
            with open(os.path.join(base, e, "size")) as f:
                text = f.read().strip()
            size = int(text[:-1]) * units[text[-1].upper()] if text[-1:].isalpha() \
                else int(text)
        except (OSError, ValueError, KeyError):
            continue
        out[level] = max(out.get(level, 0), size)
    return out


def cold_bytes() -> int:
    """Bytes written before each call of a stage measured "as in the loop": a core's private
    cache (level 2; 2 MiB where unknown), which the other processes sharing the core overwrite
    between two frames."""
    return cache_sizes().get(2, 2 << 20)


def _time_calls(fn: Callable[[], Any], budget: _Budget, warm: int = 5,
                cold: bool = False, gap_s: float = COLD_GAP_S) -> np.ndarray:
    """Durations (s) of repeated calls of ``fn``, each timed on its own (``perf_counter_ns``
    around the call: about 0.1 us of the timing itself is included). ``cold``: as a loop's
    stage runs, once per frame: :func:`cold_bytes` written and ``gap_s`` slept before each
    call (the loop's frame period when its camera renders beside, :func:`_camera_beside`)."""
    for _ in range(warm):
        fn()
    reps = budget.max_reps if not cold else min(budget.max_reps, 4 * budget.min_reps)
    out = np.empty(reps, np.int64)
    scratch = np.empty(cold_bytes() // 8) if cold else None
    clock = time.perf_counter_ns
    deadline = clock() + int(budget.seconds * 1e9) * (4 if cold else 1)
    i = 0
    while i < reps:
        if scratch is not None:
            scratch.fill(i)
            time.sleep(gap_s)
        t0 = clock()
        fn()
        t1 = clock()
        out[i] = t1 - t0
        i += 1
        if i >= budget.min_reps and clock() > deadline:
            break
    return out[:i] * 1e-9


def _render(sensor: str, n_subap: int) -> None:  # pragma: no cover - a child process
    """The loop's simulated camera (run in a second process by :func:`_camera_beside`):
    renders frames as fast as it can, as the demo's camera does; prints its median frame
    period (s) once, and ends when its parent does."""
    bench, _, _ = _bench(sensor, n_subap)
    command = np.zeros(bench.n_actuators)
    for _ in range(3):
        bench.step(command)
    t = []
    for _ in range(20):
        t0 = time.perf_counter()
        bench.step(command)
        t.append(time.perf_counter() - t0)
    print(float(np.median(t)), flush=True)
    parent = os.getppid()
    while os.getppid() == parent:
        bench.step(command)


@contextlib.contextmanager
def _camera_beside(sensor: str, n_subap: int, timeout: float = 120.0) -> Iterator[float]:
    """The loop's simulated camera rendering in a second process while the block runs (with
    the loop's Numba threads); yields its frame period (s)."""
    from dao.loop.aoloop import kernel_threads

    env = {**os.environ, "NUMBA_NUM_THREADS": str(kernel_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from dao.latency.profile import _render; "
         f"_render({sensor!r}, {int(n_subap)})"], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        try:
            period = float(line)
        except ValueError:
            raise _child_failed(proc, f"simulated camera ({sensor} {n_subap}x{n_subap})") \
                from None
        yield period
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def _memory_bandwidth(budget: _Budget) -> tuple[float, str]:
    n = budget.copy_bytes // 8
    src = np.ones(n, np.float64)
    dst = np.zeros(n, np.float64)
    np.copyto(dst, src)  # touch every page first
    t = []
    for _ in range(budget.copies):
        t0 = time.perf_counter_ns()
        np.copyto(dst, src)
        t.append(time.perf_counter_ns() - t0)
    t_s = np.asarray(t) * 1e-9
    moved = 2 * n * 8
    bw = moved / float(np.median(t_s))
    note = (f"numpy.copyto of {n * 8 >> 20} MiB float64, {budget.copies} copies: "
            f"{moved / t_s.max() / 1e9:.2f} .. {moved / t_s.min() / 1e9:.2f} GB/s "
            "(read + write counted, median kept)")
    return bw, note


def _tmp_streams() -> tuple[str, str]:
    """A private folder for the profile's streams (short: stream paths are < 80 bytes) and a
    name prefix unique machine-wide (stream semaphores are named after the file)."""
    folder = tempfile.mkdtemp(prefix="daoprof")
    return folder, f"p{os.getpid()}{os.urandom(3).hex()}"


def _remove_streams(folder: str) -> None:
    from dao.streams.stream import remove

    for f in os.listdir(folder):
        p = os.path.join(folder, f)
        if f.endswith(".im.shm"):
            with _suppress_oserror():
                try:
                    remove(p)
                except DaoError:
                    os.unlink(p)
        else:
            with _suppress_oserror():
                os.unlink(p)
    with _suppress_oserror():
        os.rmdir(folder)


def _child(code: str) -> subprocess.Popen:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _child_failed(proc: subprocess.Popen, what: str) -> ProfileError:
    with _suppress_oserror():
        proc.kill()
    err = b""
    with _suppress_oserror():
        err = proc.communicate(timeout=5)[1] or b""
    lines = [v for v in err.decode(errors="replace").splitlines() if v.strip()]
    reason = lines[-1].strip() if lines else "no message"
    tail = "\n".join(lines[-30:-1])
    return ProfileError(f"the {what}'s second process failed: {reason}"
                        + (f"\n(its output before that:\n{tail})" if tail else ""))


def _gaps(n: int, seed: int = 1) -> np.ndarray:
    """Pauses (s) between two hops: 0.2 to 1 ms, so the reader sleeps as in a loop."""
    return np.random.default_rng(seed).uniform(2e-4, 1e-3, n)


#: The frame id that ends the stream hop's reader (ids are stored unsigned).
_STOP = 1 << 40


def _stream_echo(path_in: str, path_out: str) -> None:  # pragma: no cover - a child process
    """The reader of the stream hop (run in a second process): waits on ``path_in`` as a
    component waits on its trigger input, and answers ``[frame id, time_ns on waking]`` on
    ``path_out``; frame id :data:`_STOP` ends it."""
    from dao.streams.stream import shm

    a, b = shm(path_in), shm(path_out)
    sem = a.claim_semaphore()
    buf = np.empty(a.shape, a.dtype)
    row = np.zeros((3, 1), np.int64)
    row[:, 0] = (-1, 0, os.getpid())
    b.set_data(row)  # ready
    while True:
        a.get_data(check=True, semNb=sem, timeout=30.0, out=buf)
        t = time.time_ns()
        seq = a.last_read.cnt2
        row[0, 0], row[1, 0] = seq, t
        b.set_data(row, cnt2=seq)
        if seq == _STOP:
            break
    a.close()
    b.close()


def _hop_stream(n: int, frame_bytes: int) -> tuple[Quantiles, int]:
    """Stream hop latency to a second process: (quantiles, the reader's pid)."""
    from dao.streams.stream import shm

    folder, tag = _tmp_streams()
    proc = None
    try:
        a = shm(os.path.join(folder, f"{tag}a.im.shm"),
                np.zeros((frame_bytes // 4, 1), np.float32), depth=4)
        b = shm(os.path.join(folder, f"{tag}b.im.shm"), np.zeros((3, 1), np.int64), depth=4)
        sem = b.claim_semaphore()
        proc = _child(f"from dao.latency.profile import _stream_echo; "
                      f"_stream_echo({a.path!r}, {b.path!r})")
        row = np.zeros((3, 1), np.int64)
        try:
            b.get_data(check=True, semNb=sem, timeout=60.0, out=row)
        except DaoError as exc:
            raise _child_failed(proc, "stream hop") from exc
        pid = int(row[2, 0])
        frame = np.ones(a.shape, np.float32)
        out = np.empty(n, np.int64)
        for i, gap in enumerate(_gaps(n)):
            time.sleep(gap)
            a.set_data(frame, cnt2=i)
            sent = a.get_timestamp_ns()
            try:
                while True:
                    b.get_data(check=True, semNb=sem, timeout=10.0, out=row)
                    if row[0, 0] == i:
                        break
            except DaoError as exc:
                raise _child_failed(proc, "stream hop") from exc
            out[i] = row[1, 0] - sent
        a.set_data(frame, cnt2=_STOP)
        proc.wait(timeout=10)
        a.close()
        b.close()
        return Quantiles.from_samples(np.maximum(out, 0) * 1e-9), pid
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _remove_streams(folder)


def _zmq_echo(pub: str, push: str) -> None:  # pragma: no cover - a child process
    """The subscriber of the ZeroMQ hop (a second process): answers ``[seq, time_ns on
    receiving, pid]`` to each message; seq -2 ends it."""
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub)
    out = ctx.socket(zmq.PUSH)
    out.connect(push)
    pid = os.getpid()
    while True:
        head, _payload = sub.recv_multipart()
        t = time.time_ns()
        seq = int(np.frombuffer(head, np.int64)[0])
        out.send(np.array([seq, t, pid], np.int64).tobytes())
        if seq == -2:
            break
    sub.close(0)
    out.close(0)
    ctx.term()


def _hop_zmq(n: int, frame_bytes: int) -> tuple[Quantiles, int]:
    """ZeroMQ PUB/SUB hop latency (loopback TCP) to a second process."""
    import zmq

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pull = ctx.socket(zmq.PULL)
    proc = None
    try:
        p_pub = pub.bind_to_random_port("tcp://127.0.0.1")
        p_pull = pull.bind_to_random_port("tcp://127.0.0.1")
        proc = _child(f"from dao.latency.profile import _zmq_echo; _zmq_echo("
                      f"'tcp://127.0.0.1:{p_pub}', 'tcp://127.0.0.1:{p_pull}')")
        payload = np.ones(frame_bytes, np.uint8).tobytes()
        hello = np.array([-1, 0], np.int64).tobytes()
        deadline = time.monotonic() + 60.0
        while not pull.poll(10):  # the slow joiner: until the subscription is in place
            if proc.poll() is not None or time.monotonic() > deadline:
                raise _child_failed(proc, "ZeroMQ hop")
            pub.send_multipart([hello, payload])
        pid = int(np.frombuffer(pull.recv(), np.int64)[2])
        while pull.poll(50):
            pull.recv()
        out = np.empty(n, np.int64)
        head = np.zeros(2, np.int64)
        for i, gap in enumerate(_gaps(n, 2)):
            time.sleep(gap)
            head[0] = i
            sent = time.time_ns()
            pub.send_multipart([head.tobytes(), payload])
            while True:
                if not pull.poll(10_000):
                    raise _child_failed(proc, "ZeroMQ hop")
                seq, t, _ = np.frombuffer(pull.recv(), np.int64)
                if seq == i:
                    break
            out[i] = t - sent
        head[0] = -2
        pub.send_multipart([head.tobytes(), payload])
        proc.wait(timeout=10)
        return Quantiles.from_samples(np.maximum(out, 0) * 1e-9), pid
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        pub.close(0)
        pull.close(0)
        ctx.term()


def _calibration(bench: Any, est: Any, geo: dict[str, Any]) -> Any:
    """A :class:`dao.loop.Calibration` of the loop's geometry whose matrices are random (the
    costs do not depend on their values; measuring the real ones takes minutes at 40x40)."""
    from dao.loop.calibration import Calibration

    rng = np.random.default_rng(0)
    n_act, n_slopes, n_modes = geo["n_actuators"], geo["n_slopes"], geo["n_modes"]
    q, _ = np.linalg.qr(rng.standard_normal((n_act, n_modes)))
    if geo["sensor"] == "pyramid":
        est_geo = {"indices": est.indices, "reference": est.reference, "mode": est.mode}
    else:
        est_geo = {"corners": est.corners, "subaperture_size": est.h, "method": est.method}
    return Calibration({
        "sensor": geo["sensor"], "n_actuators": n_act, "n_slopes": n_slopes,
        "n_modes": n_modes, "stroke": float(bench.mirror.stroke[1]),
        "interaction_matrix": rng.standard_normal((n_slopes, n_act)).astype(np.float32),
        "control_matrix": rng.standard_normal((n_act, n_slopes)).astype(np.float32) * 1e-3,
        "modes": np.ascontiguousarray(q, np.float32),
        "slopes_to_modes": rng.standard_normal((n_modes, n_slopes)).astype(np.float32) * 1e-3,
        "reference_slopes": np.zeros(n_slopes, np.float32), **est_geo,
    })


_CALLS = {
    "slopes.shack-hartmann": ("valid subapertures", "dao.recon.ShackHartmann.measure(frame)"),
    "slopes.pyramid": ("valid pupil pixels", "dao.recon.Pyramid.measure(frame)"),
    "slopes.subtract_reference": ("slope values",
                                  "numpy.subtract(signal, reference, out=slopes), float32"),
    "law": ("matrix elements", "dao.loop.laws.stock_law(...).step(slopes, command)"),
    "stream.write": ("bytes", "dao.shm.set_data(frame, cnt2=...) (float32; the loop's FIFO "
                     "depths)"),
    "stream.write_cold": ("bytes", "dao.shm.set_data(frame, cnt2=...) on the first pass "
                          "through the FIFO (each slot's pages touched for the first time)"),
    "stream.read": ("bytes", "dao.shm.get_data(out=buf) of the frame just written"),
    "component.slopes.shack-hartmann": (
        "valid subapertures", "dao.loop.components.Slopes.process(frame), in-process"),
    "component.slopes.pyramid": (
        "valid pupil pixels", "dao.loop.components.Slopes.process(frame), in-process"),
    "component.controller": ("matrix elements",
                             "dao.loop.components.Controller.process(slopes), in-process"),
}


def _table(kernels: dict[str, KernelTable], name: str) -> KernelTable:
    if name not in kernels:
        key = next(k for k in sorted(_CALLS, key=len, reverse=True) if name.startswith(k))
        unit, call = _CALLS[key]
        kernels[name] = KernelTable(name, unit, call)
    return kernels[name]


def _stream_depth(nbytes: int) -> int:
    """The FIFO depth the loop gives a stream of ``nbytes`` frames (AOLoop: 8192 frames,
    images up to 64 MiB of history)."""
    return int(max(4, min(8192, (64 << 20) // nbytes)))


def _measure_streams(sizes: Iterable[tuple[int, str]], budget: _Budget,
                     kernels: dict[str, KernelTable]) -> None:
    from dao.streams.stream import shm

    folder, tag = _tmp_streams()
    try:
        for k, (nbytes, loop) in enumerate(sorted(set(sizes))):
            dtype = np.int64 if nbytes == 32 else np.float32
            shape = (nbytes // np.dtype(dtype).itemsize, 1)
            path = os.path.join(folder, f"{tag}s{k}.im.shm")
            depth = _stream_depth(nbytes)
            w = shm(path, np.zeros(shape, dtype), depth=depth)
            r = shm(path)
            frame, buf = np.ones(shape, dtype), np.empty(shape, dtype)
            n = [0]

            def write(w: Any = w, frame: np.ndarray = frame, n: list[int] = n) -> None:
                n[0] += 1
                w.set_data(frame, cnt2=n[0])

            # first pass through the FIFO: every slot written for the first time
            cold = _Budget(min(budget.min_reps, depth - 1), depth - 1, budget.seconds, 0, 0, 0)
            _table(kernels, "stream.write_cold").add(nbytes, Quantiles.from_samples(
                _time_calls(write, cold, warm=1)), loop)
            while n[0] < depth + 1:  # the rest of the first pass, not timed
                write()
            _table(kernels, "stream.write").add(nbytes, Quantiles.from_samples(
                _time_calls(write, budget)), loop)
            # a read of a frame just written (its write not timed)
            t = []
            clock = time.perf_counter_ns
            deadline = clock() + int(budget.seconds * 1e9)
            while len(t) < budget.max_reps:
                write()
                t0 = clock()
                r.get_data(out=buf)
                t1 = clock()
                t.append(t1 - t0)
                if len(t) >= budget.min_reps and t1 > deadline:
                    break
            _table(kernels, "stream.read").add(nbytes, Quantiles.from_samples(
                np.asarray(t[5:]) * 1e-9), loop)
            r.close()
            w.close()
    finally:
        _remove_streams(folder)


def _measure_loop(label: str, sensor: str, n_subap: int, budget: _Budget, quick: bool,
                  kernels: dict[str, KernelTable], controller: bool,
                  camera_beside: bool) -> tuple[dict[str, Any], float | None]:
    """Measure the Slopes' (and, if ``controller``, the Controller's) calls on one loop:
    its geometry, and the frame period (s) of its camera rendering beside the components
    (None: ``camera_beside`` False)."""
    from dao.loop.laws import stock_law

    bench, est, cfg = _bench(sensor, n_subap)
    geo = _geometry(sensor, n_subap, bench, est, cfg)
    frame, _ = bench.step(np.zeros(bench.n_actuators))
    frame = np.ascontiguousarray(frame, np.float32)
    n_est = geo["estimator_size"]
    cal = _calibration(bench, est, geo)
    # the slope estimators, as the Slopes component makes them (slope_estimator)
    from dao.loop.components import slope_estimator
    if sensor == "pyramid":
        variants = ("slopes",) if quick else _PYR_MODES
        for mode in variants:
            rows = 4 if mode == "intensities" else 2
            e = slope_estimator({**cal, "mode": mode,
                                 "reference": np.zeros(rows * n_est, np.float32)})
            e.measure(frame)  # loads/compiles the kernel
            _table(kernels, f"slopes.pyramid.{mode}").add(n_est, Quantiles.from_samples(
                _time_calls(lambda e=e: e.measure(frame), budget)), label)
    else:
        variants = ("cog",) if quick else _SH_METHODS
        for method in variants:
            e = slope_estimator({**cal, "method": method})
            e.measure(frame)
            _table(kernels, f"slopes.shack-hartmann.{method}").add(
                n_est, Quantiles.from_samples(_time_calls(lambda e=e: e.measure(frame),
                                                          budget)), label)
    sig = np.ones((2, n_est), np.float32)
    ref, out = np.zeros_like(sig), np.empty_like(sig)
    _table(kernels, "slopes.subtract_reference").add(
        sig.size, Quantiles.from_samples(_time_calls(
            lambda: np.subtract(sig, ref, out=out), budget)), label)
    if controller:
        slopes = np.random.default_rng(1).standard_normal(geo["n_slopes"]).astype(np.float32)
        command = np.zeros(geo["n_actuators"], np.float32)
        for law_name in ("modal", "integrator") if quick else _LAWS:
            law = stock_law(law_name, cal, gain=0.5)
            law.step(slopes, command)
            _table(kernels, f"law.{law_name}").add(
                geo["matrix_elements"], Quantiles.from_samples(_time_calls(
                    lambda law=law: law.step(slopes, command), budget)), label)
    if not camera_beside:
        _measure_components(label, geo, cal, frame, budget, quick, kernels, controller,
                            COLD_GAP_S)
        return geo, None
    with _camera_beside(sensor, n_subap) as period:
        _measure_components(label, geo, cal, frame, budget, quick, kernels, controller,
                            period)
    return geo, period


def _measure_components(label: str, geo: dict[str, Any], cal: Any, frame: np.ndarray,
                        budget: _Budget, quick: bool, kernels: dict[str, KernelTable],
                        controller: bool, gap_s: float) -> None:
    """The loop's Slopes and Controller components, made in this process on private streams
    (Init, Enable: their processing threads are made but never run), ``process`` called
    directly, once per ``gap_s`` (:func:`_time_calls`, ``cold``)."""
    from dao.loop.components import Controller, Slopes
    from dao.streams.stream import shm

    folder, tag = _tmp_streams()
    made: list[Any] = []
    streams: list[Any] = []
    try:
        cal_path = os.path.join(folder, "calibration.npz")
        cal.save(cal_path)
        paths = {k: os.path.join(folder, f"{tag}{k[0]}{i}.im.shm")
                 for i, k in enumerate(("wfs", "slopes", "command", "ts", "tc"))}
        slopes_shape = (2, geo["estimator_size"])
        for key, data in (("wfs", np.zeros(frame.shape, np.float32)),
                          ("slopes", np.zeros(slopes_shape, np.float32)),
                          ("command", np.zeros((geo["n_actuators"], 1), np.float32))):
            s = shm(paths[key], data, depth=_stream_depth(data.nbytes))
            streams.append(s)
            for _ in range(s.depth + 1):  # the FIFO's pages touched: the steady state
                s.set_data(data)
        comp = Slopes(name=f"{tag}slopes", config={
            "calibration": cal_path, "timing_depth": 16,
            "streams": {"wfs_image": paths["wfs"], "slopes": paths["slopes"],
                        "timing": paths["ts"]}})
        made.append(comp)
        comp.init()
        comp.enable()
        n = [0]

        def slopes_step(comp: Any = comp) -> None:
            n[0] += 1
            comp.frame_id = n[0]
            comp.process(frame)

        name = f"component.slopes.{geo['sensor']}"
        _table(kernels, name).add(geo["estimator_size"], Quantiles.from_samples(
            _time_calls(slopes_step, budget, cold=True, gap_s=gap_s)), label)
        if controller:
            ctl = Controller(name=f"{tag}ctl", config={
                "calibration": cal_path, "timing_depth": 16, "law": "modal", "gain": 0.5,
                "modal_gains": 1.0, "leak": 1.0,
                "law_dir": folder,
                "streams": {"slopes": paths["slopes"], "dm_command": paths["command"],
                            "timing": paths["tc"]}})
            made.append(ctl)
            ctl.init()
            ctl.enable()
            buf = ctl.input_buffer
            buf[:] = np.random.default_rng(2).standard_normal(buf.shape)
            for law_name in ("modal",) if quick else _LAWS:
                if ctl.law != law_name:
                    ctl.law = law_name  # swapped in at the next frame

                def ctl_step(ctl: Any = ctl) -> None:
                    n[0] += 1
                    ctl.frame_id = n[0]
                    ctl.process(buf)

                _table(kernels, f"component.controller.{law_name}").add(
                    geo["matrix_elements"], Quantiles.from_samples(
                        _time_calls(ctl_step, budget, cold=True,
                                    gap_s=gap_s)), label)
    finally:
        for c in made:
            with _suppress_dao():
                c.disable()
        for s in streams:
            with _suppress_dao():
                s.close()
        _remove_streams(folder)


class _suppress_dao:  # noqa: N801 - a context manager for the clean-up
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], DaoError | OSError | RuntimeError)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def calibrate(quick: bool = False, progress: Callable[[float, str], Any] | None = None,
              loops: Iterable[str] | None = None, camera_beside: bool = True
              ) -> HardwareProfile:
    """Measure this machine's :class:`HardwareProfile`.

    Memory bandwidth (large copies), the stream and ZeroMQ hops (a second OS process, as in
    the loop; many hops with pauses of 0.2 to 1 ms between them, so the reader sleeps), and
    every kernel of the module docstring on the geometry of each loop of ``loops``: the
    estimators made as the Slopes component makes them, the stock laws and the components on
    a calibration of the loop's shapes with random matrices. Every figure is kept as
    quantiles of many calls (never a single run), measured warm (after compilation).

    Parameters
    ----------
    quick : bool
        Fewer repetitions, the loop's default centroiding (``cog``), pyramid mode
        (``slopes``) and laws (``modal``; ``integrator`` for ``law.*``) only: about 20 s
        (the full calibration: about 2 min, every method, mode and law).
    progress : callable, optional
        Called as ``progress(fraction, message)`` between steps.
    loops : iterable of str, optional
        Labels of :data:`LOOPS` to measure (default all). The Controller's kernels are
        measured on the Shack-Hartmann loops (a pyramid loop of the same size has the same
        matrix shapes), or on a pyramid loop when no Shack-Hartmann of its size is measured.
    camera_beside : bool
        Measure the components (``component.*``) as they run in the demo's loop: once per
        frame period, while the loop's simulated camera renders frames as fast as it can in
        another process (it keeps a core busy and the shared cache churned). False: once per
        0.5 ms on a quiet machine, for a loop whose camera is real hardware and whose camera
        process sleeps while the sensor exposes.

    Returns
    -------
    HardwareProfile
        ``measured`` True, ``source`` naming this host and the date.
    """
    t_start = time.perf_counter()
    budget = _QUICK if quick else _FULL
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    labels = list(LOOPS) if loops is None else [str(v) for v in loops]
    unknown = [v for v in labels if v not in LOOPS]
    if unknown or not labels:
        raise ValueError(f"unknown loops {unknown}: use labels of LOOPS ({', '.join(LOOPS)})")

    def say(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    from dao.loop.aoloop import kernel_threads
    from dao.recon._jit import numba_threads

    with numba_threads(kernel_threads()):
        return _calibrate(quick, say, labels, cores, budget, t_start, camera_beside)


def _calibrate(quick: bool, say: Callable[[float, str], None], labels: list[str], cores: int,
               budget: _Budget, t_start: float, camera_beside: bool) -> HardwareProfile:
    """:func:`calibrate`'s body, with Numba's threads as the loop's components have them."""
    import numba

    notes: dict[str, str] = {
        "cpu": _cpu_model(), "python": sys.version.split()[0], "numpy": np.__version__,
        "numba": numba.__version__, "numba_threads": str(numba.get_num_threads()),
        "quick": str(bool(quick)), "camera_beside": str(bool(camera_beside)),
        "cold_bytes": f"{cold_bytes()} bytes written before each component call (a core's "
                      "private cache)",
        "hop_method": ("stream: dao.shm set_data -> get_data(check=True, semNb) in a second "
                       "process (subprocess), frame write timestamp to time_ns on waking; "
                       "zmq: PUB/SUB loopback TCP, time_ns before send to time_ns after "
                       "recv_multipart; pauses of 0.2-1 ms between hops"),
    }
    notes["loadavg_before"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    say(0.0, "memory bandwidth")
    bw, notes["memory_bandwidth"] = _memory_bandwidth(budget)
    hop_bytes = 2 * 316 * 4  # the slopes of the 20x20 Shack-Hartmann loop
    say(0.05, "stream hop to a second process")
    hop_stream, pid_stream = _hop_stream(budget.hops, hop_bytes)
    say(0.12, "ZeroMQ hop to a second process")
    hop_zmq, pid_zmq = _hop_zmq(budget.hops, hop_bytes)
    notes["hop_pids"] = f"{os.getpid()} -> {pid_stream} (stream), {pid_zmq} (zmq)"
    kernels: dict[str, KernelTable] = {}
    geos: dict[str, dict[str, Any]] = {}
    sh_sizes = {LOOPS[v][1] for v in labels if LOOPS[v][0] == "shack-hartmann"}
    for i, label in enumerate(labels):
        sensor, n = LOOPS[label]
        say(0.2 + 0.7 * i / len(labels), f"kernels of {label} ({sensor} {n}x{n})")
        with_ctl = sensor == "shack-hartmann" or n not in sh_sizes
        geos[label], period = _measure_loop(label, sensor, n, budget, quick, kernels,
                                            with_ctl, camera_beside)
        notes[f"components_{label}"] = (
            f"once per {period * 1e3:.2f} ms (the frame period of the loop's simulated camera, "
            "rendering beside them)" if period is not None else
            f"once per {COLD_GAP_S * 1e3:g} ms, no camera beside")
    say(0.9, "stream reads and writes")
    sizes = {(g[k], label) for label, g in geos.items()
             for k in ("wfs_bytes", "slopes_bytes", "command_bytes", "timing_bytes")}
    by_size: dict[int, str] = {}
    for nbytes, label in sorted(sizes):
        by_size.setdefault(nbytes, label)
    _measure_streams(by_size.items(), budget, kernels)
    host = socket.gethostname()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    notes["calibrate_s"] = f"{time.perf_counter() - t_start:.1f}"
    notes["loadavg_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    if max(os.getloadavg()[0], float(notes["loadavg_before"].split()[0])) > 0.5 * cores:
        notes["warning"] = ("the machine was busy (load average above half its cores): the "
                            "kernels split over Numba's threads (the MVM from 65536 matrix "
                            "elements, the centroider from 16384 subaperture pixels) wait for "
                            "a descheduled worker, milliseconds; calibrate on a quiet machine")
    say(1.0, "done")
    return HardwareProfile(
        name=host, source=f"measured on {host} {now} by dao latency calibrate"
        + (" (quick)" if quick else ""),
        cores=cores, memory_bandwidth_bytes_per_s=bw, hop_stream_s=hop_stream,
        hop_zmq_s=hop_zmq, hop_frame_bytes=hop_bytes, kernels=kernels, loops=geos,
        measured=True, notes=notes)

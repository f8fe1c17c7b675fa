"""The loop's configuration: the embedded default (TOML), checked updates, bench arguments.

Every key is optional; a file or dict updates :data:`DEFAULT_CONFIG` table by table::

    [bench]         # dao.hw.SimulatedBench keyword arguments
    n_subap = 20
    [sensor]
    type = "shack-hartmann"  # or "pyramid"
    method = "cog"  # Shack-Hartmann centroiding: cog, tcog, wcog, brightest
    modulation = 3.0  # pyramid modulation radius, lambda / D
    [calibration]
    poke = 20e-9    # metres of OPD
    drop_modes = 2  # smallest singular values dropped (piston, waffle)
    [controller]
    gain = 0.5
    [science]
    wavelength = 1.65e-6
    every = 4       # frames between science exposures
    [run]
    open_frames = 300
    settle_frames = 200
    closed_frames = 1600
    [streams]       # stream names (the defaults get a per-loop suffix: see below)
    wfs_image = "wfs_image"
    [components]    # component names and classes
    camera = { name = "bench", class = "dao.loop.components:BenchCamera" }

Checks: :func:`load_loop_config` refuses, before anything starts, an unknown table or key and
a value of the wrong type (an integer key refuses ``2.5``, ``true`` and ``"3"``), out of range
(``bench.frame_rate = 0``) or not one of the choices (``sensor.type``); the message names the
key, the value and what is allowed.

Streams: :class:`dao.loop.AOLoop` creates the loop's streams in the standard stream folder
(``$DAO_SHM_DIR``, default ``/tmp``: what ``dao ls`` lists and where ``dao.shm(name)`` and the
DAO C library look for a bare name). A name set in ``[streams]`` is used exactly as given,
for other processes to find (``dao watch my_slopes``); a name left at its default gets a
suffix unique to the loop (``slopes_3f9a0c``), so that several loops can run at once (stream
semaphores are named machine-wide). Likewise each component's timing stream is
``<component name>_timing`` for a component named in ``[components]``, and
``<default name>_timing_<suffix>`` otherwise. A loop refuses to start on a name that a live
process (another loop) writes.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import math
import numbers
import operator
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from dao.loop.laws import STOCK_LAWS

__all__ = ["DEFAULT_CONFIG", "SENSORS", "CENTROID_METHODS", "PYRAMID_MODES", "CONTROL_LAWS",
           "MODAL_BASES", "ROLES", "load_loop_config", "bench_arguments"]

#: The embedded default configuration (TOML).
DEFAULT_CONFIG = """
[bench]
diameter = 8.0          # m
r0 = 0.15               # m at 500 nm
L0 = 25.0               # m
wind = 10.0             # m/s, every layer
n_subap = 20
frame_rate = 1000.0     # Hz
wavelength_wfs = 700e-9 # m
seed = 1

[sensor]
type = "shack-hartmann" # or "pyramid"
method = "cog"          # Shack-Hartmann centroiding
modulation = 3.0        # pyramid modulation radius, lambda/D
mode = "slopes"         # pyramid signal: slopes (local normalisation) or slopes_global

[calibration]
poke = 20e-9
drop_modes = 2
file = ""               # a calibration saved by AOLoop.save_calibration: loaded, not measured

[controller]
law = "modal"           # modal: leaky integrator on modal coefficients, per-mode gains;
                        # integrator: leaky integrator on actuators; pid; pol: pseudo-open loop
gain = 0.5              # loop gain when the loop is closed (AOLoop.close_loop, run.start)
leak = 1.0              # integrator leak (1: none)
basis = "kl"            # modes of the modal law: kl (Karhunen-Loeve of the DM, by decreasing
                        # turbulent variance) or svd (singular modes of the interaction matrix)
modal_gains = 1.0       # per-mode gain factors: one number for all, or a list, one per mode
kp = 0.0                # pid: proportional gain (the integral gain is gain)
kd = 0.0                # pid: derivative gain

[science]
wavelength = 1.65e-6
every = 4

[run]
start = "open"          # AOLoop starts open (gain 0) or "closed" (at controller.gain)
open_frames = 300       # dao demo (run_loop): frames open, to settle closed, measured closed
settle_frames = 200
closed_frames = 1600
history_frames = 0      # frames kept in the stream histories (0: the whole run_loop run)
command_timeout = 1.0   # s: the bench goes on without a command after this (a late frame)
ready_timeout = 60.0    # s: longest start of a component process
max_image_history_bytes = 67108864
priority = 0            # SCHED_FIFO priority of the components' processing threads (1-99;
                        # 0: the normal scheduler). Keeps a notebook or a browser on the same
                        # machine from delaying the loop; needs root or CAP_SYS_NICE.
kernel_threads = 0      # Numba threads of each component's kernels (0: half the cores, at
                        # least 1). A kernel split over more threads than there are idle
                        # cores waits for a busy one: on 2 cores, 1 halves the 20x20 loop's
                        # latency p50 and cuts its p99 7x (BENCHMARKS.md).

[streams]
wfs_image = "wfs_image"
slopes = "slopes"
dm_command = "dm_command"
frames = "wfs_frames"
science = "science"
psf = "psf"

[components]
camera = { name = "bench", class = "dao.loop.components:BenchCamera" }
slopes = { name = "slopes", class = "dao.loop.components:Slopes" }
controller = { name = "controller", class = "dao.loop.components:Controller" }
"""

#: Wavefront sensors the bench simulates.
SENSORS = ("shack-hartmann", "pyramid")

#: Centroiding methods of :class:`dao.recon.ShackHartmann` that the loop uses
#: (``sensor.method``).
CENTROID_METHODS = ("cog", "tcog", "wcog", "brightest")

#: Signals of :class:`dao.recon.Pyramid` (``sensor.mode``).
PYRAMID_MODES = ("slopes", "slopes_global", "intensities")

#: Control laws of ``controller.law`` and modal bases of ``controller.basis``.
CONTROL_LAWS = tuple(STOCK_LAWS)
MODAL_BASES = ("kl", "svd")

#: ``[sensor]`` keys passed to the bench for a pyramid.
_PYRAMID_BENCH_KEYS = ("modulation", "n_modulation", "padding")

#: The loop's components, in start order.
ROLES = ("controller", "slopes", "camera")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_loop_config(source: str | os.PathLike | dict | None = None,
                     **overrides: Any) -> dict[str, Any]:
    """The loop configuration: :data:`DEFAULT_CONFIG` updated by ``source`` and ``overrides``.

    Every value is checked before anything starts (see :data:`_RULES`): its type (an integer
    key refuses ``2.5``, ``true`` and ``"3"``; a number key refuses strings, NaN and
    infinities), its range and, for a string, its choices.

    Parameters
    ----------
    source : path or dict, optional
        A TOML file (or its parsed dict) whose tables update the default's.
    **overrides
        ``table={key: value}`` updates applied last.

    Raises
    ------
    ValueError
        An unknown table or key, or a value of the wrong type, out of range or not one of
        the choices: the message names the key (``bench.frame_rate``), the value given and
        what is allowed.
    """
    cfg = tomllib.loads(DEFAULT_CONFIG)
    if source is not None:
        if not isinstance(source, dict):
            with Path(source).open("rb") as f:
                source = tomllib.load(f)
        _check_tables(source, cfg)
        cfg = _merge(cfg, source)
    overrides = {k: v for k, v in overrides.items() if v}
    _check_tables(overrides, cfg)
    cfg = _merge(cfg, overrides)
    _check_keys(cfg)
    _check_values(cfg)
    _check_stream_names(cfg["streams"])
    return cfg


class _Rule(NamedTuple):
    """A value's check: ``ok(value)`` is True for a good value; ``allowed`` says which are."""

    ok: Callable[[Any], bool]
    allowed: str


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


_COMPARE = {">": operator.gt, ">=": operator.ge, "<=": operator.le, "<": operator.lt}


def _integer(low: int, high: int | None = None, what: str = "") -> _Rule:
    """An integer ``>= low`` (and ``<= high``)."""
    text = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return _Rule(lambda v: _is_int(v) and low <= v and (high is None or v <= high),
                 text + (f" ({what})" if what else ""))


def _number(gt: float | None = None, ge: float | None = None, le: float | None = None,
            lt: float | None = None, what: str = "", per: str = "") -> _Rule:
    """A finite number within the bounds given; ``per``: or a non-empty list of them, one per
    ``per`` (a layer, a mode)."""
    checks = [(op, b) for op, b in ((">", gt), (">=", ge), ("<=", le), ("<", lt))
              if b is not None]

    def one(v: Any) -> bool:
        return _is_number(v) and all(_COMPARE[op](v, b) for op, b in checks)

    def ok(v: Any) -> bool:
        return one(v) or bool(per and isinstance(v, list | tuple) and v and all(map(one, v)))

    text = "a number " + " and ".join(f"{op} {b:g}" for op, b in checks) if checks \
        else "a finite number"
    if per:
        text += f", or a non-empty list of them, one per {per}"
    return _Rule(ok, text + (f" ({what})" if what else ""))


def _choice(choices: tuple[str, ...]) -> _Rule:
    return _Rule(lambda v: isinstance(v, str) and v in choices, f"one of {', '.join(choices)}")


def _string(what: str) -> _Rule:
    return _Rule(lambda v: isinstance(v, str), f"a string ({what})")


_PYRAMID_RULES = {
    "modulation": _number(ge=0, what="pyramid modulation radius, lambda/D; 0: none"),
    "n_modulation": _integer(1, what="pyramid modulation points"),
    "padding": _integer(2, what="pyramid FFT size over the pupil samples"),
}

#: The check of every ``table.key`` of the loop configuration (``[bench]``: the arguments
#: of :class:`dao.hw.SimulatedBench`); ``[streams]`` and ``[components]`` are checked apart.
_RULES: dict[str, _Rule] = {
    "bench.diameter": _number(gt=0, what="telescope diameter, m"),
    "bench.r0": _number(gt=0, what="Fried parameter at 500 nm, m"),
    "bench.L0": _number(gt=0, what="outer scale, m"),
    "bench.wind": _number(ge=0, per="layer", what="wind speed, m/s"),
    "bench.wind_direction": _number(per="layer", what="radians from +x"),
    "bench.cn2_weights": _number(gt=0, per="layer", what="fraction of Cn2"),
    "bench.n_subap": _integer(2, what="subapertures across the pupil"),
    "bench.frame_rate": _number(gt=0, what="frames per second, Hz"),
    "bench.wavelength_wfs": _number(gt=0, what="m"),
    "bench.seed": _integer(0),
    "bench.pupil_pixels_per_subaperture": _integer(1, what="wavefront samples"),
    "bench.pyramid_samples_per_pixel": _integer(1, what="wavefront samples"),
    "bench.pixels_per_subaperture": _integer(1, what="detector pixels"),
    "bench.sampling": _integer(1, what="detector pixels per lambda/d"),
    "bench.flux": _number(gt=0, what="photons per subaperture per frame"),
    "bench.background": _number(ge=0, what="photons per pixel per frame"),
    "bench.read_noise": _number(ge=0, what="e- rms"),
    "bench.coupling": _number(gt=0, lt=1, what="mirror inter-actuator coupling"),
    "bench.stroke": _number(gt=0, what="m of OPD"),
    **{f"bench.{k}": rule for k, rule in _PYRAMID_RULES.items()},
    "sensor.type": _choice(SENSORS),
    "sensor.method": _choice(CENTROID_METHODS),
    "sensor.mode": _choice(PYRAMID_MODES),
    **{f"sensor.{k}": rule for k, rule in _PYRAMID_RULES.items()},
    "calibration.poke": _number(gt=0, what="m of OPD"),
    "calibration.drop_modes": _integer(0, what="smallest singular values dropped"),
    "calibration.file": _string('a calibration saved by AOLoop.save_calibration; "": none'),
    "controller.law": _choice(CONTROL_LAWS),
    "controller.gain": _number(ge=0, le=2),
    "controller.leak": _number(ge=0, le=1, what="1: none"),
    "controller.basis": _choice(MODAL_BASES),
    "controller.modal_gains": _number(ge=0, per="mode"),
    "controller.kp": _number(),
    "controller.kd": _number(),
    "science.wavelength": _number(gt=0, what="m"),
    "science.every": _integer(1, what="frames between science exposures"),
    "run.start": _choice(("open", "closed")),
    "run.open_frames": _integer(1),
    "run.settle_frames": _integer(1),
    "run.closed_frames": _integer(1),
    "run.history_frames": _integer(0, what="0: the whole run"),
    "run.command_timeout": _number(ge=1e-3, le=60, what="seconds"),
    "run.ready_timeout": _number(ge=1, what="seconds"),
    "run.max_image_history_bytes": _integer(1),
    "run.priority": _integer(0, 99, what="SCHED_FIFO priority; 0: the normal scheduler"),
    "run.kernel_threads": _integer(0, 1024, what="Numba threads per component; 0: half the "
                                   "cores"),
}

#: Keys of each table beyond the default's: ``[sensor]`` options the bench or the slope
#: estimator take.
_EXTRA_KEYS = {"sensor": {"n_modulation", "padding"}}


def _check_tables(update: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Refuse an unknown table, or a table that is not one (``bench = 3``)."""
    for table, values in update.items():
        if table not in cfg:
            raise ValueError(f"unknown loop config table {table!r}{_did_you_mean(table, cfg)}:"
                             f" use {', '.join(cfg)}")
        if not isinstance(values, dict):
            raise ValueError(f"{table} = {values!r}: must be a table ([{table}] and its keys)")


def _did_you_mean(name: str, known: Any, table: str = "") -> str:
    """`` (did you mean table.key?)`` for the known name closest to a misspelt one, if any."""
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1)
    return f" (did you mean {table + '.' if table else ''}{close[0]}?)" if close else ""


def _check_keys(cfg: dict[str, Any]) -> None:
    """Refuse a key that no part of the loop reads (a typo would be silently ignored)."""
    default = tomllib.loads(DEFAULT_CONFIG)
    for table, values in cfg.items():
        if table == "components":
            _check_components(values, default["components"])
            continue
        known = (set(_bench_defaults()) if table == "bench"
                 else set(default[table]) | _EXTRA_KEYS.get(table, set()))
        bad = sorted(set(values) - known)
        if bad:
            names = ", ".join(f"{table}.{k}{_did_you_mean(k, known, table)}" for k in bad)
            raise ValueError(f"unknown key{'s' * (len(bad) > 1)} {names}: [{table}] has "
                             f"{', '.join(sorted(known))}")


def _check_components(components: dict[str, Any], default: dict[str, Any]) -> None:
    """Refuse an unknown role or key, a name that is not a plain name, a class that cannot be
    loaded."""
    for role, spec in components.items():
        if role not in default:
            raise ValueError(f"unknown component role components.{role}: the loop has "
                             f"{', '.join(default)}")
        if not isinstance(spec, dict):
            raise ValueError(f"components.{role} = {spec!r}: must be a table "
                             '{ name = "...", class = "MODULE:CLASS" }')
        bad = sorted(set(spec) - {"name", "class"})
        if bad:
            names = ", ".join(f"components.{role}.{k}" for k in bad)
            raise ValueError(f"unknown key{'s' * (len(bad) > 1)} {names}: components.{role} "
                             "has name and class")
        name = spec.get("name", default[role]["name"])
        if not isinstance(name, str) or not name or "/" in name or name.strip() != name:
            raise ValueError(f"components.{role}.name = {name!r}: must be a plain name such as "
                             '"my_camera" (it names the component and its timing stream)')
        _check_class(role, spec.get("class", default[role]["class"]))


def _check_values(cfg: dict[str, Any]) -> None:
    """Check each value against its rule in :data:`_RULES`, then the values that go together.

    A ``[bench]`` key whose :class:`dao.hw.SimulatedBench` default is None (``seed``...) may
    be None (from a dict: TOML has no None).
    """
    for table, values in cfg.items():
        for key, value in values.items():
            rule = _RULES.get(f"{table}.{key}")
            if value is None and table == "bench" and _bench_defaults().get(key, 0) is None:
                continue
            if rule is not None and not rule.ok(value):
                raise ValueError(f"{table}.{key} = {value!r}: must be {rule.allowed}")
    _check_together(cfg)


def _check_together(cfg: dict[str, Any]) -> None:
    """The values checked against others: per-layer lists, the Shack-Hartmann's window, the
    pyramid's sampling, the calibration file."""
    bench = {**_bench_defaults(), **cfg["bench"]}
    weights = bench["cn2_weights"]
    layers = len(weights) if isinstance(weights, list | tuple) else 1
    for key in ("wind", "wind_direction"):
        value = bench[key]
        if isinstance(value, list | tuple) and len(value) not in (1, layers):
            raise ValueError(f"bench.{key} = {value!r}: must be one number or a list of "
                             f"{layers}, one per layer (bench.cn2_weights)")
    fft = bench["sampling"] * bench["pupil_pixels_per_subaperture"]
    if cfg["sensor"]["type"] == "shack-hartmann" and bench["pixels_per_subaperture"] > fft:
        raise ValueError(f"bench.pixels_per_subaperture = {bench['pixels_per_subaperture']!r}: "
                         f"must be at most bench.sampling * bench.pupil_pixels_per_subaperture "
                         f"({fft})")
    q = bench["pyramid_samples_per_pixel"]
    if q is not None and bench["pupil_pixels_per_subaperture"] % q:
        raise ValueError(f"bench.pyramid_samples_per_pixel = {q!r}: must divide "
                         f"bench.pupil_pixels_per_subaperture "
                         f"({bench['pupil_pixels_per_subaperture']})")
    file = cfg["calibration"]["file"]
    if file and not Path(file).expanduser().is_file():
        raise ValueError(f"calibration.file = {file!r}: no such file "
                         f"({Path(file).expanduser().absolute()}): give a calibration saved by "
                         'AOLoop.save_calibration, or "" to measure one')


@functools.cache
def _bench_defaults() -> dict[str, Any]:
    """The ``[bench]`` keys (:class:`dao.hw.SimulatedBench`'s arguments but ``sensor`` and
    ``wavelength_science``, which other tables set) and their default values."""
    from dao.hw import SimulatedBench

    return {k: p.default for k, p in inspect.signature(SimulatedBench).parameters.items()
            if k not in ("sensor", "wavelength_science")}


def _check_stream_names(names: dict[str, Any]) -> None:
    """Refuse a stream name that is not a plain name, or one given to two streams."""
    seen: dict[str, str] = {}
    for role, name in names.items():
        if not isinstance(name, str) or not name or "/" in name or name.strip() != name:
            raise ValueError(f"streams.{role} = {name!r} is not a stream name: give a plain "
                             "name such as \"my_slopes\" (no folder: the loop's streams are in "
                             "$DAO_SHM_DIR, default /tmp)")
        if name in seen:
            raise ValueError(f"streams.{seen[name]} and streams.{role} are both {name!r}: give "
                             "each stream its own name")
        seen[name] = role


def bench_arguments(cfg: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`dao.hw.SimulatedBench` for a loop configuration."""
    kw = dict(cfg["bench"])
    sensor = cfg["sensor"].get("type", "shack-hartmann")
    kw["sensor"] = sensor
    kw["wavelength_science"] = float(cfg["science"]["wavelength"])
    if sensor == "pyramid":
        kw.update({k: cfg["sensor"][k] for k in _PYRAMID_BENCH_KEYS if k in cfg["sensor"]})
    return kw


def _check_class(role: str, spec: str) -> None:
    """Refuse a component class that cannot be imported, before anything starts."""
    from dao.runtime.cli import load_class

    try:
        load_class(str(spec))
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"components.{role}.class {spec!r} cannot be loaded ({exc}): give MODULE:CLASS, "
            f"e.g. {tomllib.loads(DEFAULT_CONFIG)['components'][role]['class']!r} (the loop's "
            "components moved from dao.loop_components to dao.loop.components)"
        ) from exc


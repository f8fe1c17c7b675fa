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
import os
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CONFIG", "SENSORS", "ROLES", "load_loop_config", "bench_arguments"]

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

[controller]
gain = 0.5
leak = 1.0

[science]
wavelength = 1.65e-6
every = 4

[run]
open_frames = 300
settle_frames = 200
closed_frames = 1600
history_frames = 0      # frames kept in the stream histories (0: the whole run_loop run)
command_timeout = 1.0   # s: the bench goes on without a command after this (a late frame)
ready_timeout = 60.0    # s: longest start of a component process
max_image_history_bytes = 67108864
priority = 0            # SCHED_FIFO priority of the components' processing threads (1-99;
                        # 0: the normal scheduler). Keeps a notebook or a browser on the same
                        # machine from delaying the loop; needs root or CAP_SYS_NICE.

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

    Parameters
    ----------
    source : path or dict, optional
        A TOML file (or its parsed dict) whose tables update the default's.
    **overrides
        ``table={key: value}`` updates applied last.

    Raises
    ------
    ValueError
        An unknown table, key or sensor; a size, frame count, timeout or gain out of range.
    """
    cfg = tomllib.loads(DEFAULT_CONFIG)
    if source is not None:
        if not isinstance(source, dict):
            with Path(source).open("rb") as f:
                source = tomllib.load(f)
        unknown = set(source) - set(cfg)
        if unknown:
            raise ValueError(f"unknown loop config table(s) {sorted(unknown)}: use "
                             f"{', '.join(cfg)}")
        cfg = _merge(cfg, source)
    cfg = _merge(cfg, {k: v for k, v in overrides.items() if v})
    _check_keys(cfg)
    sensor = cfg["sensor"].get("type", "shack-hartmann")
    if sensor not in SENSORS:
        raise ValueError(f"sensor {sensor!r} is not simulated by the bench: use one of "
                         f"{', '.join(SENSORS)}")
    _check_stream_names(cfg["streams"])
    if int(cfg["bench"]["n_subap"]) < 2:
        raise ValueError(f"bench.n_subap must be at least 2, not {cfg['bench']['n_subap']}")
    for table, key, low in _LOWER_BOUNDS:
        value = cfg[table][key]
        if not isinstance(value, int | float) or not value >= low:
            raise ValueError(f"{table}.{key} must be a number of at least {low:g}, not "
                             f"{value!r}")
    return cfg


#: ``(table, key, smallest value)`` checked by :func:`load_loop_config`.
_LOWER_BOUNDS = (
    ("run", "open_frames", 1), ("run", "settle_frames", 1), ("run", "closed_frames", 1),
    ("run", "history_frames", 0), ("run", "command_timeout", 1e-3),
    ("run", "ready_timeout", 1.0), ("run", "max_image_history_bytes", 1),
    ("run", "priority", 0),
    ("science", "every", 1), ("science", "wavelength", 1e-9),
    ("calibration", "poke", 1e-12), ("calibration", "drop_modes", 0),
    ("controller", "gain", 0.0), ("controller", "leak", 0.0),
)

#: Keys of each table beyond the default's: ``[sensor]`` options the bench or the slope
#: estimator take.
_EXTRA_KEYS = {"sensor": {"n_modulation", "padding"}}


def _check_keys(cfg: dict[str, Any]) -> None:
    """Refuse a key that no part of the loop reads (a typo would be silently ignored)."""
    import inspect

    from dao.hw import SimulatedBench

    default = tomllib.loads(DEFAULT_CONFIG)
    bench = set(inspect.signature(SimulatedBench).parameters) - {"sensor", "wavelength_science"}
    for table, values in cfg.items():
        if table == "components":
            for role, spec in values.items():
                if role not in default["components"]:
                    raise ValueError(f"unknown component role components.{role}: the loop has "
                                     f"{', '.join(default['components'])}")
                bad = set(spec) - {"name", "class"}
                if bad:
                    raise ValueError(f"unknown key(s) {sorted(bad)} in components.{role}: "
                                     "use name and class")
                _check_class(role, spec.get("class", default["components"][role]["class"]))
            continue
        known = bench if table == "bench" else set(default[table]) | _EXTRA_KEYS.get(table, set())
        bad = set(values) - known
        if bad:
            raise ValueError(f"unknown key(s) {sorted(bad)} in [{table}] of the loop config: "
                             f"use {', '.join(sorted(known))}")


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


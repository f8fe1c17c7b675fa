"""The AO loop: components wired into a closed loop on the simulated bench by a config file.

:class:`AOLoop` is a running loop to drive from a notebook or a script; :func:`run_loop` is the
scripted run behind ``dao demo``. Starting an :class:`AOLoop`

1. calibrates on a simulated bench in this process: interaction matrix by poking each
   actuator (push-pull, noise-free), control matrix by truncated SVD; saves both with the
   slope estimator's geometry (Shack-Hartmann windows or pyramid pupil pixels and reference)
   to ``calibration.npz``;
2. creates the streams in a fresh private folder: ``wfs_image``, ``slopes``, ``dm_command``,
   the camera's ``frames`` log, ``science`` (image quality) and ``psf``, as FIFOs whose depth
   (``run.history_frames``) is the history kept for latencies and telemetry (vectors as
   ``(n, 1)`` arrays, the shape the DAO C library opens);
3. starts the components (:mod:`dao.loop_components`: bench camera, slopes, controller), each
   in its own process under a :class:`dao.Supervisor`, with the loop open (gain 0).

Then ``loop.gain = 0.4`` closes it (over the command protocol, while it runs),
:meth:`AOLoop.expose` measures a long exposure on the science camera, :meth:`AOLoop.science`
gives the short-exposure Strehl frame by frame, :meth:`AOLoop.psf` the long-exposure image,
:meth:`AOLoop.latency` the loop rate and the
latency per stage from the frame timestamps (camera frame to slopes to DM command, matched by
frame number ``cnt2``), and :meth:`AOLoop.write_telemetry` the stream histories (NetCDF, one
group per stream, readable with :func:`dao.telemetry.open_recording`).

The bench moves the atmosphere by one frame period per camera frame and waits for the
command of each frame (lock-step), so the Strehl ratios do not depend on the machine's speed;
the loop rate and latencies do.

Configuration (every key optional; see :data:`DEFAULT_CONFIG`)::

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
    [streams]       # stream names (the defaults get a per-loop suffix: see AOLoop)
    wfs_image = "wfs_image"
    [components]    # component names and classes
    camera = { name = "bench", class = "dao.loop_components:BenchCamera" }
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import tempfile
import time
import tomllib
import weakref
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_CONFIG", "SENSORS", "REPORT_KEYS", "load_loop_config", "calibrate",
           "AOLoop", "run_loop", "format_report"]

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

[streams]
wfs_image = "wfs_image"
slopes = "slopes"
dm_command = "dm_command"
frames = "wfs_frames"
science = "science"
psf = "psf"

[components]
camera = { name = "bench", class = "dao.loop_components:BenchCamera" }
slopes = { name = "slopes", class = "dao.loop_components:Slopes" }
controller = { name = "controller", class = "dao.loop_components:Controller" }
"""

#: Keys always present in the report.
REPORT_KEYS = ("strehl_open", "strehl_closed", "wavelength_m", "loop_rate_hz",
               "latency_p50_s", "latency_p99_s")

#: Wavefront sensors the bench simulates.
SENSORS = ("shack-hartmann", "pyramid")

#: ``[sensor]`` keys passed to the bench for a pyramid.
_PYRAMID_BENCH_KEYS = ("modulation", "n_modulation", "padding")

#: The loop's components, in start order.
_ROLES = ("controller", "slopes", "camera")


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
        An unknown sensor or table, a non-positive size or frame count.
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
    sensor = cfg["sensor"].get("type", "shack-hartmann")
    if sensor not in SENSORS:
        raise ValueError(f"sensor {sensor!r} is not simulated by the bench: use one of "
                         f"{', '.join(SENSORS)}")
    if int(cfg["bench"]["n_subap"]) < 2:
        raise ValueError(f"bench.n_subap must be at least 2, not {cfg['bench']['n_subap']}")
    for key in ("open_frames", "settle_frames", "closed_frames"):
        if int(cfg["run"][key]) < 1:
            raise ValueError(f"run.{key} must be at least 1, not {cfg['run'][key]}")
    return cfg


def bench_arguments(cfg: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`dao.hw.SimulatedBench` for a loop configuration."""
    kw = dict(cfg["bench"])
    sensor = cfg["sensor"].get("type", "shack-hartmann")
    kw["sensor"] = sensor
    kw["wavelength_science"] = float(cfg["science"]["wavelength"])
    if sensor == "pyramid":
        kw.update({k: cfg["sensor"][k] for k in _PYRAMID_BENCH_KEYS if k in cfg["sensor"]})
    return kw


def calibrate(cfg: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Interaction and control matrices on a simulated bench; saved to ``path`` (``.npz``).

    The file holds ``sensor``, ``control_matrix``, ``interaction_matrix``, ``stroke`` and
    the slope estimator's geometry: ``corners``, ``subaperture_size``, ``method`` for a
    Shack-Hartmann; ``indices``, ``reference``, ``mode`` for a pyramid (see
    :func:`dao.loop_components.slope_estimator`).

    Returns
    -------
    dict
        ``n_actuators``, ``n_slopes``, ``wfs_shape``, ``psf_shape`` and ``psf_sampling``
        (science camera pixels per ``lambda / D``), ``n_modes``, ``condition_number``,
        ``budget`` (:meth:`dao.hw.SimulatedBench.error_budget` at the science wavelength),
        ``seconds`` (wall time of the calibration).
    """
    from dao import recon
    from dao.hw import SimulatedBench

    t0 = time.perf_counter()
    bench = SimulatedBench(**bench_arguments(cfg))
    sc = cfg["sensor"]
    if bench.sensor == "pyramid":
        est = bench.slope_estimator(mode=str(sc.get("mode", "slopes")))
        geometry = {"indices": est.indices, "reference": est.reference, "mode": est.mode}
    else:
        est = bench.slope_estimator(method=str(sc.get("method", "cog")))
        geometry = {"corners": est.corners, "subaperture_size": est.h,
                    "method": str(sc.get("method", "cog"))}
    im = recon.measure_interaction_matrix(bench.calibration_slopes(est), bench.n_actuators,
                                          float(cfg["calibration"]["poke"]), pattern="identity",
                                          progress=False)
    n_modes = bench.n_actuators - int(cfg["calibration"].get("drop_modes", 2))
    cm = recon.control_matrix_svd(im, n_modes=n_modes)
    np.savez(path, sensor=bench.sensor, control_matrix=cm.matrix,
             interaction_matrix=im.astype(np.float32), stroke=bench.mirror.stroke[1],
             **geometry)
    return {"n_actuators": bench.n_actuators, "n_slopes": im.shape[0],
            "wfs_shape": tuple(bench.wfs.shape), "psf_shape": tuple(bench.science_camera.shape),
            "psf_sampling": bench.science_camera.pixels_per_lambda_over_d,
            "n_modes": cm.n_modes,
            "condition_number": cm.condition_number,
            "budget": bench.error_budget(1.0, float(cfg["science"]["wavelength"])),
            "seconds": time.perf_counter() - t0}


def _slot_meta(s) -> tuple[np.ndarray, np.ndarray]:
    """``(cnt2, atime_ns)`` of the settled slots of a stream.

    The newest slot and the next one (which a running writer may be filling) are left out.
    """
    m = s._meta.copy()
    ok = m["cnt0"] > 0
    newest = s._stream.newest()
    ok[newest] = ok[(newest + 1) % s.depth] = False
    return m["cnt2"][ok].astype(np.int64), m["atime_ns"][ok].astype(np.int64)


def _stamps(t_cam: dict[int, int], stream) -> dict[int, int]:
    cnt2, atime = _slot_meta(stream)
    return {int(c): int(t) for c, t in zip(cnt2, atime, strict=True) if int(c) in t_cam}


def _stats(prefix: str, seconds: np.ndarray, out: dict[str, Any]) -> None:
    if seconds.size:
        out[f"{prefix}_p50_s"] = float(np.percentile(seconds, 50))
        out[f"{prefix}_p99_s"] = float(np.percentile(seconds, 99))
    else:
        out[f"{prefix}_p50_s"] = out[f"{prefix}_p99_s"] = float("nan")


def _write_telemetry(path: str, streams: dict[str, Any], fields: dict[str, tuple]) -> None:
    """Stream histories to NetCDF: one group per stream, ``frame`` dimension, ``cnt0``,
    ``cnt2`` (frame number) and ``time`` (ns since the epoch) coordinates."""
    import h5netcdf

    with h5netcdf.File(path, "w") as f:
        for key, s in streams.items():
            data, cnt0, times = s.get_history(min(s.depth, max(1, s.get_counter())), meta=True)
            if data.ndim == 3 and data.shape[2] == 1:  # an (n, 1) vector stream
                data = data[:, :, 0]
            m = s._meta.copy()
            by_cnt0 = dict(zip(m["cnt0"].tolist(), m["cnt2"].tolist(), strict=True))
            cnt2 = np.array([by_cnt0.get(int(c), 0) for c in cnt0], np.int64)
            g = f.create_group(key)
            dims = [f"{key}_{i}" for i in range(data.ndim - 1)]
            if key in fields:
                dims = ["field"]
            g.dimensions = {"frame": data.shape[0],
                            **dict(zip(dims, data.shape[1:], strict=True))}
            v = g.create_variable(key, ("frame", *dims), data.dtype, data=data)
            v.attrs["coordinates"] = "cnt0 cnt2 time"
            v.attrs["stream"] = s.path
            if key in fields:
                v.attrs["fields"] = ",".join(fields[key])
            g.create_variable("cnt0", ("frame",), data=cnt0.astype(np.uint64))
            g.create_variable("cnt2", ("frame",), data=cnt2)
            t = g.create_variable("time", ("frame",), data=times)
            t.attrs["units"] = "nanoseconds since 1970-01-01"
            t.attrs["calendar"] = "proleptic_gregorian"


def _release(owned: dict, streams: dict, folder: str) -> None:
    """Stop the processes, close and remove the streams and their folder (idempotent)."""
    from dao.shm import list_streams, remove

    sup = owned.pop("supervisor", None)
    if sup is not None:
        with contextlib.suppress(Exception):
            sup.stop_all(timeout=5.0)
    for s in streams.values():
        with contextlib.suppress(Exception):
            s.close()
    for p in list_streams(folder) if os.path.isdir(folder) else []:
        with contextlib.suppress(OSError):
            remove(p)
    shutil.rmtree(folder, ignore_errors=True)


def default_telemetry_path() -> str:
    """``dao_loop_<date>-<time>.nc`` in the current folder."""
    return os.path.abspath(time.strftime("dao_loop_%Y%m%d-%H%M%S.nc"))


class AOLoop:
    """A closed-loop AO system on the simulated bench, its components in their own processes.

    The loop starts open (gain 0); set :attr:`gain` to close it. Everything runs in other
    processes: this object only sends commands and reads the streams, so a notebook stays
    responsive while the loop runs.

    Streams live in a private folder (:attr:`folder`). Stream semaphores are named by the
    stream's name alone, machine-wide, so the default names get a suffix unique to this loop
    (``wfs_image_k3x9a1``; the names in use are in ``config["streams"]``) and several loops
    can run at once; names set in the configuration are used as they are, for other
    processes (a C DAO consumer) to find.

    Parameters
    ----------
    config : path or dict, optional
        Loop configuration (TOML) updating :data:`DEFAULT_CONFIG`.
    n_subap : int, optional
        Subapertures across the pupil (``bench.n_subap``).
    sensor : str, optional
        ``"shack-hartmann"`` or ``"pyramid"`` (``sensor.type``).
    history : int, optional
        Frames kept in the stream histories (``run.history_frames``; default 8192): the
        window :meth:`latency`, :meth:`science` and :meth:`write_telemetry` see.
    progress : callable, optional
        ``progress(message)`` called at each phase of :meth:`start`.

    Attributes
    ----------
    config : dict
        The configuration in use.
    calibration : dict
        What :func:`calibrate` returned (after :meth:`start`).
    streams : dict of str to dao.shm
        The loop's streams by role (after :meth:`start`).
    supervisor : dao.Supervisor
        The supervisor of the component processes (after :meth:`start`).
    gain_log : list of (int, float)
        ``(frame, gain)`` of every gain change.

    Examples
    --------
    >>> with AOLoop(n_subap=10) as ao:       # doctest: +SKIP
    ...     open_loop = ao.expose(300)
    ...     ao.gain = 0.4                     # close the loop while it runs
    ...     ao.wait(200)
    ...     closed_loop = ao.expose(1000)
    ...     print(open_loop["strehl"], closed_loop["strehl"], ao.latency()["latency_p50_s"])
    """

    def __init__(self, config: str | os.PathLike | dict | None = None, *,
                 n_subap: int | None = None, sensor: str | None = None,
                 history: int | None = None, progress=None) -> None:
        over: dict[str, Any] = {
            "bench": {"n_subap": n_subap} if n_subap else {},
            "sensor": {"type": sensor} if sensor else {},
            "run": {"history_frames": history} if history else {},
        }
        self.config = load_loop_config(config, **over)
        self._say = progress or (lambda msg: None)
        self.calibration: dict[str, Any] = {}
        self.streams: dict[str, Any] = {}
        self.supervisor = None
        self.gain_log: list[tuple[int, float]] = []
        self._gain = 0.0
        self._running = False
        self._owned: dict[str, Any] = {"supervisor": None}
        self._finalizer = None
        self.folder = ""

    # -- life cycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """The component processes are up."""
        return self._running

    def start(self) -> AOLoop:
        """Calibrate, create the streams, start the components; the loop runs open.

        Returns this loop once the camera has produced its first frames.

        Raises
        ------
        RuntimeError
            Already started, or a component process died while starting.
        """
        if self._finalizer is not None:
            raise RuntimeError("this AOLoop was already started: make a new one")
        cfg = self.config
        self.folder = tempfile.mkdtemp(prefix="daoloop", dir="/tmp")
        # semaphores are named by the stream's base name alone (as in the DAO C library), so
        # two loops on one machine need different names: default names get this loop's tag
        tag = os.path.basename(self.folder)[len("daoloop"):][:6]
        default = tomllib.loads(DEFAULT_CONFIG)["streams"]
        cfg["streams"] = {k: f"{v}_{tag}" if v == default.get(k) else v
                          for k, v in cfg["streams"].items()}
        self._finalizer = weakref.finalize(self, _release, self._owned, self.streams,
                                           self.folder)
        try:
            self._start(cfg)
        except BaseException:
            self.close()
            raise
        self.gain_log.append((self.frame, 0.0))
        return self

    def _start(self, cfg: dict[str, Any]) -> None:
        from dao.loop_components import FRAMES_FIELDS, SCIENCE_FIELDS
        from dao.shm import shm
        from dao.supervisor import Supervisor

        run, names, comps = cfg["run"], cfg["streams"], cfg["components"]
        cal_path = os.path.join(self.folder, "calibration.npz")
        n = cfg["bench"]["n_subap"]
        self._say(f"calibrating {n}x{n} {cfg['sensor']['type']}")
        cal = self.calibration = calibrate(cfg, cal_path)
        depth = int(run.get("history_frames") or 8192)
        every = int(cfg["science"]["every"])
        max_bytes = int(run["max_image_history_bytes"])
        image_depth = int(max(4, min(depth, max_bytes // (4 * int(np.prod(cal["wfs_shape"]))))))
        psf_depth = int(max(4, min(256, max_bytes // (4 * int(np.prod(cal["psf_shape"]))))))
        path = {k: os.path.join(self.folder, f"{names[k]}.im.shm") for k in names}
        self.streams.update(
            wfs_image=shm(path["wfs_image"], np.zeros(cal["wfs_shape"], np.float32),
                          depth=image_depth),
            slopes=shm(path["slopes"], np.zeros((cal["n_slopes"], 1), np.float32),
                       depth=depth),
            dm_command=shm(path["dm_command"], np.zeros((cal["n_actuators"], 1), np.float32),
                           depth=depth),
            frames=shm(path["frames"], np.zeros((len(FRAMES_FIELDS), 1), np.int64),
                       depth=depth),
            science=shm(path["science"], np.zeros((len(SCIENCE_FIELDS), 1), np.float64),
                        depth=max(16, depth // every + 4)),
            psf=shm(path["psf"], np.zeros(cal["psf_shape"], np.float32), depth=psf_depth),
        )
        # no <name>_timing streams: the frame log has the loop's timing, and two loops'
        # components would share those names
        common = {"calibration": cal_path, "timing_depth": 0}
        spec = {
            "camera": {"bench": bench_arguments(cfg), "timing_depth": 0,
                       "command_timeout": float(run["command_timeout"]),
                       "science_every": every,
                       "streams": {k: names[k] for k in ("dm_command", "wfs_image", "frames",
                                                         "science", "psf")}},
            "slopes": {**common, "streams": {"wfs_image": names["wfs_image"],
                                             "slopes": names["slopes"]}},
            "controller": {**common, "gain": 0.0, "leak": float(cfg["controller"]["leak"]),
                           "streams": {"slopes": names["slopes"],
                                       "dm_command": names["dm_command"]}},
        }
        env = {"DAO_SHM_DIR": self.folder}
        sup = self.supervisor = self._owned["supervisor"] = Supervisor(
            {"component": [{"name": comps[k]["name"], "class": comps[k]["class"],
                            "state": "Idle", "args": spec[k], "env": env,
                            "log_level": "WARNING"} for k in _ROLES]},
            ready_timeout=float(run["ready_timeout"]), command_timeout=10.0)
        self._running = True
        self._say("starting the components: " + ", ".join(c["name"] for c in comps.values()))
        sup.start_all()
        for k in _ROLES:
            self.client(k).run()
        self.wait(20)

    def stop(self) -> None:
        """Stop the component processes; the stream histories stay readable until
        :meth:`close`."""
        if not self.running:
            return
        for k in ("camera", "slopes", "controller"):
            with contextlib.suppress(Exception):
                self.client(k).idle()
        self.supervisor.stop_all(timeout=5.0)
        self._running = False

    def close(self) -> None:
        """Stop the processes and remove the streams (also done when this object is
        garbage-collected or the interpreter exits)."""
        self._running = False
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> AOLoop:
        if self._finalizer is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        state = (f"running, frame {self.frame}, gain {self._gain:g}" if self.running
                 else "stopped" if self._finalizer is not None else "not started")
        return (f"<AOLoop {c['bench']['n_subap']}x{c['bench']['n_subap']} "
                f"{c['sensor']['type']}: {state}>")

    # -- control ---------------------------------------------------------------------------
    def client(self, role: str):
        """The :class:`dao.ComponentClient` of ``role``: camera, slopes or controller."""
        self._check_running()
        return self.supervisor.client(self.config["components"][role]["name"])

    def _check_running(self) -> None:
        if not self.running:
            raise RuntimeError("the loop is not running: call start() (or use a new AOLoop "
                               "after close())")

    @property
    def frame(self) -> int:
        """Camera frames produced so far."""
        return int(self.streams["frames"].get_counter()) if self.streams else 0

    @property
    def gain(self) -> float:
        """The controller's integrator gain (0: loop open), asked of the running controller.

        Set it to change the gain live.
        """
        if self.running:
            self._gain = float(self.client("controller").query("gain"))
        return self._gain

    @gain.setter
    def gain(self, value: float) -> None:
        self._check_running()
        self.client("controller").setup("gain", float(value))
        self._gain = float(value)
        self.gain_log.append((self.frame, self._gain))

    def open_loop(self) -> None:
        """Open the loop: gain 0 and the integrator (so the mirror) back to zero."""
        self.gain = 0.0
        self.client("controller").other("reset")

    def wait(self, frames: int, timeout: float | None = None) -> int:
        """Wait until the camera has produced ``frames`` more frames; the frame reached.

        Raises
        ------
        TimeoutError
            Not reached within ``timeout`` seconds (default: 60 s plus 50 ms a frame).
        RuntimeError
            A component process died or went to its Error state (the reason is given).
        """
        self._check_running()
        fr = self.streams["frames"]
        target = int(fr.get_counter()) + int(frames)
        timeout = 60.0 + 0.05 * frames if timeout is None else timeout
        now = time.monotonic()
        deadline, last, t_last = now + timeout, -1, now
        while (n := int(fr.get_counter())) < target:
            now = time.monotonic()
            if n != last:
                last, t_last = n, now
            elif now - t_last > 1.0:  # stalled: is a component in Error?
                self._check_components()
                t_last = now
            if now > deadline:
                raise TimeoutError(f"the loop reached frame {n} of {target} in {timeout:.0f} s")
            dead = self.supervisor.poll()
            if dead:
                raise RuntimeError("; ".join(dead))
            time.sleep(0.01)
        return n

    def _check_components(self) -> None:
        """Raise RuntimeError naming the components in their Error state, with the reason."""
        errors = []
        for role in _ROLES:
            c = self.client(role)
            if c.state() == "Error":
                errors.append(f"{self.config['components'][role]['name']}: "
                              f"{c.query('error_reason')}")
        if errors:
            raise RuntimeError("the loop stopped, a component failed: " + "; ".join(errors))

    def expose(self, frames: int) -> dict[str, Any]:
        """A long exposure of the science camera over the next ``frames`` frames.

        Returns
        -------
        dict
            ``strehl`` (peak), ``strehl_marechal``, ``residual_rms`` (rad), ``residual_opd_rms``
            (m), ``wavelength`` (m), ``n_frames`` (exposures summed, one every
            ``science.every`` frames), ``frame``, ``time`` (simulated s), ``late`` (frames
            whose command came too late).
        """
        cam = self.client("camera")
        cam.other("science_reset")
        self.wait(frames)
        return json.loads(cam.other("science"))

    # -- measurements ----------------------------------------------------------------------
    def science(self, frames: int | None = None):
        """Short-exposure image quality, one row per science exposure.

        Parameters
        ----------
        frames : int, optional
            Exposures to return (default all in the history).

        Returns
        -------
        xarray.Dataset
            Variables ``strehl_frame``, ``residual_rms_frame`` (rad) and the running long
            exposure's ``strehl``, ``strehl_marechal``, ``residual_rms``, ``n_frames``;
            coordinates ``frame`` (camera frame number) and ``time`` (simulated s).
        """
        import xarray as xr

        from dao.loop_components import SCIENCE_FIELDS

        s = self.streams["science"]
        have = int(s.get_counter())
        if have == 0:
            raise RuntimeError("no science exposure yet: wait for a few frames")
        n = min(s.depth, have) if frames is None else min(int(frames), s.depth, have)
        data = s.get_history(n)[:, :, 0]
        data = data[data[:, 0] > 0]  # not the zeros the stream was created with
        col = {f: data[:, i] for i, f in enumerate(SCIENCE_FIELDS)}
        return xr.Dataset(
            {f: ("frame", col[f]) for f in SCIENCE_FIELDS if f not in ("frame", "time")},
            coords={"frame": col["frame"].astype(np.int64),
                    "time": ("frame", col["time"], {"units": "s"})},
            attrs={"wavelength_m": float(self.config["science"]["wavelength"])})

    def psf(self, exposures: int = 50):
        """The science camera's long exposure: the mean of its last ``exposures`` PSFs.

        Normalised so that the diffraction limit peaks at 1 (the peak is the Strehl ratio).

        Returns
        -------
        xarray.DataArray
            Dimensions ``y``, ``x`` with coordinates in ``lambda / D`` from the centre;
            attributes ``wavelength_m``, ``exposures``, ``strehl``, ``frames`` (first and last
            camera frame).
        """
        import xarray as xr

        s = self.streams["psf"]
        have = int(s.get_counter()) - 1  # the first frame is the zeros of the creation
        if have < 1:
            raise RuntimeError("no science exposure yet: wait for a few frames")
        n = min(int(exposures), s.depth, have)
        data = s.get_history(n).mean(axis=0)
        m = s._meta.copy()
        frames = np.sort(m["cnt2"][m["cnt0"] > int(s.get_counter()) - n])
        per = float(self.calibration["psf_sampling"])
        ny, nx = data.shape
        return xr.DataArray(
            data, dims=("y", "x"),
            coords={"y": (np.arange(ny) - ny // 2) / per, "x": (np.arange(nx) - nx // 2) / per},
            name="psf",
            attrs={"wavelength_m": float(self.config["science"]["wavelength"]),
                   "exposures": n, "strehl": float(data.max()), "units": "Strehl",
                   "frames": (int(frames[0]), int(frames[-1])) if frames.size else (0, 0)})

    def latency(self, since: int = 0) -> dict[str, float]:
        """Loop rate and per-stage latency of the frames after frame ``since`` in the history.

        Returns
        -------
        dict
            ``loop_rate_hz``; ``latency_p50_s`` and ``latency_p99_s`` (camera frame to DM
            command), the same for ``latency_camera_to_slopes`` and
            ``latency_slopes_to_command``; ``latency_samples``.
        """
        st = self.streams
        fr = st["frames"]
        have = int(fr.get_counter())
        rows = fr.get_history(min(fr.depth, max(have, 1)))[:, :, 0]
        t_cam = {int(r[0]): int(r[1]) for r in rows if r[0] > since}
        t_slopes = _stamps(t_cam, st["slopes"])
        t_cmd = _stamps(t_cam, st["dm_command"])
        done = [f for f in sorted(t_cmd) if f in t_slopes]
        out: dict[str, float] = {}
        cam_frames = sorted(t_cam)
        span = (t_cam[cam_frames[-1]] - t_cam[cam_frames[0]]) * 1e-9 if cam_frames else 0.0
        out["loop_rate_hz"] = (len(cam_frames) - 1) / span if span > 0 else float("nan")
        _stats("latency", np.array([t_cmd[f] - t_cam[f] for f in done]) * 1e-9, out)
        _stats("latency_camera_to_slopes",
               np.array([t_slopes[f] - t_cam[f] for f in done]) * 1e-9, out)
        _stats("latency_slopes_to_command",
               np.array([t_cmd[f] - t_slopes[f] for f in done]) * 1e-9, out)
        out["latency_samples"] = len(done)
        return out

    def write_telemetry(self, path: str | os.PathLike) -> str:
        """Write the histories of ``slopes``, ``dm_command``, ``frames`` and ``science``.

        NetCDF, one group per stream (read it with :func:`dao.telemetry.open_recording`);
        works while the loop runs or after :meth:`stop`. Returns the path.
        """
        from dao.loop_components import FRAMES_FIELDS, SCIENCE_FIELDS

        if not self.streams:
            raise RuntimeError("the loop was not started")
        _write_telemetry(str(path), {k: self.streams[k] for k in
                                     ("slopes", "dm_command", "frames", "science")},
                         {"frames": FRAMES_FIELDS, "science": SCIENCE_FIELDS})
        return str(path)


def run_loop(config: str | os.PathLike | dict | None = None, *, n_subap: int | None = None,
             gain: float | None = None, frames: int | None = None, sensor: str | None = None,
             telemetry: str | os.PathLike | None = None, progress=None) -> dict[str, Any]:
    """Calibrate, run open then closed loop across processes, report; see the module doc.

    Parameters
    ----------
    config : path or dict, optional
        Loop configuration (TOML) updating :data:`DEFAULT_CONFIG`.
    n_subap, gain, sensor : optional
        Override ``bench.n_subap``, ``controller.gain``, ``sensor.type``.
    frames : int, optional
        Closed-loop frames measured (``run.closed_frames``).
    telemetry : path, optional
        NetCDF file for the telemetry (default :func:`default_telemetry_path`, a new file in
        the current folder); ``""`` writes none.
    progress : callable, optional
        ``progress(message)`` called at each phase.

    Returns
    -------
    dict
        The report: :data:`REPORT_KEYS` (Strehl ratios at ``wavelength_m``, loop rate in Hz,
        camera frame to DM command latency in seconds) and more (residual rms in radians at
        the science wavelength, per-stage latencies, the closed-loop Strehl of each half,
        frames, late frames, the error budget's Strehl, ``telemetry`` path, ``pids``).
    """
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    over = {"controller": {"gain": gain} if gain is not None else {},
            "run": {"closed_frames": frames} if frames else {}}
    cfg = load_loop_config(config, **over)
    run = cfg["run"]
    n_open, n_settle = int(run["open_frames"]), int(run["settle_frames"])
    n_closed = int(run["closed_frames"])
    if not run.get("history_frames"):
        cfg["run"]["history_frames"] = n_open + n_settle + n_closed + 64
    if telemetry is None:
        telemetry = default_telemetry_path()
    g = float(cfg["controller"]["gain"])
    report: dict[str, Any] = {}
    with AOLoop(cfg, n_subap=n_subap, sensor=sensor, progress=say) as ao:
        report["pids"] = [s["pid"] for s in ao.supervisor.status()]
        say(f"open loop: {n_open} frames")
        q_open = ao.expose(n_open)
        ao.gain = g
        say(f"closing the loop (gain {g:g}): {n_settle} frames to settle, "
            f"{n_closed} measured")
        ao.wait(n_settle)
        t_c0 = ao.frame
        q_first = ao.expose(n_closed // 2)
        q_second = ao.expose(n_closed - n_closed // 2)
        ao.stop()
        report["processes_alive"] = [s["pid"] for s in ao.supervisor.status() if s["alive"]]
        timing = ao.latency(since=t_c0)
        if telemetry:
            ao.write_telemetry(telemetry)
        frames_total = ao.frame
        cal = ao.calibration
        cfg = ao.config

    n_closed_frames = q_first["n_frames"] + q_second["n_frames"]
    strehl_closed = (q_first["strehl"] * q_first["n_frames"]
                     + q_second["strehl"] * q_second["n_frames"]) / max(n_closed_frames, 1)
    rms_closed = math.sqrt((q_first["residual_rms"] ** 2 * q_first["n_frames"]
                            + q_second["residual_rms"] ** 2 * q_second["n_frames"])
                           / max(n_closed_frames, 1))
    every = int(cfg["science"]["every"])
    report.update(
        strehl_open=q_open["strehl"],
        strehl_closed=strehl_closed,
        wavelength_m=float(cfg["science"]["wavelength"]),
        **timing,
        residual_rms_open_rad=q_open["residual_rms"],
        residual_rms_closed_rad=rms_closed,
        residual_opd_rms_closed_m=rms_closed * float(cfg["science"]["wavelength"])
        / (2 * math.pi),
        strehl_closed_first_half=q_first["strehl"],
        strehl_closed_second_half=q_second["strehl"],
        strehl_budget=cal["budget"]["strehl"],
        frames_open=int(q_open["n_frames"]) * every,
        frames_closed=int(n_closed_frames) * every,
        frames_total=frames_total,
        late_frames=int(q_second["late"]),
        n_subap=int(cfg["bench"]["n_subap"]),
        n_actuators=cal["n_actuators"],
        n_slopes=cal["n_slopes"],
        n_modes=cal["n_modes"],
        sensor=cfg["sensor"]["type"],
        estimator=(f"modulation {cfg['sensor'].get('modulation')} lambda/D"
                   if cfg["sensor"]["type"] == "pyramid" else cfg["sensor"].get("method", "cog")),
        gain=g,
        frame_rate_simulated_hz=float(cfg["bench"]["frame_rate"]),
        calibration_s=cal["seconds"],
        telemetry=str(telemetry) if telemetry else None,
        wall_s=time.perf_counter() - t_start,
    )
    return report


def format_report(r: dict[str, Any]) -> str:
    """The report of :func:`run_loop` as a few lines of text."""
    um = r["wavelength_m"] * 1e6
    us = 1e6
    lines = [
        f"dao loop: {r['n_subap']}x{r['n_subap']} {r['sensor']} ({r['estimator']}; "
        f"{r['n_slopes']} slopes, {r['n_actuators']} actuators, {r['n_modes']} modes), "
        f"gain {r['gain']:g}, 3 processes (bench camera+DM+science, slopes, controller)",
        f"  Strehl at {um:.2f} um: open loop {r['strehl_open']:.4f}, closed loop "
        f"{r['strehl_closed']:.3f} ({r['strehl_closed'] / max(r['strehl_open'], 1e-12):.0f}x; "
        f"halves {r['strehl_closed_first_half']:.3f} / {r['strehl_closed_second_half']:.3f}; "
        f"error budget {r['strehl_budget']:.3f})",
        f"  residual rms: open {r['residual_rms_open_rad']:.2f} rad, closed "
        f"{r['residual_rms_closed_rad']:.3f} rad ({r['residual_opd_rms_closed_m'] * 1e9:.0f} nm)",
        f"  loop rate {r['loop_rate_hz']:.0f} Hz (lock-step; simulated "
        f"{r['frame_rate_simulated_hz']:g} Hz), {r['frames_total']} frames, "
        f"{r['late_frames']} late",
        f"  latency camera frame -> DM command: p50 {r['latency_p50_s'] * us:.0f} us, "
        f"p99 {r['latency_p99_s'] * us:.0f} us  (camera -> slopes p50 "
        f"{r['latency_camera_to_slopes_p50_s'] * us:.0f} / p99 "
        f"{r['latency_camera_to_slopes_p99_s'] * us:.0f} us; slopes -> command p50 "
        f"{r['latency_slopes_to_command_p50_s'] * us:.0f} / p99 "
        f"{r['latency_slopes_to_command_p99_s'] * us:.0f} us; {r['latency_samples']} frames)",
        f"  calibration {r['calibration_s']:.1f} s, total {r['wall_s']:.1f} s; telemetry: "
        f"{r['telemetry'] or 'not written'}",
    ]
    return "\n".join(lines)

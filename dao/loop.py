"""The AO loop: wire components into a closed loop on the simulated bench from a config file.

:func:`run_loop` reads a configuration (TOML; the embedded default :data:`DEFAULT_CONFIG` is
a 20x20 Shack-Hartmann system on an 8 m telescope), then

1. calibrates on a simulated bench in this process: interaction matrix by poking each
   actuator (push-pull, noise-free), control matrix by truncated SVD; saves both with the
   subaperture windows to ``calibration.npz``;
2. creates the streams (``wfs_image``, ``slopes``, ``dm_command`` and the camera's ``frames``
   log as FIFOs deep enough to keep the whole run's timestamps, and ``science``) in a fresh
   stream folder;
3. starts the components (:mod:`dao.loop_components`: bench camera, slopes, controller), each
   in its own process under a :class:`dao.Supervisor`;
4. runs the loop open (gain 0) and measures the science camera's long-exposure Strehl, then
   sets the controller's gain over the command protocol, lets the loop settle and measures
   the closed-loop Strehl in two halves (a drift check);
5. stops every process, reads the stream histories: loop rate and latency per stage from the
   frame timestamps (camera frame to slopes to DM command, matched by frame number ``cnt2``),
   writes the telemetry (NetCDF, one group per stream, readable with
   :func:`dao.telemetry.open_recording`), removes the streams.

The bench moves the atmosphere by one frame period per camera frame and waits for the
command of each frame (lock-step), so the Strehl ratios do not depend on the machine's speed;
the loop rate and latencies do.

Configuration (every key optional; see :data:`DEFAULT_CONFIG`)::

    [bench]         # dao.hw.SimulatedBench keyword arguments
    n_subap = 20
    [sensor]
    type = "shack-hartmann"
    method = "cog"  # centroiding: cog, tcog, wcog, brightest
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
    [streams]       # stream names
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
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_CONFIG", "load_loop_config", "calibrate", "run_loop", "format_report",
           "REPORT_KEYS"]

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
type = "shack-hartmann"
method = "cog"

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
command_timeout = 1.0   # s: the bench goes on without a command after this (a late frame)
ready_timeout = 60.0    # s: longest start of a component process
max_image_history_bytes = 67108864

[streams]
wfs_image = "wfs_image"
slopes = "slopes"
dm_command = "dm_command"
frames = "wfs_frames"
science = "science"

[components]
camera = { name = "bench", class = "dao.loop_components:BenchCamera" }
slopes = { name = "slopes", class = "dao.loop_components:Slopes" }
controller = { name = "controller", class = "dao.loop_components:Controller" }
"""

#: Keys always present in the report.
REPORT_KEYS = ("strehl_open", "strehl_closed", "wavelength_m", "loop_rate_hz",
               "latency_p50_s", "latency_p99_s")

SENSORS = ("shack-hartmann",)


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
    """
    cfg = tomllib.loads(DEFAULT_CONFIG)
    if source is not None:
        if not isinstance(source, dict):
            with Path(source).open("rb") as f:
                source = tomllib.load(f)
        cfg = _merge(cfg, source)
    cfg = _merge(cfg, {k: v for k, v in overrides.items() if v})
    sensor = cfg["sensor"].get("type", "shack-hartmann")
    if sensor not in SENSORS:
        raise ValueError(f"sensor {sensor!r} is not simulated by the bench yet: use one of "
                         f"{', '.join(SENSORS)}")
    return cfg


def calibrate(cfg: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Interaction and control matrices on a simulated bench; saved to ``path`` (``.npz``).

    Returns
    -------
    dict
        ``n_actuators``, ``n_slopes``, ``wfs_shape``, ``n_modes``, ``condition_number``,
        ``seconds`` (wall time of the calibration).
    """
    from dao import recon
    from dao.hw import SimulatedBench

    t0 = time.perf_counter()
    bench = SimulatedBench(**cfg["bench"])
    method = cfg["sensor"].get("method", "cog")
    sh = bench.centroider(method=method)
    im = recon.measure_interaction_matrix(bench.calibration_slopes(sh), bench.n_actuators,
                                          float(cfg["calibration"]["poke"]), pattern="identity",
                                          progress=False)
    n_modes = bench.n_actuators - int(cfg["calibration"].get("drop_modes", 2))
    cm = recon.control_matrix_svd(im, n_modes=n_modes)
    np.savez(path, control_matrix=cm.matrix, interaction_matrix=im.astype(np.float32),
             corners=sh.corners, subaperture_size=sh.h, method=method,
             stroke=bench.mirror.stroke[1])
    return {"n_actuators": bench.n_actuators, "n_slopes": im.shape[0],
            "wfs_shape": tuple(bench.wfs.shape), "n_modes": cm.n_modes,
            "condition_number": cm.condition_number,
            "budget": bench.error_budget(1.0, float(cfg["science"]["wavelength"])),
            "seconds": time.perf_counter() - t0}


def _wait_frames(frames, target: int, timeout: float, sup=None) -> int:
    """Wait until the camera has written frame ``target``; the frame number reached."""
    deadline = time.monotonic() + timeout
    while True:
        n = int(frames.get_counter())
        if n >= target:
            return n
        if time.monotonic() > deadline:
            raise TimeoutError(f"the loop reached frame {n} of {target} in {timeout:.0f} s")
        if sup is not None:
            dead = sup.poll()
            if dead:
                raise RuntimeError("; ".join(dead))
        time.sleep(0.01)


def _slot_meta(s) -> tuple[np.ndarray, np.ndarray]:
    """``(cnt2, atime_ns)`` of every written slot of a stream (the loop is stopped)."""
    m = s._meta
    ok = m["cnt0"] > 0
    return m["cnt2"][ok].astype(np.int64), m["atime_ns"][ok].astype(np.int64)


def _latencies(t_cam: dict[int, int], stream) -> dict[int, int]:
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
            m = s._meta
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
        NetCDF file for the telemetry (default ``dao_loop_telemetry.nc`` in a new temporary
        folder); ``""`` writes none.
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
    from dao.loop_components import FRAMES_FIELDS, SCIENCE_FIELDS
    from dao.shm import shm
    from dao.supervisor import Supervisor
    from dao.testing import temporary_stream_dir

    say = progress or (lambda msg: None)
    over: dict[str, Any] = {
        "bench": {"n_subap": n_subap} if n_subap else {},
        "controller": {"gain": gain} if gain is not None else {},
        "sensor": {"type": sensor} if sensor else {},
        "run": {"closed_frames": frames} if frames else {},
    }
    cfg = load_loop_config(config, **over)
    t_start = time.perf_counter()
    run = cfg["run"]
    names = cfg["streams"]
    comps = cfg["components"]
    work = tempfile.mkdtemp(prefix="dao_loop_")
    cal_path = os.path.join(work, "calibration.npz")
    if telemetry is None:
        telemetry = os.path.join(work, "dao_loop_telemetry.nc")
    cfg["bench"]["wavelength_science"] = float(cfg["science"]["wavelength"])
    say(f"calibrating {cfg['bench']['n_subap']}x{cfg['bench']['n_subap']} Shack-Hartmann")
    cal = calibrate(cfg, cal_path)
    n_open, n_settle = int(run["open_frames"]), int(run["settle_frames"])
    n_closed = int(run["closed_frames"])
    total = n_open + n_settle + n_closed + 64
    every = int(cfg["science"]["every"])
    image_bytes = 4 * int(np.prod(cal["wfs_shape"]))
    image_depth = int(max(4, min(total, int(run["max_image_history_bytes"]) // image_bytes)))

    report: dict[str, Any] = {}
    with temporary_stream_dir() as sdir:
        streams = {
            "wfs_image": shm(names["wfs_image"], np.zeros(cal["wfs_shape"], np.float32),
                             depth=image_depth),
            "slopes": shm(names["slopes"], np.zeros(cal["n_slopes"], np.float32), depth=total),
            "dm_command": shm(names["dm_command"], np.zeros(cal["n_actuators"], np.float32),
                              depth=total),
            "frames": shm(names["frames"], np.zeros(len(FRAMES_FIELDS), np.int64),
                          depth=total),
            "science": shm(names["science"], np.zeros(len(SCIENCE_FIELDS), np.float64),
                           depth=max(16, total // every + 4)),
        }
        common = {"calibration": cal_path, "timing_depth": 0}
        spec = {
            "camera": {"bench": cfg["bench"], "command_timeout": float(run["command_timeout"]),
                       "science_every": every,
                       "streams": {k: names[k] for k in ("dm_command", "wfs_image", "frames",
                                                         "science")}},
            "slopes": {**common, "streams": {"wfs_image": names["wfs_image"],
                                             "slopes": names["slopes"]}},
            "controller": {**common, "gain": 0.0, "leak": float(cfg["controller"]["leak"]),
                           "streams": {"slopes": names["slopes"],
                                       "dm_command": names["dm_command"]}},
        }
        env = {"DAO_SHM_DIR": sdir}
        sup_cfg = {"component": [
            {"name": comps[k]["name"], "class": comps[k]["class"], "state": "Idle",
             "args": spec[k], "env": env, "log_level": "WARNING"}
            for k in ("controller", "slopes", "camera")]}
        sup = Supervisor(sup_cfg, ready_timeout=float(run["ready_timeout"]),
                         command_timeout=10.0)
        cam_name, ctl_name = comps["camera"]["name"], comps["controller"]["name"]
        try:
            say("starting the components: " + ", ".join(c["name"] for c in comps.values()))
            sup.start_all()
            report["pids"] = [s["pid"] for s in sup.status()]
            for k in ("controller", "slopes", "camera"):
                sup.client(comps[k]["name"]).run()
            cam, ctl = sup.client(cam_name), sup.client(ctl_name)
            fr = streams["frames"]
            timeout = max(60.0, 0.05 * total)
            say(f"open loop: {n_open} frames")
            f0 = _wait_frames(fr, 20, timeout, sup)
            cam.other("science_reset")
            _wait_frames(fr, f0 + n_open, timeout, sup)
            q_open = json.loads(cam.other("science"))
            g = float(cfg["controller"]["gain"])
            ctl.setup("gain", g)
            f1 = int(fr.get_counter())
            say(f"closing the loop (gain {g:g}): {n_settle} frames to settle, "
                f"{n_closed} measured")
            _wait_frames(fr, f1 + n_settle, timeout, sup)
            cam.other("science_reset")
            t_c0 = int(fr.get_counter())
            _wait_frames(fr, t_c0 + n_closed // 2, timeout, sup)
            q_first = json.loads(cam.other("science"))
            cam.other("science_reset")
            _wait_frames(fr, t_c0 + n_closed, timeout, sup)
            q_second = json.loads(cam.other("science"))
            for k in ("camera", "slopes", "controller"):
                sup.client(comps[k]["name"]).idle()
        finally:
            sup.stop_all(timeout=5.0)
        report["processes_alive"] = [s["pid"] for s in sup.status() if s["alive"]]

        # -- timestamps: camera frame -> slopes -> DM command, by frame number -------------
        fdata, _, _ = streams["frames"].get_history(
            min(streams["frames"].depth, int(streams["frames"].get_counter())), meta=True)
        t_cam = {int(r[0]): int(r[1]) for r in fdata}
        t_slopes = _latencies(t_cam, streams["slopes"])
        t_cmd = _latencies(t_cam, streams["dm_command"])
        closed = [f for f in sorted(t_cmd) if f > t_c0 and f in t_slopes]
        lat = np.array([t_cmd[f] - t_cam[f] for f in closed]) * 1e-9
        st1 = np.array([t_slopes[f] - t_cam[f] for f in closed]) * 1e-9
        st2 = np.array([t_cmd[f] - t_slopes[f] for f in closed]) * 1e-9
        cam_frames = sorted(f for f in t_cam if f > t_c0)
        span = (t_cam[cam_frames[-1]] - t_cam[cam_frames[0]]) * 1e-9 if cam_frames else 0.0
        rate = (len(cam_frames) - 1) / span if span > 0 else float("nan")

        n_closed_frames = q_first["n_frames"] + q_second["n_frames"]
        strehl_closed = (q_first["strehl"] * q_first["n_frames"]
                         + q_second["strehl"] * q_second["n_frames"]) / max(n_closed_frames, 1)
        rms_closed = math.sqrt((q_first["residual_rms"] ** 2 * q_first["n_frames"]
                                + q_second["residual_rms"] ** 2 * q_second["n_frames"])
                               / max(n_closed_frames, 1))
        report.update(
            strehl_open=q_open["strehl"],
            strehl_closed=strehl_closed,
            wavelength_m=float(cfg["science"]["wavelength"]),
            loop_rate_hz=rate,
        )
        _stats("latency", lat, report)
        _stats("latency_camera_to_slopes", st1, report)
        _stats("latency_slopes_to_command", st2, report)
        report.update(
            residual_rms_open_rad=q_open["residual_rms"],
            residual_rms_closed_rad=rms_closed,
            residual_opd_rms_closed_m=rms_closed * report["wavelength_m"] / (2 * math.pi),
            strehl_closed_first_half=q_first["strehl"],
            strehl_closed_second_half=q_second["strehl"],
            strehl_budget=cal["budget"]["strehl"],
            frames_open=int(q_open["n_frames"]) * every,
            frames_closed=int(n_closed_frames) * every,
            frames_total=int(fr.get_counter()),
            late_frames=int(q_second["late"]),
            latency_samples=int(lat.size),
            n_subap=int(cfg["bench"]["n_subap"]),
            n_actuators=cal["n_actuators"],
            n_slopes=cal["n_slopes"],
            n_modes=cal["n_modes"],
            sensor=cfg["sensor"]["type"],
            centroider=cfg["sensor"].get("method", "cog"),
            gain=float(cfg["controller"]["gain"]),
            frame_rate_simulated_hz=float(cfg["bench"]["frame_rate"]),
            calibration_s=cal["seconds"],
        )
        if telemetry:
            _write_telemetry(str(telemetry), {k: streams[k] for k in
                                              ("slopes", "dm_command", "frames", "science")},
                             {"frames": FRAMES_FIELDS, "science": SCIENCE_FIELDS})
        report["telemetry"] = str(telemetry) if telemetry else None
        for s in streams.values():
            with contextlib.suppress(Exception):
                s.close()
    with contextlib.suppress(OSError):
        os.remove(cal_path)
        if not telemetry or not str(telemetry).startswith(work):
            os.rmdir(work)
    report["wall_s"] = time.perf_counter() - t_start
    return report


def format_report(r: dict[str, Any]) -> str:
    """The report of :func:`run_loop` as a few lines of text."""
    um = r["wavelength_m"] * 1e6
    us = 1e6
    lines = [
        f"dao loop: {r['n_subap']}x{r['n_subap']} {r['sensor']} ({r['n_slopes']} slopes, "
        f"{r['n_actuators']} actuators, {r['n_modes']} modes), gain {r['gain']:g}, "
        f"3 processes (bench camera+DM+science, slopes, controller)",
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

"""The scripted loop run behind ``dao demo``, and its report."""

from __future__ import annotations

import math
import os
import time
from typing import Any

from dao.loop.aoloop import AOLoop, default_telemetry_path
from dao.loop.config import load_loop_config

__all__ = ["REPORT_KEYS", "run_loop", "format_report"]

#: Keys always present in the report.
REPORT_KEYS = ("strehl_open", "strehl_closed", "wavelength_m", "loop_rate_hz",
               "latency_p50_s", "latency_p99_s")


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
    run["start"] = "open"  # the run measures the open loop first, then closes it
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
        law=(f"{cfg['controller']['law']} law, {cfg['controller']['basis']} modes"
             if cfg["controller"]["law"] == "modal" else f"{cfg['controller']['law']} law"),
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
        f"{r['law']}, gain {r['gain']:g}, 3 processes (bench camera+DM+science, slopes, "
        "controller)",
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

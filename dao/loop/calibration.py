"""Calibration of the loop on a simulated bench: interaction and control matrices."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from dao.loop.config import bench_arguments

__all__ = ["calibrate"]


def calibrate(cfg: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Interaction and control matrices on a simulated bench; saved to ``path`` (``.npz``).

    The file holds ``sensor``, ``control_matrix``, ``interaction_matrix``, ``stroke``, the
    slope estimator's geometry: ``corners``, ``subaperture_size``, ``method`` for a
    Shack-Hartmann; ``indices``, ``reference``, ``mode`` for a pyramid (see
    :func:`dao.loop.components.slope_estimator`), and the positions of the measurement
    points and actuators (the ``*_x``, ``*_y`` arrays below).

    The slope vector is ordered as the estimators write it: the x slope of every subaperture,
    then the y slope of every subaperture (a pyramid in ``intensities`` mode: the four pupil
    images I1..I4 one after the other), i.e. a ``(n_axes, n_subapertures)`` array in C order
    (``slopes_shape``). Subapertures are in row-major order of the sensor's valid map, as
    the estimator's windows (``corners``) or pupil pixels (``indices``) are.

    Returns
    -------
    dict
        ``n_actuators``, ``n_slopes``, ``interaction_matrix`` (``(n_slopes, n_actuators)``
        float32, slopes per metre of OPD), ``control_matrix`` (``(n_actuators, n_slopes)``),
        ``slopes_shape`` (``(n_axes, n_subapertures)``),
        ``wfs_shape``, ``psf_shape`` and ``psf_sampling`` (science camera pixels per
        ``lambda / D``), ``n_modes``, ``condition_number``, ``budget``
        (:meth:`dao.hw.SimulatedBench.error_budget` at the science wavelength), ``seconds``
        (wall time of the calibration), ``sensor``; the geometry:
        ``subaperture_x``, ``subaperture_y`` (int64, one per subaperture: its column and row
        on the lenslet grid; a pyramid's valid pixel's column and row in the pupil image),
        ``subaperture_grid`` (rows and columns of that grid), ``actuator_x``,
        ``actuator_y`` (int64, one per actuator in command order: its column and row on the
        mirror's actuator grid), ``actuator_grid`` (rows and columns of that grid) and
        ``actuator_pitch`` (metres in the pupil).
    """
    from dao import recon
    from dao.hw import SimulatedBench

    t0 = time.perf_counter()
    bench = SimulatedBench(**bench_arguments(cfg))
    sc = cfg["sensor"]
    if bench.sensor == "pyramid":
        est = bench.slope_estimator(mode=str(sc.get("mode", "slopes")))
        geometry = {"indices": est.indices, "reference": est.reference, "mode": est.mode}
        # the pupil pixels in the order of the estimator's indices (row-major order of valid)
        sub_y, sub_x = np.nonzero(bench.wfs.valid)
    else:
        est = bench.slope_estimator(method=str(sc.get("method", "cog")))
        geometry = {"corners": est.corners, "subaperture_size": est.h,
                    "method": str(sc.get("method", "cog"))}
        # each window's top-left pixel over the window size: its place on the lenslet grid
        sub_y, sub_x = est.corners[:, 0] // est.h, est.corners[:, 1] // est.w
    act_y, act_x = np.nonzero(bench.mirror.valid)  # the command's order (flatnonzero)
    positions = {"subaperture_x": sub_x.astype(np.int64), "subaperture_y": sub_y.astype(np.int64),
                 "actuator_x": act_x.astype(np.int64), "actuator_y": act_y.astype(np.int64)}
    im = recon.measure_interaction_matrix(bench.calibration_slopes(est), bench.n_actuators,
                                          float(cfg["calibration"]["poke"]), pattern="identity",
                                          progress=False)
    n_modes = bench.n_actuators - int(cfg["calibration"].get("drop_modes", 2))
    cm = recon.control_matrix_svd(im, n_modes=n_modes)
    n_sub = sub_x.size
    if n_sub == 0 or im.shape[0] % n_sub or act_x.size != bench.n_actuators:
        raise RuntimeError(f"the bench's geometry does not match its measurements: "
                           f"{im.shape[0]} slopes for {n_sub} subapertures, "
                           f"{bench.n_actuators} actuators for {act_x.size} on the grid")
    np.savez(path, sensor=bench.sensor, control_matrix=cm.matrix,
             interaction_matrix=im.astype(np.float32), stroke=bench.mirror.stroke[1],
             **geometry, **positions)
    return {"n_actuators": bench.n_actuators, "n_slopes": im.shape[0],
            "interaction_matrix": im.astype(np.float32), "control_matrix": cm.matrix,
            "slopes_shape": (im.shape[0] // n_sub, n_sub), "sensor": bench.sensor,
            **positions, "subaperture_grid": tuple(bench.wfs.valid.shape),
            "actuator_grid": tuple(bench.mirror.valid.shape),
            "actuator_pitch": float(bench.mirror.pitch),
            "wfs_shape": tuple(bench.wfs.shape), "psf_shape": tuple(bench.science_camera.shape),
            "psf_sampling": bench.science_camera.pixels_per_lambda_over_d,
            "n_modes": cm.n_modes,
            "condition_number": cm.condition_number,
            "budget": bench.error_budget(1.0, float(cfg["science"]["wavelength"])),
            "seconds": time.perf_counter() - t0}

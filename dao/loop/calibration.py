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

    The file holds ``sensor``, ``control_matrix``, ``interaction_matrix``, ``stroke`` and
    the slope estimator's geometry: ``corners``, ``subaperture_size``, ``method`` for a
    Shack-Hartmann; ``indices``, ``reference``, ``mode`` for a pyramid (see
    :func:`dao.loop.components.slope_estimator`).

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

"""The demo's 20x20 Shack-Hartmann loop: daolite's estimate, dao's model and the measurement.

daolite (PyPI, a benchmark-only dependency) is given this machine's figures: its cores, an
assumed clock and flops per cycle, and the memory bandwidth dao's calibration measured here
(expressed as daolite's channels x width x frequency); the pixels are already in memory (the
simulated camera writes shared memory), so its camera and network are set as fast as its API
allows. dao's model is ``predict_loop`` on a quick calibration with the loop's hops measured;
the measurement is ``measure_loop``. Each figure is printed as a JSON line (see _report.py):
``value`` is dao's model, ``baseline`` daolite's estimate, ``measured_s`` the measurement.
"""

from __future__ import annotations

import os

import numpy as np
from _report import emit, machine, parser

import dao.latency as lat
from dao.latency.profile import loop_geometry

N_SUBAP = 20


def _clock_hz() -> float:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) * 1e6
    except OSError:
        pass
    return 2.5e9  # assumed when the kernel does not report it


def daolite_estimate_s(profile, geo: dict) -> float:
    """daolite's end-to-end latency of the loop, s: calibration, centroiding, MVM, DM."""
    from daolite.compute import create_compute_resources
    from daolite.pipeline.calibration import PixelCalibration
    from daolite.pipeline.centroider import Centroider
    from daolite.pipeline.reconstruction import Reconstruction
    from daolite.simulation.deformable_mirror import DMController

    # memory bandwidth measured here, as one 64-bit channel at the matching frequency
    bw = profile.memory_bandwidth_bytes_per_s
    cpu = create_compute_resources(
        cores=os.cpu_count() or 1, core_frequency=_clock_hz(), flops_per_cycle=16,
        memory_frequency=bw / 8, memory_width=64, memory_channels=1,
        network_speed=1e12, time_in_driver=0.0)
    h, w = geo["wfs_shape"]
    n_valid = geo["estimator_size"]
    groups = N_SUBAP
    pix_agenda = np.full(groups, h * w // groups)
    sub_agenda = np.full(groups, int(np.ceil(n_valid / groups)))
    ready = np.zeros([groups, 2])  # every pixel in memory at t = 0
    cal = PixelCalibration(cpu, ready, pix_agenda)
    cen = Centroider(cpu, cal, sub_agenda, n_pix_per_subap=(h // N_SUBAP) ** 2)
    rec = Reconstruction(cpu, cen, sub_agenda, n_acts=geo["n_actuators"])
    dm = DMController(cpu, rec, n_actuators=geo["n_actuators"], bits_per_actuator=64)
    return float(np.max(dm[:, 1])) * 1e-6  # daolite works in microseconds


def main() -> None:
    args = parser(__doc__).parse_args()
    frames = 500 if args.quick else 2000
    print(__import__("json").dumps(machine()))
    profile = lat.calibrate(quick=True, loops=["sh20"])
    profile = lat.measure_loop_hops(profile, N_SUBAP, 1500, runs=1 if args.quick else 3)
    geo = loop_geometry("shack-hartmann", N_SUBAP)
    ours = lat.predict_loop(None, profile, n_subap=N_SUBAP)
    theirs = daolite_estimate_s(profile, geo)
    meas = lat.measure_loop(None, n_subap=N_SUBAP, frames=frames)
    p50 = ours["latency_p50_s"]
    emit("sh20_latency_p50_model_vs_daolite", p50 * 1e6, "us", theirs * 1e6,
         measured_us=meas["latency_p50_s"] * 1e6,
         dao_model_over_measured=round(p50 / meas["latency_p50_s"], 4),
         daolite_over_measured=round(theirs / meas["latency_p50_s"], 4),
         baseline_name="daolite 0.1.1", frames=frames)


if __name__ == "__main__":
    main()

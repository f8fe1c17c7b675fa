"""The AO loop: components wired into a closed loop on the simulated bench by a config file.

- :mod:`~dao.loop.config`: the embedded default configuration and its checked updates;
- :mod:`~dao.loop.calibration`: interaction and control matrices on the bench;
- :mod:`~dao.loop.components`: the bench camera, slopes and controller components;
- :mod:`~dao.loop.aoloop`: :class:`AOLoop`, a running loop to drive from a notebook;
- :mod:`~dao.loop.report`: :func:`run_loop` (behind ``dao demo``) and its report.
"""

from dao.loop.aoloop import AOLoop, default_telemetry_path
from dao.loop.calibration import calibrate
from dao.loop.config import DEFAULT_CONFIG, SENSORS, bench_arguments, load_loop_config
from dao.loop.report import REPORT_KEYS, format_report, run_loop

__all__ = [
    "DEFAULT_CONFIG",
    "REPORT_KEYS",
    "SENSORS",
    "AOLoop",
    "bench_arguments",
    "calibrate",
    "default_telemetry_path",
    "format_report",
    "load_loop_config",
    "run_loop",
]

"""The AO loop: components wired into a closed loop on the simulated bench by a config file.

- :mod:`~dao.loop.config`: the embedded default configuration and its checked updates;
- :mod:`~dao.loop.calibration`: interaction and control matrices, modal basis, saved and
  loaded (:class:`Calibration`);
- :mod:`~dao.loop.laws`: control laws (:class:`ControlLaw`, the stock laws);
- :mod:`~dao.loop.hosting`: running a law in the loop and handing the DM command over
  between two frames (:class:`LocalController`: a law run by this process);
- :mod:`~dao.loop.components`: the bench camera, slopes and controller components;
- :mod:`~dao.loop.aoloop`: :class:`AOLoop`, a running loop to drive from a notebook;
- :mod:`~dao.loop.report`: :func:`run_loop` (behind ``dao demo``) and its report.
"""

from dao.loop.aoloop import AOLoop, default_telemetry_path
from dao.loop.calibration import Calibration, CalibrationMismatch, calibrate, modal_basis
from dao.loop.config import DEFAULT_CONFIG, SENSORS, bench_arguments, load_loop_config
from dao.loop.hosting import LawHost, LocalController
from dao.loop.laws import (
    PID,
    STOCK_LAWS,
    ControlLaw,
    FunctionLaw,
    Integrator,
    ModalIntegrator,
    PseudoOpenLoop,
    stock_law,
)
from dao.loop.report import REPORT_KEYS, format_report, run_loop

__all__ = [
    "DEFAULT_CONFIG",
    "REPORT_KEYS",
    "SENSORS",
    "STOCK_LAWS",
    "AOLoop",
    "Calibration",
    "CalibrationMismatch",
    "ControlLaw",
    "FunctionLaw",
    "Integrator",
    "LawHost",
    "LocalController",
    "ModalIntegrator",
    "PID",
    "PseudoOpenLoop",
    "bench_arguments",
    "calibrate",
    "default_telemetry_path",
    "format_report",
    "load_loop_config",
    "modal_basis",
    "run_loop",
    "stock_law",
]

"""dao.hw: device interfaces and the simulated AO bench (installed as :mod:`dao.hw`).

Interfaces (:mod:`dao.hw.interfaces`): :class:`Camera`, :class:`WavefrontSensor`,
:class:`DeformableMirror`, :class:`ScienceCamera`, and the stream adapters
:class:`CameraStreamWriter` and :class:`DMStreamReader`.

Simulated devices (SI units, seeded, simulated time):

* :class:`Atmosphere` / :class:`InfinitePhaseScreen` (:mod:`dao.hw.atmosphere`): von Karman
  frozen-flow layers, infinitely extended by the autoregressive method;
* :class:`SimulatedShackHartmann` (:mod:`dao.hw.shack_hartmann`), estimator
  :class:`dao.recon.ShackHartmann`;
* :class:`SimulatedPyramid` (:mod:`dao.hw.pyramid`), estimator :class:`dao.recon.Pyramid`;
* :class:`SimulatedDeformableMirror` (:mod:`dao.hw.dm`);
* :class:`SimulatedScienceCamera` (:mod:`dao.hw.science`);
* :class:`SimulatedBench` (:mod:`dao.hw.bench`) tying them together.
"""

from __future__ import annotations

from .atmosphere import (
    ARExtender,
    Atmosphere,
    InfinitePhaseScreen,
    fft_phase_screen,
    kolmogorov_structure_function,
    von_karman_psd,
    von_karman_structure_function,
)
from .bench import BenchCamera, BenchMirror, SimulatedBench, error_budget
from .dm import SimulatedDeformableMirror, fried_valid_actuators
from .interfaces import (
    Camera,
    CameraStreamWriter,
    DeformableMirror,
    DMStreamReader,
    ScienceCamera,
    WavefrontSensor,
)
from .pyramid import SimulatedPyramid
from .science import ImageQuality, SimulatedScienceCamera, residual_phase_variance
from .shack_hartmann import SimulatedShackHartmann, circular_pupil

__all__ = [
    # interfaces
    "Camera", "WavefrontSensor", "DeformableMirror", "ScienceCamera",
    "CameraStreamWriter", "DMStreamReader",
    # atmosphere
    "Atmosphere", "InfinitePhaseScreen", "ARExtender", "fft_phase_screen",
    "kolmogorov_structure_function", "von_karman_structure_function", "von_karman_psd",
    # devices
    "SimulatedShackHartmann", "circular_pupil", "SimulatedPyramid", "SimulatedDeformableMirror",
    "fried_valid_actuators", "SimulatedScienceCamera", "ImageQuality",
    "residual_phase_variance",
    # bench
    "SimulatedBench", "BenchCamera", "BenchMirror", "error_budget",
]

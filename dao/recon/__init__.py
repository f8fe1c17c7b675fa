"""AO numerics compiled with Numba: pixels to slopes to DM commands, and calibration.

Every loop-step kernel works on preallocated arrays and allocates nothing; the classes hold
their state and output arrays and call one compiled kernel per step. All kernels are compiled
with ``cache=True, nogil=True`` (``parallel=True`` where splitting over threads pays).

Compile time. The machine code is cached on disk (``__pycache__`` next to these sources, or
``NUMBA_CACHE_DIR`` if the source tree is read-only). Measured on a 2-core AMD EPYC (Zen 4)
VM, empty cache: the first call compiles, the threaded MVM in about 2 s, the Shack-Hartmann
centroider in about 3.5 s, the pyramid in 0.5 s (the whole of ``tests/recon`` about 16 s).
Once cached, a new process pays about 0.15 s on its first kernel call (loading Numba's
runtime and threading layer) and a few milliseconds for each further kernel. Warm everything
up (one call of each step) before a loop starts.

Modules
-------
``pixels``      dark/flat/background correction, threshold, descrambling, regions
``centroid``    Shack-Hartmann centroiding (CoG variants, correlation), :class:`ShackHartmann`
``pyramid``     pyramid sensor slopes and intensities, :class:`Pyramid`
``mvm``         float32 matrix-vector multiply, threaded by rows
``control``     integrator, PID, pseudo-open-loop, IIR / high-pass, clipping, combiner
``calibration`` interaction matrix by poking, control matrix by SVD / Tikhonov
``modal``       Zernike, Karhunen-Loeve, DM modes, :class:`ModalReconstructor`

Example
-------
>>> import numpy as np
>>> from dao import recon
>>> sh = recon.ShackHartmann.from_valid_mask(recon.circular_valid_mask(10), 8)
>>> rec = recon.MatrixVectorMultiply(np.zeros((97, 2 * sh.n_subapertures), np.float32))
>>> loop = recon.Integrator(97, gain=0.4, stroke=1.0)
>>> frame = np.ones((80, 80), np.float32)
>>> cmd = loop.step(rec(sh.measure(frame)))
>>> cmd.shape
(97,)
"""

from __future__ import annotations

from .calibration import (
    ControlMatrix,
    control_matrix_svd,
    control_matrix_tikhonov,
    hadamard,
    measure_interaction_matrix,
)
from .centroid import (
    BRIGHTEST,
    COG,
    TCOG,
    WCOG,
    ShackHartmann,
    centre_of_gravity,
    circular_valid_mask,
    correlate,
    subaperture_corners,
)
from .control import (
    PID,
    Combiner,
    HighPassFilter,
    IIRFilter,
    Integrator,
    PseudoOpenLoopIntegrator,
    clip,
)
from .modal import (
    ModalReconstructor,
    dm_modes,
    gaussian_influence_functions,
    karhunen_loeve,
    noll_to_nm,
    pupil_grid,
    von_karman_covariance,
    zernike,
)
from .mvm import MatrixVectorMultiply, mvm, mvm_serial
from .pixels import (
    apply_threshold,
    calibrate,
    descramble,
    extract_region,
    extract_regions,
    multi_output_pixel_map,
    scramble,
    subtract_dark,
)
from .pyramid import Pyramid, pupil_indices, pyramid_intensities, pyramid_slopes

__all__ = [
    # pixels
    "calibrate", "subtract_dark", "apply_threshold", "descramble", "scramble",
    "multi_output_pixel_map", "extract_region", "extract_regions",
    # centroid
    "ShackHartmann", "centre_of_gravity", "correlate", "circular_valid_mask", "subaperture_corners",
    "COG", "TCOG", "WCOG", "BRIGHTEST",
    # pyramid
    "Pyramid", "pupil_indices", "pyramid_slopes", "pyramid_intensities",
    # mvm
    "mvm", "mvm_serial", "MatrixVectorMultiply",
    # control
    "Integrator", "PID", "PseudoOpenLoopIntegrator", "IIRFilter", "HighPassFilter",
    "Combiner", "clip",
    # calibration
    "measure_interaction_matrix", "hadamard", "control_matrix_svd", "control_matrix_tikhonov",
    "ControlMatrix",
    # modal
    "zernike", "noll_to_nm", "pupil_grid", "von_karman_covariance", "karhunen_loeve",
    "gaussian_influence_functions", "dm_modes", "ModalReconstructor",
]

"""The simulated AO bench: atmosphere, deformable mirror, wavefront sensor (Shack-Hartmann or
modulated pyramid) and science camera.

Timing model (simulated time, independent of the machine's speed). One call of
:meth:`SimulatedBench.step` is one WFS frame: the command passed is put on the mirror, the
atmosphere moves by one frame period ``1 / frame_rate``, and the sensor images the residual
``OPD = turbulence + mirror`` instantaneously. A controller that computes the next command
from that image applies it at the next step, so the loop delay is one frame period.

Sign convention: the mirror's OPD *adds* to the turbulence; the loop drives the residual
slopes to zero, so commands come out opposite to the turbulence. An interaction matrix
measured with :meth:`SimulatedBench.calibration_slopes` has that sign built in.

Sensors. ``sensor="shack-hartmann"`` (:class:`SimulatedShackHartmann`, ``n_subap`` lenslets
across) or ``"pyramid"`` (:class:`SimulatedPyramid`, ``n_subap`` detector pixels across each
of its four pupil images); both see the wavefront on the atmosphere's grid and drive the same
mirror, whose actuators are the Fried-grid corners of the valid subapertures (pixels).
:meth:`SimulatedBench.slope_estimator` gives the matching :mod:`dao.recon` estimator.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

from dao.recon import Pyramid, ShackHartmann

from ._checks import checked_int, checked_number
from .atmosphere import Atmosphere, _per_layer
from .dm import SimulatedDeformableMirror, fried_valid_actuators
from .interfaces import Camera, DeformableMirror
from .pyramid import SimulatedPyramid
from .science import ImageQuality, SimulatedScienceCamera
from .shack_hartmann import SimulatedShackHartmann, circular_pupil

__all__ = ["SimulatedBench", "BenchCamera", "BenchMirror", "error_budget", "SENSORS"]

H_BAND = 1.65e-6

#: Wavefront sensors the bench simulates (values of ``SimulatedBench(sensor=...)``).
SENSORS = ("shack-hartmann", "pyramid")


def error_budget(diameter: float, n_subapertures: int, r0: float, wind_speed: float,
                 delay: float, wavelength: float = H_BAND) -> dict[str, float]:
    """Textbook residual variances of an AO system, rad^2 at ``wavelength``.

    * fitting: ``0.28 (d / r0)^(5/3)`` for a continuous-facesheet mirror of pitch
      ``d = D / n``;
    * servo lag: ``(tau / tau0)^(5/3)`` with ``tau0 = 0.314 r0 / v``;

    both with ``r0`` scaled from 500 nm by ``(lambda / 500 nm)^(6/5)``. Neither depends on the
    wavefront sensor (its aliasing and noise are not included).

    Parameters
    ----------
    diameter : float
        Metres.
    n_subapertures : int
        Across the diameter.
    r0 : float
        Fried parameter at 500 nm, metres.
    wind_speed : float
        Effective wind speed, m/s.
    delay : float
        Loop delay ``tau``, seconds.
    wavelength : float
        Metres.

    Returns
    -------
    dict
        ``r0``, ``tau0`` (at ``wavelength``), ``fitting``, ``servo``, ``total`` (rad^2) and
        ``strehl`` (``exp(-total)``).
    """
    r0_l = r0 * (wavelength / 500e-9) ** (6 / 5)
    d = diameter / n_subapertures
    fitting = 0.28 * (d / r0_l) ** (5 / 3)
    tau0 = 0.314 * r0_l / wind_speed
    servo = (delay / tau0) ** (5 / 3)
    total = fitting + servo
    return {"r0": r0_l, "tau0": tau0, "fitting": fitting, "servo": servo, "total": total,
            "strehl": math.exp(-total)}


class SimulatedBench:
    """A simulated single-conjugate AO bench with a Shack-Hartmann or a pyramid sensor.

    Parameters
    ----------
    diameter : float
        Telescope diameter, metres.
    r0 : float
        Fried parameter at 500 nm, metres.
    L0 : float
        Outer scale, metres.
    wind : float or sequence of float
        Wind speed of each layer, m/s.
    n_subap : int
        Subapertures across the pupil: Shack-Hartmann lenslets, or detector pixels across
        each pupil image of the pyramid (the mirror has ``n_subap + 1`` actuators across).
    frame_rate : float
        WFS frame rate, Hz (the simulated time step is ``1 / frame_rate``).
    wavelength_wfs : float
        Sensing wavelength, metres.
    wavelength_science : float
        Science wavelength, metres.
    seed : int, optional
        Seed of every random draw (turbulence and noise).
    cn2_weights : sequence of float
        Fraction of ``Cn2`` per layer.
    wind_direction : float or sequence of float, optional
        Direction each layer blows towards, radians from ``+x`` (default ``2.1 i`` for
        layer ``i``).
    pupil_pixels_per_subaperture : int
        Wavefront samples across a subaperture: the grid of the atmosphere, the mirror and
        the science camera (so of the fitting error the Strehl sees).
    pyramid_samples_per_pixel : int, optional
        Wavefront samples across a pyramid detector pixel: the pyramid sees the residual
        averaged down to this grid, as its model costs about 9 times more per sample than
        the Shack-Hartmann's (16 modulation points, padding 3). Default: the fewest (at
        least 4, dividing ``pupil_pixels_per_subaperture``) that keep the samples within
        ``r0 / 2`` at the sensing wavelength (8 m, r0 = 15 cm at 500 nm, 700 nm: 8 for
        10x10, 4 for 20x20; 80 samples across either way). Coarser samples alias the phase
        differences between them: a closed pyramid loop then drifts into mirror shapes
        it cannot see.
    pixels_per_subaperture, sampling : int
        Shack-Hartmann detector sampling (see :class:`SimulatedShackHartmann`); unused by
        the pyramid.
    flux : float
        Photons per subaperture per frame: per lenslet for the Shack-Hartmann, per pixel of
        the pupil for the pyramid (which gets ``flux`` times its number of valid pixels over
        the whole pupil, shared by its four pupil images).
    background, read_noise : float
        Background photons per detector pixel per frame, read noise e- rms.
    coupling : float
        Mirror inter-actuator coupling.
    stroke : float
        Mirror stroke, metres of OPD.
    sensor : str
        ``"shack-hartmann"`` or ``"pyramid"`` (see :data:`SENSORS`).
    modulation : float
        Pyramid modulation radius, ``lambda / D`` at the sensing wavelength. The default 3
        holds the open-loop tilt of the default atmosphere (8 m, r0 = 15 cm, L0 = 25 m:
        about 1.5, at most 2 to 3 ``lambda / D`` at 700 nm), so the loop closes from open
        loop; 3, 4 and 5 gave the same closed-loop Strehl within 0.02 (10x10 and 20x20, gains
        0.4 to 0.6), and the smallest is the most sensitive (least photon noise).
    n_modulation : int
        Pyramid modulation points (about ``2 pi modulation``: 16 points 1.2 ``lambda / D``
        apart for the default radius; each costs an inverse FFT a frame).
    padding : int
        Pyramid FFT size over the pupil samples: focal samples per ``lambda / D`` (3, the
        smallest that leaves room between the four pupil images, puts the default
        modulation points on a circle of 9 samples).

    Raises
    ------
    ValueError
        An argument out of range, named in the message with what is allowed: an unknown
        ``sensor``; ``diameter``, ``r0``, ``L0``, ``frame_rate``, the wavelengths, ``flux``
        or ``stroke`` not > 0; ``n_subap`` not an integer >= 2; another size not an integer
        >= 1; ``wind`` < 0 or not one number or one per layer of ``cn2_weights``;
        ``seed`` not an integer >= 0 or None; ``coupling`` not in ``(0, 1)``...

    Attributes
    ----------
    sensor : str
        The wavefront sensor's kind, one of :data:`SENSORS`.
    atmosphere : Atmosphere
    mirror : SimulatedDeformableMirror
        Actuators: the Fried-grid corners of the valid subapertures (pyramid: valid pixels).
    wfs : SimulatedShackHartmann or SimulatedPyramid
    science_camera : SimulatedScienceCamera
    camera : BenchCamera
        The WFS camera as a :class:`~dao.hw.interfaces.Camera` (each grab is one step).
    dm : BenchMirror
        The mirror as a :class:`~dao.hw.interfaces.DeformableMirror`, applied at the next
        grab.
    frame_number : int
        Frames produced so far.
    """

    def __init__(self, diameter: float = 8.0, r0: float = 0.15, L0: float = 25.0,  # noqa: N803
                 wind: float | Sequence[float] = 10.0, n_subap: int = 20,
                 frame_rate: float = 1000.0, wavelength_wfs: float = 700e-9,
                 wavelength_science: float = H_BAND, seed: int | None = None,
                 cn2_weights: Sequence[float] = (0.5, 0.3, 0.2),
                 wind_direction: float | Sequence[float] | None = None,
                 pupil_pixels_per_subaperture: int = 8,
                 pixels_per_subaperture: int = 8, sampling: int = 2, flux: float = 1000.0,
                 background: float = 0.0, read_noise: float = 0.0, coupling: float = 0.3,
                 stroke: float = 10e-6, sensor: str = "shack-hartmann",
                 modulation: float = 3.0, n_modulation: int = 16, padding: int = 3,
                 pyramid_samples_per_pixel: int | None = None) -> None:
        if sensor not in SENSORS:
            raise ValueError(f"sensor = {sensor!r}: must be one of {', '.join(SENSORS)}")
        self.sensor = sensor
        self.diameter = checked_number("diameter", diameter, gt=0, unit="telescope diameter, m")
        self.n_subap = checked_int("n_subap", n_subap, 2)
        self.frame_rate = checked_number("frame_rate", frame_rate, gt=0,
                                         unit="frames per second, Hz")
        # the arguments passed on under another name, or used before they are passed on
        checked_number("r0", r0, gt=0, unit="Fried parameter at 500 nm, m")
        checked_number("wavelength_wfs", wavelength_wfs, gt=0, unit="m")
        checked_number("wavelength_science", wavelength_science, gt=0, unit="m")
        checked_number("flux", flux, gt=0, unit="photons per subaperture per frame")
        layers = _per_layer(cn2_weights, None, "cn2_weights", 0.0, "fraction of Cn2",
                            strict=True).size
        _per_layer(wind, layers, "wind", 0.0, "m/s")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"seed = {seed!r}: must be an integer >= 0 or None")
        ss = np.random.SeedSequence(seed)
        s_atm, s_wfs = ss.spawn(2)
        per_subap = checked_int("pupil_pixels_per_subaperture", pupil_pixels_per_subaperture)
        n_pix = self.n_subap * per_subap
        self._wfs_binning = 1
        self.pixel_scale = self.diameter / n_pix
        self.atmosphere = Atmosphere(n_pix, self.pixel_scale, r0, L0, cn2_weights, wind,
                                     wind_direction, 1.0 / self.frame_rate,
                                     seed=int(s_atm.generate_state(1)[0]))
        rng = np.random.default_rng(s_wfs)
        self.wfs: SimulatedShackHartmann | SimulatedPyramid
        if sensor == "pyramid":
            q = pyramid_samples_per_pixel
            if q is None:  # samples of at most r0 / 2 at the sensing wavelength, at least 4
                r0_wfs = r0 * (wavelength_wfs / 500e-9) ** 1.2
                need = max(4, math.ceil(2 * self.diameter / (r0_wfs * self.n_subap)))
                q = min((k for k in range(need, per_subap + 1) if per_subap % k == 0),
                        default=per_subap)
            q = checked_int("pyramid_samples_per_pixel", q)
            if per_subap % q:
                raise ValueError(f"pyramid_samples_per_pixel ({q}) must divide "
                                 f"pupil_pixels_per_subaperture ({per_subap})")
            self._wfs_binning = per_subap // q
            self.wfs = SimulatedPyramid(
                self.n_subap, self.diameter, wavelength_wfs, self.n_subap * q, padding,
                modulation,
                n_modulation, background=background, read_noise=read_noise,
                frame_rate=self.frame_rate, seed=rng)
            self.wfs.flux = float(flux) * self.wfs.n_valid
        else:
            self.wfs = SimulatedShackHartmann(
                self.n_subap, self.diameter, wavelength_wfs, pupil_pixels_per_subaperture,
                pixels_per_subaperture, sampling, flux, background, read_noise,
                frame_rate=self.frame_rate, seed=rng)
        self.mirror = SimulatedDeformableMirror(self.n_subap, self.diameter, n_pix, coupling,
                                                stroke, fried_valid_actuators(self.wfs.valid))
        pupil = self.wfs.pupil if self._wfs_binning == 1 else circular_pupil(n_pix)
        self.science_camera = SimulatedScienceCamera(pupil, wavelength_science,
                                                     frame_rate=self.frame_rate,
                                                     opd_source=self.residual_opd)
        self._residual = np.zeros((n_pix, n_pix))
        self._sensed = np.zeros(self.wfs.pupil_shape)
        self._calibration_image = np.zeros(self.wfs.shape, dtype=np.float32)
        self.frame_number = 0
        self.camera = BenchCamera(self)
        self.dm = BenchMirror(self)
        self._update_residual()

    # -- geometry --------------------------------------------------------------------------
    @property
    def n_actuators(self) -> int:
        """Mirror actuators (command length)."""
        return self.mirror.n_actuators

    @property
    def time(self) -> float:
        """Simulated time, seconds."""
        return self.atmosphere.time

    def slope_estimator(self, **kw) -> ShackHartmann | Pyramid:
        """The :mod:`dao.recon` estimator of the bench's sensor, ready to measure frames.

        Shack-Hartmann: a :class:`dao.recon.ShackHartmann` on the sensor's windows (``kw``:
        its keyword arguments, e.g. ``method="cog"``). Pyramid: a :class:`dao.recon.Pyramid`
        on the valid pixels of the four pupil images (``kw``: ``mode``), its reference the
        noise-free image of a flat wavefront (turbulence off, mirror flat; the mirror is not
        touched).
        """
        if self.sensor == "pyramid":
            est = Pyramid(self.wfs.pupil_indices(), **kw)
            self._calibration_image[:] = self.wfs.expected_image(np.zeros(self.wfs.pupil_shape))
            est.calibrate_reference(self._calibration_image)
            return est
        return ShackHartmann(self.wfs.corners, self.wfs.pixels_per_subaperture, **kw)

    def centroider(self, **kw) -> ShackHartmann:
        """A :class:`dao.recon.ShackHartmann` estimator matching the sensor's windows.

        Raises
        ------
        ValueError
            The bench's sensor is a pyramid (use :meth:`slope_estimator`).
        """
        if self.sensor != "shack-hartmann":
            raise ValueError(f"the bench's sensor is a {self.sensor}, which has no "
                             "centroider: use slope_estimator()")
        return self.slope_estimator(**kw)

    # -- running ---------------------------------------------------------------------------
    def _update_residual(self) -> None:
        self.atmosphere.opd(self._residual)
        self._residual += self.mirror.opd()

    def _wfs_opd(self, opd: np.ndarray) -> np.ndarray:
        """``opd`` on the sensor's grid (averaged over ``binning x binning`` samples)."""
        b = self._wfs_binning
        if b == 1:
            return opd
        n = opd.shape[0] // b
        np.mean(opd.reshape(n, b, n, b), axis=(1, 3), out=self._sensed)
        return self._sensed

    def residual_opd(self) -> np.ndarray:
        """Current residual OPD (turbulence + mirror) on the pupil grid, metres.

        The bench's own buffer: copy it to keep it.
        """
        return self._residual

    def step(self, dm_command: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """Apply a command, advance one frame period, image the residual.

        Parameters
        ----------
        dm_command : ndarray, shape (n_actuators,), optional
            Mirror command, metres of OPD (default: keep the current one).

        Returns
        -------
        wfs_image : ndarray, float32
            The WFS detector image (the sensor's buffer), photo-electrons.
        frame_number : int
            Number of this frame (1 for the first).
        """
        if dm_command is not None:
            self.mirror.set_command(dm_command)
        self.atmosphere.advance()
        self._update_residual()
        img = self.wfs.image(self._wfs_opd(self._residual))
        self.frame_number += 1
        return img, self.frame_number

    def calibration_image(self, dm_command: np.ndarray, noise: bool = False) -> np.ndarray:
        """WFS image (float32) of the mirror alone (turbulence off), without advancing time.

        Noise-free unless ``noise``; the frame counter does not move unless ``noise``.
        """
        self.mirror.set_command(dm_command)
        opd = self._wfs_opd(self.mirror.opd())
        if noise:
            return self.wfs.image(opd)
        self._calibration_image[:] = self.wfs.expected_image(opd)
        return self._calibration_image

    def calibration_slopes(self, estimator: ShackHartmann | Pyramid
                           ) -> Callable[[np.ndarray], np.ndarray]:
        """``measure(command) -> slopes`` for :func:`dao.recon.measure_interaction_matrix`.

        ``estimator`` (e.g. from :meth:`slope_estimator`) measures the noise-free
        :meth:`calibration_image` of each command.
        """

        def measure(cmd: np.ndarray) -> np.ndarray:
            return estimator.measure(self.calibration_image(cmd)).copy()

        return measure

    def science(self, wavelength: float | None = None) -> ImageQuality:
        """Image quality of the current residual at ``wavelength`` (default the camera's).

        Returns an :class:`ImageQuality` of this instant (for a long exposure, call
        ``bench.science_camera.grab()`` each frame and ``bench.science_camera.quality()``).
        """
        cam = self.science_camera
        if wavelength is not None and wavelength != cam.wavelength:
            cam = SimulatedScienceCamera(cam.pupil, wavelength)
        return cam.instant_quality(self._residual)

    def error_budget(self, delay_frames: float = 1.0,
                     wavelength: float | None = None) -> dict[str, float]:
        """:func:`error_budget` for this bench (loop delay ``delay_frames`` frame periods)."""
        return error_budget(self.diameter, self.n_subap, self.atmosphere.r0,
                            self.atmosphere.effective_wind_speed, delay_frames / self.frame_rate,
                            self.science_camera.wavelength if wavelength is None else wavelength)


class BenchCamera(Camera):
    """The bench's WFS as a camera: each :meth:`grab` runs one bench step."""

    def __init__(self, bench: SimulatedBench) -> None:
        self.bench = bench

    @property
    def shape(self) -> tuple[int, int]:
        return self.bench.wfs.shape

    @property
    def dtype(self) -> np.dtype:
        return self.bench.wfs.dtype

    @property
    def frame_rate(self) -> float:
        return self.bench.frame_rate

    @property
    def frame_number(self) -> int:
        return self.bench.frame_number

    def grab(self, out: np.ndarray | None = None) -> np.ndarray:
        """Advance the bench one frame (with the mirror's pending command); the WFS image."""
        img, _ = self.bench.step(self.bench.dm.pending)
        if out is not None:
            out[:] = img
            return out
        return img


class BenchMirror(DeformableMirror):
    """The bench's mirror as a device: a command set now is applied at the next frame."""

    def __init__(self, bench: SimulatedBench) -> None:
        self.bench = bench
        self.pending = np.zeros(bench.mirror.n_actuators, dtype=np.float32)

    @property
    def n_actuators(self) -> int:
        return self.bench.mirror.n_actuators

    @property
    def stroke(self) -> tuple[float, float]:
        return self.bench.mirror.stroke

    def set_command(self, command: np.ndarray) -> None:
        """Queue ``command`` (metres of OPD) for the next frame."""
        self.pending[:] = np.asarray(command, dtype=np.float32).ravel()

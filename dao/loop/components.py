"""The components of the AO loop on the simulated bench (wired by :mod:`dao.loop`).

Three components, each run in its own process by :mod:`dao.loop`:

- :class:`BenchCamera` owns a :class:`dao.hw.SimulatedBench` (WFS camera, deformable mirror,
  science camera). Lock-step with the loop: it writes a WFS frame (``cnt2`` = frame number),
  waits for the DM command computed from it (``cnt2`` = the same number; ``command_timeout``
  seconds at most, then it goes on with the previous command and counts a late frame), puts
  the command on the mirror and advances the atmosphere by one frame period. Results do not
  depend on the machine's speed. Every ``science_every`` frames it exposes the science camera
  (long exposure, reset and read with the ``OTHER`` commands ``science_reset`` and
  ``science``) and writes that exposure's PSF to the ``psf`` stream. Every frame it writes
  the int64 row ``[frame, wfs_image atime_ns, late]`` to the FIFO stream ``frames`` (the
  camera's log: frame timestamps for the latency figures).
- :class:`Slopes` wakes on ``wfs_image`` and writes the ``slopes`` (Shack-Hartmann centroids
  or pyramid signals, as the calibration file says).
- :class:`Controller` wakes on ``slopes``: control matrix times slopes, leaky integrator with
  the published parameter ``gain`` (changeable while running), writes ``dm_command``.

Each keeps the per-frame timing records of every component (:data:`dao.runtime.TIMING_FIELDS`,
int64 ns of CLOCK_REALTIME) in its timing stream, with the camera frame number as ``frame_id``
(the camera's record spans its wait for the previous frame's command and the bench step).

Streams are created beforehand by :class:`dao.loop.AOLoop`, which knows their shapes from the
calibration (the slopes are ``(2, n_subapertures)``: the x slopes then the y slopes, the flat
order of the estimators and of the interaction matrix; other vectors are ``(n, 1)``, a shape
the DAO C library opens too) and labels them (:func:`label_streams`), and named in each
component's ``streams`` config; the calibration (control matrix, slope estimator) is the
``.npz`` file named by the ``calibration`` config key.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np

from dao.errors import StreamTimeout
from dao.runtime.component import Component, ComponentError, Input
from dao.runtime.parameters import Parameter

__all__ = ["BenchCamera", "Slopes", "Controller", "slope_estimator", "label_streams",
           "FRAMES_FIELDS", "SCIENCE_FIELDS", "SLOPE_AXES"]

#: Columns of the ``frames`` stream (int64).
FRAMES_FIELDS = ("frame", "wfs_atime_ns", "late_frames")
#: Columns of the ``science`` stream (float64): frame number, simulated time (s), the long
#: exposure since the last reset (Strehl, Marechal Strehl, residual rms in rad, exposures
#: summed), and this exposure alone (Strehl, residual rms in rad).
SCIENCE_FIELDS = ("frame", "time", "strehl", "strehl_marechal", "residual_rms", "n_frames",
                  "strehl_frame", "residual_rms_frame")


#: Coordinates of the first dim of the ``slopes`` stream, by its number of rows: x and y
#: slopes, or the four pupil images of a pyramid in ``intensities`` mode.
SLOPE_AXES = {2: ("axis", ["x", "y"]), 4: ("quadrant", ["I1", "I2", "I3", "I4"])}


def label_streams(streams: dict[str, Any], cal: dict[str, Any]) -> None:
    """Label the loop's streams, named by role, for their xarray views, histories and recordings.

    - ``wfs_image``: dims ``y``, ``x`` (detector pixels);
    - ``slopes`` (stored ``(2, n_subapertures)``: the x slopes, then the y slopes): dims
      ``axis`` (coordinate ``["x", "y"]``) and ``subaperture``, with the coordinates ``x`` and
      ``y`` along ``subaperture``: each subaperture's column and row on the lenslet grid
      (integers; a pyramid's: its valid pixel's column and row in the pupil image); attrs
      ``units`` (``pixel`` for a Shack-Hartmann, ``1`` for a pyramid's normalised
      signals), ``sensor``, ``grid_shape`` (rows, columns of that grid). A pyramid in
      ``intensities`` mode has ``quadrant`` (``I1``..``I4``) instead of ``axis``;
    - ``dm_command`` (stored ``(n_actuators, 1)`` for C consumers): dim ``actuator``, with
      the coordinates ``x`` and ``y``: each actuator's column and row on the mirror's
      actuator grid (integers); attrs ``units`` (``m of OPD``), ``grid_shape`` and
      ``pitch_m`` (actuator spacing in the pupil, metres);
    - ``frames`` and ``science``: dim ``field`` with the column names;
    - ``psf``: ``y``, ``x`` in ``lambda / D`` from its centre.

    Parameters
    ----------
    streams : dict of str to dao.shm
        The loop's streams by role.
    cal : dict
        What :func:`dao.loop.calibrate` returned (geometry, ``psf_sampling``).
    """
    s = streams
    s["wfs_image"].set_labels(("y", "x"), name="wfs_image")
    n_axes, n_sub = s["slopes"].shape
    axis, values = SLOPE_AXES[n_axes]
    pyramid = cal["sensor"] == "pyramid"
    s["slopes"].set_labels(
        (axis, "subaperture"),
        coords={axis: values, "x": ("subaperture", np.asarray(cal["subaperture_x"])),
                "y": ("subaperture", np.asarray(cal["subaperture_y"]))},
        attrs={"units": "1" if pyramid else "pixel", "sensor": str(cal["sensor"]),
               "grid_shape": [int(v) for v in cal["subaperture_grid"]],
               "description": ("x, y: column and row of the valid pixel in the pupil image"
                               if pyramid else
                               "x, y: column and row of the subaperture on the lenslet grid")},
        name="slopes")
    s["dm_command"].set_labels(
        ("actuator",),
        coords={"x": ("actuator", np.asarray(cal["actuator_x"])),
                "y": ("actuator", np.asarray(cal["actuator_y"]))},
        attrs={"units": "m of OPD", "grid_shape": [int(v) for v in cal["actuator_grid"]],
               "pitch_m": float(cal["actuator_pitch"]),
               "description": "x, y: column and row of the actuator on the mirror's grid"},
        name="dm_command")
    s["frames"].set_labels(("field",), coords={"field": list(FRAMES_FIELDS)}, name="frames")
    s["science"].set_labels(("field",), coords={"field": list(SCIENCE_FIELDS)}, name="science")
    ny, nx = s["psf"].shape
    per = float(cal["psf_sampling"])
    s["psf"].set_labels(("y", "x"), coords={"y": (np.arange(ny) - ny // 2) / per,
                                            "x": (np.arange(nx) - nx // 2) / per},
                        attrs={"units": "Strehl", "coordinate_units": "lambda/D"}, name="psf")


def _open_output(comp: Component, key: str):
    """Open the (already created) output stream named by ``streams.<key>`` in the config."""
    from dao.streams.stream import shm

    name = (comp.config.get("streams") or {}).get(key)
    if not name:
        raise ComponentError(f"{comp.name}: set streams.{key} in its config")
    return shm(str(name))


class BenchCamera(Component):
    """The simulated bench as the loop's camera, mirror and science camera.

    Config keys: ``bench`` (keyword arguments of :class:`dao.hw.SimulatedBench`),
    ``streams`` (``dm_command`` input; ``wfs_image``, ``frames``, ``science``, ``psf``
    outputs).
    """

    dm_command = Input(trigger=False, doc="mirror command, metres of OPD (cnt2 = frame)")
    command_timeout = Parameter(1.0, float, unit="s", bounds=(1e-3, 60.0),
                                doc="longest wait for the command of a frame")
    science_every = Parameter(4, int, bounds=(1, None), doc="frames between science exposures")
    #: Free-running: the loop is paced by the wait for the command.
    period = 1e-6

    def configure(self, config: dict[str, Any]) -> None:
        from dao.hw import SimulatedBench

        self.bench = SimulatedBench(**dict(config.get("bench", {})))
        self.lock = threading.Lock()

    def allocate(self) -> None:
        self.wfs = _open_output(self, "wfs_image")
        self.frames = _open_output(self, "frames")
        self.science_out = _open_output(self, "science")
        self.psf_out = _open_output(self, "psf")
        self._psf = np.zeros(self.psf_out.shape, np.float32)
        self._sem = self.dm_command.claim_semaphore()
        self.command = np.zeros(self.bench.n_actuators, np.float32)
        self._cmd_buf = np.zeros(self.dm_command.shape, np.float32)
        self._cmd_flat = self._cmd_buf.reshape(-1)  # a view: no per-frame reshape
        self._frames_row = np.zeros((len(FRAMES_FIELDS), 1), np.int64)
        self._science_row = np.zeros((len(SCIENCE_FIELDS), 1), np.float64)
        self.late = 0

    def release(self) -> None:
        for s in (self.wfs, self.frames, self.science_out, self.psf_out):
            s.close()

    def _wait_command(self, frame: int) -> None:
        deadline = time.perf_counter() + self.command_timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                self.late += 1
                return
            try:
                self.dm_command.get_data(check=True, semNb=self._sem, timeout=remaining,
                                         out=self._cmd_buf)
            except StreamTimeout:
                self.late += 1
                return
            if self.dm_command.last_read.cnt2 >= frame:
                self.command[:] = self._cmd_flat
                return

    def process(self, data: None) -> None:
        b = self.bench
        if b.frame_number > 0:
            self._wait_command(b.frame_number)
        with self.lock:
            img, n = b.step(self.command)
            self.frame_id = n  # the frame number in this frame's timing record
            self.wfs.set_data(img, cnt2=n)
            row = self._frames_row
            row[0, 0], row[1, 0], row[2, 0] = n, self.wfs.get_timestamp_ns(), self.late
            self.frames.set_data(row, cnt2=n)
            if n % self.science_every == 0:
                cam = b.science_camera
                self._psf[:] = cam.grab()
                self.psf_out.set_data(self._psf, cnt2=n)
                q, last = cam.quality(), cam.last_frame
                s = self._science_row
                s[:, 0] = (n, b.time, q.strehl, q.strehl_marechal, q.residual_rms, q.n_frames,
                           last.strehl, last.residual_rms)
                self.science_out.set_data(s, cnt2=n)

    def other(self, payload: str) -> str:
        """``science_reset``: start a new long exposure; ``science``: its quality (JSON)."""
        cmd = payload.strip()
        with self.lock:
            cam = self.bench.science_camera
            if cmd == "science_reset":
                cam.reset()
                return json.dumps({"frame": self.bench.frame_number})
            if cmd == "science":
                q = cam.quality()._asdict()
                q.update(frame=self.bench.frame_number, time=self.bench.time, late=self.late)
                return json.dumps(q)
        raise ComponentError(f"{self.name}: OTHER {payload!r}: use science_reset or science")


def _load_calibration(comp: Component) -> dict[str, np.ndarray]:
    path = comp.config.get("calibration")
    if not path:
        raise ComponentError(f"{comp.name}: set calibration = <file.npz> in its config")
    with np.load(str(path)) as f:
        return {k: f[k] for k in f.files}


def slope_estimator(cal: dict[str, np.ndarray]):
    """The slope estimator saved by :func:`dao.loop.calibrate`.

    Returns
    -------
    dao.recon.ShackHartmann or dao.recon.Pyramid
        Built from ``corners``, ``subaperture_size``, ``method`` (Shack-Hartmann) or
        ``indices``, ``reference``, ``mode`` (pyramid), as ``cal["sensor"]`` says.
    """
    from dao.recon import Pyramid, ShackHartmann

    sensor = str(cal.get("sensor", "shack-hartmann"))
    if sensor == "pyramid":
        est = Pyramid(cal["indices"], mode=str(cal["mode"]))
        est.reference[:] = cal["reference"]
        return est
    if sensor == "shack-hartmann":
        return ShackHartmann(cal["corners"], int(cal["subaperture_size"]),
                             method=str(cal["method"]))
    raise ComponentError(f"calibration for an unknown sensor {sensor!r}: recalibrate")


class Slopes(Component):
    """Slopes of each WFS frame (``cnt2`` passed on): Shack-Hartmann or pyramid.

    Config keys: ``calibration`` (``.npz`` written by :func:`dao.loop.calibrate`, see
    :func:`slope_estimator`), ``streams`` (``wfs_image`` input, ``slopes`` output).
    """

    wfs_image = Input(doc="WFS detector image")

    def configure(self, config: dict[str, Any]) -> None:
        self.cal = _load_calibration(self)

    def allocate(self) -> None:
        self.estimator = slope_estimator(self.cal)
        self.out = _open_output(self, "slopes")
        # the estimator's own output buffer (measure writes it), seen in the stream's shape
        # ((2, n_subapertures): x slopes then y slopes, a view); the first call loads the kernel
        signal = self.estimator.measure(np.zeros(self.wfs_image.shape, np.float32))
        if signal.size != int(np.prod(self.out.shape)):
            self.out.close()
            raise ComponentError(
                f"{self.name}: the estimator gives {signal.size} values a frame but the "
                f"slopes stream {self.out.name!r} holds {self.out.shape}: recalibrate, or "
                "remove that stream so that the loop makes it again")
        self._signal = signal.reshape(self.out.shape)

    def release(self) -> None:
        self.out.close()

    def process(self, data: np.ndarray) -> None:
        self.estimator.measure(data)
        self.out.set_data(self._signal, cnt2=self.frame_id)  # the frame's cnt2, set by the loop


class Controller(Component):
    """Reconstructor and integrator: ``c[k] = leak c[k-1] - gain R s[k]`` (``cnt2`` passed on).

    Config keys: ``calibration`` (``.npz`` with ``control_matrix``, ``stroke``), ``streams``
    (``slopes`` input, ``dm_command`` output), ``gain``, ``leak``.
    """

    slopes = Input(doc="slopes")
    gain = Parameter(0.0, float, bounds=(0.0, 2.0), doc="loop gain (0: loop open)",
                     on_change=lambda self, old, new: self._parameters_changed())
    leak = Parameter(1.0, float, bounds=(0.0, 1.0), doc="integrator leak",
                     on_change=lambda self, old, new: self._parameters_changed())

    def configure(self, config: dict[str, Any]) -> None:
        self.cal = _load_calibration(self)

    def allocate(self) -> None:
        from dao.recon import Integrator, MatrixVectorMultiply

        cm = np.ascontiguousarray(self.cal["control_matrix"], np.float32)
        self.mvm = MatrixVectorMultiply(cm)
        self.error = np.zeros(cm.shape[0], np.float32)
        self.integrator = Integrator(cm.shape[0], gain=self.gain, leak=self.leak,
                                     stroke=float(self.cal["stroke"]))
        self.mvm(np.zeros(cm.shape[1], np.float32), out=self.error)  # load the kernels
        self.integrator.step(np.zeros_like(self.error))
        self.integrator.reset()
        self._command = self.integrator.command.reshape(-1, 1)  # the stream's (n, 1) view
        self._new_parameters = False  # the integrator has the current gain and leak
        # the slopes are read into the same buffer every frame: its flat view, made once
        self._slopes_buf = self.input_buffer
        self._slopes_flat = self._slopes_buf.reshape(-1) if self._slopes_buf is not None else None
        self.out = _open_output(self, "dm_command")

    def release(self) -> None:
        self.out.close()
        self._slopes_buf = self._slopes_flat = None

    def _parameters_changed(self) -> None:
        # set from the command thread; the processing thread hands the new values to the
        # integrator between two frames (never in the middle of one)
        self._new_parameters = True

    def other(self, payload: str) -> str:
        """``reset``: zero the integrator."""
        if payload.strip() == "reset":
            self.integrator.reset()
            return "reset"
        raise ComponentError(f"{self.name}: OTHER {payload!r}: use reset")

    def process(self, data: np.ndarray) -> None:
        if self._new_parameters:  # a bool test per frame; the arrays only after a change
            self._new_parameters = False
            self.integrator.gain[:] = self.gain
            self.integrator.leak[:] = self.leak
        flat = self._slopes_flat if data is self._slopes_buf else data.reshape(-1)
        self.mvm(flat, out=self.error)
        self.integrator.step(self.error)  # writes self.integrator.command
        self.out.set_data(self._command, cnt2=self.frame_id)  # the frame's cnt2

"""The components of the AO loop on the simulated bench (wired by :mod:`dao.loop`).

Three components, each run in its own process by :mod:`dao.loop`:

- :class:`BenchCamera` owns a :class:`dao.hw.SimulatedBench` (WFS camera, deformable mirror,
  science camera). Lock-step with the loop: it writes a WFS frame (``cnt2`` = frame number),
  waits for the DM command computed from it (``cnt2`` = the same number; ``command_timeout``
  seconds at most, then it goes on with the previous command and counts a late frame), puts
  the command on the mirror and advances the atmosphere by one frame period. Results do not
  depend on the machine's speed. ``OTHER rewind`` starts the atmosphere over from its seed
  (frame numbers go on), for comparisons on the same turbulence. Every ``science_every``
  frames it exposes the science camera
  (long exposure, reset and read with the ``OTHER`` commands ``science_reset`` and
  ``science``) and writes that exposure's PSF to the ``psf`` stream. Every frame it writes
  the int64 row ``[frame, wfs_image atime_ns, late]`` to the FIFO stream ``frames`` (the
  camera's log: frame timestamps for the latency figures).
- :class:`Slopes` wakes on ``wfs_image`` and writes the ``slopes`` (Shack-Hartmann centroids
  or pyramid signals, as the calibration file says).
- :class:`Controller` wakes on ``slopes`` and runs a control law (:mod:`dao.loop.laws`: the
  stock modal integrator with per-mode gains by default, or a law shipped to it), writes
  ``dm_command``; its parameters (``law``, ``gain``, ``leak``, ``modal_gains``...) change
  while it runs, and it hands the command over to a law run elsewhere between two frames
  (:mod:`dao.loop.hosting`).

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
        import secrets

        from dao.hw import SimulatedBench

        self._bench_args = dict(config.get("bench", {}))
        if self._bench_args.get("seed") is None:  # one seed, so that a rewind repeats it
            self._bench_args["seed"] = secrets.randbits(32)
        self.bench = SimulatedBench(**self._bench_args)
        self.lock = threading.Lock()
        # loop frames before the bench's first (of a previous run, or before a rewind)
        self._offset = int(config.get("first_frame", 0))
        self._next_bench = None
        self._rewound = threading.Event()
        self._rewound_at = 0
        self._window: list[Any] | None = None  # [first, stop, started, result]

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
        frame = self._offset + b.frame_number
        if frame > 0:
            self._wait_command(frame)
        with self.lock:
            if self._next_bench is not None:  # a rewind: the new atmosphere from this frame
                self._offset = frame
                b = self.bench = self._next_bench
                self._next_bench = None
                self._rewound_at = frame + 1
                self._rewound.set()
            img, n = b.step(self.command)
            n += self._offset
            self.frame_id = n  # the frame number in this frame's timing record
            self.wfs.set_data(img, cnt2=n)
            row = self._frames_row
            row[0, 0], row[1, 0], row[2, 0] = n, self.wfs.get_timestamp_ns(), self.late
            self.frames.set_data(row, cnt2=n)
            win = self._window
            if win is not None and not win[2] and n >= win[0]:
                b.science_camera.reset()  # the window's long exposure starts with this frame
                win[2] = True
            if b.frame_number % self.science_every == 0:  # counted from the bench's start
                cam = b.science_camera
                self._psf[:] = cam.grab()
                self.psf_out.set_data(self._psf, cnt2=n)
                q, last = cam.quality(), cam.last_frame
                s = self._science_row
                s[:, 0] = (n, b.time, q.strehl, q.strehl_marechal, q.residual_rms, q.n_frames,
                           last.strehl, last.residual_rms)
                self.science_out.set_data(s, cnt2=n)
            if win is not None and win[2] and win[3] is None and n >= win[1] - 1:
                q = b.science_camera.quality()._asdict()
                q.update(frame=n, first=win[0], stop=win[1], late=self.late)
                win[3] = q  # the exposures of frames first .. stop - 1

    def other(self, payload: str) -> str:
        """``science_reset``: start a new long exposure; ``science``: its quality (JSON);
        ``rewind``: the atmosphere and the noise from their start again (same seed), from
        the next frame on; the frame numbers go on (JSON ``{"frame": first frame}``);
        ``science_window FIRST STOP``: a long exposure of exactly frames FIRST to STOP - 1;
        ``science_window``: its quality once done (JSON; ``{}`` before)."""
        cmd, _, arg = payload.strip().partition(" ")
        if cmd == "science_window":
            with self.lock:
                if arg:
                    first, stop = (int(v) for v in arg.split())
                    if not first < stop:
                        raise ComponentError(f"{self.name}: science_window {arg}: FIRST must "
                                             "be below STOP")
                    self._window = [first, stop, False, None]
                    return "ok"
                win = self._window
                return json.dumps(win[3] if win is not None and win[3] is not None else {})
        if cmd == "rewind":
            from dao.hw import SimulatedBench

            new = SimulatedBench(**self._bench_args)  # seconds maybe: outside the lock
            self._rewound.clear()
            with self.lock:
                self._next_bench = new
            if not self._rewound.wait(max(5.0, 10 * self.command_timeout)):
                raise ComponentError(f"{self.name}: rewind not applied: the camera makes no "
                                     "frames (is it Running?)")
            return json.dumps({"frame": self._rewound_at})
        with self.lock:
            cam = self.bench.science_camera
            if cmd == "science_reset" and not arg:
                cam.reset()
                return json.dumps({"frame": self._offset + self.bench.frame_number})
            if cmd == "science" and not arg:
                q = cam.quality()._asdict()
                q.update(frame=self._offset + self.bench.frame_number, time=self.bench.time,
                         late=self.late)
                return json.dumps(q)
        raise ComponentError(f"{self.name}: OTHER {payload!r}: use science_reset, science, "
                             "science_window or rewind")


def _load_calibration(comp: Component):
    from dao.loop.calibration import Calibration

    path = comp.config.get("calibration")
    if not path:
        raise ComponentError(f"{comp.name}: set calibration = <file.npz> in its config")
    return Calibration.load(str(path))


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
    """Slopes of each WFS frame (``cnt2`` passed on): Shack-Hartmann or pyramid, minus the
    calibration's reference slopes (those of a flat wavefront).

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
        self._reference = np.asarray(self.cal["reference_slopes"], np.float32).reshape(
            self.out.shape)
        self._slopes = np.zeros(self.out.shape, np.float32)

    def release(self) -> None:
        self.out.close()

    def process(self, data: np.ndarray) -> None:
        self.estimator.measure(data)
        np.subtract(self._signal, self._reference, out=self._slopes)
        self.out.set_data(self._slopes, cnt2=self.frame_id)  # the frame's cnt2, set by the loop


def _modal_gains(comp: Controller, value: np.ndarray) -> np.ndarray | None:
    """Validator of ``modal_gains``: one number (for every mode) or one per mode."""
    v = np.asarray(value, np.float32)
    if v.ndim > 1 or v.size == 0:
        raise ValueError("give one number, or a list of one gain per mode")
    n = getattr(comp, "n_modes", None)
    if n is None:
        return v
    if v.ndim == 0:
        return np.full(n, v, np.float32)
    if v.shape != (n,):
        raise ValueError(f"{v.size} values for {n} modes: give one number or {n} values")
    return v


def _load_law_class(path: str, name: str, law_dir: str) -> type:
    """The class ``name`` of the law file ``path``, which must be in ``law_dir`` (the loop's
    private folder), owned by this user and writable by no one else."""
    import importlib.util
    import os
    import stat

    real, folder = os.path.realpath(path), os.path.realpath(law_dir) if law_dir else ""
    if not folder or os.path.dirname(real) != folder:
        raise ComponentError(f"law file {path!r} refused: laws are loaded only from the loop's "
                             f"own folder ({law_dir or 'none configured: law_dir'}); "
                             "AOLoop.swap(..., where='process') puts them there")
    st = os.stat(real)
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ComponentError(f"law file {path!r} refused: not owned by this user or writable "
                             "by others")
    spec = importlib.util.spec_from_file_location(
        f"dao_law_{os.path.basename(real)[:-3]}", real)
    if spec is None or spec.loader is None:
        raise ComponentError(f"law file {path!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ComponentError(f"law file {path!r} has no class {name!r}")
    return cls


class Controller(Component):
    """The loop's controller: a control law from the slopes to the DM command (``cnt2``
    passed on).

    It runs a stock law (:data:`dao.loop.laws.STOCK_LAWS`, chosen by the parameter ``law``:
    the modal integrator with per-mode gains by default), or a law shipped to it
    (``OTHER load``), and hands the DM command over to a law run elsewhere (a notebook's
    :class:`dao.loop.hosting.LocalController`) between two frames (``OTHER release``,
    ``OTHER acquire``; see :mod:`dao.loop.hosting`). Every parameter change and every swap
    takes effect between two frames. A shipped law that raises is replaced by the stock law
    from the same frame (``law_error`` says why); the stock law raising puts the component in
    Error.

    Config keys: ``calibration`` (a :class:`dao.loop.Calibration` file), ``streams``
    (``slopes`` input, ``dm_command`` output), ``law_dir`` (the only folder law files are
    loaded from), and the parameters.

    OTHER commands: ``reset`` (flat mirror, law state to zero), ``release FRAME`` (write no
    command from the returned frame on), ``acquire FRAME`` (write every command from FRAME
    on), ``load {"file": ..., "class": ..., "params": {...}}`` (make that law, run it from
    the next frame), ``stock`` (back to the stock law), ``log`` (JSON ``[frame, what]`` of
    the swaps and handovers).
    """

    slopes = Input(doc="slopes")
    law = Parameter("modal", str, choices=("modal", "integrator", "pid", "pol"),
                    doc="stock control law", on_change=lambda self, old, new: self._new_law())
    gain = Parameter(0.0, float, bounds=(0.0, 2.0), doc="loop gain (0: loop open)",
                     on_change=lambda self, old, new: self._parameters_changed())
    leak = Parameter(1.0, float, bounds=(0.0, 1.0), doc="integrator leak",
                     on_change=lambda self, old, new: self._parameters_changed())
    modal_gains = Parameter(np.ones(1, np.float32), np.ndarray, bounds=(0.0, 10.0),
                            validator=_modal_gains, doc="gain factor of each mode (law modal)",
                            on_change=lambda self, old, new: self._parameters_changed())
    kp = Parameter(0.0, float, doc="proportional gain (law pid)",
                   on_change=lambda self, old, new: self._parameters_changed())
    kd = Parameter(0.0, float, doc="derivative gain (law pid)",
                   on_change=lambda self, old, new: self._parameters_changed())
    active_law = Parameter("", str, readonly=True, doc="the law writing the DM command")
    law_error = Parameter("", str, readonly=True, doc="why the last shipped law was dropped")

    def configure(self, config: dict[str, Any]) -> None:
        self.cal = _load_calibration(self)
        self.n_modes = int(self.cal["n_modes"])
        self.modal_gains = self.modal_gains  # checked again now that n_modes is known

    def _settings(self) -> dict[str, Any]:
        return {"gain": self.gain, "leak": self.leak, "modal_gains": self.modal_gains,
                "kp": self.kp, "kd": self.kd}

    def allocate(self) -> None:
        from dao.loop.laws import stock_law
        from dao.streams.stream import shm

        self.stock = stock_law(self.law, self.cal, **self._settings())
        self.out = _open_output(self, "dm_command")
        self._slopes_in = shm(self.stream_name("slopes"))  # the FIFO, for a catch-up
        from dao.loop.hosting import LawHost

        self.host = LawHost(self.stock, self.out, self._slopes_in, fallback=self.stock)
        self.stock.step(np.zeros(self.stock.n_slopes, np.float32), self.host.command)  # warm up
        self.host.command[:] = 0.0
        self.stock.start(self.host.command)
        self._n_log = 0
        self._failure = None
        self._refresh()
        # the slopes are read into the same buffer every frame: its flat view, made once
        self._slopes_buf = self.input_buffer
        self._slopes_flat = self._slopes_buf.reshape(-1) if self._slopes_buf is not None else None

    def release(self) -> None:
        self.out.close()
        self._slopes_in.close()
        self._slopes_buf = self._slopes_flat = None

    def _parameters_changed(self) -> None:
        # in the command thread: the law makes its new arrays (the modal law its matrix, a few
        # ms) and swaps them in whole, so the processing thread uses them from its next frame
        if getattr(self, "stock", None) is not None:
            self._apply()

    def _new_law(self) -> None:
        host = getattr(self, "host", None)
        if host is None:
            return  # not allocated: allocate() makes the law chosen
        from dao.loop.laws import stock_law

        self.stock = stock_law(self.law, self.cal, **self._settings())
        host.fallback = self.stock
        host.swap(self.stock)

    def _refresh(self) -> None:
        """Publish which law writes the command (and why a shipped one was dropped)."""
        host = self.host
        from dao.loop.hosting import NEVER

        what = (host.law.describe() if host.active
                else f"none (released from frame {host.until})" if host.until != NEVER
                else "none")
        self._n_log = len(host.log)
        if what != self.active_law:
            self.active_law = what
        if host.failure is not None and host.failure is not self._failure:
            self._failure = host.failure
            frame, name, exc = host.failure
            self.law_error = f"frame {frame}: {name} raised {type(exc).__name__}: {exc}"
            self.log.error("%s", self.law_error)

    def _apply(self) -> None:
        set_ = self.stock.set
        if self.law == "modal":
            set_(gain=self.gain, leak=self.leak, modal_gains=self.modal_gains)
        elif self.law == "integrator":
            set_(gain=self.gain, leak=self.leak)
        elif self.law == "pid":
            set_(gain=self.gain, kp=self.kp, kd=self.kd)
        else:
            set_(gain=self.gain)

    def other(self, payload: str) -> str:
        """``reset``, ``release FRAME``, ``acquire FRAME``, ``load JSON``, ``stock``, ``log``
        (see the class docstring)."""
        cmd, _, arg = payload.strip().partition(" ")
        host = self.host
        try:
            if cmd == "reset":
                host.reset()
                return "reset"
            if cmd == "release":
                return str(host.release(int(arg)))
            if cmd == "acquire":
                return str(host.acquire(int(arg)))
            if cmd == "load":
                spec = json.loads(arg)
                from dao.loop.laws import as_law

                cls = _load_law_class(str(spec["file"]), str(spec["class"]),
                                      str(self.config.get("law_dir", "")))
                law = as_law(cls, self.cal, **dict(spec.get("params") or {}))
                law.step(np.zeros(law.n_slopes, np.float32),
                         np.zeros(law.n_actuators, np.float32))  # compile before the swap
                host.swap(law)
                return law.describe()
            if cmd == "stock":
                host.swap(self.stock)
                return self.stock.describe()
            if cmd == "log":
                return json.dumps(host.log)
        finally:
            self._refresh()
        raise ComponentError(f"{self.name}: OTHER {payload!r}: use reset, release FRAME, "
                             "acquire FRAME, load JSON, stock or log")

    def process(self, data: np.ndarray) -> None:
        flat = self._slopes_flat if data is self._slopes_buf else data.reshape(-1)
        self.host.process(flat, self.frame_id)  # the frame's cnt2
        if len(self.host.log) != self._n_log:  # a swap or a handover: say which law runs
            self._refresh()

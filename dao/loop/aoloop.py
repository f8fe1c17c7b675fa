"""The AO loop: components wired into a closed loop on the simulated bench by a config file.

:class:`AOLoop` is a running loop to drive from a notebook or a script; :func:`run_loop` is the
scripted run behind ``dao demo``. Starting an :class:`AOLoop`

1. calibrates on a simulated bench in this process (:func:`dao.loop.calibrate`: interaction
   matrix by poking each actuator, control matrix by truncated SVD, modal basis, reference
   slopes, the slope estimator's geometry), or loads the calibration file of
   ``calibration.file``, and saves it to ``calibration.npz`` in its private folder;
2. creates the streams in the standard stream folder (``$DAO_SHM_DIR``, default ``/tmp``:
   :func:`dao.streams.stream.shm_dir`), so that ``dao ls``, ``dao watch``, ``dao.shm(name)``
   in another process and DAO C programs find them by name: ``wfs_image``, ``slopes``,
   ``dm_command``, the camera's ``frames`` log, ``science`` (image quality) and ``psf``, as
   FIFOs whose depth (``run.history_frames``) is the history kept for latencies and
   telemetry (slopes as a ``(2, n_subapertures)`` array, x slopes then y slopes; other
   vectors as ``(n, 1)``, the shape the DAO C library opens), labelled for their xarray
   views (:func:`dao.loop.components.label_streams`: slopes by ``axis`` and
   ``subaperture``, commands by ``actuator``, with the grid positions as coordinates).
   Names set in ``[streams]`` are used as they are; default names get a suffix unique to
   the loop (``slopes_3f9a0c``: stream semaphores are named machine-wide, so two loops need
   different names). A name that a live process (another loop) writes is refused
   (:class:`dao.errors.StreamBusyError`) before anything is made;
3. starts the components (:mod:`dao.loop.components`: bench camera, slopes, controller), each
   in its own process under a :class:`dao.Supervisor`, with the loop open (gain 0).

Each component keeps its per-frame timing records in its timing stream (``<name>_timing``,
with the loop's suffix for the default component names; :attr:`AOLoop.timing_streams`;
:data:`dao.runtime.TIMING_FIELDS`: input counter, start and end in ns of CLOCK_REALTIME, frame
number; :meth:`AOLoop.timing`), and publishes its events (:meth:`AOLoop.subscribe`).

:meth:`AOLoop.close` (or the loop's garbage collection, or the interpreter's exit) stops the
processes and removes exactly the loop's streams (with their label and owner files) and its
private folder (:attr:`AOLoop.folder`: ``calibration.npz``, ``laws/``).

Long calls do not have to block a notebook: ``start(wait=False)`` (calibration included) and
``expose(n, wait=False)`` return a :class:`dao.runtime.Status` at once (``wait(timeout)``,
``done``, ``progress``, ``add_callback``). A component process that dies is reported at once:
:meth:`AOLoop.wait` (so :meth:`AOLoop.expose`) and every command raise ``RuntimeError`` naming
it.

Then ``loop.gain = 0.4`` closes it (over the command protocol, while it runs),
:meth:`AOLoop.expose` measures a long exposure on the science camera, :meth:`AOLoop.science`
gives the short-exposure Strehl frame by frame, :meth:`AOLoop.psf` the long-exposure image,
:meth:`AOLoop.latency` the loop rate and the
latency per stage from the frame timestamps (camera frame to slopes to DM command, matched by
frame number ``cnt2``), and :meth:`AOLoop.write_telemetry` the stream histories (NetCDF, one
group per stream, readable with :func:`dao.streams.telemetry.open_recording`).

Control laws: :meth:`AOLoop.swap` runs another law from the next frame (in a thread of this
process, or shipped to the controller process) and back, frame-exact and bumpless
(:mod:`dao.loop.hosting`); :meth:`AOLoop.compare` runs several on the same atmosphere
(:meth:`AOLoop.rewind`); :meth:`AOLoop.stop` then :meth:`AOLoop.start` restarts the
components without recalibrating; :meth:`AOLoop.save_calibration` keeps the calibration for
another loop (``AOLoop(calibration=path)``).

The bench moves the atmosphere by one frame period per camera frame and waits for the
command of each frame (lock-step), so the Strehl ratios do not depend on the machine's speed;
the loop rate and latencies do.

The configuration is :mod:`dao.loop.config`; the scripted run and its report
:mod:`dao.loop.report`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
import tomllib
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from dao.loop.calibration import Calibration, calibrate
from dao.loop.config import DEFAULT_CONFIG, ROLES, bench_arguments, load_loop_config

if TYPE_CHECKING:
    import xarray

    from dao.runtime import ComponentClient, EventSubscriber, Status

__all__ = ["AOLoop", "default_telemetry_path"]


def _release(owned: dict, streams: dict, folder: str) -> None:
    """Stop the processes, close the streams, remove the streams this loop made (listed in
    ``owned["paths"]``, with their semaphores, owner, claim and label files) and the private
    ``folder`` (idempotent)."""
    from dao.errors import StreamError
    from dao.streams import remove

    local = owned.pop("local", None)
    if local is not None:
        with contextlib.suppress(Exception):
            local.stop()
    sup = owned.pop("supervisor", None)
    if sup is not None:
        with contextlib.suppress(Exception):
            sup.stop_all(timeout=5.0)
    fwd = owned.pop("forwarder", None)
    if fwd is not None:
        with contextlib.suppress(Exception):
            fwd.stop()
    for s in streams.values():
        with contextlib.suppress(Exception):
            s.close()
    streams.clear()
    paths = owned.setdefault("paths", [])
    while paths:
        p = paths.pop()
        if os.path.lexists(p):
            with contextlib.suppress(StreamError, OSError):
                remove(p)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _stream_file(folder: str, name: str) -> str:
    """Full path of the stream ``name`` in ``folder`` (checked: under 80 bytes)."""
    from dao.streams.stream import SUFFIX, stream_path

    return stream_path(os.path.join(folder, name if name.endswith(SUFFIX) else name + SUFFIX))


def _check_free(paths: dict[str, str], keys: dict[str, str]) -> None:
    """Refuse streams that a live process writes (another loop's): StreamBusyError naming
    each, and how to fix it. ``paths``: ``{what: path}``; ``keys``: ``{what: the config key
    that names it}``."""
    from dao.errors import StreamBusyError, StreamError
    from dao.streams.stream import SUFFIX, stream_holders

    busy = []
    for what, p in paths.items():
        if not os.path.lexists(p):
            continue
        try:
            writers = stream_holders(p).writers
        except (StreamError, OSError, ValueError):
            continue
        if writers:
            who = ", ".join(f"pid {w}" + (" (this process)" if w == os.getpid() else "")
                            for w in writers)
            busy.append(f"{os.path.basename(p)[:-len(SUFFIX)]!r} ({keys[what]}; {p}) is "
                        f"written by {who}")
    if busy:
        raise StreamBusyError(
            "cannot start the loop: its stream " + "; ".join(busy) + ". Another loop (or "
            "program) uses that name: give this loop other names in its config ([streams]; "
            "[components] names for the timing streams; names left at their defaults get a "
            "suffix unique to each loop), or close the loop that uses them first (ao.close(); "
            "`dao ls` shows each stream's writers)")


def default_telemetry_path() -> str:
    """``dao_loop_<date>-<time>.nc`` in the current folder."""
    return os.path.abspath(time.strftime("dao_loop_%Y%m%d-%H%M%S.nc"))


class AOLoop:
    """A closed-loop AO system on the simulated bench, its components in their own processes.

    The loop starts open (gain 0; ``[run] start = "closed"``: at ``controller.gain``);
    :meth:`close_loop` or :attr:`gain` closes it. Everything runs in other
    processes: this object only sends commands and reads the streams, so a notebook stays
    responsive while the loop runs.

    The streams are in the standard stream folder (:attr:`stream_dir`: ``$DAO_SHM_DIR`` when
    the loop starts, default ``/tmp``), where ``dao ls`` lists them and another process (a
    notebook, ``dao watch``, a DAO C program) opens them by name. Names set in the
    configuration (``[streams]``) are used exactly; stream semaphores are named by the
    stream's name alone, machine-wide, so the default names get a suffix unique to this loop
    (``wfs_image_3f9a0c``; the names in use are in ``config["streams"]`` after
    :meth:`start`) and several loops can run at once. Starting on a name that another live
    loop (or any live process) writes raises :class:`dao.errors.StreamBusyError` and leaves
    nothing behind. :meth:`close` removes exactly the loop's streams.

    Parameters
    ----------
    config : path or dict, optional
        Loop configuration (TOML) updating :data:`DEFAULT_CONFIG`.
    n_subap : int, optional
        Subapertures across the pupil (``bench.n_subap``).
    sensor : str, optional
        ``"shack-hartmann"`` or ``"pyramid"`` (``sensor.type``).
    history : int, optional
        Frames kept in the stream histories (``run.history_frames``; default 8192): the
        window :meth:`latency`, :meth:`science` and :meth:`write_telemetry` see.
    calibration : path, optional
        A calibration saved by :meth:`save_calibration` to start with instead of measuring
        one (``calibration.file``); refused if made for another bench or sensor.
    progress : callable, optional
        ``progress(message)`` called at each phase of :meth:`start`.

    Attributes
    ----------
    config : dict
        The configuration in use.
    calibration : dao.loop.Calibration
        The loop's calibration (after :meth:`start`; an empty dict before).
    streams : dict of str to dao.shm
        The loop's streams by role (after :meth:`start`).
    stream_dir : str
        The folder of the loop's streams (after :meth:`start`).
    folder : str
        The loop's private folder (mode 0700, after :meth:`start`): ``calibration.npz``, the
        calibration the components load, and ``laws/``, the laws shipped to the controller
        process (:meth:`swap`). Removed by :meth:`close`.
    timing_streams : dict of str to str
        The name of each component's timing stream, by role (after :meth:`start`).
    supervisor : dao.Supervisor
        The supervisor of the component processes (after :meth:`start`).
    log_address : str
        Where the components' log records can be read (the backend of this loop's log bus,
        a :class:`dao.runtime.logbus.LogSubscriber` address; after :meth:`start`).
    gain_log : list of (int, float)
        ``(frame, gain)`` of every gain change.

    Examples
    --------
    >>> with AOLoop(n_subap=10) as ao:       # doctest: +SKIP
    ...     open_loop = ao.expose(300)
    ...     ao.gain = 0.4                     # close the loop while it runs
    ...     ao.wait(200)
    ...     closed_loop = ao.expose(1000)
    ...     print(open_loop["strehl"], closed_loop["strehl"], ao.latency()["latency_p50_s"])
    """

    def __init__(self, config: str | os.PathLike | dict | None = None, *,
                 n_subap: int | None = None, sensor: str | None = None,
                 history: int | None = None, calibration: str | os.PathLike | None = None,
                 progress=None) -> None:
        over: dict[str, Any] = {
            "bench": {"n_subap": n_subap} if n_subap is not None else {},
            "sensor": {"type": sensor} if sensor is not None else {},
            "run": {"history_frames": history} if history is not None else {},
            "calibration": {"file": os.fspath(calibration)} if calibration is not None else {},
        }
        self.config = load_loop_config(config, **over)
        self._say = progress or (lambda msg: None)
        self.calibration: Calibration | dict[str, Any] = {}
        self.streams: dict[str, Any] = {}
        self.supervisor = None
        self.gain_log: list[tuple[int, float]] = []
        self.law_log: list[tuple[int, str, str]] = []
        self.law_error: str = ""
        self._swap_lock = threading.RLock()
        self._n_shipped = 0
        self._gain = 0.0
        self._running = False
        self._owned: dict[str, Any] = {"supervisor": None, "paths": []}
        self._finalizer = None
        # a start(wait=False) under way: True until just before its status is done; the
        # thread running it (set by that thread); close() sets _cancel and waits for it
        self._starting = False
        self._start_thread: threading.Thread | None = None
        self._start_status = None
        self._cancel = threading.Event()
        self._status = None  # the start's status, for its progress reports
        self.folder = ""
        self.stream_dir = ""
        self.timing_streams: dict[str, str] = {}
        self.log_address = ""
        self._tag = ""

    # -- life cycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """The component processes are up."""
        return self._running

    def start(self, wait: bool = True) -> AOLoop | Status:
        """Calibrate, create the streams, start the components; the loop runs open.

        Parameters
        ----------
        wait : bool
            Block until the camera has produced its first frames and return this loop;
            False: return a :class:`dao.runtime.Status` at once, the start going on in a
            thread (``progress``: the phase, as a fraction and a message; result: this loop;
            the other methods say "still starting" until it is done; :meth:`close` meanwhile
            cancels it).

        Returns
        -------
        AOLoop or dao.runtime.Status
            This loop, running; or (``wait=False``) the start's status, whose result is this
            loop.

        Raises
        ------
        RuntimeError
            Already started, or a component process died while starting, or the start was
            cancelled by :meth:`close` (with ``wait=False``: raised by the status's ``wait``).
        """
        from dao.runtime.status import Status

        if self._cancel.is_set():
            raise RuntimeError("this AOLoop was closed: make a new one")
        if self._finalizer is not None:
            if self._running or self._starting:
                raise RuntimeError("this AOLoop is running already")
            return self._restart(wait)
        from dao.streams.stream import shm_dir

        cfg = self.config
        self.stream_dir = os.path.abspath(shm_dir())
        # semaphores are named by the stream's base name alone (as in the DAO C library), so
        # two loops on one machine need different names: default names get this loop's tag
        default = tomllib.loads(DEFAULT_CONFIG)
        tag = self._tag = self._new_tag(default)
        cfg["streams"] = {k: f"{v}_{tag}" if v == default["streams"].get(k) else v
                          for k, v in cfg["streams"].items()}
        # each component's timing stream: <name>_timing (its own default) for a component
        # named in the config, with the loop's tag for a default name
        comps = cfg["components"]
        self.timing_streams = {
            k: f"{comps[k]['name']}_timing"
            + (f"_{tag}" if comps[k]["name"] == default["components"][k]["name"] else "")
            for k in ROLES}
        self.folder = tempfile.mkdtemp(prefix="daoloop")  # private (0700): calibration.npz
        self._finalizer = weakref.finalize(self, _release, self._owned, self.streams,
                                           self.folder)
        if wait:
            return self._start_all(None)

        def op(status: Status) -> AOLoop:
            self._start_thread = threading.current_thread()
            try:
                return self._start_all(status)
            finally:
                # before the status is done: whoever its end wakes may use the loop at once
                self._starting = False

        self._starting = True
        st = self._start_status = Status.run(op, name="AOLoop start")
        return st

    def _new_tag(self, default: dict[str, Any]) -> str:
        """A suffix for the default names that no stream in :attr:`stream_dir` has."""
        names = [*default["streams"].values(),
                 *(f"{c['name']}_timing" for c in default["components"].values())]
        for _ in range(100):
            tag = secrets.token_hex(3)
            if not any(os.path.lexists(os.path.join(self.stream_dir, f"{n}_{tag}.im.shm"))
                       for n in names):
                return tag
        raise RuntimeError(f"no free stream name suffix in {self.stream_dir}: remove the "
                           "streams of dead loops there (dao rm --dead)")

    def _stream_paths(self) -> tuple[dict[str, str], dict[str, str]]:
        """``{role: path}`` of the loop's streams (those it makes, then the components'
        timing streams as ``timing_<role>``), and ``{role: config key}`` that names each."""
        names, comps = self.config["streams"], self.config["components"]
        paths = {k: _stream_file(self.stream_dir, v) for k, v in names.items()}
        keys = {k: f"streams.{k}" for k in names}
        for k, v in self.timing_streams.items():
            paths[f"timing_{k}"] = _stream_file(self.stream_dir, v)
            keys[f"timing_{k}"] = (f"the timing stream of component {comps[k]['name']!r}, "
                                   f"components.{k}.name")
        return paths, keys

    def _start_all(self, status) -> AOLoop:
        self._status = status
        try:
            self._start(self.config)
        except BaseException:
            self.close()
            raise
        return self._started()

    def _started(self) -> AOLoop:
        closed = self.config["run"]["start"] == "closed"
        self._gain = float(self.config["controller"]["gain"]) if closed else 0.0
        self.gain_log.append((self.frame, self._gain))
        self.law_log.append((self.frame, "process", str(self.config["controller"]["law"])))
        self._phase(1.0, f"running (loop {'closed' if closed else 'open'})", say=False)
        return self

    def _restart(self, wait: bool) -> AOLoop | Status:
        """Start the components again on the loop's streams and calibration."""
        from dao.runtime.status import Status

        def op(status: Status | None) -> AOLoop:
            self._status = status
            self._start_thread = threading.current_thread()
            try:
                self._start_components()
            except BaseException:
                self.stop()
                raise
            finally:
                self._starting = False
            return self._started()

        if wait:
            return op(None)
        self._starting = True
        st = self._start_status = Status.run(op, name="AOLoop restart")
        return st

    def _check_cancel(self) -> None:
        """Between two phases of start: give up if :meth:`close` was called meanwhile."""
        if self._cancel.is_set():
            raise RuntimeError("the loop's start was cancelled: close() was called while it "
                               "was starting")

    def _phase(self, fraction: float, message: str, say: bool = True) -> None:
        """Report a phase of start: to ``progress`` (if ``say``) and to the start status."""
        if say:
            self._say(message)
        if self._status is not None and not self._status.done:
            self._status.set_progress(fraction, message)

    def _start(self, cfg: dict[str, Any]) -> None:
        from dao.loop.components import FRAMES_FIELDS, SCIENCE_FIELDS, label_streams

        run = cfg["run"]
        os.mkdir(os.path.join(self.folder, "laws"), 0o700)  # laws shipped to the controller
        cal_path = os.path.join(self.folder, "calibration.npz")
        n = cfg["bench"]["n_subap"]
        path, keys = self._stream_paths()
        _check_free(path, keys)  # before the calibration's seconds: a taken name fails now
        self._check_cancel()
        if cfg["calibration"]["file"]:
            self._phase(0.0, f"loading the calibration {cfg['calibration']['file']}")
            cal = self.calibration = Calibration.load(cfg["calibration"]["file"], cfg)
            cal.save(cal_path)
        else:
            self._phase(0.0, f"calibrating {n}x{n} {cfg['sensor']['type']}")
            cal = self.calibration = calibrate(cfg, cal_path)
        gains = np.asarray(cfg["controller"]["modal_gains"], float)
        if gains.ndim and gains.shape != (cal.n_modes,):
            raise ValueError(f"controller.modal_gains has {gains.size} values but the loop "
                             f"controls {cal.n_modes} modes: give one number or "
                             f"{cal.n_modes} values")
        self._check_cancel()
        depth = int(run.get("history_frames") or 8192)
        every = int(cfg["science"]["every"])
        max_bytes = int(run["max_image_history_bytes"])
        image_depth = int(max(4, min(depth, max_bytes // (4 * int(np.prod(cal["wfs_shape"]))))))
        psf_depth = int(max(4, min(256, max_bytes // (4 * int(np.prod(cal["psf_shape"]))))))
        frame = {
            "wfs_image": (np.zeros(cal["wfs_shape"], np.float32), image_depth),
            # x slopes then y slopes: the estimators' flat order, labelled (axis, subaperture)
            "slopes": (np.zeros(cal["slopes_shape"], np.float32), depth),
            "dm_command": (np.zeros((cal["n_actuators"], 1), np.float32), depth),
            "frames": (np.zeros((len(FRAMES_FIELDS), 1), np.int64), depth),
            "science": (np.zeros((len(SCIENCE_FIELDS), 1), np.float64),
                        max(16, depth // every + 4)),
            "psf": (np.zeros(cal["psf_shape"], np.float32), psf_depth),
        }
        _check_free(path, keys)  # again: another loop may have started meanwhile
        for k, (data, d) in frame.items():
            self.streams[k] = self._create(k, path[k], data, d)
        label_streams(self.streams, cal)
        # the components' timing streams: theirs to make, the loop's to remove
        self._owned["paths"].extend(path[f"timing_{k}"] for k in ROLES)
        self._start_components()

    def _start_components(self) -> None:
        """Start the component processes on the loop's streams and calibration file."""
        from dao.runtime import Supervisor

        cfg = self.config
        run, names, comps, ctl = cfg["run"], cfg["streams"], cfg["components"], cfg["controller"]
        depth = self.streams["slopes"].depth
        common = {"calibration": os.path.join(self.folder, "calibration.npz"),
                  "timing_depth": depth}
        gains = ctl["modal_gains"]
        spec = {
            "camera": {"bench": bench_arguments(cfg), "timing_depth": depth,
                       "command_timeout": float(run["command_timeout"]),
                       "science_every": int(cfg["science"]["every"]),
                       "first_frame": self.frame,  # a restart goes on counting
                       "streams": {k: names[k] for k in ("dm_command", "wfs_image", "frames",
                                                         "science", "psf")}},
            "slopes": {**common, "streams": {"wfs_image": names["wfs_image"],
                                             "slopes": names["slopes"]}},
            "controller": {**common, "law": str(ctl["law"]),
                           "gain": float(ctl["gain"]) if run["start"] == "closed" else 0.0,
                           "leak": float(ctl["leak"]), "kp": float(ctl["kp"]),
                           "kd": float(ctl["kd"]),
                           "modal_gains": [float(g) for g in np.ravel(gains)],
                           "law_dir": os.path.join(self.folder, "laws"),
                           "streams": {"slopes": names["slopes"],
                                       "dm_command": names["dm_command"]}},
        }
        if np.ndim(gains) == 0:
            spec["controller"]["modal_gains"] = float(gains)
        for k in ROLES:
            spec[k]["streams"]["timing"] = self.timing_streams[k]
            if int(run.get("priority", 0)) > 0:  # SCHED_FIFO for the processing threads
                spec[k]["priority"] = min(99, int(run["priority"]))
        env = {"DAO_SHM_DIR": self.stream_dir,  # the components find the streams by name
               "NUMBA_NUM_THREADS": str(kernel_threads(int(run.get("kernel_threads", 0))))}
        # the components' log records, gathered on a log bus of this loop (loopback, any port)
        from dao.runtime.logbus import LogForwarder

        fwd = self._owned.get("forwarder")
        if fwd is None:
            fwd = self._owned["forwarder"] = LogForwarder("tcp://127.0.0.1:*",
                                                          "tcp://127.0.0.1:*").start()
        self.log_address = fwd.backend
        sup = self.supervisor = self._owned["supervisor"] = Supervisor(
            {"component": [{"name": comps[k]["name"], "class": comps[k]["class"],
                            "state": "Idle", "args": spec[k], "env": env,
                            "log_level": "WARNING"} for k in ROLES]},
            ready_timeout=float(run["ready_timeout"]), command_timeout=10.0)
        sup.log_bus = fwd.frontend
        self._running = True
        self._phase(0.6, "starting the components: "
                    + ", ".join(c["name"] for c in comps.values()))
        for name in sup.procs:  # one by one: close() may cancel between two
            self._check_cancel()
            sup.start(name)
        self._check_cancel()
        self._phase(0.9, "running the components", say=False)
        for k in ROLES:
            self.client(k).run()
        self.wait(20)

    def _create(self, role: str, path: str, data: np.ndarray, depth: int):
        """Create the stream of ``role`` at ``path`` (recorded for :meth:`close` to remove)."""
        from dao.errors import SemaphoreConflictError, StreamBusyError
        from dao.streams import shm

        try:
            s = shm(path, data, depth=depth)
        except (StreamBusyError, SemaphoreConflictError) as exc:
            raise type(exc)(f"cannot create the loop's {role} stream (streams.{role} = "
                            f"{self.config['streams'][role]!r} in the loop's config): "
                            f"{exc}") from exc
        self._owned["paths"].append(s.path)
        return s

    def stop(self) -> None:
        """Stop the component processes; the stream histories stay readable until
        :meth:`close`."""
        if not self.running:
            return
        for k in reversed(ROLES):  # upstream first: the camera stops feeding the others
            with contextlib.suppress(Exception):
                self.client(k).idle()
        local = self._owned.pop("local", None)
        if local is not None:
            local.stop()
        self.supervisor.stop_all(timeout=5.0)
        self._running = False

    def close(self, timeout: float | None = None) -> None:
        """Stop the processes and remove the loop's streams (those it made and its
        components' timing streams, with their semaphores, owner and label files; nothing
        else) and its private folder (also done when this object is garbage-collected or the
        interpreter exits).

        A ``start(wait=False)`` under way is cancelled first: it stops at its next phase (no
        component process is started after this call returns) and its status fails.

        Parameters
        ----------
        timeout : float, optional
            Longest wait for a start under way to stop, in seconds (default: the
            configuration's ``run.ready_timeout`` plus 60 s: a component being started is
            waited for, then stopped).
        """
        self._cancel.set()
        st, th = self._start_status, self._start_thread
        if st is not None and not st.done and threading.current_thread() is not th:
            wait = float(self.config["run"]["ready_timeout"]) + 60.0 if timeout is None \
                else timeout
            from dao.runtime.status import StatusTimeout

            try:
                st.exception(wait)  # its end, whatever it is (a cancelled start fails)
            except StatusTimeout:
                import warnings

                warnings.warn(f"AOLoop.close(): the start under way did not stop within "
                              f"{wait:g} s; stopping its processes anyway", stacklevel=2)
        self._running = False
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> AOLoop:
        if self._finalizer is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        law = self.controller
        state = (f"running, frame {self.frame}, gain {self._gain:g}, {law['law']} law "
                 f"({'this process' if law['where'] == 'kernel' else 'controller process'})"
                 if self.running
                 else "stopped" if self._finalizer is not None else "not started")
        return (f"<AOLoop {c['bench']['n_subap']}x{c['bench']['n_subap']} "
                f"{c['sensor']['type']}: {state}>")

    # -- control ---------------------------------------------------------------------------
    def client(self, role: str) -> ComponentClient:
        """The :class:`dao.ComponentClient` of ``role``: camera, slopes or controller.

        Parameters
        ----------
        role : str
            ``"camera"``, ``"slopes"`` or ``"controller"``.

        Returns
        -------
        dao.ComponentClient
            The client of that component process (shared: one request at a time).

        Raises
        ------
        RuntimeError
            The loop is not running, or that component's process has died (named, with its
            exit status).
        """
        self._check_running()
        name = self.config["components"][role]["name"]
        self._check_alive([name])
        return self.supervisor.client(name)

    def _check_running(self) -> None:
        if self._starting and threading.current_thread() is not self._start_thread:
            raise RuntimeError("the loop is still starting: wait for the status that "
                               "start(wait=False) returned")
        if not self.running:
            raise RuntimeError("the loop is not running: call start() (or use a new AOLoop "
                               "after close())")

    def _check_alive(self, names: list[str] | None = None) -> None:
        """Raise RuntimeError naming the loop's component processes that have died."""
        sup = self.supervisor
        if sup is None:
            return
        roles = {c["name"]: r for r, c in self.config["components"].items()}
        dead = [h for h in sup.health()
                if not h["alive"] and h["pid"] is not None and not h["stopping"]
                and (names is None or h["component"] in names)]
        if dead:
            raise RuntimeError("the loop stopped, a component process died: " + "; ".join(
                f"{h['component']} ({roles.get(h['component'], '?')}, pid {h['pid']}) exited "
                f"with status {h['last_exit_code']}"
                for h in dead))

    def _check_errors(self) -> None:
        """Raise RuntimeError naming the components in Error, with their reasons, as the
        supervisor knows them from their events (no command sent)."""
        failed = [h for h in self.supervisor.health() if h.get("state") == "Error"]
        if not failed:
            return
        roles = {c["name"]: r for r, c in self.config["components"].items()}
        why = []
        for h in failed:
            reason = h.get("error_reason")
            if not reason:
                with contextlib.suppress(Exception):
                    reason = self.supervisor.client(h["component"]).query("error_reason")
            lines = str(reason or "no reason given").strip().splitlines()
            why.append(f"{h['component']}: {lines[-1] if lines else ''} (the "
                       f"{roles.get(h['component'], '?')})")
        raise RuntimeError("the loop stopped, a component is in Error: " + "; ".join(why)
                           + " (the whole reason: ao.client(role).query('error_reason'))")

    def health(self) -> list[dict[str, Any]]:
        """Each component process's health (see :meth:`dao.Supervisor.health`)."""
        self._check_running()
        return self.supervisor.health()

    def subscribe(self, role: str | None = None, kinds=None,
                  timeout: float = 5.0) -> EventSubscriber:
        """Subscribe to the events of component ``role`` (state, parameters, errors,
        heartbeats with its rate and timing), or, with no role, to the supervisor's health
        events of all three (see :mod:`dao.runtime.events`).

        Parameters
        ----------
        role : str, optional
            ``"camera"``, ``"slopes"`` or ``"controller"``; None: the supervisor's health
            events.
        kinds : iterable of str, optional
            Keep only these kinds of event (default all).
        timeout : float
            Seconds to wait for the current state (the publisher's snapshot).

        Returns
        -------
        dao.runtime.EventSubscriber
            The subscriber (use it in a ``with`` block); its first events are the current
            state.
        """
        self._check_running()
        if role is None:
            return self.supervisor.subscribe(kinds=kinds, timeout=timeout)
        return self.client(role).subscribe(kinds=kinds, timeout=timeout)

    @property
    def frame(self) -> int:
        """Camera frames produced so far."""
        return int(self.streams["frames"].get_counter()) if self.streams else 0

    @property
    def gain(self) -> float:
        """The controller's integrator gain (0: loop open), asked of the running controller.

        Set it to change the gain live.
        """
        if self.running:
            self._gain = float(self.client("controller").query("gain"))
        return self._gain

    @gain.setter
    def gain(self, value: float) -> None:
        self._check_running()
        self.client("controller").setup("gain", float(value))
        self._gain = float(value)
        self.gain_log.append((self.frame, self._gain))

    def open_loop(self) -> None:
        """Open the loop: back to the stock law, gain 0, the mirror flat."""
        if self.law is not None:
            self.swap(None)
        self.gain = 0.0
        self.client("controller").other("reset")

    def close_loop(self, gain: float | None = None) -> None:
        """Close the loop at ``gain`` (default the configuration's ``controller.gain``)."""
        self.gain = float(self.config["controller"]["gain"]) if gain is None else gain

    # -- control laws ----------------------------------------------------------------------
    @property
    def controller(self) -> dict[str, Any]:
        """The law writing the DM command: ``law`` (its name), ``where`` (``"process"``: the
        controller component; ``"kernel"``: a thread of this process) and ``since`` (the
        first frame it wrote)."""
        frame, where, law = self.law_log[-1] if self.law_log else (0, "process", "")
        return {"law": law, "where": where, "since": frame}

    @property
    def law(self) -> Any:
        """The law run by a thread of this process (:meth:`swap` with ``where="kernel"``), to
        change it live (its attributes are read every frame); None when the controller
        component runs the law."""
        local = self._local()
        return local.law if local is not None else None

    def _local(self) -> Any:
        """The :class:`LocalController` in charge, or None (one whose law raised is ended
        here, once it has handed the loop back)."""
        local = self._owned.get("local")
        if local is not None and local.error is not None:
            local.handed_back.wait(10.0)
            local.stop()
            self._owned["local"] = local = None
        return local

    def swap(self, law: Any = None, *args: Any, where: str = "kernel", ship: Any = (),
             **params: Any) -> int:
        """Run another control law from the next frame: no frame without a command, none
        with two, no recalibration.

        Parameters
        ----------
        law : ControlLaw, ControlLaw subclass, function, str or None
            ``None`` or ``"stock"``: back to the controller component's stock law (the
            ``law`` parameter: :data:`dao.loop.laws.STOCK_LAWS`). Otherwise a law
            (:class:`dao.loop.ControlLaw`: ``step(slopes, command)`` in place), a law class
            (made as ``law(ao.calibration, *args, **params)``) or a function
            ``func(slopes, command, *args)`` (e.g. ``numba.njit(nogil=True)``).
        where : {"kernel", "process"}
            ``"kernel"``: a thread of this process runs it (:class:`LocalController`; its
            object is :attr:`law`, changed live). ``"process"``: the law's source is written
            to the loop's private folder and the controller component loads it from there
            (a class, or ``"file.py:Class"``; ``params`` must be JSON values): the law runs
            in the loop's process, beside the stock one. Code never travels on a socket.
        ship : sequence of functions or classes
            With ``where="process"``: what the law's class uses besides numpy (``np``),
            ``numba``, ``math`` and :mod:`dao.loop.laws` (their sources go before it).

        Returns
        -------
        int
            The first frame whose command the new law wrote.

        Raises
        ------
        TypeError
            ``law`` is not a law, or is made for another loop.
        RuntimeError
            The loop is not running, or the handover failed (the previous law then goes on).
        """
        from dao.loop.laws import as_law

        self._check_running()
        if where not in ("kernel", "process"):
            raise ValueError(f"where={where!r}: use 'kernel' or 'process'")
        with self._swap_lock:
            if law is None or (isinstance(law, str) and law == "stock"):
                if args or params or ship:
                    raise TypeError("the stock law takes no arguments: set its parameters "
                                    "(ao.gain, ao.client('controller').setup(...))")
                return self._to_process(None)
            if where == "process":
                return self._to_process((law, ship, params, args))
            law = as_law(law, self.calibration, *args, **params)
            return self._to_kernel(law)

    def _to_kernel(self, law: Any) -> int:
        from dao.loop.hosting import LocalController

        cmd = np.zeros(law.n_actuators, np.float32)
        law.step(np.zeros(law.n_slopes, np.float32), cmd)  # compile before the swap
        names = self.config["streams"]
        new = LocalController(law, _stream_file(self.stream_dir, names["slopes"]),
                              _stream_file(self.stream_dir, names["dm_command"]),
                              on_error=self._local_failed,
                              priority=int(self.config["run"]["priority"]))
        old = self._local()
        try:
            h = (old.host.release(0) if old is not None
                 else int(self.client("controller").other("release 0")))
        except BaseException:
            new.stop()
            raise
        try:
            new.host.acquire(h)
        except BaseException:
            new.stop()
            if old is not None:
                old.host.acquire(h)
            else:
                self.client("controller").other(f"acquire {h}")
            raise
        self._owned["local"] = new
        if old is not None:
            old.stop()
        self.law_log.append((h, "kernel", law.describe()))
        return h

    def _to_process(self, shipped: tuple | None) -> int:
        """The controller component in charge again: its stock law (``shipped`` None) or a
        law shipped to it (``(law, ship, params, args)`` of :meth:`swap`)."""
        ctl = self.client("controller")
        n0 = len(self._law_entries(ctl))
        name = self._ship(*shipped) if shipped is not None else ctl.other("stock")
        old = self._local()
        if old is not None:
            h = old.host.release(0)
            ctl.other(f"acquire {h}")
            self._owned["local"] = None
            old.stop()
        else:
            h = self._swap_frame(ctl, n0)
        self.law_log.append((h, "process", name))
        return h

    def _swap_frame(self, ctl: Any, n0: int, timeout: float = 5.0) -> int:
        """The frame from which the controller runs the law just swapped in (its log had
        ``n0`` swaps before)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self._law_entries(ctl)
            if len(log) > n0:
                return int(log[-1][0])
            self._check_alive()
            time.sleep(0.005)
        raise TimeoutError("the controller did not swap its law within 5 s: is the loop "
                           "running? (ao.health())")

    @staticmethod
    def _law_entries(ctl: Any) -> list:
        return [e for e in json.loads(ctl.other("log")) if not str(e[1]).startswith(
            ("released", "acquired"))]

    def _ship(self, law: Any, ship: Any, params: dict[str, Any], args: tuple) -> str:
        """Write the law's source to the loop's folder, load it into the controller (inactive
        or from its next frame); return the law's name."""
        from dao.loop.laws import ControlLaw, law_source

        if args:
            raise TypeError("a law shipped to the controller process takes keyword "
                            "parameters only (JSON values)")
        if isinstance(law, str):
            file, _, cls_name = law.rpartition(":")
            if not file.endswith(".py") or not cls_name:
                raise ValueError(f"{law!r}: give 'file.py:ClassName'")
            with open(file) as f:
                source = f.read()
        elif isinstance(law, type) and issubclass(law, ControlLaw):
            cls_name = law.__name__
            parts = [law_source(o) for o in (*ship, law)]
            source = ("import math\n\nimport numba\nimport numpy as np\n\n"
                      "from dao.loop.laws import *  # noqa: F403\n\n\n"
                      + "\n\n".join(parts))
        else:
            raise TypeError(f"{law!r} cannot be shipped to the controller process: give a "
                            "ControlLaw subclass or 'file.py:ClassName' (an object made here "
                            "runs here: where='kernel')")
        try:
            json.dumps(params)
        except TypeError as exc:
            raise TypeError(f"the parameters of a shipped law must be JSON values: {exc}") \
                from exc
        self._n_shipped += 1
        path = os.path.join(self.folder, "laws", f"law_{self._n_shipped}.py")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(source)
        spec = {"file": path, "class": cls_name, "params": params}
        return self.client("controller").other("load " + json.dumps(spec))

    def _local_failed(self, frame: int, exc: BaseException) -> None:
        """The law run here raised at ``frame``: the controller component takes over."""
        import warnings

        from dao.runtime.command import ComponentClient

        self.law_error = f"frame {frame}: {type(exc).__name__}: {exc}"
        name = self.config["components"]["controller"]["name"]
        with contextlib.suppress(Exception), ComponentClient(
                self.supervisor.address(name), timeout=5.0) as c:
            c.other("stock")
            c.other(f"acquire {frame}")
        self.law_log.append((frame, "process", f"stock (the kernel's law raised "
                                               f"{type(exc).__name__})"))
        warnings.warn(f"the control law run in this process raised at frame {frame} "
                      f"({type(exc).__name__}: {exc}); the controller's stock law took over "
                      "from that frame", RuntimeWarning, stacklevel=1)

    def rewind(self) -> int:
        """Start the atmosphere (and the sensor noise) over from the same seed, from the next
        frame; the frame numbers go on. Returns the first frame on the new atmosphere."""
        return int(json.loads(self.client("camera").other("rewind"))["frame"])

    def compare(self, laws: dict[str, Any], frames: int = 1000, settle: int = 200,
                where: str = "kernel") -> xarray.Dataset:
        """Run each law on the same atmosphere, one after the other, and compare.

        For each law: swap it in (:meth:`swap`), rewind the atmosphere (:meth:`rewind`),
        let the loop settle for ``settle`` frames, then expose the science camera on exactly
        the next ``frames`` frames. The bench is seeded and lock-step, so every law sees the
        same turbulence, frame by frame, and its exposures are taken at the same frames after
        the rewind. The noise is drawn from the same seed too, but photon noise is discrete
        and follows the image, so two runs of one law agree to the noise level, not bit for
        bit (10x10 bench, 1000 exposed frames: long-exposure Strehl within about 0.001 on a
        bright star, 0.005 on a faint one; run the same law twice to see the spread). The
        stock law runs afterwards.

        Parameters
        ----------
        laws : dict of str to law
            ``{label: law}``; a law as :meth:`swap` takes it (None: the stock law).
        frames, settle : int
            Frames exposed, and frames run before (after the rewind).
        where : {"kernel", "process"}
            Where the laws run (see :meth:`swap`).

        Returns
        -------
        xarray.Dataset
            Dimension ``law`` (the labels). Variables: ``strehl`` (long exposure at the
            science wavelength), ``strehl_marechal``, ``residual_rms`` (rad),
            ``residual_opd_rms`` (m), ``loop_rate_hz``, ``latency_p50_s``, ``latency_p99_s``
            (camera frame to DM command), ``late`` (frames without a command in time), and
            ``strehl_frame`` (``law``, ``exposure``: the short-exposure Strehl of each science
            exposure; coordinate ``frame``: its frame counted from the rewind, the same for
            every law).
        """
        import xarray as xr

        if not laws:
            raise ValueError("give at least one law: {'label': law}")
        rows, series = [], []
        try:
            for law in laws.values():
                self.swap(law, where=where if law is not None else "kernel")
                rows.append(self._exposure_after_rewind(settle, frames))
                series.append(rows[-1].pop("series"))
        finally:
            if self.running:  # the stock law afterwards, whatever ran last
                with contextlib.suppress(Exception):
                    self.swap(None)
        n = min(len(f) for f, _ in series)
        ds = xr.Dataset(
            {k: ("law", [row[k] for row in rows]) for k in rows[0]},
            coords={"law": list(laws), "exposure": np.arange(n),
                    "frame": ("exposure", series[0][0][:n])})
        ds["strehl_frame"] = (("law", "exposure"), np.stack([v[:n] for _, v in series]))
        units = {"residual_rms": "rad", "residual_opd_rms": "m", "loop_rate_hz": "Hz",
                 "latency_p50_s": "s", "latency_p99_s": "s"}
        for k, u in units.items():
            ds[k].attrs["units"] = u
        ds.attrs.update(frames=int(frames), settle=int(settle), where=where,
                        wavelength_m=float(self.config["science"]["wavelength"]),
                        gain=self.gain)
        return ds

    def _exposure_after_rewind(self, settle: int, frames: int) -> dict[str, Any]:
        """Rewind, then a long exposure of exactly the frames ``settle`` to ``settle + frames
        - 1`` after the rewind: its quality, latency, late frames and short exposures."""
        cam = self.client("camera")
        first = self.rewind()
        start, stop = first + int(settle), first + int(settle) + int(frames)
        cam.other(f"science_window {start} {stop}")
        if stop - self.frame > 0:
            self.wait(stop - self.frame)
        deadline = time.monotonic() + 10.0
        while not (q := json.loads(cam.other("science_window"))):
            if time.monotonic() > deadline:
                raise TimeoutError("the camera did not close its exposure window")
            self._check_alive()
            time.sleep(0.005)
        rows = self.streams["frames"].get_history(min(self.frame - start + 2, frames + 64))
        late = {int(r[0, 0]): int(r[2, 0]) for r in rows}
        lat = self.latency(since=start - 1)
        sci = self.science()
        sel = sci.sel(frame=(sci.frame >= start) & (sci.frame < stop))
        return {"strehl": q["strehl"], "strehl_marechal": q["strehl_marechal"],
                "residual_rms": q["residual_rms"], "residual_opd_rms": q["residual_opd_rms"],
                "loop_rate_hz": lat["loop_rate_hz"], "latency_p50_s": lat["latency_p50_s"],
                "latency_p99_s": lat["latency_p99_s"],
                "late": late.get(stop - 1, q["late"]) - late.get(start - 1, 0),
                "series": (sel.frame.values - first, sel.strehl_frame.values)}

    def save_calibration(self, path: str | os.PathLike) -> str:
        """Save the loop's calibration (matrices, modal basis, reference slopes) to ``path``
        (``.npz``); ``AOLoop(..., calibration=path)`` (or ``[calibration] file``) starts a
        loop with it instead of measuring one. Returns the path."""
        if not isinstance(self.calibration, Calibration):
            raise RuntimeError("the loop is not calibrated yet: start it first")
        return self.calibration.save(path)

    def wait(self, frames: int, timeout: float | None = None) -> int:
        """Wait until the camera has produced ``frames`` more frames; the frame reached.

        Raises
        ------
        TimeoutError
            Not reached within ``timeout`` seconds (default: 60 s plus 50 ms a frame).
        RuntimeError
            A component process died (named at once, with its exit status) or went to its
            Error state (the reason is given).
        """
        return self._wait(frames, timeout, None)

    def _wait(self, frames: int, timeout: float | None, status) -> int:
        self._check_running()
        fr = self.streams["frames"]
        start = int(fr.get_counter())
        target = start + int(frames)
        timeout = 60.0 + 0.05 * frames if timeout is None else timeout
        now = time.monotonic()
        deadline, last, t_last = now + timeout, -1, now
        while (n := int(fr.get_counter())) < target:
            if self._cancel.is_set():
                raise RuntimeError("the loop was closed while waiting for frames")
            self._check_alive()
            self._check_errors()
            now = time.monotonic()
            if n != last:
                last, t_last = n, now
                if status is not None:
                    status.set_progress((n - start) / max(1, target - start),
                                        f"frame {n} of {target}")
            elif now - t_last > 1.0:  # stalled: ask the components themselves
                self._check_components()
                t_last = now
            if now > deadline:
                raise TimeoutError(
                    f"the loop reached frame {n} of {target} in {timeout:.0f} s and no "
                    "component process died or is in Error: it is slower than that (pass a "
                    "longer timeout=) or stalled (see ao.health() and ao.latency())")
            time.sleep(0.01)
        return n

    def _check_components(self) -> None:
        """Raise RuntimeError naming the components in their Error state, with the reason."""
        errors = []
        for role in ROLES:
            c = self.client(role)
            if c.state() == "Error":
                errors.append(f"{self.config['components'][role]['name']}: "
                              f"{c.query('error_reason')}")
        if errors:
            raise RuntimeError("the loop stopped, a component failed: " + "; ".join(errors))

    def expose(self, frames: int, wait: bool = True) -> dict[str, Any] | Status:
        """A long exposure of the science camera over the next ``frames`` frames.

        Parameters
        ----------
        frames : int
            Camera frames to expose for.
        wait : bool
            Block until done and return the result; False: return a
            :class:`dao.runtime.Status` at once (``progress``: the fraction of the frames
            done; result: the dict below).

        Returns
        -------
        dict or dao.runtime.Status
            ``strehl`` (peak), ``strehl_marechal``, ``residual_rms`` (rad), ``residual_opd_rms``
            (m), ``wavelength`` (m), ``n_frames`` (exposures summed, one every
            ``science.every`` frames), ``frame``, ``time`` (simulated s), ``late`` (frames
            whose command came too late); or (``wait=False``) the exposure's status, whose
            result is that dict.

        Raises
        ------
        RuntimeError
            The loop is not running, or a component process died or went to Error.
        TimeoutError
            The frames did not come within 60 s plus 50 ms a frame.
        """
        if not wait:
            from dao.runtime.status import Status

            self._check_running()
            return Status.run(lambda st: self._expose(frames, st),
                              name=f"expose {frames} frames")
        return self._expose(frames, None)

    def _expose(self, frames: int, status) -> dict[str, Any]:
        cam = self.client("camera")
        cam.other("science_reset")
        self._wait(frames, None, status)
        return json.loads(cam.other("science"))

    def timing(self, role: str, frames: int | None = None) -> dict[str, np.ndarray]:
        """The per-frame timing records of component ``role`` (its timing stream's history).

        Returns
        -------
        dict of str to numpy.ndarray
            One int64 array per field of :data:`dao.runtime.TIMING_FIELDS` (``input_cnt0``,
            ``start_ns``, ``end_ns``, ``frame_id``: the camera frame number), oldest first,
            plus ``processing_ns`` (``end_ns - start_ns``).
        """
        from dao.runtime.component import TIMING_FIELDS
        from dao.streams import shm

        if role not in self.timing_streams:
            raise ValueError(f"unknown role {role!r}: one of {', '.join(self.timing_streams)}"
                             if self.timing_streams else "the loop was not started")
        s = self.streams.get(f"timing_{role}")
        if s is None:
            s = self.streams[f"timing_{role}"] = shm(
                _stream_file(self.stream_dir, self.timing_streams[role]))
        have = s.frames_available
        n = have if frames is None else min(int(frames), have)
        rows = s.get_history(n)[:, :, 0] if n else np.zeros((0, len(TIMING_FIELDS)), np.int64)
        out = {f: rows[:, i].copy() for i, f in enumerate(TIMING_FIELDS)}
        out["processing_ns"] = out["end_ns"] - out["start_ns"]
        return out

    # -- measurements ----------------------------------------------------------------------
    def science(self, frames: int | None = None) -> xarray.Dataset:
        """Short-exposure image quality, one row per science exposure.

        Parameters
        ----------
        frames : int, optional
            Exposures to return (default all in the history).

        Returns
        -------
        xarray.Dataset
            Variables ``strehl_frame``, ``residual_rms_frame`` (rad) and the running long
            exposure's ``strehl``, ``strehl_marechal``, ``residual_rms``, ``n_frames``;
            coordinates ``frame`` (camera frame number) and ``time`` (simulated s).

        Raises
        ------
        RuntimeError
            No science exposure yet.
        """
        import xarray as xr

        from dao.loop.components import SCIENCE_FIELDS

        s = self.streams["science"]
        have = s.frames_available
        if have == 0:
            raise RuntimeError("no science exposure yet: wait for a few frames")
        n = have if frames is None else min(int(frames), have)
        data = s.get_history(n)[:, :, 0]
        col = {f: data[:, i] for i, f in enumerate(SCIENCE_FIELDS)}
        return xr.Dataset(
            {f: ("frame", col[f]) for f in SCIENCE_FIELDS if f not in ("frame", "time")},
            coords={"frame": col["frame"].astype(np.int64),
                    "time": ("frame", col["time"], {"units": "s"})},
            attrs={"wavelength_m": float(self.config["science"]["wavelength"])})

    def psf(self, exposures: int = 50) -> xarray.DataArray:
        """The science camera's long exposure: the mean of its last ``exposures`` PSFs.

        Normalised so that the diffraction limit peaks at 1 (the peak is the Strehl ratio).

        Parameters
        ----------
        exposures : int
            PSFs averaged (one every ``science.every`` frames; at most the ``psf`` stream's
            history).

        Returns
        -------
        xarray.DataArray
            Dimensions ``y``, ``x`` with coordinates in ``lambda / D`` from the centre;
            attributes ``wavelength_m``, ``exposures``, ``strehl``, ``frames`` (first and last
            camera frame).

        Raises
        ------
        RuntimeError
            No science exposure yet.
        """
        import xarray as xr

        s = self.streams["psf"]
        have = s.frames_available
        if have < 1:
            raise RuntimeError("no science exposure yet: wait for a few frames")
        hist = s.get_history(min(int(exposures), have), meta=True)
        n = len(hist)
        data = hist.data.mean(axis=0)
        frames = hist.cnt2
        per = float(self.calibration["psf_sampling"])
        ny, nx = data.shape
        return xr.DataArray(
            data, dims=("y", "x"),
            coords={"y": (np.arange(ny) - ny // 2) / per, "x": (np.arange(nx) - nx // 2) / per},
            name="psf",
            attrs={"wavelength_m": float(self.config["science"]["wavelength"]),
                   "exposures": n, "strehl": float(data.max()), "units": "Strehl",
                   "frames": (int(frames[0]), int(frames[-1])) if frames.size else (0, 0)})

    def latency(self, since: int = 0) -> dict[str, float]:
        """Loop rate and per-stage latency of the frames after frame ``since`` in the history.

        Returns
        -------
        dict
            ``loop_rate_hz``; ``latency_p50_s`` and ``latency_p99_s`` (camera frame to DM
            command), the same for ``latency_camera_to_slopes`` and
            ``latency_slopes_to_command``; ``latency_samples``.
        """
        from dao.runtime.timing import pipeline_latency

        st = self.streams
        fr = st["frames"]
        rows = fr.get_history()[:, :, 0] if fr.frames_available else np.zeros((0, 2), np.int64)
        t_cam = {int(r[0]): int(r[1]) for r in rows if r[0] > since}
        stages = [(k, st[k].history_metadata()) for k in ("slopes", "dm_command")]
        r = pipeline_latency(t_cam, stages)
        return {
            "loop_rate_hz": r["rate_hz"],
            "latency_p50_s": r["latency_p50_s"],
            "latency_p99_s": r["latency_p99_s"],
            "latency_camera_to_slopes_p50_s": r["latency_source_to_slopes_p50_s"],
            "latency_camera_to_slopes_p99_s": r["latency_source_to_slopes_p99_s"],
            "latency_slopes_to_command_p50_s": r["latency_slopes_to_dm_command_p50_s"],
            "latency_slopes_to_command_p99_s": r["latency_slopes_to_dm_command_p99_s"],
            "latency_samples": r["latency_samples"],
        }

    def write_telemetry(self, path: str | os.PathLike) -> str:
        """Write the histories of ``slopes``, ``dm_command``, ``frames`` and ``science``.

        NetCDF, one group per stream (read it with :func:`dao.streams.telemetry.open_recording`);
        works while the loop runs or after :meth:`stop`. Returns the path.
        """
        from dao.streams.telemetry import write_history

        if not self.streams:
            raise RuntimeError("the loop was not started")
        write_history({k: self.streams[k] for k in ("slopes", "dm_command", "frames", "science")},
                      path)
        return str(path)


def kernel_threads(configured: int = 0) -> int:
    """Numba threads for each component's kernels: ``configured``, or for 0 half the cores
    this process may use (at least 1), since the loop's processes keep the others busy."""
    if configured > 0:
        return configured
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)

"""Control laws: slopes in, a DM command out, one frame at a time.

A control law is what the loop's controller runs each frame. The stock laws (selected by
``[controller] law``) are made of :mod:`dao.recon` pieces; a law of one's own is a subclass of
:class:`ControlLaw` (or a Numba function, wrapped by :class:`FunctionLaw`), written in a
notebook cell and swapped into the running loop by :meth:`dao.loop.AOLoop.swap`::

    class Leaky(ControlLaw):
        def __init__(self, calibration, gain=0.4, leak=0.99):
            super().__init__(calibration)
            self.cm, self.gain, self.leak = calibration.control_matrix, gain, leak

        def step(self, slopes, command):          # command holds the command now applied
            command *= self.leak
            command -= self.gain * (self.cm @ slopes)

The contract of :meth:`ControlLaw.step`: ``slopes`` is the frame's slope vector (float32,
``(n_slopes,)``, x slopes then y slopes, the reference slopes already subtracted);
``command`` (float32, ``(n_actuators,)``, metres of OPD) holds the command the mirror has
now, and the law writes the next one into it, in place. So an integrator needs no state of
its own and a swap is bumpless: the first ``step`` of a new law starts from the command the
previous law left. A law with other state sets it from that command in :meth:`start`.

Sign convention (that of :mod:`dao.recon.control`): the control matrix applied to the slopes
is the residual in command space; an integrator subtracts ``gain`` times it.
"""

from __future__ import annotations

import inspect
import linecache
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ControlLaw", "ModalIntegrator", "Integrator", "PID", "PseudoOpenLoop",
           "FunctionLaw", "STOCK_LAWS", "stock_law", "as_law", "law_source"]


class ControlLaw:
    """Base class of a control law (see the module docstring for the contract).

    Parameters
    ----------
    calibration : dao.loop.Calibration
        The loop's calibration (matrices, modal basis, geometry).

    Attributes
    ----------
    calibration : dao.loop.Calibration
    n_slopes, n_actuators : int
    """

    #: The name shown by the loop (``AOLoop.controller``, the component's ``active_law``).
    name: str = ""

    def __init__(self, calibration: Any) -> None:
        self.calibration = calibration
        self.n_slopes = int(calibration["n_slopes"])
        self.n_actuators = int(calibration["n_actuators"])

    def start(self, command: np.ndarray) -> None:
        """Set the law's state to continue from ``command`` (the mirror's command now).

        Called before the law's first :meth:`step`, at each swap and when the loop is reset
        (with zeros). The default keeps nothing: right for any law whose state is the
        command itself.
        """

    def step(self, slopes: np.ndarray, command: np.ndarray) -> None:
        """One frame: write the next command into ``command`` (which holds the current one).

        Parameters
        ----------
        slopes : ndarray, float32, shape (n_slopes,)
        command : ndarray, float32, shape (n_actuators,)
        """
        raise NotImplementedError(f"{type(self).__name__}.step(slopes, command) is not written")

    def describe(self) -> str:
        """A one-line description (default: the class name)."""
        return self.name or type(self).__name__


def _vector(value: Any, n: int, name: str, low: float | None = 0.0) -> np.ndarray:
    a = np.asarray(value, dtype=np.float32)
    if a.ndim == 0:
        a = np.full(n, a, np.float32)
    if a.shape != (n,):
        raise ValueError(f"{name} has {a.size} values for {n} channels: give one number or "
                         f"{n} values")
    if not np.all(np.isfinite(a)) or (low is not None and np.any(a < low)):
        raise ValueError(f"{name} must be finite numbers >= {low}")
    return a.copy()


class ModalIntegrator(ControlLaw):
    """Leaky integrator on the modal coefficients, with a gain per mode.

    ``m = leak m - gain modal_gains (slopes_to_modes @ s)``, ``c = clip(modes @ m)``: with a
    leak common to every mode it is run in command space, ``c = clip(leak c - M s)`` with
    ``M = modes diag(gain modal_gains) slopes_to_modes``, one matrix-vector product a frame
    (as the zonal :class:`Integrator`, which it is with equal ``modal_gains``). ``M`` is
    remade by :meth:`set` (a few ms for 360 modes, in the caller's thread) and swapped in
    whole, so a change takes effect between two frames.

    Parameters
    ----------
    calibration : dao.loop.Calibration
    gain : float
        Loop gain (0: open).
    leak : float
        1: a pure integrator.
    modal_gains : float or array_like (n_modes,)
        Gain factor of each mode of the calibration's basis (``calibration.modes``). A mode
        whose factor is 0 is open: its coefficient is set to 0 and stays there (the
        telemetry shows its open-loop residual).
    """

    name = "modal"

    def __init__(self, calibration: Any, gain: float = 0.5, leak: float = 1.0,
                 modal_gains: Any = 1.0) -> None:
        from dao.recon import Integrator as _Integrator

        super().__init__(calibration)
        self.n_modes = int(calibration["n_modes"])
        self._modes = np.asarray(calibration["modes"], np.float64)
        self._s2m = np.asarray(calibration["slopes_to_modes"], np.float64)
        stroke = float(calibration["stroke"])
        # the integrator of the zonal law, fed with M s (its gain 1, the gains are in M)
        self.integrator = _Integrator(self.n_actuators, gain=1.0, leak=1.0, stroke=stroke)
        self.error = np.zeros(self.n_actuators, np.float32)
        self.gain, self.leak = 0.0, 1.0
        self.modal_gains = np.ones(self.n_modes, np.float32)
        self._open = np.zeros((self.n_actuators, 0), np.float32)  # modes kept at 0
        self._open_pending = False
        self.set(gain=gain, leak=leak, modal_gains=modal_gains)
        self._mvm(np.zeros(self.n_slopes, np.float32), out=self.error)  # compile/load kernels

    @property
    def coefficients(self) -> np.ndarray:
        """The modal coefficients of the command (``modes.T @ command``), float64."""
        return self._modes.T @ self.integrator.command

    def set(self, gain: float | None = None, leak: float | None = None,
            modal_gains: Any = None) -> None:
        """Change the gain, the leak or the per-mode gains (effective from the next frame)."""
        from dao.recon import MatrixVectorMultiply

        g = self.gain if gain is None else float(gain)
        mg = self.modal_gains if modal_gains is None else _vector(
            modal_gains, self.n_modes, "modal_gains")
        if leak is not None:
            a = np.asarray(leak, np.float64)
            if a.ndim or not 0.0 <= a <= 1.0:
                raise ValueError(f"leak = {leak!r}: give one number from 0 to 1 (the modal "
                                 "law's leak is common to every mode)")
            lk = float(a)
            self.integrator.leak = np.full(self.n_actuators, lk, np.float32)
            self.leak = lk
        m = (self._modes * (g * mg.astype(np.float64))) @ self._s2m
        self._mvm = MatrixVectorMultiply(m)  # swapped in whole: the next step uses it
        open_ = mg == 0
        if modal_gains is not None:
            self._open = np.ascontiguousarray(self._modes[:, open_], np.float32)
            self._open_pending = bool(open_.any())
        self.gain, self.modal_gains = g, mg

    def _zero_open_modes(self) -> None:
        o, c = self._open, self.integrator.command
        if o.shape[1]:
            c -= o @ (o.T @ c)

    def start(self, command: np.ndarray) -> None:
        # the command's part in the controlled modes (all of it when it came from one)
        self.integrator.command[:] = self._modes @ (self._modes.T @ command)
        self._zero_open_modes()

    def step(self, slopes: np.ndarray, command: np.ndarray) -> None:
        if self._open_pending:  # modes just opened: their coefficients to 0, once
            self._open_pending = False
            self._zero_open_modes()
        self._mvm(slopes, out=self.error)
        self.integrator.step(self.error)
        command[:] = self.integrator.command


class Integrator(ControlLaw):
    """Leaky integrator on the actuators: ``c = clip(leak c - gain R s)``.

    Parameters
    ----------
    calibration : dao.loop.Calibration
    gain : float or array_like (n_actuators,)
    leak : float or array_like (n_actuators,)
    """

    name = "integrator"

    def __init__(self, calibration: Any, gain: Any = 0.5, leak: Any = 1.0) -> None:
        from dao.recon import Integrator as _Integrator
        from dao.recon import MatrixVectorMultiply

        super().__init__(calibration)
        self._mvm = MatrixVectorMultiply(calibration["control_matrix"])
        self.error = np.zeros(self.n_actuators, np.float32)
        self.integrator = _Integrator(self.n_actuators, gain=gain, leak=leak,
                                      stroke=float(calibration["stroke"]))

    def set(self, gain: Any = None, leak: Any = None) -> None:
        """Change the gain or the leak (effective from the next frame: new arrays, swapped
        in whole)."""
        if gain is not None:
            self.integrator.gain = _vector(gain, self.n_actuators, "gain")
        if leak is not None:
            self.integrator.leak = _vector(leak, self.n_actuators, "leak")

    def start(self, command: np.ndarray) -> None:
        self.integrator.command[:] = command

    def step(self, slopes: np.ndarray, command: np.ndarray) -> None:
        self._mvm(slopes, out=self.error)
        self.integrator.step(self.error)
        command[:] = self.integrator.command


class PID(ControlLaw):
    """PID on the actuators: ``c = -(kp e + gain sum(e) + kd (e - e_prev))``, ``e = R s``.

    The integral gain is ``gain``, so ``gain`` closes and opens the loop as for the
    integrators. :meth:`start` sets the integral so that the first command continues from
    the current one.
    """

    name = "pid"

    def __init__(self, calibration: Any, gain: float = 0.5, kp: float = 0.0,
                 kd: float = 0.0) -> None:
        from dao.recon import PID as _PID
        from dao.recon import MatrixVectorMultiply

        super().__init__(calibration)
        self._mvm = MatrixVectorMultiply(calibration["control_matrix"])
        self.error = np.zeros(self.n_actuators, np.float32)
        self.pid = _PID(self.n_actuators, kp=kp, ki=gain, kd=kd)
        self.stroke = np.float32(calibration["stroke"])

    def set(self, gain: float | None = None, kp: float | None = None,
            kd: float | None = None) -> None:
        """Change the gains (effective from the next frame: new arrays, swapped in whole)."""
        for name, value in (("ki", gain), ("kp", kp), ("kd", kd)):
            if value is not None:
                setattr(self.pid, name, np.full(self.n_actuators, value, np.float32))

    def start(self, command: np.ndarray) -> None:
        ki = self.pid.ki
        self.pid.previous[:] = 0.0
        np.divide(-command, ki, out=self.pid.integral, where=ki != 0)
        self.pid.integral[ki == 0] = 0.0

    def step(self, slopes: np.ndarray, command: np.ndarray) -> None:
        self._mvm(slopes, out=self.error)
        self.pid.step(self.error)
        np.clip(self.pid.command, -self.stroke, self.stroke, out=command)


class PseudoOpenLoop(ControlLaw):
    """Pseudo-open-loop integrator (:class:`dao.recon.PseudoOpenLoopIntegrator`).

    ``c = (1 - g) c - g R (s - D c)``: the integrator acts on open-loop estimates of the
    wavefront, so the gain weighs the new estimate against the previous command.
    """

    name = "pol"

    def __init__(self, calibration: Any, gain: float = 0.5) -> None:
        from dao.recon import PseudoOpenLoopIntegrator

        super().__init__(calibration)
        self.pol = PseudoOpenLoopIntegrator(calibration["interaction_matrix"],
                                            calibration["control_matrix"], gain=gain,
                                            stroke=float(calibration["stroke"]))

    def set(self, gain: float | None = None) -> None:
        """Change the gain (effective from the next frame: a new array, swapped in whole)."""
        if gain is not None:
            self.pol.gain = np.full(self.n_actuators, gain, np.float32)

    def start(self, command: np.ndarray) -> None:
        self.pol.command[:] = command

    def step(self, slopes: np.ndarray, command: np.ndarray) -> None:
        self.pol.step(slopes)
        command[:] = self.pol.command


#: The stock laws by their ``[controller] law`` name, with the config keys each takes.
STOCK_LAWS: dict[str, tuple[type[ControlLaw], tuple[str, ...]]] = {
    "modal": (ModalIntegrator, ("gain", "leak", "modal_gains")),
    "integrator": (Integrator, ("gain", "leak")),
    "pid": (PID, ("gain", "kp", "kd")),
    "pol": (PseudoOpenLoop, ("gain",)),
}


def stock_law(name: str, calibration: Any, **settings: Any) -> ControlLaw:
    """The stock law ``name`` (:data:`STOCK_LAWS`) made with the settings it takes.

    ``settings`` may hold every ``[controller]`` key: each law takes its own (see
    :data:`STOCK_LAWS`) and ignores the others.

    Raises
    ------
    ValueError
        An unknown law.
    """
    if name not in STOCK_LAWS:
        raise ValueError(f"unknown control law {name!r}: one of {', '.join(STOCK_LAWS)}")
    cls, keys = STOCK_LAWS[name]
    return cls(calibration, **{k: settings[k] for k in keys if k in settings})


class FunctionLaw(ControlLaw):
    """A control law made of a function ``func(slopes, command, *args)`` (e.g. Numba's).

    The function writes the next command into ``command`` in place, as
    :meth:`ControlLaw.step`; ``args`` (arrays, numbers) are passed after them every frame.
    A function compiled with ``numba.njit(nogil=True)`` runs without the GIL.

    Parameters
    ----------
    calibration : dao.loop.Calibration
    func : callable
    *args
        Passed to ``func`` after ``slopes`` and ``command``.
    """

    def __init__(self, calibration: Any, func: Callable[..., Any], *args: Any) -> None:
        super().__init__(calibration)
        self.func, self.args = func, args
        self.name = getattr(func, "__name__", "function")

    def step(self, slopes: np.ndarray, command: np.ndarray) -> None:
        self.func(slopes, command, *self.args)


def as_law(law: Any, calibration: Any, *args: Any, **params: Any) -> ControlLaw:
    """A :class:`ControlLaw` from a law, a law class or a function.

    Parameters
    ----------
    law : ControlLaw, ControlLaw subclass, or callable
        A law (used as it is), a class (made as ``law(calibration, **params)``) or a
        function ``func(slopes, command, *args)`` (:class:`FunctionLaw`).

    Raises
    ------
    TypeError
        Anything else, or a law whose sizes are not the loop's.
    """
    if isinstance(law, type):
        if not issubclass(law, ControlLaw):
            raise TypeError(f"{law.__name__} is not a dao.loop.ControlLaw subclass: derive it "
                            "from ControlLaw and write step(self, slopes, command)")
        law = law(calibration, *args, **params)
    elif not isinstance(law, ControlLaw):
        if not callable(law):
            raise TypeError(f"{law!r} is not a control law: give a ControlLaw (or subclass) "
                            "or a function func(slopes, command, *args)")
        law = FunctionLaw(calibration, law, *args)
    elif args or params:
        raise TypeError("arguments are for a law class or a function, not for a law made "
                        "already")
    if (law.n_slopes, law.n_actuators) != (int(calibration["n_slopes"]),
                                           int(calibration["n_actuators"])):
        raise TypeError(f"the law {law.describe()} is made for {law.n_slopes} slopes and "
                        f"{law.n_actuators} actuators, the loop has {calibration['n_slopes']} "
                        f"and {calibration['n_actuators']}: make it with this loop's "
                        "calibration (ao.calibration)")
    return law


def law_source(obj: Any) -> str:
    """The source code of a class or function, also when defined in a notebook cell.

    ``inspect.getsource`` finds a function's cell through its code object; a class has none,
    so its source is found through one of its methods' code (the cell's lines are in
    :mod:`linecache`, where IPython puts every cell).

    Raises
    ------
    OSError
        No source can be found (a class made by ``type()``, a function typed at a plain
        ``python`` prompt).
    """
    func = getattr(obj, "py_func", obj)  # a Numba dispatcher: its Python function
    if not isinstance(func, type):
        return textwrap.dedent(inspect.getsource(func))
    try:
        return textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        pass
    for member in vars(func).values():
        code = getattr(getattr(member, "__func__", member), "__code__", None)
        if code is None:
            continue
        lines = linecache.getlines(code.co_filename)
        for i in range(min(code.co_firstlineno, len(lines)) - 1, -1, -1):
            stripped = lines[i].lstrip()
            if stripped.startswith(f"class {func.__name__}") and \
                    stripped[len(f"class {func.__name__}")] in "(:":
                return textwrap.dedent("".join(inspect.getblock(lines[i:])))
    raise OSError(f"no source found for {func.__qualname__}: define it in a notebook cell or "
                  "a file (not with type()), or give a module file 'laws.py:ClassName'")

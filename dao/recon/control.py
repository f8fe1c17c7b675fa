"""Control laws, each a small class holding preallocated state and a compiled step.

Sign convention: ``error`` is the measured residual in command space (e.g. the control matrix
applied to closed-loop slopes, ``error = R @ s`` with ``s = D @ (phase + command)``); the
controllers drive it to zero, e.g. the integrator does ``c[k] = leak * c[k-1] - g * e[k]``.
Gains, leaks and filter coefficients are per channel (mode or actuator) arrays; a scalar is
broadcast. Every ``step`` writes into preallocated arrays and allocates nothing.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit
from .mvm import mvm

__all__ = [
    "clip",
    "Integrator",
    "PID",
    "PseudoOpenLoopIntegrator",
    "IIRFilter",
    "HighPassFilter",
    "Combiner",
]


def _per_channel(value, n: int, name: str) -> np.ndarray:
    a = np.asarray(value, dtype=np.float32)
    if a.ndim == 0:
        return np.full(n, a, dtype=np.float32)
    if a.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {a.shape}")
    return a.copy()


@jit
def clip(command, low, high, out):  # pragma: no cover - compiled
    """Clip commands to a stroke limit, per actuator.

    Parameters
    ----------
    command : ndarray, float32, shape (n,)
        Commands (actuator units, e.g. microns or volts).
    low, high : ndarray, float32, shape (n,)
        Limits, same units.
    out : ndarray, float32, shape (n,)
        Written in place (may be ``command``).

    Returns
    -------
    int
        How many commands were clipped.
    """
    nclip = 0
    for i in range(command.size):
        v = command[i]
        if v > high[i]:
            v = high[i]
            nclip += 1
        elif v < low[i]:
            v = low[i]
            nclip += 1
        out[i] = v
    return nclip


@jit
def _integrate(error, gain, leak, low, high, state):  # pragma: no cover - compiled
    nclip = 0
    for i in range(state.size):
        v = leak[i] * state[i] - gain[i] * error[i]
        if v > high[i]:
            v = high[i]
            nclip += 1
        elif v < low[i]:
            v = low[i]
            nclip += 1
        state[i] = v
    return nclip


class Integrator:
    """Leaky integrator with per-channel gains and clipping (anti-windup).

    ``c[k] = clip(leak * c[k-1] - gain * e[k], -stroke, +stroke)``.

    Parameters
    ----------
    n : int
        Number of channels (modes or actuators).
    gain : float or array_like (n,)
        Loop gain(s), dimensionless.
    leak : float or array_like (n,)
        1 for a pure integrator; e.g. 0.99 for a leaky one.
    stroke : float or array_like (n,)
        Largest absolute command (command units); ``inf`` for none.

    Attributes
    ----------
    command : ndarray, float32, shape (n,)
        The integrated command (the controller's state).
    n_clipped : int
        Channels clipped at the last step.
    """

    def __init__(self, n: int, gain=0.5, leak=1.0, stroke=np.inf) -> None:
        self.n = int(n)
        self.gain = _per_channel(gain, n, "gain")
        self.leak = _per_channel(leak, n, "leak")
        s = _per_channel(stroke, n, "stroke")
        self.high, self.low = s, -s
        self.command = np.zeros(n, dtype=np.float32)
        self.n_clipped = 0

    def step(self, error: np.ndarray) -> np.ndarray:
        """Advance one frame with the residual ``error`` (shape (n,)); return :attr:`command`."""
        self.n_clipped = _integrate(error, self.gain, self.leak, self.low, self.high,
                                    self.command)
        return self.command

    def reset(self) -> None:
        """Zero the command."""
        self.command[:] = 0.0


@jit
def _pid(error, kp, ki, kd, integral, previous, out):  # pragma: no cover - compiled
    for i in range(out.size):
        e = error[i]
        integral[i] += e
        out[i] = -(kp[i] * e + ki[i] * integral[i] + kd[i] * (e - previous[i]))
        previous[i] = e


class PID:
    """Proportional-integral-derivative controller, per channel, in discrete time.

    ``c[k] = -(kp e[k] + ki sum_{j<=k} e[j] + kd (e[k] - e[k-1]))``; gains per frame.
    """

    def __init__(self, n: int, kp=0.0, ki=0.5, kd=0.0) -> None:
        self.n = int(n)
        self.kp = _per_channel(kp, n, "kp")
        self.ki = _per_channel(ki, n, "ki")
        self.kd = _per_channel(kd, n, "kd")
        self.integral = np.zeros(n, dtype=np.float32)
        self.previous = np.zeros(n, dtype=np.float32)
        self.command = np.zeros(n, dtype=np.float32)

    def step(self, error: np.ndarray) -> np.ndarray:
        """Advance one frame with residual ``error``; return :attr:`command`."""
        _pid(error, self.kp, self.ki, self.kd, self.integral, self.previous, self.command)
        return self.command

    def reset(self) -> None:
        """Zero the integral, the previous error and the command."""
        self.integral[:] = 0.0
        self.previous[:] = 0.0
        self.command[:] = 0.0


@jit
def _pol_combine(slopes, dm_slopes, pol):  # pragma: no cover - compiled
    for i in range(pol.size):
        pol[i] = slopes[i] - dm_slopes[i]


@jit
def _pol_update(estimate, gain, low, high, command):  # pragma: no cover - compiled
    nclip = 0
    for i in range(command.size):
        v = (1.0 - gain[i]) * command[i] - gain[i] * estimate[i]
        if v > high[i]:
            v = high[i]
            nclip += 1
        elif v < low[i]:
            v = low[i]
            nclip += 1
        command[i] = v
    return nclip


class PseudoOpenLoopIntegrator:
    """Pseudo-open-loop control: the integrator acts on open-loop estimates.

    With closed-loop slopes ``s = D (phase + c)``, the pseudo-open-loop slopes are
    ``s_pol = s - D c_applied``; ``phase_hat = R s_pol``; and
    ``c[k] = (1 - g) c[k-1] - g phase_hat`` (which equals the plain integrator when
    ``R D = I``). ``c_applied`` is the command in place during the exposure: the previous one
    (one frame of delay).

    Parameters
    ----------
    interaction : array_like, shape (n_slopes, n_act)
        ``D``: slopes per unit command.
    control : array_like, shape (n_act, n_slopes)
        ``R``: reconstructor.
    gain, stroke : float or array_like (n_act,)
    """

    def __init__(self, interaction, control, gain=0.5, stroke=np.inf) -> None:
        self.interaction = np.ascontiguousarray(interaction, dtype=np.float32)
        self.control = np.ascontiguousarray(control, dtype=np.float32)
        ns, na = self.interaction.shape
        if self.control.shape != (na, ns):
            raise ValueError(f"control matrix must have shape {(na, ns)}")
        self.gain = _per_channel(gain, na, "gain")
        s = _per_channel(stroke, na, "stroke")
        self.high, self.low = s, -s
        self.command = np.zeros(na, dtype=np.float32)
        self.pol_slopes = np.zeros(ns, dtype=np.float32)
        self.estimate = np.zeros(na, dtype=np.float32)
        self._dm = np.zeros(ns, dtype=np.float32)
        self.n_clipped = 0

    def step(self, slopes: np.ndarray) -> np.ndarray:
        """Advance one frame with the closed-loop ``slopes``; return :attr:`command`."""
        mvm(self.interaction, self.command, self._dm)
        _pol_combine(slopes, self._dm, self.pol_slopes)
        mvm(self.control, self.pol_slopes, self.estimate)
        self.n_clipped = _pol_update(self.estimate, self.gain, self.low, self.high,
                                     self.command)
        return self.command


@jit
def _iir(x, b, a, xh, yh, k, y):  # pragma: no cover - compiled
    # Direct form I. Ring buffers: x[k - j] in xh[(k - j) % nb], y[k - j] in yh[(k - j) % na].
    nb = b.shape[0]
    na = a.shape[0]
    n = x.size
    per_b = b.shape[1] > 1
    per_a = a.shape[1] > 1
    px = k % nb
    for i in range(n):
        xh[px, i] = x[i]
    for i in range(n):
        acc = 0.0
        for j in range(nb):
            bj = b[j, i] if per_b else b[j, 0]
            acc += bj * xh[(k - j) % nb, i]
        for j in range(1, na):
            aj = a[j, i] if per_a else a[j, 0]
            acc -= aj * yh[(k - j) % na, i]
        a0 = a[0, i] if per_a else a[0, 0]
        v = acc / a0
        yh[k % na, i] = v
        y[i] = v


class IIRFilter:
    """IIR filter of any order applied to ``n`` channels at once.

    ``a0 y[k] = sum_{j=0}^{nb-1} b_j x[k-j] - sum_{j=1}^{na-1} a_j y[k-j]``.

    Parameters
    ----------
    n : int
        Number of channels.
    b, a : array_like, shape (nb,) or (nb, n); (na,) or (na, n)
        Numerator and denominator coefficients (``a[0]`` normalises), shared or per channel.
    """

    def __init__(self, n: int, b, a=(1.0,)) -> None:
        self.n = int(n)
        b = np.asarray(b, dtype=np.float64)
        a = np.asarray(a, dtype=np.float64)
        self.b = np.ascontiguousarray(b.reshape(b.shape[0], -1))
        self.a = np.ascontiguousarray(a.reshape(a.shape[0], -1))
        for name, c in (("b", self.b), ("a", self.a)):
            if c.shape[1] not in (1, n):
                raise ValueError(f"{name} must have shape (order,) or (order, {n})")
        if np.any(self.a[0] == 0):
            raise ValueError("a[0] must not be 0")
        self._xh = np.zeros((self.b.shape[0], n))
        self._yh = np.zeros((self.a.shape[0], n))
        self._pos = 0
        self.output = np.zeros(n, dtype=np.float32)

    def step(self, x: np.ndarray) -> np.ndarray:
        """Filter one sample per channel; return :attr:`output` (float32, shape (n,))."""
        _iir(x, self.b, self.a, self._xh, self._yh, self._pos, self.output)
        self._pos += 1
        return self.output

    def reset(self) -> None:
        """Zero the filter's history."""
        self._xh[:] = 0.0
        self._yh[:] = 0.0
        self.output[:] = 0.0


class HighPassFilter(IIRFilter):
    """First-order high-pass filter (e.g. to bleed a slow offset out of a channel).

    ``y[k] = alpha (y[k-1] + x[k] - x[k-1])`` with ``alpha = 1 / (1 + 2 pi f_c / f_s)``.

    Parameters
    ----------
    n : int
        Number of channels.
    cutoff : float
        Cut-off frequency ``f_c``, Hz.
    rate : float
        Loop (sampling) frequency ``f_s``, Hz.
    """

    def __init__(self, n: int, cutoff: float, rate: float) -> None:
        alpha = 1.0 / (1.0 + 2.0 * math.pi * cutoff / rate)
        self.alpha = alpha
        super().__init__(n, b=[alpha, -alpha], a=[1.0, -alpha])


@jit
def _combine(channels, weights, low, high, out):  # pragma: no cover - compiled
    nch, n = channels.shape
    nclip = 0
    for i in range(n):
        v = np.float32(0.0)
        for c in range(nch):
            v += weights[c] * channels[c, i]
        if v > high[i]:
            v = high[i]
            nclip += 1
        elif v < low[i]:
            v = low[i]
            nclip += 1
        out[i] = v
    return nclip


class Combiner:
    """Sum of several command channels (loop, offsets, turbulence...), then clipping.

    Parameters
    ----------
    n : int
        Number of actuators.
    names : sequence of str
        Channel names, e.g. ``("loop", "offset", "turbulence")``.
    stroke : float or array_like (n,)
        Largest absolute total command.

    Attributes
    ----------
    channels : ndarray, float32, shape (n_channels, n)
        One row per channel; write into ``combiner[name]`` (a view of its row).
    weights : ndarray, float32, shape (n_channels,)
        Each channel's weight (1; set 0 to mute one).
    output : ndarray, float32, shape (n,)
        Last combined command.
    """

    def __init__(self, n: int, names=("loop", "offset"), stroke=np.inf) -> None:
        self.names = tuple(names)
        self.channels = np.zeros((len(self.names), n), dtype=np.float32)
        self.weights = np.ones(len(self.names), dtype=np.float32)
        s = _per_channel(stroke, n, "stroke")
        self.high, self.low = s, -s
        self.output = np.zeros(n, dtype=np.float32)
        self.n_clipped = 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.channels[self.names.index(name)]

    def __setitem__(self, name: str, value) -> None:
        self.channels[self.names.index(name)] = value

    def combine(self) -> np.ndarray:
        """Sum the channels into :attr:`output`, clip, and return it."""
        self.n_clipped = _combine(self.channels, self.weights, self.low, self.high,
                                  self.output)
        return self.output

"""Argument checks shared by the simulated devices' constructors: each refusal names the
argument, the value given and what is allowed."""

from __future__ import annotations

import math
import numbers
from typing import Any


def checked_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int, if it is an integer (not a bool, a float or a string) >= ``low``.

    The argument checks of the simulated devices' constructors (here with
    :func:`circular_pupil`, which every device shares).

    Raises
    ------
    ValueError
        Naming ``name``, the value and what is allowed.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} = {value!r}: must be an integer >= {low}")
    return int(value)


def checked_number(name: str, value: Any, *, gt: float | None = None, ge: float | None = None,
                   lt: float | None = None, le: float | None = None, unit: str = "") -> float:
    """``value`` as a float, if it is a finite real number within the bounds given.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
        The value given.
    gt, ge, lt, le : float, optional
        Bounds: ``value > gt``, ``>= ge``, ``< lt``, ``<= le``.
    unit : str
        What the number is, for the message (e.g. ``"Hz"``).

    Raises
    ------
    ValueError
        Naming ``name``, the value and what is allowed.
    """
    bounds = [(op, b) for op, b in (("> ", gt), (">= ", ge), ("< ", lt), ("<= ", le))
              if b is not None]
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value)
          and (gt is None or value > gt) and (ge is None or value >= ge)
          and (lt is None or value < lt) and (le is None or value <= le))
    if not ok:
        allowed = " and ".join(f"{op}{b:g}" for op, b in bounds)
        raise ValueError(f"{name} = {value!r}: must be "
                         + (f"a number {allowed}" if bounds else "a finite number")
                         + (f" ({unit})" if unit else ""))
    return float(value)


def _check_detector(flux: Any, background: Any, read_noise: Any, obscuration: Any,
                    min_fill: Any, frame_rate: Any) -> None:
    """The argument checks that the Shack-Hartmann and the pyramid share."""
    checked_number("flux", flux, ge=0, unit="photons per frame")
    checked_number("background", background, ge=0, unit="photons per pixel per frame")
    checked_number("read_noise", read_noise, ge=0, unit="e- rms")
    checked_number("obscuration", obscuration, ge=0, lt=1, unit="fraction of the diameter")
    checked_number("min_fill", min_fill, ge=0, le=1, unit="illuminated fraction")
    checked_number("frame_rate", frame_rate, gt=0, unit="frames per second, Hz")

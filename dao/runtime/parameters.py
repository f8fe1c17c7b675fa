"""Published parameters: typed, bounded, documented values a component exposes to operators.

Declare them as class attributes of a :class:`dao.runtime.component.Component` (or any class)::

    class Integrator(Component):
        gain = Parameter(0.5, float, unit="", bounds=(0, 1), doc="loop gain")
        leak = Parameter(0.99, float, bounds=(0, 1), doc="integrator leak factor")
        mode = Parameter("modal", str, choices=("modal", "zonal"), doc="control space")

Reading ``self.gain`` gives the current value; assigning validates it (type, bounds, choices,
an optional validator) and raises :class:`ParameterError` if refused. Over the command protocol
``SETUP gain=0.3`` parses the text with :meth:`Parameter.parse`, ``QUERY gain`` formats the value
with :meth:`Parameter.format`, and ``DUMP`` returns :func:`dump_parameters` as JSON.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dao.errors import DaoError

__all__ = [
    "Parameter",
    "ParameterError",
    "parameters",
    "dump_parameters",
    "describe_parameters",
]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class ParameterError(DaoError, ValueError):
    """A parameter value was refused (wrong type, out of bounds, unknown name...)."""


class Parameter:
    """A published parameter (a data descriptor).

    Parameters
    ----------
    default : object
        Initial value (validated when the class is created).
    type : type
        ``float``, ``int``, ``bool``, ``str``, ``list`` or ``np.ndarray``; values are coerced
        to it (an int given for a float parameter is accepted, ``"0.3"`` is not: text is parsed
        only by :meth:`parse`).
    unit : str
        Physical unit, SI (``"s"``, ``"m"``, ``"rad"``; ``""`` for dimensionless).
    bounds : (low, high), optional
        Inclusive bounds; either may be ``None``.
    choices : sequence, optional
        The allowed values.
    doc : str
        One-line description shown by DUMP and in notebooks.
    validator : callable, optional
        ``validator(owner, value)`` that raises (any exception) or returns a replacement value
        (or ``None`` to keep it); for checks that depend on other parameters.
    readonly : bool
        Refuse changes from SETUP (the component itself may still assign it).
    on_change : callable, optional
        ``on_change(owner, old, new)`` after every accepted change.

    Notes
    -----
    After every accepted change the owner's ``_parameter_changed(name, old, new)`` method is
    called if it has one: a :class:`dao.runtime.component.Component` publishes a
    ``parameter`` event from it.
    """

    def __init__(
        self,
        default: Any,
        type: type = float,
        *,
        unit: str = "",
        bounds: tuple[Any, Any] | None = None,
        choices: Sequence[Any] | None = None,
        doc: str = "",
        validator: Callable[[Any, Any], Any] | None = None,
        readonly: bool = False,
        on_change: Callable[[Any, Any, Any], Any] | None = None,
    ):
        self.type = type
        self.unit = unit
        self.bounds = bounds
        self.choices = tuple(choices) if choices is not None else None
        self.doc = doc
        self.validator = validator
        self.readonly = readonly
        self.on_change = on_change
        self.name = "?"
        self.default = self.coerce(default)
        self._lock = threading.Lock()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self.name, self.default)

    def __set__(self, obj: Any, value: Any) -> None:
        new = self.validate(value, obj)
        with self._lock:
            old = obj.__dict__.get(self.name, self.default)
            obj.__dict__[self.name] = new
        if self.on_change is not None:
            self.on_change(obj, old, new)
        notify = getattr(obj, "_parameter_changed", None)
        if notify is not None:
            notify(self.name, old, new)

    def _refuse(self, value: Any, why: str) -> ParameterError:
        return ParameterError(f"parameter {self.name!r}: {value!r} refused: {why}")

    def coerce(self, value: Any) -> Any:
        """Convert ``value`` to the parameter's type (no text parsing), or raise."""
        t = self.type
        try:
            if t is bool:
                if isinstance(value, bool | np.bool_):
                    return bool(value)
                if isinstance(value, int | np.integer) and value in (0, 1):
                    return bool(value)
                raise self._refuse(value, "expected a bool")
            if t is int:
                if isinstance(value, bool) or not isinstance(value, int | np.integer | float):
                    raise self._refuse(value, "expected an int")
                if isinstance(value, float) and not value.is_integer():
                    raise self._refuse(value, "expected an int, got a fractional number")
                return int(value)
            if t is float:
                if isinstance(value, bool) or not isinstance(
                    value, int | float | np.integer | np.floating
                ):
                    raise self._refuse(value, "expected a number")
                out = float(value)
                if math.isnan(out):
                    raise self._refuse(value, "NaN is not a valid value")
                return out
            if t is str:
                if not isinstance(value, str):
                    raise self._refuse(value, "expected a string")
                return value
            if t is np.ndarray:
                return np.array(value)
            if t is list:
                return list(value)
            return value if isinstance(value, t) else t(value)
        except ParameterError:
            raise
        except (TypeError, ValueError) as exc:
            raise self._refuse(value, f"expected {getattr(t, '__name__', t)}: {exc}") from exc

    def validate(self, value: Any, owner: Any = None) -> Any:
        """Coerce and check ``value``; return the value to store or raise ParameterError."""
        v = self.coerce(value)
        if self.bounds is not None:
            lo, hi = self.bounds
            arr = np.asarray(v)
            if lo is not None and np.any(arr < lo):
                raise self._refuse(value, f"below the lower bound {lo}{self._u()}")
            if hi is not None and np.any(arr > hi):
                raise self._refuse(value, f"above the upper bound {hi}{self._u()}")
        if self.choices is not None and v not in self.choices:
            raise self._refuse(value, f"not one of {list(self.choices)}")
        if self.validator is not None and owner is not None:
            try:
                out = self.validator(owner, v)
            except ParameterError:
                raise
            except Exception as exc:  # noqa: BLE001 - a user validator says no its own way
                raise self._refuse(value, str(exc) or type(exc).__name__) from exc
            if out is not None:
                v = out
        return v

    def _u(self) -> str:
        return f" {self.unit}" if self.unit else ""

    def parse(self, text: str) -> Any:
        """Parse the text of a SETUP command into a value of this parameter's type.

        Numbers, ``true``/``false``/``on``/``off``, strings as given (or JSON-quoted), and JSON
        lists for ``list``/``ndarray`` parameters.
        """
        s = text.strip()
        t = self.type
        try:
            if t is bool:
                if s.lower() in _TRUE:
                    return True
                if s.lower() in _FALSE:
                    return False
                raise self._refuse(text, "expected true/false")
            if t is int:
                f = float(s)
                if not f.is_integer():
                    raise self._refuse(text, "expected an int")
                return int(f)
            if t is float:
                return float(s)
            if t is str:
                if len(s) >= 2 and s[0] == s[-1] == '"':
                    return json.loads(s)
                return text
            return json.loads(s)
        except ParameterError:
            raise
        except ValueError as exc:
            raise self._refuse(text, f"cannot parse as {getattr(t, '__name__', t)}") from exc

    def format(self, value: Any) -> str:
        """The text form of ``value`` (a QUERY reply): ``repr``-exact floats, JSON otherwise."""
        if isinstance(value, np.ndarray):
            return json.dumps(value.tolist())
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return repr(value)
        if isinstance(value, str):
            return value
        try:
            return json.dumps(value)
        except TypeError:
            return str(value)

    def describe(self, owner: Any = None) -> dict[str, Any]:
        """A JSON-ready description: value, default, type, unit, bounds, choices, doc."""
        value = self.__get__(owner) if owner is not None else self.default
        return {
            "value": _jsonable(value),
            "default": _jsonable(self.default),
            "type": getattr(self.type, "__name__", str(self.type)),
            "unit": self.unit,
            "bounds": list(self.bounds) if self.bounds is not None else None,
            "choices": list(self.choices) if self.choices is not None else None,
            "doc": self.doc,
            "readonly": self.readonly,
        }

    def __repr__(self) -> str:
        return (
            f"Parameter({self.name}={self.default!r}, {getattr(self.type, '__name__', '?')}"
            f"{', unit=' + repr(self.unit) if self.unit else ''})"
        )


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def parameters(obj: Any) -> dict[str, Parameter]:
    """The published parameters of a class or instance, ``{name: Parameter}``, in MRO order."""
    cls = obj if isinstance(obj, type) else type(obj)
    out: dict[str, Parameter] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            if isinstance(attr, Parameter):
                out[name] = attr
    return out


def dump_parameters(obj: Any) -> dict[str, Any]:
    """Current values of every published parameter of ``obj``, JSON-ready."""
    return {name: _jsonable(p.__get__(obj)) for name, p in parameters(obj).items()}


def describe_parameters(obj: Any) -> dict[str, dict[str, Any]]:
    """:meth:`Parameter.describe` of every published parameter of ``obj``."""
    return {name: p.describe(obj) for name, p in parameters(obj).items()}

"""Validation of notebook parameters, before any compute starts.

Every notebook's ``parameters`` cell is checked against a specification; a bad value stops
the notebook with a :class:`ParameterError` that names the parameter and says what is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ParameterError(ValueError):
    """A notebook parameter has an invalid value."""


@dataclass(frozen=True)
class Spec:
    """What a parameter may be.

    Parameters
    ----------
    kind : type or tuple of types
        ``int``, ``float`` (ints accepted), ``str``, ``bool`` or ``list``.
    minimum, maximum : number, optional
        Inclusive bounds (for lists: bounds of every item).
    choices : tuple, optional
        The allowed values (for lists: allowed items).
    item : type, optional
        Type of the items of a list.
    min_length : int
        Minimum length of a list.
    """

    kind: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    item: Any = None
    min_length: int = 0

    def describe(self) -> str:
        kind = self.kind.__name__ if isinstance(self.kind, type) else str(self.kind)
        parts = [f"a list of {self.item.__name__}" if self.kind is list and self.item else kind]
        if self.minimum is not None:
            parts.append(f">= {self.minimum}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        if self.min_length:
            parts.append(f"with at least {self.min_length} item(s)")
        return " ".join(parts)


def _scalar_ok(value, kind, spec: Spec) -> bool:
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        return False
    if spec.choices is not None and value not in spec.choices:
        return False
    if spec.minimum is not None and value < spec.minimum:
        return False
    return spec.maximum is None or value <= spec.maximum


def check(name: str, value, spec: Spec):
    """Return ``value`` if it satisfies ``spec``, else raise ParameterError naming ``name``."""
    if spec.kind is list:
        ok = isinstance(value, (list, tuple)) and len(value) >= spec.min_length and all(
            _scalar_ok(v, spec.item, spec) for v in value)
    else:
        ok = _scalar_ok(value, spec.kind, spec)
    if not ok:
        raise ParameterError(f"parameter {name!r} must be {spec.describe()}; got {value!r}")
    return value


def validate(values: dict, specs: dict[str, Spec]) -> dict:
    """Check every parameter in ``specs``; unknown or missing names are errors too."""
    missing = sorted(set(specs) - set(values))
    if missing:
        raise ParameterError(f"missing parameter(s): {', '.join(missing)}")
    for name, spec in specs.items():
        check(name, values[name], spec)
    return {name: values[name] for name in specs}


def require(condition: bool, name: str, message: str) -> None:
    """A cross-parameter check: raise ParameterError naming ``name`` unless ``condition``."""
    if not condition:
        raise ParameterError(f"parameter {name!r}: {message}")


def describe(values: dict) -> str:
    """The resolved configuration, one ``name = value`` per line."""
    width = max(map(len, values), default=0)
    return "\n".join(f"{name:<{width}} = {value!r}" for name, value in values.items())

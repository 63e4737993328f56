"""Validation of notebook parameters, before any compute starts.

Every notebook's ``parameters`` cell is checked against a specification; a bad value stops
the notebook with a :class:`ParameterError` that names the parameter, shows the value and
says what is valid. Non-finite numbers (NaN, infinity) are refused everywhere, also inside
lists and mappings: a comparison with NaN is always false, so a range check alone would let
them through.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
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
        ``int``, ``float`` (ints accepted), ``str``, ``bool``, ``list`` or ``dict``.
    minimum, maximum : number, optional
        Inclusive bounds (for lists: bounds of every item).
    greater_than, less_than : number, optional
        Exclusive bounds (a learning rate is ``greater_than=0``).
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
    greater_than: float | None = None
    less_than: float | None = None

    def describe(self) -> str:
        kind = self.kind.__name__ if isinstance(self.kind, type) else str(self.kind)
        parts = [f"a list of {self.item.__name__}" if self.kind is list and self.item else kind]
        bounds = [f"{symbol} {bound}" for symbol, bound in (
            (">=", self.minimum), (">", self.greater_than), ("<=", self.maximum),
            ("<", self.less_than)) if bound is not None]
        if bounds:
            parts.append(" and ".join(bounds))
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        if self.min_length:
            parts.append(f"with at least {self.min_length} item(s)")
        return " ".join(parts)


def non_finite(value, where: str = "") -> str | None:
    """Where in ``value`` (a number, or lists and mappings of them) the first NaN or infinite
    number is (``""`` for ``value`` itself, ``"[2]"``, ``"['a']"``), or None if there is none."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        items: Iterable = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


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
    if kind not in (int, float):
        return True
    return ((spec.minimum is None or value >= spec.minimum)
            and (spec.maximum is None or value <= spec.maximum)
            and (spec.greater_than is None or value > spec.greater_than)
            and (spec.less_than is None or value < spec.less_than))


def check(name: str, value, spec: Spec):
    """Return ``value`` if it satisfies ``spec``, else raise ParameterError naming ``name``,
    the value and what is valid. A NaN or infinity anywhere in ``value`` is refused."""
    where = non_finite(value)
    if where is not None:
        shown = f"{value!r}" if not where else f"{value!r} (item {where} is not finite)"
        raise ParameterError(f"parameter {name!r} must be {spec.describe()} (NaN and infinity "
                             f"are refused); got {shown}")
    if spec.kind is list:
        ok = isinstance(value, (list, tuple)) and len(value) >= spec.min_length
        bad = [i for i, v in enumerate(value) if not _scalar_ok(v, spec.item, spec)] if ok else []
        if ok and bad:
            raise ParameterError(f"parameter {name!r} must be {spec.describe()}; got {value!r} "
                                 f"(item [{bad[0]}] = {value[bad[0]]!r})")
    else:
        ok = _scalar_ok(value, spec.kind, spec)
    if not ok:
        raise ParameterError(f"parameter {name!r} must be {spec.describe()}; got {value!r}")
    return value


def validate(values: dict, specs: dict[str, Spec]) -> dict:
    """Check every parameter in ``specs``; unknown or missing names are errors too."""
    refuse_unknown(values, specs)
    missing = sorted(set(specs) - set(values))
    if missing:
        raise ParameterError(f"missing parameter(s): {', '.join(missing)}")
    for name, spec in specs.items():
        check(name, values[name], spec)
    return {name: values[name] for name in specs}


def refuse_unknown(names: Iterable[str], specs: dict, origin: str = "") -> None:
    """Raise ParameterError if a name is not in ``specs``, suggesting the closest valid
    name (a misspelt ``n_seed`` would otherwise run with the defaults)."""
    unknown = sorted(set(names) - set(specs))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = " or ".join(map(repr, difflib.get_close_matches(name, list(specs), n=2)))
        hints.append(f"{name!r}" + (f" (did you mean {close}?)" if close else ""))
    raise ParameterError(f"unknown parameter(s) {', '.join(hints)}{origin}; valid: "
                         f"{', '.join(sorted(specs))}")


def require(condition: bool, name: str, message: str) -> None:
    """A cross-parameter check: raise ParameterError naming ``name`` unless ``condition``."""
    if not condition:
        raise ParameterError(f"parameter {name!r}: {message}")


def check_model(parameter: str, value, name: str, options: dict, input_shape,
                num_classes: int) -> None:
    """Refuse ``value`` of ``parameter`` unless model ``name`` with ``options`` builds for
    ``input_shape`` and carries one input through (a forward pass of zeros, before any
    compute: e.g. a VGG with more poolings than the image has pixels), with no layer of zero
    width."""
    import warnings

    import torch

    from growcore.models.factory import build_named

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-element tensors: refused just below
            model = build_named(name, input_shape, num_classes, **options)
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ParameterError(f"parameter {parameter!r}: the model {name} built from {value!r} "
                             f"cannot take inputs of shape {tuple(input_shape)}: {first}"
                             ) from error
    empty = [n for n, p in model.named_parameters() if p.numel() == 0]
    if empty:
        raise ParameterError(f"parameter {parameter!r}: {value!r} gives the model {name} "
                             f"layers of zero width ({empty[0]})")


def describe(values: dict) -> str:
    """The resolved configuration, one ``name = value`` per line."""
    width = max(map(len, values), default=0)
    return "\n".join(f"{name:<{width}} = {value!r}" for name, value in values.items())

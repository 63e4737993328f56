"""The book's one way of stating uncertainty (the intro states it for the reader).

- A quantity measured over seeds is given as the mean with its 95 % t interval over the seeds
  (:func:`mean_interval`); runs that pair by seed (same data, same initial network) are
  compared by the paired differences (:func:`paired_difference`), never by two unpaired
  intervals.
- A statistic with no t interval (an ROC AUC, a hit rate over networks) gets a percentile
  bootstrap interval over the independent units (:func:`bootstrap_interval`).
- A quantity shown on a log axis is summarised in log space (:func:`log_mean_interval`: the
  geometric mean with the interval of the mean log), so that a band never dives below zero.
- With fewer than :data:`MIN_BAND` seeds a figure shows the seeds themselves, not a band
  (:func:`growcore.plots.band`).

Every estimate carries its n and its method, and prints as ``mean [low, high] (n = N)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95  # of every interval in the book
BOOTSTRAP = 2000  # resamples of a bootstrap interval
MIN_BAND = 5  # fewer seeds than this: a figure draws the seeds, not a band
METHODS = ("t", "paired t", "bootstrap", "log t", "exact")


@dataclass(frozen=True)
class Estimate:
    """A number with its interval: ``mean`` and ``[low, high]`` at ``level`` over ``n``
    units (seeds, networks), computed by ``method`` (one of :data:`METHODS`). An interval
    that cannot be computed (n = 1) is NaN on both ends."""

    mean: float
    low: float
    high: float
    n: int
    method: str = "t"
    level: float = LEVEL

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")

    @property
    def half(self) -> float:
        """Half the width of the interval."""
        return (self.high - self.low) / 2

    def format(self, spec: str = ".3g") -> str:
        """``mean [low, high] (n = N)`` with every number formatted by ``spec``."""
        if math.isnan(self.low):
            return f"{self.mean:{spec}} (n = {self.n}, no interval)"
        if self.method == "exact":
            return f"{self.mean:{spec}} (exact, n = {self.n})"
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}] (n = {self.n})"

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict:
        return asdict(self)


def _values(values, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers (one per unit), got "
                         f"shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite, got {v[~np.isfinite(v)][:3].tolist()}")
    return v


def t_half_width(values, level: float = LEVEL) -> float:
    """Half-width of the t interval of the mean of ``values`` (NaN for a single value)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        return float("nan")
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))


def mean_interval(values, level: float = LEVEL) -> Estimate:
    """Mean of ``values`` (one per seed) with its t interval at ``level``."""
    v = _values(values)
    mean, half = float(v.mean()), t_half_width(v, level)
    return Estimate(mean, mean - half, mean + half, len(v), "t", level)


def paired_difference(a, b, level: float = LEVEL) -> Estimate:
    """Mean of the differences ``a[i] - b[i]`` (``a[i]`` and ``b[i]`` from the same seed)
    with its t interval at ``level``."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired values need one entry per seed each, got {a.shape} and "
                         f"{b.shape}")
    d = mean_interval(a - b, level)
    return Estimate(d.mean, d.low, d.high, d.n, "paired t", level)


def bootstrap_interval(values, level: float = LEVEL, resamples: int = BOOTSTRAP,
                       seed: int = 0) -> Estimate:
    """Mean of ``values`` with its percentile bootstrap interval (``resamples`` resamples
    of the units, seeded)."""
    v = _values(values)
    g = np.random.default_rng(seed)
    means = v[g.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(v.mean()), float(low), float(high), len(v), "bootstrap", level)


def log_mean_interval(values, level: float = LEVEL) -> Estimate:
    """Geometric mean of positive ``values`` with the t interval of the mean log, mapped
    back (the summary of a quantity shown on a log axis)."""
    v = _values(values)
    if (v <= 0).any():
        raise ValueError("values on a log scale must be positive")
    m = mean_interval(np.log(v), level)
    return Estimate(math.exp(m.mean), math.exp(m.low) if m.n > 1 else float("nan"),
                    math.exp(m.high) if m.n > 1 else float("nan"), m.n, "log t", level)


def errorbar(values) -> tuple[float, float]:
    """The t interval of ``values`` as seaborn's ``errorbar=`` callable wants it."""
    e = mean_interval(values)
    return (e.mean, e.mean) if e.n < 2 else (e.low, e.high)

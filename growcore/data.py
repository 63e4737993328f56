"""Data sets of the study.

The spiral set is the one of the SensLI paper (section 3, Fig. 3.1), by the formula of the
authors' public code (which evaluates it in float32, this module in float64: differences of a
few float32 rounding units, about 4e-7), split by a seeded permutation so that the split is
the same on every machine (the public code's split depends on file-system order).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """A train/test split held as tensors (full-batch training needs no loader)."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    X_val: torch.Tensor | None = None   # validation hold-out (when-policies read its error)
    y_val: torch.Tensor | None = None

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Split:
        """The same split on ``device``, features cast to ``dtype`` if given."""
        def move(X: torch.Tensor | None, cast: bool = True) -> torch.Tensor | None:
            if X is None:
                return None
            return X.to(device=device, dtype=(dtype or X.dtype) if cast else X.dtype)

        def labels(y: torch.Tensor | None) -> torch.Tensor | None:
            return move(y, y is not None and y.is_floating_point())

        return dataclasses.replace(
            self, X_train=move(self.X_train), y_train=labels(self.y_train),
            X_test=move(self.X_test), y_test=labels(self.y_test), X_val=move(self.X_val),
            y_val=labels(self.y_val))

    def chunks(self, size: int):
        """The training set once, in order, in chunks of ``size`` examples (a full-data pass
        that fits in memory: weight chunk ``(X, y)`` by ``len(y) / n`` for the mean)."""
        n = len(self.y_train)
        for start in range(0, n, size):
            yield self.X_train[start:start + size], self.y_train[start:start + size]

    def minibatches(self, batch_size: int | None, generator: torch.Generator | None = None):
        """One epoch of training batches; ``batch_size=None`` gives the full batch once."""
        n = len(self.y_train)
        if batch_size is None or batch_size >= n:
            yield self.X_train, self.y_train
            return
        order = torch.randperm(n, generator=generator).to(self.y_train.device)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            yield self.X_train[index], self.y_train[index]


def spiral_points(n_per_class: int = 300, r0: float = 0.5, turns: float = 1.0):
    """The two noise-free spirals of SensLI section 3.

    For ``i = 0..N-1``: ``phi_i = 2 pi turns i / N``, ``r_i = r0 + turns i / N``; class 0 is
    ``-r_i (cos phi_i, sin phi_i)`` and class 1 is ``+r_i (cos phi_i, sin phi_i)``.

    Returns
    -------
    X : ndarray of shape (2 N, 2), float64
    y : ndarray of shape (2 N,), int64 (class 0 first, then class 1)
    """
    i = np.arange(n_per_class)
    phi = 2 * math.pi * turns * i / n_per_class
    r = r0 + turns * i / n_per_class
    arm = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)
    X = np.concatenate([-arm, arm])
    y = np.concatenate([np.zeros(n_per_class), np.ones(n_per_class)]).astype(np.int64)
    return X, y


def spiral(n_per_class: int = 300, test_fraction: float = 0.25, seed: int = 0,
           r0: float = 0.5, turns: float = 1.0, dtype: torch.dtype = torch.float32) -> Split:
    """The SensLI spiral set split into train and test by a seeded, portable permutation.

    With the defaults: 600 points, 450 for training and 150 for testing, as in the paper.
    NumPy's PCG64 generator gives the same permutation on every platform.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an int >= 1, got {n_per_class!r}")
    if not all(math.isfinite(v) for v in (r0, turns)):
        raise ValueError(f"r0 and turns must be finite, got r0={r0}, turns={turns}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    X, y = spiral_points(n_per_class, r0, turns)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    as_x = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Split(as_x(X[train]), as_y(y[train]), as_x(X[test]), as_y(y[test]))


def teacher_student(widths: list[int], n: int, seed: int, dtype=torch.float32):
    """GradMax's teacher-student task (section 4.1): inputs N(0, 1), targets from a teacher
    MLP ``widths`` (e.g. 20:10:10) with weights U[-1, 1]; a test set of equal size.

    Returns
    -------
    split : Split
        ``n`` training and ``n`` test points (regression targets).
    teacher : growcore.models.mlp.MLP
    """
    from growcore.models.mlp import teacher  # models build on data, not the reverse

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (points of each part) must be an int >= 1, got {n!r}")
    if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                              for w in widths):
        raise ValueError(f"widths must be at least two ints >= 1 (input ... output), "
                         f"got {widths!r}")
    g = torch.Generator().manual_seed(seed)
    net = teacher(widths, g)
    X = torch.randn(2 * n, widths[0], generator=g)
    with torch.no_grad():
        y = net(X)
    return Split(X[:n], y[:n], X[n:], y[n:]).to("cpu", dtype), net


@dataclass(frozen=True)
class SeedSplits(Split):
    """The data of every seed of a seed-batched model where each seed draws its own (the
    driver's ``data.per_seed``, e.g. a teacher per seed): every tensor ``[S, N, ...]``, seed
    ``i``'s split at index ``i`` (:meth:`seed`). The seed-batched models read per-seed inputs
    ``[S, N, d]`` and the losses per-seed targets, so such a split trains full-batch only."""

    @classmethod
    def stack(cls, splits: list[Split]) -> SeedSplits:
        """One seed-batched split from one split per seed (equal shapes)."""
        def stacked(name: str) -> torch.Tensor | None:
            values = [getattr(split, name) for split in splits]
            if all(value is None for value in values):
                return None
            shapes = {None if value is None else tuple(value.shape) for value in values}
            if len(shapes) != 1:
                raise ValueError(f"the seeds' {name} differ in shape: {sorted(map(str, shapes))}")
            return torch.stack(values)
        return cls(**{f.name: stacked(f.name) for f in dataclasses.fields(Split)})

    @property
    def n_seeds(self) -> int:
        return len(self.X_train)

    def seed(self, i: int) -> Split:
        """Seed ``i``'s split."""
        return Split(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[i]
                        for f in dataclasses.fields(Split)})

    def chunks(self, size: int):
        raise ValueError("per-seed data: iterate over the examples of one seed's split "
                         "(SeedSplits.seed(i))")

    def minibatches(self, batch_size: int | None, generator: torch.Generator | None = None):
        """The full batch of every seed; minibatches are refused (each seed would need its own
        order to match its run alone)."""
        if batch_size is not None and batch_size < self.X_train.shape[1]:
            raise ValueError("per-seed data of a seed-batched model trains full-batch "
                             f"(batch_size None), got batch_size {batch_size}")
        yield self.X_train, self.y_train

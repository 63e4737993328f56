"""The probe of a growth step: what its where-criterion and how-initialiser read.

The training loop builds one :class:`Probe` per growth step and hands it to the criterion and
then to the initialiser, so that both read the same training data with the loss the loop
trains with. Statistics that come for free during training (NAGN's activation-gradient
norms, the parameters' moving averages) are collected by observers that a part declares with
``observers()``; the loop attaches them (see :class:`growcore.plan.GrowthPlan`). Anything computed
from the data at growth time can be stored in :attr:`Probe.cache`, keyed by what it depends
on, so that a second part asking for it does not recompute it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from growcore.data import SeedSplits, Split
from growcore.losses import LOSSES

FULL_CHUNK = 1024  # examples per forward pass when the statistic covers the whole data set


@dataclass
class Probe:
    """Training data and loss of a growth step, and a cache shared by its parts.

    Attributes
    ----------
    split : Split
        The training data (``split.X_train``, ``split.y_train``) on the model's device.
    loss : str
        The training loss (a name of :data:`growcore.losses.LOSSES`).
    cache : dict
        Statistics computed during this growth step, by key.
    """

    split: Split | None = None
    loss: str = "cross_entropy"
    cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")

    def cached(self, key, compute):
        """``compute()`` once per key during this growth step."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def for_seed(self, i: int) -> Probe:
        """The probe of seed ``i``'s network when a seed-batched model grows one seed at a time
        (:func:`growcore.ops.widen_seeds`): that seed's data where the split holds every
        seed's (:class:`growcore.data.SeedSplits`), and a cache of its own (kept in this
        one's), so that the where-criterion and the initialiser of a seed share it and no seed
        reads another seed's statistics."""
        def make() -> Probe:
            split = self.split.seed(i) if isinstance(self.split, SeedSplits) else self.split
            return Probe(split, self.loss)
        return self.cached(("seed", i), make)


@contextlib.contextmanager
def unchanged_buffers(model: nn.Module):
    """Forward passes inside leave the model's buffers (BatchNorm running statistics) as
    they were: a statistic is read, the model is not trained."""
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


def data_of(stats: Probe | None, part) -> Split:
    """The training split of a probe, or an error naming the part (or its name) that needs
    it."""
    if stats is None or stats.split is None:
        name = part if isinstance(part, str) else type(part).__name__
        raise ValueError(f"{name} reads the training data: pass a "
                         "growcore.stats.Probe(split, loss) as stats")
    return stats.split


def loss_of(stats: Probe | None, loss: str | None) -> str:
    """A part's own loss if it names one, else the probe's (the loop's training loss)."""
    if loss is not None:
        return loss
    return stats.loss if stats is not None else "cross_entropy"

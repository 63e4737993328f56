"""The result of every growth operator: the grown model and the map from old to new parameters.

The same map carries the optimiser state across the change
(:func:`growcore.ops.optim.rebuild_optimizer`): old entries keep their state, new ones start at
zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class Growth:
    """Result of a growth operator.

    Attributes
    ----------
    model : torch.nn.Module
        The grown model (a new object; the old one is left unchanged).
    """

    model: torch.nn.Module

    def transport(self, old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map tensors shaped like the old parameters (by name) to the new parameters.

        Entries that are new after the change are zero. Applied to the optimiser's
        momentum or moment buffers this implements "old entries unchanged, new ones zero".
        """
        raise NotImplementedError

    def status(self, name: str) -> str:
        """Whether parameter ``name`` existed before the change.

        ``"old"``: unchanged in shape; ``"new"``: created by the change; ``"extended"``: an
        old tensor with new entries (a widened layer; its optimiser step count is kept);
        ``"mixed"``: old for some seeds of a seed-batched model and new for others.
        """
        raise NotImplementedError

    def source_of(self, name: str) -> str | None:
        """The old parameter whose scalar optimiser state (e.g. Adam's step) ``name`` keeps."""
        raise NotImplementedError

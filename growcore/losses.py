"""Losses of seed-batched models: one value per seed, so the seeds stay independent."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_seed_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each seed: logits [S, N, c], labels [N] -> [S].

    The training objective of the batched model is the *sum* over seeds, whose gradient with
    respect to seed s's parameters is exactly the gradient of seed s's own mean loss.
    """
    S, N, c = logits.shape
    losses = F.cross_entropy(logits.reshape(S * N, c), y.repeat(S), reduction="none")
    return losses.view(S, N).mean(dim=1)


def per_seed_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Classification error (fraction misclassified) of each seed: [S, N, c], [N] -> [S]."""
    return (logits.argmax(dim=-1) != y).float().mean(dim=1)

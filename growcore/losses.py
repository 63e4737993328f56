"""Losses of seed-batched models: one value per seed, so the seeds stay independent."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_seed_labels(y: torch.Tensor, S: int) -> torch.Tensor:
    """Labels shared by all seeds ([N]) or given per seed ([S, N]), flattened to [S * N]."""
    return y.reshape(-1) if y.dim() == 2 else y.repeat(S)


def per_seed_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each seed: logits [S, N, c], labels [N] or [S, N] -> [S].

    The training objective of the batched model is the *sum* over seeds, whose gradient with
    respect to seed s's parameters is exactly the gradient of seed s's own mean loss.
    """
    S, N, c = logits.shape
    losses = F.cross_entropy(logits.reshape(S * N, c), _per_seed_labels(y, S),
                             reduction="none")
    return losses.view(S, N).mean(dim=1)


def per_seed_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Classification error (fraction misclassified) of each seed: [S, N, c], [N] -> [S]."""
    S, N, _ = logits.shape
    return (logits.argmax(dim=-1) != _per_seed_labels(y, S).view(S, N)).float().mean(dim=1)


def per_seed_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each seed, averaged over examples and outputs (as
    ``torch.nn.functional.mse_loss``): outputs [S, N, o], targets [N, o] or [S, N, o] -> [S]."""
    return (outputs - targets).pow(2).mean(dim=(1, 2))


LOSSES = {"cross_entropy": per_seed_cross_entropy, "mse": per_seed_mse}


def as_seed_batch(outputs: torch.Tensor) -> torch.Tensor:
    """Outputs of an ordinary model ([N, c]) as a one-seed batch ([1, N, c])."""
    return outputs.unsqueeze(0) if outputs.dim() == 2 else outputs

"""Optimisers, and carrying their state across a growth step.

The public SensLI code rebuilds the optimiser after an insertion (plain SGD has no state to
lose). With momentum or Adam the state matters: :func:`rebuild_optimizer` keeps every old
entry and starts every new one at zero, the rule the GradMax code follows.
"""

from __future__ import annotations

import inspect
import math

import torch

from growcore.ops.base import Growth

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def make_optimizer(name: str, params, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """An optimiser by name (``sgd``, ``adam``, ``adamw``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


def rebuild_optimizer(old: torch.optim.Optimizer, old_model: torch.nn.Module, growth: Growth,
                      lr: float | None = None) -> torch.optim.Optimizer:
    """A new optimiser of the same type for ``growth.model`` with the old state carried over.

    Tensor state (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``) goes through
    ``growth.transport``: old entries unchanged, new entries zero. A parameter that is new
    as a whole gets no state at all, which for SGD and Adam is the same as zero state with
    step 0. Adam's scalar ``step`` is kept for old and for extended (widened) parameters, as
    the GradMax code does; a parameter that is old for some seeds and new for others cannot
    hold two step counts, so that case raises.

    Parameters
    ----------
    old : torch.optim.Optimizer
        The optimiser of ``old_model`` (one parameter group).
    lr : float, optional
        Learning rate of the new optimiser; default: the old one's current rate.
    """
    if len(old.param_groups) != 1:
        raise ValueError("rebuild_optimizer supports optimisers with one parameter group")
    accepted = inspect.signature(type(old).__init__).parameters
    hyper = {k: v for k, v in old.param_groups[0].items() if k in accepted and k != "params"}
    if lr is not None:
        hyper["lr"] = lr
    new = type(old)(growth.model.parameters(), **hyper)
    old_names = {id(p): name for name, p in old_model.named_parameters()}
    old_state = {old_names[id(p)]: state for p, state in old.state.items()}
    if not old_state:
        return new
    new_params = dict(growth.model.named_parameters())
    keys = {k for state in old_state.values() for k, v in state.items()
            if torch.is_tensor(v) and v.dim() > 0}
    carried = {k: growth.transport({name: s[k] for name, s in old_state.items()}) for k in keys}
    for name, param in new_params.items():
        status = growth.status(name)
        if status == "new":
            continue
        state = {k: carried[k][name] for k in keys}
        if any(k not in keys for k in _scalar_keys(old_state)):
            if status == "mixed":
                raise ValueError(
                    f"parameter {name!r} is new for some seeds and old for others; "
                    f"{type(old).__name__} keeps one step count per tensor: run these seeds "
                    "separately or use SGD")
            source = growth.source_of(name)
            state.update({k: v.clone() for k, v in old_state[source].items() if k not in keys})
        new.state[param] = state
    return new


def _scalar_keys(old_state: dict) -> set[str]:
    return {k for state in old_state.values() for k, v in state.items()
            if not (torch.is_tensor(v) and v.dim() > 0)}


class GrowThenCosine:
    """Learning-rate multiplier of the slides: constant while the network grows, then cosine
    decay to zero over the remaining iterations (at least ``E_F_min`` epochs with the
    policies above). With ``n_blocks = 0`` (a fixed network) it is plain cosine decay.

    Use as ``train(..., lr_schedule=GrowThenCosine(iterations, n_blocks))``.
    """

    def __init__(self, total_iterations: int, n_blocks: int):
        self.total_iterations, self.n_blocks = total_iterations, n_blocks

    def start(self, history) -> int | None:
        """Iteration at which the target was complete (None while still growing)."""
        if self.n_blocks == 0:
            return 0
        added = 0
        for event in history.events:
            added += event.get("blocks_added", 1)
            if added >= self.n_blocks:
                return event["iteration"]
        return None

    def __call__(self, iteration: int, history) -> float:
        start = self.start(history)
        if start is None:
            return 1.0
        progress = (iteration - start) / max(1, self.total_iterations - start)
        return 0.5 * (1 + math.cos(math.pi * progress))

"""One training loop for every chapter: train, ask the when-policy, grow, carry on.

A growth step is one composition: ``plan.when`` fires, ``plan.where`` picks the sites,
``plan.how`` fills the new weights, :mod:`growcore.ops` applies the change, and
:func:`growcore.optim.rebuild_optimizer` carries the optimiser state across it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm  # not tqdm.auto: no widgets (they need remote scripts in the book)

from growcore.data import Split
from growcore.losses import per_seed_cross_entropy, per_seed_error
from growcore.models.seed_batched import SeedShapeMismatch
from growcore.ops import insert_layers
from growcore.optim import make_optimizer, rebuild_optimizer


@dataclass
class GrowthPlan:
    """When x where x how of a growth step.

    Parameters
    ----------
    when : callable ``(iteration, history) -> bool``
    where : callable ``(model, split) -> (sites per seed, info dict)``
    how : initialiser passed to the growth operator
    lr_factor : float
        Learning rate multiplied by this after each growth (SensLI Fig. 3.4b: 0.8).
    """

    when: object
    where: object
    how: object
    lr_factor: float = 1.0

    def describe(self) -> dict:
        return {"when": self.when.describe(), "where": self.where.describe(),
                "how": type(self.how).__name__, "lr_factor": self.lr_factor}


@dataclass
class History:
    """What the loop records, one entry per iteration (per seed where it says [S])."""

    loss: list = field(default_factory=list)          # [T][S] training loss before the update
    test_error: list = field(default_factory=list)    # [T][S] test error before the update
    n_params: list = field(default_factory=list)      # [T] parameters of one seed's network
    cost_flops: list = field(default_factory=list)    # [T] cumulative FLOPs incl. growth steps
    wall_time: list = field(default_factory=list)     # [T] seconds since the start
    events: list = field(default_factory=list)        # growth events

    def as_dict(self) -> dict:
        def plain(x):
            return torch.stack(x).T.tolist() if x and torch.is_tensor(x[0]) else list(x)

        return {"loss": plain(self.loss), "test_error": plain(self.test_error),
                "n_params": self.n_params, "cost_flops": self.cost_flops,
                "wall_time": self.wall_time, "events": self.events}


def train(model, split: Split, *, iterations: int, lr: float, optimizer: str = "sgd",
          momentum: float = 0.0, weight_decay: float = 0.0, batch_size: int | None = None,
          plan: GrowthPlan | None = None, eval_every: int = 1, seed: int = 0,
          progress: bool = True, desc: str = "train"):
    """Train a seed-batched model, growing it when the plan says so.

    Parameters
    ----------
    model : SeedBatchedNet
    split : Split
        Training and test data (on the model's device).
    iterations : int
        Number of parameter updates.
    batch_size : int, optional
        None for full-batch gradient descent (SensLI), otherwise shuffled mini-batches.
    eval_every : int
        Test error every this many iterations (the value is held in between).
    seed : int
        Seed of the mini-batch order (unused for full batch).

    Returns
    -------
    model : the final (possibly grown) model
    history : History
    """
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    history = History()
    generator = torch.Generator().manual_seed(seed)
    batches = _endless(split, batch_size, generator)
    cost, start, error = 0.0, time.perf_counter(), None
    bar = tqdm(range(iterations), desc=desc, disable=not progress, leave=False, mininterval=1)
    for t in bar:
        if plan is not None and plan.when(t, history):
            model, opt, info = grow(model, opt, split, plan)
            cost += info.pop("cost_flops", 0)
            history.events.append({"iteration": t, **info})
        if error is None or t % eval_every == 0:
            with torch.no_grad():
                error = per_seed_error(model(split.X_test), split.y_test)
        X, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = per_seed_cross_entropy(model(X), y)
        loss.sum().backward()
        opt.step()
        cost += 3 * model.flops_per_example() * len(y)  # forward + backward ~ 3 forwards
        history.loss.append(loss.detach())
        history.test_error.append(error)
        history.n_params.append(model.num_parameters())
        history.cost_flops.append(cost)
        history.wall_time.append(time.perf_counter() - start)
    return model, history


def grow(model, opt, split: Split, plan: GrowthPlan):
    """One growth step: where -> how -> ops -> optimiser state carried."""
    sites, info = plan.where(model, split)
    try:
        growth = insert_layers(model, sites, plan.how)
    except SeedShapeMismatch as error:
        raise DivergentGrowth(model.seeds, sites) from error
    lr = opt.param_groups[0]["lr"] * plan.lr_factor
    opt = rebuild_optimizer(opt, model, growth, lr=lr)
    info = {**info, "seeds": list(model.seeds), "n_params_before": model.num_parameters(),
            "n_params_after": growth.model.num_parameters(), "lr_after": lr}
    return growth.model, opt, info


class DivergentGrowth(Exception):
    """Seeds of a batched model chose growth sites that give different shapes.

    Carries the seeds and their sites so the caller can regroup the seeds by site and rerun
    each group as its own batch (training is deterministic per seed, so the regrouped runs
    reproduce the original ones up to the growth step).
    """

    def __init__(self, seeds: list[int], sites: list):
        super().__init__(f"seeds {seeds} chose growth sites {sites} of different shapes")
        self.seeds, self.sites = list(seeds), list(sites)


def _endless(split: Split, batch_size: int | None, generator: torch.Generator):
    while True:
        yield from split.minibatches(batch_size, generator)

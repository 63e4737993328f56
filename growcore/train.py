"""One training loop for every chapter: train, ask the when-policy, grow, carry on.

A growth step is one composition: ``plan.when`` fires, ``plan.where`` picks the sites,
``plan.how`` fills the new weights, ``plan.op`` (a :mod:`growcore.ops` operator) applies the
change, and :func:`growcore.ops.rebuild_optimizer` carries the optimiser state across it.

The loop works on seed-batched models (outputs [S, N, c]) and on ordinary ``nn.Module``
models (outputs [N, c], treated as one seed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm  # not tqdm.auto: no widgets (they need remote scripts in the book)

from growcore.data import Split
from growcore.losses import LOSSES, as_seed_batch, per_seed_error
from growcore.models.seed_batched import SeedShapeMismatch
from growcore.ops import make_optimizer, rebuild_optimizer
from growcore.plan import GrowthPlan
from growcore.stats.probe import Probe
from growcore.when import TrainState


@dataclass
class History:
    """What the loop records, one entry per iteration (per seed where it says [S])."""

    loss: list = field(default_factory=list)          # [T][S] training loss before the update
    test_error: list = field(default_factory=list)    # [T][S] test metric before the update
    n_params: list = field(default_factory=list)      # [T] parameters of one seed's network
    cost_flops: list = field(default_factory=list)    # [T] cumulative FLOPs incl. growth steps
    wall_time: list = field(default_factory=list)     # [T] seconds since the start
    events: list = field(default_factory=list)        # growth events
    extra: dict = field(default_factory=dict)         # name -> [T][S] from step_metrics
    train_error: list = field(default_factory=list)   # [T][S] error on the training batch
    lr: list = field(default_factory=list)            # [T] learning rate of the update
    plan: dict | None = None                          # the plan's full description
    evals: list = field(default_factory=list)         # every eval_every iterations: dicts
    # with "iteration" and, per seed, "train_error" (mean batch error since the last
    # evaluation), "val_error" (if the split has a validation set) and "test_error"

    def as_dict(self) -> dict:
        def plain(x):
            return torch.stack(x).T.tolist() if x and torch.is_tensor(x[0]) else list(x)

        evals = [{k: v.tolist() if torch.is_tensor(v) else v for k, v in e.items()}
                 for e in self.evals]
        return {"loss": plain(self.loss), "test_error": plain(self.test_error),
                "train_error": plain(self.train_error), "lr": self.lr,
                "n_params": self.n_params, "cost_flops": self.cost_flops,
                "wall_time": self.wall_time, "events": self.events, "evals": evals,
                "plan": self.plan,
                **{name: plain(values) for name, values in self.extra.items()}}


def train(model, split: Split, *, iterations: int, lr: float, optimizer: str = "sgd",
          momentum: float = 0.0, weight_decay: float = 0.0, batch_size: int | None = None,
          loss: str = "cross_entropy", plan: GrowthPlan | None = None, eval_every: int = 1,
          step_metrics: dict[str, Callable] | None = None,
          lr_schedule: Callable | None = None, augment: Callable | None = None,
          observers: list | None = None, seed: int = 0, progress: bool = True,
          before_growth: Callable | None = None, desc: str = "train"):
    """Train a model, growing it when the plan says so.

    Parameters
    ----------
    model : SeedBatchedNet or torch.nn.Module
    split : Split
        Training data, and test data if ``split.X_test`` is set (on the model's device).
    iterations : int
        Number of parameter updates.
    batch_size : int, optional
        None for full-batch gradient descent (SensLI), otherwise shuffled mini-batches.
    loss : str
        ``"cross_entropy"`` (the test metric is the classification error) or ``"mse"`` (the
        test metric is the mean squared error).
    eval_every : int
        Evaluate every this many iterations (test metric held in between; the validation
        and training errors go to ``history.evals``, which when-policies read). At an
        iteration with both, the evaluation comes first: the policy sees the network it is
        about to grow, and the evaluation at the growth iteration is of the network before
        the growth.
    step_metrics : dict, optional
        name -> ``fn(model) -> Tensor [S]``, called after each backward pass (gradients are
        available), e.g. the gradient norm of GradMax Fig. 2b. Recorded in ``history.extra``.
    lr_schedule : callable ``(iteration, history) -> float``, optional
        Multiplier of the learning rate at each iteration (e.g. cosine decay); growth factors
        (``plan.lr_factor``) multiply the base rate it scales.
    augment : callable ``(X, generator) -> X``, optional
        Transform of each training batch (e.g. random crops and flips).
    observers : list, optional
        Objects with ``attach(model)`` and ``detach()``, attached at the start and re-attached
        to the new model after each growth (e.g. hooks collecting activation gradients
        during the normal backward pass). The plan's own observers (``plan.observers()``) are
        attached without being listed here.
    seed : int
        Seed of the mini-batch order and of the augmentation.
    before_growth : callable ``(model) -> None``, optional
        Called with the model just before each growth step (e.g. to keep a copy of it).

    Returns
    -------
    model : the final (possibly grown) model
    history : History
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    loss_fn = LOSSES[loss]
    if plan is not None:
        plan.check(model)
        observers = [*(observers or []), *(o for o in plan.observers()
                                           if all(o is not seen for seen in observers or []))]
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    history = History(extra={name: [] for name in step_metrics or {}},
                      plan=plan.describe() if plan is not None else None)
    per_epoch = max(1, -(-len(split.y_train) // batch_size)) if batch_size else 1
    generator = torch.Generator().manual_seed(seed)
    batches = _endless(split, batch_size, generator)
    cost, start, test, base_lr, since_eval = 0.0, time.perf_counter(), None, lr, []
    _attach(observers, model)
    bar = tqdm(range(iterations), desc=desc, disable=not progress, leave=False, mininterval=1)
    for t in bar:
        # evaluate first, so that the when-policy decides on the current network
        if t % eval_every == 0:
            test = _evaluate_all(model, split, loss, t, since_eval, history)
            since_eval = []
        if plan is not None and plan.when(TrainState(t, history, model, per_epoch)):
            _detach(observers)
            if before_growth is not None:
                before_growth(model)
            model, opt, info = grow(model, opt, split, plan, loss)
            base_lr *= plan.lr_factor
            cost += info.pop("cost_flops", 0)
            history.events.append({"iteration": t, **info})
            _attach(observers, model)
        if lr_schedule is not None:
            for group in opt.param_groups:
                group["lr"] = base_lr * lr_schedule(t, history)
        X, y = next(batches)
        if augment is not None:
            X = augment(X, generator)
        opt.zero_grad(set_to_none=True)
        outputs = as_seed_batch(model(X))
        value = loss_fn(outputs, y)
        value.sum().backward()
        for name, metric in (step_metrics or {}).items():
            history.extra[name].append(metric(model).detach())
        opt.step()
        cost += 3 * flops_per_example(model) * len(X)  # forward + backward ~ 3 forwards
        history.loss.append(value.detach())
        if loss == "cross_entropy":
            history.train_error.append(per_seed_error(outputs.detach(), y))
            since_eval.append(history.train_error[-1])
        if test is not None:
            history.test_error.append(test)
        history.lr.append(opt.param_groups[0]["lr"])
        history.n_params.append(num_parameters(model))
        history.cost_flops.append(cost)
        history.wall_time.append(time.perf_counter() - start)
    _detach(observers)
    return model, history


def replay_when(policy: Callable[[TrainState], bool], iterations: int, *,
                iterations_per_epoch: int | None = None, blocks_added: int = 1,
                model=None) -> History:
    """Replay a when-policy over ``iterations`` iterations without training.

    The order is that of :func:`train`: at every iteration ``t`` the policy reads
    ``TrainState(t, history, model, iterations_per_epoch)``, and when it fires a growth
    event ``{"iteration": t, "blocks_added": blocks_added}`` is appended to
    ``history.events`` before the next iteration asks. Nothing is trained or evaluated, so
    this reproduces the growth schedule of policies that read only the growth events (e.g.
    :class:`growcore.when.Periodic`, :class:`growcore.when.Every`,
    :class:`growcore.when.AtIterations`), not of those that read evaluations.

    Parameters
    ----------
    policy : callable ``(TrainState) -> bool``
        The when-policy.
    iterations : int
        Iterations to replay (``0 .. iterations - 1``).
    iterations_per_epoch : int, optional
        Passed to the policy in the state, as :func:`train` does.
    blocks_added : int
        Blocks recorded per growth event (what :func:`growcore.when.blocks_added` counts).
    model : nn.Module, optional
        Passed to the policy in the state (never changed).

    Returns
    -------
    History
        Empty but for ``events``.
    """
    history = History()
    for t in range(iterations):
        if policy(TrainState(t, history, model, iterations_per_epoch)):
            history.events.append({"iteration": t, "blocks_added": blocks_added})
    return history


def _evaluate_all(model, split: Split, loss: str, t: int, since_eval: list, history: History):
    """Record an evaluation; return the test metric (or None without a test set)."""
    record: dict = {"iteration": t}
    if since_eval:
        record["train_error"] = torch.stack(since_eval).mean(dim=0)
    if split.X_val is not None:
        record["val_error"] = evaluate(model, split.X_val, split.y_val, loss)
    test = None
    if split.X_test is not None:
        test = record["test_error"] = evaluate(model, split.X_test, split.y_test, loss)
    history.evals.append(record)
    return test


def _attach(observers, model) -> None:
    for observer in observers or ():
        observer.attach(model)


def _detach(observers) -> None:
    for observer in observers or ():
        observer.detach()


@torch.no_grad()
def evaluate(model, X: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             batch_size: int = 2048) -> torch.Tensor:
    """Test metric per seed: classification error, or mean squared error for ``"mse"``.

    The model is evaluated in eval mode (BatchNorm uses its running statistics and does not
    absorb the evaluation data; dropout is off) and returned to the mode it was in.
    """
    was_training = model.training
    model.eval()
    try:
        return _evaluate(model, X, y, loss, batch_size)
    finally:
        model.train(was_training)


def _evaluate(model, X, y, loss, batch_size):
    per_seed_targets = y.dim() == (2 if loss == "cross_entropy" else 3)
    metric = per_seed_error if loss == "cross_entropy" else LOSSES[loss]
    total, n = 0.0, len(X)
    for start in range(0, n, batch_size):
        chunk = slice(start, start + batch_size)
        out = as_seed_batch(model(X[chunk]))
        total = total + metric(out, y[:, chunk] if per_seed_targets else y[chunk]) * out.shape[1]
    return total / n


def num_parameters(model) -> int:
    """Trainable parameters of one seed's network."""
    if hasattr(model, "num_parameters"):
        return model.num_parameters()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_example(model) -> int:
    """Forward FLOPs per example (models define ``flops_per_example``; else 2 per weight)."""
    if hasattr(model, "flops_per_example"):
        return model.flops_per_example()
    return 2 * num_parameters(model)


def grow(model, opt, split: Split, plan: GrowthPlan, loss: str = "cross_entropy"):
    """One growth step: where -> how -> op -> optimiser state carried; the event's info
    includes the step's ``seconds``."""
    start = time.perf_counter()
    probe = Probe(split, loss)
    proposals, info = plan.propose(model, probe)
    try:
        growth = plan.apply(model, proposals, probe)
    except SeedShapeMismatch as error:
        seeds = list(getattr(model, "seeds", [0]))
        chosen: dict = {}
        for p in proposals:  # a depth site's position, or the width sites and their units
            choice = p.site.position if p.site.kind == "depth" else (p.site.name, p.amount)
            chosen.setdefault(p.seed, []).append(choice)
        raise DivergentGrowth(seeds, [chosen.get(s) for s in range(len(seeds))]) from error
    lr = opt.param_groups[0]["lr"] * plan.lr_factor
    opt = rebuild_optimizer(opt, model, growth, lr=lr)
    info = {**info, "proposals": [p.describe() for p in proposals],
            "seeds": list(getattr(model, "seeds", [0])),
            "n_params_before": num_parameters(model),
            "n_params_after": num_parameters(growth.model), "lr_after": lr,
            "seconds": time.perf_counter() - start}
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

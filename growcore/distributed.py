"""Growing a network on many processes: torchrun + DistributedDataParallel.

The spine's :func:`growcore.train.train` runs unchanged on every rank; :func:`synchronised`
makes a growth plan distributed, so that every rank takes the same decision and grows the
same way for every operator, from these adapters:

* :func:`shard` gives each rank an equal, disjoint part of the training set (validation and
  test sets stay whole, so every rank evaluates the same model on the same data);
* :class:`Agreed` wraps a when-policy: the training error of every evaluation is averaged
  over the ranks (each rank sees only its own batches), so the policy reads the statistics a
  single process would; rank 0's decision is then broadcast, so every rank grows at the same
  iteration;
* :func:`reduce_statistics` makes the statistics that decide where and how those of the
  whole training set: GradMax's gradient matrices (:class:`MeanOverRanks`: a matrix is a
  mean over the examples, so with equal shards the mean of the ranks' matrices is the single
  process's) and NAGN's sums of squared activation gradients (:class:`SummedNAGN`: the sums
  and their example counts summed over the ranks) and SensLI's virtual-layer gradients of an
  ``nn.Module`` (:func:`mean_over_ranks`: a gradient of the mean loss, like GradMax's
  matrices), all-reduced before the SVD, the increments or the merits are computed;
* :class:`RankZeroWhere` wraps a where-criterion: every rank runs it (its statistics may be
  collective), and rank 0's proposals are broadcast, so the ranks never grow different
  shapes, not even by a rounding tie or with a criterion whose statistics are not reduced
  (the gradient-norm baseline: there rank 0's shard decides);
* :func:`distributed_op` wraps a growth operator: it grows the network inside the DDP
  wrapper and wraps the grown network in a new DDP, whose construction broadcasts rank 0's
  parameters and buffers: randomly initialised units and blocks are rank 0's draws on every
  rank (with reduced statistics and the initialisers' own seeded generators, the ranks drew
  the same values anyway). The grown network keeps the old one's memory format. The
  returned growth maps the wrapper's parameter names (``module.*``), so the optimiser state is
  carried by :func:`growcore.ops.rebuild_optimizer` as in a single process, and the loop
  builds a new optimiser for the new wrapper.

With full-batch training, ranks holding equal shards average their gradients to exactly the
single-process gradient; with mini-batches of ``b`` per rank, one update sees ``b * world``
examples. BatchNorm statistics are per rank (``SyncBatchNorm`` needs GPUs). The reduced
statistics equal the single process's with full-data statistics (GradMax's
``batch_size=None``) on equal shards and without train-mode BatchNorm between the layers; a
statistic over one random minibatch of ``b`` draws ``b`` examples on every rank (``b * world``
in all), and BatchNorm couples only the examples of a rank.

The FRAGrow chapter's runs launch this way (one process per GPU)::

    torchrun --standalone --nproc_per_node=8 -m growcore.driver --chapter fragrow --preset gpu \
        --experiment "resnet CIFAR-10 FRAGrow s0"
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from growcore.data import Split
from growcore.ops import Growth
from growcore.plan import GrowthPlan
from growcore.stats.gradmax import GradientMatrices
from growcore.stats.nagn import NAGNObserver, nagn_from_sums
from growcore.when import TrainState, WhenPolicy

PREFIX = "module."  # DistributedDataParallel's prefix of the wrapped network's names


def init_from_environment(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun set up (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...);
    NCCL with GPUs, gloo otherwise. Returns ``(rank, world size)``; ``(0, 1)`` outside
    torchrun."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def shard(split: Split, rank: int, world: int) -> Split:
    """Rank ``rank``'s part of the training set: examples ``rank, rank + world, ...`` of the
    first ``world * floor(N / world)`` (equal shards; the remainder is dropped)."""
    n = len(split.y_train) // world * world
    return dataclasses.replace(split, X_train=split.X_train[rank:n:world],
                               y_train=split.y_train[rank:n:world])


class Agreed(WhenPolicy):
    """A when-policy that sees all-reduced statistics and whose decision is rank 0's.

    Before the wrapped policy is asked, the ``train_error`` of a new evaluation in
    ``history.evals`` is replaced by its mean over the ranks (with equal shards: the error a
    single process would have measured; validation errors agree already, every rank evaluates
    the same model on the same data). Every rank calls the wrapped policy, so stateful policies
    stay in step; rank 0's answer is broadcast and followed by all.
    """

    def __init__(self, policy, device: str | torch.device = "cpu"):
        self.policy, self.device, self.reduced = policy, torch.device(device), -1

    def __call__(self, state: TrainState) -> bool:
        latest = state.history.evals[-1] if state.history.evals else None
        if latest is not None and latest["iteration"] > self.reduced:
            self.reduced = latest["iteration"]
            if "train_error" in latest:
                error = latest["train_error"].clone()
                dist.all_reduce(error)
                latest["train_error"] = error / dist.get_world_size()
        decision = torch.tensor([int(bool(self.policy(state)))],
                                device=self.device)
        dist.broadcast(decision, src=0)
        return bool(decision.item())

    def observers(self) -> list:
        return list(getattr(self.policy, "observers", list)())

    def describe(self) -> dict:
        return {**self.policy.describe(), "agreed": "rank 0 decides, broadcast"}


class WrappedGrowth(Growth):
    """A growth of the network inside a DDP wrapper, seen through the wrapper's names."""

    def __init__(self, model: DistributedDataParallel, inner: Growth):
        self.model, self.inner = model, inner

    def transport(self, old: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        moved = self.inner.transport({name.removeprefix(PREFIX): t for name, t in old.items()})
        return {PREFIX + name: t for name, t in moved.items()}

    def status(self, name: str) -> str:
        return self.inner.status(name.removeprefix(PREFIX))

    def source_of(self, name: str) -> str | None:
        source = self.inner.source_of(name.removeprefix(PREFIX))
        return None if source is None else PREFIX + source


def wrap(model: torch.nn.Module, **ddp_options) -> DistributedDataParallel:
    """``DistributedDataParallel(model)``, on the process's GPU when there is one."""
    if torch.cuda.is_available():
        ddp_options.setdefault("device_ids", [torch.cuda.current_device()])
    return DistributedDataParallel(model, **ddp_options)


def distributed_op(op: Callable, **ddp_options) -> Callable:
    """The growth operator ``op`` for a DDP-wrapped network (see the module docstring)."""
    def grow(model: DistributedDataParallel, proposals, how, stats=None) -> WrappedGrowth:
        inner = op(model.module, proposals, how, stats)
        if _channels_last(model.module):
            inner.model.to(memory_format=torch.channels_last)  # before DDP sees its strides
        return WrappedGrowth(wrap(inner.model, **ddp_options), inner)

    grow.__name__ = f"distributed_{getattr(op, '__name__', 'op')}"
    return grow


def _channels_last(model: torch.nn.Module) -> bool:
    """Whether the network's convolutions are in the channels-last format (a 1 x 1 kernel is
    in both formats: the others tell)."""
    return any(m.weight.is_contiguous(memory_format=torch.channels_last)
               and not m.weight.is_contiguous()
               for m in model.modules() if isinstance(m, torch.nn.Conv2d))


# ---------------------------------------------------------------- every rank the same growth
def synchronised(plan: GrowthPlan, device: str | torch.device = "cpu") -> GrowthPlan:
    """The plan for a DDP run: the when-policy :class:`Agreed`, the statistics of the where
    and how parts reduced over the ranks (:func:`reduce_statistics`), the where-criterion's
    decision rank 0's (:class:`RankZeroWhere`) and the operator :func:`distributed_op`.

    The parts are changed in place (their statistics) and shared with the returned plan.
    """
    for part in (plan.where, plan.how):
        reduce_statistics(part)
    return GrowthPlan(Agreed(plan.when, device), RankZeroWhere(plan.where), plan.how,
                      op=distributed_op(plan.op), lr_factor=plan.lr_factor)


def reduce_statistics(part) -> None:
    """Let ``part`` read statistics over all ranks: GradMax's gradient matrices
    (``part.matrices``, :class:`MeanOverRanks`), NAGN's activation-gradient sums
    (``part.observer``, :class:`SummedNAGN`) and SensLI's virtual-layer gradients
    (``part.reduce_gradients``, :func:`mean_over_ranks`). Other parts are left as they are."""
    if isinstance(getattr(part, "matrices", None), GradientMatrices):
        part.matrices = MeanOverRanks(part.matrices)
    if hasattr(part, "reduce_gradients"):
        part.reduce_gradients = mean_over_ranks
    if isinstance(getattr(part, "observer", None), NAGNObserver):
        part.observer = SummedNAGN(part.observer)


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks (all-reduced; ``tensor`` is left as it was)."""
    total = tensor.detach().clone().contiguous()
    dist.all_reduce(total)
    return total / dist.get_world_size()


class MeanOverRanks:
    """GradMax's :class:`growcore.stats.gradmax.GradientMatrices` whose matrix is the mean of
    the ranks' matrices (eq. (11)'s ``G = E_D[dL/dz_{l+1} h_{l-1}^T]`` over the whole
    training set when the ranks hold equal shards), all-reduced before any SVD."""

    def __init__(self, inner: GradientMatrices):
        self.inner = inner

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        G = self.inner(*args, **kwargs).contiguous()
        dist.all_reduce(G)
        return G / dist.get_world_size()


class SummedNAGN:
    """NAGN's observer (:class:`growcore.stats.nagn.NAGNObserver`) whose profile is that of
    all ranks' batches: the per-layer sums ``sum_i ||dL_i/dz_{l,i}||^2 / T_l`` and the
    example counts of the kept batches are summed over the ranks before
    ``NAGN_l = sqrt(sum / count)`` (section 3). The hooks are the wrapped observer's."""

    def __init__(self, observer: NAGNObserver):
        self.observer = observer

    def attach(self, model) -> None:
        self.observer.attach(model)

    def detach(self) -> None:
        self.observer.detach()

    def describe(self) -> dict:
        return self.observer.describe()

    def nagn(self) -> torch.Tensor:
        """The NAGN profile [L] of every rank's kept batches together."""
        batches = self.observer.batches
        if not batches:
            raise ValueError("no backward pass has been observed since the last attach")
        sums = torch.stack([torch.stack(b[0]) for b in batches]).double().sum(dim=0)
        count = torch.tensor([float(sum(b[1] for b in batches))], dtype=torch.float64,
                             device=sums.device)
        for tensor in (sums, count):
            dist.all_reduce(tensor)
        return nagn_from_sums(sums.cpu(), [count.item()] * len(sums))


class RankZeroWhere:
    """A where-criterion that every rank runs and whose proposals (and info) are rank 0's,
    broadcast to all (``torch.distributed.broadcast_object_list``)."""

    def __init__(self, where):
        self.where = where

    @property
    def kind(self) -> str:
        return self.where.kind

    def __call__(self, model, sites, stats=None):
        answer = [self.where(model, sites, stats)]
        dist.broadcast_object_list(answer, src=0)
        return answer[0]

    def refuses(self, model) -> str | None:
        return getattr(self.where, "refuses", lambda m: None)(model)

    def observers(self) -> list:
        return list(getattr(self.where, "observers", list)())

    def describe(self) -> dict:
        return self.where.describe() if hasattr(self.where, "describe") else {
            "name": type(self.where).__name__}

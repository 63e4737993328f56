"""Growing a network on many processes: torchrun + DistributedDataParallel.

The spine's :func:`growcore.train.train` runs unchanged on every rank; three adapters make a
growing run distributed:

* :func:`shard` gives each rank an equal, disjoint part of the training set (validation and
  test sets stay whole, so every rank evaluates the same model on the same data);
* :class:`Agreed` wraps a when-policy: the training error of every evaluation is averaged
  over the ranks (each rank sees only its own batches), so the policy reads the statistics a
  single process would; rank 0's decision is then broadcast, so every rank grows at the same
  iteration;
* :func:`distributed_op` wraps a growth operator: it grows the network inside the DDP
  wrapper and wraps the grown network in a new DDP, whose construction broadcasts rank 0's
  parameters and buffers (so randomly initialised blocks are the same on every rank). The
  returned growth maps the wrapper's parameter names (``module.*``), so the optimiser state is
  carried by :func:`growcore.ops.rebuild_optimizer` as in a single process.

With full-batch training, ranks holding equal shards average their gradients to exactly the
single-process gradient; with mini-batches of ``b`` per rank, one update sees ``b * world``
examples. BatchNorm statistics are per rank (``SyncBatchNorm`` needs GPUs).

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
        return WrappedGrowth(wrap(inner.model, **ddp_options), inner)

    grow.__name__ = f"distributed_{getattr(op, '__name__', 'op')}"
    return grow

"""One training loop for every chapter: train, ask the when-policy, grow, carry on.

A growth step is one composition: ``plan.when`` fires, ``plan.where`` picks the sites,
``plan.how`` fills the new weights, ``plan.op`` (a :mod:`growcore.ops` operator) applies the
change, and :func:`growcore.ops.rebuild_optimizer` carries the optimiser state across it.

The loop works on seed-batched models (outputs [S, N, c]) and on ordinary ``nn.Module``
models (outputs [N, c], treated as one seed).

On a GPU the training step can run under mixed precision (``precision="bfloat16"``, or
``"float16"`` with a gradient scaler), with convolution nets in the channels-last memory
format and with the model compiled (``compile``, recompiled after every growth). The growth
step itself (the statistics of where and how, the operator) always runs in float32, outside
autocast: an SVD of a bfloat16 matrix is neither available nor accurate enough.

With ``checkpoint`` the loop writes a checkpoint (:mod:`growcore.checkpoint`) every
``checkpoint_every`` iterations and at the end, and a run started with the path of an
existing checkpoint continues from it: on the CPU the continued run equals the
uninterrupted one bit for bit, across growths.

The data is a :class:`growcore.data.Split` held in memory (CIFAR: the fastest source, its
augmentation on the device) or a stream of an ImageFolder tree
(:class:`growcore.streaming.ImageFolderStream`, or :class:`growcore.streaming.Streamed` with a
sample of it chosen by the caller): training batches come from the stream's seeded, resumable
order, the test metric from streaming the test images, and growth steps and validation read the
stream's in-memory sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm import tqdm  # not tqdm.auto: no widgets (they need remote scripts in the book)

from growcore import checkpoint as checkpoints
from growcore.data import SeedSplits, Split
from growcore.losses import LOSSES, as_seed_batch, per_seed_error
from growcore.models.seed_batched import SeedShapeMismatch
from growcore.models.staged import unwrap
from growcore.ops import make_optimizer, rebuild_optimizer
from growcore.plan import GrowthPlan
from growcore.stats.probe import Probe

if TYPE_CHECKING:
    from growcore.streaming import ImageFolderStream, Streamed
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
    resumed_at: list = field(default_factory=list)    # iterations continued from a checkpoint

    def as_dict(self) -> dict:
        def plain(x):
            return torch.stack(x).T.tolist() if x and torch.is_tensor(x[0]) else list(x)

        evals = [{k: v.tolist() if torch.is_tensor(v) else v for k, v in e.items()}
                 for e in self.evals]
        return {"loss": plain(self.loss), "test_error": plain(self.test_error),
                "train_error": plain(self.train_error), "lr": self.lr,
                "n_params": self.n_params, "cost_flops": self.cost_flops,
                "wall_time": self.wall_time, "events": self.events, "evals": evals,
                "plan": self.plan, "resumed_at": list(self.resumed_at),
                **{name: plain(values) for name, values in self.extra.items()}}


def train(model, split: Split | ImageFolderStream | Streamed, *, iterations: int, lr: float,
          optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
          batch_size: int | None = None,
          loss: str = "cross_entropy", plan: GrowthPlan | None = None, eval_every: int = 1,
          step_metrics: dict[str, Callable] | None = None,
          lr_schedule: Callable | None = None, augment: Callable | None = None,
          observers: list | None = None, seed: int = 0, progress: bool = True,
          before_growth: Callable | None = None, desc: str = "train",
          checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
          precision: str = "float32", channels_last: bool = False,
          compile: bool | str | Callable = False):
    """Train a model, growing it when the plan says so.

    Parameters
    ----------
    model : SeedBatchedNet or torch.nn.Module
    split : Split, ImageFolderStream or Streamed
        Training data, and test data if ``split.X_test`` is set (on the model's device). A
        stream (:mod:`growcore.streaming`) gives the training batches itself (its order, its
        augmentation, its shard under torchrun; ``batch_size`` must be its own or None) and
        the test batches (``Streamed.test_in_loop``); growth steps and the validation error
        read its sample (:meth:`~growcore.streaming.ImageFolderStream.sample`, of
        :data:`~growcore.streaming.DEFAULT_SAMPLE` images for a bare stream). The checkpoint
        holds the stream's epoch and position.
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
    checkpoint : path, optional
        Checkpoint file. If it exists, the run continues from it (it must have been written
        by a run with the same arguments: otherwise a ValueError); the ``model`` given is then
        only the seed network the plan is checked against, and the network trained is the
        checkpoint's (rebuilt, a ``DistributedDataParallel`` wrapper wrapped again). Written
        every ``checkpoint_every`` iterations (after that many updates) and after the last
        one, atomically; it holds the grown network (architecture and tensors), the
        optimiser, the gradient scaler, the base learning rate, the state of the plan's
        parts, of the observers and of the schedule, the batch order and augmentation
        generator, the global random generators and the history.
    checkpoint_every : int, optional
        Iterations between checkpoints (None: only after the last one).
    precision : {"float32", "bfloat16", "float16"}
        Autocast dtype of the training step's forward pass and loss (parameters, optimiser
        and growth stay float32); ``"float16"`` scales the loss with a ``GradScaler`` (step
        metrics read the unscaled gradients; refused with observers of activation gradients,
        which would read scaled ones).
    channels_last : bool
        Convolution nets (and their input batches) in the channels-last memory format, set
        again after every growth (the faster layout on GPUs); ignored without ``Conv2d``.
    compile : bool, str or callable
        ``torch.compile`` the training forward pass (True: the default backend; a backend's
        name or a backend callable), compiled anew after every growth: ``torch.compiler.
        reset()`` drops every compiled graph of the process first, so that many growths never
        exhaust the recompilation limit (other compiled code is compiled again when next
        called).

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
    amp = Precision(precision, _device_of(model))
    amp.check(observers)
    history = History(extra={name: [] for name in step_metrics or {}},
                      plan=plan.describe() if plan is not None else None)
    generator = torch.Generator().manual_seed(seed)
    data = _streamed(split, batch_size)
    if data is not None:
        batch_size, split = data.stream.batch_size, data.sample  # growth reads the sample
        per_epoch, order, n_train = (data.stream.batches_per_epoch,
                                     StreamOrder(data.stream, generator), len(data.stream))
    else:
        per_epoch = max(1, -(-len(split.y_train) // batch_size)) if batch_size else 1
        order, n_train = BatchOrder(split, batch_size, generator), len(split.y_train)
    run = _Run(model, make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay),
               history, order, lr)
    stateful = [plan, *(observers or []), lr_schedule]
    fingerprint = {"iterations": iterations, "lr": lr, "optimizer": optimizer,
                   "momentum": momentum, "weight_decay": weight_decay,
                   "batch_size": batch_size, "loss": loss, "eval_every": eval_every,
                   "seed": seed, "precision": precision, "n_train": n_train,
                   "plan": history.plan, "step_metrics": sorted(step_metrics or {})}
    saved = _load_checkpoint(checkpoint, fingerprint)
    if saved is not None:
        run = _resumed(saved, run, (optimizer, lr, momentum, weight_decay), amp,
                       _device_of(model), channels_last)
    forward = _prepared(run.model, channels_last, compile)
    _attach(observers, run.model)
    if saved is not None:
        checkpoints.restore_state(stateful, saved["parts"], run.model)
        checkpoints.set_rng_state(saved["rng"])
        run.history.resumed_at.append(run.iteration)
    model, opt, history, test, since_eval = (run.model, run.opt, run.history, run.test,
                                             run.since_eval)
    start = time.perf_counter() - run.elapsed
    bar = tqdm(range(run.iteration, iterations), desc=desc, disable=not progress, leave=False,
               mininterval=1, initial=run.iteration, total=iterations)
    for t in bar:
        # evaluate first, so that the when-policy decides on the current network
        if t % eval_every == 0:
            test = _evaluate_all(model, split, loss, t, since_eval, history, data)
            since_eval = []
        if plan is not None and plan.when(TrainState(t, history, model, per_epoch)):
            _detach(observers)
            if before_growth is not None:
                before_growth(model)
            model, opt, info = grow(model, opt, split, plan, loss)
            run.base_lr *= plan.lr_factor
            run.cost += info.pop("cost_flops", 0)
            history.events.append({"iteration": t, **info})
            forward = _prepared(model, channels_last, compile)
            _attach(observers, model)
        if lr_schedule is not None:
            for group in opt.param_groups:
                group["lr"] = run.base_lr * lr_schedule(t, history)
        X, y = next(run.batches)
        if augment is not None:
            X = augment(X, generator)
        if channels_last and X.dim() == 4:
            X = X.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            outputs = as_seed_batch(forward(X))
            value = loss_fn(outputs, y)
        value = amp.master(value)
        amp.backward(value.sum(), opt)
        for name, metric in (step_metrics or {}).items():
            history.extra[name].append(metric(model).detach())
        amp.step(opt)
        examples = X.shape[1] if isinstance(split, SeedSplits) else len(X)  # per seed
        run.cost += 3 * flops_per_example(model) * examples  # forward + backward ~ 3 forwards
        history.loss.append(value.detach())
        if loss == "cross_entropy":
            history.train_error.append(per_seed_error(outputs.detach(), y))
            since_eval.append(history.train_error[-1])
        if test is not None:
            history.test_error.append(test)
        history.lr.append(opt.param_groups[0]["lr"])
        history.n_params.append(num_parameters(model))
        history.cost_flops.append(run.cost)
        history.wall_time.append(time.perf_counter() - start)
        if (t + 1) % TRIM_EVERY == 0:
            _release_freed_memory()
        if checkpoint is not None and (t + 1 == iterations or (
                checkpoint_every and (t + 1) % checkpoint_every == 0)):
            run.model, run.opt, run.test, run.since_eval = model, opt, test, since_eval
            run.iteration, run.elapsed = t + 1, time.perf_counter() - start
            _save_checkpoint(checkpoint, run, amp, stateful, fingerprint)
    _detach(observers)
    return model, history


@dataclass
class _Run:
    """What a run carries from one iteration to the next (and a checkpoint holds)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    history: History
    batches: BatchOrder | StreamOrder
    base_lr: float
    iteration: int = 0      # updates done
    cost: float = 0.0       # training FLOPs so far
    test: torch.Tensor | None = None  # the test metric held since the last evaluation
    since_eval: list = field(default_factory=list)  # batch errors since the last evaluation
    elapsed: float = 0.0    # seconds of training before this process took over


def _load_checkpoint(path, fingerprint: dict) -> dict | None:
    """The checkpoint at ``path`` if there is one, refused if another run wrote it."""
    if path is None or not Path(path).exists():
        return None
    saved = checkpoints.load(path)
    if saved["fingerprint"] != fingerprint:
        differ = sorted(k for k in {*fingerprint, *saved["fingerprint"]}
                        if saved["fingerprint"].get(k) != fingerprint.get(k))
        raise ValueError(f"checkpoint {path} was written by a run with other settings "
                         f"({', '.join(differ)} differ): remove it, or give another path")
    return saved


def _save_checkpoint(path, run: _Run, amp: Precision, stateful: list, fingerprint: dict):
    checkpoints.save(path, {
        "fingerprint": fingerprint, "iteration": run.iteration, "elapsed": run.elapsed,
        "architecture": checkpoints.architecture(run.model),
        "tensors": checkpoints.tensors(run.model), "wrapped": run.model is not unwrap(run.model),
        "optimizer": run.opt.state_dict(),
        "scaler": amp.scaler.state_dict() if amp.scaler is not None else None,
        "batches": run.batches.state_dict(), "rng": checkpoints.rng_state(),
        "history": _packed(run.history), "base_lr": run.base_lr, "cost": run.cost,
        "test": run.test,
        "since_eval": run.since_eval, "parts": checkpoints.capture_state(stateful, run.model)})


def _resumed(saved: dict, run: _Run, optimizer: tuple, amp: Precision, device,
             channels_last: bool) -> _Run:
    """The run of a checkpoint: its network rebuilt on ``device`` (in its memory format
    before a DDP wrapper sees its strides), its optimiser loaded."""
    net = checkpoints.rebuild(saved["architecture"], device)
    model = _layout(checkpoints.load_tensors(net, saved["tensors"]), channels_last)
    if saved["wrapped"]:
        from growcore.distributed import wrap

        model = wrap(net)
    opt = make_optimizer(optimizer[0], model.parameters(), *optimizer[1:])
    opt.load_state_dict(saved["optimizer"])
    if amp.scaler is not None and saved["scaler"] is not None:
        amp.scaler.load_state_dict(saved["scaler"])
    run.batches.load_state_dict(saved["batches"])
    return _Run(model, opt, _unpacked(saved["history"]), run.batches, saved["base_lr"],
                saved["iteration"], saved["cost"], saved["test"], saved["since_eval"],
                saved["elapsed"])


SERIES = ("loss", "test_error", "train_error")  # History's per-iteration lists of tensors


def _packed(history: History) -> History:
    """``history`` with every per-iteration list of equal tensors stacked into one (a long
    run's checkpoint then holds a few tensors, not one per iteration and series)."""
    def pack(values: list):
        same = {(v.shape, v.dtype, v.device) for v in values if torch.is_tensor(v)}
        if values and len(same) == 1 and all(torch.is_tensor(v) for v in values):
            return {"stacked": torch.stack(values)}
        return values
    return dataclasses.replace(history, **{name: pack(getattr(history, name)) for name in SERIES},
                               extra={k: pack(v) for k, v in history.extra.items()})


def _unpacked(history: History) -> History:
    def unpack(values):
        return list(values["stacked"].unbind(0)) if isinstance(values, dict) else values
    return dataclasses.replace(history,
                               **{name: unpack(getattr(history, name)) for name in SERIES},
                               extra={k: unpack(v) for k, v in history.extra.items()})


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _layout(model, channels_last: bool):
    """``model``, a convolution net in the channels-last format if asked."""
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


def _prepared(model, channels_last: bool, compile: bool | str | Callable):
    """The model in its memory format, and the callable of the training forward pass."""
    _layout(model, channels_last)
    if not compile:
        return model
    torch.compiler.reset()  # the old network's graphs: never to be used again
    return torch.compile(model, backend="inductor" if compile is True else compile)


PRECISIONS = ("float32", "bfloat16", "float16")


class Precision:
    """Autocast and loss scaling of the training step.

    ``"float32"`` changes nothing; ``"bfloat16"`` runs the forward pass and the loss under
    ``torch.autocast`` (on the CPU too, where it is slow: for tests); ``"float16"`` also
    scales the loss by a ``torch.amp.GradScaler`` and unscales the gradients before the step
    metrics read them.
    """

    def __init__(self, name: str, device: str | torch.device):
        if name not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
        self.name, self.device_type = name, torch.device(device).type
        self.dtype = None if name == "float32" else getattr(torch, name)
        self.scaler = torch.amp.GradScaler(self.device_type) if name == "float16" else None

    def check(self, observers) -> None:
        """Refuse observers of activation gradients with a loss scale (they would see the
        scaled gradients, whose scale changes during the run)."""
        from growcore.stats.nagn import NAGNObserver

        if self.scaler is not None and any(isinstance(getattr(o, "observer", o), NAGNObserver)
                                           for o in observers or ()):
            raise ValueError("precision 'float16' scales the gradients that NAGN's observer "
                             "reads: use 'bfloat16' (no loss scale) or 'float32'")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def master(self, value: torch.Tensor) -> torch.Tensor:
        """The loss in float32 (autocast may leave it in the low precision)."""
        return value if self.dtype is None else value.float()

    def backward(self, value: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            value.backward()
            return
        self.scaler.scale(value).backward()
        self.scaler.unscale_(opt)  # step metrics read the true gradients

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            opt.step()
            return
        self.scaler.step(opt)
        self.scaler.update()


class BatchOrder:
    """The loop's training batches, epoch after epoch, with a state to resume from.

    For a :class:`growcore.data.Split` the batches are those of ``split.minibatches``: a new
    permutation from ``generator`` at the start of every epoch, drawn when the epoch's first
    batch is asked for (so that the augmentation, which draws from the same generator, sees
    the same sequence). Full-batch training (``batch_size`` None or at least the training
    set) gives ``split.minibatches``' one batch every time. Other splits with mini-batches
    use their own ``minibatches``, epoch after epoch (not resumable inside an epoch).
    """

    def __init__(self, split: Split, batch_size: int | None, generator: torch.Generator):
        self.split, self.batch_size, self.generator = split, batch_size, generator
        self.order: torch.Tensor | None = None
        self.position = 0
        n = len(split.y_train)
        self.full = batch_size is None or batch_size >= n
        self._own = not self.full and type(split).minibatches is not Split.minibatches
        self._epochs = _endless(split, batch_size, generator) if self._own else None

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.full:
            return next(self.split.minibatches(self.batch_size, self.generator))
        if self._own:
            return next(self._epochs)
        n = len(self.split.y_train)
        if self.order is None or self.position >= n:
            self.order = torch.randperm(n, generator=self.generator).to(self.split.y_train.device)
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.split.X_train[index], self.split.y_train[index]

    def state_dict(self) -> dict:
        """The generator's state, the epoch's permutation and the position in it."""
        if self._own:
            raise ValueError(f"{type(self.split).__name__} gives its own mini-batches: their "
                             "order cannot be saved inside an epoch")
        return {"generator": self.generator.get_state(), "order": self.order,
                "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]


class StreamOrder:
    """The loop's training batches from a stream, epoch after epoch, with a state to resume
    from: the stream's epoch and position (:meth:`ImageFolderStream.state_dict`) and the
    state of the loop's generator (which an ``augment`` of the loop may draw from)."""

    def __init__(self, stream: ImageFolderStream, generator: torch.Generator):
        self.stream, self.generator, self._epoch = stream, generator, None

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(2):  # past an epoch's last batch: the next epoch's first
            if self._epoch is None:
                self._epoch = self.stream.batches()
            batch = next(self._epoch, None)
            if batch is not None:
                return batch
            self._epoch = None
        raise ValueError(f"the stream of {self.stream.root} gave an empty epoch")

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.stream.load_state_dict(state["stream"])
        self._epoch = None  # the next batch is the saved position's


def _streamed(split, batch_size: int | None) -> Streamed | None:
    """``split`` as a :class:`Streamed` source (a bare stream with its default sample), or
    None for an in-memory split; a ``batch_size`` other than the stream's is refused."""
    if isinstance(split, Split):
        return None
    from growcore.streaming import ImageFolderStream, Streamed  # torchvision: only if used

    if isinstance(split, ImageFolderStream):
        split = Streamed.of(split)
    if not isinstance(split, Streamed):
        return None
    if batch_size not in (None, split.stream.batch_size):
        raise ValueError(f"batch_size={batch_size}: the stream gives batches of "
                         f"{split.stream.batch_size} (set when it was built)")
    return split


TRIM_EVERY = 100  # iterations between returns of freed heap memory to the system


def _release_freed_memory() -> None:
    """Give freed heap pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    The loop keeps small per-step tensors (the history) between the large transient ones of
    each step, which fragments glibc's heap: a seed-batched run of 100 teacher-student seeds
    grew by about 3 MB per step (12 GB over 3500 steps) without this, and not with it.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


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


def _evaluate_all(model, split: Split, loss: str, t: int, since_eval: list, history: History,
                  streamed: Streamed | None = None):
    """Record an evaluation; return the test metric (or None without a test set). With a
    stream, ``split`` is its sample (validation) and the test images are streamed."""
    record: dict = {"iteration": t}
    if since_eval:
        record["train_error"] = torch.stack(since_eval).mean(dim=0)
    if split.X_val is not None:
        record["val_error"] = evaluate(model, split.X_val, split.y_val, loss,
                                       per_seed=isinstance(split, SeedSplits))
    test = None
    if streamed is not None and streamed.test_in_loop:
        test = record["test_error"] = evaluate_batches(model, streamed.stream.test_batches(),
                                                       loss)
    elif split.X_test is not None:
        test = record["test_error"] = evaluate(model, split.X_test, split.y_test, loss,
                                               per_seed=isinstance(split, SeedSplits))
    history.evals.append(record)
    return test


def _attach(observers, model) -> None:
    for observer in observers or ():
        observer.attach(unwrap(model))  # hooks on the network, also inside a DDP wrapper


def _detach(observers) -> None:
    for observer in observers or ():
        observer.detach()


@torch.no_grad()
def evaluate(model, X: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             batch_size: int = 2048, per_seed: bool = False) -> torch.Tensor:
    """Test metric per seed: classification error, or mean squared error for ``"mse"``.

    The model is evaluated in eval mode (BatchNorm uses its running statistics and does not
    absorb the evaluation data; dropout is off) and returned to the mode it was in.
    ``per_seed``: ``X`` and ``y`` hold every seed's own examples, ``[S, N, ...]``
    (:class:`growcore.data.SeedSplits`).
    """
    was_training = model.training
    model.eval()
    try:
        return _evaluate(model, X, y, loss, batch_size, per_seed)
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_batches(model, batches, loss: str = "cross_entropy") -> torch.Tensor:
    """:func:`evaluate` over batches ``(X, y)`` that arrive one by one (e.g.
    :meth:`growcore.streaming.ImageFolderStream.test_batches`): the metric of all their
    examples together, per seed."""
    was_training = model.training
    model.eval()
    metric = per_seed_error if loss == "cross_entropy" else LOSSES[loss]
    total, n = 0.0, 0
    try:
        for X, y in batches:
            out = as_seed_batch(model(X))
            total, n = total + metric(out, y) * out.shape[1], n + out.shape[1]
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("no batch to evaluate")
    return total / n


def _evaluate(model, X, y, loss, batch_size, per_seed: bool = False):
    per_seed_targets = y.dim() == (2 if loss == "cross_entropy" else 3)
    metric = per_seed_error if loss == "cross_entropy" else LOSSES[loss]
    total, n = 0.0, X.shape[1] if per_seed else len(X)
    for start in range(0, n, batch_size):
        chunk = slice(start, start + batch_size)
        out = as_seed_batch(model(X[:, chunk] if per_seed else X[chunk]))
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
    includes the step's ``seconds``.

    The step runs in float32 even inside an autocast region (its statistics feed SVDs and
    exact comparisons). The where-criterion sees the network itself, also when ``model`` is
    a ``DistributedDataParallel`` wrapper (whose ``plan.op`` grows the wrapped network, see
    :func:`growcore.distributed.distributed_op`).
    """
    start = time.perf_counter()
    probe = Probe(split, loss)
    with torch.autocast(_device_of(model).type, enabled=False):
        proposals, info = plan.propose(unwrap(model), probe)
        growth = _apply(model, proposals, plan, probe)
    lr = opt.param_groups[0]["lr"] * plan.lr_factor
    opt = rebuild_optimizer(opt, model, growth, lr=lr)
    info = {**info, "proposals": [p.describe() for p in proposals],
            "seeds": list(getattr(model, "seeds", [0])),
            "n_params_before": num_parameters(model),
            "n_params_after": num_parameters(growth.model), "lr_after": lr,
            "seconds": time.perf_counter() - start}
    return growth.model, opt, info


def _apply(model, proposals, plan: GrowthPlan, probe: Probe):
    """``plan.apply``; seeds whose growth gives different shapes raise DivergentGrowth."""
    try:
        return plan.apply(model, proposals, probe)
    except SeedShapeMismatch as error:
        seeds = list(getattr(model, "seeds", [0]))
        chosen: dict = {}
        for p in proposals:  # a depth site's position, or the width sites and their units
            choice = p.site.position if p.site.kind == "depth" else (p.site.name, p.amount)
            chosen.setdefault(p.seed, []).append(choice)
        raise DivergentGrowth(seeds, [chosen.get(s) for s in range(len(seeds))]) from error


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

"""One driver for any experiment described by plain configuration.

A configuration is a mapping (a YAML file for the command line) with these sections::

    name: vgg nagn x gradmax
    seeds: [0, 1, 2]
    data: {name: cifar10, n_train: 5000, n_val: 1000, n_test: 1000, augment: true}
    model: {name: vgg11, width: 0.25, activation: relu1}
    train: {epochs: 20, batch_size: 128, lr: 0.05, momentum: 0.9, schedule: cosine}
    plan: {when: {name: fragrow, alpha: 4, n_blocks: 4, finetune_min: 5},
           where: nagn, how: {name: gradmax, batch_size: 512}}

``plan`` is optional (a fixed network) and is written by the names of
:mod:`growcore.registry`; the driver offers every part the values that depend on the run
(``iterations_per_epoch``, ``total_epochs``, ``seed``, ``loss``). Everything is checked before
any compute: unknown names and keys, bad values, and a plan that does not fit the model (built
for the first seed and checked against it).

Options beyond the obvious ones:

- ``data: {name: imagefolder, root: DIR, image_size: 224, stream: true, num_workers: 8}``
  (``imagenet`` is the same name): the ImageFolder tree ``DIR/train/<class>/*``,
  ``DIR/val/<class>/*`` streamed from disk (:class:`growcore.streaming.ImageFolderStream`:
  worker processes, pinned memory, random resized crops and flips, a seeded resumable order
  seeded by the seed group's first seed, sharded under torchrun) instead of decoded into
  memory; the way for 224 px ImageNet. Options: ``image_size`` (default 224),
  ``num_workers`` (default :data:`growcore.streaming.DEFAULT_WORKERS`), ``n_val`` (training
  images held out for the validation error, default 0), ``n_sample`` (training images decoded
  into memory for the growth steps' statistics, default
  :data:`growcore.streaming.DEFAULT_SAMPLE`) and ``split_seed`` (the hold-out's and the
  sample's). Needs ``train.batch_size``; ``final_train`` is then the error on the sample.
  Without ``stream`` an ImageFolder tree is decoded into memory at ``image_size`` (default
  64; ``n_train``, ``n_val``, ``n_test`` choose seeded subsets), the fastest for small sizes.
- ``data.per_seed: true``: seed ``s`` draws its own data (``split_seed = s``; the
  teacher-student task, where the seed fixes the teacher too). ``data.dtype`` (``float32`` or
  ``float64``) for the generated data sets.
- ``model.per_seed: {"3": {option: value}}``: options of one seed's model (e.g. the static
  baseline of each seed's grown size); ``model.dtype`` for the seed-batched nets.
- ``model.seed_batched: true``: an ordinary model's seeds trained as one tensor program
  (:class:`growcore.models.stacked.StackedSeeds`; seed ``s`` initialised as it is alone,
  after ``torch.manual_seed(init_seed + s)``). With ``data.per_seed`` the seeds' data are
  stacked (:class:`growcore.data.SeedSplits`, full-batch training only).
- ``train.init_seed``: seed ``s``'s model is initialised after ``torch.manual_seed(init_seed +
  s)``; ``train.test_in_loop: false`` measures the test set only once, after training;
  ``train.log: epoch`` keeps the per-iteration series (loss, learning rate, size, cost) at
  the first iteration of every epoch only; ``train.step_metrics: [grad_norm]`` records a
  metric after every backward pass (:data:`STEP_METRICS`).
- ``train.precision`` (``float32``, ``bfloat16``, ``float16``; default ``auto``: bfloat16
  autocast for a convolution net on a GPU, else float32), ``train.channels_last`` (default:
  for a convolution net on a GPU) and ``train.compile`` (a ``torch.compile`` backend, default
  ``none``): how the training step runs (:func:`gpu_settings`; the record's ``execution``).
- ``train.checkpoint_every: N`` (or ``run_experiment(checkpoint_every=N)``, ``--checkpoint-
  every N``): a checkpoint every N iterations, from which a rerun of the same configuration
  continues bit for bit (:func:`growcore.train.train`); not part of the configuration hash.
  Every record has a ``status``: ``complete``, or ``interrupted`` for a run that stopped
  part-way (with its checkpoints; :func:`saved_record` never takes one).

Each seed trains its own network; a seed-batched model trains all seeds as one tensor program
(seeds whose growth chooses sites of different shapes are rerun grouped by their choice).
Under torchrun (``world > 1``) every rank trains a DDP-wrapped network on its shard of the
training set with ``batch_size / world`` examples per step, growth decided on rank 0
(:mod:`growcore.distributed`); rank 0 saves the record.

One record holds all seeds. ``metrics`` maps each key to a list with one entry per seed, in
the order of ``seeds`` (``metrics["seed"]``): the per-iteration series ``loss``,
``test_error`` (the test metric measured inside the loop, held between evaluations),
``n_params``, ``cost_flops``, ``wall_time``, ``lr`` and the step metrics; ``evals`` (each
evaluation's iteration and this seed's ``train_error``, ``val_error``, ``test_error``);
``final_test`` and ``final_train`` (the final model in eval mode); ``total_cost_flops`` (the
training FLOPs after the last iteration, also where ``log: epoch`` thins the series);
``final_model`` (its architecture, with ``depths`` for a staged model), ``plan`` (the plan's
full description), ``when`` (what the when-policy observed: NAGN's stop, FRAGrow's trace),
``growth_time`` and ``step_time``; ``metrics["events"]`` is the flat list of growth events,
each naming its seeds.

Command line::

    python -m growcore.driver run.yml [--out DIR] [--preset NAME] [--device auto|cpu|cuda]
    python -m growcore.driver --chapter fragrow --preset gpu --list
    torchrun --nproc_per_node=8 -m growcore.driver --chapter fragrow --preset gpu \\
        --experiment "resnet CIFAR-10 FRAGrow s0"
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import glob
import importlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from growcore import results
from growcore.data import SeedSplits, Split, spiral, teacher_student
from growcore.losses import LOSSES
from growcore.models.factory import MODELS, ModelError, build_named
from growcore.models.seed_batched import SeedBatchedNet
from growcore.models.sites import width_sites
from growcore.models.stacked import StackedSeeds
from growcore.models.staged import depths, is_staged, unwrap
from growcore.ops import GrowThenCosine, width
from growcore.params import ParameterError, Spec, check, require
from growcore.plan import GrowthPlan, PlanError
from growcore.registry import build_plan
from growcore.runtime import resolve_device
from growcore.train import DivergentGrowth, evaluate, evaluate_batches, train

SECTIONS = ("name", "seeds", "data", "model", "train", "plan")
SCHEDULES = ("constant", "cosine", "grow_then_cosine")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
CHAPTERS = ("sensli", "gradmax", "nagn", "fragrow")


def gradient_norm(model) -> torch.Tensor:
    """Norm of the flattened gradient of all parameters (GradMax Fig. 2b), per seed: ``[S]``
    for a seed-batched model (parameters ``[S, ...]``), ``[1]`` else."""
    if isinstance(model, SeedBatchedNet):
        return torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in model.parameters()]
                           ).sum(0).sqrt()
    return torch.cat([p.grad.flatten() for p in model.parameters()]).norm().view(1)


STEP_METRICS: dict[str, Callable] = {"grad_norm": gradient_norm}


def _nagn_observer(per_epoch: int, layers: str = "activation_input", window: int | None = None):
    """NAGN's observer (activation-gradient norms of the training batches): at the input of
    the activation (after BatchNorm) or at the producer's output (before it); ``window``
    batches (default one epoch)."""
    from growcore.stats.nagn import NAGNObserver, default_layers, producer_layers

    readings = {"activation_input": default_layers, "producer_output": producer_layers}
    require(layers in readings, "train.observe.layers",
            f"must be one of {sorted(readings)}; got {layers!r}")
    return NAGNObserver(window or per_epoch, readings[layers])


# observers by name: what a run reads during its normal backward passes, without a plan
OBSERVERS: dict[str, Callable] = {"nagn": _nagn_observer}
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
COMPILERS = ("none", "inductor", "aot_eager", "eager")  # torch.compile backends
# options of how a run executes on its hardware; absent, they follow the device (auto): on a
# GPU a convolution net trains under bf16 autocast in channels-last format
GPU_TRAIN = {"precision": Spec(str, choices=PRECISIONS), "channels_last": Spec(bool),
             "compile": Spec(str, choices=COMPILERS)}
# options that change no result: not part of the configuration a record is identified by
RUNTIME_TRAIN = {"checkpoint_every": Spec(int, minimum=1)}
TRAIN = {
    "iterations": Spec(int, minimum=1), "epochs": Spec(float, minimum=0),
    "batch_size": Spec(int, minimum=1), "lr": Spec(float, minimum=0),
    "optimizer": Spec(str, choices=("sgd", "adam", "adamw")), "momentum": Spec(float, minimum=0),
    "weight_decay": Spec(float, minimum=0), "loss": Spec(str, choices=tuple(LOSSES)),
    "evals_per_epoch": Spec(int, minimum=1), "eval_every": Spec(int, minimum=1),
    "schedule": Spec(str, choices=SCHEDULES), "init_seed": Spec(int, minimum=0),
    "test_in_loop": Spec(bool), "eval_batch_size": Spec(int, minimum=1),
    "log": Spec(str, choices=("iteration", "epoch")),
    "step_metrics": Spec(list, item=str, choices=tuple(STEP_METRICS)),
    "observe": Spec(dict), **GPU_TRAIN, **RUNTIME_TRAIN}
TRAIN_DEFAULTS = {"batch_size": None, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0,
                  "loss": "cross_entropy", "schedule": "constant", "init_seed": 0,
                  "test_in_loop": True, "eval_batch_size": 2048, "log": "iteration",
                  "step_metrics": [], "observe": {}}


# ---------------------------------------------------------------- data
def _images(name: str):
    def load(n_train=None, n_val=0, n_test=None, split_seed=0, root=None, archive=None,
             image_size=64):
        from growcore.images import load_dataset

        require(name == "cifar10" or root is not None, "data.root",
                f"{name} is read from a folder: give its root")
        return load_dataset(name, root, archive, image_size=image_size, n_train=n_train,
                            n_val=n_val, n_test=n_test, seed=split_seed)
    return load


def _spiral(n_per_class=300, test_fraction=0.25, split_seed=0, dtype="float32"):
    return spiral(n_per_class, test_fraction, split_seed, dtype=DTYPES[dtype])


def _teacher_student(teacher=(20, 10, 10), n_points=1000, split_seed=0, dtype="float32"):
    return teacher_student(list(teacher), n_points, split_seed, DTYPES[dtype])[0]


DATA: dict[str, Callable[..., Split]] = {
    "spiral": _spiral, "teacher_student": _teacher_student,
    "cifar10": _images("cifar10"), "cifar100": _images("cifar100"),
    "imagenet": _images("imagenet"), "imagefolder": _images("imagenet")}
STREAMABLE = ("imagenet", "imagefolder")  # data sets that data.stream reads from disk
STREAM_DATA = {"name": Spec(str, choices=STREAMABLE), "root": Spec(str),
               "image_size": Spec(int, minimum=1), "stream": Spec(bool),
               "num_workers": Spec(int, minimum=0), "n_val": Spec(int, minimum=0),
               "n_sample": Spec(int, minimum=1), "split_seed": Spec(int, minimum=0),
               "augment": Spec(bool)}


def is_streamed(data_spec: dict) -> bool:
    """Whether a ``data`` section reads its images from disk batch by batch."""
    return bool(data_spec.get("stream"))


def _check_stream(config: dict) -> None:
    """The ``data`` section of a streamed run, and what it needs of the others."""
    spec = config["data"]
    bad = sorted(set(spec) - set(STREAM_DATA))
    require(not bad, "data", f"option(s) {bad} do not apply to a streamed data set (it "
            f"trains on every image of the tree but the hold-out); valid: {sorted(STREAM_DATA)}")
    for key, value in spec.items():
        check(f"data.{key}", value, STREAM_DATA[key])
    require("root" in spec, "data.root", "a streamed data set is read from a folder: give it")
    require(spec.get("augment", True), "data.augment", "a stream always augments (random "
            "resized crop and flip): remove the option or set it true")
    require(config["train"].get("batch_size") is not None, "train.batch_size",
            "a streamed data set trains on mini-batches: give their size")


def load_data(spec: dict, seed: int | None = None) -> Split:
    """The data of a configuration's ``data`` section (for ``seed`` with ``per_seed``)."""
    options = {k: v for k, v in spec.items()
               if k not in ("name", "augment", "per_seed", "stream")}
    if spec.get("per_seed"):
        options["split_seed"] = seed
    try:
        return DATA[spec["name"]](**options)
    except TypeError as error:
        raise ParameterError(f"data {spec['name']!r}: {error}") from error
    except KeyError as error:
        raise ParameterError(f"data.dtype must be one of {sorted(DTYPES)}; got "
                             f"{spec.get('dtype')!r}") from error


# ---------------------------------------------------------------- models
def model_spec(spec: dict, seeds: list[int]) -> dict:
    """``spec`` with the options of ``model.per_seed`` for a one-seed group applied."""
    own = spec.get("per_seed", {}).get(str(seeds[0]), {}) if len(seeds) == 1 else {}
    return {**{k: v for k, v in spec.items() if k != "per_seed"}, **own}


def build_model(spec: dict, split: Split, seeds: list[int],
                init_seed: int | None = None) -> nn.Module:
    """The model of ``spec`` (``{"name": ..., options}``) for the data of ``split``; with
    ``seed_batched``, seed ``s``'s network built after ``torch.manual_seed(init_seed + s)``."""
    if isinstance(split, SeedSplits):
        split = split.seed(0)  # the shapes of one seed's data
    if spec.get("seed_batched"):
        require(spec["seed_batched"] is True, "model.seed_batched", "must be true or absent")
        one = {k: v for k, v in spec.items() if k != "seed_batched"}
        nets = []
        for seed in seeds:
            if init_seed is not None:
                torch.manual_seed(init_seed + seed)
            nets.append(build_model(one, split, [seed]))
        try:
            return StackedSeeds(nets, seeds)
        except ValueError as error:
            raise ParameterError(f"model.seed_batched: {error}") from error
    spec = model_spec(spec, seeds)
    name = spec.get("name")
    if name not in MODELS:
        raise ParameterError(f"model.name must be one of {sorted(MODELS)}, got {name!r}")
    classes = (split.y_train.shape[-1] if split.y_train.is_floating_point()
               else int(split.y_train.max()) + 1)
    if hasattr(split, "classes"):
        classes = len(split.classes)
    options = {k: v for k, v in spec.items() if k != "name"}
    if "dtype" in options:
        require(options["dtype"] in DTYPES, "model.dtype",
                f"must be one of {sorted(DTYPES)}; got {options['dtype']!r}")
        options["dtype"] = DTYPES[options["dtype"]]
    try:
        return build_named(name, split.X_train.shape[1:], classes, seeds, **options)
    except ModelError as error:
        raise ParameterError(str(error)) from error


def architecture(model: nn.Module) -> dict:
    """What a (grown) model is: its ``spec()`` where it has one, else its class, its blocks
    per stage and the width of every width site."""
    if hasattr(model, "spec"):
        spec = model.spec()
        return {**spec, "depths": depths(model)} if is_staged(model) else spec
    found: dict = {"class": type(model).__name__}
    if is_staged(model):
        found["depths"] = depths(model)
    found["widths"] = {site.name: width(model, site) for site in width_sites(model)}
    return found


# ---------------------------------------------------------------- checking
def validate(config: dict) -> dict:
    """The configuration with defaults filled in, or a ParameterError naming what is wrong."""
    if not isinstance(config, dict):
        raise ParameterError(f"a configuration is a mapping with {SECTIONS}, got {config!r}")
    unknown = sorted(set(config) - set(SECTIONS))
    require(not unknown, "configuration", f"unknown section(s) {unknown}; valid: {SECTIONS}")
    for section in ("name", "seeds", "data", "model", "train"):
        require(section in config, section, "missing")
    check("name", config["name"], Spec(str))
    check("seeds", config["seeds"], Spec(list, item=int, minimum=0, min_length=1))
    for section in ("data", "model"):
        require(isinstance(config[section], dict) and "name" in config[section], section,
                "must be a mapping with a 'name'")
    require(config["data"]["name"] in DATA, "data.name",
            f"must be one of {sorted(DATA)}; got {config['data']['name']!r}")
    per_seed = config["model"].get("per_seed", {})
    require(isinstance(per_seed, dict) and all(isinstance(v, dict) for v in per_seed.values())
            and set(per_seed) <= {str(s) for s in config["seeds"]}, "model.per_seed",
            f"must map seeds of {config['seeds']} (as strings) to option mappings; "
            f"got {per_seed!r}")
    train_spec = dict(config["train"])
    bad = sorted(set(train_spec) - set(TRAIN))
    require(not bad, "train", f"unknown option(s) {bad}; valid: {sorted(TRAIN)}")
    require(("iterations" in train_spec) != ("epochs" in train_spec), "train",
            "give exactly one of 'iterations' and 'epochs'")
    require("lr" in train_spec, "train.lr", "missing")
    for key, value in train_spec.items():
        check(f"train.{key}", value, TRAIN[key])
    require(train_spec["lr"] > 0, "train.lr", f"must be positive; got {train_spec['lr']}")
    for label, spec in train_spec.get("observe", {}).items():
        require(isinstance(spec, dict) and spec.get("name") in OBSERVERS, "train.observe",
                f"{label!r} must be a mapping with a 'name' in {sorted(OBSERVERS)}; got {spec!r}")
    if "stream" in config["data"]:
        check("data.stream", config["data"]["stream"], Spec(bool))
    if is_streamed(config["data"]):
        _check_stream(config)
    return {**config, "train": {**TRAIN_DEFAULTS, **train_spec}, "plan": config.get("plan")}


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every seed group of a run shares: the loop's counts and the plan's context."""

    iterations: int
    per_epoch: int
    eval_every: int
    batch_size: int | None
    context: dict


def _setup(train_spec: dict, n_train: int, world: int) -> Setup:
    batch = train_spec["batch_size"] // world if train_spec["batch_size"] else None
    per_epoch = max(1, math.ceil(n_train / batch)) if batch else 1
    iterations = (train_spec["iterations"] if "iterations" in train_spec
                  else max(1, round(train_spec["epochs"] * per_epoch)))
    eval_every = (train_spec.get("eval_every")
                  or max(1, per_epoch // train_spec.get("evals_per_epoch", 1)))
    context = {"iterations_per_epoch": per_epoch, "total_epochs": iterations / per_epoch,
               "loss": train_spec["loss"]}
    return Setup(iterations, per_epoch, eval_every, batch, context)


def _plan(spec: dict | None, context: dict) -> GrowthPlan | None:
    if spec is None:
        return None
    try:
        return build_plan(spec, context)
    except PlanError as error:
        raise ParameterError(f"'plan': {error}") from error


# ---------------------------------------------------------------- running
def run_experiment(config: dict, *, split: Split | None = None, directory=None,
                   preset: str = "custom", device: str = "auto", progress: bool = True,
                   save: bool = True, check_only: bool = False, keep_models: bool = False,
                   reuse: bool = False, batched: bool = True, rank: int = 0,
                   world: int = 1, checkpoint_every: int | None = None) -> dict:
    """Run a configuration for all its seeds; return (and save) its record.

    Parameters
    ----------
    config : dict
        See the module docstring.
    split : Split, optional
        Data to use instead of ``config["data"]`` (tests, or data already loaded); not with
        ``data.per_seed``. A :class:`growcore.data.SeedSplits` gives each seed its own split
        (in the order of ``seeds``): every seed group trains on its own seeds' splits (a seed
        alone on its own split), also when a growth regroups the seeds.
    directory : path, optional
        Where the record goes (default ``$GROWCORE_RESULTS``).
    check_only : bool
        Load the data, build the first seed's model and plan, check them, and return the
        validated configuration without training.
    keep_models : bool
        Keep a copy of every seed's model just before each growth, as
        ``record["models_at_growth"]`` (per seed), and the final models as
        ``record["final_models"]`` (per seed; a seed-batched model is the same object for all
        its seeds); neither is saved.
    batched : bool
        False trains a seed-batched model one seed at a time (the reference the batched
        program must reproduce).
    reuse : bool
        Return the newest saved record of this name and configuration in ``directory`` if
        there is one, written by one process or a torchrun launch (:func:`saved_record`),
        instead of running.
    rank, world : int
        This process's rank and the number of processes (torchrun, see
        :func:`growcore.distributed.init_from_environment`).
    checkpoint_every : int, optional
        Write a checkpoint every this many iterations (default ``train.checkpoint_every``;
        None: no checkpoints), in ``<directory>/checkpoints/`` under the run's name,
        configuration hash and seeds (:func:`checkpoint_path`; one file per rank under
        torchrun). A run whose checkpoint exists continues from it, bit for bit; a run that
        stops early (an exception, an interrupt) leaves its checkpoints and a record with
        ``status: interrupted`` (never reused); a complete record removes them.
    """
    config = validate(config)
    every = checkpoint_every or config["train"].get("checkpoint_every")
    stored = identity(config)
    stored = stored if world == 1 else {**stored, "world_size": world}  # a different run
    if reuse:
        found = saved_record(config, directory or results.results_dir())
        if found is not None:
            return found
    device = resolve_device(device)
    seeds, per_seed_data = config["seeds"], bool(config["data"].get("per_seed"))
    require(split is None or not per_seed_data, "data.per_seed",
            "data drawn per seed cannot come from a given split")
    given_per_seed = isinstance(split, SeedSplits)  # a seed group runs on its seeds' splits
    require(not given_per_seed or split.n_seeds == len(seeds), "split",
            f"a SeedSplits must hold one split per seed of {seeds}; got "
            f"{split.n_seeds if given_per_seed else None}")
    streaming = is_streamed(config["data"])
    require(split is None or not streaming, "data.stream",
            "a streamed data set cannot come from a given split")
    if streaming:
        first_split = open_stream(config, seeds[0], device, rank, world)
        n_train = first_split.stream.n_examples
    else:
        first_split = (split or load_data(config["data"], seeds[0])).to(device)
        n_train = len((first_split.seed(0) if given_per_seed else first_split).y_train)
    first = build_model(config["model"], _in_memory(first_split), seeds[:1])  # before compute
    batched = batched and isinstance(first, SeedBatchedNet)
    require(not (batched and streaming), "data.stream",
            "seed-batched models train on in-memory data")
    require(not (batched and per_seed_data) or config["train"].get("batch_size") is None,
            "data.per_seed", "a seed-batched model trains per-seed data full-batch only")
    require(world == 1 or not batched, "world", "seed-batched models run in one process")
    setup = _setup(config["train"], n_train // world, world)
    plan = _plan(config["plan"], {**setup.context, "seed": seeds[0]})
    if plan is not None:
        try:
            plan.check(first)
        except PlanError as error:
            raise ParameterError(f"'plan': {error}") from error
    if check_only:
        return config
    pending = [list(seeds)] if batched else [[s] for s in seeds]
    start, done, regrouped = time.perf_counter(), [], False
    hardware = gpu_settings(config["train"], device, first)
    folder = Path(directory or results.results_dir()) / "checkpoints"
    paths = {}
    while pending:
        group = pending.pop(0)
        data = (_group_split(first_split, seeds, group) if given_per_seed
                else first_split if group == seeds[:1] or not (per_seed_data or streaming)
                else open_stream(config, group[0], device, rank, world) if streaming
                else load_data(config["data"], group[0]).to(device) if len(group) == 1
                else SeedSplits.stack([load_data(config["data"], s) for s in group]).to(device))
        if every:
            paths[tuple(group)] = checkpoint_path(folder, stored, group, rank, world)
        try:
            done.append(_run_group(config, group, data, setup, device, progress, rank, world,
                                   keep_models, checkpoint=paths.get(tuple(group)),
                                   checkpoint_every=every, hardware=hardware))
        except DivergentGrowth as divergence:
            if len(group) == 1:
                raise
            # seeds chose sites of different shapes: rerun them grouped by their choice
            choices: dict[str, list[int]] = {}
            for seed, site in zip(divergence.seeds, divergence.sites):
                choices.setdefault(repr(site), []).append(seed)
            pending.extend(choices.values())
            regrouped = True
        except BaseException as error:  # stopped part-way: say so, keep the checkpoints
            if every and save and rank == 0:
                _interrupted(config, stored, preset, device, start, done, paths, error,
                             directory)
            raise
    metrics = _merge(done, seeds)
    record = results.make_record(
        config["name"], stored, preset=preset, seeds=seeds, device=device,
        wall_time_s=time.perf_counter() - start, iterations=setup.iterations,
        iterations_per_epoch=setup.per_epoch, batched_seeds=batched,
        seed_groups=[run["seed"] for run in done], regrouped=regrouped, world_size=world,
        status="complete", execution={**hardware, "checkpoint_every": every},
        resumed_at=[run["resumed_at"] for run in done], metrics=metrics)
    record = results.store(record, directory, save and rank == 0)
    for path in paths.values():  # the run is complete: nothing to resume from
        path.unlink(missing_ok=True)
    if keep_models:
        where = [next((run, run["seed"].index(s)) for run in done if s in run["seed"])
                 for s in seeds]
        record["models_at_growth"] = [run["models_at_growth"][i] for run, i in where]
        record["final_models"] = [run["final_model_object"] for run, _ in where]
    return record


def saved_record(config: dict, directory) -> dict | None:
    """The newest complete record of ``config`` saved in ``directory``, by one process or by
    a torchrun launch of any size (whose stored configuration adds ``world_size``); None if
    none is (a record of an interrupted run is never taken)."""
    config = validate(config)
    want = results.config_hash(identity(config))
    paths = sorted(Path(directory).glob(f"{glob.escape(config['name'])}--*.json"),
                   key=lambda path: path.name.rsplit("--", 1)[-1], reverse=True)
    for path in paths:
        record = results.load_record(path)
        own = {k: v for k, v in record["config"].items() if k != "world_size"}
        if results.config_hash(own) == want and results.is_complete(record):
            return record
    return None


def identity(config: dict) -> dict:
    """The validated ``config`` without the options that change no result
    (:data:`RUNTIME_TRAIN`, e.g. ``checkpoint_every``): what a record is identified by."""
    train_spec = {k: v for k, v in config["train"].items() if k not in RUNTIME_TRAIN}
    return {**config, "train": train_spec}


def checkpoint_path(folder, stored: dict, seeds: list[int], rank: int = 0,
                    world: int = 1) -> Path:
    """``<folder>/<name>--<config hash>--seeds-<s1-s2...>[--rank<r>of<w>].pt``: the
    checkpoint of one seed group of a run (``stored``: its configuration as recorded)."""
    ranked = f"--rank{rank}of{world}" if world > 1 else ""
    stem = f"{stored['name']}--{results.config_hash(stored)}--seeds-"
    return Path(folder) / f"{stem}{'-'.join(map(str, seeds))}{ranked}.pt"


def gpu_settings(train_spec: dict, device: str, model: nn.Module) -> dict:
    """How the training step runs (:data:`GPU_TRAIN`): the options given, else by the
    device: a convolution net on a GPU trains under bfloat16 autocast in the channels-last
    format; any other model, or on the CPU, in float32 (contiguous); nothing is compiled."""
    conv_on_gpu = (torch.device(device).type == "cuda"
                   and any(isinstance(m, nn.Conv2d) for m in model.modules()))
    precision = train_spec.get("precision", "auto")
    if precision == "auto":
        precision = "bfloat16" if conv_on_gpu else "float32"
    return {"precision": precision,
            "channels_last": train_spec.get("channels_last", conv_on_gpu),
            "compile": train_spec.get("compile", "none")}


def _interrupted(config, stored, preset, device, start, done, paths, error, directory):
    """Save the record of a run that stopped before its end: what it completed, where its
    checkpoints are and how far they got (``status: interrupted``)."""
    reached = {" ".join(map(str, group)): _checkpoint_iteration(path)
               for group, path in paths.items()}
    record = results.make_record(
        config["name"], stored, preset=preset, seeds=config["seeds"], device=device,
        wall_time_s=time.perf_counter() - start, status="interrupted",
        error=f"{type(error).__name__}: {error}",
        completed_groups=[run["seed"] for run in done],
        checkpoints={" ".join(map(str, group)): str(path) for group, path in paths.items()},
        checkpoint_iteration=reached)
    results.store(record, directory)


def _checkpoint_iteration(path: Path) -> int | None:
    """The iterations a checkpoint has done (None: no checkpoint was written)."""
    from growcore.checkpoint import load

    return load(path, map_location="cpu")["iteration"] if path.exists() else None


def _schedule(name: str, iterations: int, plan: GrowthPlan | None) -> Callable | None:
    if name == "cosine":
        return lambda t, history: 0.5 * (1 + math.cos(math.pi * t / iterations))
    if name == "grow_then_cosine":
        growths = getattr(plan.when, "n_blocks", 0) if plan is not None else 0
        return GrowThenCosine(iterations, growths)
    return None


def open_stream(config: dict, seed: int, device: str, rank: int = 0, world: int = 1):
    """The :class:`growcore.streaming.Streamed` source of a validated configuration whose
    data is streamed: this rank's batches of ``train.batch_size / world`` images in the order
    of ``seed``, its sample on ``device``."""
    from growcore.streaming import DEFAULT_SAMPLE, DEFAULT_WORKERS, ImageFolderStream, Streamed

    spec, t = config["data"], config["train"]
    stream = ImageFolderStream(
        spec["root"], spec.get("image_size", 224), max(1, t["batch_size"] // world), seed=seed,
        num_workers=spec.get("num_workers", DEFAULT_WORKERS), device=device, rank=rank,
        world=world, test_batch_size=t["eval_batch_size"], n_val=spec.get("n_val", 0),
        split_seed=spec.get("split_seed", 0))
    return Streamed.of(stream, spec.get("n_sample", DEFAULT_SAMPLE))


def _in_memory(data) -> Split:
    """The in-memory split of a data source: a split itself, or a stream's sample."""
    return data if isinstance(data, Split) else data.sample


def _group_split(split: SeedSplits, seeds: list[int], group: list[int]) -> Split:
    """The splits of a seed group's seeds out of a given split of every seed of ``seeds``
    (a seed alone: its own split, as a run of that seed alone gets it)."""
    if group == list(seeds):
        return split
    where = [seeds.index(seed) for seed in group]
    if len(where) == 1:
        return split.seed(where[0])
    return SeedSplits.stack([split.seed(i) for i in where])


def _distributed(model: nn.Module, plan: GrowthPlan | None, device: str,
                 channels_last: bool = False):
    from growcore.distributed import synchronised, wrap

    if plan is not None:
        plan = synchronised(plan, device)
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)  # before DDP records the strides
    return wrap(model), plan


def _run_group(config: dict, seeds: list[int], split: Split, setup: Setup, device: str,
               progress: bool, rank: int, world: int, keep_models: bool = False,
               checkpoint: Path | None = None, checkpoint_every: int | None = None,
               hardware: dict | None = None) -> dict:
    t = config["train"]
    streamed, split = (None, split) if isinstance(split, Split) else (split, split.sample)
    torch.manual_seed(t["init_seed"] + seeds[0])
    model = build_model(config["model"], split, seeds, t["init_seed"]).to(device)
    hardware = hardware or gpu_settings(t, device, model)
    plan = _plan(config["plan"], {**setup.context, "seed": seeds[0]})
    schedule = _schedule(t["schedule"], setup.iterations, plan)
    policy = plan.when if plan is not None else None
    loop_split = split if t["test_in_loop"] else dataclasses.replace(split, X_test=None,
                                                                       y_test=None)
    if streamed is not None:  # the stream shards itself, its sample too
        loop_split = dataclasses.replace(streamed, test_in_loop=t["test_in_loop"])
    elif world > 1:
        from growcore.distributed import shard

        loop_split = shard(loop_split, rank, world)
    if world > 1:
        model, plan = _distributed(model, plan, device, hardware["channels_last"])
    kept: list = []
    observed = {label: _observer(spec, setup.per_epoch) for label, spec in t["observe"].items()}
    augment = None
    if config["data"].get("augment") and streamed is None:  # a stream augments itself
        from growcore.images import augment_cifar
        augment = augment_cifar
    final, history = train(
        model, loop_split, iterations=setup.iterations, lr=t["lr"], optimizer=t["optimizer"],
        momentum=t["momentum"], weight_decay=t["weight_decay"], batch_size=setup.batch_size,
        loss=t["loss"], plan=plan, eval_every=setup.eval_every,
        step_metrics={name: STEP_METRICS[name] for name in t["step_metrics"]},
        lr_schedule=schedule, augment=augment, seed=seeds[0], progress=progress,
        observers=list(observed.values()),
        before_growth=(lambda m: kept.append(copy.deepcopy(m))) if keep_models else None,
        desc=f"{config['name']} seeds {seeds}", checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, precision=hardware["precision"],
        channels_last=hardware["channels_last"],
        compile=False if hardware["compile"] == "none" else hardware["compile"])
    if world > 1:
        final = unwrap(final)
    n, size = len(seeds), t["eval_batch_size"]
    per_seed = isinstance(split, SeedSplits)
    test = (evaluate(final, split.X_test, split.y_test, t["loss"], size, per_seed).tolist()
            if split.X_test is not None else [None] * n)
    if streamed is not None:
        test = evaluate_batches(final, streamed.stream.test_batches(), t["loss"]).tolist()
    train_metric = evaluate(final, split.X_train, split.y_train, t["loss"], size,
                            per_seed).tolist()
    h = history.as_dict()
    every = setup.per_epoch if t["log"] == "epoch" else 1
    shared = {key: h[key][::every] for key in ("n_params", "cost_flops", "wall_time", "lr")}
    series = ["loss", *t["step_metrics"], *(["test_error"] if h["test_error"] else [])]
    report = getattr(getattr(policy, "policy", policy), "report", dict)
    growth_time = [e["seconds"] for e in h["events"]]
    return {"seed": list(seeds),
            **{key: [h[key][i][::every] for i in range(n)] for key in series},
            **{key: [value] * n for key, value in shared.items()},
            "evals": [_evals_of(h["evals"], i) for i in range(n)],
            "final_test": test, "final_train": train_metric,
            "total_cost_flops": [h["cost_flops"][-1]] * n,
            "final_model": [architecture(final)] * n, "plan": [h["plan"]] * n,
            "when": [report()] * n, "growth_time": [growth_time] * n,
            "step_time": [float(np.diff(h["wall_time"]).mean()) if setup.iterations > 1
                          else None] * n,
            "final_model_object": final if keep_models else None,
            "resumed_at": h["resumed_at"],
            "observed": [{label: o.nagn().tolist() for label, o in observed.items()}] * n,
            "events": _events_of(h["events"], seeds), "models_at_growth": [kept] * n}


def _observer(spec: dict, per_epoch: int):
    options = {k: v for k, v in spec.items() if k != "name"}
    try:
        return OBSERVERS[spec["name"]](per_epoch, **options)
    except TypeError as error:
        raise ParameterError(f"train.observe {spec['name']!r}: {error}") from error


def _events_of(events: list[dict], seeds: list[int]) -> list[dict]:
    """The growth events of a seed group; those of a one-seed group name its seed (a model
    that is not seed-batched reports seed 0)."""
    return [{**e, "seeds": list(seeds)} for e in events] if len(seeds) == 1 else events


def _evals_of(evals: list[dict], i: int) -> list[dict]:
    """The evaluations of seed ``i`` of a group: per-seed values as plain numbers."""
    return [{k: v[i] if isinstance(v, list) else v for k, v in e.items()} for e in evals]


def _merge(done: list[dict], seeds: list[int]) -> dict:
    """Metrics of seed groups, one entry per seed in the order of ``seeds``; events flat."""
    keys = [k for k in done[0]
            if k not in ("seed", "events", "models_at_growth", "final_model_object",
                         "resumed_at")]
    position = {seed: (g, i) for g, run in enumerate(done) for i, seed in enumerate(run["seed"])}
    merged = {key: [done[position[s][0]][key][position[s][1]] for s in seeds] for key in keys}
    merged["seed"] = list(seeds)
    merged["events"] = [event for run in done for event in run["events"]]
    return merged


# ---------------------------------------------------------------- chapters
def chapter_experiments(chapter: str, preset: str) -> dict[str, dict]:
    """The driver configurations of a chapter's runs under ``preset``, name -> config."""
    require(chapter in CHAPTERS, "chapter", f"must be one of {CHAPTERS}; got {chapter!r}")
    module = importlib.import_module(f"growcore.chapters.{chapter}")
    return module.experiments(module.notebook_parameters(preset))


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m growcore.driver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?",
                        help="a YAML file with the sections " + ", ".join(SECTIONS))
    parser.add_argument("--chapter", choices=CHAPTERS,
                        help="run the experiments of a chapter's preset instead of a file")
    parser.add_argument("--experiment", action="append", metavar="NAME",
                        help="with --chapter: run name (repeatable; default: every run)")
    parser.add_argument("--list", action="store_true", help="with --chapter: print the names")
    parser.add_argument("--out", default=None, help="folder of the records (default "
                        "$GROWCORE_RESULTS/driver/<preset>, or /<chapter>/<preset>)")
    parser.add_argument("--preset", default=None, help="label stored in the record; with "
                        "--chapter the chapter's preset (default gpu)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration, data, model and plan; train nothing")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                        help="write a checkpoint every N iterations; a rerun continues from it")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="train.precision of every run (default: the configuration's, "
                        "else auto: bfloat16 for convolution nets on a GPU)")
    parser.add_argument("--compile", choices=COMPILERS, default=None,
                        help="train.compile of every run: a torch.compile backend or none")
    args = parser.parse_args(argv)
    if (args.config is None) == (args.chapter is None):
        parser.error("give a configuration file or --chapter, not both")
    try:
        if args.chapter:
            return _run_chapter(args, parser)
        preset = args.preset or "custom"
        config = _with_options(_read_config(Path(args.config)), args)
        out = args.out or results.results_dir() / "driver" / preset
        record = run_experiment(config, directory=out, preset=preset, device=args.device,
                                check_only=args.check, checkpoint_every=args.checkpoint_every)
    except (OSError, ParameterError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{record['name']}: configuration, data, model and plan are valid")
        return 0
    print(f"{record['name']}: {record['wall_time_s']:.1f} s -> {record['path']}")
    return 0


def _read_config(path: Path) -> dict:
    """A YAML configuration file; a syntax error is a ParameterError naming file and line."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ParameterError(f"{path}{where}: YAML error: {problem}") from error


def _run_chapter(args, parser) -> int:
    from growcore.distributed import init_from_environment

    preset = args.preset or "gpu"
    runs = chapter_experiments(args.chapter, preset)
    if args.list:
        print("\n".join(runs))
        return 0
    unknown = sorted(set(args.experiment or ()) - set(runs))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; valid: {sorted(runs)}")
    rank, world = init_from_environment() if not args.check else (0, 1)
    device = resolve_device(args.device)
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    out = args.out or results.results_dir() / args.chapter / preset
    for name in args.experiment or runs:
        record = run_experiment(_with_options(runs[name], args), directory=out, preset=preset,
                                device=device, progress=rank == 0, check_only=args.check,
                                rank=rank, world=world,
                                checkpoint_every=args.checkpoint_every)
        if rank == 0:
            print(f"{name}: configuration, data, model and plan are valid" if args.check
                  else f"{name}: {record['wall_time_s']:.0f} s -> {record.get('path')}")
    return 0


def _with_options(config: dict, args) -> dict:
    """``config`` with the command line's ``--precision`` and ``--compile`` (if given)."""
    given = {key: value for key, value in (("precision", args.precision),
                                           ("compile", args.compile)) if value is not None}
    if not given or not isinstance(config, dict):
        return config
    return {**config, "train": {**config.get("train", {}), **given}}


if __name__ == "__main__":
    sys.exit(main())

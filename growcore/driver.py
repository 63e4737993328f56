"""One driver for any experiment described by plain configuration.

A configuration is a mapping (a YAML file for the command line) with five sections::

    name: vgg nagn x gradmax
    seeds: [0, 1, 2]
    data: {name: cifar10, n_train: 5000, n_val: 1000, n_test: 1000, augment: true}
    model: {name: vgg11, width: 0.25, activation: relu1}
    train: {epochs: 20, batch_size: 128, lr: 0.05, momentum: 0.9, schedule: cosine}
    plan: {when: {name: fragrow, alpha: 4, n_blocks: 4, finetune_min: 5},
           where: nagn, how: {name: gradmax, batch_size: 512}}

``plan`` is optional (a fixed network) and is written by the names of
:mod:`growcore.registry`; the driver offers every part the values that depend on the run
(``iterations_per_epoch``, ``total_epochs``, ``seed``). Everything is checked before any
compute: unknown names and keys, bad values, and a plan that does not fit the model (built
for the first seed and checked against it). Each seed trains its own network (seed-batched
models train all seeds as one tensor program); one record holds all seeds: the final test
and training errors in eval mode, the evaluations, the growth events, parameters, FLOPs,
wall times and, per seed, the plan's full description.

Command line::

    python -m growcore.driver run.yml [--out DIR] [--preset NAME] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

from growcore import results
from growcore.data import Split, spiral, teacher_student
from growcore.losses import LOSSES
from growcore.models.factory import MODELS, ModelError, build_named
from growcore.models.seed_batched import SeedBatchedNet
from growcore.ops import GrowThenCosine
from growcore.params import ParameterError, Spec, check, require
from growcore.plan import PlanError
from growcore.registry import build_plan
from growcore.runtime import resolve_device
from growcore.train import evaluate, train

SECTIONS = ("name", "seeds", "data", "model", "train", "plan")
SCHEDULES = ("constant", "cosine", "grow_then_cosine")
TRAIN = {
    "iterations": Spec(int, minimum=1), "epochs": Spec(float, minimum=0),
    "batch_size": Spec(int, minimum=1), "lr": Spec(float, minimum=0),
    "optimizer": Spec(str, choices=("sgd", "adam", "adamw")), "momentum": Spec(float, minimum=0),
    "weight_decay": Spec(float, minimum=0), "loss": Spec(str, choices=tuple(LOSSES)),
    "evals_per_epoch": Spec(int, minimum=1), "eval_every": Spec(int, minimum=1),
    "schedule": Spec(str, choices=SCHEDULES), "augment": Spec(bool)}
TRAIN_DEFAULTS = {"batch_size": None, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0,
                  "loss": "cross_entropy", "schedule": "constant", "augment": False}


# ---------------------------------------------------------------- data
def _images(name: str):
    def load(n_train=None, n_val=0, n_test=None, split_seed=0, root=None, image_size=64):
        from growcore.images import load_dataset

        require(name == "cifar10" or root is not None, "data.root",
                f"{name} is read from a folder: give its root")
        return load_dataset(name, root, image_size=image_size, n_train=n_train, n_val=n_val,
                            n_test=n_test, seed=split_seed)
    return load


def _spiral(n_per_class=300, test_fraction=0.25, split_seed=0):
    return spiral(n_per_class, test_fraction, split_seed)


def _teacher_student(teacher=(20, 10, 10), n_points=1000, split_seed=0):
    return teacher_student(list(teacher), n_points, split_seed)[0]


DATA: dict[str, Callable[..., Split]] = {
    "spiral": _spiral, "teacher_student": _teacher_student,
    "cifar10": _images("cifar10"), "cifar100": _images("cifar100"),
    "imagenet": _images("imagenet")}


# ---------------------------------------------------------------- models
def build_model(spec: dict, split: Split, seeds: list[int]) -> nn.Module:
    """The model of ``spec`` (``{"name": ..., options}``) for the data of ``split``."""
    name = spec.get("name")
    if name not in MODELS:
        raise ParameterError(f"model.name must be one of {sorted(MODELS)}, got {name!r}")
    classes = (split.y_train.shape[-1] if split.y_train.is_floating_point()
               else int(split.y_train.max()) + 1)
    if hasattr(split, "classes"):
        classes = len(split.classes)
    options = {k: v for k, v in spec.items() if k != "name"}
    try:
        return build_named(name, split.X_train.shape[1:], classes, seeds, **options)
    except ModelError as error:
        raise ParameterError(str(error)) from error


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
    train_spec = dict(config["train"])
    bad = sorted(set(train_spec) - set(TRAIN))
    require(not bad, "train", f"unknown option(s) {bad}; valid: {sorted(TRAIN)}")
    require(("iterations" in train_spec) != ("epochs" in train_spec), "train",
            "give exactly one of 'iterations' and 'epochs'")
    require("lr" in train_spec, "train.lr", "missing")
    for key, value in train_spec.items():
        check(f"train.{key}", value, TRAIN[key])
    require(train_spec["lr"] > 0, "train.lr", f"must be positive; got {train_spec['lr']}")
    return {**config, "train": {**TRAIN_DEFAULTS, **train_spec}, "plan": config.get("plan")}


def _iterations(train_spec: dict, n_train: int) -> tuple[int, int]:
    """(iterations, iterations per epoch)."""
    batch = train_spec["batch_size"]
    per_epoch = max(1, math.ceil(n_train / batch)) if batch else 1
    if "iterations" in train_spec:
        return train_spec["iterations"], per_epoch
    return max(1, round(train_spec["epochs"] * per_epoch)), per_epoch


def _plan(spec: dict | None, context: dict):
    if spec is None:
        return None
    try:
        return build_plan(spec, context)
    except PlanError as error:
        raise ParameterError(f"'plan': {error}") from error


# ---------------------------------------------------------------- running
def run_experiment(config: dict, *, split: Split | None = None, directory=None,
                   preset: str = "custom", device: str = "auto", progress: bool = True,
                   save: bool = True, check_only: bool = False) -> dict:
    """Run a configuration for all its seeds; return (and save) its record.

    Parameters
    ----------
    config : dict
        See the module docstring.
    split : Split, optional
        Data to use instead of ``config["data"]`` (tests, or data already loaded).
    directory : path, optional
        Where the record goes (default ``$GROWCORE_RESULTS``).
    check_only : bool
        Load the data, build the first seed's model and plan, check them, and return the
        validated configuration without training.
    """
    config = validate(config)
    device = resolve_device(device)
    t = config["train"]
    if split is None:
        options = {k: v for k, v in config["data"].items() if k not in ("name", "augment")}
        try:
            split = DATA[config["data"]["name"]](**options)
        except TypeError as error:
            raise ParameterError(f"data {config['data']['name']!r}: {error}") from error
    split = split.to(device)
    iterations, per_epoch = _iterations(t, len(split.y_train))
    eval_every = t.get("eval_every") or max(1, per_epoch // t.get("evals_per_epoch", 1))
    context = {"iterations_per_epoch": per_epoch, "total_epochs": iterations / per_epoch,
               "loss": t["loss"]}
    seeds = config["seeds"]
    first = build_model(config["model"], split, seeds[:1])  # everything checked before compute
    plan = _plan(config["plan"], {**context, "seed": seeds[0]})
    if plan is not None:
        try:
            plan.check(first)
        except PlanError as error:
            raise ParameterError(f"'plan': {error}") from error
    if check_only:
        return config
    batched = isinstance(first, SeedBatchedNet)
    groups = [seeds] if batched else [[s] for s in seeds]
    start, runs = time.perf_counter(), []
    for group in groups:
        runs.append(_run_group(config, group, split, iterations, per_epoch, eval_every,
                               context, device, progress))
    metrics = {key: [value for run in runs for value in run[key]] for key in runs[0]
               if key != "events"}
    metrics["events"] = [event for run in runs for event in run["events"]]
    record = results.make_record(config["name"], config, preset=preset, seeds=seeds,
                                 device=device, wall_time_s=time.perf_counter() - start,
                                 iterations=iterations, iterations_per_epoch=per_epoch,
                                 batched_seeds=batched, metrics=metrics)
    return results.store(record, directory, save)


def _schedule(name: str, iterations: int, plan) -> Callable | None:
    if name == "cosine":
        return lambda t, history: 0.5 * (1 + math.cos(math.pi * t / iterations))
    if name == "grow_then_cosine":
        growths = getattr(plan.when, "n_blocks", 0) if plan is not None else 0
        return GrowThenCosine(iterations, growths)
    return None


def _run_group(config, seeds, split, iterations, per_epoch, eval_every, context, device,
               progress) -> dict:
    t = config["train"]
    torch.manual_seed(seeds[0])
    model = build_model(config["model"], split, seeds).to(device)
    plan = _plan(config["plan"], {**context, "seed": seeds[0]})
    augment = None
    if config["data"].get("augment"):
        from growcore.images import augment_cifar
        augment = augment_cifar
    final, history = train(
        model, split, iterations=iterations, lr=t["lr"], optimizer=t["optimizer"],
        momentum=t["momentum"], weight_decay=t["weight_decay"], batch_size=t["batch_size"],
        loss=t["loss"], plan=plan, eval_every=eval_every,
        lr_schedule=_schedule(t["schedule"], iterations, plan), augment=augment,
        seed=seeds[0], progress=progress, desc=f"{config['name']} seeds {seeds}")
    h = history.as_dict()
    n = len(seeds)
    test = (evaluate(final, split.X_test, split.y_test, t["loss"]).tolist()
            if split.X_test is not None else [None] * n)
    train_metric = evaluate(final, split.X_train, split.y_train, t["loss"]).tolist()
    return {"seed": list(seeds), "test_metric": test, "train_metric": train_metric,
            "n_params": [h["n_params"][-1]] * n, "cost_flops": [h["cost_flops"][-1]] * n,
            "wall_time_s": [h["wall_time"][-1]] * n, "evals": [h["evals"]] * n,
            "plan": [h["plan"]] * n, "events": h["events"]}


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m growcore.driver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a YAML file with the sections " + ", ".join(SECTIONS))
    parser.add_argument("--out", default=None, help="folder of the record "
                        "(default $GROWCORE_RESULTS/driver/<preset>)")
    parser.add_argument("--preset", default="custom", help="label stored in the record")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration, data, model and plan; train nothing")
    args = parser.parse_args(argv)
    try:
        config = yaml.safe_load(Path(args.config).read_text())
        out = args.out or results.results_dir() / "driver" / args.preset
        record = run_experiment(config, directory=out, preset=args.preset, device=args.device,
                                check_only=args.check)
    except (OSError, ParameterError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{record['name']}: configuration, data, model and plan are valid")
        return 0
    print(f"{record['name']}: {record['wall_time_s']:.1f} s -> {record['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

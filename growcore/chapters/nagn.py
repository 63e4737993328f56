"""The NAGN chapter (``notebooks/nagn.ipynb``): parameters, experiments and their records.

Section 4 of Wang, Mille and Hidane: compact VGG nets on CIFAR-10 (Conv+BN+ReLU, 2x2
max-pooling after each of three blocks, a dense classifier), AdamW with cosine decay, the
validation-window trigger, NAGN increments, the eq. (1) initialiser, and the static baseline
(the grown run's final widths trained from scratch under identical conditions).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from growcore import papers, registry, results
from growcore.images import augment_cifar, cifar10
from growcore.models.factory import build_named
from growcore.models.vgg import VGG
from growcore.params import Spec, require
from growcore.params import validate as validate_all
from growcore.registry import build_plan
from growcore.runtime import DEVICES
from growcore.stats import NAGNObserver, default_layers, producer_layers
from growcore.train import train

PRESETS = ("smoke", "cpu", "gpu")
PAPER_NUMBERS = papers.load("nagn")  # growcore/papers/nagn.yml
PAPER_CONFIGURATIONS = PAPER_NUMBERS["configurations"]
PAPER_RATIOS = PAPER_NUMBERS["ratios"]
PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "n_train": Spec(int, minimum=1),
    "n_val": Spec(int, minimum=1),
    "n_test": Spec(int, minimum=1),
    "augment": Spec(bool),
    "epochs": Spec(int, minimum=1),
    "batch_size": Spec(int, minimum=1),
    "lr": Spec(float, minimum=0),
    "weight_decay": Spec(float, minimum=0),
    "evals_per_epoch": Spec(int, minimum=1),
    "w_acc": Spec(int, minimum=1),
    "delta_acc": Spec(float),
    "delta_stop": Spec(float),
    "tau": Spec(float, minimum=0),
    "delta_max": Spec(int, minimum=1),
    "fallback_fraction": Spec(float, minimum=0, maximum=1),
    "nagn_window_batches": Spec(int, minimum=1),
    "growth_how": Spec(str, choices=tuple(registry.names("how", "width"))),
    "fig1_widths": Spec(list, item=list, min_length=1),
    "fig1_seeds": Spec(int, minimum=1),
    "bottleneck_epochs": Spec(int, minimum=1),
    "configurations": Spec(list, item=list, min_length=1),
    "n_seeds": Spec(int, minimum=1),
    "cifar10_archive": Spec(str),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "progress": Spec(bool),
}


def _valid_widths(widths) -> bool:
    return (isinstance(widths, list) and len(widths) >= 1 and all(
        isinstance(block, list) and block and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in block)
        for block in widths))


def validate(namespace: dict) -> dict:
    """Check the notebook's parameters (picked by name from ``namespace``) before compute."""
    params = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
    for name in ("fig1_widths",):
        require(_valid_widths(params[name]), name,
                f"must be a list of blocks, each a list of widths >= 1; got {params[name]!r}")
    for widths in params["configurations"]:
        require(_valid_widths(widths), "configurations",
                f"every entry must be a list of blocks of widths >= 1; got {widths!r}")
    require(params["n_train"] + params["n_val"] <= 50_000, "n_train",
            "n_train + n_val must not exceed the 50000 CIFAR-10 training images")
    require(params["n_test"] <= 10_000, "n_test", "CIFAR-10 has 10000 test images")
    require(params["lr"] > 0, "lr", "must be positive")
    require(params["evals_per_epoch"] <= _iterations_per_epoch(params), "evals_per_epoch",
            "cannot exceed the number of batches per epoch")
    return params


def _iterations_per_epoch(p: dict) -> int:
    return math.ceil(p["n_train"] / p["batch_size"])


def run_config(p: dict, widths, grow: bool, seeds: list[int],
               seed_widths: dict | None = None) -> dict:
    """Configuration of one CIFAR-10 run (grown, or static with ``seed_widths`` per seed)."""
    config = {"data": {"name": "cifar10", "n_train": p["n_train"], "n_val": p["n_val"],
                       "n_test": p["n_test"], "split_seed": 0, "augment": p["augment"]},
              "model": {"kind": "vgg", "widths": widths, "head": "flatten"},
              "seeds": list(seeds), "epochs": p["epochs"],
              "optimizer": {"name": "adamw", "lr": p["lr"], "weight_decay": p["weight_decay"],
                            "batch_size": p["batch_size"], "schedule": "cosine"},
              "evals_per_epoch": p["evals_per_epoch"], "growth": None}
    if grow:
        config["growth"] = {key: p[key] for key in (
            "w_acc", "delta_acc", "delta_stop", "tau", "delta_max", "fallback_fraction",
            "nagn_window_batches")}
        config["growth"]["how"] = p["growth_how"]
    if seed_widths is not None:
        config["model"]["seed_widths"] = {str(s): w for s, w in seed_widths.items()}
    return config


def growth_plan(g: dict) -> dict:
    """The plan of a grown run by registry names: NAGN's window trigger (section 4), NAGN's
    increments, and the initialiser ``g["how"]`` (the paper's eq. (1), ``kaiming_new``, by
    default; any width initialiser of growcore.registry can replace it)."""
    return {"when": {"name": "validation_window", "w_acc": g["w_acc"],
                     "delta_acc": g["delta_acc"], "delta_stop": g["delta_stop"]},
            "where": {"name": "nagn", "tau": g["tau"], "delta_max": g["delta_max"],
                      "fallback_fraction": g["fallback_fraction"],
                      "window_batches": g["nagn_window_batches"]},
            "how": g.get("how", "kaiming_new")}


def load_split(config: dict, archive: str = "", device: str = "cpu"):
    """The CIFAR-10 split of a configuration (``archive=""``: the default location)."""
    data = config["data"]
    split = cifar10(archive=archive or None, n_train=data["n_train"], n_val=data["n_val"],
                    n_test=data["n_test"], seed=data["split_seed"])
    return split.to(device)


def final_widths(model: VGG) -> list[list[int]]:
    """Conv widths per block of a (grown) VGG."""
    return [[block.conv.out_channels for block in stage] for stage in model.stages]


def run(name: str, config: dict, split, *, directory=None, preset: str = "cpu",
        device: str = "cpu", progress: bool = True, save: bool = True,
        seeds: list[int] | None = None) -> dict:
    """Train every seed of a configuration, one after the other, and save the record.

    The record holds, per seed: the evaluations (iteration, val and test error), the growth
    events (NAGN profile, contrasts, increments), the final widths, the training wall time
    and the cumulative FLOPs.
    """
    per_seed, start = [], time.perf_counter()
    for seed in seeds if seeds is not None else config["seeds"]:
        per_seed.append(_train_seed(config, seed, split, device, progress, f"{name} s{seed}"))
    record = results.make_record(name, config, preset=preset,
                                 seeds=[r["seed"] for r in per_seed], device=device,
                                 wall_time_s=time.perf_counter() - start, runs=per_seed)
    return results.store(record, directory, save)


def _train_seed(config: dict, seed: int, split, device: str, progress: bool,
                desc: str) -> dict:
    opt, model_spec = config["optimizer"], config["model"]
    widths = model_spec.get("seed_widths", {}).get(str(seed), model_spec["widths"])
    torch.manual_seed(seed)
    model = build_named("vgg", (3, 32, 32), 10, config=widths,
                        head=model_spec["head"]).to(device)
    per_epoch = math.ceil(config["data"]["n_train"] / opt["batch_size"])
    iterations = config["epochs"] * per_epoch
    plan, when = None, None
    if config["growth"] is not None:
        plan = build_plan(growth_plan(config["growth"]), {"seed": seed})
        when = plan.when
    final, history = train(
        model, split, iterations=iterations, lr=opt["lr"], optimizer="adamw",
        weight_decay=opt["weight_decay"], batch_size=opt["batch_size"], plan=plan,
        eval_every=max(1, per_epoch // config["evals_per_epoch"]),
        lr_schedule=lambda t, _history: 0.5 * (1 + math.cos(math.pi * t / iterations)),
        augment=augment_cifar if config["data"]["augment"] else None,
        seed=seed, progress=progress, desc=desc)
    metrics = history.as_dict()
    return {"seed": seed, "widths": widths, "final_widths": final_widths(final),
            "plan": metrics["plan"],
            "iterations_per_epoch": per_epoch, "evals": metrics["evals"],
            "events": metrics["events"], "wall_time_s": metrics["wall_time"][-1],
            "cost_flops": metrics["cost_flops"][-1], "n_params": metrics["n_params"][-1],
            "stopped_at": list(when.stopped_at) if when and when.stopped_at else None,
            "test_accuracy": 1 - float(np.mean(metrics["evals"][-1]["test_error"]))
            if "test_error" in metrics["evals"][-1] else None}


def ratios(grown: dict, static: dict) -> dict:
    """Grown/static ratios of one configuration: of the seed-mean test accuracy at the last
    evaluation, of the seed-mean training wall time and of the seed-mean training FLOPs."""
    def mean(record, key):
        return float(np.mean([r[key] for r in record["runs"]]))

    return {key: mean(grown, field) / mean(static, field) for key, field in
            (("accuracy", "test_accuracy"), ("time", "wall_time_s"), ("flops", "cost_flops"))}


def accuracy_curves(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Epochs [E] and test accuracies [S, E] of a record's evaluations."""
    runs = record["runs"]
    per_epoch = runs[0]["iterations_per_epoch"]
    epochs = np.array([e["iteration"] for e in runs[0]["evals"]]) / per_epoch
    acc = np.array([[1 - float(np.mean(e["test_error"])) for e in r["evals"]] for r in runs])
    return epochs, acc


def bottleneck_profiles(p: dict, split, device: str = "cpu", progress: bool = True,
                        directory=None) -> dict:
    """The explicit-bottleneck sanity check (section 3): the Fig. 1 net trained without
    growth for ``bottleneck_epochs``, with NAGN read at the activation input (after
    BatchNorm, our default) and at the convolution output (before BatchNorm), per seed.

    Returns (and saves) a record whose ``profiles[reading]`` is [S, L] and ``widths`` the
    layer widths, the output layer last.
    """
    widths = p["fig1_widths"]
    readings = {"after BatchNorm": default_layers, "before BatchNorm": producer_layers}
    profiles: dict[str, list] = {name: [] for name in readings}
    per_epoch = math.ceil(p["n_train"] / p["batch_size"])
    start = time.perf_counter()
    for seed in range(p["fig1_seeds"]):
        torch.manual_seed(seed)
        model = build_named("vgg", (3, 32, 32), 10, config=widths, head="flatten").to(device)
        observers = {name: NAGNObserver(per_epoch, layers) for name, layers in readings.items()}
        train(model, split, iterations=p["bottleneck_epochs"] * per_epoch, lr=p["lr"],
              optimizer="adamw", weight_decay=p["weight_decay"], batch_size=p["batch_size"],
              augment=augment_cifar if p["augment"] else None,
              observers=list(observers.values()), eval_every=per_epoch, seed=seed,
              progress=progress, desc=f"bottleneck s{seed}")
        for name, observer in observers.items():
            profiles[name].append(observer.nagn().tolist())
    layer_widths = [n for block in widths for n in block] + [10]
    config = {"widths": widths, "epochs": p["bottleneck_epochs"],
              "seeds": list(range(p["fig1_seeds"])), "n_train": p["n_train"],
              "batch_size": p["batch_size"], "lr": p["lr"]}
    record = results.make_record("bottleneck", config, preset=p["preset"],
                                 seeds=config["seeds"], device=device,
                                 wall_time_s=time.perf_counter() - start,
                                 widths=layer_widths, profiles=profiles)
    return results.store(record, directory)


def bottlenecks(widths: list[int]) -> list[int]:
    """Indices l of the explicit bottlenecks ``n_{l-1} > n_l < n_{l+1}`` (section 3)."""
    return [i for i in range(1, len(widths) - 1)
            if widths[i - 1] > widths[i] < widths[i + 1]]

"""The GradMax chapter (``notebooks/gradmax.ipynb``): parameters, experiments and analyses.

Teacher-student (GradMax section 4.1, Appendix D): a student MLP grows its hidden layer to the
teacher's width under a fixed schedule; the methods differ only in HOW the new neurons start.
CIFAR-10 (section 4.2): VGG11 and WRN-28-1 grown from width x0.25 to full width.
"""

from __future__ import annotations

import copy
import functools
import time

import numpy as np
import torch

from growcore import papers, results
from growcore.data import Split, teacher_student
from growcore.how import FireflyOpt, GradMax, GradMaxOpt, Random
from growcore.losses import LOSSES
from growcore.models.factory import build_named
from growcore.models.mlp import MLP
from growcore.models.sites import Proposal
from growcore.ops import widen
from growcore.params import Spec, require
from growcore.params import validate as validate_all
from growcore.paths import dataset_dir, missing_dataset_message
from growcore.plan import GrowthPlan
from growcore.runtime import DEVICES
from growcore.stats import Probe, TargetNorm, collect, gradient_matrix
from growcore.train import train
from growcore.when import Every
from growcore.where import FixedSites, GrowToWidths

PRESETS = ("smoke", "cpu", "gpu")
PAPER_NUMBERS = papers.load("gradmax")  # growcore/papers/gradmax.yml
TS_METHODS = ("Baseline-Small", "Baseline-Big", "Random", "GradMaxOpt", "GradMax")
CIFAR_METHODS = ("Baseline-Small", "Baseline-Big", "Random", "Firefly-Opt", "GradMax")
CIFAR_MODELS = ("vgg11", "wrn28", "mobilenet_v1")
IMAGE_DATASETS = ("cifar10", "cifar100", "imagenet")
# The models each data set takes: VGG11 and WRN-28-1 are built for 32x32 inputs; MobileNet-v1
# has a CIFAR stem (stride 1) and an ImageNet stem (stride 2).
MODELS_FOR = {"cifar10": CIFAR_MODELS, "cifar100": CIFAR_MODELS, "imagenet": ("mobilenet_v1",)}
PAPER_TABLE1 = PAPER_NUMBERS["table1"]
PAPER_SCHEDULE = PAPER_NUMBERS["schedule"]
TS_EVAL_EVERY = 50  # test MSE of the teacher-student runs every this many steps

PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "n_seeds": Spec(int, minimum=1),
    "ts_small_steps": Spec(int, minimum=2),
    "ts_small_interval": Spec(int, minimum=1),
    "ts_large_steps": Spec(int, minimum=2),
    "ts_large_interval": Spec(int, minimum=1),
    "ts_lr": Spec(float, minimum=0),
    "ts_points": Spec(int, minimum=2),
    "norm_scale": Spec(float, minimum=0),
    "opt_steps": Spec(int, minimum=1),
    "firefly_steps": Spec(int, minimum=1),
    "fig2_repeats": Spec(int, minimum=1),
    "fig2c_steps": Spec(int, minimum=1),
    "alignment_batch_sizes": Spec(list, item=int, minimum=1, min_length=1),
    "alignment_draws": Spec(int, minimum=1),
    "image_dataset": Spec(str, choices=IMAGE_DATASETS),
    "data_root": Spec(str),
    "image_size": Spec(int, minimum=8),
    "cifar_models": Spec(list, item=str, choices=CIFAR_MODELS),
    "cifar_seeds": Spec(int, minimum=1),
    "cifar_width": Spec(float, minimum=0.01, maximum=1),
    "cifar_factor": Spec(float, minimum=1),
    "cifar_train": Spec(int, minimum=0),
    "cifar_test": Spec(int, minimum=0),
    "cifar_steps": Spec(int, minimum=1),
    "cifar_first_growth": Spec(int, minimum=1),
    "cifar_interval": Spec(int, minimum=1),
    "cifar_growths": Spec(int, minimum=1),
    "cifar_batch_size": Spec(int, minimum=1),
    "cifar_lr_vgg": Spec(float, minimum=0),
    "cifar_lr_wrn": Spec(float, minimum=0),
    "cifar_lr_mobilenet": Spec(float, minimum=0),
    "cifar_epsilon": Spec(float, minimum=0),
    "cifar_batch_norm": Spec(bool),
    "cifar_inverse": Spec(bool),
    "cifar_augment": Spec(bool),
    "cifar_archive": Spec(str),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "progress": Spec(bool),
}


def validate(namespace: dict) -> dict:
    """Check the notebook's parameters (picked by name from ``namespace``) before compute."""
    p = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
    for size in ("small", "large"):
        steps, interval = p[f"ts_{size}_steps"], p[f"ts_{size}_interval"]
        require(5 * interval < steps, f"ts_{size}_interval",
                f"5 growths every {interval} steps must fit in ts_{size}_steps ({steps})")
    last = p["cifar_first_growth"] + (p["cifar_growths"] - 1) * p["cifar_interval"]
    require(not p["cifar_models"] or last < p["cifar_steps"], "cifar_interval",
            f"the last growth (step {last}) must come before cifar_steps ({p['cifar_steps']})")
    dataset, fitting = p["image_dataset"], MODELS_FOR[p["image_dataset"]]
    require(all(m in fitting for m in p["cifar_models"]), "cifar_models",
            f"{p['cifar_models']} do not all fit image_dataset {dataset!r}; valid: "
            f"{list(fitting)}")
    if p["cifar_models"] and dataset != "cifar10":
        missing = missing_dataset_message(dataset, p["data_root"])
        require(missing is None, "data_root", missing or "")
    require(max(p["alignment_batch_sizes"]) <= p["ts_points"], "alignment_batch_sizes",
            f"batch sizes must not exceed ts_points ({p['ts_points']})")
    require(p["ts_lr"] > 0, "ts_lr", "the learning rate must be positive")
    return p


# ---------------------------------------------------------------------------------------------
# Teacher-student (section 4.1)


def teacher_student_data(widths: list[int], n: int, seed: int,
                         dtype=torch.float32) -> tuple[Split, MLP]:
    """Section 4.1's data: :func:`growcore.data.teacher_student`."""
    return teacher_student(widths, n, seed, dtype)


def ts_config(method: str, teacher_widths: list[int], start_hidden: int, interval: int,
              steps: int, seeds: list[int], lr: float = 0.1, units: int = 1,
              growths: int = 5, n_points: int = 1000, norm_scale: float = 0.5,
              opt_steps: int = 100) -> dict:
    """One teacher-student run (section 4.1): ``growths`` times ``units`` new hidden units,
    every ``interval`` steps from step ``interval`` on; full-batch gradient descent, MSE."""
    if method not in TS_METHODS:
        raise ValueError(f"method must be one of {TS_METHODS}, got {method!r}")
    i, h, o = teacher_widths
    hidden = h if method == "Baseline-Big" else start_hidden
    grows = method not in ("Baseline-Small", "Baseline-Big")
    return {"task": "teacher-student", "method": method, "teacher": list(teacher_widths),
            "student": [i, hidden, o], "n_points": n_points, "seeds": list(seeds),
            "iterations": steps, "lr": lr, "activation": "relu1",
            "growth": {"interval": interval, "count": growths, "units": units,
                       "norm_scale": norm_scale, "opt_steps": opt_steps} if grows else None}


def ts_initialiser(method: str, growth: dict, seed: int):
    """The HOW of a teacher-student method, with the target norm of section 3."""
    norm = TargetNorm(scale=growth["norm_scale"])
    if method == "GradMax":
        return GradMax(loss="mse", norm=norm, seed=seed)
    if method == "GradMaxOpt":
        return GradMaxOpt(loss="mse", norm=norm, steps=growth["opt_steps"], seed=seed)
    if method == "Random":
        return Random(norm=norm, seed=seed)
    raise ValueError(f"{method!r} does not grow")


class Checkpoints:
    """A WHERE wrapper that keeps a copy of the model at every growth (for Figs. 2a and 2c)."""

    def __init__(self, where):
        self.where, self.models, self.kind = where, [], where.kind

    def __call__(self, model, sites, stats):
        self.models.append(copy.deepcopy(model))
        return self.where(model, sites, stats)

    def describe(self) -> dict:
        return self.where.describe()


def _timed(op, times: list):
    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = op(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return out
    return wrapper


def gradient_norm(model) -> torch.Tensor:
    """Norm of the flattened gradient of all parameters (Fig. 2b), as a one-seed tensor."""
    return torch.cat([p.grad.flatten() for p in model.parameters()]).norm().view(1)


def run_teacher_student(name: str, config: dict, *, directory=None, preset: str = "cpu",
                        progress: bool = False, save: bool = True) -> dict:
    """Run a teacher-student configuration for all its seeds; return (and save) its record.

    Seed s fixes the teacher, the data and the student's initial weights, so every method
    starts from the same network. Metrics per seed: training loss, test MSE and the gradient
    norm at every step, growth times; ``checkpoints`` (not saved) holds the models at growth.
    """
    start, rows, checkpoints = time.perf_counter(), [], []
    for seed in config["seeds"]:
        split, _ = teacher_student_data(config["teacher"], config["n_points"], seed)
        torch.manual_seed(10_000 + seed)
        student = MLP(config["student"], activation=config["activation"])
        plan, times = None, []
        if config["growth"] is not None:
            g = config["growth"]
            where = Checkpoints(FixedSites({"layers.0": g["units"]}))
            plan = GrowthPlan(Every(g["interval"], count=g["count"]), where,
                              ts_initialiser(config["method"], g, seed), op=_timed(widen, times))
        model, history = train(student, split, iterations=config["iterations"], lr=config["lr"],
                               loss="mse", plan=plan, step_metrics={"grad_norm": gradient_norm},
                               eval_every=TS_EVAL_EVERY,
                               progress=progress, desc=f"{name} seed {seed}")
        rows.append({**history.as_dict(), "growth_time": times, "final_widths": model.widths})
        checkpoints.append(plan.where.models if plan else [])
    metrics = {key: [row[key][0] for row in rows]
               for key in ("loss", "test_error", "grad_norm")}
    metrics.update({key: [row[key] for row in rows]
                    for key in ("growth_time", "final_widths", "n_params")})
    metrics["events"] = [e for row in rows for e in row["events"]]
    metrics["step_time"] = [float(np.diff(row["wall_time"]).mean()) for row in rows]
    metrics["plan"] = [row["plan"] for row in rows]  # per seed: the initialiser's seed differs
    record = results.store(_record(name, config, preset, start, metrics), directory, save)
    record["checkpoints"] = checkpoints
    return record


def _record(name: str, config: dict, preset: str, start: float, metrics: dict,
            device: str = "cpu") -> dict:
    return results.make_record(name, config, preset=preset, seeds=config["seeds"],
                               device=device, wall_time_s=time.perf_counter() - start,
                               metrics=metrics)


def new_unit_gradient_norm(model, how, split: Split) -> float:
    """Grow one hidden unit with ``how`` and return ``||dL/dW_l^new||_F`` by autograd (Fig. 2a)."""
    site = model.width_sites()[0]
    grown = widen(model, [Proposal(site, 1)], how, Probe(split, "mse")).model
    grown.zero_grad()
    LOSSES["mse"](grown(split.X_train)[None], split.y_train).sum().backward()
    return float(grown.get_submodule(site.producer).weight.grad[-1].norm())


def fig2a(record: dict, repeats: int, norm_scale: float, opt_steps: int) -> dict:
    """Gradient norm of one new unit grown from every checkpoint of a Random run (Fig. 2a).

    Random and GradMaxOpt are stochastic: ``repeats`` draws each.
    """
    out = {"GradMax": [], "GradMaxOpt": [], "Random": []}
    norm = TargetNorm(scale=norm_scale)
    for seed, models in zip(record["seeds"], record["checkpoints"]):
        split, _ = teacher_student_data(record["config"]["teacher"],
                                        record["config"]["n_points"], seed)
        out["GradMax"].append([new_unit_gradient_norm(m, GradMax("mse", norm=norm), split)
                               for m in models])
        for method, make in (("Random", lambda r: Random(norm, seed=r)),
                             ("GradMaxOpt", lambda r: GradMaxOpt("mse", norm=norm,
                                                                 steps=opt_steps, seed=r))):
            out[method].append([[new_unit_gradient_norm(m, make(r), split)
                                 for r in range(repeats)] for m in models])
    return out  # method -> [seed][growth] (GradMax) or [seed][growth][repeat]


def fig2c(record: dict, steps: int, norm_scale: float, lr: float) -> list:
    """From every checkpoint, grow one unit by GradMax and by Random, train ``steps`` more
    steps each, and return ``L(f_r) - L(f_g)`` per step: [seed][growth][step] (Fig. 2c)."""
    gaps = []
    norm = TargetNorm(scale=norm_scale)
    for seed, models in zip(record["seeds"], record["checkpoints"]):
        split, _ = teacher_student_data(record["config"]["teacher"],
                                        record["config"]["n_points"], seed)
        per_growth = []
        for model in models:
            losses = {}
            for method, how in (("GradMax", GradMax("mse", norm=norm)),
                                ("Random", Random(norm, seed=seed))):
                site = model.width_sites()[0]
                grown = widen(model, [Proposal(site, 1)], how, Probe(split, "mse")).model
                _, history = train(grown, split, iterations=steps, lr=lr, loss="mse",
                                   progress=False)
                losses[method] = np.array(history.as_dict()["loss"][0])
            per_growth.append((losses["Random"] - losses["GradMax"]).tolist())
        gaps.append(per_growth)
    return gaps


def minibatch_alignment(model, split: Split, batch_sizes: list[int], draws: int,
                        seed: int = 0) -> dict:
    """``|<u_1(minibatch), u_1(full)>|`` for the top left singular vector of the gradient
    matrix (paper section 3, "full gradient estimation"; Fig. 6), mean and all draws."""
    site = model.width_sites()[0]
    full = gradient_matrix(model, site, collect(model, [site], split, "mse")[site])
    u_full = torch.linalg.svd(full)[0][:, 0]
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for b in batch_sizes:
        values = []
        for _ in range(draws):
            data = collect(model, [site], split, "mse", b, generator)[site]
            u = torch.linalg.svd(gradient_matrix(model, site, data))[0][:, 0]
            values.append(float((u @ u_full).abs()))
        out[b] = values
    return out


def ts_experiments(p: dict) -> dict[str, dict]:
    """The teacher-student runs of Figs. 2-3, name -> configuration."""
    seeds = list(range(p["n_seeds"]))
    common = {"seeds": seeds, "lr": p["ts_lr"], "n_points": p["ts_points"],
              "norm_scale": p["norm_scale"], "opt_steps": p["opt_steps"]}
    runs = {}
    for method in TS_METHODS:
        runs[f"small {method}"] = ts_config(method, [20, 10, 10], 5, p["ts_small_interval"],
                                            p["ts_small_steps"], **common)
        runs[f"large {method}"] = ts_config(method, [100, 50, 10], 25, p["ts_large_interval"],
                                            p["ts_large_steps"], units=5, **common)
    # the public notebook's teacher is 10:10:10, the paper's 20:10:10
    for method in ("Baseline-Big", "Random", "GradMax"):
        runs[f"public {method}"] = ts_config(method, [10, 10, 10], 5, p["ts_small_interval"],
                                             p["ts_small_steps"], **common)
    return runs


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (section 4.2)


def load_images(p: dict, device: str = "cpu") -> tuple[Split, dict]:
    """The image data set of the parameters: train and test images (uint8, on ``device``),
    and ``{"classes": [...], "source": "..."}``."""
    from growcore.images import load_dataset

    dataset = p["image_dataset"]
    images = load_dataset(dataset, dataset_dir(dataset, p["data_root"]) if dataset != "cifar10"
                          else None, p["cifar_archive"] or None, p["image_size"],
                          n_train=p["cifar_train"] or None, n_test=p["cifar_test"] or None)
    split = Split(images.X_train, images.y_train, images.X_test, images.y_test).to(device)
    return split, {"classes": list(images.classes), "source": images.source}


def cifar_config(model: str, method: str, p: dict) -> dict:
    """One image run: ``model`` at width ``cifar_width`` grown ``cifar_factor`` times wider
    (Baseline-Big starts at the final width) with SGD momentum 0.9 and a cosine schedule."""
    if method not in CIFAR_METHODS:
        raise ValueError(f"method must be one of {CIFAR_METHODS}, got {method!r}")
    width = p["cifar_width"] * (p["cifar_factor"] if method == "Baseline-Big" else 1)
    grows = method not in ("Baseline-Small", "Baseline-Big")
    lr = {"vgg11": p["cifar_lr_vgg"], "wrn28": p["cifar_lr_wrn"],
          "mobilenet_v1": p["cifar_lr_mobilenet"]}[model]
    dataset = p["image_dataset"]
    return {"task": dataset, "model": model, "method": method, "width": width,
            "num_classes": {"cifar10": 10, "cifar100": 100}.get(dataset),
            "image_size": p["image_size"] if dataset == "imagenet" else 32,
            "batch_norm": p["cifar_batch_norm"] or model == "wrn28",
            "seeds": list(range(p["cifar_seeds"])),
            "n_train": p["cifar_train"] or None, "n_test": p["cifar_test"] or None,
            "steps": p["cifar_steps"], "batch_size": p["cifar_batch_size"],
            "lr": lr,
            "momentum": 0.9, "weight_decay": 5e-4, "augment": p["cifar_augment"],
            "growth": {"factor": p["cifar_factor"], "first": p["cifar_first_growth"],
                       "interval": p["cifar_interval"], "count": p["cifar_growths"],
                       "epsilon": p["cifar_epsilon"], "inverse": p["cifar_inverse"],
                       "norm_scale": p["norm_scale"], "opt_steps": p["opt_steps"],
                       "firefly_steps": p["firefly_steps"]}
            if grows else None}


def cifar_model(config: dict, num_classes: int | None = None):
    """VGG11, WRN-28-1 or MobileNet-v1 at the configured width, with ``relu'(0) = 1``
    (GradMax section 4), from :func:`growcore.models.factory.build_named`.

    ``batch_norm`` applies to VGG11; the WRN-28 and MobileNet-v1 of :mod:`growcore.models`
    always have it. MobileNet-v1 takes the ImageNet stem on ImageNet, the CIFAR stem else.
    """
    from growcore.images import CIFAR10_MEAN, CIFAR10_STD

    classes = num_classes or config.get("num_classes") or 10
    if config["model"] == "vgg11":
        return build_named("vgg11", (3, 32, 32), classes, width=config["width"],
                           batch_norm=config["batch_norm"], activation="relu1")
    if config["model"] == "wrn28":
        return build_named("wrn", (3, 32, 32), classes, depth=28, width=1,
                           block_width=config["width"], activation="relu1")
    size = config.get("image_size", 32)
    imagenet = config.get("task") == "imagenet"
    extra = {} if imagenet else {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
    return build_named("mobilenet_v1", (3, size, size), classes, width=config["width"],
                       stem="imagenet" if imagenet else "cifar", activation="relu1", **extra)


def cifar_initialiser(method: str, growth: dict, seed: int, batch_size: int):
    """Section 4.2: outgoing weights of norm epsilon for all methods (Firefly needs them
    non-zero); with ``inverse`` (Table 2) outgoing weights zero and GradMaxOpt replaces the
    SVD."""
    eps = TargetNorm(value=growth["epsilon"])
    incoming = TargetNorm(scale=growth["norm_scale"])
    if growth["inverse"]:
        if method == "GradMax":
            return GradMaxOpt(batch_size=batch_size, norm=incoming, inverse=True,
                              steps=growth["opt_steps"], seed=seed)
        if method == "Random":
            return Random(incoming, inverse=True, seed=seed)
    if method == "GradMax":
        return GradMax(batch_size=batch_size, norm=eps, seed=seed)
    if method == "Random":
        return Random(eps, seed=seed)
    if method == "Firefly-Opt":
        return FireflyOpt(batch_size=batch_size, norm=incoming, epsilon=growth["epsilon"],
                          steps=growth["firefly_steps"], seed=seed)
    raise ValueError(f"{method!r} does not grow")


def run_cifar(name: str, config: dict, split, *, directory=None, preset: str = "cpu",
              device: str = "cpu", progress: bool = False, save: bool = True,
              num_classes: int | None = None) -> dict:
    """Train (and grow) one image configuration for all its seeds; return its record.

    ``num_classes`` defaults to the configuration's (10 for CIFAR-10, 100 for CIFAR-100);
    pass it for ImageNet folders (the number of class folders)."""
    from growcore.images import augment_cifar

    start, rows = time.perf_counter(), []
    steps = config["steps"]
    for seed in config["seeds"]:
        torch.manual_seed(seed)
        model = cifar_model(config, num_classes).to(device)
        plan, times = None, []
        if config["growth"] is not None:
            g = config["growth"]
            how = cifar_initialiser(config["method"], g, seed, config["batch_size"])
            plan = GrowthPlan(Every(g["interval"], g["first"], g["count"]),
                              GrowToWidths(g["factor"], g["count"]), how,
                              op=_timed(widen, times))
        model, history = train(  # no test set inside the loop: evaluated once, in eval mode
            model, Split(split.X_train, split.y_train), iterations=steps, lr=config["lr"],
            optimizer="sgd", momentum=config["momentum"], weight_decay=config["weight_decay"],
            batch_size=config["batch_size"], loss="cross_entropy", plan=plan,
            lr_schedule=lambda t, history: 0.5 * (1 + np.cos(np.pi * t / steps)),
            augment=augment_cifar if config["augment"] else None, seed=seed,
            progress=progress, desc=f"{name} seed {seed}")
        row = history.as_dict()
        rows.append({"loss": row["loss"][0], "n_params": row["n_params"],
                     "test_error": _final_error(model, split),
                     "growth_time": times, "step_time": float(np.diff(row["wall_time"]).mean()),
                     "events": row["events"], "cost_flops": row["cost_flops"][-1],
                     "plan": row["plan"]})
    metrics = {key: [row[key] for row in rows] for key in rows[0] if key != "events"}
    metrics["events"] = [e for row in rows for e in row["events"]]
    return results.store(_record(name, config, preset, start, metrics, device), directory,
                         save)


def _final_error(model, split) -> float:
    from growcore.train import evaluate

    return float(evaluate(model, split.X_test, split.y_test, "cross_entropy", 500)[0])


def cifar_experiments(p: dict) -> dict[str, dict]:
    """The CIFAR-10 runs of Table 1 (and Table 2 with ``cifar_batch_norm``/``cifar_inverse``)."""
    return {f"{model} {method}": cifar_config(model, method, p)
            for model in p["cifar_models"] for method in CIFAR_METHODS}


def save_analysis(name: str, config: dict, metrics: dict, *, directory, preset: str,
                  start: float) -> dict:
    """Record a derived analysis (Figs. 2a, 2c, 6) like a run: configuration and metrics."""
    record = _record(name, {**config, "seeds": config.get("seeds", [])}, preset, start, metrics)
    return results.store(record, directory)

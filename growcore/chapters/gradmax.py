"""The GradMax chapter (``notebooks/gradmax.ipynb``): parameters, experiments and analyses.

Teacher-student (GradMax section 4.1, Appendix D): a student MLP grows its hidden layer to the
teacher's width under a fixed schedule; the methods differ only in HOW the new neurons start.
CIFAR-10 (section 4.2): VGG11 and WRN-28-1 grown from width x0.25 to full width.

Every run is a configuration of :mod:`growcore.driver` (:func:`experiments`), named
``"<group> <method>"`` (``"small GradMax"``, ``"vgg11 Firefly-Opt"``): the method of a record is
the second part of its name (:func:`method_of`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from growcore import papers, results
from growcore.data import Split
from growcore.driver import load_data
from growcore.how import GradMax, GradMaxOpt, Random
from growcore.images import CIFAR10_MEAN, CIFAR10_STD
from growcore.losses import LOSSES
from growcore.models.sites import Proposal
from growcore.ops import widen
from growcore.params import Spec, require
from growcore.params import validate as validate_all
from growcore.paths import dataset_dir, missing_dataset_message
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES
from growcore.stats import Probe, TargetNorm, collect, gradient_matrix
from growcore.train import train

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

TS_INIT_SEED = 10_000  # seed s's student starts from torch.manual_seed(10_000 + s)
TS_HOW = {"Random": "random", "GradMaxOpt": "gradmax_opt", "GradMax": "gradmax"}  # registry


def method_of(record: dict) -> str:
    """The method of a run of this chapter: the second part of its name (``"small GradMax"``
    -> ``"GradMax"``)."""
    return record["name"].split(" ", 1)[1]


def ts_config(method: str, teacher_widths: list[int], start_hidden: int, interval: int,
              steps: int, seeds: list[int], lr: float = 0.1, units: int = 1,
              growths: int = 5, n_points: int = 1000, norm_scale: float = 0.5,
              opt_steps: int = 100) -> dict:
    """The driver configuration of one teacher-student run (section 4.1): ``growths`` times
    ``units`` new hidden units, every ``interval`` steps from step ``interval`` on; full-batch
    gradient descent on the MSE, the test MSE every :data:`TS_EVAL_EVERY` steps and the
    gradient norm of all parameters (Fig. 2b) after every backward pass.

    Seed s fixes the teacher and the data (``data.per_seed``) and the student's initial
    weights (``init_seed``), so every method of a seed starts from the same network.
    Baseline-Big starts at the teacher's hidden width; the new units' outgoing weights have
    ``norm_scale`` times the mean norm of the existing ones.
    """
    if method not in TS_METHODS:
        raise ValueError(f"method must be one of {TS_METHODS}, got {method!r}")
    hidden = teacher_widths[1] if method == "Baseline-Big" else start_hidden
    plan = None
    if method in TS_HOW:
        how = {"name": TS_HOW[method], "scale": norm_scale}
        if method == "GradMaxOpt":
            how["steps"] = opt_steps
        plan = {"when": {"name": "every", "interval": interval, "count": growths},
                "where": {"name": "fixed_sites", "units": {"layers.0": units}}, "how": how}
    return {"name": method, "seeds": list(seeds),
            "data": {"name": "teacher_student", "per_seed": True,
                     "teacher": list(teacher_widths), "n_points": n_points},
            "model": {"name": "mlp", "hidden": [hidden], "activation": "relu1"},
            "train": {"iterations": steps, "lr": lr, "loss": "mse",
                      "eval_every": TS_EVAL_EVERY, "init_seed": TS_INIT_SEED,
                      "step_metrics": ["grad_norm"]},
            "plan": plan}


def new_unit_gradient_norm(model, how, split: Split) -> float:
    """Grow one hidden unit with ``how`` and return ``||dL/dW_l^new||_F`` by autograd (Fig. 2a)."""
    site = model.width_sites()[0]
    grown = widen(model, [Proposal(site, 1)], how, Probe(split, "mse")).model
    grown.zero_grad()
    LOSSES["mse"](grown(split.X_train)[None], split.y_train).sum().backward()
    return float(grown.get_submodule(site.producer).weight.grad[-1].norm())


def _models_at_growth(record: dict):
    """(seed, its data, its models just before each growth) of a teacher-student record run
    with ``keep_models=True``."""
    for seed, models in zip(record["seeds"], record["models_at_growth"]):
        yield seed, load_data(record["config"]["data"], seed), models


def fig2a(record: dict, repeats: int, norm_scale: float, opt_steps: int) -> dict:
    """Gradient norm of one new unit grown from the model before every growth of a Random run
    (Fig. 2a; the record of :func:`growcore.driver.run_experiment` with ``keep_models``).

    Random and GradMaxOpt are stochastic: ``repeats`` draws each.
    """
    out = {"GradMax": [], "GradMaxOpt": [], "Random": []}
    norm = TargetNorm(scale=norm_scale)
    for _, split, models in _models_at_growth(record):
        out["GradMax"].append([new_unit_gradient_norm(m, GradMax("mse", norm=norm), split)
                               for m in models])
        for method, make in (("Random", lambda r: Random(norm, seed=r)),
                             ("GradMaxOpt", lambda r: GradMaxOpt("mse", norm=norm,
                                                                 steps=opt_steps, seed=r))):
            out[method].append([[new_unit_gradient_norm(m, make(r), split)
                                 for r in range(repeats)] for m in models])
    return out  # method -> [seed][growth] (GradMax) or [seed][growth][repeat]


def fig2c(record: dict, steps: int, norm_scale: float, lr: float) -> list:
    """From the model before every growth (see :func:`fig2a`), grow one unit by GradMax and by
    Random, train ``steps`` more steps each, and return ``L(f_r) - L(f_g)`` per step:
    [seed][growth][step] (Fig. 2c)."""
    gaps = []
    norm = TargetNorm(scale=norm_scale)
    for seed, split, models in _models_at_growth(record):
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
    """The teacher-student runs of Figs. 2-3, name -> driver configuration."""
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
    return {name: {**config, "name": name} for name, config in runs.items()}


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (section 4.2)


def image_data(p: dict) -> dict:
    """The driver's data section of the image runs: the seeded subsets of ``image_dataset``
    (CIFAR-10 from its archive, CIFAR-100 and ImageNet from their folders)."""
    dataset = p["image_dataset"]
    data = {"name": dataset, "n_train": p["cifar_train"] or None,
            "n_test": p["cifar_test"] or None, "augment": p["cifar_augment"]}
    if dataset == "cifar10":
        return {**data, **({"archive": p["cifar_archive"]} if p["cifar_archive"] else {})}
    data["root"] = str(dataset_dir(dataset, p["data_root"]))
    return {**data, **({"image_size": p["image_size"]} if dataset == "imagenet" else {})}


def load_images(p: dict, device: str = "cpu") -> tuple[Split, dict]:
    """The image data set of the parameters (:func:`image_data`): train and test images
    (uint8, on ``device``, with their ``classes``), and ``{"classes": [...], "source": "..."}``."""
    images = load_data(image_data(p)).to(device)
    return images, {"classes": list(images.classes), "source": images.source}


def cifar_model(model: str, width: float, p: dict) -> dict:
    """The driver's model section of VGG11, WRN-28-1 or MobileNet-v1 at ``width``, with
    ``relu'(0) = 1`` (GradMax section 4).

    ``cifar_batch_norm`` applies to VGG11; the WRN-28 and MobileNet-v1 of
    :mod:`growcore.models` always have it. MobileNet-v1 takes the ImageNet stem on ImageNet,
    the CIFAR stem (and CIFAR-10's channel statistics) else.
    """
    if model == "vgg11":
        return {"name": "vgg11", "width": width, "batch_norm": p["cifar_batch_norm"],
                "activation": "relu1"}
    if model == "wrn28":
        return {"name": "wrn", "depth": 28, "width": 1, "block_width": width,
                "activation": "relu1"}
    if p["image_dataset"] == "imagenet":
        return {"name": "mobilenet_v1", "width": width, "stem": "imagenet",
                "activation": "relu1"}
    return {"name": "mobilenet_v1", "width": width, "stem": "cifar", "activation": "relu1",
            "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}


def cifar_how(method: str, p: dict) -> dict:
    """Section 4.2's HOW by registry name: outgoing weights of norm ``cifar_epsilon`` for all
    methods (Firefly needs them non-zero); with ``cifar_inverse`` (Table 2) outgoing weights
    zero and GradMaxOpt replaces the SVD."""
    batch, eps, scale = p["cifar_batch_size"], p["cifar_epsilon"], p["norm_scale"]
    if p["cifar_inverse"] and method == "GradMax":
        return {"name": "gradmax_opt", "batch_size": batch, "scale": scale, "inverse": True,
                "steps": p["opt_steps"]}
    if p["cifar_inverse"] and method == "Random":
        return {"name": "random", "scale": scale, "inverse": True}
    if method == "GradMax":
        return {"name": "gradmax", "batch_size": batch, "value": eps}
    if method == "Random":
        return {"name": "random", "value": eps}
    if method == "Firefly-Opt":
        return {"name": "firefly_opt", "batch_size": batch, "scale": scale, "epsilon": eps,
                "steps": p["firefly_steps"]}
    raise ValueError(f"{method!r} does not grow")


def cifar_config(model: str, method: str, p: dict) -> dict:
    """The driver configuration of one image run: ``model`` at width ``cifar_width`` grown
    ``cifar_factor`` times wider (Baseline-Big starts at the final width) with SGD momentum 0.9,
    weight decay 5e-4 and a cosine schedule; the test set is evaluated once, at the end."""
    if method not in CIFAR_METHODS:
        raise ValueError(f"method must be one of {CIFAR_METHODS}, got {method!r}")
    width = p["cifar_width"] * (p["cifar_factor"] if method == "Baseline-Big" else 1)
    lr = {"vgg11": p["cifar_lr_vgg"], "wrn28": p["cifar_lr_wrn"],
          "mobilenet_v1": p["cifar_lr_mobilenet"]}[model]
    plan = None
    if method not in ("Baseline-Small", "Baseline-Big"):
        growths = p["cifar_growths"]
        plan = {"when": {"name": "every", "interval": p["cifar_interval"],
                         "start": p["cifar_first_growth"], "count": growths},
                "where": {"name": "grow_to_widths", "factor": p["cifar_factor"],
                          "growths": growths},
                "how": cifar_how(method, p)}
    return {"name": f"{model} {method}", "seeds": list(range(p["cifar_seeds"])),
            "data": image_data(p), "model": cifar_model(model, width, p),
            "train": {"iterations": p["cifar_steps"], "batch_size": p["cifar_batch_size"],
                      "lr": lr, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
                      "test_in_loop": False, "eval_batch_size": 500},
            "plan": plan}


def cifar_experiments(p: dict) -> dict[str, dict]:
    """The CIFAR-10 runs of Table 1 (and Table 2 with ``cifar_batch_norm``/``cifar_inverse``),
    name -> driver configuration."""
    return {f"{model} {method}": cifar_config(model, method, p)
            for model in p["cifar_models"] for method in CIFAR_METHODS}


def experiments(p: dict) -> dict[str, dict]:
    """All runs of the chapter, name -> driver configuration (``python -m growcore.driver
    --chapter gradmax``)."""
    return {**ts_experiments(p), **cifar_experiments(p)}


def notebook_parameters(preset: str) -> dict:
    """The notebook's parameters under ``preset`` (the parameters cell's defaults updated by
    the preset file's section, as papermill injects them), validated."""
    return validate(runner_parameters("gradmax", preset))


def save_analysis(name: str, config: dict, metrics: dict, *, directory, preset: str,
                  start: float) -> dict:
    """Record a derived analysis (Figs. 2a, 2c, 6) like a run: configuration and metrics."""
    seeds = config.get("seeds", [])
    record = results.make_record(name, {**config, "seeds": seeds}, preset=preset, seeds=seeds,
                                 wall_time_s=time.perf_counter() - start, metrics=metrics)
    return results.store(record, directory)

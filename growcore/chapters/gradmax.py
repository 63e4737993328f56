"""The GradMax chapter (``notebooks/gradmax.ipynb``): parameters, experiments and analyses.

Teacher-student (GradMax section 4.1, Appendix D): a student MLP grows its hidden layer to the
teacher's width under a fixed schedule; the methods differ only in HOW the new neurons start.
CIFAR-10 (section 4.2): VGG11 and WRN-28-1 grown from width x0.25 to full width; the other
rows of Table 1 with ``image_dataset``: WRN-28-1 on CIFAR-100 and MobileNet-v1 on ImageNet,
decoded into memory at ``image_size`` or, with ``stream``, streamed from disk (the paper's
224 px, :func:`image_data`).

Every run is a configuration of :mod:`growcore.driver` (:func:`experiments`), named
``"<group> <method>"`` (``"small GradMax"``, ``"vgg11 Firefly-Opt"``, ``"vgg11 GradMax [epsilon
outgoing]"``): the method of a record is the second part of its name (:func:`method_of`).

Analyses beside the runs: differences paired by seed (:func:`paired`, :func:`paired_estimate`,
:func:`paired_frame`, on :func:`growcore.uncertainty.paired_difference`; the verdicts come from
:mod:`growcore.claims`), the cost of a growth step in training steps (:func:`growth_step_cost`,
:func:`growth_step_ratios`), the new units' gradient norms and the exact-vs-used statistics at
every growth site of a CIFAR model (:func:`site_report`), and the auxiliary kernel of a
strided producer (:func:`strided_auxiliary_report`).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from growcore import papers, results
from growcore.data import Split
from growcore.driver import load_data
from growcore.how import GradMax, GradMaxOpt, Random
from growcore.images import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataError,
    DataNotFoundError,
    dataset_sizes,
)
from growcore.losses import LOSSES
from growcore.models.sites import Proposal
from growcore.ops import widen
from growcore.params import ParameterError, Spec, check_model, require
from growcore.params import validate as validate_all
from growcore.paths import dataset_dir, missing_dataset_message
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES
from growcore.stats import Probe, TargetNorm, collect, gradient_matrix, outgoing_norms
from growcore.stats.gradmax import STATISTICS, strided_auxiliary_matrix
from growcore.train import train
from growcore.uncertainty import MIN_BAND, Estimate, errorbar, paired_difference

PRESETS = ("smoke", "lab", "cpu", "gpu")
PAPER_NUMBERS = papers.load("gradmax")  # growcore/papers/gradmax.yml
TS_METHODS = ("Baseline-Small", "Baseline-Big", "Random", "GradMaxOpt", "GradMax")
CIFAR_METHODS = ("Baseline-Small", "Baseline-Big", "Random", "Firefly-Opt", "GradMax")
CIFAR_MODELS = ("vgg11", "wrn28", "mobilenet_v1")
IMAGE_DATASETS = ("cifar10", "cifar100", "imagenet")
STREAMABLE = ("imagenet",)  # the image data sets that ``stream`` reads from disk
# The models each data set takes: VGG11 and WRN-28-1 are built for 32x32 inputs; MobileNet-v1
# has a CIFAR stem (stride 1) and an ImageNet stem (stride 2).
MODELS_FOR = {"cifar10": CIFAR_MODELS, "cifar100": CIFAR_MODELS, "imagenet": ("mobilenet_v1",)}
PAPER_TABLE1 = PAPER_NUMBERS["table1"]
PAPER_SCHEDULE = PAPER_NUMBERS["schedule"]
TS_EVAL_EVERY = 50  # test MSE of the teacher-student runs every this many steps
PAIRED_METHODS = ("Random", "GradMax")  # teacher-student runs with ts_paired_seeds, batched
# Where epsilon goes in the image runs. "incoming": the public code (epsilon scales the new
# incoming weights and every growth config sets grow_epsilon = 0: they are zero; the outgoing
# weights get the configs' scale); "outgoing": the paper's sentence (outgoing norm epsilon).
EPSILON_SIDES = ("incoming", "outgoing")
SIDE_METHODS = ("Random", "GradMax")  # the image runs made under both sides (cifar_both_sides)
# Outgoing norm of a new unit in the public growth configs: VGG's grow_scale_method "fixed"
# (each unit 0.5), WRN's and MobileNet's "mean_norm" (0.5 x the mean of the existing units').
CODE_SCALE = {"vgg11": {"value": 0.5}, "wrn28": {"scale": 0.5}, "mobilenet_v1": {"scale": 0.5}}

PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "n_seeds": Spec(int, minimum=1),
    "ts_small_steps": Spec(int, minimum=2),
    "ts_small_interval": Spec(int, minimum=1),
    "ts_large_steps": Spec(int, minimum=2),
    "ts_large_interval": Spec(int, minimum=1),
    "ts_lr": Spec(float, greater_than=0),
    "ts_points": Spec(int, minimum=2),
    "norm_scale": Spec(float, greater_than=0),
    "ts_paired_seeds": Spec(int, minimum=2),
    "random_directions": Spec(int, minimum=1),
    "opt_steps": Spec(int, minimum=1),
    "firefly_steps": Spec(int, minimum=1),
    "fig2_repeats": Spec(int, minimum=1),
    "fig2c_steps": Spec(int, minimum=1),
    "alignment_batch_sizes": Spec(list, item=int, minimum=1, min_length=1),
    "alignment_draws": Spec(int, minimum=1),
    "cost_repeats": Spec(int, minimum=2),
    "image_dataset": Spec(str, choices=IMAGE_DATASETS),
    "data_root": Spec(str),
    "image_size": Spec(int, minimum=8),
    "cifar_models": Spec(list, item=str, choices=CIFAR_MODELS),
    "cifar_seeds": Spec(int, minimum=1),
    "cifar_width": Spec(float, minimum=0.01, maximum=1),
    "cifar_factor": Spec(float, greater_than=1),
    "cifar_train": Spec(int, minimum=0),
    "cifar_test": Spec(int, minimum=0),
    "cifar_steps": Spec(int, minimum=1),
    "cifar_first_growth": Spec(int, minimum=1),
    "cifar_interval": Spec(int, minimum=1),
    "cifar_growths": Spec(int, minimum=1),
    "cifar_batch_size": Spec(int, minimum=1),
    "cifar_lr_vgg": Spec(float, greater_than=0),
    "cifar_lr_wrn": Spec(float, greater_than=0),
    "cifar_lr_mobilenet": Spec(float, greater_than=0),
    "cifar_epsilon": Spec(float, greater_than=0),
    "cifar_epsilon_side": Spec(str, choices=EPSILON_SIDES),
    "cifar_both_sides": Spec(bool),
    "cifar_statistics": Spec(str, choices=STATISTICS),
    "cifar_batch_norm": Spec(bool),
    "cifar_inverse": Spec(bool),
    "cifar_augment": Spec(bool),
    "cifar_archive": Spec(str),
    "stream": Spec(bool),
    "num_workers": Spec(int, minimum=0),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "progress": Spec(bool),
}


def validate(namespace: dict) -> dict:
    """Check the notebook's parameters (picked by name from ``namespace``) before compute:
    every value, their combinations and, where image runs are asked for, the data set
    against what it holds, each model against the image size, and that every growth adds
    units (:func:`_check_image_runs`)."""
    p = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
    require(not p["stream"] or p["image_dataset"] in STREAMABLE, "stream",
            f"streams an ImageFolder tree from disk: it needs image_dataset "
            f"{' or '.join(map(repr, STREAMABLE))}; got image_dataset {p['image_dataset']!r} "
            "(set stream False for it)")
    for size in ("small", "large"):
        steps, interval = p[f"ts_{size}_steps"], p[f"ts_{size}_interval"]
        require(5 * interval < steps, f"ts_{size}_interval",
                f"5 growths every {interval} steps must fit in ts_{size}_steps ({steps})")
    require(max(p["alignment_batch_sizes"]) <= p["ts_points"], "alignment_batch_sizes",
            f"batch sizes must not exceed ts_points ({p['ts_points']}); got "
            f"{p['alignment_batch_sizes']}")
    if p["cifar_models"]:
        _check_image_runs(p)
    return p


def _check_image_runs(p: dict) -> None:
    steps, first = p["cifar_steps"], p["cifar_first_growth"]
    require(first < steps, "cifar_first_growth",
            f"the first growth (step {first}) must come before cifar_steps ({steps})")
    last = first + (p["cifar_growths"] - 1) * p["cifar_interval"]
    require(last < steps, "cifar_interval",
            f"the last growth (step {last} = cifar_first_growth + (cifar_growths - 1) x "
            f"cifar_interval) must come before cifar_steps ({steps}); got cifar_interval "
            f"{p['cifar_interval']}, cifar_growths {p['cifar_growths']}")
    dataset, fitting = p["image_dataset"], MODELS_FOR[p["image_dataset"]]
    require(all(m in fitting for m in p["cifar_models"]), "cifar_models",
            f"{p['cifar_models']} do not all fit image_dataset {dataset!r}; valid: "
            f"{list(fitting)}")
    if p["stream"]:  # the driver's streamed data set: every image of the tree, augmented
        for name in ("cifar_train", "cifar_test"):
            require(p[name] == 0, name, "must be 0 with stream: a stream trains on every "
                    "image of train/ and tests on every image of val/; got "
                    f"{p[name]}")
        require(p["cifar_augment"], "cifar_augment", "must be True with stream: a stream "
                "always augments (random resized crop and flip)")
    if dataset != "cifar10":
        missing = missing_dataset_message(dataset, p["data_root"])
        require(missing is None, "data_root", missing or "")
    where = "cifar_archive" if dataset == "cifar10" else "data_root"
    try:
        n_train, n_test = dataset_sizes(dataset, image_data(p).get("root"),
                                        p["cifar_archive"] or None)
    except (DataNotFoundError, DataError) as error:
        raise ParameterError(f"parameter {where!r}: {error}") from error
    for name, available in (("cifar_train", n_train), ("cifar_test", n_test)):
        part = "training" if name == "cifar_train" else "test"
        require(p[name] <= available, name, f"must be at most the {available} {part} images "
                f"of {dataset} (0: all of them); got {p[name]}")
    used = p["cifar_train"] or n_train
    require(p["cifar_batch_size"] <= used, "cifar_batch_size",
            f"must not exceed the {used} training images; got {p['cifar_batch_size']}")
    shape = (3, p["image_size"], p["image_size"]) if dataset == "imagenet" else (3, 32, 32)
    for model in p["cifar_models"]:
        section = cifar_model(model, p["cifar_width"], p)
        options = {k: v for k, v in section.items() if k != "name"}
        check_model("cifar_width", p["cifar_width"], section["name"], options, shape, 10)
        _check_growth_adds_units(model, section["name"], options, shape, p)


def _check_growth_adds_units(model: str, name: str, options: dict, shape, p: dict) -> None:
    """Refuse a ``cifar_factor``/``cifar_growths`` under which a growth of GrowToWidths
    (every site from its width w to round(w (1 + (factor - 1) k / growths)) at growth k)
    adds no unit to the model at ``cifar_width``: its records would call it grown."""
    from growcore.models.factory import build_named
    from growcore.models.sites import width_sites
    from growcore.ops.widen import width

    net = build_named(name, shape, 10, **options)
    widths = [width(net, site) for site in {s.producer: s for s in width_sites(net)}.values()]
    factor, growths = p["cifar_factor"], p["cifar_growths"]
    target = [sum(round(w * (1 + (factor - 1) * k / growths)) for w in widths)
              for k in range(growths + 1)]
    empty = [k for k in range(1, growths + 1) if target[k] <= target[k - 1]]
    require(not empty, "cifar_factor",
            f"{model} at cifar_width {p['cifar_width']} grown to cifar_factor {factor} in "
            f"cifar_growths {growths} adds no unit at growth {empty[0] if empty else 0} "
            f"(of {growths}); a larger cifar_factor or fewer cifar_growths add units at every "
            "growth")


# ---------------------------------------------------------------------------------------------
# Teacher-student (section 4.1)

TS_INIT_SEED = 10_000  # seed s's student starts from torch.manual_seed(10_000 + s)
TS_HOW = {"Random": "random", "GradMaxOpt": "gradmax_opt", "GradMax": "gradmax"}  # registry


def method_of(record: dict) -> str:
    """The method of a run of this chapter: the second part of its name (``"small GradMax"``
    -> ``"GradMax"``, ``"vgg11 GradMax [epsilon outgoing]"`` -> ``"GradMax [epsilon
    outgoing]"``)."""
    return record["name"].split(" ", 1)[1]


def paper_method(method: str) -> str:
    """The paper's name of a method of :func:`method_of` (``"GradMax [epsilon outgoing]"`` ->
    ``"GradMax"``)."""
    return method.split(" [", 1)[0]


def ts_config(method: str, teacher_widths: list[int], start_hidden: int, interval: int,
              steps: int, seeds: list[int], lr: float = 0.1, units: int = 1,
              growths: int = 5, n_points: int = 1000, norm_scale: float = 0.5,
              opt_steps: int = 100, seed_batched: bool = False, series: bool = True,
              grad_norm: bool = True) -> dict:
    """The driver configuration of one teacher-student run (section 4.1): ``growths`` times
    ``units`` new hidden units, every ``interval`` steps from step ``interval`` on; full-batch
    gradient descent on the MSE, the test MSE every :data:`TS_EVAL_EVERY` steps and the
    gradient norm of all parameters (Fig. 2b) after every backward pass.

    Seed s fixes the teacher and the data (``data.per_seed``) and the student's initial
    weights (``init_seed``), so every method of a seed starts from the same network.
    Baseline-Big starts at the teacher's hidden width; the new units' outgoing weights have
    ``norm_scale`` times the mean norm of the existing ones. ``seed_batched``: all seeds as one
    tensor program (:class:`growcore.models.stacked.StackedSeeds`, each seed's data stacked),
    which reproduces the runs one seed at a time (``tests/test_stacked.py``). ``series=False``
    measures the test MSE of the final model only, ``grad_norm=False`` records no gradient
    norm (smaller records for many seeds).
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
            "model": {"name": "mlp", "hidden": [hidden], "activation": "relu1",
                      **({"seed_batched": True} if seed_batched else {})},
            "train": {"iterations": steps, "lr": lr, "loss": "mse",
                      "eval_every": TS_EVAL_EVERY, "init_seed": TS_INIT_SEED,
                      **({"step_metrics": ["grad_norm"]} if grad_norm else {}),
                      **({} if series else {"test_in_loop": False})},
            "plan": plan}


def new_unit_gradient_norm(model, how, split: Split) -> float:
    """Grow one hidden unit with ``how`` and return ``||dL/dW_l^new||_F`` by autograd (Fig. 2a)."""
    site = model.width_sites()[0]
    grown = widen(model, [Proposal(site, 1)], how, Probe(split, "mse")).model
    grown.zero_grad()
    LOSSES["mse"](grown(split.X_train)[None], split.y_train).sum().backward()
    return float(grown.get_submodule(site.producer).weight.grad[-1].norm())


def _models_at_growth(record: dict, n_seeds: int | None = None):
    """(seed, its data, its models just before each growth) of the first ``n_seeds`` seeds
    (default all) of a teacher-student record run with ``keep_models=True``; a seed-batched
    run's models give the seed's own network."""
    for seed, models in list(zip(record["seeds"], record["models_at_growth"]))[:n_seeds]:
        own = [m.seed_module(m.seeds.index(seed)) if hasattr(m, "seed_module") else m
               for m in models]
        yield seed, load_data(record["config"]["data"], seed), own


def fig2a(record: dict, repeats: int, norm_scale: float, opt_steps: int,
          n_seeds: int | None = None) -> dict:
    """Gradient norm of one new unit grown from the model before every growth of a Random run
    (Fig. 2a; the record of :func:`growcore.driver.run_experiment` with ``keep_models``), for
    its first ``n_seeds`` seeds.

    Random and GradMaxOpt are stochastic: ``repeats`` draws each.
    """
    out = {"GradMax": [], "GradMaxOpt": [], "Random": []}
    norm = TargetNorm(scale=norm_scale)
    for _, split, models in _models_at_growth(record, n_seeds):
        out["GradMax"].append([new_unit_gradient_norm(m, GradMax("mse", norm=norm), split)
                               for m in models])
        for method, make in (("Random", lambda r: Random(norm, seed=r)),
                             ("GradMaxOpt", lambda r: GradMaxOpt("mse", norm=norm,
                                                                 steps=opt_steps, seed=r))):
            out[method].append([[new_unit_gradient_norm(m, make(r), split)
                                 for r in range(repeats)] for m in models])
    return out  # method -> [seed][growth] (GradMax) or [seed][growth][repeat]


def fig2c(record: dict, steps: int, norm_scale: float, lr: float,
          n_seeds: int | None = None) -> list:
    """From the model before every growth (see :func:`fig2a`; its first ``n_seeds`` seeds),
    grow one unit by GradMax and by Random, train ``steps`` more steps each, and return
    ``L(f_r) - L(f_g)`` per step: [seed][growth][step] (Fig. 2c)."""
    gaps = []
    norm = TargetNorm(scale=norm_scale)
    for seed, split, models in _models_at_growth(record, n_seeds):
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
    """The teacher-student runs of Figs. 2-3, name -> driver configuration.

    Random and GradMax (:data:`PAIRED_METHODS`) run ``ts_paired_seeds`` seeds as one batched
    program, paired by seed (the same teacher, data and initial student); the other methods
    and the public teacher run ``n_seeds`` seeds one at a time, the paper's setting, with the
    configurations of the earlier 5-seed records.
    """
    seeds = list(range(p["n_seeds"]))
    common = {"seeds": seeds, "lr": p["ts_lr"], "n_points": p["ts_points"],
              "norm_scale": p["norm_scale"], "opt_steps": p["opt_steps"]}
    # the paired runs keep what the chapter reads: losses, and gradient norms for Fig. 2b
    paired = {**common, "seeds": list(range(p["ts_paired_seeds"])), "seed_batched": True,
              "series": False}
    runs = {}
    for method in TS_METHODS:
        own = paired if method in PAIRED_METHODS else common
        runs[f"small {method}"] = ts_config(method, [20, 10, 10], 5, p["ts_small_interval"],
                                            p["ts_small_steps"], **own)
        large = {**own, "grad_norm": False} if method in PAIRED_METHODS else own
        runs[f"large {method}"] = ts_config(method, [100, 50, 10], 25, p["ts_large_interval"],
                                            p["ts_large_steps"], units=5, **large)
    # the public notebook's teacher is 10:10:10, the paper's 20:10:10
    for method in ("Baseline-Big", "Random", "GradMax"):
        runs[f"public {method}"] = ts_config(method, [10, 10, 10], 5, p["ts_small_interval"],
                                             p["ts_small_steps"], **common)
    return {name: {**config, "name": name} for name, config in runs.items()}


# ---------------------------------------------------------------------------------------------
# Paired comparisons, colours and costs (the book's convention: growcore.uncertainty)

# One colour per method in every figure of the chapter (seaborn's colour-blind palette); a
# run with epsilon on the other side keeps its method's colour and is dashed (style_of).
COLORS = {"Baseline-Small": "#949494", "Baseline-Big": "#000000", "Random": "#0173b2",
          "GradMaxOpt": "#de8f05", "Firefly-Opt": "#029e73", "GradMax": "#d55e00"}


def color_of(method: str) -> str:
    """The colour of ``method`` (a name of :func:`method_of`) in the chapter's figures."""
    return COLORS[paper_method(method)]


def style_of(method: str) -> str:
    """The line style of ``method``: dashed for a run with epsilon on the other side."""
    return "--" if "[" in method else "-"


def paired(records: dict[str, dict], a: str, b: str, key: str, n: int | None = None,
           scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``scale`` times the per-seed metric ``key`` of the runs ``a`` and ``b`` on the seeds
    they share (the first ``n`` of them, default all), in the same seed order: the two
    arguments of :func:`growcore.uncertainty.paired_difference`."""
    va = dict(zip(records[a]["seeds"], records[a]["metrics"][key]))
    vb = dict(zip(records[b]["seeds"], records[b]["metrics"][key]))
    seeds = [s for s in records[a]["seeds"] if s in vb][:n]
    if not seeds:
        raise ValueError(f"runs {a!r} and {b!r} share no seed")
    return (scale * np.array([va[s] for s in seeds], dtype=float),
            scale * np.array([vb[s] for s in seeds], dtype=float))


def paired_estimate(records: dict[str, dict], a: str, b: str, key: str,
                    n: int | None = None, scale: float = 1.0) -> Estimate:
    """``a - b`` of the metric ``key``, paired by seed (:func:`paired`), with its 95 % t
    interval."""
    return paired_difference(*paired(records, a, b, key, n, scale))


def paired_frame(records: dict[str, dict], rows: dict[str, tuple]) -> pd.DataFrame:
    """One row per label -> ``(a, b, key, n, scale)`` (see :func:`paired`): the paired
    difference ``a - b`` with its interval and n, and in how many seeds ``a`` is lower."""
    out = []
    for label, (a, b, key, n, scale) in rows.items():
        va, vb = paired(records, a, b, key, n, scale)
        d = paired_difference(va, vb)
        out.append({"comparison": label, "a - b": d.format(".3g").split(" (n")[0],
                    "n": d.n, "a lower": f"{int((va < vb).sum())} of {d.n}"})
    return pd.DataFrame(out, columns=["comparison", "a - b", "n", "a lower"])


def points(ax, frame: pd.DataFrame, x: str, y: str, hue: str = "method", **kwargs) -> None:
    """The mean of ``y`` per ``x`` and ``hue`` (seaborn's pointplot, the method colours of
    :data:`COLORS`) with the book's 95 % t interval over the units of each group, computed
    in log space when ``ax`` is already log-scaled; with fewer than
    :data:`~growcore.uncertainty.MIN_BAND` units in a group, the units themselves as points
    beside a mean without an interval."""
    import seaborn as sns

    palette = {m: color_of(m) for m in frame[hue].unique()}
    few = frame.groupby([x, hue]).size().min() < MIN_BAND
    levels = frame[hue].nunique()
    if few:  # stripplot's dodge spreads the levels over 0.8; the means sit on the same spots
        sns.stripplot(data=frame, x=x, y=y, hue=hue, palette=palette, dodge=True, size=4,
                      jitter=0.05, alpha=0.5, legend=False, ax=ax, **kwargs)
    sns.pointplot(data=frame, x=x, y=y, hue=hue, palette=palette,
                  dodge=0.8 * (levels - 1) / levels, errorbar=None if few else errorbar,
                  linestyles="none", ax=ax, **kwargs)


def per_seed_mean(values) -> np.ndarray:
    """The mean over every axis but the first (seeds): Fig. 2a's [seed][growth](repeat)
    norms or Fig. 2c's [seed][growth] gaps -> one number per seed."""
    v = np.asarray(values, dtype=float)
    return v.reshape(len(v), -1).mean(axis=1)


def adjusted_gradient_log(record: dict, after: int) -> np.ndarray:
    """Per seed, the mean over the steps from ``after`` on of the log of the gradient norm
    divided by the training loss (Fig. 2b's adjusted gradient norm)."""
    ratio = (np.asarray(record["metrics"]["grad_norm"], dtype=float)
             / np.asarray(record["metrics"]["loss"], dtype=float))
    return np.log(ratio[:, after:]).mean(axis=1)


def growth_step_ratios(record: dict) -> np.ndarray:
    """Per seed of a run made one seed at a time: the mean wall time of its growth steps over
    the mean wall time of its training steps (Fig. 3c)."""
    metrics = record["metrics"]
    return np.array([np.mean(g) / t for g, t in zip(metrics["growth_time"],
                                                      metrics["step_time"])])


def matrix_flop_floor(width: float = 0.25, batch: int = 128, growths: int = 12,
                      seed: int = 0) -> dict[str, float]:
    """What forming GradMax's matrices costs in FLOPs, in training steps of FLOPs, for VGG11
    at ``width`` grown to x1 in ``growths`` (every site at once) from a statistic on ``batch``
    images: ``"exact"`` (eq. (20)), ``"auxiliary"`` (the paper's auxiliary kernel wherever it
    applies, the exact matrix elsewhere), ``"statistics"`` (the statistics pass, one forward
    and one backward to the activations: about 2 forwards of 3). A training step is taken as
    3 forwards (forward and a backward of twice its cost). These count operations, so they
    hold on any hardware that runs the matrices no faster per FLOP than the training step."""
    from growcore.activations import ReLUWithSlopeAtZero
    from growcore.models.vgg import vgg11
    from growcore.stats.gradmax import matrix_flops
    from growcore.where import GrowToWidths

    torch.manual_seed(seed)
    model = vgg11(width, activation=lambda: ReLUWithSlopeAtZero(1.0))
    X = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    split = Split(X, torch.randint(0, 10, (batch,)))
    proposals, _ = GrowToWidths(1 / width, growths)(model, model.width_sites())
    sites = [p.site for p in proposals]
    data = collect(model, sites, split, "cross_entropy")
    step = 3 * model.flops_per_example() * batch
    return {"exact": sum(matrix_flops(model, s, data[s]) for s in sites) / step,
            "auxiliary": sum(matrix_flops(model, s, data[s], True) for s in sites) / step,
            "statistics": 2 / 3}


def growth_step_cost(model, split: Split, how, repeats: int, lr: float = 0.1,
                     loss: str = "mse") -> np.ndarray:
    """The wall time of one growth step by ``how`` (one new unit at the first width site,
    statistics on all of ``split``) over that of one full-batch training step of ``model``
    (forward, backward, SGD update), for ``repeats`` timed repeats of each; the training
    steps run on a copy, so ``model`` is unchanged."""
    import copy

    site = model.width_sites()[0]
    trained = copy.deepcopy(model)
    optimiser = torch.optim.SGD(trained.parameters(), lr=lr)

    def step():
        optimiser.zero_grad()
        LOSSES[loss](trained(split.X_train)[None], split.y_train).sum().backward()
        optimiser.step()

    def grow():
        widen(model, [Proposal(site, 1)], how, Probe(split, loss))

    times = {}
    for name, action in (("step", step), ("grow", grow)):
        action()  # warm-up
        times[name] = []
        for _ in range(repeats):
            start = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - start)
    return np.asarray(times["grow"]) / np.mean(times["step"])


def theory_student(n_points: int, steps: int, lr: float, seed: int = 0) -> tuple[Split, object]:
    """The 20:5:10 student of the theory section and the exercises: the 20:10:10 teacher's
    task (``n_points`` points, seed ``seed``) and a student trained ``steps`` full-batch steps
    from ``torch.manual_seed(seed)``; returns ``(split, student)``."""
    from growcore.data import teacher_student
    from growcore.models.mlp import MLP

    split, _ = teacher_student([20, 10, 10], n_points, seed=seed)
    torch.manual_seed(seed)
    student, _ = train(MLP([20, 5, 10]), split, iterations=steps, lr=lr, loss="mse",
                       progress=False)
    return split, student


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (section 4.2)


def image_data(p: dict) -> dict:
    """The driver's data section of the image runs: the seeded subsets of ``image_dataset``
    (CIFAR-10 from its archive, CIFAR-100 and ImageNet from their folders), decoded into
    memory; with ``stream`` the ImageNet tree under ``data_root`` streamed from disk at
    ``image_size`` by ``num_workers`` processes (the driver's ``stream: true``: every training
    image, no hold-out, random resized crops and flips; the growth steps read the driver's
    in-memory sample)."""
    dataset = p["image_dataset"]
    if p.get("stream"):
        return {"name": dataset, "root": str(dataset_dir(dataset, p["data_root"])),
                "image_size": p["image_size"], "stream": True,
                "num_workers": p["num_workers"]}
    data = {"name": dataset, "n_train": p["cifar_train"] or None,
            "n_test": p["cifar_test"] or None, "augment": p["cifar_augment"]}
    if dataset == "cifar10":
        return {**data, **({"archive": p["cifar_archive"]} if p["cifar_archive"] else {})}
    data["root"] = str(dataset_dir(dataset, p["data_root"]))
    return {**data, **({"image_size": p["image_size"]} if dataset == "imagenet" else {})}


def load_images(p: dict, device: str = "cpu") -> tuple[Split | None, dict]:
    """The image data set of the parameters (:func:`image_data`): train and test images
    (uint8, on ``device``, with their ``classes``), and ``{"classes": [...], "source": "...",
    "n_train": ..., "n_test": ...}``.

    With ``stream`` nothing is held in memory for the runs (each streams the tree itself; pass
    ``split=None`` to the driver) and the first return is ``None``. ``about["batch"]``: the
    training batch the growth-site analysis reads, the first ``cifar_batch_size`` training
    images (streamed: as many decoded at ``image_size`` with the evaluation transform, chosen
    as the driver's sample is).
    """
    if p.get("stream"):
        from growcore.streaming import ImageFolderStream

        spec = image_data(p)
        stream = ImageFolderStream(spec["root"], p["image_size"], p["cifar_batch_size"],
                                   num_workers=p["num_workers"], device=device)
        return None, {"classes": list(stream.classes), "source": stream.describe(),
                      "n_train": stream.n_examples, "n_test": stream.n_test,
                      "batch": stream.sample(p["cifar_batch_size"])}
    images = load_data(image_data(p)).to(device)
    first = slice(p["cifar_batch_size"])
    return images, {"classes": list(images.classes), "source": images.source,
                    "n_train": len(images.y_train), "n_test": len(images.y_test),
                    "batch": Split(images.X_train[first], images.y_train[first])}


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


def cifar_how(method: str, p: dict, model: str = "vgg11", side: str | None = None) -> dict:
    """Section 4.2's HOW by registry name, incoming weights of new units zero.

    ``side`` (default ``cifar_epsilon_side``, :data:`EPSILON_SIDES`) places epsilon for
    Random and GradMax: ``"incoming"``, as the public code does (epsilon on the incoming
    weights, 0 in every growth config; outgoing weights at the config's scale,
    :data:`CODE_SCALE`), or ``"outgoing"``, the paper's sentence (outgoing norm
    ``cifar_epsilon``). Firefly-Opt starts from outgoing weights of norm ``cifar_epsilon``
    either way (it needs them non-zero). With ``cifar_inverse`` (Table 2) outgoing weights
    are zero and GradMaxOpt replaces the SVD. GradMax reads ``cifar_statistics``.
    """
    batch, eps, scale = p["cifar_batch_size"], p["cifar_epsilon"], p["norm_scale"]
    side = side or p["cifar_epsilon_side"]
    if side not in EPSILON_SIDES:
        raise ValueError(f"side must be one of {EPSILON_SIDES}, got {side!r}")
    if p["cifar_inverse"] and method == "GradMax":
        return {"name": "gradmax_opt", "batch_size": batch, "scale": scale, "inverse": True,
                "steps": p["opt_steps"]}
    if p["cifar_inverse"] and method == "Random":
        return {"name": "random", "scale": scale, "inverse": True}
    norm = CODE_SCALE[model] if side == "incoming" else {"value": eps}
    statistics = p.get("cifar_statistics", "passthrough")
    if method == "GradMax":
        return {"name": "gradmax", "batch_size": batch, **norm,
                **({"statistics": statistics} if statistics != "passthrough" else {})}
    if method == "Random":
        return {"name": "random", **norm}
    if method == "Firefly-Opt":
        return {"name": "firefly_opt", "batch_size": batch, "scale": scale, "epsilon": eps,
                "steps": p["firefly_steps"]}
    raise ValueError(f"{method!r} does not grow")


def side_label(side: str) -> str:
    """The suffix of a run made with epsilon on ``side`` other than the chapter's default."""
    return f" [epsilon {side}]"


def cifar_config(model: str, method: str, p: dict, side: str | None = None) -> dict:
    """The driver configuration of one image run: ``model`` at width ``cifar_width`` grown
    ``cifar_factor`` times wider (Baseline-Big starts at the final width) with SGD momentum 0.9,
    weight decay 5e-4 and a cosine schedule; the test set is evaluated once, at the end.
    ``side``: epsilon on that side (:func:`cifar_how`) instead of ``cifar_epsilon_side``; the
    name says so (:func:`side_label`)."""
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
                "how": cifar_how(method, p, model, side)}
    other = side is not None and side != p["cifar_epsilon_side"]
    return {"name": f"{model} {method}" + (side_label(side) if other else ""),
            "seeds": list(range(p["cifar_seeds"])),
            "data": image_data(p), "model": cifar_model(model, width, p),
            "train": {"iterations": p["cifar_steps"], "batch_size": p["cifar_batch_size"],
                      "lr": lr, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
                      "test_in_loop": False, "eval_batch_size": 500},
            "plan": plan}


def cifar_experiments(p: dict) -> dict[str, dict]:
    """The CIFAR-10 runs of Table 1 (and Table 2 with ``cifar_batch_norm``/``cifar_inverse``),
    name -> driver configuration; with ``cifar_both_sides`` (not with ``cifar_inverse``) also
    Random and GradMax with epsilon on the other side (:data:`SIDE_METHODS`)."""
    runs = {}
    other = next(s for s in EPSILON_SIDES if s != p["cifar_epsilon_side"])
    for model in p["cifar_models"]:
        for method in CIFAR_METHODS:
            runs[f"{model} {method}"] = cifar_config(model, method, p)
        if p.get("cifar_both_sides") and not p["cifar_inverse"]:
            for method in SIDE_METHODS:
                config = cifar_config(model, method, p, other)
                runs[config["name"]] = config
    return runs


# ---------------------------------------------------------------------------------------------
# What the image runs do at a growth step


def side_norm(model: str, side: str, p: dict) -> TargetNorm:
    """The outgoing norm of new units of ``model`` with epsilon on ``side``
    (:func:`cifar_how`)."""
    return TargetNorm(**CODE_SCALE[model]) if side == "incoming" else TargetNorm(
        value=p["cifar_epsilon"])


def first_growth(model, p: dict) -> list:
    """The proposals of the first growth of the image runs on ``model`` (GrowToWidths:
    every site by its share of ``cifar_factor`` over ``cifar_growths`` growths)."""
    from growcore.models.sites import width_sites
    from growcore.where import GrowToWidths

    return GrowToWidths(p["cifar_factor"], p["cifar_growths"])(model, width_sites(model))[0]


def _alignment(A: torch.Tensor, B: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between two orthonormal ``[m, k]`` sets
    (1: the same subspace)."""
    return float((A.T @ B).pow(2).sum() / A.shape[1])


def site_report(model, split: Split, proposals: list, sides: dict[str, TargetNorm],
                statistics: str = "passthrough") -> list[dict]:
    """At one growth step of an image run (``proposals``, every site at once, as
    GrowToWidths proposes them), on the training batch ``split`` (the model in train mode):

    * ``alignment``: of the top-k subspace of the matrix the run uses (``statistics``) with
      that of the exact matrix (``statistics="virtual"``: the grown network's gradient
      through max pooling and train-mode BatchNorm), k the site's new units;
    * ``fraction``: the gradient norm the used directions reach on the exact matrix over the
      best one, ``||G^T U_used|| / ||G^T U_exact||``;
    * per side (label -> outgoing norm, e.g. epsilon on the incoming or the outgoing side):
      the outgoing norm ``c`` of each new unit and the mean over the new units of the norm of
      the gradient of a unit's incoming weights, measured by autograd in the network grown at
      every site by GradMax;
    * ``existing``: the mean gradient norm of an existing unit's incoming weights (scale).
    """
    loss = "cross_entropy"
    sites = [p.site for p in proposals]
    used = collect(model, sites, split, loss, statistics=statistics)
    exact = collect(model, sites, split, loss, statistics="virtual")
    rows = []
    for proposal in proposals:
        site, k = proposal.site, proposal.amount
        G_used, G = (gradient_matrix(model, site, data[site]) for data in (used, exact))
        U_used = torch.linalg.svd(G_used, full_matrices=False)[0][:, :k]
        U = torch.linalg.svd(G, full_matrices=False)[0][:, :k]
        rows.append({"site": site.producer, "consumer": site.consumer, "units": k,
                     "pooling": tuple(used[site][0].grid) != tuple(used[site][0].consumer_grid),
                     "alignment": _alignment(U_used, U),
                     "fraction": float((G.T @ U_used).norm() / (G.T @ U).norm())})
    for label, norm in sides.items():
        how = GradMax(loss, norm=norm, statistics=statistics)
        grown = widen(model, proposals, how, Probe(split, loss)).model
        grown.zero_grad()
        LOSSES[loss](grown(split.X_train)[None], split.y_train).sum().backward()
        for row, proposal in zip(rows, proposals):
            grad = grown.get_submodule(proposal.site.producer).weight.grad
            row[f"c {label}"] = norm(outgoing_norms(model, proposal.site))
            row[f"gradient {label}"] = float(grad[-proposal.amount:].flatten(1).norm(dim=1)
                                             .mean())
            row["existing"] = float(grad[:-proposal.amount].flatten(1).norm(dim=1).mean())
    return rows


def strided_auxiliary_report(stride: int = 2, size: int = 17, n: int = 64, k: int = 2,
                             seed: int = 0) -> dict:
    """The auxiliary kernel (Appendix B) on a producer of stride ``stride``: a 3x3 convolution
    (3 -> 8 channels, stride ``stride``, unpadded) feeding a 3x3 one (8 -> 16, stride 1), on
    ``n`` Gaussian images ``size`` x ``size`` with Gaussian targets (MSE after global average
    pooling), in float64.

    Returns the relative error ``||G_rule - G|| / ||G||`` against growcore's exact matrix
    (:func:`growcore.stats.gradient_matrix`) of the public code's rule and of the corrected
    one (:func:`growcore.stats.gradmax.strided_auxiliary_matrix`), and for ``j = 1..k`` new
    units the fraction of the best gradient norm the rule's top-j directions reach,
    ``||G^T U_rule|| / ||G^T U||``.
    """
    from growcore.models.sites import WidthSite

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential()
    net.conv1 = torch.nn.Conv2d(3, 8, 3, stride=stride)
    net.act = torch.nn.Identity()  # f(0) = 0, f'(0) = 1 on the new channel
    net.conv2 = torch.nn.Conv2d(8, 16, 3)
    net.pool, net.flat = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    net = net.double()
    site = WidthSite("conv1", None, "conv2")
    X = torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)
    data = collect(net, [site], Split(X, torch.randn(n, 16, generator=g, dtype=torch.float64)),
                   "mse")[site]
    G = gradient_matrix(net, site, data)
    U = torch.linalg.svd(G, full_matrices=False)[0]
    out = {"shape": tuple(G.shape), "stride": stride}
    for rule in ("public", "corrected"):
        G_rule = strided_auxiliary_matrix(net, site, data, rule)
        U_rule = torch.linalg.svd(G_rule, full_matrices=False)[0]
        out[rule] = {"error": float((G_rule - G).norm() / G.norm()),
                     "fraction": [float((G.T @ U_rule[:, :j]).norm() / (G.T @ U[:, :j]).norm())
                                  for j in range(1, k + 1)]}
    return out


def target_norms(model, site, scale: float = 0.5) -> dict[str, float]:
    """The outgoing norm of one new unit at ``site`` under the public code's three
    conventions: ``scale`` x the mean norm of the existing units' outgoing weights (its
    image configs' ``mean_norm``, and the chapter's ``norm_scale``), 1.0 x that mean (its
    teacher-student notebook) and an absolute ``scale`` (its VGG config's ``fixed``)."""
    existing = outgoing_norms(model, site)
    return {f"{scale} x mean (image configs)": TargetNorm(scale)(existing),
            "1.0 x mean (teacher-student notebook)": TargetNorm(1.0)(existing),
            f"absolute {scale} (VGG config)": TargetNorm(value=scale)(existing)}


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

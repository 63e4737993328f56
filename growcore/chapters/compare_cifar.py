"""Part 4 of the comparison chapter on CIFAR-10: the when x where x how factorial on images.

The factorial of :mod:`growcore.chapters.compare` (part 4) runs on a teacher-student MLP;
this module is the same factorial on a second benchmark, CIFAR-10 (the offline JPEG copy,
:mod:`growcore.images`), with a small VGG of one 3x3 convolution per stage (BatchNorm, the
activation ``relu1`` so that GradMax's statistic applies, 2x2 max-pooling, a global-average
head). Every cell is one driver configuration (:mod:`growcore.driver`); they differ only in
the plan. The timings are :func:`compare.timing_spec`'s, with the schedule in epochs of
mini-batches: ``cifar_factorial_growths`` growths, the last at least
``cifar_factorial_final_epochs`` before the end (FRAGrow's ``E_F_min``); the fixed schedule
(``every``) grows every ``I_max = (E_T - E_F_min) / n`` epochs (FRAGrow eq. 4), when the
periodic timing does. Where: :func:`compare.where_spec` (``cifar_factorial_units`` channels
at one site per growth; NAGN its own increments at every site, at most that many, its
profile read over one epoch of batches). How: :func:`compare.how_spec`.

Seeds pair across cells: seed ``s``'s network is built after ``torch.manual_seed(s)``
(``train.init_seed`` 0) and its batches come in the order of a generator of ``s``; the data
split (``split_seed`` 0) is the same for every seed and cell. Each seed trains alone (a
criterion may choose different sites per seed, an adaptive timing reads one seed's errors).

:func:`run_cifar_cell` returns what :func:`compare.run_growth` returns, so
:func:`compare.growth_rows`, :func:`compare.main_effects`, :func:`compare.variance_explained`,
:func:`compare.cell_summary` (the Pareto front) and :func:`compare.best_against_papers` read
its rows unchanged. :func:`generated_cifar` makes small CIFAR-shaped data with a learnable
signal: the smoke path of the tests, where the archive is not used.

The parameters' values per preset are the notebook's (its parameters cell: the cpu preset)
and ``presets/compare.yml``'s. Cost (the cpu preset): 2 timings x 2 criteria x 2
initialisers x 3 seeds, the static small and large networks and the grown-size static of
GradMax's cell: 11 runs of 3 seeds, 159 s measured on the shared 2-core machine with 4 epochs
on 1500 images (the preset now trains 3). The gpu preset's cost is estimated from FLOPs by
:func:`expected_cost` (:func:`growcore.gpucheck.run_cost`: an *estimate*, a sustained rate and
a per-step floor assumed, not a measurement).
"""

from __future__ import annotations

import math
import time

import torch

from growcore.chapters import compare
from growcore.images import CIFAR10_CLASSES, DataError, DataNotFoundError, ImageSplit
from growcore.params import ParameterError, check, check_model, require
from growcore.params import validate as validate_all
from growcore.when.formulas import max_interval

CLASSES = len(CIFAR10_CLASSES)
IMAGE = (3, 32, 32)
FACTORS = compare.FACTORS  # ("when", "where", "how")
# the compare chapter's parameters the cells read (FRAGrow's alpha, the convergent patience,
# the norm of new outgoing weights, GradMaxOpt's and Firefly-Opt's steps, the archive)
SHARED = ("fragrow_alpha", "convergent_patience", "norm_scale", "opt_steps", "firefly_steps",
          "cifar10_archive")
# what the factorial's lists are called, per factor (the parameter a refusal names)
FACTOR_PARAMETERS = {"when": "cifar_factorial_when", "where": "cifar_factorial_where",
                     "how": "cifar_factorial_how"}

# the parameters of this part (the chapter's, in compare.PARAMETERS with the others)
CIFAR_PARAMETERS = {k: spec for k, spec in compare.PARAMETERS.items()
                    if k.startswith("cifar_factorial_")}

def validate_cifar(p: dict, split: ImageSplit | None = None) -> dict:
    """Check the parameters of the CIFAR-10 factorial (the ``cifar_factorial_*`` names and
    :data:`SHARED`, picked from ``p``) before compute; return them. Every configuration is
    then built and checked by the driver (model and plan, on a few generated images of
    CIFAR-10's shape, nothing decoded). Sizes are checked against ``split`` if given, else
    against the CIFAR-10 images at hand (the cache or the archive ``cifar10_archive``)."""
    q = validate_all({k: p[k] for k in CIFAR_PARAMETERS if k in p}, CIFAR_PARAMETERS)
    missing = [name for name in SHARED if name not in p]
    if missing:
        raise ParameterError(f"missing parameter(s): {', '.join(missing)} (the compare "
                             "chapter's, read by the CIFAR-10 factorial)")
    q.update({name: check(name, p[name], compare.PARAMETERS[name]) for name in SHARED})
    for factor, name in FACTOR_PARAMETERS.items():
        require(len(set(q[name])) == len(q[name]), name, f"names each once; got {q[name]}")
        base = compare.BASELINES[factor]
        require(base in q[name], name, f"must include {base!r}, the baseline of the main "
                f"effects (compare.BASELINES); got {q[name]}")
    require(q["cifar_factorial_final_epochs"] < q["cifar_factorial_epochs"],
            "cifar_factorial_final_epochs", f"must be below cifar_factorial_epochs "
            f"({q['cifar_factorial_epochs']}): growth happens before the fine-tuning; got "
            f"{q['cifar_factorial_final_epochs']}")
    require(q["cifar_factorial_batch_size"] <= q["cifar_factorial_n_train"],
            "cifar_factorial_batch_size", f"must not exceed cifar_factorial_n_train "
            f"({q['cifar_factorial_n_train']}); got {q['cifar_factorial_batch_size']}")
    require(q["cifar_factorial_evals_per_epoch"] <= iterations_per_epoch(q),
            "cifar_factorial_evals_per_epoch", f"cannot exceed the batches per epoch "
            f"({iterations_per_epoch(q)}); got {q['cifar_factorial_evals_per_epoch']}")
    cells = cifar_factorial_cells(q)
    for paper in q["cifar_factorial_grown_size"]:
        require(compare.PAPER_CELLS[paper] in cells, "cifar_factorial_grown_size",
                f"{paper}'s own cell {compare.PAPER_CELLS[paper]} is not in the factorial "
                f"(its levels are cifar_factorial_when/where/how); got "
                f"{q['cifar_factorial_grown_size']}")
    _check_sizes(q, split)
    check_model("cifar_factorial_widths", q["cifar_factorial_widths"], "vgg",
                {k: v for k, v in model_spec(q["cifar_factorial_widths"]).items()
                 if k != "name"}, IMAGE, CLASSES)
    _check_cells(q)
    return q


def _check_sizes(q: dict, split: ImageSplit | None) -> None:
    """The split's sizes against the images at hand (``split``, else CIFAR-10's)."""
    if split is not None:
        n_train, n_test = len(split.y_train) + len(split.y_val), len(split.y_test)
    else:
        from growcore.images import dataset_sizes

        try:
            n_train, n_test = dataset_sizes("cifar10", None, q["cifar10_archive"] or None)
        except (DataNotFoundError, DataError) as error:
            raise ParameterError(f"parameter 'cifar10_archive': {error}") from error
    wanted = q["cifar_factorial_n_train"] + q["cifar_factorial_n_val"]
    require(wanted <= n_train, "cifar_factorial_n_train",
            f"cifar_factorial_n_train + cifar_factorial_n_val must not exceed the {n_train} "
            f"training images; got {q['cifar_factorial_n_train']} + "
            f"{q['cifar_factorial_n_val']}")
    require(q["cifar_factorial_n_test"] <= n_test, "cifar_factorial_n_test",
            f"must be at most the {n_test} test images; got {q['cifar_factorial_n_test']}")


def _check_cells(q: dict) -> None:
    """Every configuration checked by the driver (its first seed's model and plan) on a few
    generated images; a cell whose plan cannot grow the network is refused naming the
    factor's parameter, the cell and the driver's reason."""
    from growcore.driver import run_experiment

    shape = generated_cifar(CLASSES, 1, 1)
    for key, config in cifar_factorial_experiments(q).items():
        try:
            run_experiment({**config, "seeds": config["seeds"][:1]}, split=shape,
                           device="cpu", progress=False, save=False, check_only=True)
        except ParameterError as error:
            if key[0] == "static":
                raise ParameterError(f"parameter 'cifar_factorial_widths': {error}") from error
            blamed = "how" if "cannot fill" in str(error) else "where"  # GrowthPlan.check
            raise ParameterError(f"parameter {FACTOR_PARAMETERS[blamed]!r}: the cell "
                                 f"{key} cannot grow the conv net "
                                 f"{q['cifar_factorial_widths']}: {error}") from error


def iterations_per_epoch(q: dict) -> int:
    """Batches per epoch (the driver's count: the last batch may be short)."""
    return max(1, math.ceil(q["cifar_factorial_n_train"] / q["cifar_factorial_batch_size"]))


def model_spec(widths: list[int]) -> dict:
    """The driver's model section of the factorial's VGG with these conv widths, one conv
    per stage (BatchNorm, ``relu1``: ``f'(0) = 1`` as GradMax's statistic needs, 2x2
    max-pooling after each, a global-average-pooling head)."""
    return {"name": "vgg", "config": [[int(w)] for w in widths], "head": "pool",
            "activation": "relu1"}


def schedule_parameters(q: dict) -> dict:
    """The compare chapter's schedule parameters in this benchmark's units, for
    :func:`compare.timing_spec`: ``how_growths`` growths, ``how_final_steps`` the fine-tuning
    epochs (FRAGrow's ``E_F_min``), ``how_interval`` the fixed schedule's interval in
    iterations (``I_max`` epochs, FRAGrow eq. 4); and ``how_units`` for
    :func:`compare.where_spec`."""
    i_max = max_interval(q["cifar_factorial_epochs"], q["cifar_factorial_final_epochs"],
                         q["cifar_factorial_growths"])
    return {**q, "how_growths": q["cifar_factorial_growths"],
            "how_final_steps": q["cifar_factorial_final_epochs"],
            "how_interval": max(1, round(i_max * iterations_per_epoch(q))),
            "how_units": q["cifar_factorial_units"]}


def plan_spec(q: dict, when: str, where: str, how: str) -> dict:
    """The plan of one cell by registry names (see the module docstring)."""
    s = schedule_parameters(q)
    where_part = compare.where_spec(s, where)
    if where == "nagn":  # its profile over one epoch of batches, its steps capped like k
        where_part = {**where_part, "window_batches": iterations_per_epoch(q),
                      "delta_max": q["cifar_factorial_units"]}
    return {"when": compare.timing_spec(s, when), "where": where_part,
            "how": compare.how_spec(s, how)}


def cifar_config(q: dict, name: str, widths: list[int], plan: dict | None = None) -> dict:
    """One driver configuration of the factorial: CIFAR-10 (``split_seed`` 0, the
    validation images held out of the training set), the VGG of ``widths``, AdamW at a
    constant rate for ``cifar_factorial_epochs`` epochs, the validation error evaluated
    ``cifar_factorial_evals_per_epoch`` times an epoch, the test error once at the end."""
    data = {"name": "cifar10", "n_train": q["cifar_factorial_n_train"],
            "n_val": q["cifar_factorial_n_val"], "n_test": q["cifar_factorial_n_test"],
            "split_seed": 0, "augment": q["cifar_factorial_augment"]}
    if q["cifar10_archive"]:
        data["archive"] = q["cifar10_archive"]
    config = {"name": name, "seeds": list(range(q["cifar_factorial_seeds"])), "data": data,
              "model": model_spec(widths),
              "train": {"epochs": q["cifar_factorial_epochs"],
                        "batch_size": q["cifar_factorial_batch_size"],
                        "lr": q["cifar_factorial_lr"], "optimizer": "adamw",
                        "weight_decay": q["cifar_factorial_weight_decay"],
                        "evals_per_epoch": q["cifar_factorial_evals_per_epoch"],
                        "init_seed": 0, "test_in_loop": False}}
    if plan is not None:
        config["plan"] = plan
    return config


def cifar_factorial_cells(q: dict) -> list[tuple[str, str, str]]:
    """Every (when, where, how) of the CIFAR-10 factorial, in the order of the parameters."""
    return compare.factorial_cells({"factor_when": q["cifar_factorial_when"],
                                    "factor_where": q["cifar_factorial_where"],
                                    "factor_how": q["cifar_factorial_how"]})


def cifar_factorial_experiments(q: dict) -> dict[tuple[str, str, str], dict]:
    """(when, where, how) -> configuration, and ("static", "small" / "large", "") for the
    static start network and one twice as wide (as part 4 on the MLP)."""
    widths = list(q["cifar_factorial_widths"])
    runs = {cell: cifar_config(q, "cifar all " + " ".join(cell), widths, plan_spec(q, *cell))
            for cell in cifar_factorial_cells(q)}
    for label, w in (("small", widths), ("large", [2 * n for n in widths])):
        runs["static", label, ""] = cifar_config(q, f"cifar all static {label}", w)
    return runs


def load_cifar_split(q: dict) -> ImageSplit:
    """The factorial's CIFAR-10 split (one for every cell and seed), loaded once."""
    from growcore.driver import load_data

    config = cifar_config(q, "data", q["cifar_factorial_widths"])
    try:
        return load_data(config["data"])
    except (DataNotFoundError, DataError) as error:
        raise ParameterError(f"parameter 'cifar10_archive': {error}") from error


def run_cifar_cell(config: dict, p: dict, directory=None, preset: str = "custom",
                   device: str = "cpu", save: bool = True,
                   split: ImageSplit | None = None) -> dict:
    """Run one configuration of :func:`cifar_factorial_experiments` through the driver (each
    seed alone) on ``split`` (default: the data section's, loaded here) and return, per seed
    in the order of ``seeds``, what :func:`compare.run_growth` returns: ``final_test``,
    ``final_train``, ``flops`` (training FLOPs, growth steps included), ``params`` (of the
    final network), ``widths`` (its conv widths), ``growths`` (the growth iterations), and the
    run's wall time ``seconds``; also ``first_loss`` (the loss of the first batch, before any
    update: equal across cells for a seed, since the seeds pair)."""
    from growcore.driver import load_data, run_experiment

    del p  # the configuration is complete; taken for compare.run_growth's signature
    split = split if split is not None else load_data(config["data"])
    start = time.perf_counter()
    record = run_experiment(config, split=split, directory=directory, preset=preset,
                            device=device, progress=False, save=save)
    m = record["metrics"]
    seeds = list(config["seeds"])
    return {"final_test": list(m["final_test"]), "final_train": list(m["final_train"]),
            "flops": list(m["total_cost_flops"]),
            "params": [series[-1] for series in m["n_params"]],
            "widths": [[n for stage in model["config"] for n in stage]
                       for model in m["final_model"]],
            "growths": [[e["iteration"] for e in m["events"] if seed in e["seeds"]]
                        for seed in seeds],
            "first_loss": [series[0] for series in m["loss"]],
            "seeds": seeds, "seconds": time.perf_counter() - start, "batched": False}


def grown_size_config(q: dict, cell: tuple[str, str, str], grown: dict) -> dict:
    """NAGN's reference for ``cell``: per seed, a static VGG of the conv widths the grown
    run ``grown`` (an output of :func:`run_cifar_cell`) ended with, trained from scratch on
    the same data for the same epochs (``model.per_seed``)."""
    config = cifar_config(q, "cifar all static grown " + " ".join(cell),
                          q["cifar_factorial_widths"])
    config["seeds"] = list(grown["seeds"])
    config["model"]["per_seed"] = {str(seed): {"config": [[n] for n in widths]}
                                   for seed, widths in zip(grown["seeds"], grown["widths"])}
    return config


def run_cifar_factorial(q: dict, directory=None, preset: str = "custom", device: str = "cpu",
                        save: bool = True, split: ImageSplit | None = None
                        ) -> dict[tuple[str, str, str], dict]:
    """Every run of the CIFAR-10 factorial on one split (default: CIFAR-10's, loaded once):
    key -> :func:`run_cifar_cell`'s output, with ``("static", "grown <paper>", "")`` for
    the static network of the grown size of each paper's own cell named in
    ``cifar_factorial_grown_size`` (``of``: that cell). Feed the outputs to
    :func:`compare.growth_rows` with ``("when", "where", "how")``."""
    split = split if split is not None else load_cifar_split(q)
    options = {"directory": directory, "preset": preset, "device": device, "save": save,
               "split": split}
    runs = {key: run_cifar_cell(config, q, **options)
            for key, config in cifar_factorial_experiments(q).items()}
    for paper in q["cifar_factorial_grown_size"]:
        cell = compare.PAPER_CELLS[paper]
        grown = run_cifar_cell(grown_size_config(q, cell, runs[cell]), q, **options)
        runs["static", f"grown {paper}", ""] = {**grown, "of": cell}
    return runs


def factorial_rows(runs: dict[tuple, dict]):
    """(the factorial's rows, the static references' rows): :func:`compare.growth_rows` of
    the runs, split into the cells (for the main effects) and the statics (for the Pareto
    figure)."""
    rows = compare.growth_rows(runs, FACTORS)
    static = rows["when"] == "static"
    return rows[~static].reset_index(drop=True), rows[static].reset_index(drop=True)


def expected_cost(q: dict) -> dict:
    """An *estimate* of the factorial's GPU cost from FLOPs (:func:`gpucheck.run_cost`: bf16
    at :data:`growcore.gpucheck.SUSTAINED_FLOPS` with a floor of
    :data:`growcore.gpucheck.STEP_SECONDS` per update): ``runs``, ``gpu_hours`` ``lower``
    (every grown net at its start size) and ``upper`` (at the largest size its plan can reach:
    every site widened by ``cifar_factorial_units`` at every growth), the grown-size static
    at the upper size included; ``updates`` (optimiser steps in all)."""
    from growcore.gpucheck import run_cost

    widest = [n + q["cifar_factorial_growths"] * q["cifar_factorial_units"]
              for n in q["cifar_factorial_widths"]]
    configs = list(cifar_factorial_experiments(q).values())
    configs += [cifar_config(q, f"grown size {paper}", widest)
                for paper in q["cifar_factorial_grown_size"]]
    lower = upper = 0.0
    updates = 0
    for config in configs:
        cost = run_cost(config)
        lower += cost["gpu_hours"]["lower"]
        updates += cost["updates"]
        grown = {**config, "model": model_spec(widest)} if "plan" in config else config
        upper += run_cost(grown)["gpu_hours"]["lower"]
    return {"runs": len(configs), "gpu_hours": {"lower": lower, "upper": upper},
            "updates": updates}


def generated_cifar(n_train: int, n_val: int, n_test: int, seed: int = 0,
                    signal: float = 60.0) -> ImageSplit:
    """Small CIFAR-shaped data with a learnable signal (for the tests' smoke path and for
    checks that must not decode the archive): ``uint8`` images ``[N, 3, 32, 32]`` of uniform
    noise plus a class-dependent pattern of amplitude ``signal`` grey levels (class ``k``
    brightens channel ``k % 3`` in the ``k``-th of ten horizontal bands), ten classes in
    turn, from a generator of ``seed``."""
    g = torch.Generator().manual_seed(seed)

    def part(n: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) + offset) % CLASSES
        X = torch.randint(0, 256 - int(signal), (n, *IMAGE), generator=g).float()
        rows = torch.arange(IMAGE[1]) * CLASSES // IMAGE[1]  # the band of each row
        for k in range(CLASSES):
            X[y == k, k % 3] += signal * (rows == k).float()[:, None]
        return X.to(torch.uint8), y

    (X_train, y_train), (X_val, y_val), (X_test, y_test) = (
        part(n_train, 0), part(n_val, 3), part(n_test, 7))
    return ImageSplit(X_train, y_train, X_test, y_test, X_val=X_val, y_val=y_val,
                      classes=CIFAR10_CLASSES, source="generated (tests): noise + class bands")

"""The NAGN chapter (``notebooks/nagn.ipynb``): parameters, experiments and their records.

Section 4 of Wang, Mille and Hidane: compact VGG nets on CIFAR-10 (Conv+BN+ReLU, 2x2
max-pooling after each of three blocks, a dense classifier), AdamW with cosine decay, the
validation-window trigger, NAGN increments, the eq. (1) initialiser, and the static baseline
(the grown run's final widths trained from scratch under identical conditions).

Every run is a configuration of :mod:`growcore.driver` (:func:`experiments`,
:func:`static_baseline`, and the bottleneck check :func:`bottleneck_check`, which reads NAGN
observers without a plan through the driver's ``train.observe``), read back from its records
by the summaries below.
"""

from __future__ import annotations

import math

import numpy as np

from growcore import papers, registry
from growcore.images import JPEG_CAVEAT, DataError, DataNotFoundError, dataset_sizes
from growcore.params import ParameterError, Spec, check_model, require
from growcore.params import validate as validate_all
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES
from growcore.where import relative_contrast

PRESETS = ("smoke", "lab", "cpu", "gpu")
PAPER_NUMBERS = papers.load("nagn")  # growcore/papers/nagn.yml
PAPER_CONFIGURATIONS = PAPER_NUMBERS["configurations"]
PAPER_RATIOS = PAPER_NUMBERS["ratios"]
# "comparable to or exceeding" (section 4.1) read against the paper's own spread: its twelve
# configurations have accuracy ratios 1.016 +- 0.020 (mean, sd), so a ratio above the mean
# minus two of those sd (0.976) is within what the paper itself calls comparable.
ACCURACY_FLOOR = round(PAPER_RATIOS["accuracy"][0] - 2 * PAPER_RATIOS["accuracy"][1], 6)
# One colour per method or reading across the chapter's figures (seaborn's colour-blind set).
COLOURS = {"grown": "#0173b2", "static": "#de8f05", "after BatchNorm": "#029e73",
           "before BatchNorm": "#d55e00"}
SEED_COLOURS = ("#cc78bc", "#56b4e9", "#ca9161", "#949494", "#fbafe4")  # Fig. 1, per seed


def seed_colour(seed: int) -> str:
    """The colour of seed ``seed`` in the chapter's per-seed figures (none of the methods')."""
    return SEED_COLOURS[seed % len(SEED_COLOURS)]


PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "n_train": Spec(int, minimum=1),
    "n_val": Spec(int, minimum=1),
    "n_test": Spec(int, minimum=1),
    "augment": Spec(bool),
    "epochs": Spec(int, minimum=1),
    "batch_size": Spec(int, minimum=1),
    "lr": Spec(float, greater_than=0),
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
    "bottleneck_seeds": Spec(int, minimum=1),
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
    """Check the notebook's parameters (picked by name from ``namespace``) before compute:
    every value, the nets (each must carry a CIFAR-10 image through its poolings), the split
    against the images CIFAR-10 holds, and a trigger window that fits in the run."""
    params = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
    for name in ("fig1_widths",):
        require(_valid_widths(params[name]), name,
                f"must be a list of blocks, each a list of widths >= 1; got {params[name]!r}")
    for widths in params["configurations"]:
        require(_valid_widths(widths), "configurations",
                f"every entry must be a list of blocks of widths >= 1; got {widths!r}")
    repeated = [w for i, w in enumerate(params["configurations"])
                if w in params["configurations"][:i]]
    require(not repeated, "configurations", f"{repeated[0] if repeated else ''} is given twice "
            "(one run, one record per configuration)")
    for name, nets in (("fig1_widths", [params["fig1_widths"]]),
                       ("configurations", params["configurations"])):
        for widths in nets:
            check_model(name, widths, "vgg", {"config": widths, "head": "flatten"},
                        (3, 32, 32), 10)
    _check_split(params)
    require(params["evals_per_epoch"] <= _iterations_per_epoch(params), "evals_per_epoch",
            f"cannot exceed the number of batches per epoch ({_iterations_per_epoch(params)}); "
            f"got {params['evals_per_epoch']}")
    evaluations = params["epochs"] * params["evals_per_epoch"]
    require(2 * params["w_acc"] <= evaluations, "w_acc",
            f"a growth compares two windows of w_acc evaluations ({2 * params['w_acc']}), but "
            f"the run has epochs x evals_per_epoch = {evaluations}; got w_acc {params['w_acc']}")
    return params


def _check_split(params: dict) -> None:
    """The split against the images of CIFAR-10 at hand (cache or archive)."""
    try:
        n_train, n_test = dataset_sizes("cifar10", None, params["cifar10_archive"] or None)
    except (DataNotFoundError, DataError) as error:
        raise ParameterError(f"parameter 'cifar10_archive': {error}") from error
    require(params["n_train"] + params["n_val"] <= n_train, "n_train",
            f"n_train + n_val must not exceed the {n_train} CIFAR-10 training images; got "
            f"{params['n_train']} + {params['n_val']}")
    require(params["n_test"] <= n_test, "n_test",
            f"must be at most the {n_test} CIFAR-10 test images; got {params['n_test']}")
    require(params["batch_size"] <= params["n_train"], "batch_size",
            f"must not exceed n_train ({params['n_train']}); got {params['batch_size']}")


def _iterations_per_epoch(p: dict) -> int:
    return math.ceil(p["n_train"] / p["batch_size"])


def experiment(p: dict, name: str, widths, seeds) -> dict:
    """The driver configuration of one grown CIFAR-10 run of the chapter
    (:mod:`growcore.driver`), grown by :func:`growth_plan` with the initialiser
    ``p["growth_how"]``.

    Parameters
    ----------
    p : dict
        The validated notebook parameters.
    name : str
        The run's name (the record's).
    widths : list of list of int
        The VGG's conv widths per block.
    seeds : iterable of int
        The run's seeds; seed ``s``'s net starts from ``torch.manual_seed(s)``.

    Returns
    -------
    dict
        AdamW with cosine decay on the chapter's split of CIFAR-10 (the validation images
        held out of the training set), ``evals_per_epoch`` evaluations per epoch.
    """
    data = {"name": "cifar10", "n_train": p["n_train"], "n_val": p["n_val"],
            "n_test": p["n_test"], "split_seed": 0, "augment": p["augment"]}
    if p.get("cifar10_archive"):
        data["archive"] = p["cifar10_archive"]
    train = {"epochs": p["epochs"], "batch_size": p["batch_size"], "lr": p["lr"],
             "optimizer": "adamw", "weight_decay": p["weight_decay"], "schedule": "cosine",
             "evals_per_epoch": p["evals_per_epoch"]}
    return {"name": name, "seeds": list(seeds), "data": data,
            "model": {"name": "vgg", "config": widths, "head": "flatten"}, "train": train,
            "plan": growth_plan({**p, "how": p["growth_how"]})}


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


def experiments(p: dict) -> dict[str, dict]:
    """The grown runs of the chapter, name -> driver configuration: Fig. 1 (``"fig1"``) and
    one ``"grown <widths>"`` per configuration of Fig. 2. Each static baseline depends on
    its grown run's final widths: :func:`static_baseline` makes it from the grown record."""
    fig2 = range(p["n_seeds"])
    return {"fig1": experiment(p, "fig1", p["fig1_widths"], range(p["fig1_seeds"])),
            **{f"grown {widths}": experiment(p, f"grown {widths}", widths, fig2)
               for widths in p["configurations"]}}


def notebook_parameters(preset: str) -> dict:
    """The notebook's parameters under ``preset`` (the parameters cell's defaults updated by
    the preset file's section, as papermill injects them), validated."""
    return validate(runner_parameters("nagn", preset))


def static_baseline(grown: dict, name: str) -> dict:
    """The static baseline of a grown run (section 4): its configuration without the plan,
    each seed's net built with that seed's final widths (``model.per_seed``), trained from
    scratch under identical conditions (data, epochs, optimiser, schedule, seeds)."""
    config = grown["config"]
    per_seed = {str(seed): {"config": widths}
                for seed, widths in zip(grown["seeds"], final_widths(grown))}
    return {**config, "name": name, "plan": None,
            "model": {**config["model"], "per_seed": per_seed}}


def final_widths(record: dict) -> list[list[list[int]]]:
    """Conv widths per block of every seed's final (grown) VGG, from the record."""
    return [model["config"] for model in record["metrics"]["final_model"]]


def seed_events(record: dict, seed: int) -> list[dict]:
    """The growth events of one seed of a record, in order."""
    return [e for e in record["metrics"]["events"] if seed in e["seeds"]]


def accuracy_at_last_eval(record: dict) -> list[float]:
    """Per seed, the test accuracy at the last evaluation of the training loop (the one the
    paper's trigger also sees), ``1 - test_error``."""
    return [1 - evals[-1]["test_error"] for evals in record["metrics"]["evals"]]


def ratios(grown: dict, static: dict) -> dict:
    """Grown/static ratios of one configuration: of the seed-mean test accuracy at the last
    evaluation, of the seed-mean training wall time and of the seed-mean training FLOPs."""
    g, s = _per_seed(grown), _per_seed(static)
    return {key: float(np.mean(g[key])) / float(np.mean(s[key])) for key in g}


def _per_seed(record: dict) -> dict[str, list[float]]:
    """Per seed: the test accuracy at the last evaluation, and the training wall time and
    FLOPs (the totals after the last iteration)."""
    metrics = record["metrics"]
    return {"accuracy": accuracy_at_last_eval(record),
            "time": [series[-1] for series in metrics["wall_time"]],
            "flops": [series[-1] for series in metrics["cost_flops"]]}


def accuracy_curves(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Epochs [E] and test accuracies [S, E] of a record's evaluations."""
    evals = record["metrics"]["evals"]
    epochs = np.array([e["iteration"] for e in evals[0]]) / record["iterations_per_epoch"]
    return epochs, np.array([[1 - e["test_error"] for e in seed] for seed in evals])


READINGS = {"after BatchNorm": "activation_input", "before BatchNorm": "producer_output"}


def bottleneck_check(p: dict) -> dict:
    """The driver configuration of the explicit-bottleneck sanity check (section 3): the
    Fig. 1 net trained without growth for ``bottleneck_epochs`` (AdamW, constant rate), with
    NAGN read over the last epoch's batches at the activation input (after BatchNorm, our
    default) and at the convolution output (before BatchNorm), per seed (see
    :func:`profiles`)."""
    config = experiment(p, "bottleneck", p["fig1_widths"], range(p["bottleneck_seeds"]))
    run = {**config["train"], "epochs": p["bottleneck_epochs"], "schedule": "constant",
           "evals_per_epoch": 1, "observe": {label: {"name": "nagn", "layers": layers}
                                             for label, layers in READINGS.items()}}
    return {**config, "train": run, "plan": None}


def profiles(record: dict) -> tuple[dict[str, list], list[int]]:
    """The bottleneck check's NAGN profiles, ``reading -> [S][L]``, and the layer widths
    (the output layer last) of a record of :func:`bottleneck_check`."""
    observed, spec = record["metrics"]["observed"], record["metrics"]["final_model"][0]
    widths = [n for block in spec["config"] for n in block] + [spec["num_classes"]]
    return {reading: [seed[reading] for seed in observed] for reading in READINGS}, widths


def contrasts(record: dict) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    """The relative contrast r (eq. 2) of every seed at every explicit bottleneck of a record
    of :func:`bottleneck_check`: ``reading -> array [S, B]``, the bottlenecks' indices (0 =
    first layer) and the layer widths (output last)."""
    readings, widths = profiles(record)
    necks = bottlenecks(widths[:-1])
    return ({reading: np.array([relative_contrast(np.asarray(row)).numpy()[necks]
                                for row in rows]) for reading, rows in readings.items()},
            necks, widths)


def paired_ratios(grown: dict, static: dict) -> dict[str, list[float]]:
    """Per seed, the grown/static ratios of the test accuracy at the last evaluation, of the
    training wall time and of the training FLOPs (seed ``s`` of the static baseline has the
    final widths and the initial seed of seed ``s`` of the grown run: the two pair)."""
    if grown["seeds"] != static["seeds"]:
        raise ValueError(f"the static baseline's seeds {static['seeds']} are not the grown "
                         f"run's {grown['seeds']}")
    g, s = _per_seed(grown), _per_seed(static)
    return {key: [a / b for a, b in zip(g[key], s[key])] for key in g}


def growth_timing(record: dict, epochs: int) -> dict:
    """When a record's seeds first grew: ``{"first": [epoch or None per seed], "grew":
    number of seeds that grew, "earliest": earliest first growth (None if none), "late":
    True when no seed grew before the last third of the run (the accuracy curve then
    cannot show what the growth did), "sentence": the finding in words}``."""
    per_epoch = record["iterations_per_epoch"]
    first = []
    for seed in record["seeds"]:
        events = seed_events(record, seed)
        first.append(events[0]["iteration"] / per_epoch if events else None)
    grown = [e for e in first if e is not None]
    earliest = min(grown) if grown else None
    late = earliest is None or earliest > 2 * epochs / 3
    where = "; ".join(f"seed {seed}: " + (f"epoch {e:g}" if e is not None else "no growth")
                      for seed, e in zip(record["seeds"], first))
    if earliest is None:
        seeds = "its one seed" if len(first) == 1 else f"any of its {len(first)} seeds"
        sentence = (f"The trigger did not fire within {epochs} epochs in {seeds}: the net kept "
                    f"its initial widths, so the run cannot show an effect of growth.")
    else:
        lr = (1 + math.cos(math.pi * earliest / epochs)) / 2  # the cosine schedule's factor
        verdict = (f"so the first growth came after {100 * earliest / epochs:.0f} % of the "
                   f"run, when the cosine schedule has brought the learning rate down to "
                   f"{100 * lr:.0f} % of its start: too late for the accuracy curve to show an "
                   f"effect of growth" if late else
                   f"leaving {epochs - earliest:g} of the {epochs} epochs after the first "
                   f"growth for its effect to show")
        sentence = (f"The trigger fired in {len(grown)} of {_count(len(first), 'seed')} "
                    f"within {epochs} epochs (first growth, {where}), {verdict}.")
    return {"first": first, "grew": len(grown), "earliest": earliest, "late": late,
            "sentence": sentence}


def describe_split(split) -> str:
    """The split's sizes and what the images are (no file paths)."""
    sizes = [f"{name} {len(y)}" for name, y in
             (("train", split.y_train), ("val", split.y_val), ("test", split.y_test))
             if y is not None]
    return f"{', '.join(sizes)} images of shape {tuple(split.X_train.shape[1:])}; {JPEG_CAVEAT}"


def scale(p: dict) -> str:
    """The scale of a run of the chapter in words (the claims' ``scale``)."""
    reduced = "" if p["preset"] == "gpu" else ", reduced"
    return (f"{p['preset']} preset{reduced}: {p['n_train']} training images, {p['epochs']} "
            f"epochs at batch {p['batch_size']}, {len(p['configurations'])} of the 12 "
            f"configurations x {_count(p['n_seeds'], 'seed')}, Fig. 1 over "
            f"{_count(p['fig1_seeds'], 'seed')}, bottleneck check over "
            f"{_count(p['bottleneck_seeds'], 'seed')}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def exercise_setup(preset: str = "smoke") -> tuple[dict, dict]:
    """The one setup call of the chapter's exercises: the notebook's parameters under
    ``preset`` (validated) and the options of :func:`growcore.driver.run_experiment` for the
    chapter's runs (the CIFAR-10 split they name, loaded on the chosen device; the chapter's
    records folder, whose records are reused when the configuration is the same)."""
    from growcore.driver import load_data
    from growcore.paths import results_dir
    from growcore.runtime import resolve_device

    p = notebook_parameters(preset)
    device = resolve_device(p["device"])
    split = load_data(experiment(p, "exercise", p["fig1_widths"], [0])["data"]).to(device)
    return p, {"split": split, "directory": results_dir() / "nagn" / p["preset"],
               "preset": p["preset"], "device": device, "progress": False, "reuse": True}


def bottlenecks(widths: list[int]) -> list[int]:
    """Indices l of the explicit bottlenecks ``n_{l-1} > n_l < n_{l+1}`` (section 3)."""
    return [i for i in range(1, len(widths) - 1)
            if widths[i - 1] > widths[i] < widths[i + 1]]

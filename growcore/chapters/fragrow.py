"""The FRAGrow chapter (``notebooks/fragrow.ipynb``): parameters, experiments and tables.

:func:`experiments` describes every run as a configuration of :mod:`growcore.driver`, which
runs it and writes its record: a staged network grown (or trained fixed) on an image split by
the spine's :func:`growcore.train.train`, SGD with momentum, the learning rate constant while
growing and then cosine decay (:class:`growcore.ops.GrowThenCosine`), one evaluation per epoch
(the when-policies read it), the test error measured once at the end in evaluation mode.
Methods, by the slides' tables: ``small`` and ``large`` (seed and target trained directly),
``FRAGrow``, ``periodic``, ``fast`` (periodic at a fraction of ``I_max``: Table 1's fast
growth; periodic at ``I_max`` is its slow growth), ``convergent``, ``LipGrow``, and the
ablations ``FRAGrow a=<alpha>`` (Table 8), ``<method> circulating`` (Table 9) and
``<method> moment`` (Table 10). A run's name, ``"<architecture> <regime> <method> s<seed>"``
(:func:`run_name`), is what the tables select by. ImageNet is decoded into memory at
``image_size`` or, with ``stream``, streamed from disk (the paper's 224 px; :func:`data_section`).
Outside the notebook, e.g. on many GPUs::

    torchrun --standalone --nproc_per_node=8 -m growcore.driver --chapter fragrow \\
        --preset gpu --experiment "resnet CIFAR-10 FRAGrow s0"
"""

from __future__ import annotations

import re

from growcore import papers
from growcore.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    DataNotFoundError,
    dataset_sizes,
)
from growcore.params import ParameterError, Spec, check_model, require
from growcore.params import validate as validate_all
from growcore.paths import dataset_dir, missing_dataset_message
from growcore.plan import PlanError
from growcore.registry import build_plan
from growcore.registry import entry as entry_of
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES
from growcore.uncertainty import Estimate, mean_interval, paired_difference
from growcore.when import (
    average_training_epochs,
    growth_interval,
    max_interval,
    overfitting_risk_level,
)

PRESETS = ("smoke", "lab", "cpu", "gpu")
PAPER_NUMBERS = papers.load("fragrow")  # growcore/papers/fragrow.yml
ARCHITECTURES = ("resnet", "vgg", "mobilenetv2")
DATASETS = ("cifar10", "cifar100", "imagenet")
STREAMABLE = ("imagenet",)  # the data sets that ``stream`` reads from disk
TABLES = (1, 5, 6, 8, 9, 10)
GROWING = ("FRAGrow", "periodic", "convergent")  # the methods of the ablation tables
MOBILENET_FIRST_WIDTH = 24

PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "dataset": Spec(str, choices=DATASETS),
    "data_root": Spec(str),
    "image_size": Spec(int, minimum=8),
    "architecture": Spec(str, choices=ARCHITECTURES),
    "seed_blocks": Spec(list, item=int, minimum=1, min_length=1),
    "target_blocks": Spec(list, item=int, minimum=1, min_length=1),
    "widths": Spec(list, item=int, minimum=1, min_length=1),
    "regimes": Spec(list, item=str, min_length=1),
    "n_train": Spec(list, item=int, minimum=1, min_length=1),
    "epochs": Spec(list, item=int, minimum=2, min_length=1),
    "finetune_min": Spec(list, item=int, minimum=1, min_length=1),
    "augment": Spec(list, item=bool, min_length=1),
    "n_val": Spec(int, minimum=1),
    "n_test": Spec(int, minimum=1),
    "batch_size": Spec(int, minimum=1),
    "lr": Spec(float, greater_than=0),
    "weight_decay": Spec(float, minimum=0),
    "momentum": Spec(float, minimum=0, less_than=1),
    "alpha": Spec(float, greater_than=0, maximum=100),  # ORL in percentage points
    "alphas": Spec(list, item=float, greater_than=0, maximum=100),
    "fast_factor": Spec(float, minimum=1),
    "patience": Spec(int, minimum=1),
    "lipgrow_tolerance": Spec(float, minimum=1),
    "moment_decay": Spec(float, minimum=0, maximum=0.999),
    "tables": Spec(list, item=int, choices=TABLES, min_length=1),
    "extra_plans": Spec(dict),
    "stream": Spec(bool),
    "num_workers": Spec(int, minimum=0),
    "n_seeds": Spec(int, minimum=1),
    "ablation_seeds": Spec(int, minimum=1),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "reuse_records": Spec(bool),
    "progress": Spec(bool),
}


def validate(namespace: dict) -> dict:
    """Check the notebook's parameters (picked by name from ``namespace``) before compute."""
    p = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
    require(not p["stream"] or p["dataset"] in STREAMABLE, "stream",
            f"streams an ImageFolder tree from disk: it needs dataset "
            f"{' or '.join(map(repr, STREAMABLE))}; got dataset {p['dataset']!r} (set stream "
            "False for it)")
    require(len(p["seed_blocks"]) == len(p["target_blocks"]) == len(p["widths"]),
            "seed_blocks/target_blocks/widths", "need one entry per stage in each")
    require(all(a <= b for a, b in zip(p["seed_blocks"], p["target_blocks"]))
            and p["seed_blocks"] != p["target_blocks"], "target_blocks",
            f"must be deeper than seed_blocks {p['seed_blocks']}; got {p['target_blocks']}")
    require(p["architecture"] != "mobilenetv2" or len(p["widths"]) == 5, "widths",
            "MobileNetV2 has five growing stages (widths[0] / 24 is its width multiplier)")
    require(len(p["regimes"]) == len(p["n_train"]) == len(p["epochs"])
            == len(p["finetune_min"]) == len(p["augment"]),
            "regimes/n_train/epochs/finetune_min/augment",
            "need one entry per regime in each")
    require(bool({5, 6, 8} & set(p["tables"])), "tables",
            "must include a table with a FRAGrow run (5, 6 or 8)")
    require(all(f < e for f, e in zip(p["finetune_min"], p["epochs"])), "finetune_min",
            f"every entry must be below the regime's epochs {p['epochs']}")
    require(p["dataset"] != "imagenet" or p["architecture"] != "vgg", "architecture",
            "the staged VGG is built for 32x32 images; on imagenet use resnet or mobilenetv2")
    require(len(set(p["regimes"])) == len(p["regimes"]), "regimes",
            f"names must differ (they name the runs and their records); got {p['regimes']}")
    require(not p["stream"] or all(p["augment"]), "augment",
            f"every entry must be True with stream: a stream always augments (random resized "
            f"crop and flip); got {p['augment']}")
    if p["dataset"] != "cifar10":
        missing = missing_dataset_message(p["dataset"], p["data_root"])
        require(missing is None, "data_root", missing or "")
    _check_data(p)
    shape = (3, p["image_size"], p["image_size"]) if p["dataset"] == "imagenet" else (3, 32, 32)
    for name in ("seed_blocks", "target_blocks"):
        section = model_section(p, p[name])
        check_model(name, p[name], section["name"],
                    {k: v for k, v in section.items() if k != "name"}, shape, 10)
    _check_extra_plans(p)
    return p


def _check_data(p: dict) -> None:
    """Every regime's split against the images the data set holds (counted, not decoded);
    with ``stream`` the hold-out and the batch (``n_train`` and ``n_test`` are not read)."""
    root = None if p["dataset"] == "cifar10" else str(dataset_dir(p["dataset"], p["data_root"]))
    try:
        n_train, n_test = dataset_sizes(p["dataset"], root)
    except (DataNotFoundError, DataError) as error:
        where = "dataset" if p["dataset"] == "cifar10" else "data_root"
        raise ParameterError(f"parameter {where!r}: {error}") from error
    if p["stream"]:
        require(p["n_val"] < n_train, "n_val", f"must leave training images to stream: "
                f"{p['dataset']} has {n_train}; got {p['n_val']}")
        require(p["batch_size"] <= n_train - p["n_val"], "batch_size",
                f"must not exceed the {n_train - p['n_val']} training images streamed "
                f"({n_train} less the n_val held out); got {p['batch_size']}")
        return
    require(max(p["n_train"]) + p["n_val"] <= n_train, "n_train",
            f"every entry plus n_val ({p['n_val']}) must not exceed the {n_train} training "
            f"images of {p['dataset']}; got {p['n_train']}")
    require(p["n_test"] <= n_test, "n_test",
            f"must be at most the {n_test} test images of {p['dataset']}; got {p['n_test']}")
    require(p["batch_size"] <= min(p["n_train"]), "batch_size",
            f"must not exceed the smallest n_train ({min(p['n_train'])}); got "
            f"{p['batch_size']}")


def _check_extra_plans(p: dict) -> None:
    """Every plan of ``extra_plans`` builds from the registry and fits the seed network."""
    for label_, entry in p["extra_plans"].items():
        require(isinstance(entry, dict) and label_ not in (*GROWING, "small", "large"),
                "extra_plans", f"entry {label_!r}: a new label mapping plan roles to "
                f"registry names; got {entry!r}")
        try:
            from growcore.driver import validate as validate_config

            for regime in range(len(p["regimes"])):
                validate_config(config(p, regime, label_, 0))
                build_plan(extra_plan(p, regime, label_), {"iterations_per_epoch": 1,
                                                           "total_epochs": 2})
        except PlanError as error:
            raise ParameterError(f"parameter 'extra_plans', entry {label_!r}: {error}"
                                 ) from error


MODEL_NAMES = {"resnet": "resnet", "vgg": "vgg_staged", "mobilenetv2": "mobilenet_v2"}


def model_section(p: dict, blocks: list[int]) -> dict:
    """The driver's ``model`` section: the staged network with ``blocks`` per stage (He
    initialisation), by its name in :data:`growcore.models.factory.MODELS`; on ImageNet with
    the ImageNet stem and channel statistics (ResNet, MobileNetV2)."""
    section = {"name": MODEL_NAMES[p["architecture"]], "blocks": list(blocks)}
    if p["architecture"] == "mobilenetv2":
        # MobileNetV2 takes a width multiplier: the first growing stage has 24 channels at 1.0
        section["width"] = p["widths"][0] / MOBILENET_FIRST_WIDTH
    else:
        section["widths"] = list(p["widths"])
    if p["dataset"] == "imagenet":
        section.update(stem="imagenet", mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    return section


def stage_counts(architecture: str, blocks: list[int]) -> list[int]:
    """Blocks of every stage of the model (MobileNetV2 has a fixed first and last stage)."""
    return [1, *blocks, 1] if architecture == "mobilenetv2" else list(blocks)


def label(p: dict, regime: str, method: str) -> str:
    """The name of a regime's runs of ``method``, less the seed: ``"resnet overfitting
    FRAGrow"``; a run's name adds `` s<seed>`` (:func:`run_name`)."""
    return f"{p['architecture']} {regime} {method}"


def run_name(p: dict, regime: str, method: str, seed: int) -> str:
    """The name of one run, e.g. ``"resnet overfitting FRAGrow s0"``."""
    return f"{label(p, regime, method)} s{seed}"


def _method_parts(p: dict, method: str) -> tuple[str, float, str, dict]:
    """(when-policy, alpha, stage order, how) of a method of the tables."""
    policy, alpha, order, how = method, p["alpha"], "stagewise", {"name": "block_copy"}
    if method.startswith("FRAGrow a="):
        policy, alpha = "FRAGrow", float(method.split("=")[1])
    elif method.endswith(" circulating"):
        policy, order = method.removesuffix(" circulating"), "circulating"
    elif method.endswith(" moment"):
        policy = method.removesuffix(" moment")
        how = {"name": "block_moment", "moment_decay": p["moment_decay"]}
    return policy, alpha, order, how


def extra_plan(p: dict, regime: int, label_: str) -> dict:
    """The plan of an ``extra_plans`` entry: its roles (registry names) over FRAGrow's own
    plan; a when-policy that takes them gets FRAGrow's number of growths and E_F_min."""
    base = plan_section(p, regime, "FRAGrow")
    entry = {role: {"name": v} if isinstance(v, str) else dict(v)
             for role, v in p["extra_plans"][label_].items()}
    plan = {**base, **entry}
    if "when" in entry and isinstance(entry["when"].get("name"), str):
        accepted = entry_of("when", entry["when"]["name"]).options
        shared = {k: base["when"][k] for k in ("n_blocks", "finetune_min") if k in accepted}
        plan["when"] = {**shared, **entry["when"]}
    return plan


def plan_section(p: dict, regime: int, method: str) -> dict | None:
    """The driver's ``plan`` of a growing method by registry names (None for ``small`` and
    ``large``): when-policy with ``n_blocks`` and ``E_F_min`` (the driver adds the iterations
    per epoch and ``E_T``), blocks in stage order, copied (or moment-averaged) blocks."""
    if method in p.get("extra_plans", {}):
        return extra_plan(p, regime, method)
    policy, alpha, order, how = _method_parts(p, method)
    if policy in ("small", "large"):
        return None
    seed = stage_counts(p["architecture"], p["seed_blocks"])
    target = stage_counts(p["architecture"], p["target_blocks"])
    n_blocks, epochs = sum(target) - sum(seed), p["epochs"][regime]
    finetune = p["finetune_min"][regime]
    when = {"FRAGrow": {"name": "fragrow", "alpha": alpha},
            "periodic": {"name": "periodic"},
            "fast": {"name": "periodic",
                     "interval": (epochs - finetune) / n_blocks / p["fast_factor"]},
            "convergent": {"name": "convergent", "patience": p["patience"]},
            "LipGrow": {"name": "lipgrow", "tolerance": p["lipgrow_tolerance"]}}[policy]
    where = {"name": "stage_order", "seed": seed, "target": target, "order": order,
             "per_growth": "double" if policy == "LipGrow" else "one"}
    return {"when": {**when, "n_blocks": n_blocks, "finetune_min": finetune},
            "where": where, "how": how}


def data_section(p: dict, regime: int) -> dict:
    """The driver's ``data`` section of a regime: its seeded split (``n_train`` training
    images, ``n_val`` held out of the training set, ``n_test`` test images) decoded into
    memory; with ``stream`` the ImageNet tree under ``data_root`` streamed from disk at
    ``image_size`` by ``num_workers`` processes (the driver's ``stream: true``): every
    training image but the ``n_val`` held out (``split_seed`` 0) and every test image, always
    augmented, so the regime's ``n_train`` and ``n_test`` are not read; the hold-out and a
    sample of training images for the growth steps are held in memory."""
    root = {} if p["dataset"] == "cifar10" else {
        "root": str(dataset_dir(p["dataset"], p["data_root"]))}
    if p.get("stream"):
        return {"name": p["dataset"], **root, "image_size": p["image_size"], "stream": True,
                "num_workers": p["num_workers"], "n_val": p["n_val"], "split_seed": 0}
    data = {"name": p["dataset"], "n_train": p["n_train"][regime], "n_val": p["n_val"],
            "n_test": p["n_test"], "split_seed": 0, "augment": p["augment"][regime], **root}
    if p["dataset"] == "imagenet":
        data["image_size"] = p["image_size"]
    return data


def config(p: dict, regime: int, method: str, seed: int) -> dict:
    """The driver configuration of one run (:func:`growcore.driver.run_experiment`): the
    regime's image split, the seed (or, for ``large``, the target) network, SGD with the
    learning rate constant while growing and then cosine decay, one evaluation per epoch
    (the when-policies read it), the test error measured once at the end, the series kept
    once per epoch."""
    data = data_section(p, regime)
    blocks = p["target_blocks"] if method == "large" else p["seed_blocks"]
    train = {"epochs": p["epochs"][regime], "batch_size": p["batch_size"], "lr": p["lr"],
             "momentum": p["momentum"], "weight_decay": p["weight_decay"],
             "schedule": "grow_then_cosine", "evals_per_epoch": 1, "test_in_loop": False,
             "log": "epoch"}
    return {"name": run_name(p, p["regimes"][regime], method, seed), "seeds": [seed],
            "data": data, "model": model_section(p, blocks), "train": train,
            "plan": plan_section(p, regime, method)}


def methods(tables: list[int], alphas: list[float]) -> list[str]:
    """The runs the requested tables need, each once."""
    wanted = {1: ["periodic", "fast", "large"], 5: ["small", "large", "FRAGrow"],
              6: ["periodic", "convergent", "LipGrow", "FRAGrow", "large"],
              8: [f"FRAGrow a={a:g}" for a in alphas] + ["FRAGrow"],
              9: [f"{m} circulating" for m in GROWING], 10: [f"{m} moment" for m in GROWING]}
    return list(dict.fromkeys(m for t in tables for m in wanted[t]))


ABLATION_TABLES = (8, 9, 10)  # their runs take ``ablation_seeds`` seeds


def seeds_of(p: dict, method: str) -> range:
    """Seeds of a method's runs: ``n_seeds`` for the methods of Tables 1, 5 and 6 and of
    ``extra_plans`` (the claims with verdicts), ``ablation_seeds`` for the methods that only
    the ablation tables (8, 9, 10) use."""
    main = methods([t for t in p["tables"] if t not in ABLATION_TABLES], p["alphas"])
    ablation_only = method not in main and method != "FRAGrow" and method not in p[
        "extra_plans"]
    return range(p["ablation_seeds"] if ablation_only else p["n_seeds"])


def experiments(p: dict) -> dict[str, dict]:
    """All runs of the chapter, name -> driver configuration (one seed each)."""
    extra = [*(["FRAGrow", "large"] if p["extra_plans"] else []), *p["extra_plans"]]
    runs = [config(p, r, method, seed) for r in range(len(p["regimes"]))
            for method in dict.fromkeys([*methods(p["tables"], p["alphas"]), *extra])
            for seed in seeds_of(p, method)]
    return {run["name"]: run for run in runs}


def average_epochs(record: dict) -> float:
    """``E-bar`` of a run (eq. fragrow-ebar): the mean epochs its added blocks trained, from
    the growth events of its record (one seed)."""
    return average_training_epochs(record["metrics"]["events"], record["iterations_per_epoch"],
                                   record["config"]["train"]["epochs"])


def final_depths(record: dict) -> list[int]:
    """Blocks per stage of a run's final network (one seed)."""
    return record["metrics"]["final_model"][0]["depths"]


def orl_trace(record: dict) -> list[list[float]]:
    """FRAGrow's ``(iteration, ORL, interval)`` at every evaluation of a run (one seed)."""
    return record["metrics"]["when"][0]["trace"]


PAPER = PAPER_NUMBERS["tables"]
PAPER_DATA = PAPER_NUMBERS["data"]
# Time is normalised to the large (target) network in Table 5, to FRAGrow elsewhere.
# The run each table's times are normalised to (100 % in the paper's column)
EXTRA = 0  # the "table" of the parameter extra_plans: FRAGrow's own plan, the others, large
TIME_REFERENCE = {1: "large", 5: "large", 6: "FRAGrow", 8: "FRAGrow", 9: "FRAGrow circulating",
                  10: "FRAGrow moment", EXTRA: "FRAGrow"}


def table(number: int, records: dict[str, dict], p: dict, regime: str) -> list[dict]:
    """Rows of the slides' table ``number`` for one regime: our mean over seeds beside the
    paper's value (None where the paper has none). Time is the wall time, and cost the
    training FLOPs, in % of the reference run (Table 1: our training error instead)."""
    runs = (["FRAGrow", *p["extra_plans"], "large"] if number == EXTRA
             else methods([number], p["alphas"]))
    if number == 8:
        runs = sorted(runs, key=lambda m: float(m.split("=")[1]) if "=" in m else p["alpha"])
    ours = {m: [r for r in records.values()  # a run's name: its label and " s<seed>"
                if r["name"].rsplit(" s", 1)[0] == label(p, regime, m)] for m in runs}
    reference = _mean_of(ours.get(TIME_REFERENCE[number]) or [], "time")
    ref_cost = _mean_of(ours.get(TIME_REFERENCE[number]) or [], "cost")
    paper = PAPER.get(number, {}).get(p["architecture"], {}).get(PAPER_DATA.get(regime, regime), {})
    rows = []
    for method in runs:
        found, theirs = ours[method], paper.get(method, (None, None))
        row = {"method": method, "n": sum(len(r["seeds"]) for r in found),
               "test error %": 100 * _mean_of(found, "test")}
        if number == 1:
            row["train error %"] = 100 * _mean_of(found, "train")
            row["E-bar"] = _mean_of(found, "e_bar")
            row["paper test %"], row["paper train %"] = theirs
        else:
            row["time %"] = 100 * _mean_of(found, "time") / reference
            row["cost %"] = 100 * _mean_of(found, "cost") / ref_cost
            row["paper test %"], row["paper time %"] = theirs
        rows.append(row)
    return rows


PER_SEED = {"test": lambda r: r["metrics"]["final_test"],
            "train": lambda r: r["metrics"]["final_train"],
            "cost": lambda r: r["metrics"]["total_cost_flops"],
            "e_bar": lambda r: [average_epochs(r)], "time": lambda r: [r["wall_time_s"]]}


def _mean_of(found: list[dict], what: str) -> float:
    """Mean over the seeds of ``found`` of the final test or training error, the training
    FLOPs or E-bar; ``"time"``: mean wall time of the records (one seed each)."""
    values = [value for r in found for value in PER_SEED[what](r)]
    return sum(values) / len(values) if values else float("nan")


def notebook_parameters(preset: str) -> dict:
    """The notebook's parameters under ``preset``: the parameters cell's defaults updated by
    the preset file's section (what papermill would inject)."""
    return validate(runner_parameters("fragrow", preset))


def blocks_over_time(record: dict) -> tuple[list[float], list[int]]:
    """The blocks a run has added, as a step function of the epoch.

    Parameters
    ----------
    record : dict
        A record of :func:`growcore.driver.run_experiment`: ``iterations_per_epoch``,
        ``config["train"]["epochs"]`` and the growth events (``iteration``,
        ``blocks_added``).

    Returns
    -------
    epochs : list of float
        0, the epoch of every growth event, and ``E_T`` last.
    blocks : list of int
        Blocks added from each of these epochs on (the last repeats the final count), for
        ``plt.step(epochs, blocks, where="post")``.
    """
    ipe, total = record["iterations_per_epoch"], record["config"]["train"]["epochs"]
    steps = [(0.0, 0)]
    for event in record["metrics"]["events"]:
        # one block per event where the event does not say (as block_epochs reads it)
        steps.append((event["iteration"] / ipe, steps[-1][1] + event.get("blocks_added", 1)))
    return [s for s, _ in steps] + [total], [b for _, b in steps] + [steps[-1][1]]


def show_table(number: int, title: str, records: dict[str, dict], p: dict):
    """Print ``title`` and return the slides' table ``number`` for every regime as one frame.

    Parameters
    ----------
    number : int
        The table (see :func:`table`).
    title : str
        Printed above the table.
    records : dict
        Run name -> record (:func:`growcore.driver.run_experiment`).
    p : dict
        The chapter's parameters (``tables``, ``regimes`` and what :func:`table` reads).

    Returns
    -------
    pandas.DataFrame or None
        The rows of :func:`table` per regime, indexed by (regime, row), rounded to two
        decimals; None (after a message) when ``number`` is not among ``p["tables"]``.
    """
    import pandas as pd  # only the notebook's tables need pandas, not the runs

    if number not in p["tables"] and not (number == EXTRA and p["extra_plans"]):
        print(f"Table {number} is not part of the preset's tables {p['tables']}"
              if number != EXTRA else "No extra_plans were given")
        return None
    frames = {regime: pd.DataFrame(table(number, records, p, regime))
              for regime in p["regimes"]}
    frame = pd.concat(frames, names=["regime", None]).round(2)
    print(title)
    return frame



# One colour per method across the chapter (seaborn's colour-blind palette); a variant of
# Tables 9 and 10 keeps its policy's colour with its own line style.
COLORS = {"FRAGrow": "#0173b2", "periodic": "#de8f05", "fast": "#8c4b14",
          "convergent": "#029e73", "LipGrow": "#cc78bc", "large": "#d55e00",
          "small": "#949494", "FRAGrow a=2": "#56b4e9", "FRAGrow a=6": "#000000"}
VARIANT_STYLE = {"": "-", " circulating": "--", " moment": ":"}
OTHER_COLOR = "#fbafe4"  # a method of extra_plans


def style(method: str) -> dict:
    """Colour and line style of ``method`` in every figure of the chapter."""
    for suffix in (" circulating", " moment"):
        if method.endswith(suffix):
            return {"color": COLORS[method.removesuffix(suffix)], "ls": VARIANT_STYLE[suffix]}
    return {"color": COLORS.get(method, OTHER_COLOR), "ls": "-"}


def seed_runs(records: dict[str, dict], p: dict, regime: str, method: str) -> dict[int, dict]:
    """The records of one regime and method, by seed."""
    wanted = label(p, regime, method)
    return {r["seeds"][0]: r for r in records.values() if r["name"].rsplit(" s", 1)[0] == wanted}


def seed_values(records: dict[str, dict], p: dict, regime: str, method: str,
                what: str) -> dict[int, float]:
    """Per seed: the final test or training error in percentage points (``"test"``,
    ``"train"``), the wall time in s (``"time"``), the training FLOPs (``"cost"``) or E-bar
    in % of E_T (``"e_bar"``)."""
    scale = {"test": 100.0, "train": 100.0, "time": 1.0, "cost": 1.0,
             "e_bar": 100.0 / p["epochs"][p["regimes"].index(regime)]}[what]
    return {seed: scale * PER_SEED[what](r)[0]
            for seed, r in seed_runs(records, p, regime, method).items()}


def paired(records: dict[str, dict], p: dict, regime: str, a: str, b, what: str,
           ratio: bool = False) -> Estimate | None:
    """``a - b`` over the seeds both ran (paired by seed; same split, same initial seed
    network), or with ``ratio`` the mean of ``100 a / b`` per seed with its t interval. ``b``
    is a method or a list of methods (then, per seed, the best of them: the lowest value).
    None when the runs are missing."""
    left = seed_values(records, p, regime, a, what)
    rights = [seed_values(records, p, regime, m, what) for m in ([b] if isinstance(b, str)
                                                                 else b)]
    seeds = sorted(set(left).intersection(*rights))
    if not seeds:
        return None
    x = [left[s] for s in seeds]
    y = [min(r[s] for r in rights) for s in seeds]
    return mean_interval([100 * u / v for u, v in zip(x, y)]) if ratio else \
        paired_difference(x, y)


def regime_kind(regime: str) -> str:
    """``"overfit"`` for a regime that stands for CIFAR (the paper's overfitting data sets),
    ``"underfit"`` for one that stands for ImageNet."""
    return "underfit" if PAPER_DATA.get(regime, regime) == "ImageNet" else "overfit"


KINDS = ("overfit", "underfit")  # the regimes' kinds: CIFAR-like and ImageNet-like
MARGIN = 1.0  # points of test error within which "comparable" and "robust" hold


def _both(text: str) -> dict[str, str]:
    return dict.fromkeys(KINDS, text)


# The claims of the slides that the chapter tests: key stem -> (source, statement per regime
# kind, short name for the summary). A key is "<stem>_<kind>" ("fragrow_test_overfit").
CLAIM_TEXT = {
    "slow_train": ("Table 1", _both("slow growth raises the training error over the target "
                                    "trained directly"),
                   "slow growth raises the training error"),
    "slow_test": ("Table 1", {
        "overfit": "where the target overfits, slow growth lowers the test error",
        "underfit": "where the target underfits, slow growth raises the test error"},
        "slow growth moves the test error as the regime predicts"),
    "fragrow_test": ("Table 5", {
        "overfit": "FRAGrow's test error is below the target's (about 0.3 points on CIFAR)",
        "underfit": "FRAGrow's test error is comparable to the target's (within 1 point; "
                    "0.2 points worse on ImageNet)"},
        "FRAGrow's test error against the target trained directly"),
    "fragrow_time": ("Table 5", {
        "overfit": "FRAGrow trains in less time than the target (about 80 % on CIFAR)",
        "underfit": "FRAGrow trains in less time than the target (about 90 % on ImageNet)"},
        "FRAGrow saves wall time"),
    "fragrow_cost": ("Table 5 (time; FLOPs are our exact stand-in)",
                     _both("FRAGrow trains with less compute than the target"),
                     "FRAGrow saves training FLOPs"),
    "vs_periodic": ("Table 6", _both("FRAGrow has a lower test error than periodic growth"),
                    "FRAGrow beats periodic growth"),
    "vs_convergent": ("Table 6", _both("FRAGrow has a lower test error than convergent "
                                       "growth"), "FRAGrow beats convergent growth"),
    "vs_lipgrow": ("Table 6", _both("FRAGrow has a lower test error than LipGrow"),
                   "FRAGrow beats LipGrow"),
    "faster": ("Table 5, discussion", {
        "underfit": "FRAGrow grows faster than the slowest (periodic) schedule where the "
                    "target underfits"}, "FRAGrow grows faster than periodic growth"),
    "alpha": ("Table 8", _both("the chapter's alpha (the paper's 4) gives a lower test error "
                               "than the other alphas"), "alpha = 4 is the best alpha"),
    "order": ("Table 9", _both("FRAGrow is robust to the growth order: circulating growth "
                               "changes its test error by less than 1 point"),
              "robust to the growth order"),
    "moment": ("Table 10", _both("FRAGrow is robust to the initialisation: moment growth "
                                 "changes its test error by less than 1 point"),
               "robust to the initialisation"),
}


def claim_keys(kind: str) -> list[str]:
    """Every claim key the chapter may add for a regime kind (in the order of CLAIM_TEXT)."""
    return [f"{stem}_{kind}" for stem, (_, texts, _) in CLAIM_TEXT.items() if kind in texts]


def _measurements(records: dict[str, dict], p: dict, regime: str) -> dict:
    """stem -> (measure, estimate, expect, threshold, margin) of one regime; the estimate is
    None where the preset did not run the methods."""
    over = regime_kind(regime) == "overfit"
    others = [f"FRAGrow a={a:g}" for a in p["alphas"]]
    measures = {
        "slow_train": ("training error, periodic - large (points)",
                       paired(records, p, regime, "periodic", "large", "train"), "above", 0),
        "slow_test": ("test error, periodic - large (points)",
                      paired(records, p, regime, "periodic", "large", "test"),
                      "below" if over else "above", 0),
        "fragrow_test": ("test error, FRAGrow - large (points)",
                         paired(records, p, regime, "FRAGrow", "large", "test"),
                         "below" if over else "within", 0),
        "fragrow_time": ("wall time of FRAGrow in % of large's",
                         paired(records, p, regime, "FRAGrow", "large", "time", ratio=True),
                         "below", 100),
        "fragrow_cost": ("training FLOPs of FRAGrow in % of large's",
                         paired(records, p, regime, "FRAGrow", "large", "cost", ratio=True),
                         "below", 100),
        "vs_periodic": ("test error, FRAGrow - periodic (points)",
                        paired(records, p, regime, "FRAGrow", "periodic", "test"), "below", 0),
        "vs_convergent": ("test error, FRAGrow - convergent (points)",
                          paired(records, p, regime, "FRAGrow", "convergent", "test"),
                          "below", 0),
        "vs_lipgrow": ("test error, FRAGrow - LipGrow (points)",
                       paired(records, p, regime, "FRAGrow", "LipGrow", "test"), "below", 0),
        "faster": ("E-bar, FRAGrow - periodic (% of E_T)",
                   paired(records, p, regime, "FRAGrow", "periodic", "e_bar"), "above", 0),
        "alpha": (f"test error, FRAGrow (alpha {p['alpha']:g}) - the best of alpha "
                  f"{', '.join(f'{a:g}' for a in p['alphas'])} (points)",
                  paired(records, p, regime, "FRAGrow", others, "test"), "below", 0),
        "order": ("test error, FRAGrow circulating - FRAGrow (points)",
                  paired(records, p, regime, "FRAGrow circulating", "FRAGrow", "test"),
                  "within", 0),
        "moment": ("test error, FRAGrow moment - FRAGrow (points)",
                   paired(records, p, regime, "FRAGrow moment", "FRAGrow", "test"),
                   "within", 0),
    }
    return {stem: (*m, MARGIN if m[2] == "within" else 0.0) for stem, m in measures.items()}


def scale_words(p: dict, regime: str) -> str:
    """The scale of a regime's runs, for the claims' table."""
    r = p["regimes"].index(regime)
    return (f"{p['preset']} preset: ResNet {'-'.join(map(str, p['seed_blocks']))} to "
            f"{'-'.join(map(str, p['target_blocks']))}, {p['n_train'][r]} images, "
            f"{p['epochs'][r]} epochs, {_count(p['n_seeds'], 'seed')} "
            f"({p['ablation_seeds']} for Tables 8-10)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def add_claims(claims, records: dict[str, dict], p: dict) -> list[str]:
    """Add to ``claims`` (a :class:`growcore.claims.Claims`) every claim of
    :data:`CLAIM_TEXT` whose runs the preset made, per regime (the first regime of each kind;
    others add their name to the key), and return the keys added."""
    added, seen = [], set()
    for regime in p["regimes"]:
        kind = regime_kind(regime)
        suffix = kind if kind not in seen else f"{kind}_{re.sub('[^a-z0-9]+', '_', regime.lower())}"
        seen.add(kind)
        for stem, (measure, estimate, expect, threshold, margin) in _measurements(
                records, p, regime).items():
            source, texts, _ = CLAIM_TEXT[stem]
            if estimate is None or kind not in texts:
                continue
            key = f"{stem}_{suffix}"
            claims.add(key, texts[kind], f"{source}; our {regime} regime", measure, estimate,
                       expect=expect, threshold=threshold, margin=margin,
                       scale=scale_words(p, regime))
            added.append(key)
    return added


NOT_RUN = "not run under this preset"
NOT_RUN_VALUE = "\u2014"  # an em dash where a number would stand


def summary_words(claims, kind: str) -> str:
    """The verdicts of a regime kind in words: "slow growth raises the training error:
    confirmed; ..." (claims the preset did not run are left out; "identical runs" where the
    paired runs did not differ at all)."""
    parts = []
    for stem in CLAIM_TEXT:
        claim = claims.claims.get(f"{stem}_{kind}")
        if claim is None:
            continue
        e = claim.estimate
        words = claim.verdict if claim.verdict != "not resolved" else (
            f"not resolved (n = {e.n}" + ("; identical runs)" if e.n > 1 and e.low == e.high
                                          else ")"))
        parts.append(f"{CLAIM_TEXT[stem][2]}: {words}")
    return "; ".join(parts) + "." if parts else f"{NOT_RUN}."


def final_orl(records: dict[str, dict], p: dict, regime: str) -> Estimate | None:
    """FRAGrow's ORL (percentage points) at the last evaluation by ``E_T - E_F_min``, the
    latest time the target may be complete, over the seeds (None without FRAGrow runs)."""
    r = p["regimes"].index(regime)
    deadline = p["epochs"][r] - p["finetune_min"][r]
    found = [[o for e, o in zip(*orl_per_evaluation(run)) if e <= deadline]
             for run in seed_runs(records, p, regime, "FRAGrow").values()]
    last = [orl[-1] for orl in found if orl]
    return mean_interval(last) if last else None


def glue_texts(claims, records: dict[str, dict], p: dict) -> dict[str, str]:
    """What the chapter's prose pastes beside the claims (key -> text): every claim key the
    preset did not run says so (with its ``_verdict``, ``_estimate`` and ``_n``); per regime
    kind the summary of its verdicts (``summary_<kind>``), FRAGrow's final ORL
    (``orl_final_<kind>``) and the room for different schedules (``schedules_<kind>``)."""
    texts = {}
    for kind in KINDS:
        for key in claim_keys(kind):
            if key not in claims.claims:
                texts.update({key: f"{CLAIM_TEXT[key.rsplit('_', 1)[0]][2]}: {NOT_RUN}.",
                              f"{key}_verdict": NOT_RUN, f"{key}_estimate": NOT_RUN_VALUE,
                              f"{key}_n": "0"})
        texts[f"summary_{kind}"] = summary_words(claims, kind)
        regime = next((r for r in p["regimes"] if regime_kind(r) == kind), None)
        orl = final_orl(records, p, regime) if regime else None
        texts[f"orl_final_{kind}"] = orl.format(".2g") if orl else NOT_RUN
        room = schedules(records, p, regime) if regime else None
        texts[f"schedules_{kind}"] = (
            f"I_max = {room['i_max']:.3g} epoch{'' if room['i_max'] == 1 else 's'}, "
            f"{room['distinct']} distinct growth schedules among {room['runs']} growing runs "
            f"of seed 0" if room else NOT_RUN)
    ablation = claims.claims.get("alpha_overfit")
    texts["ablation_scale"] = (f"ran with {_count(ablation.estimate.n, 'seed')} in the "
                               f"overfitting regime" if ablation else f"were {NOT_RUN}")
    texts["run_scale"] = "; ".join(f"the {regime} regime under the " + scale_words(p, regime)
                                   for regime in p["regimes"])
    return texts


def schedules(records: dict[str, dict], p: dict, regime: str) -> dict:
    """The room for different schedules in a regime: ``i_max`` (epochs), the growing runs of
    seed 0 and how many distinct growth schedules (iterations of the growth events) they
    have."""
    r = p["regimes"].index(regime)
    n_blocks = sum(stage_counts(p["architecture"], p["target_blocks"])) - sum(
        stage_counts(p["architecture"], p["seed_blocks"]))
    growing = [m for m in methods(p["tables"], p["alphas"]) if m not in ("small", "large")]
    runs = [seed_runs(records, p, regime, m).get(0) for m in growing]
    found = {tuple(e["iteration"] for e in run["metrics"]["events"]) for run in runs if run}
    return {"i_max": max_interval(p["epochs"][r], p["finetune_min"][r], n_blocks),
            "runs": sum(run is not None for run in runs), "distinct": len(found)}


def orl_per_evaluation(record: dict) -> tuple[list[float], list[float]]:
    """Epochs and ORL (eq. 2, percentage points) of every evaluation of a run that has a
    training and a validation error, from its record (whether the policy consulted it or
    not: the deadline rule grows without reading it)."""
    ipe = record["iterations_per_epoch"]
    rows = [e for e in record["metrics"]["evals"][0] if "train_error" in e and "val_error" in e]
    return ([e["iteration"] / ipe for e in rows],
            [overfitting_risk_level(e["train_error"], e["val_error"]) for e in rows])


TIMING_GROUPS = {
    "when-policies (Tables 1, 6)": ["periodic", "fast", "convergent", "LipGrow", "FRAGrow"],
    "alpha (Table 8)": ["FRAGrow a=2", "FRAGrow", "FRAGrow a=6"],
    "order, initialisation (Tables 9, 10)": [f"{m} {v}" for v in ("circulating", "moment")
                                             for m in GROWING],
}


def timing_groups(p: dict) -> dict[str, list[str]]:
    """The panels of the timing figure (at most six runs each): the growing methods the preset
    ran, by the tables that compare them; the extra plans beside FRAGrow."""
    ran = set(methods(p["tables"], p["alphas"]))
    groups = {title: [m for m in group if m in ran] for title, group in TIMING_GROUPS.items()}
    groups["alpha (Table 8)"] = [m for m in dict.fromkeys(
        sorted([m for m in ran if m.startswith("FRAGrow a=")] + ["FRAGrow"],
               key=lambda m: float(m.split("=")[1]) if "=" in m else p["alpha"]))
        if 8 in p["tables"]]
    if p["extra_plans"]:
        groups["extra_plans"] = ["FRAGrow", *p["extra_plans"]][:6]
    return {title: group for title, group in groups.items() if group}


def plot_timing(records: dict[str, dict], p: dict):
    """Blocks added over the epochs (seed 0), one row per regime and one panel per group of
    :func:`timing_groups`; the legend gives each method's E-bar, the mean over its seeds."""
    import matplotlib.pyplot as plt

    groups = timing_groups(p)
    longest = max(map(len, groups.values()))  # legend rows under every panel
    fig, axes = plt.subplots(len(p["regimes"]), len(groups), squeeze=False, sharey=True,
                             layout="constrained",
                             figsize=(4.4 * len(groups),
                                      (3.0 + 0.17 * longest) * len(p["regimes"])))
    for row, regime in zip(axes, p["regimes"]):
        r = p["regimes"].index(regime)
        for ax, (title, group) in zip(row, groups.items()):
            for method in group:
                runs = seed_runs(records, p, regime, method)
                e_bar = sum(map(average_epochs, runs.values())) / len(runs)
                x, y = blocks_over_time(runs[min(runs)])
                ax.step(x, y, where="post", lw=1.6, **style(method),
                        label=f"{method} (E-bar {e_bar:.1f}, n = {len(runs)})")
            ax.axvline(p["epochs"][r] - p["finetune_min"][r], color="grey", ls=":", lw=1)
            ax.set(title=f"{regime}: {title}", xlabel="epoch", ylabel="blocks added")
            ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.22),
                      frameon=False)  # below the panel, never over a line
    return fig


def plot_orl(records: dict[str, dict], p: dict):
    """FRAGrow's ORL at every evaluation (left; dotted: alpha) and the interval eq. (3) sets
    for it, relative to I_max (right), one row per regime: the mean over seeds with the
    seeds as thin lines (:func:`growcore.plots.band`)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from growcore.plots import band

    fig, axes = plt.subplots(len(p["regimes"]), 2, squeeze=False, layout="constrained",
                             figsize=(10, 2.9 * len(p["regimes"])))
    line = {"color": COLORS["FRAGrow"], "marker": "o", "ms": 3}
    for (left, right), regime in zip(axes, p["regimes"]):
        r = p["regimes"].index(regime)
        runs = seed_runs(records, p, regime, "FRAGrow")
        traces = [orl_per_evaluation(runs[s]) for s in sorted(runs)]
        x, orl = traces[0][0], np.array([t[1] for t in traces])
        band(left, x, orl, "FRAGrow", **line)
        band(right, x, np.vectorize(lambda o: growth_interval(o, p["alpha"], 1.0))(orl),
             "FRAGrow", **line)
        left.axhline(p["alpha"], color="grey", ls=":", lw=1)
        for ax in (left, right):
            ax.axvline(p["epochs"][r] - p["finetune_min"][r], color="grey", ls=":", lw=1)
        left.set(title=f"{regime} (n = {len(runs)})", xlabel="epoch",
                 ylabel="ORL (percentage points)")
        right.set(title=regime, xlabel="epoch", ylabel="I / I_max", ylim=(0, 1.05))
    return fig


def interval_check(alpha: float, total_epochs: float, finetune_min: float, n_blocks: int,
                   errors: list[tuple[float, float]]) -> list[float]:
    """The interval :class:`growcore.when.FRAGrow` sets after evaluations with the given
    ``(training error, validation error)`` pairs (fractions), in epochs: what an exercise's
    own implementation of eqs. (2)-(4) is checked against."""
    from growcore.train import History
    from growcore.when import FRAGrow

    policy = FRAGrow(1, n_blocks, total_epochs, finetune_min, alpha=alpha)
    return [policy.interval(History(evals=[{"iteration": i + 1, "train_error": [train],
                                            "val_error": [val]}]))
            for i, (train, val) in enumerate(errors)]



PAIRED_METHODS = ("small", "periodic", "fast", "convergent", "LipGrow", "FRAGrow")


def paired_frame(records: dict[str, dict], p: dict, what: str = "test"):
    """Per regime, method and seed: ``what`` (:func:`seed_values`) minus the target trained
    directly (``large``) of the same seed, for the methods of Tables 1, 5 and 6 the preset
    ran (a DataFrame with columns regime, method, seed, difference)."""
    import pandas as pd

    rows = []
    for regime in p["regimes"]:
        large = seed_values(records, p, regime, "large", what)
        for method in PAIRED_METHODS:
            for seed, value in seed_values(records, p, regime, method, what).items():
                if seed in large:
                    rows.append({"regime": regime, "method": method, "seed": seed,
                                 "difference": value - large[seed]})
    return pd.DataFrame(rows, columns=["regime", "method", "seed", "difference"])


def plot_paired(records: dict[str, dict], p: dict):
    """Test and training error of every method minus the target's, paired by seed, one row
    per regime: the seeds as points and their mean (a diamond), with its 95 % t interval
    (:func:`growcore.uncertainty.errorbar`) from :data:`~growcore.uncertainty.MIN_BAND`
    seeds on (below, the seeds themselves show the spread)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from growcore.uncertainty import MIN_BAND, errorbar

    fig, axes = plt.subplots(len(p["regimes"]), 2, squeeze=False, layout="constrained",
                             figsize=(10, 3.2 * len(p["regimes"])))
    for column, what in enumerate(("test", "train")):
        frame = paired_frame(records, p, what)
        for row, regime in zip(axes, p["regimes"]):
            ax, data = row[column], frame[frame["regime"] == regime]
            order = [m for m in PAIRED_METHODS if m in set(data["method"])]
            palette = {m: COLORS[m] for m in order}
            sns.stripplot(data, x="method", y="difference", hue="method", order=order,
                          palette=palette, ax=ax, size=4, alpha=0.6, jitter=0.15,
                          legend=False)
            n = data.groupby("method")["seed"].nunique().min() if len(data) else 0
            sns.pointplot(data, x="method", y="difference", hue="method", order=order,
                          palette=palette, ax=ax, linestyle="none", marker="D",
                          errorbar=errorbar if n >= MIN_BAND else None, markersize=6,
                          capsize=0.2, legend=False)
            ax.axhline(0, color="grey", lw=1)
            ax.set(title=f"{regime}: {what} error", xlabel="",
                   ylabel=f"{what} error - large (points)")
            ax.tick_params(axis="x", labelsize="small", labelrotation=20)
    return fig

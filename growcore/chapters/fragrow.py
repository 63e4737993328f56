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
(:func:`run_name`), is what the tables select by. Outside the notebook, e.g. on many GPUs::

    torchrun --standalone --nproc_per_node=8 -m growcore.driver --chapter fragrow \\
        --preset gpu --experiment "resnet CIFAR-10 FRAGrow s0"
"""

from __future__ import annotations

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
from growcore.when import average_training_epochs

PRESETS = ("smoke", "cpu", "gpu")
PAPER_NUMBERS = papers.load("fragrow")  # growcore/papers/fragrow.yml
ARCHITECTURES = ("resnet", "vgg", "mobilenetv2")
DATASETS = ("cifar10", "cifar100", "imagenet")
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
    "n_seeds": Spec(int, minimum=1),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "reuse_records": Spec(bool),
    "progress": Spec(bool),
}


def validate(namespace: dict) -> dict:
    """Check the notebook's parameters (picked by name from ``namespace``) before compute."""
    p = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
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
    """Every regime's split against the images the data set holds (counted, not decoded)."""
    root = None if p["dataset"] == "cifar10" else str(dataset_dir(p["dataset"], p["data_root"]))
    try:
        n_train, n_test = dataset_sizes(p["dataset"], root)
    except (DataNotFoundError, DataError) as error:
        where = "dataset" if p["dataset"] == "cifar10" else "data_root"
        raise ParameterError(f"parameter {where!r}: {error}") from error
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


def config(p: dict, regime: int, method: str, seed: int) -> dict:
    """The driver configuration of one run (:func:`growcore.driver.run_experiment`): the
    regime's image split, the seed (or, for ``large``, the target) network, SGD with the
    learning rate constant while growing and then cosine decay, one evaluation per epoch
    (the when-policies read it), the test error measured once at the end, the series kept
    once per epoch."""
    data = {"name": p["dataset"], "n_train": p["n_train"][regime], "n_val": p["n_val"],
            "n_test": p["n_test"], "split_seed": 0, "augment": p["augment"][regime]}
    if p["dataset"] != "cifar10":
        data["root"] = str(dataset_dir(p["dataset"], p["data_root"]))
    if p["dataset"] == "imagenet":
        data["image_size"] = p["image_size"]
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


def experiments(p: dict) -> dict[str, dict]:
    """All runs of the chapter, name -> driver configuration (one seed each)."""
    extra = [*(["FRAGrow", "large"] if p["extra_plans"] else []), *p["extra_plans"]]
    runs = [config(p, r, method, seed) for r in range(len(p["regimes"]))
            for method in dict.fromkeys([*methods(p["tables"], p["alphas"]), *extra])
            for seed in range(p["n_seeds"])]
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


def _mean_of(found: list[dict], what: str) -> float:
    """Mean over the seeds of ``found`` of the final test or training error, the training
    FLOPs or E-bar; ``"time"``: mean wall time of the records (one seed each)."""
    per_seed = {"test": lambda r: r["metrics"]["final_test"],
                "train": lambda r: r["metrics"]["final_train"],
                "cost": lambda r: r["metrics"]["total_cost_flops"],
                "e_bar": lambda r: [average_epochs(r)], "time": lambda r: [r["wall_time_s"]]}
    values = [value for r in found for value in per_seed[what](r)]
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
        steps.append((event["iteration"] / ipe, steps[-1][1] + event["blocks_added"]))
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


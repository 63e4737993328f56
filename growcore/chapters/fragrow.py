"""The FRAGrow chapter (``notebooks/fragrow.ipynb``): parameters, experiments and tables.

Every run grows a staged network (or trains a fixed one) on an image split with the spine's
:func:`growcore.train.train`: SGD with momentum, the learning rate constant while growing and
then cosine decay (:class:`growcore.ops.GrowThenCosine`), one evaluation per epoch (the
when-policies read it), the test error measured once at the end in evaluation mode.
Methods, by the slides' tables: ``small`` and ``large`` (seed and target trained directly),
``FRAGrow``, ``periodic``, ``fast`` (periodic at a fraction of ``I_max``: Table 1's fast
growth; periodic at ``I_max`` is its slow growth), ``convergent``, ``LipGrow``, and the
ablations ``FRAGrow a=<alpha>`` (Table 8), ``<method> circulating`` (Table 9) and
``<method> moment`` (Table 10).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from growcore import papers, results
from growcore.distributed import Agreed, distributed_op, init_from_environment, shard, wrap
from growcore.how import BlockInit
from growcore.images import IMAGENET_MEAN, IMAGENET_STD, augment_cifar, load_dataset
from growcore.models.factory import build_named
from growcore.models.staged import depths, unwrap
from growcore.ops import GrowThenCosine
from growcore.params import Spec, require
from growcore.params import validate as validate_all
from growcore.paths import dataset_dir, missing_dataset_message, results_dir
from growcore.plan import GrowthPlan, apply_growth
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES, resolve_device
from growcore.stats import MomentTracker
from growcore.train import evaluate, train
from growcore.when import Convergent, FRAGrow, LipGrow, Periodic, average_training_epochs
from growcore.where import StageOrder

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
    "lr": Spec(float, minimum=0),
    "weight_decay": Spec(float, minimum=0),
    "momentum": Spec(float, minimum=0, maximum=1),
    "alpha": Spec(float),
    "alphas": Spec(list, item=float),
    "fast_factor": Spec(float, minimum=1),
    "patience": Spec(int, minimum=1),
    "lipgrow_tolerance": Spec(float, minimum=1),
    "moment_decay": Spec(float, minimum=0, maximum=0.999),
    "tables": Spec(list, item=int, choices=TABLES, min_length=1),
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
    if p["dataset"] != "cifar10":
        missing = missing_dataset_message(p["dataset"], p["data_root"])
        require(missing is None, "data_root", missing or "")
    return p


def build_model(architecture: str, blocks: list[int], widths: list[int], num_classes: int,
                image_size: int | None = None):
    """The staged network with ``blocks`` per stage (He initialisation): CIFAR stem, or the
    ImageNet stem (and ImageNet's channel statistics) with ``image_size``; built by
    :func:`growcore.models.factory.build_named`."""
    imagenet = {} if image_size is None else {
        "stem": "imagenet", "input_shape": (3, image_size, image_size),
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    shape = imagenet.pop("input_shape", (3, 32, 32))
    if architecture == "resnet":
        return build_named("resnet", shape, num_classes, blocks=blocks, widths=widths,
                           **imagenet)
    if architecture == "vgg":
        return build_named("vgg_staged", shape, num_classes, blocks=blocks, widths=widths)
    # MobileNetV2 takes a width multiplier: the first growing stage has 24 channels at 1.0
    return build_named("mobilenet_v2", shape, num_classes, blocks=blocks,
                       width=widths[0] / MOBILENET_FIRST_WIDTH, **imagenet)


def stage_counts(architecture: str, blocks: list[int]) -> list[int]:
    """Blocks of every stage of the model (MobileNetV2 has a fixed first and last stage)."""
    return [1, *blocks, 1] if architecture == "mobilenetv2" else list(blocks)


def config(p: dict, regime: int, method: str, seed: int) -> dict:
    """Configuration of one run (see :func:`run`)."""
    alpha, order, init, base = p["alpha"], "stagewise", "copy", method
    if method.startswith("FRAGrow a="):
        base, alpha = "FRAGrow", float(method.split("=")[1])
    elif method.endswith((" circulating", " moment")):
        base, variant = method.rsplit(" ", 1)
        order, init = ("circulating", init) if variant == "circulating" else (order, "moment")
    data = {"name": p["dataset"], "n_train": p["n_train"][regime], "n_val": p["n_val"],
            "n_test": p["n_test"], "split_seed": 0, "augment": p["augment"][regime]}
    if p["dataset"] != "cifar10":
        data["root"] = str(dataset_dir(p["dataset"], p["data_root"]))
    if p["dataset"] == "imagenet":
        data["image_size"] = p["image_size"]
    return {"data": data,
            "regime": p["regimes"][regime], "method": method, "policy": base,
            "architecture": p["architecture"], "widths": p["widths"],
            "seed_blocks": p["seed_blocks"], "target_blocks": p["target_blocks"],
            "epochs": p["epochs"][regime], "finetune_min": p["finetune_min"][regime],
            "batch_size": p["batch_size"], "lr": p["lr"], "momentum": p["momentum"],
            "weight_decay": p["weight_decay"], "alpha": alpha, "order": order, "init": init,
            "fast_factor": p["fast_factor"], "patience": p["patience"],
            "lipgrow_tolerance": p["lipgrow_tolerance"], "moment_decay": p["moment_decay"],
            "seed": seed}


def methods(tables: list[int], alphas: list[float]) -> list[str]:
    """The runs the requested tables need, each once."""
    wanted = {1: ["periodic", "fast", "large"], 5: ["small", "large", "FRAGrow"],
              6: ["periodic", "convergent", "LipGrow", "FRAGrow", "large"],
              8: [f"FRAGrow a={a:g}" for a in alphas] + ["FRAGrow"],
              9: [f"{m} circulating" for m in GROWING], 10: [f"{m} moment" for m in GROWING]}
    return list(dict.fromkeys(m for t in tables for m in wanted[t]))


def experiments(p: dict) -> dict[str, dict]:
    """All runs of the chapter, name -> configuration."""
    return {f"{p['architecture']} {regime} {method} s{seed}": config(p, r, method, seed)
            for r, regime in enumerate(p["regimes"])
            for method in methods(p["tables"], p["alphas"]) for seed in range(p["n_seeds"])}


def load_split(data: dict):
    """The image split of a configuration (validation held out of the training images)."""
    return load_dataset(data["name"], data.get("root"), image_size=data.get("image_size", 64),
                        n_train=data["n_train"], n_val=data["n_val"], n_test=data["n_test"],
                        seed=data["split_seed"])


def _plan(c: dict, ipe: int, tracker: MomentTracker | None):
    """GrowthPlan of a growing method and its number of blocks (None, 0 for small, large)."""
    if c["policy"] in ("small", "large"):
        return None, 0
    where = StageOrder(stage_counts(c["architecture"], c["seed_blocks"]),
                       stage_counts(c["architecture"], c["target_blocks"]), c["order"],
                       "double" if c["policy"] == "LipGrow" else "one")
    frame = (ipe, where.n_blocks, c["epochs"], c["finetune_min"])
    policy = {"FRAGrow": lambda: FRAGrow(*frame, alpha=c["alpha"]),
              "periodic": lambda: Periodic(*frame),
              "fast": lambda: Periodic(*frame, interval=(c["epochs"] - c["finetune_min"])
                                       / where.n_blocks / c["fast_factor"]),
              "convergent": lambda: Convergent(*frame, patience=c["patience"]),
              "LipGrow": lambda: LipGrow(*frame, tolerance=c["lipgrow_tolerance"])}[
        c["policy"]]()
    how = BlockInit(c["init"], tracker=tracker)
    return GrowthPlan(policy, where, how), where.n_blocks


def run(name: str, c: dict, *, directory=None, preset: str = "cpu", device: str = "cpu",
        progress: bool = True, split=None, rank: int = 0, world: int = 1) -> dict:
    """Train one configuration, measure its final test error, save and return its record.

    With ``world > 1`` (under torchrun, see :mod:`growcore.distributed`) every rank trains a
    DDP-wrapped network on its shard with ``batch_size / world`` examples per step (the global
    batch is ``batch_size``), growth decided on rank 0; rank 0 saves the record.
    """
    split = (split or load_split(c["data"])).to(device)
    train_split = type(split)(split.X_train, split.y_train, X_val=split.X_val,
                              y_val=split.y_val)  # the test set is measured once, at the end
    train_split, batch = shard(train_split, rank, world), c["batch_size"] // world
    ipe = math.ceil(len(train_split.y_train) / batch)
    iterations = c["epochs"] * ipe
    torch.manual_seed(c["seed"])
    blocks = c["target_blocks"] if c["policy"] == "large" else c["seed_blocks"]
    model = build_model(c["architecture"], blocks, c["widths"], len(split.classes),
                        c["data"].get("image_size")).to(device)
    tracker = MomentTracker(c["moment_decay"]) if c["init"] == "moment" else None
    plan, n_blocks = _plan(c, ipe, tracker)
    if world > 1:
        model = wrap(model)
        if plan is not None:
            plan = GrowthPlan(Agreed(plan.when, device), plan.where, plan.how,
                              op=distributed_op(apply_growth))
    start = time.perf_counter()
    model, history = train(model, train_split, iterations=iterations, lr=c["lr"],
                           momentum=c["momentum"], weight_decay=c["weight_decay"],
                           batch_size=batch, plan=plan, eval_every=ipe,
                           lr_schedule=GrowThenCosine(iterations, n_blocks),
                           augment=augment_cifar if c["data"]["augment"] else None,
                           seed=c["seed"], progress=progress, desc=name)
    wall = time.perf_counter() - start
    model = unwrap(model)
    test_error = float(evaluate(model, split.X_test, split.y_test).mean())
    final_train = float(evaluate(model, split.X_train, split.y_train).mean())
    h = history.as_dict()
    policy = getattr(plan.when, "policy", plan.when) if plan is not None else None
    record = results.make_record(
        name, c, preset=preset, seeds=[c["seed"]], device=device, wall_time_s=wall,
        iterations_per_epoch=ipe, plan=h["plan"],
        metrics={"test_error": test_error, "train_error": final_train,
                 "cost_flops": h["cost_flops"][-1], "evals": h["evals"],
                 "events": h["events"], "lr": h["lr"][::ipe],
                 "loss": [sum(row) / len(row) for row in zip(*h["loss"])][::ipe],
                 "e_bar": average_training_epochs(h["events"], ipe, c["epochs"]),
                 "final_depths": depths(model), "trace": getattr(policy, "trace", [])})
    return results.store(record, directory, save=rank == 0)


PAPER = PAPER_NUMBERS["tables"]
PAPER_DATA = PAPER_NUMBERS["data"]
# Time is normalised to the large (target) network in Table 5, to FRAGrow elsewhere.
# The run each table's times are normalised to (100 % in the paper's column)
TIME_REFERENCE = {1: "large", 5: "large", 6: "FRAGrow", 8: "FRAGrow", 9: "FRAGrow circulating",
                  10: "FRAGrow moment"}


def table(number: int, records: dict[str, dict], p: dict, regime: str) -> list[dict]:
    """Rows of the slides' table ``number`` for one regime: our mean over seeds beside the
    paper's value (None where the paper has none). Time is the wall time, and cost the
    training FLOPs, in % of the reference run (Table 1: our training error instead)."""
    runs = methods([number], p["alphas"])
    if number == 8:
        runs = sorted(runs, key=lambda m: float(m.split("=")[1]) if "=" in m else p["alpha"])
    ours = {m: [r for r in records.values()
                if r["config"]["regime"] == regime and r["config"]["method"] == m]
            for m in runs}
    reference = _mean_of(ours.get(TIME_REFERENCE[number]) or [], "time")
    ref_cost = _mean_of(ours.get(TIME_REFERENCE[number]) or [], "cost")
    paper = PAPER[number].get(p["architecture"], {}).get(PAPER_DATA.get(regime, regime), {})
    rows = []
    for method in runs:
        found, theirs = ours[method], paper.get(method, (None, None))
        row = {"method": method, "n": len(found),
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
    key = {"test": "test_error", "train": "train_error", "e_bar": "e_bar",
           "cost": "cost_flops"}
    values = [r["wall_time_s"] if what == "time" else r["metrics"][key[what]] for r in found]
    return sum(values) / len(values) if values else float("nan")


def run_or_load(name: str, c: dict, *, reuse: bool, directory, **options) -> dict:
    """The newest saved record of this configuration when ``reuse`` (e.g. written by a
    torchrun launch of :func:`main`), otherwise a fresh :func:`run`."""
    found = results.latest(name, c, directory) if reuse else None
    return found or run(name, c, directory=directory, **options)


def notebook_parameters(preset: str) -> dict:
    """The notebook's parameters under ``preset``: the parameters cell's defaults updated by
    the preset file's section (what papermill would inject)."""
    return validate(runner_parameters("fragrow", preset))


def main(argv: list[str] | None = None) -> None:
    """Run experiments of the chapter outside the notebook, e.g. on many GPUs::

        torchrun --standalone --nproc_per_node=8 -m growcore.chapters.fragrow \\
            --preset gpu --experiment "resnet CIFAR-10 FRAGrow s0"

    Records go to ``$GROWCORE_RESULTS/fragrow/<preset>``, where the notebook finds them.
    """
    parser = argparse.ArgumentParser(prog="python -m growcore.chapters.fragrow",
                                     description=main.__doc__)
    parser.add_argument("--preset", default="gpu", choices=PRESETS)
    parser.add_argument("--experiment", action="append", metavar="NAME",
                        help="run name (repeatable; default: every run of the preset)")
    parser.add_argument("--list", action="store_true", help="print the run names and exit")
    args = parser.parse_args(argv)
    p = notebook_parameters(args.preset)
    runs = experiments(p)
    if args.list:
        print("\n".join(runs))
        return
    unknown = sorted(set(args.experiment or ()) - set(runs))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; valid: {sorted(runs)}")
    rank, world = init_from_environment()
    device = resolve_device(p["device"])
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    directory = results_dir() / "fragrow" / args.preset
    for name in args.experiment or runs:
        record = run(name, runs[name], directory=directory, preset=args.preset, device=device,
                     progress=p["progress"] and rank == 0, rank=rank, world=world)
        if rank == 0:
            print(f"{name}: test error {100 * record['metrics']['test_error']:.2f} %, "
                  f"{record['wall_time_s']:.0f} s -> {record['path']}")


def blocks_over_time(record: dict) -> tuple[list[float], list[int]]:
    """The blocks a run has added, as a step function of the epoch.

    Parameters
    ----------
    record : dict
        A record of :func:`run`: ``iterations_per_epoch``, ``config["epochs"]`` and the
        growth events (``iteration``, ``blocks_added``).

    Returns
    -------
    epochs : list of float
        0, the epoch of every growth event, and ``E_T`` last.
    blocks : list of int
        Blocks added from each of these epochs on (the last repeats the final count), for
        ``plt.step(epochs, blocks, where="post")``.
    """
    ipe, total = record["iterations_per_epoch"], record["config"]["epochs"]
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
        Run name -> record of :func:`run`.
    p : dict
        The chapter's parameters (``tables``, ``regimes`` and what :func:`table` reads).

    Returns
    -------
    pandas.DataFrame or None
        The rows of :func:`table` per regime, indexed by (regime, row), rounded to two
        decimals; None (after a message) when ``number`` is not among ``p["tables"]``.
    """
    import pandas as pd  # only the notebook's tables need pandas, not the runs

    if number not in p["tables"]:
        print(f"Table {number} is not part of the preset's tables {p['tables']}")
        return None
    frames = {regime: pd.DataFrame(table(number, records, p, regime))
              for regime in p["regimes"]}
    frame = pd.concat(frames, names=["regime", None]).round(2)
    print(title)
    return frame


if __name__ == "__main__":
    main()

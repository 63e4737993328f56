"""The GPU check: every chapter's GPU code path for a few steps, and what it costs.

``make gpu-check`` (``python -m growcore.gpucheck``) runs, on one GPU in well under five
minutes:

* **throughput**: images per second of a static VGG11 and WRN-28-1 (GradMax's networks at
  their full width) and of the same nets growing from width x0.25 (GradMax's widening every
  few steps), on CIFAR-10-shaped data (32 x 32 ``uint8`` images in memory, augmentation on
  the device), in the settings of the gpu presets (bfloat16 autocast and channels-last on a
  GPU, :func:`growcore.driver.gpu_settings`); the time of a growth step against a training
  step, and the peak memory;
* **chapters**: one growing run of each chapter's gpu preset for a few steps through the
  driver (:func:`growcore.driver.run_experiment`), its model and plan unchanged but the data
  (generated, of the preset's shape), the steps, the seeds, and a when-policy that grows
  within those steps;
* **streaming**: images per second of :class:`growcore.streaming.ImageFolderStream` on a
  generated ImageFolder tree of JPEGs (224 px crops, several worker processes), alone and
  feeding the training loop: MobileNet-v1 (GradMax's ImageNet net, ImageNet stem) trained on
  the stream through the driver (``data.stream``) and widened by GradMax from the stream's
  in-memory sample.

Without a GPU (``--tiny``, the default there) it runs the same paths at tiny sizes (the
suite does so, in seconds); its numbers then only show that the paths run.

:func:`estimate` gives what each chapter's gpu preset costs from FLOPs: an *estimate* (a
sustained rate and a per-step overhead assumed, :data:`SUSTAINED_FLOPS`, :data:`STEP_SECONDS`)
until the check's measured rates replace it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from growcore import driver
from growcore.data import Split
from growcore.train import train

SUSTAINED_FLOPS = 40e12  # FLOP/s assumed for bf16 training of these nets on one modern GPU
STEP_SECONDS = 2e-3      # per-update floor (optimizer step, kernel launches, Python)
BUDGET_SECONDS = 300     # the check must finish within this on one GPU
NETS = {"VGG11": ("vgg11 Baseline-Big", "vgg11 GradMax"),
        "WRN-28-1": ("wrn28 Baseline-Big", "wrn28 GradMax")}  # static, growing (gradmax gpu)
CHAPTER_RUNS = {"sensli": "FNN1+insert@150", "gradmax": "small GradMax",
                "nagn": "grown [[4], [4], [8]]", "fragrow": "resnet CIFAR-10 FRAGrow s0"}
# the tiny sizes of the image models (the CPU check); the GPU check builds the presets' own
TINY_MODELS = {"vgg11": {"width": 1 / 16}, "wrn": {"depth": 10, "width": 0.5},
               "resnet": {"widths": [4, 8, 8, 8]}}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much the check runs."""

    batch: int            # images per training step
    steps: int            # training steps of a throughput run
    warmup: int           # first steps not timed (allocation, autotuning)
    growths: int          # growths of a growing throughput run
    images: int           # images of the generated CIFAR-10-shaped training set
    chapter_steps: int    # steps of a chapter's run
    seeds: int            # seeds of a chapter's run
    stream_images: int    # JPEGs in the generated ImageFolder tree
    stream_side: int      # side of the JPEGs (pixels)
    stream_size: int      # side of the streamed crops
    stream_batch: int
    workers: int          # decoding processes of the stream
    stream_width: float   # MobileNet-v1's width multiplier in the streamed training run


GPU = Sizes(batch=128, steps=60, warmup=10, growths=3, images=2048, chapter_steps=12,
            seeds=2, stream_images=1024, stream_side=320, stream_size=224, stream_batch=128,
            workers=min(8, os.cpu_count() or 1), stream_width=0.25)
TINY = Sizes(batch=8, steps=10, warmup=2, growths=2, images=48, chapter_steps=6, seeds=2,
             stream_images=24, stream_side=40, stream_size=32, stream_batch=8, workers=2,
             stream_width=1 / 16)


# ---------------------------------------------------------------- data
def images(n: int, classes: int = 10, n_val: int = 0, n_test: int = 0,
           shape=(3, 32, 32), seed: int = 0) -> Split:
    """Random ``uint8`` images of ``shape`` with random labels (CIFAR-10's shape)."""
    g = torch.Generator().manual_seed(seed)
    total = n + n_val + n_test
    X = torch.randint(0, 256, (total, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (total,), generator=g)
    val, test = slice(n, n + n_val), slice(n + n_val, total)
    return Split(X[:n], y[:n], X[test] if n_test else None, y[test] if n_test else None,
                 X[val] if n_val else None, y[val] if n_val else None)


def image_tree(root: Path, n: int, side: int, classes: int = 4, seed: int = 0) -> Path:
    """An ImageFolder tree of ``n`` JPEGs (``side`` x ``3 side / 4``), ``train/`` and a
    quarter as many in ``val/``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for folder, count in (("train", n), ("val", max(classes, n // 4))):
        for i in range(count):
            path = root / folder / f"class{i % classes}" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
    return root


# ---------------------------------------------------------------- configurations
def _config(chapter: str, name: str, tiny: bool) -> dict:
    config = copy.deepcopy(driver.chapter_experiments(chapter, "gpu")[name])
    if tiny:
        config["model"].update(TINY_MODELS.get(config["model"]["name"], {}))
        if config["model"]["name"] == "vgg11" and "GradMax" in name:
            config["model"]["width"] = 1 / 64
    return config


def _steps(config: dict, steps: int, **train_options) -> dict:
    train_spec = {k: v for k, v in config["train"].items() if k not in ("epochs",)}
    config["train"] = {**train_spec, "iterations": steps, **train_options}
    return config


def _clock(device: torch.device) -> tuple[list, callable]:
    """A step metric that records when each step's backward pass has finished (the GPU
    synchronised, so that the times are the device's)."""
    times: list[float] = []

    def metric(model) -> torch.Tensor:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter())
        return torch.zeros(1)
    return times, metric


def _peak_memory(device: torch.device) -> float:
    """Peak memory in MiB: the GPU's allocated peak, else the process's resident peak."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


# ---------------------------------------------------------------- throughput
def throughput(config: dict, sizes: Sizes, device: torch.device, grow: bool,
               compile: str = "none") -> dict:
    """Images/s of ``config``'s model (its first seed) trained by :func:`growcore.train.train`
    as the driver would, growing ``sizes.growths`` times (GradMax's plan) if ``grow``."""
    split = images(sizes.images).to(device)
    config = _steps(config, sizes.steps, batch_size=sizes.batch)
    t = driver.validate(config)["train"]
    torch.manual_seed(0)
    model = driver.build_model(config["model"], split, [0]).to(device)
    hardware = driver.gpu_settings(t, str(device), model)
    plan = None
    if grow:
        interval = max(1, (sizes.steps - sizes.warmup) // (sizes.growths + 1))
        config["plan"]["when"] = {"name": "every", "interval": interval,
                                  "start": sizes.warmup + interval, "count": sizes.growths}
        config["plan"]["where"]["growths"] = sizes.growths
        plan = driver._plan(config["plan"], {"seed": 0, "loss": t["loss"],
                                             "iterations_per_epoch": 1})
    times, clock = _clock(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    from growcore.images import augment_cifar

    _, history = train(
        model, split, iterations=sizes.steps, lr=t["lr"], momentum=t["momentum"],
        weight_decay=t["weight_decay"], batch_size=sizes.batch, plan=plan,
        eval_every=sizes.steps, augment=augment_cifar, step_metrics={"clock": clock},
        progress=False, precision=hardware["precision"],
        channels_last=hardware["channels_last"],
        compile=False if compile == "none" else compile)
    grown = {e["iteration"] for e in history.events}
    steps = [b - a for i, (a, b) in enumerate(itertools.pairwise(times), start=1)
             if i >= sizes.warmup and i not in grown]
    step = float(np.median(steps))
    growth = [e["seconds"] for e in history.events]
    timed = times[-1] - times[sizes.warmup - 1]
    return {"images_per_s": sizes.batch * (len(times) - sizes.warmup) / timed,
            "step_s": step, "growths": len(growth),
            "growth_over_step": float(np.mean(growth)) / step if growth else None,
            "params_start": history.n_params[0], "params_end": history.n_params[-1],
            "peak_mib": _peak_memory(device), **hardware}


# ---------------------------------------------------------------- the chapters' paths
def chapter_run(chapter: str, sizes: Sizes, device: torch.device, tiny: bool) -> dict:
    """A few steps of a growing run of ``chapter``'s gpu preset, through the driver."""
    name = CHAPTER_RUNS[chapter]
    config = _config(chapter, name, tiny)
    config["seeds"] = config["seeds"][:sizes.seeds]
    steps, first = sizes.chapter_steps, sizes.chapter_steps // 3
    config = _steps(config, steps)
    when = config["plan"]["when"]
    if when["name"] == "validation_window":  # NAGN's own trigger, forced to fire at once
        config["plan"]["when"] = {**when, "w_acc": 1, "delta_acc": 1.0, "delta_stop": -1.0}
        config["plan"]["where"]["window_batches"] = 2
        config["train"].update(eval_every=first, evals_per_epoch=1)
    elif when["name"] == "every":
        config["plan"]["when"] = {**when, "interval": first, "start": first, "count": 2}
    else:
        config["plan"]["when"] = {"name": "at", "iterations": [first, 2 * first]}
    image = config["data"]["name"] in ("cifar10", "cifar100", "imagenet")
    split = None
    if image:
        batch = min(config["train"].get("batch_size") or sizes.batch, sizes.batch)
        config["train"]["batch_size"] = batch
        # a validation set large enough that its accuracy is not 0 by chance (NAGN's
        # trigger divides by it)
        split = images(max(sizes.images, 2 * batch), n_val=max(64, batch), n_test=batch)
    start = time.perf_counter()
    record = driver.run_experiment(config, split=split, device=str(device), save=False,
                                   progress=False)
    events = record["metrics"]["events"]
    return {"run": name, "seconds": time.perf_counter() - start, "steps": steps,
            "growths": len(events), "when": config["plan"]["when"]["name"],
            "params_start": events[0]["n_params_before"] if events else None,
            "params_end": events[-1]["n_params_after"] if events else None,
            **record["execution"]}


# ---------------------------------------------------------------- streaming
def streaming(sizes: Sizes, device: torch.device, folder: Path) -> dict:
    """Images/s of one epoch of :class:`growcore.streaming.ImageFolderStream` (after its
    first batch, which starts the workers)."""
    from growcore.streaming import ImageFolderStream

    root = image_tree(folder, sizes.stream_images, sizes.stream_side)
    stream = ImageFolderStream(root, sizes.stream_size, sizes.stream_batch,
                               num_workers=sizes.workers, device=device)
    batches = stream.batches()
    X, _ = next(batches)
    start, n = time.perf_counter(), 0
    for _, y in batches:
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": n / seconds if n else None, "images": n + len(X),
            "size": sizes.stream_size, "workers": sizes.workers, "dtype": str(X.dtype),
            "training": streamed_training(sizes, device, root)}


def streamed_training(sizes: Sizes, device: torch.device, root: Path) -> dict:
    """MobileNet-v1 trained on the stream of ``root`` through the driver for
    ``sizes.chapter_steps`` steps, widened x2 by GradMax (statistics from the stream's
    sample) after a third of them: images/s of the whole run (decoding, training, growth, the
    streamed test set) and the growth step's seconds."""
    steps, batch = sizes.chapter_steps, sizes.stream_batch
    config = {"name": "mobilenet_v1 streamed", "seeds": [0],
              "data": {"name": "imagefolder", "root": str(root), "stream": True,
                       "image_size": sizes.stream_size, "num_workers": sizes.workers,
                       "n_sample": batch},
              "model": {"name": "mobilenet_v1", "width": sizes.stream_width,
                        "stem": "imagenet", "activation": "relu1"},
              "train": {"iterations": steps, "batch_size": batch, "lr": 0.05,
                        "momentum": 0.9, "test_in_loop": False, "eval_batch_size": batch},
              "plan": {"when": {"name": "every", "interval": steps, "start": steps // 3,
                                "count": 1},
                       "where": {"name": "grow_to_widths", "factor": 2.0, "growths": 1},
                       "how": {"name": "gradmax", "batch_size": batch}}}
    start = time.perf_counter()
    record = driver.run_experiment(config, device=str(device), save=False, progress=False)
    seconds = time.perf_counter() - start
    events = record["metrics"]["events"]
    return {"images_per_s": steps * batch / seconds, "seconds": seconds, "steps": steps,
            "growths": len(events), "growth_s": events[0]["seconds"] if events else None,
            "params_start": events[0]["n_params_before"] if events else None,
            "params_end": events[-1]["n_params_after"] if events else None,
            **record["execution"]}


# ---------------------------------------------------------------- the check
def run_check(device: str = "auto", tiny: bool | None = None, compile: str = "none",
              folder: str | Path | None = None) -> dict:
    """Run the whole check; return its report (what :func:`format_report` prints).

    Parameters
    ----------
    device : str
        ``auto`` (the GPU if there is one), ``cpu`` or ``cuda``.
    tiny : bool, optional
        Tiny sizes (default: when not on a GPU).
    compile : str
        ``torch.compile`` backend of the throughput runs (``none``: eager).
    folder : path, optional
        Where the ImageFolder tree is generated (default: a temporary folder).
    """
    from growcore.runtime import resolve_device

    where = torch.device(resolve_device(device))
    tiny = where.type != "cuda" if tiny is None else tiny
    sizes = TINY if tiny else GPU
    start = time.perf_counter()
    report: dict = {"device": str(where), "tiny": tiny, "sizes": dataclasses.asdict(sizes),
                    "device_name": torch.cuda.get_device_name(where) if where.type == "cuda"
                    else "cpu", "throughput": {}, "chapters": {}}
    for net, (static, growing) in NETS.items():
        for label, name, grows in (("static", static, False), ("growing", growing, True)):
            config = _config("gradmax", name, tiny)
            report["throughput"][f"{net} {label}"] = throughput(config, sizes, where, grows,
                                                                compile)
    for chapter in CHAPTER_RUNS:
        report["chapters"][chapter] = chapter_run(chapter, sizes, where, tiny)
    with tempfile.TemporaryDirectory(dir=folder) as tree:
        report["streaming"] = streaming(sizes, where, Path(tree))
    report["seconds"] = time.perf_counter() - start
    report["within_budget"] = report["seconds"] <= BUDGET_SECONDS
    return report


def format_report(report: dict) -> str:
    """The report as text tables."""
    lines = [f"GPU check on {report['device']} ({report['device_name']})"
             + (", tiny sizes: the numbers only show that the paths run" if report["tiny"]
                else ""), "",
             f"{'network':<20}{'images/s':>10}{'step ms':>9}{'growths':>8}"
             f"{'growth/step':>12}{'params':>20}{'peak MiB':>10}  settings"]
    for net, row in report["throughput"].items():
        ratio = f"{row['growth_over_step']:.1f}" if row["growth_over_step"] else "-"
        params = f"{row['params_start']:,} -> {row['params_end']:,}"
        lines.append(f"{net:<20}{row['images_per_s']:>10.0f}{1e3 * row['step_s']:>9.1f}"
                     f"{row['growths']:>8}{ratio:>12}{params:>20}{row['peak_mib']:>10.0f}  "
                     f"{row['precision']}, channels_last={row['channels_last']}")
    lines += ["", f"{'chapter':<10}{'gpu-preset run':<30}{'steps':>6}{'growths':>8}"
                  f"{'seconds':>9}  when, settings"]
    for chapter, row in report["chapters"].items():
        lines.append(f"{chapter:<10}{row['run']:<30}{row['steps']:>6}{row['growths']:>8}"
                     f"{row['seconds']:>9.1f}  {row['when']}, {row['precision']}")
    s = report["streaming"]
    fed = s["training"]
    lines += ["", f"streaming ImageFolder at {s['size']} px, {s['workers']} workers: "
                  f"{s['images_per_s']:.0f} images/s ({s['images']} images, {s['dtype']})",
              f"streamed training of MobileNet-v1 ({fed['params_start']} -> "
              f"{fed['params_end']} params): {fed['images_per_s']:.0f} images/s over "
              f"{fed['steps']} steps, {fed['growths']} growth(s), growth step "
              f"{fed['growth_s'] or 0:.2f} s, {fed['precision']}",
              "", f"total {report['seconds']:.0f} s"
              + ("" if report["within_budget"] else f" (over the {BUDGET_SECONDS} s budget)")]
    return "\n".join(lines)


# ---------------------------------------------------------------- the cost estimate
def _shape_of(data: dict) -> tuple[tuple, int, bool]:
    """``(example shape, classes, regression)`` of a configuration's data section."""
    name = data["name"]
    if name == "spiral":
        return (2,), 2, False
    if name == "teacher_student":
        teacher = data.get("teacher", (20, 10, 10))
        return (teacher[0],), teacher[-1], True
    streamed_side = 224 if data.get("stream") else 64  # the driver's defaults
    side = data.get("image_size", streamed_side) if name in ("imagenet", "imagefolder") else 32
    return (3, side, side), {"cifar10": 10, "cifar100": 100}.get(name, 1000), False


SIZES_OF = {"cifar10": 50000, "cifar100": 50000, "imagenet": 1281167}  # training images


def _n_train(data: dict) -> int:
    if data["name"] == "spiral":
        return round(2 * data.get("n_per_class", 300) * (1 - data.get("test_fraction", 0.25)))
    if data["name"] == "teacher_student":
        return data.get("n_points", 1000)
    return data.get("n_train") or SIZES_OF[data["name"]] - data.get("n_val", 0)


def _flops(model_spec: dict, data: dict) -> int:
    shape, classes, regression = _shape_of(data)
    y = torch.zeros(2, classes) if regression else torch.arange(2) % classes
    split = Split(torch.zeros(2, *shape), y)
    spec = {k: v for k, v in model_spec.items() if k != "per_seed"}
    with torch.device("meta"):
        model = driver.build_model(spec, split, [0])
    if hasattr(model, "flops_per_example") and not hasattr(model, "input_shape"):
        return int(model.flops_per_example())
    from growcore.models.flops import count_flops

    return count_flops(model, shape)


def _target(config: dict) -> dict | None:
    """The model spec a growing run ends with where the plan fixes it (GradMax's widths x
    ``factor`` or fixed units per growth, FRAGrow's target blocks); None where the data
    decide (NAGN, SensLI)."""
    plan = config.get("plan") or {}
    where, when = ({"name": part} if isinstance(part, str) else part or {}
                   for part in (plan.get("where"), plan.get("when")))
    model = config["model"]
    if where.get("name") == "stage_order":
        return {**model, "blocks": where["target"]}
    if where.get("name") == "fixed_sites" and model["name"] == "mlp" and "count" in when:
        units = [where["units"].get(f"layers.{i}", 0) for i in range(len(model["hidden"]))]
        return {**model, "hidden": [h + u * when["count"]
                                    for h, u in zip(model["hidden"], units)]}
    if where.get("name") == "grow_to_widths":
        key = {"vgg11": "width", "wrn": "block_width", "mobilenet_v1": "width"}.get(
            model["name"])
        if key is not None:
            return {**model, key: model.get(key, 1.0) * where["factor"]}
    return None


def run_cost(config: dict) -> dict:
    """Training FLOPs and estimated GPU-hours of one run (all its seeds): ``3 x`` forward
    FLOPs per training example (forward and backward) at the seed network's size (lower) and
    at the target's (upper, where the plan fixes it), plus the evaluations' forward passes."""
    config = driver.validate(config)
    t, data = config["train"], config["data"]
    n = _n_train(data)
    setup = driver._setup(t, n, 1)
    batch = setup.batch_size or n
    seeds = len(config["seeds"])
    evaluated = (setup.iterations // setup.eval_every) * (
        data.get("n_val", 0) + (data.get("n_test") or 0) * t["test_in_loop"])
    batched = config["model"]["name"] in ("fnn", "resnet_seed_batched") or config["model"].get(
        "seed_batched")  # all seeds in one update
    examples = setup.iterations * batch * seeds
    updates = setup.iterations * (1 if batched else seeds)
    target = _target(config) if config.get("plan") else None
    out = {}
    for bound, spec in (("lower", config["model"]), ("upper", target or config["model"])):
        flops = _flops(spec, data)
        total = 3 * flops * examples + flops * evaluated * seeds
        out[bound] = (max(total / SUSTAINED_FLOPS, updates * STEP_SECONDS)) / 3600
    return {"gpu_hours": out, "fixed_target": target is not None or not config.get("plan"),
            "updates": updates, "flop_bound": 3 * _flops(config["model"], data) * examples
            / SUSTAINED_FLOPS > updates * STEP_SECONDS}


def estimate(chapters=driver.CHAPTERS, preset: str = "gpu") -> dict[str, dict]:
    """GPU-hours of every chapter's ``preset`` on one GPU, estimated from FLOPs (see
    :func:`run_cost`): ``lower`` (every growing net at its seed size), ``upper`` (at its
    target size where the plan fixes it), the number of runs and of data-decided targets."""
    table = {}
    for chapter in chapters:
        runs = driver.chapter_experiments(chapter, preset)
        costs = [run_cost(config) for config in runs.values()]
        table[chapter] = {"runs": len(costs),
                          "lower": sum(c["gpu_hours"]["lower"] for c in costs),
                          "upper": sum(c["gpu_hours"]["upper"] for c in costs),
                          "open_targets": sum(not c["fixed_target"] for c in costs),
                          "flop_bound": sum(c["flop_bound"] for c in costs)}
    return table


def estimate_markdown(table: dict[str, dict]) -> str:
    """The estimate as the README's table, with its assumptions."""
    lines = ["| chapter | runs | GPU-hours (estimate) | set by | note |",
             "|---|---:|---:|---|---|"]
    for chapter, row in table.items():
        hours = (f"{row['lower']:.2g}" if math.isclose(row["lower"], row["upper"], rel_tol=0.05)
                 else f"{row['lower']:.2g} to {row['upper']:.2g}")
        n = row["flop_bound"]
        bound = ("FLOPs" if n == row["runs"] else "steps" if not n else
                 f"FLOPs ({n} run{'s' * (n > 1)}), steps (the rest)")
        note = (f"{row['open_targets']} growing runs reach a size set by the data: counted "
                "at their seed size" if row["open_targets"] else "")
        lines.append(f"| {chapter} | {row['runs']} | {hours} | {bound} | {note} |")
    lower, upper = (sum(row[k] for row in table.values()) for k in ("lower", "upper"))
    lines.append(f"| all | {sum(row['runs'] for row in table.values())} | "
                 f"{lower:.2g} to {upper:.2g} | | |")
    lines += ["", f"Estimate, not a measurement: 3 x forward FLOPs per training image "
              f"(forward and backward) plus the evaluations' forward passes, at "
              f"{SUSTAINED_FLOPS / 1e12:.0f} TFLOP/s sustained, but at least "
              f"{STEP_SECONDS * 1e3:.0f} ms per update; a range runs from every growing net "
              "at its seed size to every one at its target size. Measured rates: "
              "`make gpu-check`."]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m growcore.gpucheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", default=None,
                      help="tiny sizes (the default without a GPU)")
    size.add_argument("--full", dest="tiny", action="store_false",
                      help="the GPU sizes, also on the CPU (slow)")
    parser.add_argument("--compile", default="none", help="torch.compile backend of the "
                        "throughput runs (none, inductor, ...)")
    parser.add_argument("--json", default=None, help="also write the report to this file")
    parser.add_argument("--estimate", action="store_true",
                        help="print only the FLOP estimate of the gpu presets' cost")
    args = parser.parse_args(argv)
    if args.estimate:
        print(estimate_markdown(estimate()))
        return 0
    report = run_check(args.device, args.tiny, args.compile)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if report["within_budget"] or report["tiny"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""FRAGrow benchmarks, printed as ratios measured in one run (this machine is noisy: compare
within a run, not across runs).

1. Time per epoch of the seed, of the target and of a growing run (FRAGrow), and the
   normalised training time of the slides' Table 5: the growing run's wall time (and FLOPs)
   in per cent of training the target directly.
2. The cost of one growth step (copying blocks, rebuilding the optimiser) relative to one
   training step of the target (forward, backward, update; best of several, in turns).

Data: CIFAR-10 from the offline archive when available (see growcore.images), otherwise random
images of the same shape (timings do not depend on the pixels).

Run: ``make bench`` or ``.venv/bin/python bench/bench_fragrow.py``.
"""

from __future__ import annotations

import tempfile
import time

import torch

from growcore.chapters import fragrow
from growcore.driver import load_data, run_experiment
from growcore.how import BlockInit
from growcore.images import CIFAR10_CLASSES, DataNotFoundError, ImageSplit
from growcore.models.factory import build_named
from growcore.models.sites import depth_sites
from growcore.ops import insert_modules, make_optimizer, rebuild_optimizer
from growcore.runner import notebook_parameters
from growcore.where import StageOrder

# The chapter's cpu parameters with a bench-sized network and data set
BENCH = {"seed_blocks": [1, 1, 1], "target_blocks": [3, 3, 3], "widths": [16, 32, 64],
         "regimes": ["bench"], "n_train": [1024], "epochs": [6], "finetune_min": [1],
         "augment": [True], "n_val": 256, "n_test": 256, "alphas": [], "tables": [5],
         "n_seeds": 1, "device": "cpu", "progress": False}


def split_for(data: dict):
    try:
        return load_data(data)
    except DataNotFoundError:
        generator = torch.Generator().manual_seed(0)

        def images(n):
            return torch.randint(0, 256, (n, 3, 32, 32), generator=generator,
                                 dtype=torch.uint8)

        labels = torch.arange(data["n_train"]) % 10
        return ImageSplit(images(data["n_train"]), labels, images(data["n_test"]),
                          labels[:data["n_test"]], images(data["n_val"]),
                          labels[:data["n_val"]], classes=CIFAR10_CLASSES,
                          source="random images")


def normalised_time() -> None:
    p = fragrow.validate(notebook_parameters("fragrow", "cpu", **BENCH))
    runs = fragrow.experiments(p)
    split = split_for(next(iter(runs.values()))["data"])
    out = {}
    options = {"split": split, "preset": "bench", "device": "cpu", "progress": False}
    with tempfile.TemporaryDirectory() as directory:
        first = next(iter(runs.values()))  # untimed warm-up: first calls are slow
        run_experiment({**first, "name": "warm-up", "train": {**first["train"], "epochs": 2}},
                       directory=directory, **options)
        for method in fragrow.methods(p["tables"], p["alphas"]):
            config = runs[fragrow.run_name(p, p["regimes"][0], method, 0)]
            out[method] = run_experiment(config, directory=directory, **options)
    large = out["large"]
    print(f"ResNet {p['seed_blocks']} -> {p['target_blocks']}, widths {p['widths']}, "
          f"{p['n_train'][0]} images, {p['epochs'][0]} epochs, batch {p['batch_size']}")
    for method, record in out.items():
        metrics, ipe = record["metrics"], record["iterations_per_epoch"]
        per_epoch = record["wall_time_s"] / record["config"]["train"]["epochs"]
        time_pc = 100 * record["wall_time_s"] / large["wall_time_s"]
        cost_pc = 100 * metrics["total_cost_flops"][0] / large["metrics"]["total_cost_flops"][0]
        growth = [round(e["iteration"] / ipe, 2) for e in metrics["events"]]
        print(f"  {method:8s} {per_epoch:6.2f} s/epoch   time {time_pc:6.1f} %   "
              f"FLOPs {cost_pc:6.1f} %   growth at epochs {growth}")


TRIALS = 5  # part 2: best of 5, the growth on a fresh copy each time, taken in turns


def growth_step_cost() -> None:
    """Part 2: one growth step of the seed ResNet (every stage to its target depth: where,
    block copies, the optimiser rebuilt) against one training step of the target (forward,
    backward, SGD update) at batch 128; each the best of :data:`TRIALS`, taken in turns."""
    import copy

    torch.manual_seed(0)
    seed = build_named("resnet", (3, 32, 32), 10, blocks=[1, 1, 1], widths=[16, 32, 64])
    X, y = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8), torch.arange(128) % 10
    target = build_named("resnet", (3, 32, 32), 10, blocks=[3, 3, 3], widths=[16, 32, 64])
    target_opt = make_optimizer("sgd", target.parameters(), 0.0, momentum=0.9)

    def trained_seed():
        model = copy.deepcopy(seed)
        opt = make_optimizer("sgd", model.parameters(), 0.1, momentum=0.9)
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()  # momentum buffers to carry over
        return model, opt

    def step():
        target_opt.zero_grad()
        torch.nn.functional.cross_entropy(target(X), y).backward()
        target_opt.step()

    step()  # warm-up
    grow_s = step_s = float("inf")
    for _ in range(TRIALS):
        model, opt = trained_seed()
        start = time.perf_counter()
        proposals, _ = StageOrder([1, 1, 1], [3, 3, 3])(model, depth_sites(model))
        rebuild_optimizer(opt, model, insert_modules(model, proposals, BlockInit()))
        grow_s = min(grow_s, time.perf_counter() - start)
        start = time.perf_counter()
        step()
        step_s = min(step_s, time.perf_counter() - start)
    print(f"one growth step: {1e3 * grow_s:.1f} ms, one training step of the target "
          f"{1e3 * step_s:.1f} ms (batch 128): {grow_s / step_s:.3f} training steps "
          "(block copies need no statistics: no pass over data)")


if __name__ == "__main__":  # threads: torch's default, or OMP_NUM_THREADS
    normalised_time()
    growth_step_cost()

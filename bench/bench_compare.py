"""Comparison-chapter benchmarks: N seeds as one batched program vs one seed at a time,
printed as ratios measured in one run (this machine is noisy: compare within a run, not
across runs; every time is the best of several trials taken in turns, so that both variants
see the same load).

Each configuration is the chapter's (:mod:`growcore.chapters.compare`, its cpu preset's
parameters), run through the driver with ``N`` seeds (``--seeds``, default 32) on a schedule
shortened by ``--scale`` (default 5: growths every 40 steps instead of 200, 300 steps instead
of 1500; the same number of growths). "Batched": all seeds as one tensor program
(:class:`growcore.models.stacked.StackedSeeds`, ``model.seed_batched``); "one seed at a time":
one plain MLP per seed, each on its own data, as the chapter runs what it cannot batch.

1. Part 2 (how), GradMax and Random: the student of the 20:10:10 teacher grows on the fixed
   schedule, full-batch MSE, each seed its own teacher and points (``data.per_seed``).
2. Part 3 (when), the fixed timing (``every``) with GradMax's where and how, underfitting
   regime (1000 training points, cross-entropy on the teacher's labels, the validation error
   every ``when_eval_every`` steps): each seed's split given to the driver
   (:func:`growcore.chapters.compare.classification_split`, built before the timing; the
   batched run gets them stacked, :class:`growcore.data.SeedSplits`).
3. Part 4 (all together), a site-choosing criterion (``singular_value``; ``--where`` adds
   others, e.g. ``random_width``) on the two-hidden-layer student with per-seed data: the
   seeds choose different sites, so the driver reruns them regrouped by their choice, from
   the start, at every growth where a group disagrees (the wasted attempts included); the
   chapter (``runs_batched``) runs these one seed at a time.

Printed per configuration: the wall times, the speed-up (one seed at a time / batched), ms per
seed and step of each, the seed groups of the batched run, and the largest difference of a
seed's training loss at any step between the two (the batched program reproduces the seeds
alone to float rounding). One CPU thread (``torch.set_num_threads(1)``).

Run: ``make bench`` or ``.venv/bin/python bench/bench_compare.py [--seeds N] [--scale S]
[--trials T] [--where NAME ...]`` (defaults: under three minutes on the 2-core
machine).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from growcore.chapters import compare
from growcore.data import SeedSplits
from growcore.driver import run_experiment
from growcore.runner import notebook_parameters

SEEDS = 32  # N: the chapter's cpu preset trains 100 seeds in part 2, 8 and 4 in parts 3, 4
SCALE = 5  # the chapter's schedule shortened this many times (its number of growths kept)
TRIALS = 2  # best of 2, taken in turns
RUN = {"save": False, "progress": False, "device": "cpu"}


def chapter_parameters(n_seeds: int, scale: int) -> dict:
    """The chapter's cpu-preset parameters with ``n_seeds`` seeds in every part and the
    growth interval and final steps divided by ``scale``. The notebook's parameters as
    papermill injects them (:func:`growcore.runner.notebook_parameters`); every
    configuration built from them is checked by the driver before it trains."""
    p = notebook_parameters("compare", "cpu")
    return {**p, "how_seeds": n_seeds, "when_seeds": n_seeds, "factorial_seeds": n_seeds,
            "how_interval": max(1, p["how_interval"] // scale),
            "how_final_steps": max(2, p["how_final_steps"] // scale)}


def best_in_turns(fns: dict, trials: int) -> dict[str, tuple[float, object]]:
    """Best wall time of each callable and the result of its last call, the trials
    interleaved across the callables."""
    best = {name: (float("inf"), None) for name in fns}
    for _ in range(trials):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn()
            best[name] = (min(best[name][0], time.perf_counter() - start), out)
    return best


def plain(config: dict) -> dict:
    """The configuration with ordinary (not seed-batched) models."""
    config = copy.deepcopy(config)
    config["model"].pop("seed_batched", None)
    return config


def _losses(records: list[dict]) -> torch.Tensor:
    """The training-loss series of every seed of ``records``, ``[seeds, steps]``."""
    return torch.tensor([row for record in records for row in record["metrics"]["loss"]])


def report(label: str, runs: dict, n_seeds: int, steps: int, trials: int) -> float:
    """Time ``runs`` (``batched`` and ``one seed at a time``: callables returning a list of
    records) in turns and print the comparison; return the speed-up."""
    t = best_in_turns(runs, trials)
    (t_b, batched), (t_l, alone) = t["batched"], t["one seed at a time"]
    groups = [g for record in batched for g in record["seed_groups"]]
    diff = float((_losses(batched) - _losses(alone)).abs().max())
    per = 1000 / (steps * n_seeds)
    print(f"  {label}\n    batched {t_b:6.2f} s ({per * t_b:.3f} ms per seed-step), one seed "
          f"at a time {t_l:6.2f} s ({per * t_l:.3f} ms per seed-step): speed-up "
          f"{t_l / t_b:4.1f}x; {len(groups)} seed group(s) "
          f"{sorted(map(len, groups), reverse=True)}; max |loss diff| {diff:.1e}")
    return t_l / t_b


def how_runs(p: dict, how: str) -> dict:
    """Part 2: one initialiser's run, batched and one seed at a time (``data.per_seed``)."""
    config = compare.how_experiments({**p, "initialisers": [how]})[f"how {how}"]
    return {"batched": lambda: [run_experiment(config, **RUN)],
            "one seed at a time": lambda: [run_experiment(plain(config), **RUN)]}


def growth_runs(config: dict, splits: list) -> dict:
    """Parts 3 and 4: the seeds' given splits, stacked for the batched run, one each for the
    runs of one seed."""
    batched = copy.deepcopy(config)
    batched["model"]["seed_batched"] = True
    stacked = SeedSplits.stack(splits)

    def alone():
        one = plain(config)
        return [run_experiment({**one, "seeds": [s]}, split=splits[i], **RUN)
                for i, s in enumerate(config["seeds"])]

    return {"batched": lambda: [run_experiment(batched, split=stacked, **RUN)],
            "one seed at a time": alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=SEEDS, help="N seeds of every run")
    parser.add_argument("--scale", type=int, default=SCALE,
                        help="the chapter's schedule shortened this many times")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--where", nargs="+", default=["singular_value"],
                        help="site-choosing criteria of part 4 (registry names)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    p = chapter_parameters(args.seeds, args.scale)
    steps, seeds = compare.how_schedule(p)["iterations"], list(range(args.seeds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.seeds} seeds, "
          f"{steps} steps ({p['how_growths']} growths every {p['how_interval']}; the chapter: "
          f"{p['how_growths']} every {p['how_interval'] * args.scale}), best of {args.trials}")
    print("-- part 2, how: fixed schedule, 20:10:10 teacher-student, data per seed")
    for how in ("gradmax", "random"):
        report(f"initialiser {how}", how_runs(p, how), args.seeds, steps, args.trials)
    n = p["when_underfit_points"]
    splits = [compare.classification_split(p, s, n) for s in seeds]
    print(f"-- part 3, when: fixed timing 'every', GradMax where and how, {n} training points")
    config = compare.growth_config(p, "bench when every", seeds, n, [p["how_start_hidden"]],
                                   "every", "fixed_sites", "gradmax")
    report("every x fixed_sites x gradmax", growth_runs(config, splits), args.seeds,
           compare.when_iterations(p), args.trials)
    n, hidden = p["factorial_points"], list(p["factorial_hidden"])
    if n != p["when_underfit_points"]:
        splits = [compare.classification_split(p, s, n) for s in seeds]
    print(f"-- part 4: site-choosing criteria, student {hidden}, {n} training points "
          "(the batched run regroups)")
    for where in args.where:
        config = compare.growth_config(p, f"bench all every {where}", seeds, n, hidden,
                                       "every", where, "gradmax")
        report(f"every x {where} x gradmax", growth_runs(config, splits), args.seeds,
               compare.when_iterations(p), args.trials)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Experiments on small, seed-batched networks, described by plain configuration dicts.

A configuration fully determines a run; the run is recorded with
:func:`growcore.results.save_record` and the record is returned, so figures are drawn from
exactly what was saved.
"""

from __future__ import annotations

import time

import torch

from growcore import results
from growcore.data import spiral
from growcore.how import IdentityLayer
from growcore.models import build
from growcore.plan import GrowthPlan
from growcore.train import DivergentGrowth, train
from growcore.when import AtIterations
from growcore.where import SensLI

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def spiral_config(model: str, widths: list[int], seeds: list[int], iterations: int, lr: float,
                  insert_at: int | None = None, select: str = "max",
                  normalisation: str = "paper", lr_factor: float = 1.0,
                  resnet_W1_scale: float = 0.8, activation: str | None = None,
                  optimizer: str = "sgd", momentum: float = 0.0, batch_size: int | None = None,
                  split_seed: int = 0, dtype: str = "float32", eval_every: int = 1) -> dict:
    """Configuration of one spiral experiment (SensLI section 3); see :func:`run_spiral`.

    ``insert_at=None`` trains the fixed architecture; otherwise one layer is inserted at that
    iteration where the SensLI merit selects (``select="max"``: LI, ``"min"``: LI_other).
    """
    growth = None
    if insert_at is not None:
        growth = {"at": insert_at, "select": select, "normalisation": normalisation,
                  "lr_factor": lr_factor, "resnet_W1_scale": resnet_W1_scale}
    return {"data": {"name": "spiral", "n_per_class": 300, "test_fraction": 0.25,
                     "split_seed": split_seed},
            "model": {"kind": model, "widths": list(widths),
                      "activation": activation or ("relu" if model == "fnn" else "tanh")},
            "seeds": list(seeds), "iterations": iterations,
            "optimizer": {"name": optimizer, "lr": lr, "momentum": momentum,
                          "batch_size": batch_size},
            "growth": growth, "dtype": dtype, "eval_every": eval_every}


def plan_from(growth: dict | None) -> GrowthPlan | None:
    """The GrowthPlan of a configuration's ``growth`` entry."""
    if growth is None:
        return None
    how = IdentityLayer(growth["resnet_W1_scale"])
    where = SensLI(select=growth["select"], normalisation=growth["normalisation"],
                   resnet_W1_scale=growth["resnet_W1_scale"])
    return GrowthPlan(AtIterations(growth["at"]), where, how, lr_factor=growth["lr_factor"])


def run_spiral(name: str, config: dict, *, directory=None, preset: str = "cpu",
               device: str = "cpu", batched: bool = True, progress: bool = True,
               save: bool = True) -> dict:
    """Run a spiral experiment for all its seeds and return (and save) its record.

    Parameters
    ----------
    batched : bool
        True: all seeds as one seed-batched tensor program; False: one seed at a time (the
        reference the batched run must reproduce).
    """
    data = config["data"]
    dtype = DTYPES[config["dtype"]]
    split = spiral(data["n_per_class"], data["test_fraction"], data["split_seed"],
                   dtype=dtype).to(device)
    pending = [list(config["seeds"])] if batched else [[s] for s in config["seeds"]]
    start, done, regrouped = time.perf_counter(), [], False
    while pending:
        seeds = pending.pop(0)
        try:
            done.append((seeds, _train_group(name, config, seeds, split, dtype, device,
                                             progress)))
        except DivergentGrowth as divergence:
            if len(seeds) == 1:
                raise
            # seeds chose sites of different shapes: rerun them grouped by their choice
            groups: dict[str, list[int]] = {}
            for seed, site in zip(divergence.seeds, divergence.sites):
                groups.setdefault(repr(site), []).append(seed)
            pending.extend(groups.values())
            regrouped = True
    record = results.make_record(
        name, config, preset=preset, seeds=config["seeds"], device=device,
        wall_time_s=time.perf_counter() - start, batched_seeds=batched,
        seed_groups=[seeds for seeds, _ in done], regrouped=regrouped,
        final_models=[h["final_model"] for _, h in done],
        plans=[h["plan"] for _, h in done],  # one per seed group: the same plan
        metrics=_merge(done, config["seeds"]))
    return results.store(record, directory, save)


def _train_group(name: str, config: dict, seeds: list[int], split, dtype, device,
                 progress: bool) -> dict:
    spec, opt = config["model"], config["optimizer"]
    model = build(spec["kind"], spec["widths"], seeds, activation=spec["activation"],
                  dtype=dtype).to(device)
    final, history = train(model, split, iterations=config["iterations"], lr=opt["lr"],
                           optimizer=opt["name"], momentum=opt["momentum"],
                           batch_size=opt["batch_size"], plan=plan_from(config["growth"]),
                           eval_every=config["eval_every"], progress=progress, desc=name)
    return {**history.as_dict(), "final_model": final.spec()}


def _merge(done: list[tuple[list[int], dict]], seeds: list[int]) -> dict:
    """Metrics of seed groups, per seed in the configuration's seed order.

    ``loss``, ``test_error``, ``n_params`` and ``cost_flops`` are [S][T]; ``wall_time`` is [T]
    (summed over groups); ``events`` is a flat list, each event naming its seeds.
    """
    rows: dict[str, dict[int, list]] = {k: {} for k in ("loss", "test_error", "n_params",
                                                        "cost_flops")}
    wall, events = None, []
    for group, history in done:
        for i, seed in enumerate(group):
            rows["loss"][seed] = history["loss"][i]
            rows["test_error"][seed] = history["test_error"][i]
            rows["n_params"][seed] = history["n_params"]
            rows["cost_flops"][seed] = history["cost_flops"]
        times = history["wall_time"]
        wall = times if wall is None else [a + b for a, b in zip(wall, times)]
        events.extend(history["events"])
    merged = {key: [by_seed[s] for s in seeds] for key, by_seed in rows.items()}
    return {**merged, "wall_time": wall, "events": events}


def chosen_sites(record: dict, iteration: int | None = None) -> dict[int, object]:
    """Seed -> the site chosen at the growth step at ``iteration`` (default: the first)."""
    events = record["metrics"]["events"]
    if iteration is None:
        iteration = min(e["iteration"] for e in events)
    return {seed: site for e in events if e["iteration"] == iteration
            for seed, site in zip(e["seeds"], e["chosen"])}

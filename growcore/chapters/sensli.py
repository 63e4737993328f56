"""The SensLI chapter (``notebooks/sensli.ipynb``): parameters, experiments and the
summaries of their records.

The experiments are those of the paper's section 3, by the names of its public code:
Exp8 (Fig. 3.2), Exp6 (Fig. 3.3a), Exp11 (Fig. 3.3b), Exp9 (Fig. 3.4a), Exp14 (Fig. 3.4b).
"""

from __future__ import annotations

import numpy as np
import torch

from growcore import plots
from growcore.experiments import chosen_sites, spiral_config
from growcore.losses import per_seed_cross_entropy
from growcore.params import ParameterError, Spec, require
from growcore.params import validate as validate_all
from growcore.plan import PlanError
from growcore.registry import build_plan
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES
from growcore.stats import NORMALISATIONS

PRESETS = ("smoke", "cpu", "gpu")

PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "n_seeds": Spec(int, minimum=1),
    "iterations": Spec(int, minimum=2),
    "insertion_iteration": Spec(int, minimum=1),
    "insertion_sweep": Spec(list, item=int, minimum=1, min_length=1),
    "lr_fnn": Spec(float, minimum=0),
    "lr_resnet": Spec(float, minimum=0),
    "lr_factor_after_insertion": Spec(float, minimum=0),
    "merit_normalisation": Spec(str, choices=NORMALISATIONS),
    "resnet_W1_scale": Spec(float),
    "extra_plans": Spec(dict),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "progress": Spec(bool),
}


def validate(namespace: dict) -> dict:
    """Check the notebook's parameters (picked by name from ``namespace``) before compute."""
    params = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
    last = params["iterations"] - 1
    require(params["insertion_iteration"] <= last, "insertion_iteration",
            f"must be below iterations ({params['iterations']}); got "
            f"{params['insertion_iteration']}")
    require(max(params["insertion_sweep"]) <= last, "insertion_sweep",
            f"every entry must be below iterations ({params['iterations']}); got "
            f"{params['insertion_sweep']}")
    require(params["lr_fnn"] > 0 and params["lr_resnet"] > 0, "lr_fnn/lr_resnet",
            "learning rates must be positive")
    for label, plan in params["extra_plans"].items():
        try:
            build_plan(extra_plan(plan, params))
        except PlanError as error:
            raise ParameterError(f"parameter 'extra_plans', entry {label!r}: {error}") from error
    return params


def extra_plan(entry: dict, p: dict) -> dict:
    """A plan of the ``extra_plans`` parameter by registry names: the entry's roles over
    SensLI's own (insertion at ``insertion_iteration``, SensLI's merit, identity layer)."""
    require(isinstance(entry, dict), "extra_plans",
            f"each entry is a mapping of plan roles to registry names; got {entry!r}")
    default = {"when": {"name": "at", "iterations": p["insertion_iteration"]},
               "where": {"name": "sensli", "normalisation": p["merit_normalisation"],
                         "resnet_W1_scale": p["resnet_W1_scale"]},
               "how": {"name": "identity", "resnet_W1_scale": p["resnet_W1_scale"]}}
    return {**default, **entry}


def experiments(p: dict) -> dict[str, dict]:
    """All runs of the chapter, name -> driver configuration (see :func:`spiral_config`)."""
    seeds = list(range(p["n_seeds"]))
    common = {"seeds": seeds, "iterations": p["iterations"],
              "normalisation": p["merit_normalisation"], "resnet_W1_scale": p["resnet_W1_scale"]}
    fnn = {**common, "model": "fnn", "lr": p["lr_fnn"]}
    resnet = {**common, "model": "resnet", "lr": p["lr_resnet"]}
    at = p["insertion_iteration"]
    runs = {
        # Fig. 3.2 (Exp8) and Fig. 3.3a (Exp6)
        "FNN1": spiral_config(widths=[5], **fnn),
        "FNN2": spiral_config(widths=[5, 5], **fnn),
        **{f"FNN1+insert@{t}": spiral_config(widths=[5], insert_at=t, **fnn)
           for t in sorted(set(p["insertion_sweep"]) | {at})},
        # Fig. 3.3b (Exp11): ResNet1 has two hidden layers (one block)
        "ResNet1": spiral_config(widths=[3, 3], **resnet),
        "ResNet2": spiral_config(widths=[3, 3, 3], **resnet),
        "ResNetLI": spiral_config(widths=[3, 3], insert_at=at, **resnet),
        # Ablation: the larger net with the identity-initialised layer from the start
        # (insertion at iteration 0) separates the effect of the initialisation from that of
        # the insertion time
        "FNN1+insert@0": spiral_config(widths=[5], insert_at=0, **fnn),
        "ResNet1+insert@0": spiral_config(widths=[3, 3], insert_at=0, **resnet),
        # Fig. 3.4a (Exp9): where to insert into FNN [4, 4]
        "FNN[4,4] LI": spiral_config(widths=[4, 4], insert_at=at, select="max", **fnn),
        "FNN[4,4] LI_other": spiral_config(widths=[4, 4], insert_at=at, select="min", **fnn),
    }
    # Fig. 3.4b (Exp14): ResNet [3, 3, 3]; the paper multiplies the lr by 0.8 after insertion
    # (the public code by 0.7): both factors are run, the parameter's first
    for factor in dict.fromkeys([p["lr_factor_after_insertion"], 0.7, 0.8]):
        for select, label in (("max", "LI"), ("min", "LI_other")):
            runs[f"ResNet[3,3,3] {label} x{factor}"] = spiral_config(
                widths=[3, 3, 3], insert_at=at, select=select, lr_factor=factor, **resnet)
    # Any other plan by registry names on the same net, e.g. a random position (the control)
    for label, entry in p["extra_plans"].items():
        runs[f"FNN[4,4] {label}"] = {**spiral_config(widths=[4, 4], **fnn),
                                      "plan": extra_plan(entry, p)}
    # Normalisation: with unequal widths 1/h_k^2 can change the choice (FNN [8, 3])
    for normalisation in NORMALISATIONS:
        runs[f"FNN[8,3] LI {normalisation}"] = spiral_config(
            widths=[8, 3], insert_at=at, select="max",
            **{**fnn, "normalisation": normalisation})
    return {name: {**config, "name": name} for name, config in runs.items()}


def notebook_parameters(preset: str) -> dict:
    """The notebook's parameters under ``preset`` (the parameters cell's defaults updated by
    the preset file's section, as papermill injects them), validated."""
    return validate(runner_parameters("sensli", preset))


def loss_of(model, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training objective of a seed-batched model: per-seed mean cross-entropy, summed.

    Parameters
    ----------
    model : callable
        Maps inputs [N, d] to logits [S, N, c] (a seed-batched network).
    X : torch.Tensor
        Inputs [N, d].
    y : torch.Tensor
        Labels [N] (or [S, N]).

    Returns
    -------
    torch.Tensor
        A scalar: the sum over seeds of each seed's mean cross-entropy, whose gradient with
        respect to one seed's parameters is that seed's own gradient.
    """
    return per_seed_cross_entropy(model(X), y).sum()


def summary_table(records: dict[str, dict], names: list[str], last: int = 50) -> str:
    """A text table of runs: parameters at the end, final loss and final test error.

    Final values are per seed the mean over the last ``last`` iterations, then the mean over
    seeds with its 95 % half-width (:func:`growcore.plots.final_mean_band`).

    Parameters
    ----------
    records : dict
        Run name -> record (metrics ``loss``, ``test_error``, ``n_params`` [S][T]).
    names : list of str
        The runs of the table, in its order.
    last : int
        Iterations averaged per seed.

    Returns
    -------
    str
        A header line and one line per run.
    """
    lines = [f"{'run':30s} {'params':>6s} {'final loss':>18s} {'final test error':>18s}"]
    for name in names:
        r = records[name]
        loss, loss_half = plots.final_mean_band(r, "loss", last)
        error, error_half = plots.final_mean_band(r, "test_error", last)
        lines.append(f"{name:30s} {r['metrics']['n_params'][0][-1]:6d} "
                     f"{loss:10.3f} ± {loss_half:.3f} "
                     f"{100 * error:10.1f} ± {100 * error_half:.1f} %")
    return "\n".join(lines)


def params_over_time(record: dict) -> str:
    """The network sizes of a run and the iterations from which they hold.

    Parameters
    ----------
    record : dict
        A result record; ``metrics["n_params"]`` is [S][T] and read for the first seed (the
        same for every seed in the chapter's runs).

    Returns
    -------
    str
        E.g. ``"27 from iteration 0, 57 from iteration 20"``.
    """
    n = record["metrics"]["n_params"][0]
    changes = [0] + [t for t in range(1, len(n)) if n[t] != n[t - 1]]
    return ", ".join(f"{n[t]} from iteration {t}" for t in changes)


def loss_at_cost(record: dict, budget: float) -> tuple[float, int]:
    """Mean loss over seeds at the last iteration whose cumulative cost is within ``budget``.

    Parameters
    ----------
    record : dict
        A result record with ``metrics["cost_flops"]`` and ``metrics["loss"]``, [S][T]; the
        cost is averaged over seeds (it is equal across seeds in the chapter's runs).
    budget : float
        Cumulative training FLOPs.

    Returns
    -------
    loss : float
        Mean over seeds of the loss at iteration ``t``.
    t : int
        The last iteration with cost ``<= budget`` (-1 if the first already exceeds it).
    """
    cost = np.asarray(record["metrics"]["cost_flops"]).mean(axis=0)
    t = int(np.searchsorted(cost, budget, side="right")) - 1
    return np.asarray(record["metrics"]["loss"])[:, t].mean(), t


def chosen_positions(record: dict) -> str:
    """How many seeds inserted after which layer at the run's first growth step.

    Parameters
    ----------
    record : dict
        A result record of a growing run (see :func:`growcore.experiments.chosen_sites`).

    Returns
    -------
    str
        E.g. ``"after layer 1: 3 seeds, after layer 2: 2 seeds"``, by increasing position.
    """
    values, counts = np.unique(list(chosen_sites(record).values()), return_counts=True)
    return ", ".join(f"after layer {v}: {c} seeds" for v, c in zip(values, counts))


def compare(records: dict[str, dict], a: str, b: str, last: int = 50) -> str:
    """Paired comparison of the final losses of runs ``a`` and ``b`` over their seeds.

    Per seed the final loss is the mean over the last ``last`` iterations; the differences
    ``a - b`` (seeds paired by position) give a mean with its 95 % half-width
    (:func:`growcore.plots.mean_band`), and the seeds where ``a`` is lower are counted.

    Parameters
    ----------
    records : dict
        Run name -> record (``metrics["loss"]`` [S][T], the same seeds in both runs).
    a, b : str
        Names of the two runs.
    last : int
        Iterations averaged per seed.

    Returns
    -------
    str
        E.g. ``"-0.0100 ± 0.0020  (first lower in 4/5 seeds)"``.
    """
    la = np.asarray(records[a]["metrics"]["loss"])[:, -last:].mean(1)
    lb = np.asarray(records[b]["metrics"]["loss"])[:, -last:].mean(1)
    mean, half = plots.mean_band((la - lb)[:, None])
    better = int((la < lb).sum())
    return f"{mean[0]:+.4f} ± {half[0]:.4f}  (first lower in {better}/{len(la)} seeds)"

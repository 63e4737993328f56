"""The SensLI chapter (``notebooks/sensli.ipynb``): parameters, experiments and the
summaries of their records.

The experiments are those of the paper's section 3, by the names of its public code:
Exp8 (Fig. 3.2), Exp6 (Fig. 3.3a), Exp11 (Fig. 3.3b, on eq. (2.3)'s ResNet and on the authors'
code's), Exp9 (Fig. 3.4a), Exp14 (Fig. 3.4b). The summaries read the records: final values
(:func:`final_table`), paired differences (:func:`paired`) and their verdicts under several
measures (:func:`measures_table`), loss spikes (:func:`spikes`) and the authors' early stopping
applied after the fact (:func:`authors_stop`). Uncertainty and verdicts follow the book's
convention (:mod:`growcore.uncertainty`, :mod:`growcore.claims`): the paper's claims are added
to the chapter's :class:`~growcore.claims.Claims` by :func:`add_paired`.
"""

from __future__ import annotations

import numpy as np
import torch

from growcore.claims import Claim, Claims
from growcore.experiments import chosen_sites, spiral_config
from growcore.losses import per_seed_cross_entropy
from growcore.params import ParameterError, Spec, require
from growcore.params import validate as validate_all
from growcore.plan import PlanError
from growcore.registry import build_plan
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES
from growcore.stats import NORMALISATIONS
from growcore.uncertainty import Estimate, mean_interval, paired_difference

PRESETS = ("smoke", "lab", "cpu", "gpu")

# One colour per method across the chapter's figures (seaborn's colour-blind palette): the
# small baseline, the large net trained from the start, the inserted net, the placements.
COLORS = {
    "FNN1": "#000000", "ResNet1": "#000000",
    "FNN2": "#0173b2", "ResNet2": "#0173b2",
    "FNNLI": "#de8f05", "ResNetLI": "#de8f05",
    "Exp11's ResNet2": "#cc78bc",
    "LI": "#029e73", "LI_other": "#d55e00", "random position": "#949494",
}

PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "n_seeds": Spec(int, minimum=1),
    "iterations": Spec(int, minimum=2),
    "insertion_iteration": Spec(int, minimum=1),
    "insertion_sweep": Spec(list, item=int, minimum=1, min_length=2),  # Fig. 3.2 compares times
    "lr_fnn": Spec(float, greater_than=0),
    "lr_resnet": Spec(float, greater_than=0),
    "lr_factor_after_insertion": Spec(float, greater_than=0),
    "merit_normalisation": Spec(str, choices=NORMALISATIONS),
    "resnet_W1_scale": Spec(float),
    "extra_plans": Spec(dict),
    "spike_threshold": Spec(float, minimum=0),
    "authors_stop_test_error": Spec(float, minimum=0),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "progress": Spec(bool),
}


def color_of(label: str) -> str | None:
    """The chapter's colour of a figure label (:data:`COLORS`; a label such as
    ``"LI (lr x0.8)"`` takes the colour of its first word), None for another label."""
    return COLORS.get(label, COLORS.get(label.split(" ")[0]))


def loss_and_error(records: dict[str, dict], title: str):
    """The paper's two panels (:func:`growcore.plots.loss_and_error`) in the chapter's colours,
    with the loss on a log axis (its band computed in log space)."""
    from growcore import plots

    fig = plots.loss_and_error(records, title=title, colors=[color_of(r) for r in records],
                               log_loss=True)
    fig.axes[0].set_xlabel("")
    return fig


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
    taken = [label for label in params["extra_plans"]
             if not isinstance(label, str) or label in ("LI", "LI_other")]
    require(not taken, "extra_plans", f"labels must be new names (FNN[4,4] LI and LI_other "
            f"are the chapter's own runs); got {taken}")
    for label, plan in params["extra_plans"].items():
        try:
            build_plan(extra_plan(plan, params))
        except PlanError as error:
            raise ParameterError(f"parameter 'extra_plans', entry {label!r}: {error}") from error
    require(params["authors_stop_test_error"] <= 1, "authors_stop_test_error",
            f"is a test error in [0, 1]; got {params['authors_stop_test_error']}")
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
    authors = {**resnet, "model": "resnet_authors"}
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
        # Fig. 3.3b on the ResNet of the authors' code (first layer tanh(W x + b), output
        # bias), the same weight draws seed by seed; their Exp11 script builds ResNet2 from
        # 2 * fix_width, i.e. with three blocks: run too
        "ResNet1 authors": spiral_config(widths=[3, 3], **authors),
        "ResNet2 authors": spiral_config(widths=[3, 3, 3], **authors),
        "ResNetLI authors": spiral_config(widths=[3, 3], insert_at=at, **authors),
        "ResNet[3,3,3,3] authors": spiral_config(widths=[3, 3, 3, 3], **authors),
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


def _half(e: Estimate) -> float:
    """Half-width of an estimate's interval, 0 for a single seed (no interval)."""
    return 0.0 if e.n < 2 else e.half


def summary_table(records: dict[str, dict], names: list[str], last: int = 50) -> str:
    """A text table of runs: parameters at the end, final loss and final test error.

    Final values are per seed the mean over the last ``last`` iterations, then the mean over
    seeds with the half-width of its 95 % t interval (:func:`growcore.uncertainty.mean_interval`).

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
        loss = mean_interval(per_seed(r, "loss", last))
        error = mean_interval(100 * per_seed(r, "test error", last))
        lines.append(f"{name:30s} {r['metrics']['n_params'][0][-1]:6d} "
                     f"{loss.mean:10.3f} ± {_half(loss):.3f} "
                     f"{error.mean:10.1f} ± {_half(error):.1f} %")
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


def loss_within_budget(record: dict, budget: float, last: int = 50) -> tuple[np.ndarray, int]:
    """Per seed, the mean loss of the last ``last`` iterations within a compute budget.

    Parameters
    ----------
    record : dict
        A result record with ``metrics["cost_flops"]`` and ``metrics["loss"]``, [S][T]; the
        cost is averaged over seeds (it is equal across seeds in the chapter's runs).
    budget : float
        Cumulative training FLOPs.
    last : int
        Iterations averaged per seed, ending at the last one within the budget.

    Returns
    -------
    loss : numpy.ndarray of shape [S]
    t : int
        The last iteration with cost ``<= budget``.
    """
    cost = np.asarray(record["metrics"]["cost_flops"]).mean(axis=0)
    t = int(np.searchsorted(cost, budget, side="right")) - 1
    if t < 0:
        raise ValueError(f"budget {budget:.3g} is below the cost of the first iteration "
                         f"({cost[0]:.3g})")
    loss = np.asarray(record["metrics"]["loss"], dtype=float)
    return loss[:, max(0, t - last + 1):t + 1].mean(axis=1), t


def final_cost(record: dict) -> float:
    """The cumulative training FLOPs of a run at its end (mean over seeds)."""
    return float(np.asarray(record["metrics"]["cost_flops"]).mean(axis=0)[-1])


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


def compare(records: dict[str, dict], a: str, b: str, measure: str = "loss",
            last: int = 50) -> str:
    """Paired comparison of runs ``a`` and ``b`` over their seeds (:func:`paired`), in words.

    Returns
    -------
    str
        E.g. ``"-0.01 [-0.012, -0.008] (n = 5), first lower in 4 of 5 seeds"``.
    """
    d, lower = paired(records, a, b, measure, last)
    return f"{d.format('+.3g')}, first lower in {lower} of {d.n} seeds"


# What "final" means for a run, per seed. The loop records the loss and the test error of
# the network *before* each update; ``final_test``/``final_train`` are the errors of the
# final network, after the last update.
MEASURES = {
    "loss": "mean loss of the last {last} iterations",
    "last loss": "loss at the last iteration",
    "test error": "mean test error of the last {last} iterations",
    "final test error": "test error of the final model",
    "final train error": "training error of the final model",
}


def per_seed(record: dict, measure: str, last: int = 50) -> np.ndarray:
    """One value per seed of a run's record, by a name of :data:`MEASURES`.

    Parameters
    ----------
    record : dict
        A result record: ``metrics["loss"]``, ``metrics["test_error"]`` [S][T],
        ``metrics["final_test"]``, ``metrics["final_train"]`` [S].
    measure : str
        A key of :data:`MEASURES`.
    last : int
        Iterations averaged per seed by ``"loss"`` and ``"test error"``.

    Returns
    -------
    numpy.ndarray of shape [S]
    """
    m = record["metrics"]
    if measure in ("loss", "test error"):
        return np.asarray(m[measure.replace(" ", "_")], dtype=float)[:, -last:].mean(axis=1)
    if measure == "last loss":
        return np.asarray(m["loss"], dtype=float)[:, -1]
    if measure in ("final test error", "final train error"):
        return np.asarray(m["final_" + measure.split()[1]], dtype=float)
    raise ValueError(f"measure must be one of {sorted(MEASURES)}, got {measure!r}")


def final_frame(records: dict[str, dict], runs: dict[str, str], measure: str = "loss",
                last: int = 50):
    """A long table of one measure (:data:`MEASURES`) per seed, for seaborn's point plots.

    Parameters
    ----------
    runs : dict
        Label in the figure -> run name of ``records``.

    Returns
    -------
    pandas.DataFrame
        Columns ``run`` (the label), ``seed`` (position) and ``value``.
    """
    import pandas as pd

    return pd.DataFrame([{"run": label, "seed": seed, "value": value}
                         for label, name in runs.items()
                         for seed, value in enumerate(per_seed(records[name], measure, last))])


def window_loss(record: dict, start: int, length: int = 50) -> np.ndarray:
    """Per seed, the mean loss of iterations ``start .. start + length - 1`` (e.g. the
    iterations just after the insertion, where the paper also sees LI ahead); shape [S]."""
    loss = np.asarray(record["metrics"]["loss"], dtype=float)
    if not 0 <= start < loss.shape[1]:
        raise ValueError(f"start must be an iteration of the run (0..{loss.shape[1] - 1}), "
                         f"got {start}")
    return loss[:, start:start + length].mean(axis=1)


def least_favourable(records: dict[str, dict], names: list[str], baseline: str,
                     measure: str = "loss", last: int = 50) -> str:
    """The run of ``names`` whose paired difference to ``baseline`` has the largest mean
    (the one that compares least favourably with it)."""
    return max(names, key=lambda name: paired(records, name, baseline, measure, last)[0].mean)


def paired(records: dict[str, dict], a: str, b: str, measure: str = "loss",
           last: int = 50) -> tuple[Estimate, int]:
    """Paired difference ``a - b`` of a measure (:data:`MEASURES`) over the seeds of two runs
    (paired by position), and the number of seeds where ``a`` is lower.

    Returns
    -------
    difference : Estimate
        :func:`growcore.uncertainty.paired_difference` of the per-seed values.
    lower : int
    """
    va, vb = per_seed(records[a], measure, last), per_seed(records[b], measure, last)
    return paired_difference(va, vb), int((va < vb).sum())


def scale_of(p: dict) -> str:
    """The scale of the chapter's runs under parameters ``p``, for the claims' table."""
    return (f"preset {p['preset']}: {p['n_seeds']} seeds, {p['iterations']} iterations, "
            f"insertion at {p['insertion_iteration']}")


def add_paired(claims: Claims, key: str, statement: str, source: str, measure: str,
               a, b, expect: str = "below", scale: str = "") -> str:
    """Add the claim that the per-seed values ``a`` lie below (``expect="below"``) or above
    the values ``b`` of the same seeds: the paired difference ``a - b`` against 0
    (:meth:`growcore.claims.Claims.add`, which glues it under ``key``).

    Returns
    -------
    str
        The seeds where ``a`` is lower, e.g. ``"12 of 30"``, for the prose.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    claims.add(key, statement, source, measure, paired_difference(a, b), expect=expect,
               scale=scale)
    return f"{int((a < b).sum())} of {len(a)}"


def measures_table(records: dict[str, dict], pairs: dict[str, tuple[str, str]],
                   measures: tuple[str, ...] = ("loss", "last loss", "final test error"),
                   last: int = 50):
    """The claims "a is lower than b" of ``pairs`` (label -> run names) under several
    measures (keys of :data:`MEASURES`): the paired difference ``a - b`` (test errors in
    percentage points), the seeds where ``a`` is lower, and the verdict of
    :class:`growcore.claims.Claim`.

    Returns
    -------
    pandas.DataFrame
        One row per label and measure.
    """
    import pandas as pd

    rows = []
    for label, (a, b) in pairs.items():
        for measure in measures:
            scale = 100 if "error" in measure else 1
            va, vb = (scale * per_seed(records[r], measure, last) for r in (a, b))
            d = paired_difference(va, vb)
            verdict = Claim("measure", label, "", measure, d).verdict_words()
            rows.append({"claim: a lower than b": label,
                         "measure": MEASURES[measure].format(last=last)
                         + (" (pp)" if scale == 100 else ""),
                         "a - b": d.format("+.3g").split(" (n")[0],
                         "a lower": f"{int((va < vb).sum())} of {d.n}", "verdict": verdict})
    return pd.DataFrame(rows)


def final_table(records: dict[str, dict], names: list[str], last: int = 50) -> str:
    """The final values of runs two ways: the mean of the last ``last`` iterations and the
    value at the end (the loss at the last iteration; the test error of the final model,
    after the last update), with the per-seed difference end - mean; each as the mean over
    seeds ± the 95 % half-width, n seeds.

    Returns
    -------
    str
        A header and one line per run; test errors in %.
    """
    columns = [("loss", 1), ("last loss", 1), ("test error", 100), ("final test error", 100)]
    header = ["loss: last 50", "at the end", "end - last 50", "test %: last 50",
              "final model", "final - last 50"]
    lines = [f"{'run':24s} {'n':>3s} " + " ".join(f"{h:>16s}" for h in header)]
    for name in names:
        v = {m: scale * per_seed(records[name], m, last) for m, scale in columns}
        cells = [v["loss"], v["last loss"], v["last loss"] - v["loss"], v["test error"],
                 v["final test error"], v["final test error"] - v["test error"]]
        bands = [mean_interval(c) for c in cells]
        lines.append(f"{name:24s} {len(cells[0]):3d} " + " ".join(
            f"{e.mean:8.{digits}f} ± {_half(e):5.{digits}f}"
            for e, digits in zip(bands, [3, 3, 3, 1, 1, 1])))
    return "\n".join(lines)


def spikes(record: dict, at: int, threshold: float = 0.5) -> tuple[int, int]:
    """Seeds whose loss jumps up by more than ``threshold`` from one iteration to the next
    at or after iteration ``at`` (the insertion), and the number of seeds.

    Parameters
    ----------
    record : dict
        A result record (``metrics["loss"]`` [S][T]); for a run without insertion ``at`` is
        the insertion iteration of the runs it is compared with (the control).
    at : int
        The first iteration looked at.
    threshold : float
        The one-step rise of the loss counted as a spike.

    Returns
    -------
    count, n : int
    """
    loss = np.asarray(record["metrics"]["loss"], dtype=float)
    jump = np.diff(loss[:, at:], axis=1).max(axis=1, initial=-np.inf)
    return int((jump > threshold).sum()), len(loss)


def authors_stop(record: dict, target: float = 0.0) -> np.ndarray:
    """Per seed, the number of iterations the authors' code would have recorded: it checks
    the test error after every update and ends the run once it is ``<= target``
    (``wanted_testerror = 0.``), so it records the losses of iterations ``0..t-1`` with ``t``
    the first update count ``>= 1`` whose network reaches the target; ``T`` if none does.

    The record's ``test_error[t]`` is the error of the network after ``t`` updates (before
    update ``t``) and ``final_test`` the error after all ``T``.

    Returns
    -------
    numpy.ndarray of int, shape [S]
    """
    m = record["metrics"]
    after = np.concatenate([np.asarray(m["test_error"], dtype=float)[:, 1:],
                            np.asarray(m["final_test"], dtype=float)[:, None]], axis=1)
    reached = after <= target
    return np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, after.shape[1])


def authors_series(record: dict, metric: str = "loss", target: float = 0.0) -> np.ndarray:
    """``metric`` [S, T] with NaN from where the authors' early stopping
    (:func:`authors_stop`) would have ended each seed's run: the paper's figures average
    these with ``nanmean``, over the runs still going."""
    values = np.asarray(record["metrics"][metric], dtype=float).copy()
    stop = authors_stop(record, target)
    values[np.arange(values.shape[1])[None, :] >= stop[:, None]] = np.nan
    return values


def authors_mean(record: dict, metric: str = "loss", target: float = 0.0) -> np.ndarray:
    """The curve the paper's figures draw: at each iteration the mean of ``metric`` over the
    runs the authors' early stopping leaves going (:func:`authors_series`), NaN where none
    is; shape [T]."""
    values = authors_series(record, metric, target)
    going = (~np.isnan(values)).sum(axis=0)
    total = np.where(np.isnan(values), 0.0, values).sum(axis=0)
    return np.where(going > 0, total / np.maximum(going, 1), np.nan)


def early_stopping_table(records: dict[str, dict], names: list[str],
                         target: float = 0.0) -> str:
    """The loss at the last iteration as the paper's figures show it (the ``nanmean`` over
    the runs the authors' early stopping leaves going, with the 95 % interval over those
    runs) beside full training (every seed), and how many runs stopped, when (median).

    Returns
    -------
    str
        A header and one line per run.
    """
    lines = [f"{'run':24s} {'stopped':>8s} {'median stop':>11s} {'early stopping (n)':>23s} "
             f"{'full training (n)':>22s}"]
    for name in names:
        r = records[name]
        at_end = authors_series(r, "loss", target)[:, -1]
        going = ~np.isnan(at_end)
        stop = authors_stop(r, target)[~going]
        when = f"{int(np.median(stop)):11d}" if len(stop) else f"{'-':>11s}"
        shown = f"{'all stopped':>16s} ( 0)"
        if going.any():
            e = mean_interval(at_end[going])
            shown = f"{e.mean:8.3f} ± {_half(e):5.3f} ({e.n:2d})"
        full = mean_interval(per_seed(r, "last loss"))
        lines.append(f"{name:24s} {len(stop):3d}/{len(going):<4d} {when} {shown:>23s} "
                     f"{full.mean:8.3f} ± {_half(full):5.3f} ({full.n:2d})")
    return "\n".join(lines)


def early_stopping_words(record: dict, target: float = 0.0) -> str:
    """What the authors' early stopping (:func:`authors_stop`) does to a run's last point, in
    words: how many runs stop, the median iteration, and the mean loss at the last iteration
    over the runs still going beside the mean over all seeds."""
    at_end = authors_series(record, "loss", target)[:, -1]
    going = ~np.isnan(at_end)
    full = per_seed(record, "last loss").mean()
    n = len(going)
    if going.all():
        return f"no run of {n} stops, so the plotted curve is the mean over all seeds"
    stop = authors_stop(record, target)[~going]
    shown = (f"the plotted loss at the last iteration is {at_end[going].mean():.3f} over the "
             f"{int(going.sum())} runs still going" if going.any()
             else "no run is left at the last iteration")
    return (f"{len(stop)} of {n} runs stop (median at iteration {int(np.median(stop))}); "
            f"{shown}, against {full:.3f} over all seeds")


def float32_spiral_deviation(n_per_class: int = 300, r0: float = 0.5,
                             turns: float = 1.0) -> float:
    """Largest coordinate difference between growcore's spiral (float64) and the same
    formula in float32, as the authors' code evaluates it (the angle ``i * delta_phi`` and
    its cosine and sine in float32)."""
    from growcore.data import spiral_points

    X, _ = spiral_points(n_per_class, r0, turns)
    i = torch.arange(n_per_class, dtype=torch.float32)
    phi = i * torch.tensor(2 * np.pi * turns / n_per_class, dtype=torch.float32)
    r = torch.as_tensor(r0 + turns * np.arange(n_per_class) / n_per_class, dtype=torch.float32)
    arm = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1)
    X32 = torch.cat([-arm, arm]).double().numpy()
    return float(np.abs(X32 - X).max())

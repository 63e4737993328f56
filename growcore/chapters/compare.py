"""The comparison chapter (``notebooks/compare.ipynb``): the papers' answers on one benchmark.

Part 1, *where*: which width criterion finds an explicit bottleneck? Many small VGGs, each
with one layer narrower than both its neighbours (NAGN's definition
``n_{l-1} > n_l < n_{l+1}``, section 3), are trained briefly on CIFAR-10 through the driver;
then every width criterion scores every width site of the trained network, and each
criterion is judged by how well its scores single out the bottleneck: the top-1 hit rate and
the ROC AUC over the network's sites, with bootstrap intervals over networks, and paired
differences between criteria (the same networks score under every criterion). In depth:
students that are a known teacher MLP less one hidden layer, whose depth sites SensLI's
merit, a gradient norm and random scores rank against the missing layer's site (and
against the site where an inserted layer realises the largest gain).

Part 2, *how*: which initialiser of new units helps most? The same seed network (a student of
GradMax's teacher-student task, section 4.1) grows on the same schedule of sites and amounts
under every width initialiser of the registry; the training loss and the test MSE after the
growth phase and at the end are compared with Random's by paired differences over seeds (the
same teacher, data and initial student per seed; all seeds as one batched program). In
depth: the same seed ResNet on CIFAR-10 gets one block at the end of one stage at one fixed
step, started by every depth initialiser of the registry (identity, block copy, moment
growth, He initialisation); the training loss right after the insertion, a few steps after
and at the end, and the test error, are compared with the identity block's by paired
differences (the same initial network and batches per seed), and the loss of the insertion
step's batch before and after the insertion tells which initialisers keep the function.

Parts 3 and 4, *when* and all together: timings at a fixed where and how, and a factorial of
when x where x how with main effects, two-way interaction contrasts, the variance explained
with and without interactions, and the best combination chosen on held-out seeds.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from growcore.claims import VERDICTS, Claim
from growcore.data import Split
from growcore.images import DataError, DataNotFoundError, dataset_sizes
from growcore.models.sites import Proposal, width_sites
from growcore.params import ParameterError, Spec, check_model, require
from growcore.params import validate as validate_all
from growcore.registry import entry, names
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES
from growcore.stats import Probe
from growcore.uncertainty import Estimate, bootstrap_interval, paired_difference
from growcore.where import LargestSingularValue
from growcore.where.baselines import weight_gradient_norms
from growcore.where.nagn import relative_contrast

PRESETS = ("smoke", "lab", "cpu", "gpu")
INITIALISERS = tuple(names("how", "width"))  # zero, random, kaiming_new, gradmax, ...
REFERENCE = "random"  # the initialiser every other one is compared with, seed by seed
# one colour per method across the chapter's figures (seaborn's colorblind palette; the
# controls grey)
COLOURS = {"nagn": "#0173b2", "singular_value": "#de8f05", "singular_value_exact": "#d55e00",
           "gradient_norm": "#029e73", "random_width": "#949494",
           "zero": "#cc78bc", "random": "#949494", "kaiming_new": "#0173b2",
           "gradmax": "#de8f05", "gradmax_opt": "#d55e00", "firefly_opt": "#029e73"}


def _nagn(record: dict, i: int, model, sites, probe) -> list[float]:
    """NAGN's contrast ``r_l`` (eq. 2) at every width site, from the profile the run's
    observer read over its last epoch of training batches (the output layer is the
    profile's last entry and not a site)."""
    profile = record["metrics"]["observed"][i]["nagn"]
    return relative_contrast(torch.tensor(profile))[:len(sites)].tolist()


def _singular_value(record: dict, i: int, model, sites, probe) -> list[float]:
    """GradMax's predicted gradient norm of one new unit, ``c sigma_1`` (the width analogue
    of SensLI's merit: the Lagrange multiplier of the constraint ``W_new = 0`` of a virtual
    unit is the gradient of its incoming weights)."""
    scores = LargestSingularValue(k=1).scores(model, sites, probe)
    return [scores[site.producer] for site in sites]


def _singular_value_exact(record: dict, i: int, model, sites, probe) -> list[float]:
    """The same score with GradMax's exact statistics (``statistics="virtual"``: through
    the BatchNorm in train mode and the max pooling between producer and consumer, which the
    default statistic treats as the identity and as average pooling)."""
    exact = LargestSingularValue(k=1, conv_matrix="weight_gradient", statistics="virtual")
    scores = exact.scores(model, sites, probe)
    return [scores[site.producer] for site in sites]


def _gradient_norm(record: dict, i: int, model, sites, probe) -> list[float]:
    """Norm of the gradient of the producer's weights on the training data."""
    scores = weight_gradient_norms(model, sites, probe)
    return [scores[site.producer] for site in sites]


def _random(record: dict, i: int, model, sites, probe) -> list[float]:
    """Scores drawn at random (the control: AUC 0.5, hit rate one over the sites)."""
    generator = torch.Generator().manual_seed(10_000 + record["seeds"][i])
    return torch.rand(len(sites), generator=generator, dtype=torch.float64).tolist()


# width criteria by the registry's names (singular_value_exact: the registry's singular_value
# with GradMax's exact statistics) -> the scores they rank width sites by
CRITERIA = {"nagn": _nagn, "singular_value": _singular_value,
            "singular_value_exact": _singular_value_exact, "gradient_norm": _gradient_norm,
            "random_width": _random}

PARAMETERS = {
    "preset": Spec(str, choices=PRESETS),
    "n_networks": Spec(int, minimum=2),
    "stage_widths": Spec(list, item=int, minimum=1, min_length=2),
    "bottleneck_widths": Spec(list, item=int, minimum=1, min_length=1),
    "max_blocks": Spec(int, minimum=1),
    "criteria": Spec(list, item=str, choices=tuple(CRITERIA), min_length=1),
    "n_train": Spec(int, minimum=1),
    "n_test": Spec(int, minimum=1),
    "score_examples": Spec(int, minimum=1),
    "epochs": Spec(float, minimum=0.1),
    "batch_size": Spec(int, minimum=1),
    "lr": Spec(float, greater_than=0),
    "weight_decay": Spec(float, minimum=0),
    "cifar10_archive": Spec(str),
    "device": Spec(str, choices=DEVICES),
    "threads": Spec(int, minimum=1),
    "progress": Spec(bool),
    # part 2, how
    "initialisers": Spec(list, item=str, choices=INITIALISERS, min_length=1),
    "how_seeds": Spec(int, minimum=2),
    "how_teacher": Spec(list, item=int, minimum=1, min_length=3),
    "how_start_hidden": Spec(int, minimum=1),
    "how_units": Spec(int, minimum=1),
    "how_growths": Spec(int, minimum=1),
    "how_interval": Spec(int, minimum=1),
    "how_final_steps": Spec(int, minimum=1),
    "how_points": Spec(int, minimum=10),
    "how_lr": Spec(float, greater_than=0),
    "norm_scale": Spec(float, greater_than=0),
    "opt_steps": Spec(int, minimum=1),
    "firefly_steps": Spec(int, minimum=1),
}


def validate(namespace: dict) -> dict:
    """Check the notebook's parameters (picked by name from ``namespace``) before compute."""
    from growcore.chapters import compare_cifar  # part 4 on CIFAR-10 (it imports this module)

    p = validate_all({k: namespace[k] for k in PARAMETERS if k in namespace}, PARAMETERS)
    require(len(set(p["criteria"])) == len(p["criteria"]), "criteria",
            f"names each criterion once; got {p['criteria']}")
    require(max(p["bottleneck_widths"]) < min(p["stage_widths"]), "bottleneck_widths",
            f"must all be narrower than every stage width {p['stage_widths']} (an explicit "
            f"bottleneck is narrower than both neighbours); got {p['bottleneck_widths']}")
    require(sorted(p["stage_widths"]) == p["stage_widths"], "stage_widths",
            f"must not decrease (so that the one bottleneck is the only explicit one); got "
            f"{p['stage_widths']}")
    require(min(p["stage_widths"]) > 10, "stage_widths",
            "must be wider than the 10 classes (the last layer before the head would be a "
            f"bottleneck against the output); got {p['stage_widths']}")
    require(p["score_examples"] <= p["n_train"], "score_examples",
            f"must not exceed n_train ({p['n_train']}); got {p['score_examples']}")
    require(p["batch_size"] <= p["n_train"], "batch_size",
            f"must not exceed n_train ({p['n_train']}); got {p['batch_size']}")
    require(len(set(p["initialisers"])) == len(p["initialisers"]), "initialisers",
            f"names each initialiser once; got {p['initialisers']}")
    require(REFERENCE in p["initialisers"], "initialisers",
            f"must include {REFERENCE!r}, the reference of the paired differences; got "
            f"{p['initialisers']}")
    require(len(p["how_teacher"]) == 3, "how_teacher",
            f"is a teacher of one hidden layer, [inputs, hidden, outputs]; got {p['how_teacher']}")
    require(p["how_final_steps"] > p["how_interval"], "how_final_steps",
            f"must exceed how_interval ({p['how_interval']}): the results after growth are "
            f"read one interval after the last growth; got {p['how_final_steps']}")
    _check_data(p)
    validate_depth(p)  # part 1 in depth
    validate_depth_how(p)  # part 2 in depth
    p = validate_growth(p)  # parts 3 and 4
    p.update(compare_cifar.validate_cifar(p))  # part 4 on CIFAR-10
    return p


def _check_data(p: dict) -> None:
    """The split against the CIFAR-10 images at hand, and the largest network of the
    benchmark against the 32x32 input (a forward pass), before any compute."""
    try:
        n_train, n_test = dataset_sizes("cifar10", None, p["cifar10_archive"] or None)
    except (DataNotFoundError, DataError) as error:
        raise ParameterError(f"parameter 'cifar10_archive': {error}") from error
    require(p["n_train"] <= n_train, "n_train",
            f"must be at most the {n_train} CIFAR-10 training images; got {p['n_train']}")
    require(p["n_test"] <= n_test, "n_test",
            f"must be at most the {n_test} CIFAR-10 test images; got {p['n_test']}")
    widest = [[w] * p["max_blocks"] for w in p["stage_widths"]]
    check_model("stage_widths", p["stage_widths"], "vgg",
                {"config": widest, "head": "flatten"}, (3, 32, 32), 10)


def notebook_parameters(preset: str) -> dict:
    """The notebook's parameters under ``preset`` (the parameters cell's defaults updated by
    the preset file's section, as papermill injects them), validated."""
    return validate(runner_parameters("compare", preset))


def bottleneck_network(p: dict, index: int) -> tuple[list[list[int]], int]:
    """Network ``index`` of the benchmark: conv widths per stage and the bottleneck's site.

    Stage ``s`` has 1 to ``max_blocks`` convolutions of ``stage_widths[s]`` channels; one
    convolution that has a successor (not the last) is narrowed to a width of
    ``bottleneck_widths``. The widths do not decrease elsewhere, so this is the network's
    only explicit bottleneck (``n_{l-1} > n_l < n_{l+1}``; the first layer cannot be one).
    Drawn from a generator of ``index`` alone, so network ``i`` is the same in every preset
    with the same widths.
    """
    g = np.random.default_rng(index)
    blocks = g.integers(1, p["max_blocks"] + 1, size=len(p["stage_widths"]))
    config = [[w] * int(n) for w, n in zip(p["stage_widths"], blocks)]
    flat = sum(len(stage) for stage in config)
    site = int(g.integers(1, flat - 1))  # a predecessor and a successor
    narrow = int(g.choice(p["bottleneck_widths"]))
    stage = next(s for s in range(len(config)) if site < sum(map(len, config[:s + 1])))
    config[stage][site - sum(map(len, config[:stage]))] = narrow
    return config, site


def experiments(p: dict) -> dict[str, dict]:
    """The benchmark's networks, name -> driver configuration: each trained without growth
    (AdamW, constant rate) with NAGN's observer reading the last epoch's batches."""
    runs = {}
    for index in range(p["n_networks"]):
        config, _ = bottleneck_network(p, index)
        data = {"name": "cifar10", "n_train": p["n_train"], "n_test": p["n_test"],
                "split_seed": 0}
        if p["cifar10_archive"]:
            data["archive"] = p["cifar10_archive"]
        runs[f"net {index}"] = {
            "name": f"net {index}", "seeds": [index], "data": data,
            "model": {"name": "vgg", "config": config, "head": "flatten",
                      "activation": "relu1"},  # f'(0) = 1: GradMax's statistic applies
            "train": {"epochs": p["epochs"], "batch_size": p["batch_size"], "lr": p["lr"],
                      "optimizer": "adamw", "weight_decay": p["weight_decay"],
                      "observe": {"nagn": {"name": "nagn"}}}}
    return runs


def site_scores(record: dict, model, split, criteria: list[str],
                examples: int | None = None) -> dict[str, list[float]]:
    """Criterion -> its score of every width site of a trained network (forward order).

    ``record`` is the driver's record of the network's run and ``model`` its final model;
    the data-driven criteria read the first ``examples`` training images (all by default)
    through one probe, GradMax's "large minibatch" (section 3).
    """
    unknown = sorted(set(criteria) - set(CRITERIA))
    if unknown:
        raise ParameterError(f"criteria {unknown} unknown; valid: {sorted(CRITERIA)}")
    subset = Split(split.X_train[:examples], split.y_train[:examples])
    sites, probe = width_sites(model), Probe(subset, "cross_entropy")
    return {name: CRITERIA[name](record, 0, model, sites, probe) for name in criteria}


def example_network_scores(preset: str = "smoke", index: int = 0,
                           criteria: list[str] | None = None) -> tuple[dict, int]:
    """Train network ``index`` of the benchmark under ``preset`` (by default the smoke
    preset's sizes: seconds), score its width sites with ``criteria`` (default the preset's)
    and return ``(criterion -> scores, bottleneck site)``; nothing is saved. The one setup
    call of the chapter's exercises on the *where* part."""
    from growcore.driver import load_data, run_experiment

    p = notebook_parameters(preset)
    config = experiments({**p, "n_networks": index + 1})[f"net {index}"]
    split = load_data(config["data"])
    record = run_experiment(config, split=split, device="cpu", progress=False, save=False,
                            keep_models=True)
    scores = site_scores(record, record["final_models"][0], split,
                         criteria or p["criteria"], p["score_examples"])
    return scores, bottleneck_network(p, index)[1]


def detection(scores: list[float], bottleneck: int) -> dict[str, float]:
    """How one criterion's scores of a network's sites find its one bottleneck: ``hit``
    (1 if the bottleneck scores highest, ties shared) and ``auc`` (the ROC AUC over the
    sites: the fraction of other sites the bottleneck outscores, ties counted half)."""
    from sklearn.metrics import roc_auc_score

    labels = np.zeros(len(scores), dtype=int)
    labels[bottleneck] = 1
    top = np.flatnonzero(np.asarray(scores) == max(scores))
    return {"hit": float(bottleneck in top) / len(top),
            "auc": float(roc_auc_score(labels, scores))}


def detection_estimates(scored, criteria: list[str]) -> dict[str, dict[str, Estimate]]:
    """Criterion -> ``{"hit": ..., "auc": ..., "hit_over_chance": ...}``: the mean over the
    networks of ``scored`` (one row per network and criterion, as :func:`detection` gives
    them) with its percentile bootstrap interval over networks. ``hit_over_chance`` is the
    hit minus one over the network's number of sites (a random ranking's expected hit)."""
    out = {}
    for criterion in criteria:
        part = scored[scored.criterion == criterion]
        out[criterion] = {"hit": bootstrap_interval(part.hit, seed=1),
                          "auc": bootstrap_interval(part.auc, seed=2),
                          "hit_over_chance": bootstrap_interval(part.hit - 1 / part.sites,
                                                                seed=4)}
    return out


def paired_auc(scored, a: str, b: str) -> Estimate:
    """The AUC of criterion ``a`` minus that of ``b`` on the same networks, mean over the
    networks with its bootstrap interval (the networks resampled in pairs)."""
    auc = scored.pivot(index="network", columns="criterion", values="auc")
    return bootstrap_interval(auc[a] - auc[b], seed=3)


def detection_table(estimates: dict[str, dict[str, Estimate]]):
    """The table of :func:`detection_estimates`: per criterion n, hit rate and AUC, each as
    ``mean [low, high]``."""
    import pandas as pd

    rows = [{"criterion": c, "n": e["auc"].n, "hit rate": e["hit"].format(".2f").split(" (n")[0],
             "ROC AUC": e["auc"].format(".2f").split(" (n")[0]} for c, e in estimates.items()]
    return pd.DataFrame(rows).set_index("criterion")


def bootstrap_errorbar(values) -> tuple[float, float]:
    """The bootstrap interval of the mean of ``values``, as seaborn's ``errorbar=`` callable
    wants it (the interval of the chapter's tables, so figure and table agree)."""
    e = bootstrap_interval(values, seed=2)
    return e.low, e.high


def new_unit_gradient(model, site, how, probe: Probe) -> float:
    """Widen ``site`` of ``model`` by one unit filled by ``how`` and return the norm of the
    gradient of the new unit's incoming weights on the probe's data (by autograd)."""
    from growcore.losses import LOSSES
    from growcore.ops import widen

    grown = widen(model, [Proposal(site, 1)], how, probe).model
    grown.zero_grad()
    X, y = probe.split.X_train, probe.split.y_train
    LOSSES[probe.loss](grown(X)[None], y).sum().backward()
    return float(grown.get_submodule(site.producer).weight.grad[-1].norm())


# -- part 2: how --------------------------------------------------------------------------

HOW_MEASURES = ("training loss after growth", "test MSE after growth",
                "training loss at the end", "test MSE at the end")


def how_schedule(p: dict) -> dict:
    """The growth schedule every initialiser shares: growth iterations, the iteration at
    which the results "after growth" are read (one interval after the last growth) and the
    total number of iterations."""
    interval, growths = p["how_interval"], p["how_growths"]
    return {"growths": [interval * (k + 1) for k in range(growths)],
            "after": interval * (growths + 1),
            "iterations": interval * growths + p["how_final_steps"]}


def how_experiments(p: dict) -> dict[str, dict]:
    """One driver configuration per initialiser, name -> configuration: the student
    ``[inputs, how_start_hidden, outputs]`` of the teacher ``how_teacher`` (GradMax section
    4.1) grows ``how_units`` hidden units every ``how_interval`` steps, ``how_growths``
    times, then trains ``how_final_steps`` more; full-batch gradient descent on the MSE.

    Seed s fixes the teacher and the data (``data.per_seed``) and the initial student
    (``train.init_seed``), so every initialiser starts each seed from the same network with
    the same data; all seeds train as one batched program (``model.seed_batched``). New
    units' outgoing weights (where the initialiser sets them) have ``norm_scale`` times the
    mean norm of the existing ones, as in the GradMax chapter; GradMaxOpt takes ``opt_steps``
    Adam steps, Firefly-Opt ``firefly_steps``.
    """
    schedule = how_schedule(p)
    runs = {}
    for how in p["initialisers"]:
        spec = {"name": how}
        if how in ("random", "gradmax", "gradmax_opt", "firefly_opt"):
            spec["scale"] = p["norm_scale"]
        if how in ("gradmax_opt", "firefly_opt"):
            spec["steps"] = p["opt_steps" if how == "gradmax_opt" else "firefly_steps"]
        runs[f"how {how}"] = {
            "name": f"how {how}", "seeds": list(range(p["how_seeds"])),
            "data": {"name": "teacher_student", "per_seed": True,
                     "teacher": list(p["how_teacher"]), "n_points": p["how_points"]},
            "model": {"name": "mlp", "hidden": [p["how_start_hidden"]], "activation": "relu1",
                      "seed_batched": True},
            "train": {"iterations": schedule["iterations"], "lr": p["how_lr"], "loss": "mse",
                      "eval_every": p["how_interval"], "init_seed": 0},
            "plan": {"when": {"name": "every", "interval": p["how_interval"],
                              "count": p["how_growths"]},
                     "where": {"name": "fixed_sites", "units": {"layers.0": p["how_units"]}},
                     "how": spec}}
    return runs


def run_how(p: dict, directory=None, preset: str = "custom", device: str = "cpu",
            progress: bool = False, save: bool = True) -> dict[str, dict]:
    """Run :func:`how_experiments` through the driver: initialiser -> its record."""
    from growcore.driver import run_experiment

    return {config["plan"]["how"]["name"]: run_experiment(
                config, directory=directory, preset=preset, device=device, progress=progress,
                save=save)
            for config in how_experiments(p).values()}


def how_outcomes(records: dict[str, dict], p: dict):
    """One row per initialiser and seed: the measures of :data:`HOW_MEASURES`, read from
    each initialiser's record (``records``: initialiser -> record of
    :func:`how_experiments`' run). "After growth": the full-batch training loss and the test
    MSE one interval after the last growth; "at the end": those of the final model."""
    import pandas as pd

    after = how_schedule(p)["after"]
    rows = []
    for how, record in records.items():
        m = record["metrics"]
        for i, seed in enumerate(m["seed"]):
            test = {e["iteration"]: e["test_error"] for e in m["evals"][i]}
            rows.append({"initialiser": how, "seed": seed,
                         "training loss after growth": m["loss"][i][after],
                         "test MSE after growth": test[after],
                         "training loss at the end": m["final_train"][i],
                         "test MSE at the end": m["final_test"][i]})
    return pd.DataFrame(rows)


def _against(outcomes, reference: str):
    """(initialiser, its rows, the reference's rows) for every initialiser but the
    reference, both indexed by seed in the same order (the pairs)."""
    base = outcomes[outcomes.initialiser == reference].set_index("seed")
    for how in outcomes.initialiser.unique():
        if how != reference:
            yield how, outcomes[outcomes.initialiser == how].set_index("seed").loc[base.index], base


def how_differences(outcomes, reference: str = REFERENCE, measures=HOW_MEASURES
                    ) -> dict[tuple[str, str], Estimate]:
    """(initialiser, measure) -> the paired difference initialiser minus ``reference`` of
    each of ``measures`` over the seeds (the same seed network, data and schedule), with its
    t interval; negative: lower than the reference."""
    out = {}
    for how, part, base in _against(outcomes, reference):
        for measure in measures:
            out[how, measure] = paired_difference(part[measure], base[measure])
    return out


def how_difference_rows(outcomes, reference: str = REFERENCE, measures=HOW_MEASURES):
    """The per-seed differences of ``measures`` against ``reference`` in long form
    (initialiser, seed, measure, difference), for a point plot of the paired differences."""
    import pandas as pd

    rows = []
    for how, part, base in _against(outcomes, reference):
        for measure in measures:
            rows += [{"initialiser": how, "seed": seed, "measure": measure, "difference": d}
                     for seed, d in (part[measure] - base[measure]).items()]
    return pd.DataFrame(rows)


def how_table(differences: dict[tuple[str, str], Estimate], outcomes,
              reference: str = REFERENCE, measures: tuple[str, ...] = HOW_MEASURES):
    """The paired differences as a table: one row per initialiser, per measure of
    ``measures`` the mean difference ``[low, high]`` and in how many seeds the initialiser
    is lower."""
    import pandas as pd

    rows = {}
    for how, part, base in _against(outcomes, reference):
        for measure in measures:
            e, lower = differences[how, measure], int((part[measure] < base[measure]).sum())
            rows.setdefault(how, {"n": e.n})[measure] = (
                f"{e.mean:+.3g} [{e.low:+.3g}, {e.high:+.3g}], lower in {lower}")
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(f"minus {reference}")


def how_words(differences: dict[tuple[str, str], Estimate], measure: str,
              reference: str = REFERENCE) -> str:
    """In words, which initialisers the paired differences of ``measure`` put below the
    reference, which above, and which they cannot tell from it (the interval contains 0)."""
    groups: dict[str, list[str]] = {verdict: [] for verdict in VERDICTS}
    for (how, m), e in differences.items():
        if m == measure:  # "lower than the reference", judged as a claim would be
            verdict = Claim("lower", f"{how} is lower", "", measure, e, expect="below").verdict
            groups[verdict].append(f"{how} ({e.mean:+.3g} [{e.low:+.3g}, {e.high:+.3g}])")
    parts = [f"lower than {reference}: {', '.join(groups['confirmed']) or 'none'}",
             f"higher: {', '.join(groups['contradicted']) or 'none'}",
             f"not resolved (the interval contains 0): "
             f"{', '.join(groups['not resolved']) or 'none'}"]
    n = next(iter(differences.values())).n
    return f"{measure} (n = {n} seeds): " + "; ".join(parts)



def effect_words(effects: dict[tuple[str, str], Estimate], factor: str) -> str:
    """In words, the main effects of ``factor``'s levels against its simple baseline
    (:data:`BASELINES`), from :func:`main_effects` (as :func:`how_words` puts them)."""
    words = {(level, "e"): e for (f, level), e in effects.items() if f == factor}
    return how_words(words, "e", reference=BASELINES[factor]).replace(
        "e (n =", f"{factor} (n =", 1)


def pareto_figure(points, references, whens: list[str], wheres: list[str], hows: list[str]):
    """Final test error against training GFLOPs, one point per combination (``points``:
    :func:`cell_summary` with a ``GFLOPs`` column; grey bars its interval), one panel per
    timing, colour the where-criterion, marker the initialiser, the Pareto front of all
    combinations dashed, and the static networks of ``references`` (index: their label;
    columns ``test_error``, ``GFLOPs``) in black."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, len(whens), figsize=(5 * len(whens) + 1.5, 4), sharey=True,
                             squeeze=False)
    markers = dict(zip(hows, ["o", "s", "^", "v", "P", "X"]))
    front = points[points.pareto].sort_values("GFLOPs")
    for ax, when in zip(axes[0], whens):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # no overlapping labels
        part = points[points["when"] == when]
        ax.errorbar(part.GFLOPs, part.test_error, yerr=[part.test_error - part.low,
                    part.high - part.test_error], fmt="none", ecolor="0.7", lw=0.8, zorder=1)
        sns.scatterplot(data=part, x="GFLOPs", y="test_error", hue="where", style="how",
                        hue_order=wheres, style_order=hows, markers=markers,
                        palette={c: COLOURS[c] for c in wheres}, s=70, ax=ax,
                        legend=ax is axes[0][-1], zorder=2)
        ax.plot(front.GFLOPs, front.test_error, color="0.4", lw=1, ls="--", zorder=0,
                label="Pareto front (all cells)")
        for label, row in references.iterrows():
            ax.scatter(row.GFLOPs, row.test_error, color=COLOURS["static"],
                       marker={"small": "<", "large": ">"}.get(label, "*"), s=80, zorder=3)
            ax.annotate(f"static {label}", (row.GFLOPs, row.test_error), fontsize="x-small",
                        xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel="training GFLOPs (log)", ylabel="final test error", title=f"when: {when}")
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


# -- parts 3 and 4: when, and all together -------------------------------------------------
#
# The timing rules read classification errors (FRAGrow's ORL is a gap of accuracies in
# percentage points, NAGN's window a mean of validation accuracies) and a validation set;
# the training loop records the training error for the cross-entropy loss only. So parts 3
# and 4 label the teacher's inputs by classes: the class of x is the teacher output that is
# largest after each output is standardised over the inputs (ten classes of about equal
# size), and every seed's training, validation and test sets hold equally many points of
# each class.

CLASSES = 10  # the teacher's outputs (how_teacher[-1] must be 10)
TIMINGS = ("every", "periodic", "convergent", "validation_window", "fragrow")
TIMING_REFERENCE = "every"  # GradMax's fixed schedule: what every other timing is paired with
DETERMINISTIC = ("every", "periodic")  # timings that read nothing of the run
FACTOR_WHERE = ("nagn", "singular_value", "random_width", "gradient_norm")
BASELINES = {"when": "every", "where": "random_width", "how": "random"}  # the simple ones
FACTORS = ("when", "where", "how")
# each paper's own combination, as far as it applies to width growth of this MLP: GradMax
# (fixed schedule, the singular value it proposes for where, its initialiser); NAGN (its
# contrast and its initialiser KaimingNew, on the fixed schedule: its validation window is
# part 3's question); FRAGrow grows depth, so its timing is paired with GradMax's where and how
PAPER_CELLS = {"GradMax": ("every", "singular_value", "gradmax"),
               "NAGN": ("every", "nagn", "kaiming_new"),
               "FRAGrow": ("fragrow", "singular_value", "gradmax")}
REGIMES = ("overfitting", "underfitting")
COLOURS.update({"every": "#de8f05", "periodic": "#fbafe4", "convergent": "#56b4e9",
                "validation_window": "#0173b2", "fragrow": "#ca9161", "static": "#000000"})
WHEN_MEASURES = {"test_error": "final test error", "flops": "training FLOPs",
                 "train_error": "final training error"}

PARAMETERS.update({
    "timings": Spec(list, item=str, choices=TIMINGS, min_length=1),
    "when_seeds": Spec(int, minimum=2),
    "when_overfit_points": Spec(int, minimum=CLASSES),
    "when_underfit_points": Spec(int, minimum=CLASSES),
    "when_val_points": Spec(int, minimum=CLASSES),
    "when_test_points": Spec(int, minimum=CLASSES),
    "when_lr": Spec(float, greater_than=0),
    "when_eval_every": Spec(int, minimum=1),
    "fragrow_alpha": Spec(float),
    "convergent_patience": Spec(int, minimum=1),
    "factor_when": Spec(list, item=str, choices=TIMINGS, min_length=1),
    "factor_where": Spec(list, item=str, choices=FACTOR_WHERE, min_length=1),
    "factor_how": Spec(list, item=str, choices=INITIALISERS, min_length=1),
    "factorial_seeds": Spec(int, minimum=2),
    "factorial_hidden": Spec(list, item=int, minimum=1, min_length=2),
    "factorial_points": Spec(int, minimum=CLASSES),
})


PARAMETERS.update({  # part 4 on CIFAR-10 (growcore.chapters.compare_cifar)
    "cifar_factorial_when": Spec(list, item=str, choices=TIMINGS, min_length=1),
    "cifar_factorial_where": Spec(list, item=str, choices=FACTOR_WHERE, min_length=1),
    "cifar_factorial_how": Spec(list, item=str, choices=INITIALISERS, min_length=1),
    "cifar_factorial_seeds": Spec(int, minimum=2),
    "cifar_factorial_n_train": Spec(int, minimum=1),
    "cifar_factorial_n_val": Spec(int, minimum=1),
    "cifar_factorial_n_test": Spec(int, minimum=1),
    "cifar_factorial_augment": Spec(bool),
    "cifar_factorial_epochs": Spec(int, minimum=1),
    "cifar_factorial_final_epochs": Spec(float, minimum=0),
    "cifar_factorial_evals_per_epoch": Spec(int, minimum=1),
    "cifar_factorial_batch_size": Spec(int, minimum=1),
    "cifar_factorial_lr": Spec(float, greater_than=0),
    "cifar_factorial_weight_decay": Spec(float, minimum=0),
    "cifar_factorial_widths": Spec(list, item=int, minimum=1, min_length=2),
    "cifar_factorial_units": Spec(int, minimum=1),
    "cifar_factorial_growths": Spec(int, minimum=1),
    "cifar_factorial_grown_size": Spec(list, item=str, choices=tuple(PAPER_CELLS)),
})


def validate_growth(p: dict) -> dict:
    """The cross-parameter checks of parts 3 and 4 (called by :func:`validate`), then every
    configuration of both parts built and checked by the driver (data, model, plan) for its
    first seed, before any training."""
    for name in ("timings", "factor_when", "factor_where", "factor_how"):
        require(len(set(p[name])) == len(p[name]), name, f"names each once; got {p[name]}")
    require(TIMING_REFERENCE in p["timings"], "timings",
            f"must include {TIMING_REFERENCE!r}, the reference of the paired differences; "
            f"got {p['timings']}")
    require(p["how_teacher"][-1] == CLASSES, "how_teacher",
            f"parts 3 and 4 label points by the largest of the teacher's {CLASSES} outputs: "
            f"its last width must be {CLASSES}; got {p['how_teacher']}")
    for name in ("when_overfit_points", "when_underfit_points", "when_val_points",
                 "when_test_points", "factorial_points"):
        require(p[name] % CLASSES == 0, name,
                f"must be a multiple of the {CLASSES} classes (equally many points of each "
                f"class); got {p[name]}")
    require(p["when_overfit_points"] < p["when_underfit_points"], "when_overfit_points",
            f"must be below when_underfit_points ({p['when_underfit_points']}): the "
            f"overfitting regime has fewer training points; got {p['when_overfit_points']}")
    require(p["how_final_steps"] < when_iterations(p), "how_final_steps",
            "the minimum fine-tuning of the epoch timings must be shorter than the run")
    for config, split in _first_configs(p):
        from growcore.driver import run_experiment

        run_experiment(config, split=split, device="cpu", progress=False, save=False,
                       check_only=True)
    return p


def when_iterations(p: dict) -> int:
    """Iterations of every run of parts 3 and 4: part 2's schedule (growths every
    ``how_interval`` steps, ``how_growths`` times, then ``how_final_steps``)."""
    return how_schedule(p)["iterations"]


def classification_split(p: dict, seed: int, n_train: int):
    """Seed ``seed``'s data of parts 3 and 4: the teacher ``how_teacher`` of seed ``seed``
    (GradMax section 4.1: weights U[-1, 1], inputs N(0, 1)) labels its inputs by the largest
    of its outputs, each standardised over the drawn inputs (ten classes of about equal
    size); the test set (``when_test_points``), the validation set (``when_val_points``)
    and the ``n_train`` training points each hold equally many points of every class. The
    test and validation sets do not depend on ``n_train`` (up to the largest training set
    of the parameters), and a smaller training set is the start of a larger one (the
    regimes differ only in how many points train)."""
    from growcore.data import Split, teacher_student

    sizes = (p["when_test_points"], p["when_val_points"], n_train)
    largest = max(p["when_underfit_points"], p["factorial_points"], n_train)
    pool = 3 * (p["when_test_points"] + p["when_val_points"] + largest)  # not of n_train
    split, _ = teacher_student(list(p["how_teacher"]), pool, seed)
    X = torch.cat([split.X_train, split.X_test])
    Y = torch.cat([split.y_train, split.y_test])
    labels = ((Y - Y.mean(0)) / Y.std(0)).argmax(1)
    members = [torch.nonzero(labels == k).flatten() for k in range(CLASSES)]
    need = sum(size // CLASSES for size in sizes)
    short = [k for k in range(CLASSES) if len(members[k]) < need]
    if short:
        raise ParameterError(f"seed {seed}: the teacher labels too few of {2 * pool} points "
                             f"with class(es) {short} for {need} per class")
    parts, start = [], 0
    for size in sizes:
        per = size // CLASSES
        parts.append(torch.cat([m[start:start + per] for m in members]))
        start += per
    test, val, train = parts
    return Split(X[train], labels[train], X[test], labels[test], X[val], labels[val])


def timing_spec(p: dict, timing: str) -> dict:
    """The registry spec of ``timing`` with the chapter's schedule: ``how_growths`` growths
    in ``when_iterations`` full-batch steps (an epoch is one step), the last at least
    ``how_final_steps`` before the end (FRAGrow's ``E_F_min``; ``I_max`` is then
    ``how_interval``, so the periodic timing grows when the fixed schedule does)."""
    n, final = p["how_growths"], p["how_final_steps"]
    epoch = {"n_blocks": n, "finetune_min": final}
    return {"every": {"name": "every", "interval": p["how_interval"], "count": n},
            "periodic": {"name": "periodic", **epoch},
            "convergent": {"name": "convergent", **epoch,
                           "patience": p["convergent_patience"]},
            "validation_window": {"name": "validation_window", "max_growths": n},
            "fragrow": {"name": "fragrow", **epoch, "alpha": p["fragrow_alpha"]},
            }[timing]


def where_spec(p: dict, where: str) -> dict:
    """The registry spec of a where-criterion: ``how_units`` units at one site per growth
    (NAGN: its own increments at every site, as the paper)."""
    units = p["how_units"]
    return {"fixed_sites": {"name": "fixed_sites", "units": {"layers.0": units}},
            "singular_value": {"name": "singular_value", "k": units, "n_sites": 1,
                               "scale": p["norm_scale"]},
            "gradient_norm": {"name": "gradient_norm", "k": units, "n_sites": 1},
            "random_width": {"name": "random_width", "k": units, "n_sites": 1},
            "nagn": {"name": "nagn"}}[where]


def how_spec(p: dict, how: str) -> dict:
    """The registry spec of a width initialiser, as part 2 sets it."""
    spec = {"name": how}
    if how in ("random", "gradmax", "gradmax_opt", "firefly_opt"):
        spec["scale"] = p["norm_scale"]
    if how in ("gradmax_opt", "firefly_opt"):
        spec["steps"] = p["opt_steps" if how == "gradmax_opt" else "firefly_steps"]
    return spec


def runs_batched(timing: str | None, where: str | None) -> bool:
    """Whether the seeds of a run train as one batched program: only where no seed's
    decision can differ from another's. A seed-batched net shares one when-policy (it reads
    the seeds' mean errors), so an adaptive timing runs each seed alone; a criterion that
    chooses among sites may choose differently per seed (the driver then regroups the seeds,
    which it cannot do for data given per seed); NAGN refuses seed-batched nets."""
    return (timing is None or timing in DETERMINISTIC) and where in (None, "fixed_sites")


def growth_config(p: dict, name: str, seeds: list[int], n_train: int, hidden: list[int],
                  timing: str | None = None, where: str | None = None,
                  how: str | None = None) -> dict:
    """One driver configuration of parts 3 and 4 (without ``timing``: a static network).
    The data section names what :func:`classification_split` builds (the run gets it as its
    split); seed s's student is initialised after ``torch.manual_seed(s)``, the same in
    every configuration; full-batch gradient descent on the cross-entropy, evaluations (the
    validation error the timings read) every ``when_eval_every`` steps, the test error once
    at the end."""
    config = {
        "name": name, "seeds": list(seeds),
        "data": {"name": "teacher_student", "teacher": list(p["how_teacher"]),
                 "classes": "largest standardised output", "n_train": n_train,
                 "n_val": p["when_val_points"], "n_test": p["when_test_points"],
                 "built_by": "growcore.chapters.compare.classification_split"},
        "model": {"name": "mlp", "hidden": list(hidden), "activation": "relu1"},
        "train": {"iterations": when_iterations(p), "lr": p["when_lr"],
                  "loss": "cross_entropy", "eval_every": p["when_eval_every"],
                  "init_seed": 0, "test_in_loop": False}}
    if runs_batched(timing, where):
        config["model"]["seed_batched"] = True
    if timing is not None:
        config["plan"] = {"when": timing_spec(p, timing), "where": where_spec(p, where),
                          "how": how_spec(p, how)}
    return config


def when_experiments(p: dict) -> dict[tuple[str, str], dict]:
    """Part 3: (regime, timing) -> configuration, and (regime, "static small" / "static
    large") for the two static networks. GradMax's where and how on its task (one hidden
    layer, ``how_units`` units per growth, the GradMax initialiser) are fixed; only the
    timing varies; every timing reaches the same final size (NAGN's window may stop early)."""
    runs = {}
    final = p["how_start_hidden"] + p["how_growths"] * p["how_units"]
    for regime in REGIMES:
        n = p["when_overfit_points" if regime == "overfitting" else "when_underfit_points"]
        seeds = list(range(p["when_seeds"]))
        for timing in p["timings"]:
            runs[regime, timing] = growth_config(p, f"when {regime} {timing}", seeds, n,
                                                 [p["how_start_hidden"]], timing,
                                                 "fixed_sites", "gradmax")
        for label, width in (("static small", p["how_start_hidden"]), ("static large", final)):
            runs[regime, label] = growth_config(p, f"when {regime} {label}", seeds, n, [width])
    return runs


def factorial_cells(p: dict) -> list[tuple[str, str, str]]:
    """Every (when, where, how) of part 4, in the order of the parameters."""
    return [(w, c, h) for w in p["factor_when"] for c in p["factor_where"]
            for h in p["factor_how"]]


def factorial_experiments(p: dict) -> dict[tuple[str, str, str], dict]:
    """Part 4: (when, where, how) -> configuration, and ("static", label, "") for the static
    small (``factorial_hidden``) and large (twice as wide) networks. The student has two
    hidden layers, so that where has a choice; the configurations differ only in the plan."""
    seeds = list(range(p["factorial_seeds"]))
    hidden, n = list(p["factorial_hidden"]), p["factorial_points"]
    runs = {cell: growth_config(p, "all " + " ".join(cell), seeds, n, hidden, *cell)
            for cell in factorial_cells(p)}
    for label, widths in (("small", hidden), ("large", [2 * w for w in hidden])):
        runs["static", label, ""] = growth_config(p, f"all static {label}", seeds, n, widths)
    return runs


def _first_configs(p: dict):
    """(configuration, split) of the first seed of every run of parts 3 and 4."""
    configs = [*when_experiments(p).values(), *factorial_experiments(p).values()]
    splits: dict[int, object] = {}
    for config in configs:
        n = config["data"]["n_train"]
        if n not in splits:
            splits[n] = classification_split(p, 0, n)
        one = {**config, "seeds": [0]}
        yield one, _given(one, [splits[n]])


def _given(config: dict, splits: list):
    from growcore.data import SeedSplits

    return SeedSplits.stack(splits) if config["model"].get("seed_batched") else splits[0]


def run_growth(config: dict, p: dict, directory=None, preset: str = "custom",
               device: str = "cpu", save: bool = True) -> dict:
    """Run one configuration of parts 3 and 4 through the driver, all seeds as one batched
    program where :func:`runs_batched` allows it, else one run per seed (its own data, its
    own when-policy), and return what the analysis reads, per seed in the order of
    ``seeds``: ``final_test``, ``final_train``, ``flops`` (training FLOPs, growth steps
    included), ``params`` (of the final network), ``widths`` (its hidden widths),
    ``growths`` (the growth iterations), and the run's wall time ``seconds``."""
    from growcore.driver import run_experiment

    n, seeds = config["data"]["n_train"], config["seeds"]
    options = {"directory": directory, "preset": preset, "device": device,
               "progress": False, "save": save}
    start = time.perf_counter()
    if config["model"].get("seed_batched"):
        groups = [(config, [classification_split(p, s, n) for s in seeds])]
    else:
        groups = [({**config, "seeds": [s]}, [classification_split(p, s, n)]) for s in seeds]
    out = {key: [] for key in ("final_test", "final_train", "flops", "params", "widths",
                               "growths")}
    for one, splits in groups:
        m = run_experiment(one, split=_given(one, splits).to(device), **options)["metrics"]
        for i, seed in enumerate(one["seeds"]):
            events = [e for e in m["events"] if seed in e.get("seeds", one["seeds"])]
            out["final_test"].append(m["final_test"][i])
            out["final_train"].append(m["final_train"][i])
            out["flops"].append(m["total_cost_flops"][i])
            out["params"].append(m["n_params"][i][-1])
            out["widths"].append(list(m["final_model"][i]["widths"].values()))
            out["growths"].append([e["iteration"] for e in events])
    return {**out, "seeds": list(seeds), "seconds": time.perf_counter() - start,
            "batched": bool(config["model"].get("seed_batched"))}


def growth_rows(runs: dict[tuple, dict], names: tuple[str, ...]):
    """One row per run and seed: the key's parts under ``names`` (e.g. ``("regime",
    "timing")``), ``seed``, ``test_error``, ``train_error``, ``gap`` (test minus training
    error), ``flops``, ``params``, ``width`` (total hidden units), ``growths`` (how many)
    and ``first_growth`` (its iteration; None without growth)."""
    import pandas as pd

    rows = []
    for key, out in runs.items():
        for i, seed in enumerate(out["seeds"]):
            rows.append({**dict(zip(names, key)), "seed": seed,
                         "test_error": out["final_test"][i],
                         "train_error": out["final_train"][i],
                         "gap": out["final_test"][i] - out["final_train"][i],
                         "flops": out["flops"][i], "params": out["params"][i],
                         "width": sum(out["widths"][i]), "growths": len(out["growths"][i]),
                         "first_growth": (out["growths"][i] or [None])[0]})
    return pd.DataFrame(rows)


def paired_against(rows, column: str, reference: str, measure: str,
                   by: tuple[str, ...] = ()) -> dict[tuple, Estimate]:
    """(group of ``by``..., level) -> the paired difference of ``measure``, level minus
    ``reference``, over the seeds (rows pair by ``seed``; within each group of ``by``)."""
    out = {}
    groups = rows.groupby(list(by)) if by else [((), rows)]
    for group, part in groups:
        group = group if isinstance(group, tuple) else (group,)
        base = part[part[column] == reference].set_index("seed")[measure]
        for level in part[column].unique():
            if level != reference:
                other = part[part[column] == level].set_index("seed")[measure]
                out[(*group, level)] = paired_difference(other.loc[base.index], base)
    return out


def difference_rows(rows, column: str, reference: str, measures: list[str],
                    by: tuple[str, ...] = ()):
    """The per-seed differences level minus ``reference`` in long form (the ``by``
    columns, ``column``, seed, measure, difference), for a point plot of paired
    differences."""
    import pandas as pd

    out = []
    groups = rows.groupby(list(by)) if by else [((), rows)]
    for group, part in groups:
        group = group if isinstance(group, tuple) else (group,)
        base = part[part[column] == reference].set_index("seed")
        for level in part[column].unique():
            if level == reference:
                continue
            other = part[part[column] == level].set_index("seed").loc[base.index]
            for measure in measures:
                out += [{**dict(zip(by, group)), column: level, "seed": seed,
                         "measure": measure, "difference": d}
                        for seed, d in (other[measure] - base[measure]).items()]
    return pd.DataFrame(out)


def main_effects(rows, measure: str, baselines: dict[str, str] | None = None
                 ) -> dict[tuple[str, str], Estimate]:
    """(factor, level) -> the main effect of the level against the factor's baseline
    (:data:`BASELINES`): per seed, the mean of ``measure`` over the cells with the level
    minus the mean over the cells with the baseline (the other factors averaged alike),
    then the paired t interval over the seeds."""
    baselines = baselines or BASELINES
    out = {}
    for factor, base in baselines.items():
        means = rows.groupby([factor, "seed"])[measure].mean().unstack(factor)
        for level in means.columns:
            if level != base:
                out[factor, level] = paired_difference(means[level], means[base])
    return out


def variance_explained(rows, factors: list[str], response: str) -> dict[str, float]:
    """How much of the variance of ``response`` each factor explains: a linear model
    (scikit-learn's LinearRegression) on the one-hot factors, R² of the model with all
    factors minus R² of the model without the factor (the drop when it is left out); with
    ``"full"`` the R² of the model with all. Main effects only (no interactions)."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    unknown = sorted(set(factors) - set(rows.columns))
    if unknown or not factors:
        raise ParameterError(f"factors {unknown or factors} are not columns of the rows; "
                             f"valid: {sorted(rows.columns)}")

    def r2(kept: list[str]) -> float:
        if not kept:
            return 0.0
        X = pd.get_dummies(rows[kept].astype(str), drop_first=True).to_numpy(float)
        y = rows[response].to_numpy(float)
        return float(LinearRegression().fit(X, y).score(X, y))

    full = r2(list(factors))
    return {"full": full, **{f: full - r2([g for g in factors if g != f]) for f in factors}}


def pareto_front(x, y) -> np.ndarray:
    """Which points ``(x, y)`` lie on the Pareto front when both are minimised: no other
    point is at most as large in both and smaller in one (a boolean mask)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    better = ((x[None, :] <= x[:, None]) & (y[None, :] <= y[:, None])
              & ((x[None, :] < x[:, None]) | (y[None, :] < y[:, None])))
    return ~better.any(axis=1)


def cell_summary(rows, cells: tuple[str, ...] = FACTORS):
    """Per cell: n, mean test error with its 95 % t interval, mean training FLOPs and
    final hidden width, and whether the cell is on the Pareto front of the cell means."""
    from growcore.uncertainty import mean_interval

    cells = list(cells)
    out = rows.groupby(cells).agg(n=("seed", "size"), test_error=("test_error", "mean"),
                                  flops=("flops", "mean"), width=("width", "mean"),
                                  growths=("growths", "mean")).reset_index()
    intervals = [mean_interval(part.test_error) for _, part in rows.groupby(cells)]
    out["low"] = [e.low for e in intervals]
    out["high"] = [e.high for e in intervals]
    out["pareto"] = pareto_front(out.flops, out.test_error)
    return out


def best_against_papers(rows, cells: list[tuple[str, str, str]] | None = None,
                        papers: dict[str, tuple] | None = None
                        ) -> tuple[tuple, dict[str, Estimate]]:
    """The combination no paper tried with the lowest mean test error, and per paper whose
    own combination (:data:`PAPER_CELLS`) is among the rows, the paired difference of the
    test error, best untried minus the paper's (negative: the untried one is better)."""
    papers = PAPER_CELLS if papers is None else papers
    means = rows.groupby(list(FACTORS)).test_error.mean()
    present = set(means.index)
    tried = {cell for cell in papers.values() if cell in present}
    untried = [cell for cell in means.index if cell not in tried]
    if not untried:
        raise ValueError("every combination of the rows is a paper's own")
    best = min(untried, key=lambda cell: means[cell])
    by_cell = rows.set_index(list(FACTORS))

    def seeds_of(cell):
        return by_cell.loc[cell].set_index("seed").test_error

    return best, {paper: paired_difference(seeds_of(best), seeds_of(cell).loc[
                      seeds_of(best).index])
                  for paper, cell in papers.items() if cell in present}


def main_effect_rows(rows, measure: str, baselines: dict[str, str] | None = None):
    """The per-seed main effects of :func:`main_effects` in long form (factor, level, seed,
    difference), for a point plot with the same t intervals."""
    import pandas as pd

    baselines = baselines or BASELINES
    out = []
    for factor, base in baselines.items():
        means = rows.groupby([factor, "seed"])[measure].mean().unstack(factor)
        for level in means.columns:
            if level != base:
                out += [{"factor": factor, "level": level, "seed": seed, "difference": d}
                        for seed, d in (means[level] - means[base]).items()]
    return pd.DataFrame(out)


def run_grown_size(p: dict, grown: dict, directory=None, preset: str = "custom",
                   device: str = "cpu", save: bool = True) -> dict:
    """NAGN's reference: per seed, a static network of the hidden widths the grown run
    ``grown`` (an output of :func:`run_growth` on the factorial's data) ended with, trained
    from scratch for the same steps on the same data; merged as :func:`run_growth` returns."""
    out = None
    for seed, widths in zip(grown["seeds"], grown["widths"]):
        one = run_growth(growth_config(p, "all static grown size", [seed],
                                       p["factorial_points"], widths), p, directory, preset,
                         device, save)
        if out is None:
            out = one
        else:
            for key in ("final_test", "final_train", "flops", "params", "widths", "growths",
                        "seeds"):
                out[key] = out[key] + one[key]
            out["seconds"] += one["seconds"]
    return out


# -- part 1, depth: which criterion finds the missing layer? ------------------------------
#
# A ground truth for depth: a teacher MLP of L hidden layers of one width h, and a student
# that is the teacher less hidden layer j (2 <= j <= L). With equal widths the student is
# the teacher with layer j replaced by the identity (ReLU is idempotent), and inserting the
# teacher's own layer at the student's depth site j - 2 (after its hidden layer j - 1)
# gives the teacher back exactly: that site is where "the layer is missing". Layer 1 is
# never removed: a layer inserted before the first hidden layer would read the raw inputs,
# where no identity layer keeps the function (SensLI inserts "anywhere after the first
# hidden layer", section 2.4).

DEPTH_STUDENTS = ("teacher", "random")  # the student starts at the teacher's layers, or fresh
DEPTH_SEED = 50_000  # offset of the depth networks' generators (not those of the width part)


def _sensli_depth(model, sites, probe, index: int) -> list[float]:
    """SensLI's merit of every depth site (eq. 2.14, the registry's ``sensli``): the squared
    norm of the loss gradient of a virtual identity layer at the site, over its width
    squared."""
    _, info = entry("where", "sensli").build()(model, sites, probe)
    return [float(m) for m in info["merits"]]


def _gradient_norm_depth(model, sites, probe, index: int) -> list[float]:
    """Norm of the loss gradient of the weights of the layer that follows the site (the layer
    a new one would feed): the naive baseline, written here (no paper proposes it)."""
    from growcore.losses import LOSSES, as_seed_batch

    weights = [model.get_submodule(site.container)[site.index].weight for site in sites]
    X, y = probe.split.X_train, probe.split.y_train
    value = LOSSES[probe.loss](as_seed_batch(model(X)), y).sum()
    return [float(g.norm()) for g in torch.autograd.grad(value, weights)]


def _random_depth(model, sites, probe, index: int) -> list[float]:
    """Scores drawn at random (the control of the registry's ``random_depth``)."""
    generator = torch.Generator().manual_seed(20_000 + index)
    return torch.rand(len(sites), generator=generator, dtype=torch.float64).tolist()


# depth criteria -> the scores they rank depth sites by: the registry's depth criteria that
# score sites (stage_order follows a fixed order and scores nothing) and one baseline
DEPTH_CRITERIA = {"sensli": _sensli_depth, "gradient_norm_depth": _gradient_norm_depth,
                  "random_depth": _random_depth}
COLOURS.update({"sensli": "#0173b2", "gradient_norm_depth": "#029e73",
                "random_depth": "#949494"})

PARAMETERS.update({
    "depth_criteria": Spec(list, item=str, choices=tuple(DEPTH_CRITERIA), min_length=1),
    "depth_students": Spec(list, item=str, choices=DEPTH_STUDENTS, min_length=1),
    "depth_networks": Spec(int, minimum=2),
    "depth_layers": Spec(list, item=int, minimum=3, min_length=1),
    "depth_widths": Spec(list, item=int, minimum=1, min_length=1),
    "depth_inputs": Spec(int, minimum=1),
    "depth_outputs": Spec(int, minimum=1),
    "depth_points": Spec(int, minimum=1),
    "depth_steps": Spec(int, minimum=1),
    "depth_lr": Spec(float, greater_than=0),
})


def validate_depth(p: dict) -> dict:
    """The cross-parameter checks of the depth benchmark (called by :func:`validate`)."""
    for name in ("depth_criteria", "depth_students", "depth_layers", "depth_widths"):
        require(len(set(p[name])) == len(p[name]), name, f"names each once; got {p[name]}")
    return p


def depth_network(p: dict, index: int) -> dict:
    """Network ``index`` of the depth benchmark: the teacher's ``widths`` (inputs,
    L hidden layers of one width, outputs), the ``missing`` hidden layer (1-based, 2..L) and
    the student's depth ``site`` (index into ``MLP.depth_sites()``) where it belongs.
    Drawn from a generator of ``index`` alone."""
    g = np.random.default_rng(DEPTH_SEED + index)
    layers = int(g.choice(p["depth_layers"]))
    width = int(g.choice(p["depth_widths"]))
    missing = int(g.integers(2, layers + 1))
    return {"widths": [p["depth_inputs"], *[width] * layers, p["depth_outputs"]],
            "missing": missing, "site": missing - 2}


def remove_layer(net, missing: int):
    """The MLP ``net`` less hidden layer ``missing`` (1-based), its other layers' weights
    copied: the student of the depth benchmark. Needs the removed layer to be square (its
    input as wide as its output), so that the next layer reads what it read before."""
    from growcore.models.mlp import MLP

    widths = net.widths
    if widths[missing - 1] != widths[missing]:
        raise ValueError(f"hidden layer {missing} maps {widths[missing - 1]} to "
                         f"{widths[missing]} units: only a square layer can be removed")
    student = MLP(widths[:missing] + widths[missing + 1:], activation=net.activation,
                  bias=net.layers[0].bias is not None)
    kept = [layer for i, layer in enumerate(net.layers) if i != missing - 1]
    student.load_state_dict({f"layers.{i}.{k}": v for i, layer in enumerate(kept)
                             for k, v in layer.state_dict().items()})
    return student.requires_grad_(True)


def depth_student(p: dict, index: int, start: str):
    """(student, split, network) of network ``index``: the teacher labels
    ``depth_points`` Gaussian inputs (and as many test points; GradMax's teacher, weights
    U[-1, 1]), the student is the teacher less its missing layer, starting at the teacher's
    other layers (``start="teacher"``) or freshly initialised (``"random"``, PyTorch's
    default after ``torch.manual_seed(index)``)."""
    from growcore.data import teacher_student
    from growcore.models.mlp import MLP

    network = depth_network(p, index)
    split, teacher = teacher_student(network["widths"], p["depth_points"], DEPTH_SEED + index)
    student = remove_layer(teacher, network["missing"])
    if start == "random":
        with torch.random.fork_rng():
            torch.manual_seed(index)
            student = MLP(student.widths, activation=student.activation)
    return student, split, network


def train_full_batch(model, split, steps: int, lr: float) -> list[float]:
    """``steps`` full-batch Adam steps on the MSE; the training loss before each step and
    after the last."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(split.X_train), split.y_train)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(torch.nn.functional.mse_loss(model(split.X_train),
                                                          split.y_train)))
    return losses


def depth_scores(model, split, criteria: list[str], index: int) -> dict[str, list[float]]:
    """Criterion -> its score of every depth site of ``model`` (forward order), on the
    training data under the MSE."""
    from growcore.models.sites import depth_sites

    unknown = sorted(set(criteria) - set(DEPTH_CRITERIA))
    if unknown:
        raise ParameterError(f"depth_criteria {unknown} unknown; valid: "
                             f"{sorted(DEPTH_CRITERIA)}")
    sites, probe = depth_sites(model), Probe(Split(split.X_train, split.y_train), "mse")
    return {name: DEPTH_CRITERIA[name](model, sites, probe, index) for name in criteria}


def realised_gains(model, split, steps: int, lr: float) -> list[float]:
    """Per depth site: the training MSE of ``model`` trained ``steps`` more steps, minus that
    of a copy with an identity layer inserted at the site and trained alike (positive: the
    inserted layer helped). Which site gains most is the empirical answer to "where would a
    layer help", against which the missing layer's position can be read."""
    import copy

    from growcore.how import IdentityLayer
    from growcore.models.sites import depth_sites
    from growcore.ops.insert import insert_modules

    plain = train_full_batch(copy.deepcopy(model), split, steps, lr)[-1]
    gains = []
    for site in depth_sites(model):
        grown = insert_modules(copy.deepcopy(model), [Proposal(site)], IdentityLayer()).model
        gains.append(plain - train_full_batch(grown, split, steps, lr)[-1])
    return gains


def run_depth(p: dict) -> list[dict]:
    """Part 1 in depth: every network of the depth benchmark, for every student start of
    ``depth_students``, trained ``depth_steps`` full-batch Adam steps, scored at every depth
    site by every criterion of ``depth_criteria``. One row per network, start and criterion:
    the detection of :func:`detection` (``hit``, ``auc``) of the missing layer's site, the
    network's ``layers`` (the teacher's hidden layers), ``width``, ``sites``, ``missing``,
    the training MSE before and after training, and ``realised`` (1 if inserting an identity
    layer at the missing layer's site and training ``depth_steps`` more lowers the loss most
    among the sites, ties shared) with the gain of every site."""
    rows = []
    for index in range(p["depth_networks"]):
        for start in p["depth_students"]:
            student, split, network = depth_student(p, index, start)
            losses = train_full_batch(student, split, p["depth_steps"], p["depth_lr"])
            scores = depth_scores(student, split, p["depth_criteria"], index)
            gains = realised_gains(student, split, p["depth_steps"], p["depth_lr"])
            realised = detection(gains, network["site"])
            for criterion, values in scores.items():
                rows.append({"network": index, "student": start, "criterion": criterion,
                             "layers": len(network["widths"]) - 2,
                             "width": network["widths"][1], "sites": len(values),
                             "missing": network["missing"], "site": network["site"],
                             **detection(values, network["site"]), "scores": values,
                             "loss_start": losses[0], "loss_trained": losses[-1],
                             "realised": realised["hit"], "gains": gains,
                             "agrees_with_realised": detection(values, int(np.argmax(gains)))[
                                 "hit"]})
    return rows


def depth_estimates(scored, criteria: list[str]) -> dict[str, dict[str, dict[str, Estimate]]]:
    """Student start -> criterion -> the estimates of :func:`detection_estimates` (hit, AUC,
    hit over chance, bootstrap intervals over networks), plus ``"realised"`` -> the hit rate
    of the missing layer's site among the realised gains (:func:`realised_gains`) and
    ``agrees`` (the criterion's hit of the site that gained most; ``agrees_over_chance``
    minus one over the sites)."""
    out = {}
    for start, part in scored.groupby("student", sort=False):
        out[start] = detection_estimates(part, criteria)
        for criterion in criteria:
            agree = part[part.criterion == criterion].agrees_with_realised
            out[start][criterion]["agrees"] = bootstrap_interval(agree, seed=5)
            sites = part[part.criterion == criterion].sites
            out[start][criterion]["agrees_over_chance"] = bootstrap_interval(
                agree - 1 / sites, seed=8)
        once = part.drop_duplicates("network")
        out[start]["realised"] = {"hit": bootstrap_interval(once.realised, seed=6),
                                  "hit_over_chance": bootstrap_interval(
                                      once.realised - 1 / once.sites, seed=7)}
    return out


# -- part 4: interactions, and the best combination on held-out seeds ---------------------

PAIR = " \N{MULTIPLICATION SIGN} "  # joins two factors or levels: "when x where"


def interaction_rows(rows, measure: str, baselines: dict[str, str] | None = None,
                     factors: tuple[str, ...] = FACTORS):
    """The per-seed two-way interaction contrasts against the baselines in long form
    (``factors`` and ``levels``, the pair's names and levels joined by :data:`PAIR`, ``a``,
    ``b``, ``la``, ``lb``, seed, difference):
    ``m(la, lb) - m(la, b0) - m(a0, lb) + m(a0, b0)``, ``m`` the mean of ``measure`` over
    the cells with those levels (the third factor averaged), ``a0``, ``b0`` the baselines
    (:data:`BASELINES`). Zero when the effect of ``la`` does not depend on ``lb``;
    negative: together they lower ``measure`` more than their main effects add up to."""
    import pandas as pd

    baselines = baselines or BASELINES
    out = []
    for i, a in enumerate(factors):
        for b in factors[i + 1:]:
            means = rows.groupby([a, b, "seed"])[measure].mean()
            a0, b0 = baselines[a], baselines[b]
            base = means.loc[a0, b0]
            for la in [v for v in rows[a].unique() if v != a0]:
                for lb in [v for v in rows[b].unique() if v != b0]:
                    both = means.loc[la, lb]
                    seeds = both.index
                    d = (both + base.loc[seeds] - means.loc[la, b0].loc[seeds]
                         - means.loc[a0, lb].loc[seeds])
                    out += [{"factors": a + PAIR + b, "levels": la + PAIR + lb, "a": a,
                             "b": b, "la": la, "lb": lb, "seed": seed, "difference": v}
                            for seed, v in d.items()]
    return pd.DataFrame(out)


def interaction_effects(rows, measure: str, baselines: dict[str, str] | None = None,
                        factors: tuple[str, ...] = FACTORS) -> dict[tuple, Estimate]:
    """(factor a, factor b, level of a, level of b) -> the mean over the seeds of the
    interaction contrast of :func:`interaction_rows`, with its paired t interval."""
    long = interaction_rows(rows, measure, baselines, factors)
    return {key: paired_difference(part.difference, np.zeros(len(part)))
            for key, part in long.groupby(["a", "b", "la", "lb"], sort=False)}


def interaction_r2(rows, factors: list[str], response: str,
                   extra: tuple[str, ...] = ("seed",)) -> dict[str, float]:
    """R² of linear models (scikit-learn's LinearRegression) of ``response`` on one-hot
    factors: ``"main"`` with the main effects of ``factors`` and ``extra``, ``"two-way"``
    with every two-way interaction of ``factors`` too (a one-hot of each pair of levels),
    their difference ``"gain"``, and per pair ``a + PAIR + b`` the drop in R² when that one
    interaction is left out of the two-way model."""
    import itertools

    import pandas as pd
    from sklearn.linear_model import LinearRegression

    unknown = sorted(set(factors) - set(rows.columns))
    if unknown or len(factors) < 2:
        raise ParameterError(f"factors {unknown or factors} must be two or more columns of "
                             f"the rows; valid: {sorted(rows.columns)}")
    pairs = list(itertools.combinations(factors, 2))
    y = rows[response].to_numpy(float)

    def r2(kept_pairs) -> float:
        columns = rows[[*factors, *extra]].astype(str)
        for a, b in kept_pairs:
            columns[a + PAIR + b] = columns[a] + PAIR + columns[b]
        X = pd.get_dummies(columns, drop_first=True).to_numpy(float)
        return float(LinearRegression().fit(X, y).score(X, y))

    main, full = r2([]), r2(pairs)
    return {"main": main, "two-way": full, "gain": full - main,
            **{a + PAIR + b: full - r2([q for q in pairs if q != (a, b)]) for a, b in pairs}}


def seed_halves(seeds, seed: int = 0) -> tuple[list, list]:
    """The seeds split into two disjoint halves at random (a generator of ``seed``), the
    first no larger than the second."""
    seeds = sorted(set(seeds))
    if len(seeds) < 2:
        raise ValueError(f"a split into halves needs two or more seeds, got {seeds}")
    order = np.random.default_rng(seed).permutation(len(seeds))
    half = len(seeds) // 2
    return [seeds[i] for i in sorted(order[:half])], [seeds[i] for i in sorted(order[half:])]


def held_out_best(rows, papers: dict[str, tuple] | None = None, untried: bool = False,
                  seed: int = 0) -> dict:
    """The best combination chosen on one half of the seeds and tested on the other, both
    ways (two-fold cross-fitting): in each fold the cell of lowest mean test error on the
    choosing half (among the cells no paper tried if ``untried``) is compared, on the other
    half, with each paper's own cell (:data:`PAPER_CELLS`), seed by seed; the differences of
    both folds are pooled, so every seed's difference comes from a choice made without it.

    Returns ``{"folds": [{"choose": seeds, "test": seeds, "best": cell}, ...],
    "against": {paper: Estimate}}`` (negative: the chosen cell tests better than the
    paper's)."""
    papers = PAPER_CELLS if papers is None else papers
    by_cell = rows.set_index(list(FACTORS))
    present = set(by_cell.index.unique())
    candidates = [c for c in present if not (untried and c in papers.values())]
    if not candidates:
        raise ValueError("no combination to choose from")
    halves = seed_halves(rows.seed.unique(), seed)
    folds, differences = [], {paper: [] for paper, c in papers.items() if c in present}
    for choose, test in (halves, halves[::-1]):
        chosen = rows[rows.seed.isin(choose)].groupby(list(FACTORS)).test_error.mean()
        best = min(sorted(candidates), key=lambda c: chosen[c])
        folds.append({"choose": list(choose), "test": list(test), "best": best})
        tested = rows[rows.seed.isin(test)].set_index([*FACTORS, "seed"]).test_error.sort_index()
        for paper in differences:
            differences[paper] += list(tested.loc[best].loc[test].to_numpy()
                                       - tested.loc[papers[paper]].loc[test].to_numpy())
    return {"folds": folds, "against": {paper: paired_difference(d, np.zeros(len(d)))
                                        for paper, d in differences.items()}}


# -- part 2 in depth: which depth initialiser helps most? ---------------------------------
#
# The same seed ResNet (BasicBlocks, He-initialised) on CIFAR-10 gets one block inserted at
# the end of stage ``depth_how_stage`` (the registry's ``stage_order``, seed -> seed + 1
# block there) at the fixed step ``depth_how_growth_step`` (``at``), by each depth
# initialiser of the registry; seed s fixes the initial network (``torch.manual_seed(s)``)
# and the order of the batches (a generator of s), the data split is the same for every
# seed. A run of the seed network without growth, up to the insertion step, gives the loss
# of the network before the insertion on the very batch the grown networks see first: the
# function-preservation check reads the two on the same batch and weights.

DEPTH_INITIALISERS = tuple(names("how", "depth"))  # identity, block_copy, block_moment, ...
DEPTH_REFERENCE = "identity"  # the simplest: every other depth initialiser is paired with it
SEED_NETWORK = "seed network"  # the run without growth, up to the insertion
DEPTH_HOW_MEASURES = ("training loss right after growth", "training loss a few steps after",
                      "test error a few steps after", "training loss at the end",
                      "test error at the end")
PRESERVED = 1e-5  # |loss after - loss before| of a function-preserving insertion (float32)
COLOURS.update({"identity": "#949494", "block_copy": "#0173b2", "block_moment": "#029e73",
                "block_kaiming": "#de8f05"})

PARAMETERS.update({
    "depth_initialisers": Spec(list, item=str, choices=DEPTH_INITIALISERS, min_length=1),
    "depth_how_seeds": Spec(int, minimum=2),
    "depth_how_widths": Spec(list, item=int, minimum=1, min_length=1),
    "depth_how_blocks": Spec(list, item=int, minimum=1, min_length=1),
    "depth_how_stage": Spec(int, minimum=0),
    "depth_how_growth_step": Spec(int, minimum=1),
    "depth_how_after_steps": Spec(int, minimum=1),
    "depth_how_steps": Spec(int, minimum=3),
    "depth_how_batch_size": Spec(int, minimum=1),
    "depth_how_lr": Spec(float, greater_than=0),
    "depth_how_momentum": Spec(float, minimum=0),
    "depth_moment_decay": Spec(float, greater_than=0, less_than=1),
})


def validate_depth_how(p: dict) -> dict:
    """The cross-parameter checks of part 2 in depth (called by :func:`validate`), and the
    grown ResNet against the 32x32 input (a forward pass), before any compute."""
    names_ = p["depth_initialisers"]
    require(len(set(names_)) == len(names_), "depth_initialisers",
            f"names each initialiser once; got {names_}")
    require(DEPTH_REFERENCE in names_ and len(names_) >= 2, "depth_initialisers",
            f"must include {DEPTH_REFERENCE!r}, the reference of the paired differences, and "
            f"one or more initialisers to compare with it; got {names_}")
    require(len(p["depth_how_blocks"]) == len(p["depth_how_widths"]), "depth_how_blocks",
            f"needs one block count per stage width {p['depth_how_widths']}; got "
            f"{p['depth_how_blocks']}")
    require(p["depth_how_stage"] < len(p["depth_how_blocks"]), "depth_how_stage",
            f"must be a stage of the seed network (0..{len(p['depth_how_blocks']) - 1}); got "
            f"{p['depth_how_stage']}")
    end = p["depth_how_growth_step"] + p["depth_how_after_steps"]
    require(end < p["depth_how_steps"], "depth_how_steps",
            f"must exceed depth_how_growth_step + depth_how_after_steps ({end}): the "
            f"results a few steps after the insertion are read before the end; got "
            f"{p['depth_how_steps']}")
    require(p["depth_how_after_steps"] <= p["depth_how_steps"] - end, "depth_how_after_steps",
            f"must not exceed the steps after the early reading ({p['depth_how_steps'] - end}):"
            f" the end is read over the last depth_how_after_steps batches; got "
            f"{p['depth_how_after_steps']}")
    require(p["depth_how_batch_size"] <= p["n_train"], "depth_how_batch_size",
            f"must not exceed n_train ({p['n_train']}); got {p['depth_how_batch_size']}")
    check_model("depth_how_widths", p["depth_how_widths"], "resnet",
                {"blocks": depth_how_target(p), "widths": list(p["depth_how_widths"])},
                (3, 32, 32), 10)
    return p


def depth_how_target(p: dict) -> list[int]:
    """Blocks per stage after the insertion: one more in stage ``depth_how_stage``."""
    target = list(p["depth_how_blocks"])
    target[p["depth_how_stage"]] += 1
    return target


def depth_how_spec(p: dict, how: str) -> dict:
    """The registry spec of a depth initialiser (moment growth with ``depth_moment_decay``;
    the block initialisers as FRAGrow uses them, not function-preserving)."""
    if how == "block_moment":
        return {"name": how, "moment_decay": p["depth_moment_decay"]}
    return {"name": how}


def depth_how_config(p: dict, how: str | None) -> dict:
    """One driver configuration of part 2 in depth: the seed ResNet (``depth_how_widths``,
    ``depth_how_blocks``) on part 1's CIFAR-10 split (``n_train``, ``n_test``, split seed
    0), SGD with momentum at a constant rate in mini-batches, the test error every
    ``depth_how_growth_step + depth_how_after_steps`` steps (so once a few steps after the
    insertion) and at the end. With ``how``, one block inserted by ``how`` at the end of
    stage ``depth_how_stage`` at step ``depth_how_growth_step``; without, the seed network
    trained up to and including that step (:data:`SEED_NETWORK`)."""
    g, a = p["depth_how_growth_step"], p["depth_how_after_steps"]
    data = {"name": "cifar10", "n_train": p["n_train"], "n_test": p["n_test"],
            "split_seed": 0}
    if p["cifar10_archive"]:
        data["archive"] = p["cifar10_archive"]
    config = {
        "name": f"depth how {how or SEED_NETWORK}", "seeds": list(range(p["depth_how_seeds"])),
        "data": data,
        "model": {"name": "resnet", "blocks": list(p["depth_how_blocks"]),
                  "widths": list(p["depth_how_widths"])},
        "train": {"iterations": p["depth_how_steps"] if how else g + 1,
                  "batch_size": p["depth_how_batch_size"], "lr": p["depth_how_lr"],
                  "momentum": p["depth_how_momentum"], "eval_every": g + a, "init_seed": 0}}
    if how:
        config["plan"] = {"when": {"name": "at", "iterations": [g]},
                          "where": {"name": "stage_order", "seed": list(p["depth_how_blocks"]),
                                    "target": depth_how_target(p)},
                          "how": depth_how_spec(p, how)}
    return config


def depth_how_experiments(p: dict) -> dict[str, dict]:
    """Initialiser -> its configuration (:func:`depth_how_config`), and
    :data:`SEED_NETWORK` -> the run without growth; the configurations differ only in the
    plan's ``how`` (and the seed network's in having no plan and stopping after the
    insertion step)."""
    runs = {how: depth_how_config(p, how) for how in p["depth_initialisers"]}
    runs[SEED_NETWORK] = depth_how_config(p, None)
    return runs


def run_depth_how(p: dict, split=None, directory=None, preset: str = "custom",
                  device: str = "cpu", progress: bool = False, save: bool = True
                  ) -> dict[str, dict]:
    """Run :func:`depth_how_experiments` through the driver, each seed alone (the driver's
    loop over seeds): name -> record. ``split``: the CIFAR-10 split of the configurations'
    data section (loaded once if not given; any split of 32x32 images with 10 classes, e.g.
    generated data in the tests)."""
    from growcore.driver import load_data, run_experiment

    runs = depth_how_experiments(p)
    if split is None:
        split = load_data(next(iter(runs.values()))["data"]).to(device)
    return {name: run_experiment(config, split=split, directory=directory, preset=preset,
                                 device=device, progress=progress, save=save)
            for name, config in runs.items()}


def depth_how_outcomes(records: dict[str, dict], p: dict):
    """One row per initialiser and seed: ``loss before insertion`` (the seed network's loss
    on the batch of the insertion step, the grown networks' first batch), ``training loss
    right after growth`` (the grown network's loss on that batch, before any update of the
    new block), ``function change`` (after minus before), ``training loss a few steps after``
    (the mean loss of the ``depth_how_after_steps`` batches after that update), ``test error
    a few steps after`` (``depth_how_after_steps`` updates after the insertion), ``training
    loss at the end`` (the mean loss of the last ``depth_how_after_steps`` batches), ``test
    error at the end``, ``training error at the end`` (the final model, eval mode) and the
    final ``depths``. Losses are mini-batch cross-entropies in train mode; every run sees
    the same batches, so all of them pair by seed."""
    import pandas as pd

    g, a = p["depth_how_growth_step"], p["depth_how_after_steps"]
    before = dict(zip(records[SEED_NETWORK]["metrics"]["seed"],
                      (float(loss[g]) for loss in records[SEED_NETWORK]["metrics"]["loss"])))
    rows = []
    for how, record in records.items():
        if how == SEED_NETWORK:
            continue
        m = record["metrics"]
        for i, seed in enumerate(m["seed"]):
            loss = np.asarray(m["loss"][i], dtype=float)
            test = {e["iteration"]: e["test_error"] for e in m["evals"][i]}
            rows.append({"initialiser": how, "seed": seed, "loss before insertion": before[seed],
                         "training loss right after growth": loss[g],
                         "function change": loss[g] - before[seed],
                         "training loss a few steps after": loss[g + 1:g + 1 + a].mean(),
                         "test error a few steps after": test[g + a],
                         "training loss at the end": loss[-a:].mean(),
                         "test error at the end": m["final_test"][i],
                         "training error at the end": m["final_train"][i],
                         "depths": m["final_model"][i].get("depths")})
    return pd.DataFrame(rows)


def depth_how_differences(outcomes, reference: str = DEPTH_REFERENCE
                          ) -> dict[tuple[str, str], Estimate]:
    """:func:`how_differences` of the depth initialisers' :data:`DEPTH_HOW_MEASURES`."""
    return how_differences(outcomes, reference, DEPTH_HOW_MEASURES)


def depth_how_difference_rows(outcomes, reference: str = DEPTH_REFERENCE):
    """:func:`how_difference_rows` of the depth initialisers' :data:`DEPTH_HOW_MEASURES`."""
    return how_difference_rows(outcomes, reference, DEPTH_HOW_MEASURES)


def function_preservation(outcomes) -> dict[str, dict]:
    """Initialiser -> ``{"change": Estimate, "largest": float, "preserves": bool}``: the
    loss right after the insertion minus the loss right before on the same batch (mean over
    the seeds with its paired t interval), the largest absolute change over the seeds, and
    whether every seed's change is within :data:`PRESERVED` (the data's answer to "does it
    keep the function?")."""
    out = {}
    for how, part in outcomes.groupby("initialiser", sort=False):
        change = part["function change"].to_numpy(float)
        largest = float(np.abs(change).max())
        out[how] = {"change": paired_difference(part["training loss right after growth"],
                                                part["loss before insertion"]),
                    "largest": largest, "preserves": largest <= PRESERVED}
    return out


def depth_how_loss_gaps(records: dict[str, dict], p: dict,
                        reference: str = DEPTH_REFERENCE) -> dict[str, np.ndarray]:
    """Initialiser -> the per-iteration mini-batch loss minus the reference's on the same
    seed and batch, ``[seeds, iterations]`` (seeds in the reference's order), for a band
    over the seeds."""
    base = records[reference]["metrics"]
    order = list(base["seed"])
    ref = np.asarray(base["loss"], dtype=float)
    out = {}
    for how, record in records.items():
        if how in (reference, SEED_NETWORK):
            continue
        m = record["metrics"]
        losses = np.asarray(m["loss"], dtype=float)[[list(m["seed"]).index(s) for s in order]]
        out[how] = losses - ref
    return out


def preservation_words(check: dict[str, dict]) -> str:
    """In words, per initialiser, what :func:`function_preservation` found: the mean change
    of the loss at the insertion with its interval, the largest change over the seeds, and
    whether the insertion kept the function on every seed."""
    parts = []
    for how, c in check.items():
        e = c["change"]
        verdict = ("kept the function (the loss of the insertion step's batch) on every "
                   "seed" if c["preserves"] else "changed the function")
        parts.append(f"{how} {verdict} (loss after minus before {e.mean:+.3g} "
                     f"[{e.low:+.3g}, {e.high:+.3g}], largest |change| {c['largest']:.2g})")
    n = next(iter(check.values()))["change"].n
    return f"n = {n} seeds: " + "; ".join(parts)


def new_block_is_copy(model, how: str) -> dict[str, bool]:
    """Stage -> whether the depth initialiser ``how`` (a registry name) fills a block
    appended to that stage of the staged ``model`` with the preceding block's weights (the
    same shapes and values) or not (FRAGrow's He initialisation after a downsampling block,
    whose shape a copy cannot take)."""
    from growcore.models.sites import depth_sites

    build = entry("how", how).build()
    out = {}
    for site in depth_sites(model):
        template = model.get_submodule(site.container)[site.index - 1].state_dict()
        new = build(model, Proposal(site)).state_dict()
        out[site.container] = new.keys() == template.keys() and all(
            torch.equal(new[k], template[k]) for k in template)
    return out

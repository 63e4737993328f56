"""The comparison chapter (``notebooks/compare.ipynb``): the papers' answers on one benchmark.

Part 1, *where*: which width criterion finds an explicit bottleneck? Many small VGGs, each
with one layer narrower than both its neighbours (NAGN's definition
``n_{l-1} > n_l < n_{l+1}``, section 3), are trained briefly on CIFAR-10 through the driver;
then every width criterion scores every width site of the trained network, and each
criterion is judged by how well its scores single out the bottleneck: the top-1 hit rate and
the ROC AUC over the network's sites, with bootstrap intervals over networks, and paired
differences between criteria (the same networks score under every criterion).

Part 2, *how*: which initialiser of new units helps most? The same seed network (a student of
GradMax's teacher-student task, section 4.1) grows on the same schedule of sites and amounts
under every width initialiser of the registry; the training loss and the test MSE after the
growth phase and at the end are compared with Random's by paired differences over seeds (the
same teacher, data and initial student per seed; all seeds as one batched program).
"""

from __future__ import annotations

import numpy as np
import torch

from growcore.claims import VERDICTS, Claim
from growcore.data import Split
from growcore.images import DataError, DataNotFoundError, dataset_sizes
from growcore.models.sites import Proposal, width_sites
from growcore.params import ParameterError, Spec, check_model, require
from growcore.params import validate as validate_all
from growcore.registry import names
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


def how_differences(outcomes, reference: str = REFERENCE) -> dict[tuple[str, str], Estimate]:
    """(initialiser, measure) -> the paired difference initialiser minus ``reference`` over
    the seeds (the same seed network, data and schedule), with its t interval; negative:
    lower than the reference."""
    out = {}
    for how, part, base in _against(outcomes, reference):
        for measure in HOW_MEASURES:
            out[how, measure] = paired_difference(part[measure], base[measure])
    return out


def how_difference_rows(outcomes, reference: str = REFERENCE):
    """The per-seed differences against ``reference`` in long form (initialiser, seed,
    measure, difference), for a point plot of the paired differences."""
    import pandas as pd

    rows = []
    for how, part, base in _against(outcomes, reference):
        for measure in HOW_MEASURES:
            rows += [{"initialiser": how, "seed": seed, "measure": measure, "difference": d}
                     for seed, d in (part[measure] - base[measure]).items()]
    return pd.DataFrame(rows)


def how_table(differences: dict[tuple[str, str], Estimate], outcomes,
              reference: str = REFERENCE):
    """The paired differences as a table: one row per initialiser, per measure the mean
    difference ``[low, high]`` and in how many seeds the initialiser is lower."""
    import pandas as pd

    rows = {}
    for how, part, base in _against(outcomes, reference):
        for measure in HOW_MEASURES:
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


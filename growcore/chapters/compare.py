"""The comparison chapter (``notebooks/compare.ipynb``): the papers' answers on one benchmark.

Part 1, *where*: which width criterion finds an explicit bottleneck? Many small VGGs, each
with one layer narrower than both its neighbours (NAGN's definition
``n_{l-1} > n_l < n_{l+1}``, section 3), are trained briefly on CIFAR-10 through the driver;
then every width criterion scores every width site of the trained network, and each
criterion is judged by how well its scores single out the bottleneck: the top-1 hit rate and
the ROC AUC over the network's sites, with bootstrap intervals over networks, and paired
differences between criteria (the same networks score under every criterion).
"""

from __future__ import annotations

import numpy as np
import torch

from growcore.data import Split
from growcore.images import DataError, DataNotFoundError, dataset_sizes
from growcore.models.sites import Proposal, width_sites
from growcore.params import ParameterError, Spec, check_model, require
from growcore.params import validate as validate_all
from growcore.runner import notebook_parameters as runner_parameters
from growcore.runtime import DEVICES
from growcore.stats import Probe
from growcore.where import LargestSingularValue
from growcore.where.baselines import weight_gradient_norms
from growcore.where.nagn import relative_contrast

PRESETS = ("smoke", "cpu", "gpu")
CONFIDENCE = 0.95  # of every interval in the chapter
BOOTSTRAP = 2000  # resamples of a bootstrap interval


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


def bootstrap_interval(values, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile bootstrap interval (:data:`CONFIDENCE`,
    :data:`BOOTSTRAP` resamples of the networks, seeded)."""
    values = np.asarray(values, dtype=float)
    g = np.random.default_rng(seed)
    means = values[g.integers(0, len(values), size=(BOOTSTRAP, len(values)))].mean(axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)


def verdict(low: float, high: float, reference: float) -> str:
    """``"above"``, ``"below"`` or ``"not resolved"``: where an interval lies against a
    reference value (0.5 for an AUC against chance, 0 for a paired difference)."""
    if low > reference:
        return "above"
    if high < reference:
        return "below"
    return "not resolved"


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


def claim(summary, criterion: str) -> str:
    """The sentence of one criterion's row of the summary table: AUC, interval, n and where
    the interval lies against chance."""
    row = summary.loc[criterion]
    low, high = (float(v) for v in row["AUC 95 %"].strip("[]").split(","))
    word = {"above": "better than chance", "below": "worse than chance",
            "not resolved": "not distinguishable from chance"}[row["AUC vs chance"]]
    return (f"{criterion}: AUC {row['AUC']:.2f} [{low:.2f}, {high:.2f}] over n = {row['n']} "
            f"networks, {word}")

"""The comparison chapter: the benchmark's networks, the detection scores against
hand-computed values, the intervals, the exact singular-value score against the grown
network, bad parameters, and the records of its smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from growcore.chapters import compare
from growcore.chapters.nagn import bottlenecks
from growcore.data import Split
from growcore.how import GradMax
from growcore.losses import LOSSES
from growcore.models.factory import MODULE_ACTIVATIONS
from growcore.models.sites import Proposal, width_sites
from growcore.models.vgg import VGG
from growcore.ops import widen
from growcore.runner import notebook_parameters
from growcore.stats import Probe, TargetNorm

MATCH = 1e-4  # relative: float32 gradient of the grown network vs the predicted norm


@pytest.fixture(scope="module")
def params() -> dict:
    return compare.validate(notebook_parameters("compare", "cpu"))


def test_every_network_has_exactly_one_explicit_bottleneck(params):
    sites = set()
    for index in range(200):
        config, site = compare.bottleneck_network(params, index)
        widths = [w for stage in config for w in stage]
        assert bottlenecks([*widths, 10]) == [site], (config, site)
        assert widths[site] in params["bottleneck_widths"]
        sites.add(site)
    assert len(sites) >= 4, "the bottleneck must move across the networks"


def test_networks_do_not_depend_on_how_many_are_drawn(params):
    few = compare.experiments({**params, "n_networks": 3})
    many = compare.experiments(params)
    assert all(many[name] == config for name, config in few.items())


@pytest.mark.parametrize(("scores", "bottleneck", "hit", "auc"), [
    ([0.1, 0.9, 0.5, 0.5], 1, 1.0, 1.0),
    ([0.1, 0.9, 0.5, 0.5], 2, 0.0, (1 + 0.5) / 3),  # beats 0.1, ties 0.5, loses to 0.9
    ([0.1, 0.9, 0.5, 0.5], 0, 0.0, 0.0),
    ([1.0, 1.0, 0.0], 0, 0.5, (1 + 0.5) / 2),  # a tie at the top shares the hit
])
def test_detection_against_hand_computed_values(scores, bottleneck, hit, auc):
    found = compare.detection(scores, bottleneck)
    assert found["hit"] == hit and abs(found["auc"] - auc) < 1e-12


def test_bootstrap_interval_and_verdicts():
    assert compare.bootstrap_interval([0.7] * 10) == (0.7, 0.7, 0.7)
    values = np.random.default_rng(0).normal(0.2, 1.0, size=50)
    mean, low, high = compare.bootstrap_interval(values, seed=4)
    assert low < mean < high and (mean, low, high) == compare.bootstrap_interval(values, seed=4)
    assert abs(mean - values.mean()) < 1e-12
    # the percentile interval of a mean is close to mean +- 1.96 sd / sqrt(n)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert abs((high - low) / 2 - half) < 0.25 * half
    assert compare.verdict(0.55, 0.8, 0.5) == "above"
    assert compare.verdict(0.1, 0.45, 0.5) == "below"
    assert compare.verdict(0.4, 0.6, 0.5) == "not resolved"


def test_exact_singular_value_is_the_grown_networks_gradient():
    """With BatchNorm in train mode and max pooling between producer and consumer, the exact
    score is the gradient norm a GradMax unit gets; the default statistic misses it."""
    torch.manual_seed(0)
    net = VGG([[8], [4], [8]], head="flatten", activation=MODULE_ACTIVATIONS["relu1"])
    X = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (32,))
    probe = Probe(Split(X, y), "cross_entropy")
    site = width_sites(net)[1]
    grown = widen(net, [Proposal(site, 1)], GradMax(norm=TargetNorm(), statistics="virtual"),
                  probe).model
    LOSSES["cross_entropy"](grown(X)[None], y).sum().backward()
    measured = float(grown.get_submodule(site.producer).weight.grad[-1].norm())
    (exact,) = compare.CRITERIA["singular_value_exact"](None, 0, net, [site], probe)
    (default,) = compare.CRITERIA["singular_value"](None, 0, net, [site], probe)
    assert abs(measured - exact) <= MATCH * exact
    assert abs(measured - default) > 0.5 * measured


def test_unknown_criteria_are_refused_with_the_valid_names():
    with pytest.raises(compare.ParameterError, match="random_width"):
        compare.site_scores({}, None, None, ["nagnn"])


@pytest.mark.slow
@pytest.mark.parametrize("name, value, message", [
    ("criteria", ["nagn", "sensli"], "parameter 'criteria' must be"),
    ("criteria", [], "with at least 1 item"),
    ("bottleneck_widths", [32], "narrower than every stage width"),
    ("score_examples", 10**6, "must not exceed n_train"),
])
def test_bad_parameter_stops_before_compute(stops_before_compute, name, value, message):
    stops_before_compute("compare", name, value, message)


@pytest.mark.slow
def test_smoke_records_score_every_network_with_every_criterion(smoke_book):
    paths = list(smoke_book.results.rglob("compare/**/where scores--*.json"))
    assert len(paths) == 1
    record = json.loads(paths[0].read_text())
    p = compare.validate(notebook_parameters("compare", "smoke"))
    rows = record["rows"]
    assert len(rows) == p["n_networks"] * len(p["criteria"])
    for row in rows:
        config, site = compare.bottleneck_network(p, row["network"])
        assert row["bottleneck"] == site
        assert len(row["scores"]) == row["sites"] == sum(map(len, config))
        assert 0 <= row["auc"] <= 1 and 0 <= row["hit"] <= 1

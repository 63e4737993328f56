"""The comparison chapter: the benchmark's networks, the detection scores against
hand-computed values, the intervals, the exact singular-value score against the grown
network, the pairing of the how-runs by seed, bad parameters, and the records of its smoke
run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
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


def _scored(rows):
    return pd.DataFrame(rows, columns=["network", "criterion", "sites", "hit", "auc"])


def test_detection_estimates_are_bootstrap_means_over_networks():
    scored = _scored([(0, "a", 4, 1.0, 1.0), (1, "a", 5, 0.0, 0.5), (2, "a", 2, 1.0, 0.75),
                      (0, "b", 4, 0.0, 0.0), (1, "b", 5, 0.0, 0.25), (2, "b", 2, 0.0, 0.5)])
    e = compare.detection_estimates(scored, ["a", "b"])
    assert e["a"]["auc"].method == "bootstrap" and e["a"]["auc"].n == 3
    assert abs(e["a"]["auc"].mean - 0.75) < 1e-12 and abs(e["b"]["hit"].mean) < 1e-12
    # a random ranking's expected hit is one over the sites: 1/4, 1/5, 1/2
    expected = np.mean([1 - 1 / 4, 0 - 1 / 5, 1 - 1 / 2])
    assert abs(e["a"]["hit_over_chance"].mean - expected) < 1e-12
    assert e["a"]["auc"].low <= 0.75 <= e["a"]["auc"].high
    # the same seed gives the same interval: the chapter's numbers are reproducible
    assert compare.detection_estimates(scored, ["a"])["a"] == e["a"]
    assert compare.bootstrap_errorbar(scored[scored.criterion == "a"].auc) == (
        e["a"]["auc"].low, e["a"]["auc"].high)


def test_paired_auc_pairs_the_same_networks():
    """Rows in any order: the difference is taken network by network, not by position."""
    scored = _scored([(0, "a", 4, 1.0, 0.9), (1, "a", 4, 1.0, 0.8), (2, "a", 4, 1.0, 0.7),
                      (2, "b", 4, 0.0, 0.6), (0, "b", 4, 0.0, 0.9), (1, "b", 4, 0.0, 0.8)])
    d = compare.paired_auc(scored, "a", "b")
    assert d.mean == pytest.approx(0.1 / 3) and d.n == 3 and d.method == "bootstrap"
    assert d.low == 0.0 and d.high == pytest.approx(0.1)  # resamples of {0, 0, 0.1}


@pytest.fixture(scope="module")
def smoke() -> dict:
    return compare.validate(notebook_parameters("compare", "smoke"))


def test_every_initialiser_grows_the_same_network_on_the_same_schedule(smoke):
    runs = compare.how_experiments({**smoke, "initialisers": list(compare.INITIALISERS)})
    assert sorted(c["plan"]["how"]["name"] for c in runs.values()) == sorted(
        compare.INITIALISERS)
    strip = [{k: v for k, v in c.items() if k != "name"} for c in runs.values()]
    for config in strip:
        config["plan"] = {**config["plan"], "how": None}
    assert all(config == strip[0] for config in strip), "only the initialiser may differ"
    assert strip[0]["model"]["seed_batched"] and strip[0]["data"]["per_seed"]


def test_paired_runs_share_each_seeds_network_until_the_first_growth(smoke):
    """Seed s of every initialiser starts from the same student on the same data: the
    losses agree up to the first growth (a batched program, float rounding), then part."""
    p = {**smoke, "how_seeds": 3, "initialisers": ["random", "gradmax"]}
    records = compare.run_how(p, save=False)
    first = compare.how_schedule(p)["growths"][0]
    loss = {how: np.asarray(r["metrics"]["loss"]) for how, r in records.items()}
    assert np.allclose(loss["random"][:, :first + 1], loss["gradmax"][:, :first + 1],
                       rtol=1e-6, atol=0)
    assert not np.allclose(loss["random"][:, -1], loss["gradmax"][:, -1], rtol=1e-6, atol=0)
    out = compare.how_outcomes(records, p)
    after = compare.how_schedule(p)["after"]
    row = out[(out.initialiser == "gradmax") & (out.seed == 1)].iloc[0]
    assert row["training loss after growth"] == loss["gradmax"][1, after]
    assert row["test MSE at the end"] == records["gradmax"]["metrics"]["final_test"][1]


def test_how_differences_are_paired_by_seed_against_random():
    rows = [{"initialiser": how, "seed": seed,
             **dict.fromkeys(compare.HOW_MEASURES, value + seed)}
            for how, value, seeds in (("random", 1.0, [0, 1, 2]), ("gradmax", 0.5, [2, 0, 1]),
                                      ("zero", 3.0, [1, 2, 0]))
            for seed in seeds]
    out = pd.DataFrame(rows)
    d = compare.how_differences(out)
    assert set(d) == {(h, m) for h in ("gradmax", "zero") for m in compare.HOW_MEASURES}
    e = d["gradmax", "training loss at the end"]
    assert (e.mean, e.low, e.high, e.n, e.method) == (-0.5, -0.5, -0.5, 3, "paired t")
    words = compare.how_words(d, "test MSE at the end")
    assert "lower than random: gradmax" in words and "higher: zero" in words
    assert "n = 3 seeds" in words


def test_lab_preset_is_a_reduced_cpu_preset(params):
    lab = compare.validate(notebook_parameters("compare", "lab"))
    assert lab["n_networks"] < params["n_networks"] and lab["how_seeds"] < params["how_seeds"]
    assert lab["when_seeds"] < params["when_seeds"]
    assert lab["factorial_seeds"] < params["factorial_seeds"]
    assert lab["depth_networks"] < params["depth_networks"]
    assert lab["depth_how_seeds"] < params["depth_how_seeds"]
    assert lab["cifar_factorial_seeds"] < params["cifar_factorial_seeds"]
    assert lab["cifar_factorial_n_train"] < params["cifar_factorial_n_train"]
    same = set(params) - {"preset", "n_networks", "how_seeds", "progress", "when_seeds",
                          "factorial_seeds", "depth_networks", "depth_how_seeds",
                          "cifar_factorial_seeds", "cifar_factorial_n_train"}
    assert all(lab[k] == params[k] for k in same), "lab changes only how many"


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
    ("initialisers", ["gradmax", "identity"], "parameter 'initialisers' must be"),
    ("initialisers", [], "with at least 1 item"),
    ("initialisers", ["gradmax", "zero"], "must include 'random'"),
    ("timings", ["every", "fragorw"], "parameter 'timings' must be"),
    ("timings", [], "with at least 1 item"),
    ("factor_where", ["nagn", "sensli"], "parameter 'factor_where' must be"),
    ("factor_where", [], "with at least 1 item"),
    ("factor_how", [], "with at least 1 item"),
    ("factor_when", [], "with at least 1 item"),
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


@pytest.mark.slow
def test_smoke_records_of_every_initialiser_pair_the_same_seeds(smoke_book):
    p = compare.validate(notebook_parameters("compare", "smoke"))
    for how in p["initialisers"]:
        paths = list(smoke_book.results.rglob(f"compare/**/how {how}--*.json"))
        assert len(paths) == 1, how
        record = json.loads(paths[0].read_text())
        assert record["seeds"] == list(range(p["how_seeds"]))
        assert record["config"]["model"]["seed_batched"]
        assert len(record["metrics"]["events"]) == p["how_growths"]


@pytest.mark.slow
def test_every_glued_key_of_the_prose_is_computed(smoke_book):
    """The chapter's sentences paste numbers and verdicts; each key they paste must be glued
    by the executed notebook (in any preset: the smoke one here)."""
    import re

    executed = json.loads((smoke_book.root / "book" / "chapters" / "compare.ipynb").read_text())
    glued = {out["metadata"]["scrapbook"]["name"] for cell in executed["cells"]
             for out in cell.get("outputs", []) if "scrapbook" in out.get("metadata", {})}
    pasted = {key for cell in executed["cells"] if cell["cell_type"] == "markdown"
              for key in re.findall(r"\{glue:text\}`([a-z0-9_]+)`", "".join(cell["source"]))}
    assert pasted and pasted <= glued, sorted(pasted - glued)


# -- parts 3 and 4 ------------------------------------------------------------------------

def test_variance_explained_against_a_hand_computed_case():
    """A balanced 2 x 2 design with additive effects a = +-1 and b = +-2: the full model
    explains everything, and leaving a factor out loses its share of the variance,
    1 / (1 + 4) for a and 4 / 5 for b."""
    rows = pd.DataFrame([{"a": i, "b": j, "y": (2 * i - 1) + 2 * (2 * j - 1)}
                         for i in (0, 1) for j in (0, 1) for _ in range(3)])
    shares = compare.variance_explained(rows, ["a", "b"], "y")
    assert shares["full"] == pytest.approx(1.0)
    assert shares["a"] == pytest.approx(0.2) and shares["b"] == pytest.approx(0.8)
    # noise orthogonal to both factors lowers R² but not the split between them
    rows["y"] = rows.y + np.tile([0.5, -0.5, 0.0], 4)
    noisy = compare.variance_explained(rows, ["a", "b"], "y")
    total = 5 + 1 / 6  # the variance of the effects plus that of the noise
    assert noisy["full"] == pytest.approx(5 / total)
    assert noisy["a"] == pytest.approx(1 / total) and noisy["b"] == pytest.approx(4 / total)
    with pytest.raises(compare.ParameterError, match="not columns"):
        compare.variance_explained(rows, ["c"], "y")
    with pytest.raises(compare.ParameterError):
        compare.variance_explained(rows, [], "y")


def test_pareto_front_against_hand_made_points():
    x = [1.0, 2.0, 3.0, 2.0, 4.0, 1.0]
    y = [5.0, 3.0, 1.0, 4.0, 1.0, 5.0]
    # (2, 4) is dominated by (2, 3); (4, 1) by (3, 1); the tie (1, 5) twice: neither
    # dominates the other
    assert compare.pareto_front(x, y).tolist() == [True, True, True, False, False, True]


def test_main_effects_average_the_other_factors_and_pair_by_seed():
    rows = pd.DataFrame([{"when": w, "where": c, "how": h, "seed": s,
                          "test_error": 0.5 + 0.1 * (w == "fragrow") - 0.2 * (c == "nagn")
                          + 0.01 * s}
                         for w in ("every", "fragrow") for c in ("random_width", "nagn")
                         for h in ("random", "gradmax") for s in (2, 0, 1)])
    e = compare.main_effects(rows, "test_error")
    assert set(e) == {("when", "fragrow"), ("where", "nagn"), ("how", "gradmax")}
    assert e["when", "fragrow"].mean == pytest.approx(0.1)
    assert e["where", "nagn"].mean == pytest.approx(-0.2)
    assert e["how", "gradmax"].mean == pytest.approx(0.0)
    assert e["where", "nagn"].high - e["where", "nagn"].low == pytest.approx(0.0, abs=1e-12)
    long = compare.main_effect_rows(rows, "test_error")
    assert len(long) == 3 * 3 and long[long.level == "nagn"].difference.mean() == (
        pytest.approx(-0.2))


def test_best_untried_combination_against_each_papers_own():
    cells = [("every", "singular_value", "gradmax"), ("every", "random_width", "random"),
             ("fragrow", "random_width", "random")]
    error = {cells[0]: 0.30, cells[1]: 0.20, cells[2]: 0.40}
    rows = pd.DataFrame([{"when": w, "where": c, "how": h, "seed": s,
                          "test_error": error[w, c, h] + 0.01 * s}
                         for (w, c, h) in cells for s in (0, 1, 2)])
    best, against = compare.best_against_papers(rows)
    assert best == cells[1]  # the lowest error among the cells no paper tried
    assert set(against) == {"GradMax"}  # the other papers' cells are not in the rows
    assert against["GradMax"].mean == pytest.approx(-0.10) and against["GradMax"].n == 3


def test_classification_split_is_balanced_and_nested(params):
    few = compare.classification_split(params, 3, params["when_overfit_points"])
    many = compare.classification_split(params, 3, params["when_underfit_points"])
    for y, n in ((few.y_train, params["when_overfit_points"]),
                 (many.y_val, params["when_val_points"]),
                 (many.y_test, params["when_test_points"])):
        assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10
    assert torch.equal(few.X_test, many.X_test) and torch.equal(few.X_val, many.X_val)
    rows = {tuple(x.tolist()) for x in many.X_train}
    assert all(tuple(x.tolist()) in rows for x in few.X_train), "the few are among the many"
    other = compare.classification_split(params, 4, params["when_overfit_points"])
    assert not torch.equal(few.X_train, other.X_train), "each seed has its own teacher"


def _without(config: dict, *paths: str) -> dict:
    out = json.loads(json.dumps(config))
    for path in paths:
        *parents, last = path.split(".")
        node = out
        for key in parents:
            node = node.get(key, {})
        node.pop(last, None)
    return out


def test_timing_configs_differ_only_in_the_timing(params):
    runs = compare.when_experiments(params)
    for regime in compare.REGIMES:
        grown = [runs[regime, t] for t in params["timings"]]
        stripped = [_without(c, "name", "plan.when", "model.seed_batched") for c in grown]
        assert all(c == stripped[0] for c in stripped), regime
        assert [c["plan"]["when"]["name"] for c in grown] == params["timings"]
        # the static ones: the same but for the plan and the width
        static = _without(runs[regime, "static large"], "name", "model.hidden",
                          "model.seed_batched")
        assert static == _without(stripped[0], "plan", "model.hidden")
    assert (runs["overfitting", "fragrow"]["data"]["n_train"]
            < runs["underfitting", "fragrow"]["data"]["n_train"])
    assert _without(runs["overfitting", "every"], "name", "data.n_train") == _without(
        runs["underfitting", "every"], "name", "data.n_train"), "regimes differ in n only"


def test_factorial_configs_differ_only_in_the_plan(params):
    runs = compare.factorial_experiments(params)
    cells = compare.factorial_cells(params)
    assert len(cells) == (len(params["factor_when"]) * len(params["factor_where"])
                          * len(params["factor_how"]))
    stripped = [_without(runs[c], "name", "plan", "model.seed_batched") for c in cells]
    assert all(c == stripped[0] for c in stripped)
    for when, where, how in cells:
        plan = runs[when, where, how]["plan"]
        assert (plan["when"]["name"], plan["where"]["name"], plan["how"]["name"]) == (
            when, where, how)
    for paper, cell in compare.PAPER_CELLS.items():
        assert cell in cells, f"{paper}'s own combination is in the default factorial"


def test_only_runs_whose_seeds_decide_alike_are_batched():
    assert compare.runs_batched("every", "fixed_sites") and compare.runs_batched(None, None)
    assert not compare.runs_batched("fragrow", "fixed_sites")  # reads each seed's errors
    assert not compare.runs_batched("every", "singular_value")  # seeds may pick other sites
    assert not compare.runs_batched("every", "nagn")  # NAGN refuses seed-batched nets


@pytest.mark.parametrize("name, value, message", [
    ("timings", ["every", "fragorw"], "parameter 'timings' must be"),
    ("timings", ["fragrow"], "must include 'every'"),
    ("factor_where", [], "with at least 1 item"),
    ("factor_where", ["nagn", "nagn"], "names each once"),
    ("factor_how", ["gradmax", "identity"], "parameter 'factor_how' must be"),
    ("when_overfit_points", 55, "multiple of the 10 classes"),
    ("when_overfit_points", 2000, "must be below when_underfit_points"),
    ("factorial_hidden", [5], "with at least 2 item"),
])
def test_bad_growth_parameters_are_refused_by_name(params, name, value, message):
    with pytest.raises(compare.ParameterError, match=name) as error:
        compare.validate({**params, name: value})
    assert message in str(error.value)


def test_batched_and_alone_runs_agree_for_a_fixed_schedule(smoke):
    """The fixed schedule trains its seeds batched; one seed at a time it gives the same
    errors (float rounding), so the batched runs pair with the one-seed-at-a-time ones."""
    config = compare.when_experiments(smoke)["underfitting", "every"]
    batched = compare.run_growth(config, smoke, save=False)
    alone = compare.run_growth(_without(config, "model.seed_batched"), smoke, save=False)
    assert batched["batched"] and not alone["batched"]
    assert np.allclose(batched["final_train"], alone["final_train"], atol=1e-6)
    assert batched["growths"] == alone["growths"] == [
        compare.how_schedule(smoke)["growths"]] * smoke["when_seeds"]
    assert batched["widths"] == [[smoke["how_start_hidden"]
                                  + smoke["how_growths"] * smoke["how_units"]]] * 2

"""The comparison chapter's depth benchmark (a teacher less one layer), its interactions of
the factorial and the choice of the best combination on held-out seeds."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from growcore.chapters import compare
from growcore.data import teacher_student
from growcore.models.sites import Proposal, depth_sites
from growcore.ops.insert import insert_modules
from growcore.registry import names
from growcore.runner import notebook_parameters

EXACT = 1e-6  # float32 forward passes of the same weights in the same order


@pytest.fixture(scope="module")
def params() -> dict:
    return compare.validate(notebook_parameters("compare", "cpu"))


def test_every_scoring_depth_criterion_of_the_registry_takes_part():
    scoring = set(names("where", "depth")) - {"stage_order"}  # a fixed order, no scores
    assert scoring <= set(compare.DEPTH_CRITERIA)


def test_depth_networks_remove_a_layer_after_the_first(params):
    seen = set()
    for index in range(200):
        net = compare.depth_network(params, index)
        hidden = net["widths"][1:-1]
        assert len(hidden) in params["depth_layers"] and len(set(hidden)) == 1
        assert hidden[0] in params["depth_widths"]
        assert 2 <= net["missing"] <= len(hidden) and net["site"] == net["missing"] - 2
        seen.add((len(hidden), net["site"]))
    assert {site for _, site in seen} == set(range(max(params["depth_layers"]) - 1))
    assert compare.depth_network(params, 7) == compare.depth_network(
        {**params, "depth_networks": 2}, 7), "a network does not depend on how many are drawn"


@pytest.mark.parametrize("index", range(6))
def test_student_is_the_teacher_less_the_layer_at_the_stated_site(params, index):
    """Inserting the teacher's own missing layer at the student's stated depth site gives
    the teacher back exactly; inserting it anywhere else does not."""
    p = {**params, "depth_points": 64}
    student, split, net = compare.depth_student(p, index, "teacher")
    _, teacher = teacher_student(net["widths"], 64, compare.DEPTH_SEED + index)
    removed = teacher.layers[net["missing"] - 1]
    assert student.widths == net["widths"][:net["missing"]] + net["widths"][net["missing"] + 1:]

    def restore(site):
        return insert_modules(student, [Proposal(site)],
                              lambda m, proposal, stats: copy.deepcopy(removed)).model

    with torch.no_grad():
        target = teacher(split.X_train)
        assert torch.allclose(split.y_train, target)
        sites = depth_sites(student)
        errors = [float((restore(site)(split.X_train) - target).abs().max()) for site in sites]
        assert errors[net["site"]] <= EXACT * float(target.abs().max())
        others = [e for i, e in enumerate(errors) if i != net["site"]]
        assert all(e > 1e-3 for e in others)
        assert float((student(split.X_train) - target).abs().max()) > 1e-3  # it is missing


def test_a_random_student_has_the_same_architecture_but_not_the_weights(params):
    p = {**params, "depth_points": 16}
    taught, _, _ = compare.depth_student(p, 3, "teacher")
    fresh, _, _ = compare.depth_student(p, 3, "random")
    again, _, _ = compare.depth_student(p, 3, "random")
    assert fresh.widths == taught.widths
    assert not torch.equal(fresh.layers[0].weight, taught.layers[0].weight)
    assert torch.equal(fresh.layers[0].weight, again.layers[0].weight), "seeded"


def test_remove_layer_refuses_a_non_square_layer():
    from growcore.models.mlp import MLP

    with pytest.raises(ValueError, match="square"):
        compare.remove_layer(MLP([3, 4, 5, 2]), 2)


def test_sensli_depth_scores_are_the_virtual_layers_gradients(params):
    """SensLI's merit of a site is ||dL/dW||^2 / h^2 of an identity layer inserted there,
    measured here by autograd on the grown network, one site at a time."""
    from growcore.how import IdentityLayer

    student, split, _ = compare.depth_student({**params, "depth_points": 64}, 1, "teacher")
    scores = compare.depth_scores(student, split, ["sensli", "gradient_norm_depth"], 1)
    for i, site in enumerate(depth_sites(student)):
        grown = insert_modules(student, [Proposal(site)], IdentityLayer()).model
        loss = torch.nn.functional.mse_loss(grown(split.X_train), split.y_train)
        (g,) = torch.autograd.grad(loss, [grown.layers[site.index].weight])
        assert scores["sensli"][i] == pytest.approx(float(g.pow(2).sum()) / site.width ** 2,
                                                    rel=1e-4)
        consumer = student.layers[site.index].weight
        loss = torch.nn.functional.mse_loss(student(split.X_train), split.y_train)
        (g,) = torch.autograd.grad(loss, [consumer])
        assert scores["gradient_norm_depth"][i] == pytest.approx(float(g.norm()), rel=1e-5)
    with pytest.raises(compare.ParameterError, match="depth_criteria"):
        compare.depth_scores(student, split, ["sensly"], 1)


def test_run_depth_rows_and_estimates(params):
    p = {**params, "depth_networks": 3, "depth_layers": [3, 4], "depth_widths": [4],
         "depth_points": 30, "depth_steps": 2}
    scored = pd.DataFrame(compare.run_depth(p))
    assert len(scored) == 3 * len(p["depth_students"]) * len(p["depth_criteria"])
    for _, row in scored.iterrows():
        assert row.sites == row.layers - 1 == len(row.scores) == len(row.gains)
        assert row.hit == compare.detection(row.scores, row.site)["hit"]
        assert row.realised == compare.detection(row.gains, row.site)["hit"]
    est = compare.depth_estimates(scored, p["depth_criteria"])
    assert set(est) == set(p["depth_students"])
    for start, by in est.items():
        part = scored[(scored.student == start) & (scored.criterion == "sensli")]
        assert by["sensli"]["auc"].mean == pytest.approx(part.auc.mean())
        assert by["sensli"]["auc"].n == 3 and by["realised"]["hit"].n == 3


@pytest.mark.parametrize("name, value, message", [
    ("depth_criteria", ["sensli", "nagn"], "parameter 'depth_criteria' must be"),
    ("depth_criteria", [], "with at least 1 item"),
    ("depth_criteria", ["sensli", "sensli"], "names each once"),
    ("depth_students", ["teacher", "pretrained"], "parameter 'depth_students' must be"),
    ("depth_layers", [2, 3], "parameter 'depth_layers'"),
    ("depth_layers", [], "with at least 1 item"),
    ("depth_networks", -3, "parameter 'depth_networks'"),
    ("depth_steps", -1, "parameter 'depth_steps'"),
    ("depth_lr", 0.0, "parameter 'depth_lr'"),
])
def test_bad_depth_parameters_are_refused_by_name(params, name, value, message):
    with pytest.raises(compare.ParameterError, match=name) as error:
        compare.validate({**params, name: value})
    assert message in str(error.value)


def _factorial(effect) -> pd.DataFrame:
    levels = {"when": ("every", "fragrow"), "where": ("random_width", "nagn"),
              "how": ("random", "gradmax")}
    return pd.DataFrame([{"when": w, "where": c, "how": h, "seed": s,
                          "test_error": effect(w, c, h) + 0.01 * s}
                         for w in levels["when"] for c in levels["where"]
                         for h in levels["how"] for s in (0, 1, 2, 3)])


def test_interaction_contrast_on_a_table_with_a_known_interaction():
    """Main effects +0.1 (fragrow) and -0.2 (nagn), and -0.05 more when both: the
    when x where contrast is -0.05 exactly (the same every seed), the others zero."""
    rows = _factorial(lambda w, c, h: 0.5 + 0.1 * (w == "fragrow") - 0.2 * (c == "nagn")
                      - 0.05 * (w == "fragrow" and c == "nagn"))
    e = compare.interaction_effects(rows, "test_error")
    assert set(e) == {("when", "where", "fragrow", "nagn"), ("when", "how", "fragrow", "gradmax"),
                      ("where", "how", "nagn", "gradmax")}
    assert e["when", "where", "fragrow", "nagn"].mean == pytest.approx(-0.05)
    assert e["when", "where", "fragrow", "nagn"].n == 4
    assert e["when", "how", "fragrow", "gradmax"].mean == pytest.approx(0.0, abs=1e-12)
    assert e["where", "how", "nagn", "gradmax"].mean == pytest.approx(0.0, abs=1e-12)
    additive = compare.interaction_effects(_factorial(
        lambda w, c, h: 0.1 * (w == "fragrow") - 0.2 * (c == "nagn")), "test_error")
    assert all(abs(x.mean) < 1e-12 for x in additive.values())


def test_interaction_r2_gains_exactly_the_interactions_share():
    """y = a + b + a*b on a balanced 2 x 2 (+-1 coding): the main effects explain 2/3 of the
    variance, the model with the interaction all of it; leaving the pair out loses 1/3."""
    rows = pd.DataFrame([{"a": i, "b": j, "seed": s,
                          "y": (2 * i - 1) + (2 * j - 1) + (2 * i - 1) * (2 * j - 1)}
                         for i in (0, 1) for j in (0, 1) for s in range(3)])
    r2 = compare.interaction_r2(rows, ["a", "b"], "y")
    assert r2["main"] == pytest.approx(2 / 3) and r2["two-way"] == pytest.approx(1.0)
    assert r2["gain"] == pytest.approx(1 / 3)
    assert r2["a" + compare.PAIR + "b"] == pytest.approx(1 / 3)
    with pytest.raises(compare.ParameterError, match="two or more"):
        compare.interaction_r2(rows, ["a"], "y")


def test_seed_halves_are_disjoint_and_cover_the_seeds():
    choose, test = compare.seed_halves([5, 1, 3, 0, 2], seed=4)
    assert not set(choose) & set(test) and set(choose) | set(test) == {0, 1, 2, 3, 5}
    assert len(choose) == 2 and len(test) == 3
    with pytest.raises(ValueError):
        compare.seed_halves([1])


def test_held_out_choice_never_uses_a_seed_for_both_choosing_and_testing():
    """Seeds 0 and 1 favour cell A, seeds 2 and 3 cell B (the seeds' noise); with the halves
    {0, 1} and {2, 3} each half chooses its favourite, which is tested only on the other
    half's seeds, where it is worse than GradMax's own cell. Chosen and tested on the same
    seeds, A looks better than GradMax's (the winner's curse)."""
    gm = ("every", "singular_value", "gradmax")
    a, b = ("every", "random_width", "random"), ("fragrow", "random_width", "random")
    error = {(gm, s): 0.30 for s in range(4)}
    error.update({(a, 0): 0.10, (a, 1): 0.10, (a, 2): 0.45, (a, 3): 0.50,
                  (b, 0): 0.50, (b, 1): 0.50, (b, 2): 0.10, (b, 3): 0.10})
    rows = pd.DataFrame([{"when": c[0], "where": c[1], "how": c[2], "seed": s,
                          "test_error": e} for (c, s), e in error.items()])
    split = next(s for s in range(100) if compare.seed_halves(range(4), s)[0] == [0, 1])
    out = compare.held_out_best(rows, untried=True, seed=split)
    for fold in out["folds"]:
        assert not set(fold["choose"]) & set(fold["test"])
    assert sorted(s for fold in out["folds"] for s in fold["test"]) == [0, 1, 2, 3]
    assert [fold["best"] for fold in out["folds"]] == [a, b]
    # A tested on seeds 2, 3 (+0.15, +0.20), B on seeds 0, 1 (+0.20 each)
    assert out["against"]["GradMax"].mean == pytest.approx((0.15 + 0.20 + 0.20 + 0.20) / 4)
    assert out["against"]["GradMax"].n == 4
    best, same = compare.best_against_papers(rows)
    assert best == a and same["GradMax"].mean == pytest.approx(-0.0125)
    with_papers = compare.held_out_best(rows, seed=split)  # GradMax's own cell may win
    assert [fold["best"] for fold in with_papers["folds"]] == [a, b]

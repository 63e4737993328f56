"""The FRAGrow chapter's claims, seeds, figures and exercise check, on synthetic records
whose paired differences are known in closed form."""

import math

import pytest

from growcore.chapters import fragrow
from growcore.claims import Claims

EXACT = 1e-12  # closed-form arithmetic in double precision
T_975_2 = 4.302652729911275  # t quantile 0.975 with 2 degrees of freedom

P = {"architecture": "resnet", "regimes": ["overfitting", "underfitting"], "epochs": [40, 5],
     "finetune_min": [8, 1], "seed_blocks": [1, 1, 1], "target_blocks": [2, 3, 2],
     "n_train": [500, 3000], "tables": [1, 5, 6], "alphas": [2.0, 6.0], "alpha": 4.0,
     "extra_plans": {}, "preset": "test", "n_seeds": 3, "ablation_seeds": 1}


def record(regime, method, seed, test, train=0.1, wall=10.0, cost=1.0, events=(), evals=()):
    """A record as the driver writes it, with only what the chapter reads."""
    return {"name": f"resnet {regime} {method} s{seed}", "seeds": [seed], "wall_time_s": wall,
            "iterations_per_epoch": 1,
            "config": {"train": {"epochs": P["epochs"][P["regimes"].index(regime)]}},
            "metrics": {"final_test": [test], "final_train": [train],
                        "total_cost_flops": [cost], "events": list(events),
                        "evals": [list(evals)]}}


def records_of(rows):
    return {r["name"]: r for r in (record(*row) for row in rows)}


def test_cpu_preset_runs_three_seeds_for_the_verdicts_and_one_for_the_ablations():
    p = fragrow.notebook_parameters("cpu")
    runs = fragrow.experiments(p)
    assert len(runs) == 2 * (7 * 3 + 8 * 1)  # 58 runs: within the cpu preset's budget
    for method in ("small", "large", "FRAGrow", "periodic", "fast", "convergent", "LipGrow"):
        assert list(fragrow.seeds_of(p, method)) == [0, 1, 2], method
    for method in ("FRAGrow a=2", "FRAGrow circulating", "periodic moment"):
        assert list(fragrow.seeds_of(p, method)) == [0], method


def test_lab_preset_is_the_overfitting_regime_of_tables_1_and_5():
    p = fragrow.notebook_parameters("lab")
    runs = fragrow.experiments(p)
    assert p["regimes"] == ["overfitting"] and len(runs) == 5 * 3  # 15 runs for ten minutes
    assert {config["data"]["n_train"] for config in runs.values()} == {500}


def test_paired_difference_and_ratio_pair_runs_by_seed():
    rows = [("overfitting", "periodic", s, t) for s, t in enumerate([0.30, 0.32, 0.31])]
    rows += [("overfitting", "large", s, t, 0.1, w) for s, (t, w) in
             enumerate([(0.29, 20.0), (0.30, 10.0), (0.31, 40.0)])]
    records = records_of(rows)
    d = fragrow.paired(records, P, "overfitting", "periodic", "large", "test")
    assert d.mean == pytest.approx(1.0, abs=EXACT)  # (1 + 2 + 0) / 3 points
    assert d.half == pytest.approx(T_975_2 * 1.0 / math.sqrt(3), abs=1e-9)  # sd = 1
    assert d.method == "paired t" and d.n == 3
    r = fragrow.paired(records, P, "overfitting", "periodic", "large", "time", ratio=True)
    assert r.mean == pytest.approx(100 * (10 / 20 + 10 / 10 + 10 / 40) / 3, abs=EXACT)
    assert fragrow.paired(records, P, "overfitting", "FRAGrow", "large", "test") is None


def test_paired_against_several_methods_takes_the_best_per_seed():
    rows = [("overfitting", "FRAGrow", 0, 0.30), ("overfitting", "FRAGrow a=2", 0, 0.28),
            ("overfitting", "FRAGrow a=6", 0, 0.35)]
    d = fragrow.paired(records_of(rows), P, "overfitting", "FRAGrow",
                       ["FRAGrow a=2", "FRAGrow a=6"], "test")
    assert d.mean == pytest.approx(2.0, abs=EXACT) and d.n == 1 and math.isnan(d.low)


def _claims_records(gap):
    """Three seeds in both regimes; periodic's training error ``gap`` points above large's
    with spread 1, FRAGrow's schedule the same as periodic's (identical runs)."""
    rows = []
    for regime in P["regimes"]:
        for s, noise in enumerate([-0.01, 0.0, 0.01]):
            for method in ("periodic", "FRAGrow", "convergent", "LipGrow", "fast"):
                rows.append((regime, method, s, 0.3, 0.1 + gap / 100 + noise, 8.0, 0.7))
            rows.append((regime, "large", s, 0.3, 0.1, 10.0, 1.0))
            rows.append((regime, "small", s, 0.35, 0.3, 4.0, 0.4))
    return records_of(rows)


def test_claims_are_computed_from_the_intervals():
    claims = Claims("fragrow", "test")
    keys = fragrow.add_claims(claims, _claims_records(gap=5.0), P)
    assert set(keys) == {k for kind in fragrow.KINDS for k in fragrow.claim_keys(kind)} - {
        f"{stem}_{kind}" for stem in ("alpha", "order", "moment") for kind in fragrow.KINDS}
    verdict = {key: c.verdict for key, c in claims.claims.items()}
    # 5 points with half-width 4.30 * 1 / sqrt(3) = 2.48: above zero in both regimes
    assert verdict["slow_train_overfit"] == verdict["slow_train_underfit"] == "confirmed"
    assert verdict["fragrow_time_overfit"] == "confirmed"  # 80 % in every seed
    assert verdict["fragrow_cost_underfit"] == "confirmed"  # 70 % in every seed
    # the same test error in every run: zero differences, never resolved
    assert verdict["vs_periodic_overfit"] == verdict["fragrow_test_overfit"] == "not resolved"
    # "comparable" within one point: zero difference with zero spread is inside
    assert verdict["fragrow_test_underfit"] == "confirmed"
    words = fragrow.summary_words(claims, "overfit")
    assert "slow growth raises the training error: confirmed" in words
    assert "FRAGrow beats periodic growth: not resolved (n = 3; identical runs)" in words


def test_a_gap_the_seeds_cannot_resolve_is_not_resolved():
    claims = Claims("fragrow", "test")
    fragrow.add_claims(claims, _claims_records(gap=1.0), P)  # 1 point, half-width 2.48
    assert claims.claims["slow_train_overfit"].verdict == "not resolved"


def test_prose_keys_of_a_regime_the_preset_did_not_run_say_so():
    p = {**P, "regimes": ["overfitting"], "epochs": [40], "finetune_min": [8],
         "n_train": [500]}
    records = {k: v for k, v in _claims_records(gap=5.0).items() if " overfitting " in k}
    claims = Claims("fragrow", "test")
    fragrow.add_claims(claims, records, p)
    texts = fragrow.glue_texts(claims, records, p)
    for key in fragrow.claim_keys("underfit"):
        assert key not in claims.claims
        assert texts[f"{key}_verdict"] == fragrow.NOT_RUN and texts[f"{key}_n"] == "0"
        assert texts[f"{key}_estimate"] == fragrow.NOT_RUN_VALUE
    assert texts["summary_underfit"] == fragrow.NOT_RUN + "."
    assert texts["ablation_scale"] == "were " + fragrow.NOT_RUN  # Tables 8-10 not run
    assert not set(texts) & {k for c in claims.claims for k in (c, f"{c}_verdict")}
    assert texts["schedules_overfit"].startswith("I_max = 8 epochs, 1 distinct growth")


def test_orl_per_evaluation_is_eq_2_from_the_record():
    evals = [{"iteration": 0, "val_error": 0.9},
             {"iteration": 2, "train_error": 0.40, "val_error": 0.45},
             {"iteration": 4, "train_error": 0.20, "val_error": 0.30}]
    run = record("overfitting", "FRAGrow", 0, 0.3, evals=evals)
    run["iterations_per_epoch"] = 2
    epochs, orl = fragrow.orl_per_evaluation(run)
    assert epochs == [1.0, 2.0]
    assert orl == pytest.approx([5.0, 10.0], abs=1e-9)
    final = fragrow.final_orl({run["name"]: run}, P, "overfitting")
    assert final.mean == pytest.approx(10.0, abs=1e-9) and final.n == 1


def test_interval_check_is_the_policy_and_eq_3():
    errors = [(0.2, 0.2), (0.2, 0.24), (0.1, 0.3)]  # ORL 0, 4 and 20 points
    intervals = fragrow.interval_check(4.0, 180, 30, 24, errors)
    i_max = 6.25
    assert intervals == pytest.approx([i_max / (1 + math.exp(4)), i_max / 2,
                                       i_max / (1 + math.exp(-16))], rel=1e-9)


def test_timing_panels_hold_at_most_six_runs_and_colours_are_fixed_per_method():
    for preset in ("smoke", "lab", "cpu", "gpu"):
        p = fragrow.notebook_parameters(preset)
        groups = fragrow.timing_groups(p)
        assert groups and all(len(g) <= 6 for g in groups.values()), preset
    assert fragrow.style("FRAGrow circulating")["color"] == fragrow.style("FRAGrow")["color"]
    assert fragrow.style("FRAGrow circulating")["ls"] != fragrow.style("FRAGrow moment")["ls"]
    colours = [fragrow.COLORS[m] for m in fragrow.COLORS]
    assert len(set(colours)) == len(colours)


# ---------------------------------------------------------------- ImageNet streamed from disk
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The streaming tests' ImageFolder tree: 3 classes, 12 training and 6 test JPEGs."""
    from test_streaming_train import write_tree

    return write_tree(tmp_path_factory.mktemp("imagefolder"))


def _streamed(tree, **overrides) -> dict:
    """The smoke preset on the tree, streamed by two workers at 32 px: 3 of the 12 training
    images held out, batches of 4, both regimes augmented."""
    from growcore.runner import notebook_parameters

    tiny = {"dataset": "imagenet", "data_root": str(tree), "stream": True, "num_workers": 2,
            "image_size": 32, "augment": [True, True], "n_val": 3, "batch_size": 4}
    return notebook_parameters("fragrow", "smoke", **{**tiny, **overrides})


def test_stream_builds_the_drivers_streamed_config_for_every_run(tree):
    """With stream every run's data section is the driver's streamed one: the tree under
    data_root at image_size, num_workers processes, n_val held out (split_seed 0), and no
    n_train or n_test, which a stream does not read (not even checked against the tree: 5000
    training and the smoke preset's 64 test images are refused in memory, ignored streamed).
    The driver accepts it as it is."""
    from growcore import driver
    from growcore.params import ParameterError

    p = fragrow.validate(_streamed(tree, n_train=[5000, 5000]))
    data = {"name": "imagenet", "root": str(tree), "image_size": 32, "stream": True,
            "num_workers": 2, "n_val": 3, "split_seed": 0}
    runs = fragrow.experiments(p)
    assert len(runs) > 2 and all(config["data"] == data for config in runs.values())
    config = runs["resnet overfitting FRAGrow s0"]
    assert driver.is_streamed(driver.validate(config)["data"])
    assert driver.run_experiment(config, device="cpu", check_only=True)["data"] == data
    with pytest.raises(ParameterError, match="parameter 'n_train'"):
        fragrow.validate(_streamed(tree, n_train=[5000, 5000], stream=False,
                                   augment=[False, True]))
    in_memory = fragrow.data_section(fragrow.validate(_streamed(
        tree, stream=False, n_train=[6, 8], n_test=4)), 1)
    assert "stream" not in in_memory and (in_memory["n_train"], in_memory["n_test"]) == (8, 4)


@pytest.mark.parametrize(("changes", "name", "fragment"), [
    ({"dataset": "cifar10"}, "stream", "needs dataset 'imagenet'"),
    ({"dataset": "cifar100"}, "stream", "got dataset 'cifar100'"),
    ({"augment": [False, True]}, "augment", "always augments"),
    ({"n_val": 12}, "n_val", "has 12"),
    ({"batch_size": 10}, "batch_size", "the 9 training images streamed"),
    ({"num_workers": -1}, "num_workers", ">= 0"),
    ({"stream": 1}, "stream", "bool"),
])
def test_bad_streamed_parameters_are_refused_by_name(tree, changes, name, fragment):
    """Refused by fragrow.validate, before any image is decoded or any run starts."""
    from growcore.params import ParameterError

    with pytest.raises(ParameterError, match=f"parameter '{name}'") as error:
        fragrow.validate(_streamed(tree, **changes))
    assert fragment in str(error.value)

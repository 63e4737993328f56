"""The CIFAR-10 benchmark of the comparison chapter's factorial (part 4): its configurations
through the driver, its smoke run end to end on generated images into the chapter's
analysis, the pairing of seeds across cells, the schedule of the timings, and bad parameters
refused before compute, each naming the parameter. No test reads the real archive."""

from __future__ import annotations

import pytest

from growcore import driver
from growcore.chapters import compare
from growcore.chapters import compare_cifar as cc
from growcore.params import ParameterError
from growcore.plan import GrowthPlan, PlanError
from growcore.runner import notebook_parameters as runner_parameters

SHARED = {"fragrow_alpha": 4.0, "convergent_patience": 2, "norm_scale": 0.5, "opt_steps": 2,
          "firefly_steps": 1, "cifar10_archive": ""}


def preset_values(preset: str) -> dict:
    """The chapter's ``cifar_factorial_*`` values under ``preset`` (the notebook's parameters
    cell updated by presets/compare.yml), not yet validated."""
    values = runner_parameters("compare", preset)
    return {k: v for k, v in values.items() if k in cc.CIFAR_PARAMETERS}


CPU = preset_values("cpu")
# seconds on generated images: 60 training images, batches of 20, 3 epochs, one growth
SMOKE = {**CPU, **SHARED, "cifar_factorial_n_train": 60,
         "cifar_factorial_n_val": 20, "cifar_factorial_n_test": 20,
         "cifar_factorial_epochs": 3, "cifar_factorial_final_epochs": 1.0,
         "cifar_factorial_batch_size": 20, "cifar_factorial_widths": [4, 8],
         "cifar_factorial_units": 2, "cifar_factorial_growths": 1,
         "cifar_factorial_seeds": 2}
SAME_LOSS = 1e-6  # relative: the first batch's loss of one seed in two cells (float32)


@pytest.fixture(scope="module")
def images():
    return cc.generated_cifar(60, 20, 20, seed=3)


@pytest.fixture(scope="module")
def params(images):
    return cc.validate_cifar(SMOKE, split=images)


@pytest.fixture(scope="module")
def runs(params, images):
    return cc.run_cifar_factorial(params, save=False, split=images)


def test_every_configuration_passes_the_driver_check(params, images):
    configs = cc.cifar_factorial_experiments(params)
    cells = cc.cifar_factorial_cells(params)
    assert set(configs) == {*cells, ("static", "small", ""), ("static", "large", "")}
    assert len(cells) == 2 * 2 * 2 and len({c["name"] for c in configs.values()}) == len(configs)
    for config in configs.values():
        checked = driver.run_experiment(config, split=images, device="cpu", progress=False,
                                        save=False, check_only=True)
        assert checked["data"]["name"] == "cifar10" and checked["seeds"] == [0, 1]
    first = configs[cells[0]]
    for cell in cells:  # the cells differ only in their plan
        assert {k: v for k, v in configs[cell].items() if k not in ("name", "plan")} == {
            k: v for k, v in first.items() if k not in ("name", "plan")}
        when, where, how = (configs[cell]["plan"][part]["name"] for part in compare.FACTORS)
        assert (when, where, how) == cell


def test_the_presets_validate(monkeypatch):
    """Every preset's values (the gpu preset's full training set included) pass the checks,
    against CIFAR-10's sizes (the archive itself is not read)."""
    monkeypatch.setattr("growcore.images.dataset_sizes", lambda *args: (50_000, 10_000))
    for name in ("smoke", "lab", "cpu", "gpu"):
        q = cc.validate_cifar({**SHARED, **preset_values(name)})
        assert q["cifar_factorial_n_train"] + q["cifar_factorial_n_val"] <= 50_000, name
    gpu = cc.validate_cifar({**SHARED, **preset_values("gpu")})
    assert len(cc.cifar_factorial_cells(gpu)) == 5 * 4 * 3


def test_smoke_factorial_feeds_the_chapter_analysis(runs, params):
    rows, static = cc.factorial_rows(runs)
    cells, seeds = cc.cifar_factorial_cells(params), params["cifar_factorial_seeds"]
    assert len(rows) == len(cells) * seeds
    assert set(static["how"]) == {""}
    assert set(static["where"]) == {"small", "large", "grown GradMax"}
    assert rows.test_error.between(0, 1).all() and (rows.flops > 0).all()
    effects = compare.main_effects(rows, "test_error")
    assert set(effects) == {("when", "fragrow"), ("where", "singular_value"),
                            ("how", "gradmax")}
    assert all(e.n == seeds for e in effects.values())
    explained = compare.variance_explained(rows, list(compare.FACTORS), "test_error")
    assert 0 <= explained["full"] <= 1 + 1e-9
    assert set(explained) == {"full", *compare.FACTORS}
    summary = compare.cell_summary(rows)
    assert len(summary) == len(cells) and summary.pareto.any()
    best, against = compare.best_against_papers(rows)
    assert best not in compare.PAPER_CELLS.values()
    assert set(against) == {"GradMax", "FRAGrow"}  # NAGN's own cell is not in this subset


def test_growth_follows_the_plan(runs, params):
    """Every grown network is the start network widened by ``units`` channels at one site
    per growth (singular_value and random_width choose one site), the fixed schedule grows at
    ``I_max`` epochs (FRAGrow eq. 4) and the grown-size static has the widths of its cell."""
    start, units = params["cifar_factorial_widths"], params["cifar_factorial_units"]
    per_epoch = cc.iterations_per_epoch(params)
    i_max = ((params["cifar_factorial_epochs"] - params["cifar_factorial_final_epochs"])
             / params["cifar_factorial_growths"])
    for key, out in runs.items():
        if key[0] == "static":
            continue
        for widths, growths in zip(out["widths"], out["growths"]):
            assert len(growths) == params["cifar_factorial_growths"], key
            added = [w - s for w, s in zip(widths, start)]
            assert sorted(added) == [0] * (len(start) - 1) + [units * len(growths)], key
            if key[0] == "every":
                assert growths == [round(i_max * per_epoch)], key
    grown = runs["static", "grown GradMax", ""]
    assert grown["of"] == compare.PAPER_CELLS["GradMax"]
    assert grown["widths"] == runs[grown["of"]]["widths"] and grown["growths"] == [[], []]
    assert runs["static", "large", ""]["widths"] == [[2 * w for w in start]] * 2


def test_seeds_pair_across_cells(runs):
    """Seed s starts every cell (and the static network of the start size) from the same
    network on the same first batch: the first losses agree across cells, and differ
    between seeds (so the check can fail)."""
    keys = [key for key in runs if key[0] != "static" or key[1] == "small"]
    first = [runs[key]["first_loss"] for key in keys]
    for losses in first:
        assert losses == pytest.approx(first[0], rel=SAME_LOSS)
    assert abs(first[0][0] - first[0][1]) > 1e-3 * abs(first[0][0])


BAD = [
    ("cifar_factorial_where", ["sensli", "random_width"], "cifar_factorial_where"),
    ("cifar_factorial_where", ["fixed_sites", "random_width"], "cifar_factorial_where"),
    ("cifar_factorial_when", ["sometimes", "every"], "cifar_factorial_when"),
    ("cifar_factorial_how", [], "cifar_factorial_how"),
    ("cifar_factorial_how", ["gradmax"], "must include 'random'"),
    ("cifar_factorial_where", ["random_width", "random_width"], "names each once"),
    ("cifar_factorial_seeds", -1, "cifar_factorial_seeds"),
    ("cifar_factorial_n_train", -5, "cifar_factorial_n_train"),
    ("cifar_factorial_n_train", 75, "must not exceed the 80 training images"),
    ("cifar_factorial_n_test", 21, "cifar_factorial_n_test"),
    ("cifar_factorial_units", 0, "cifar_factorial_units"),
    ("cifar_factorial_final_epochs", 3.0, "cifar_factorial_final_epochs"),
    ("cifar_factorial_batch_size", 100, "cifar_factorial_batch_size"),
    ("cifar_factorial_widths", [4] * 6, "cifar_factorial_widths"),  # 32 px, 6 poolings
    ("cifar_factorial_lr", float("nan"), "cifar_factorial_lr"),
    ("norm_scale", -1.0, "norm_scale"),
    ("cifar_factorial_grown_size", ["NAGN"], "NAGN's own cell"),  # not in this subset
    ("cifar_factorial_grown_size", ["Net2Net"], "cifar_factorial_grown_size"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD)
def test_bad_values_are_refused_before_compute(name, value, message, images, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before the parameters were checked")

    monkeypatch.setattr(driver, "_run_group", no_training)
    with pytest.raises(ParameterError, match=message) as error:
        cc.validate_cifar({**SMOKE, name: value}, split=images)
    assert name in str(error.value)


def test_missing_shared_parameter_is_named(images):
    with pytest.raises(ParameterError, match="fragrow_alpha"):
        cc.validate_cifar({k: v for k, v in SMOKE.items() if k != "fragrow_alpha"},
                          split=images)


def test_missing_archive_is_refused_naming_the_parameter(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWCORE_DATA", str(tmp_path))  # no cache there either
    absent = str(tmp_path / "no-such-archive.tar.gz")
    with pytest.raises(ParameterError, match="cifar10_archive") as error:
        cc.validate_cifar({**SMOKE, "cifar10_archive": absent})
    assert absent in str(error.value)


def test_a_cell_the_conv_net_cannot_grow_names_the_factor(images, monkeypatch):
    """A plan the network refuses (here made so for random_width) stops the check, naming
    the factor's parameter and the cell."""
    check = GrowthPlan.check

    def refuse_random(self, model):
        if type(self.where).__name__ == "RandomWidth":
            raise PlanError(f"RandomWidth cannot grow {type(model).__name__}: refused here")
        return check(self, model)

    monkeypatch.setattr(GrowthPlan, "check", refuse_random)
    with pytest.raises(ParameterError, match="cifar_factorial_where") as error:
        cc.validate_cifar(SMOKE, split=images)
    assert "random_width" in str(error.value) and "refused here" in str(error.value)


def test_expected_cost_counts_every_run_and_scales_with_seeds(params):
    cost = cc.expected_cost(params)
    assert cost["runs"] == len(cc.cifar_factorial_experiments(params)) + 1  # + grown size
    assert 0 < cost["gpu_hours"]["lower"] <= cost["gpu_hours"]["upper"]
    double = cc.expected_cost({**params, "cifar_factorial_seeds": 4})
    assert double["updates"] == 2 * cost["updates"]
    assert double["gpu_hours"]["lower"] == pytest.approx(2 * cost["gpu_hours"]["lower"])

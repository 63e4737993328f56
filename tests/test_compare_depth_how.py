"""Part 2 of the comparison chapter in depth: one block inserted into the same seed ResNet by
every depth initialiser. The configurations differ only in the initialiser, paired seeds
share the initial network and the batches up to the insertion, the smoke part runs on
generated images (the archive is not read), the function-preservation check tells the
identity block from the others, and bad parameters are refused by name before compute."""

from __future__ import annotations

import copy

import pytest
import torch

from growcore.chapters import compare
from growcore.data import Split
from growcore.driver import build_model
from growcore.models.resnet import resnet
from growcore.models.sites import Proposal, depth_sites
from growcore.registry import entry, names
from growcore.runner import notebook_parameters


@pytest.fixture(scope="module")
def params() -> dict:
    return compare.validate(notebook_parameters("compare", "cpu"))


@pytest.fixture(scope="module")
def smoke_params() -> dict:
    return compare.validate(notebook_parameters("compare", "smoke"))


def generated_images(n_train: int, n_test: int, seed: int = 0) -> Split:
    """CIFAR-shaped uint8 images whose class shifts the mean of one channel (learnable)."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    y = torch.randint(0, 10, (n,), generator=g)
    X = torch.randint(0, 200, (n, 3, 32, 32), generator=g)
    X[:, y % 3] += (5 * y).view(-1, 1, 1, 1).expand(-1, 1, 32, 32).clamp(max=55)
    X = X.clamp(0, 255).to(torch.uint8)
    return Split(X[:n_train], y[:n_train], X[n_train:], y[n_train:])


@pytest.fixture(scope="module")
def smoke_run(smoke_params):
    split = generated_images(smoke_params["n_train"], smoke_params["n_test"])
    records = compare.run_depth_how(smoke_params, split=split, save=False)
    return records, compare.depth_how_outcomes(records, smoke_params)


def test_every_depth_initialiser_of_the_registry_takes_part(params):
    assert set(compare.DEPTH_INITIALISERS) == set(names("how", "depth"))
    assert set(params["depth_initialisers"]) == set(names("how", "depth"))


def test_configs_differ_only_in_the_initialiser(params):
    runs = compare.depth_how_experiments(params)
    assert set(runs) == {*params["depth_initialisers"], compare.SEED_NETWORK}

    def less_how(config):
        out = copy.deepcopy(config)
        out.pop("name")
        out["plan"].pop("how")
        return out

    grown = [runs[how] for how in params["depth_initialisers"]]
    assert all(less_how(c) == less_how(grown[0]) for c in grown[1:])
    assert [c["plan"]["how"]["name"] for c in grown] == params["depth_initialisers"]
    plan = grown[0]["plan"]
    assert plan["when"] == {"name": "at", "iterations": [params["depth_how_growth_step"]]}
    assert plan["where"]["target"] == compare.depth_how_target(params)
    assert sum(plan["where"]["target"]) == sum(params["depth_how_blocks"]) + 1
    seed_net = runs[compare.SEED_NETWORK]
    assert "plan" not in seed_net
    assert seed_net["train"]["iterations"] == params["depth_how_growth_step"] + 1
    assert {**seed_net["train"], "iterations": 0} == {**grown[0]["train"], "iterations": 0}
    assert seed_net["model"] == grown[0]["model"] and seed_net["data"] == grown[0]["data"]


def test_paired_seeds_share_the_initial_network(params):
    split = generated_images(20, 10)
    runs = compare.depth_how_experiments(params)

    def initial(config, seed):
        torch.manual_seed(config["train"]["init_seed"] + seed)  # as the driver seeds a run
        return build_model(config["model"], split, [seed]).state_dict()

    for seed in (0, 1):
        first = initial(runs["identity"], seed)
        for name in runs:
            other = initial(runs[name], seed)
            assert all(torch.equal(first[k], other[k]) for k in first)
    zero, one = initial(runs["identity"], 0), initial(runs["identity"], 1)
    assert not all(torch.equal(zero[k], one[k]) for k in zero)


def test_paired_runs_see_the_same_batches_with_the_same_weights_until_the_insertion(
        smoke_params, smoke_run):
    records, _ = smoke_run
    g = smoke_params["depth_how_growth_step"]
    seed_net = records[compare.SEED_NETWORK]["metrics"]["loss"]
    for how in smoke_params["depth_initialisers"]:
        losses = records[how]["metrics"]["loss"]
        assert [loss[:g] for loss in losses] == [loss[:g] for loss in seed_net]
        assert len(losses[0]) == smoke_params["depth_how_steps"]
        assert records[how]["metrics"]["final_model"][0]["depths"] == \
            compare.depth_how_target(smoke_params)


def test_smoke_part_runs_and_pairs_every_initialiser_with_identity(smoke_params, smoke_run):
    _, outcomes = smoke_run
    n = smoke_params["depth_how_seeds"]
    assert len(outcomes) == n * len(smoke_params["depth_initialisers"])
    differences = compare.depth_how_differences(outcomes)
    others = [h for h in smoke_params["depth_initialisers"] if h != compare.DEPTH_REFERENCE]
    assert set(differences) == {(h, m) for h in others for m in compare.DEPTH_HOW_MEASURES}
    assert all(e.n == n and e.low <= e.mean <= e.high for e in differences.values())
    rows = compare.depth_how_difference_rows(outcomes)
    assert len(rows) == n * len(others) * len(compare.DEPTH_HOW_MEASURES)
    gaps = compare.depth_how_loss_gaps(*smoke_run[:1], smoke_params)
    assert set(gaps) == set(others)
    assert gaps["block_copy"].shape == (n, smoke_params["depth_how_steps"])
    assert (gaps["block_copy"][:, :smoke_params["depth_how_growth_step"]] == 0).all()


def test_identity_keeps_the_function_and_a_copied_block_does_not(smoke_run):
    _, outcomes = smoke_run
    check = compare.function_preservation(outcomes)
    assert check["identity"]["preserves"]
    assert check["identity"]["largest"] <= compare.PRESERVED
    # a copy adds the preceding block's residual branch once more: the function changes
    assert not check["block_copy"]["preserves"]
    assert check["block_copy"]["largest"] > 100 * compare.PRESERVED


def test_block_copy_copies_a_shape_preserving_block_and_falls_back_after_downsampling():
    torch.manual_seed(0)
    model = resnet((1, 1), widths=(8, 16))
    how = entry("how", "block_copy").build()
    sites = {site.container: site for site in depth_sites(model)}
    copied = how(model, Proposal(sites["stages.0"]))
    template = model.stages[0][0]
    assert all(torch.equal(a, b) for a, b in zip(copied.state_dict().values(),
                                                  template.state_dict().values()))
    fresh = how(model, Proposal(sites["stages.1"]))  # after the stride-2 block 8 -> 16
    assert fresh.conv1.in_channels == 16 and fresh.downsample is None
    assert model.stages[1][0].conv1.in_channels == 8  # not copyable: He-initialised instead
    assert compare.new_block_is_copy(model, "block_copy") == {"stages.0": True,
                                                              "stages.1": False}
    assert compare.new_block_is_copy(model, "block_kaiming") == {"stages.0": False,
                                                                 "stages.1": False}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("depth_initialisers", ["identity", "net2deeper"], "parameter 'depth_initialisers' must"),
    ("depth_initialisers", [], "with at least 1 item"),
    ("depth_initialisers", ["block_copy"], "must include 'identity'"),
    ("depth_initialisers", ["identity"], "one or more initialisers to compare with it"),
    ("depth_initialisers", ["identity", "identity"], "names each initialiser once"),
    ("depth_how_seeds", -2, "parameter 'depth_how_seeds'"),
    ("depth_how_steps", -5, "parameter 'depth_how_steps'"),
    ("depth_how_growth_step", -1, "parameter 'depth_how_growth_step'"),
    ("depth_how_after_steps", 0, "parameter 'depth_how_after_steps'"),
    ("depth_how_blocks", [1, -1], "parameter 'depth_how_blocks'"),
    ("depth_how_blocks", [1, 1, 1], "one block count per stage width"),
    ("depth_how_widths", [], "with at least 1 item"),
    ("depth_how_stage", 2, "must be a stage of the seed network"),
    ("depth_how_steps", 60, "must exceed depth_how_growth_step + depth_how_after_steps"),
    ("depth_how_batch_size", 100_000, "must not exceed n_train"),
    ("depth_how_lr", 0.0, "parameter 'depth_how_lr'"),
    ("depth_moment_decay", 1.0, "parameter 'depth_moment_decay'"),
])
def test_bad_depth_how_parameters_are_refused_by_name(params, name, value, message):
    with pytest.raises(compare.ParameterError, match=name) as error:
        compare.validate({**params, name: value})
    assert message in str(error.value)

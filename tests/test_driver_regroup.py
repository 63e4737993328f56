"""Seed-batched runs with per-seed data whose seeds choose different sites: the driver
regroups the seeds by their choice, and every group must train on its own seeds' data.

The seeds draw their own teacher and points (``data.per_seed``, or a
:class:`growcore.data.SeedSplits` given as the split, as the comparison chapter's parts 3 and
4 do), and a site-choosing criterion reads each seed's data, so the seeds disagree on where to
grow. Each seed of the regrouped batched run must equal that seed run alone: an ordinary
(not seed-batched) model on that seed's split.
"""

import pytest
import torch

from growcore.data import SeedSplits
from growcore.driver import load_data, run_experiment

BATCHED_TOL = 1e-6  # float32: batched and one-seed-at-a-time runs agree to rounding
DATA = {"name": "teacher_student", "per_seed": True, "teacher": [6, 5, 3], "n_points": 40}


def _config(seeds, where, batched=True):
    model = {"name": "mlp", "hidden": [4, 4], "activation": "relu1"}
    return {"name": "regroup", "seeds": list(seeds), "data": dict(DATA),
            "model": {**model, "seed_batched": True} if batched else model,
            "train": {"iterations": 12, "lr": 0.05, "loss": "mse", "init_seed": 0,
                      "eval_every": 4},
            "plan": {"when": {"name": "at", "iterations": 6},
                     "where": {"name": where, "k": 2, "n_sites": 1}, "how": "random"}}


def _run(config, split=None):
    return run_experiment(config, split=split, progress=False, save=False, device="cpu")


def _batched(seeds, where, given):
    """The seed-batched run: the driver draws each seed's data (``data.per_seed``), or the
    seeds' splits are given stacked (``data.per_seed`` off)."""
    config = _config(seeds, where)
    if not given:
        return _run(config)
    split = SeedSplits.stack([load_data(DATA, s) for s in seeds])
    return _run({**config, "data": {**DATA, "per_seed": False}}, split)


def _sites(record):
    """Seed -> the (iteration, site, amount) of its growths in a record: a proposal names
    its seed by its position in the event's seeds."""
    found: dict[int, list] = {}
    for event in record["metrics"]["events"]:
        for p in event["proposals"]:
            seed = event["seeds"][p.get("seed", 0)]
            found.setdefault(seed, []).append((event["iteration"], p["site"], p["amount"]))
    return found


# seeds 3..6 split into [3, 4, 6] and [5] (a group not led by the run's first seed, of seeds
# that are not their positions); seeds 0..3 into [0] and [1, 2, 3] (the first seed alone)
CASES = [([3, 4, 5, 6], "gradient_norm"), ([0, 1, 2, 3], "singular_value")]


@pytest.mark.parametrize("given", [False, True], ids=["data.per_seed", "given SeedSplits"])
@pytest.mark.parametrize(("seeds", "where"), CASES)
def test_regrouped_seeds_with_per_seed_data_equal_the_seeds_alone(seeds, where, given):
    batched = _batched(seeds, where, given)
    assert batched["regrouped"] and len(batched["seed_groups"]) > 1, \
        "the test needs seeds that choose different sites"
    assert sorted(s for group in batched["seed_groups"] for s in group) == sorted(seeds)
    m = batched["metrics"]
    assert m["seed"] == seeds
    chosen = _sites(batched)
    assert len({tuple(c) for c in chosen.values()}) > 1
    for i, seed in enumerate(seeds):
        one = _config([seed], where, batched=False)
        alone = (_run(one) if not given else
                 _run({**one, "data": {**DATA, "per_seed": False}}, load_data(DATA, seed)))
        a = alone["metrics"]
        assert torch.allclose(torch.tensor(m["loss"][i]), torch.tensor(a["loss"][0]),
                              atol=BATCHED_TOL), f"seed {seed}: training loss"
        for key in ("final_test", "final_train"):
            assert m[key][i] == pytest.approx(a[key][0], abs=BATCHED_TOL), f"seed {seed}: {key}"
        assert m["n_params"][i] == a["n_params"][0]
        assert m["final_model"][i]["widths"] == a["final_model"][0]["widths"]
        assert chosen[seed] == _sites(alone)[seed], f"seed {seed}: its growth"
        evals, own = m["evals"][i], a["evals"][0]
        assert [e["iteration"] for e in evals] == [e["iteration"] for e in own]
        assert [e["test_error"] for e in evals] == pytest.approx(
            [e["test_error"] for e in own], abs=BATCHED_TOL), f"seed {seed}: evaluations"


def test_a_given_seed_split_must_hold_one_split_per_seed():
    from growcore.params import ParameterError

    split = SeedSplits.stack([load_data(DATA, s) for s in (0, 1)])
    config = {**_config([0, 1, 2], "gradient_norm"), "data": {**DATA, "per_seed": False}}
    with pytest.raises(ParameterError, match="one split per seed"):
        _run(config, split)

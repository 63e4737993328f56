"""The spine: optimiser-state carry, the training loop, batched seeds, records, validation."""

import itertools
import json
from pathlib import Path

import pytest
import torch

from growcore import results
from growcore.data import Split, spiral
from growcore.driver import run_experiment
from growcore.experiments import chosen_sites, spiral_config
from growcore.how import IdentityLayer
from growcore.models import build
from growcore.ops import at_positions, insert_layers, make_optimizer, rebuild_optimizer
from growcore.params import ParameterError, Spec, check, require, validate
from growcore.plan import GrowthPlan
from growcore.train import evaluate, train
from growcore.when import AtIterations, Every, TrainState
from growcore.where import SensLI

BATCHED_TOL = 1e-6   # float32: batched and one-seed-at-a-time runs agree to rounding


def _stepped(optimizer_name, seeds=(0, 1)):
    data = spiral()
    model = build("fnn", [4, 4], list(seeds))
    opt = make_optimizer(optimizer_name, model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        model(data.X_train).pow(2).mean().backward()
        opt.step()
    return model, opt


def _state_by_name(model, opt):
    return {name: opt.state[p] for name, p in model.named_parameters() if p in opt.state}


@pytest.mark.parametrize("name, keys", [("sgd", ["momentum_buffer"]),
                                        ("adam", ["exp_avg", "exp_avg_sq"]),
                                        ("adamw", ["exp_avg", "exp_avg_sq"])])
def test_optimiser_state_is_carried_across_insertion(name, keys):
    model, opt = _stepped(name)
    growth = insert_layers(model, at_positions(model, [1, 1]), IdentityLayer())
    new_opt = rebuild_optimizer(opt, model, growth, lr=0.01)
    old, new = _state_by_name(model, opt), _state_by_name(growth.model, new_opt)
    assert new_opt.param_groups[0]["lr"] == 0.01
    assert "hidden.1.W" not in new                      # the inserted layer starts at zero
    for key in keys:                                    # shifted layers keep their state
        assert torch.equal(new["hidden.2.W"][key], old["hidden.1.W"][key])
        assert torch.equal(new["hidden.0.b"][key], old["hidden.0.b"][key])
        assert torch.equal(new["output.0.W"][key], old["output.0.W"][key])
    if name != "sgd":
        assert float(new["hidden.2.W"]["step"]) == 3


def test_mixed_new_and_old_entries_get_zero_momentum():
    model, opt = _stepped("sgd")
    growth = insert_layers(model, at_positions(model, [1, 2]), IdentityLayer())
    new = _state_by_name(growth.model, rebuild_optimizer(opt, model, growth))
    old = _state_by_name(model, opt)
    buffer = new["hidden.1.W"]["momentum_buffer"]
    assert buffer[0].abs().max() == 0                                  # seed 0: new layer
    assert torch.equal(buffer[1], old["hidden.1.W"]["momentum_buffer"][1])  # seed 1: old layer


def test_adam_refuses_one_step_count_for_mixed_tensors():
    model, opt = _stepped("adam")
    growth = insert_layers(model, at_positions(model, [1, 2]), IdentityLayer())
    with pytest.raises(ValueError, match="one step count per tensor"):
        rebuild_optimizer(opt, model, growth)


def test_unknown_optimiser_is_named():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lbfgs", build("fnn", [3], [0]).parameters(), lr=0.1)


def test_at_iterations_policy():
    when = AtIterations([450, 150])
    assert [t for t in range(1000) if when(TrainState(t))] == [150, 450]
    with pytest.raises(ValueError, match="non-negative"):
        AtIterations(-1)


@pytest.mark.parametrize("model, widths, select", [("fnn", [4, 4], "max"),
                                                   ("resnet", [3, 3, 3], "min")])
def test_batched_seeds_reproduce_one_seed_at_a_time(model, widths, select):
    config = spiral_config(model, widths, seeds=[3, 4, 5], iterations=40, lr=0.2,
                           insert_at=15, select=select, lr_factor=0.8)
    batched = run_experiment(config, batched=True, progress=False, save=False, device="cpu")
    alone = run_experiment(config, batched=False, progress=False, save=False, device="cpu")
    b, a = batched["metrics"], alone["metrics"]
    assert torch.allclose(torch.tensor(b["loss"]), torch.tensor(a["loss"]), atol=BATCHED_TOL)
    assert b["test_error"] == a["test_error"]
    assert chosen_sites(batched) == chosen_sites(alone)
    assert batched["seed_groups"] == [[3, 4, 5]] and alone["seed_groups"] == [[3], [4], [5]]
    assert b["n_params"] == a["n_params"]


def test_training_loop_records_growth_and_cost():
    config = spiral_config("fnn", [5], seeds=[0, 1], iterations=30, lr=0.2, insert_at=10)
    record = run_experiment(config, progress=False, save=False, device="cpu")
    m = record["metrics"]
    assert m["n_params"][0][9] == 27 and m["n_params"][1][10] == 57
    assert len(m["loss"]) == 2 and len(m["loss"][0]) == 30
    event = m["events"][0]
    assert event["iteration"] == 10 and event["chosen"] == [1, 1] and event["seeds"] == [0, 1]
    steps = torch.tensor(m["cost_flops"][0]).diff()
    # one step of the grown net costs more; the growth step adds the merit evaluation
    assert steps[9] > steps[10] > steps[8]   # steps[9] = cost[10] - cost[9]
    # function preserved at insertion: loss continues smoothly (full-batch GD, small lr)
    assert abs(m["loss"][0][10] - m["loss"][0][9]) < 0.05


def test_seeds_choosing_different_shapes_are_regrouped():
    """FNN [8, 3]: seeds that insert after different layers get different widths; the run
    splits them into groups by choice and still reproduces one-seed-at-a-time runs."""
    seeds = list(range(8))
    config = spiral_config("fnn", [8, 3], seeds=seeds, iterations=30, lr=0.2, insert_at=20,
                           normalisation="code")
    batched = run_experiment(config, progress=False, save=False, device="cpu")
    alone = run_experiment(config, batched=False, progress=False, save=False, device="cpu")
    chosen = chosen_sites(batched)
    assert len(set(chosen.values())) == 2, "the test needs seeds that disagree"
    assert batched["regrouped"] and sorted(itertools.chain(*batched["seed_groups"])) == seeds
    assert chosen == chosen_sites(alone)
    assert torch.allclose(torch.tensor(batched["metrics"]["loss"]),
                          torch.tensor(alone["metrics"]["loss"]), atol=BATCHED_TOL)
    n_final = {s: batched["metrics"]["n_params"][s][-1] for s in seeds}
    assert {n_final[s] for s in seeds if chosen[s] == 1} == {2 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3
                                                            + 3 * 2 + 2}
    assert {n_final[s] for s in seeds if chosen[s] == 2} == {2 * 8 + 8 + 8 * 3 + 3 + 3 * 3 + 3
                                                            + 3 * 2 + 2}


def test_records_are_written_atomically_and_never_overwritten(tmp_path):
    record = {"name": "exp", "config": {"a": 1}, "metrics": {"loss": [1.0]}}
    first = results.save_record(record, tmp_path)
    second = results.save_record({**record, "metrics": {"loss": [2.0]}}, tmp_path)
    assert first != second and first.exists() and second.exists()
    assert json.loads(first.read_text())["metrics"]["loss"] == [1.0]
    assert not list(tmp_path.glob(".tmp-*"))
    assert results.latest("exp", {"a": 1}, tmp_path)["metrics"]["loss"] == [2.0]
    assert results.latest("exp", {"a": 2}, tmp_path) is None


def test_records_describe_how_they_were_made(tmp_path):
    config = spiral_config("fnn", [3], seeds=[0], iterations=2, lr=0.1, name="describe")
    record = run_experiment(config, directory=tmp_path, preset="smoke", progress=False,
                            device="cpu")
    saved = results.load_record(record["path"])
    env = saved["environment"]
    for key in ("code_version", "torch", "numpy", "python", "device"):
        assert env[key]
    assert saved["config"]["model"] == config["model"] and saved["preset"] == "smoke"
    assert saved["wall_time_s"] > 0


def test_records_without_a_folder_go_to_the_results_folder(tmp_path, monkeypatch):
    """One record builder for every driver: ``store`` without a folder saves under
    ``$GROWCORE_RESULTS``; ``save=False`` saves nothing."""
    monkeypatch.setenv("GROWCORE_RESULTS", str(tmp_path))
    record = results.make_record("default", {"a": 1}, preset="smoke", seeds=[0, 1],
                                 wall_time_s=0.5, metrics={"loss": [1.0]})
    assert record["seeds"] == [0, 1] and record["environment"]["code_version"]
    assert "path" not in results.store(dict(record), save=False)
    saved = results.store(record)
    assert Path(saved["path"]).parent == tmp_path
    assert results.load_record(saved["path"])["metrics"] == {"loss": [1.0]}


def test_parameter_validation_names_the_parameter():
    specs = {"n_seeds": Spec(int, minimum=1), "select": Spec(str, choices=("max", "min")),
             "sweep": Spec(list, item=int, minimum=0, min_length=1)}
    good = {"n_seeds": 3, "select": "max", "sweep": [1, 2]}
    assert validate(good, specs) == good
    with pytest.raises(ParameterError, match=r"'n_seeds' must be int >= 1; got -3"):
        validate({**good, "n_seeds": -3}, specs)
    with pytest.raises(ParameterError, match=r"'select' must be .*one of 'max', 'min'"):
        validate({**good, "select": "best"}, specs)
    with pytest.raises(ParameterError, match="'sweep'"):
        validate({**good, "sweep": [1, -2]}, specs)
    with pytest.raises(ParameterError, match="'n_seeds'"):
        check("n_seeds", True, specs["n_seeds"])      # a bool is not an int
    with pytest.raises(ParameterError, match="missing parameter"):
        validate({"n_seeds": 1}, specs)
    with pytest.raises(ParameterError, match="'iterations': must exceed"):
        require(False, "iterations", "must exceed insertion_iteration")


def test_every_policy():
    when = Every(200, count=5)
    assert [t for t in range(2000) if when(TrainState(t))] == [200, 400, 600, 800, 1000]
    assert [t for t in range(10) if Every(3, start=1)(TrainState(t))] == [1, 4, 7]
    with pytest.raises(ValueError, match="interval"):
        Every(0)


def test_regression_with_per_seed_targets_and_step_metrics():
    """MSE on per-seed targets (a teacher per seed) and a metric read after backward."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 2, generator=g)
    Y = torch.randn(3, 64, 2, generator=g)             # a different target per seed
    model = build("fnn", [4], [0, 1, 2])

    def grad_norm(m):
        return torch.stack([p.grad.flatten(1).norm(dim=1) for p in m.parameters()]).norm(dim=0)

    _, history = train(model, Split(X, Y, X, Y), iterations=20, lr=0.05, loss="mse",
                       step_metrics={"grad_norm": grad_norm}, progress=False)
    loss = torch.stack(history.loss)
    assert loss.shape == (20, 3) and (loss[-1] < loss[0]).all()
    assert torch.allclose(history.test_error[0], loss[0])  # test = train data here
    assert len(history.extra["grad_norm"]) == 20 and (history.extra["grad_norm"][0] > 0).all()
    alone = train(build("fnn", [4], [1]), Split(X, Y[1:2], X, Y[1:2]), iterations=20, lr=0.05,
                  loss="mse", progress=False)[1]
    assert torch.allclose(torch.stack(alone.loss)[:, 0], loss[:, 1], atol=BATCHED_TOL)


class _CountingObserver:
    """Counts forward calls of the model it is attached to."""

    def __init__(self):
        self.calls, self.handle, self.models = 0, None, []

    def attach(self, model):
        self.models.append(model)
        self.handle = model.register_forward_hook(lambda *_: setattr(self, "calls",
                                                                     self.calls + 1))

    def detach(self):
        self.handle.remove()


def test_schedule_augmentation_validation_and_observers():
    data = spiral()
    split = Split(data.X_train[:300], data.y_train[:300], data.X_test, data.y_test,
                  X_val=data.X_train[300:], y_val=data.y_train[300:])
    flips = []

    def augment(X, generator):
        flips.append(torch.rand((), generator=generator).item())
        return -X if flips[-1] < 0.5 else X

    observer = _CountingObserver()
    plan = GrowthPlan(AtIterations(5), SensLI(), IdentityLayer(), lr_factor=0.5)
    model, history = train(build("fnn", [4], [0, 1]), split, iterations=12, lr=0.2,
                           plan=plan, eval_every=4, augment=augment, observers=[observer],
                           lr_schedule=lambda t, h: 1.0 / (1 + t), progress=False)
    assert history.lr[0] == pytest.approx(0.2) and history.lr[3] == pytest.approx(0.05)
    assert history.lr[8] == pytest.approx(0.1 / 9)       # growth halved the base rate
    assert len(flips) == 12 and len(set(flips)) == 12
    assert [e["iteration"] for e in history.evals] == [0, 4, 8]
    assert "train_error" not in history.evals[0] and history.evals[1]["train_error"].shape == (2,)
    assert torch.allclose(history.evals[1]["train_error"],
                          torch.stack(history.train_error[:4]).mean(0))
    assert history.evals[2]["val_error"].shape == (2,)
    # attached to the first and the grown model; training forwards + evaluation forwards
    assert len(observer.models) == 2 and observer.models[1] is model
    assert observer.calls == 12 + 3 * 2


def test_evaluation_runs_in_eval_mode_and_leaves_batch_norm_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                                torch.nn.ReLU(), torch.nn.Linear(4, 2))
    X, y = torch.randn(64, 3) * 5 + 2, torch.randint(0, 2, (64,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    error = evaluate(model, X, y)
    assert model.training, "the model goes back to the mode it was in"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"evaluation changed {key}"
    model.eval()
    expected = (model(X).argmax(1) != y).float().mean()
    assert torch.allclose(error, expected) and not model.training
    model.train()
    assert not torch.allclose(model(X), model.eval()(X)), "batch and running statistics differ"


@pytest.mark.parametrize("where", [{"name": "fixed_sites", "units": {"layers.1": 2}},
                                   {"name": "random_width", "k": 2}])
def test_width_growth_of_batched_seeds_reproduces_one_seed_at_a_time(where):
    """The seed-batched FNN widens seed by seed (each seed's criterion and initialiser are
    its own, with its own seed): a batched run equals the seeds run alone, also when the
    seeds choose different layers and the run regroups them."""
    config = spiral_config("fnn", [4, 4], seeds=[0, 1, 2, 3], iterations=20, lr=0.2)
    config["plan"] = {"when": {"name": "at", "iterations": 10}, "where": where,
                      "how": "random"}
    batched = run_experiment(config, progress=False, save=False, device="cpu")
    alone = run_experiment(config, batched=False, progress=False, save=False, device="cpu")
    b, a = batched["metrics"], alone["metrics"]
    assert torch.allclose(torch.tensor(b["loss"]), torch.tensor(a["loss"]), atol=BATCHED_TOL)
    assert b["n_params"] == a["n_params"] and b["n_params"][0][-1] > b["n_params"][0][0]
    if where["name"] == "random_width":
        assert batched["regrouped"], "the test needs seeds that choose different layers"
    # function kept at the growth: the loss moves by one small gradient step only
    assert all(abs(row[10] - row[9]) < 0.05 for row in b["loss"])


def test_the_newest_record_is_found_for_names_with_brackets(tmp_path):
    """Run names such as SensLI's "FNN[4,4] LI" are glob patterns unless escaped."""
    record = {"name": "FNN[4,4] LI", "config": {"a": 1}, "metrics": {"loss": [1.0]}}
    results.save_record(record, tmp_path)
    assert results.latest("FNN[4,4] LI", {"a": 1}, tmp_path)["metrics"]["loss"] == [1.0]

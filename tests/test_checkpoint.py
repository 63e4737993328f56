"""Checkpoints: a run killed part-way and continued from its checkpoint equals the run that
was never interrupted, bit for bit on the CPU, across growths in width (GradMax, NAGN), in
depth (SensLI's seed-batched insertion, FRAGrow's blocks); the grown architecture is
rebuilt from its JSON description; checkpoints are written atomically; the driver records
an interrupted run as such and continues it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from growcore import checkpoint, driver, results
from growcore import train as train_module
from growcore.data import Split, spiral
from growcore.how import BlockInit, GradMax, IdentityLayer, KaimingNew
from growcore.images import augment_cifar
from growcore.models.catalog import FAMILIES, RELU1
from growcore.models.mlp import MLP
from growcore.models.resnet import resnet
from growcore.models.seed_batched import SeedBatchedFNN, SeedBatchedNet
from growcore.models.stacked import StackedSeeds
from growcore.models.vgg import VGG
from growcore.ops import GrowThenCosine
from growcore.plan import GrowthPlan, apply_growth
from growcore.registry import build_plan
from growcore.stats import NAGNObserver, Probe
from growcore.train import train
from growcore.when import AtIterations, FRAGrow, LipGrow
from growcore.where import NAGN, GrowToWidths, RandomDepth, SensLI, StageOrder

IMAGE = (3, 8, 8)


class Killed(Exception):
    """Raised inside the training loop, as a crash or a preemption would stop it."""


def image_split() -> Split:
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (40, *IMAGE), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (40,), generator=g)
    return Split(X[:24], y[:24], X[24:32], y[24:32], X[32:], y[32:])


def killer(after: int | None) -> dict:
    """A step metric that stops the run during update ``after + 1`` (after its backward
    pass, before its optimiser step: the update is lost, as in a crash)."""
    calls = [0]

    def metric(model) -> torch.Tensor:
        calls[0] += 1
        if after is not None and calls[0] > after:
            raise Killed
        return torch.zeros(1)
    return {"probe": metric}


# ---------------------------------------------------------------- the three growing runs
def vgg_gradmax(path, kill=None):
    """VGG x2 in two GradMax widenings from minibatch statistics, SGD with momentum, cosine
    schedule, mini-batches with random crops and flips."""
    torch.manual_seed(0)
    model = VGG([[4], [4, 6]], 3, activation=RELU1, input_shape=IMAGE)
    plan = GrowthPlan(AtIterations([3, 7]), GrowToWidths(2.0, 2), GradMax(batch_size=8))
    return train(model, image_split(), iterations=10, lr=0.05, momentum=0.9, batch_size=7,
                 plan=plan, eval_every=2, augment=augment_cifar,
                 lr_schedule=lambda t, h: 0.5 * (1 + math.cos(math.pi * t / 10)),
                 step_metrics=killer(kill), progress=False, checkpoint=path,
                 checkpoint_every=2)


def vgg_nagn(path, kill=None):
    """VGG widened by NAGN (its observer's window of batches spans the checkpoints) with
    NAGN's eq. (1) initialiser, AdamW (step counts, moments)."""
    torch.manual_seed(0)
    model = VGG([[4], [4, 6]], 3, activation=RELU1, input_shape=IMAGE)
    plan = GrowthPlan(AtIterations([4, 8]), NAGN(NAGNObserver(window=3), tau=0.0, delta_max=3),
                      KaimingNew(seed=2))
    return train(model, image_split(), iterations=11, lr=0.01, optimizer="adamw",
                 weight_decay=0.01, batch_size=8, plan=plan, eval_every=3,
                 step_metrics=killer(kill), progress=False, checkpoint=path,
                 checkpoint_every=3)


def sensli_seed_batched(path, kill=None):
    """SensLI's three seed-batched FNNs, a layer inserted at iteration 6 where each seed's
    merit is largest (full-batch gradient descent on the spiral)."""
    model = SeedBatchedFNN.initial([5], [0, 1, 2], activation="relu")
    plan = GrowthPlan(AtIterations(6), SensLI(), IdentityLayer())
    return train(model, spiral(40), iterations=14, lr=0.2, plan=plan,
                 step_metrics=killer(kill), progress=False, checkpoint=path,
                 checkpoint_every=4)


def brightness(X: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Crops and flips from the loop's generator, and a brightness step from torch's global
    generator (which dropout or a user's augmentation would draw from)."""
    step = int(torch.randint(0, 3, (1,)))
    return (augment_cifar(X, generator).int() + step).clamp(0, 255).to(torch.uint8)


def resnet_fragrow(path, kill=None):
    """A staged ResNet (BatchNorm) grown by FRAGrow's ORL policy, one block per stage (a copy
    in stage 0; in stage 1, whose block downsamples, a fresh He-initialised one drawn from the
    global generator), the slides' grow-then-cosine schedule, weight decay."""
    torch.manual_seed(0)
    model = resnet((1, 1), 3, widths=(4, 6), input_shape=IMAGE)
    where = StageOrder([1, 1], [2, 2])
    plan = GrowthPlan(FRAGrow(3, where.n_blocks, 6, 2), where, BlockInit("copy"))
    return train(model, image_split(), iterations=18, lr=0.05, momentum=0.9,
                 weight_decay=1e-4, batch_size=8, plan=plan, eval_every=3, augment=brightness,
                 lr_schedule=GrowThenCosine(18, where.n_blocks), step_metrics=killer(kill),
                 progress=False, checkpoint=path, checkpoint_every=2)


RUNS = {"vgg GradMax": (vgg_gradmax, 2, [5, 8]), "vgg NAGN": (vgg_nagn, 3, [2, 6, 9]),
        "seed-batched SensLI": (sensli_seed_batched, 4, [3, 9]),
        "resnet FRAGrow": (resnet_fragrow, 2, [2, 5, 13])}


def comparable(history) -> dict:
    """Everything a history records but the clock and the resumptions."""
    h = history.as_dict()
    h["events"] = [{k: v for k, v in e.items() if k != "seconds"} for e in h["events"]]
    return {k: v for k, v in h.items() if k not in ("wall_time", "resumed_at")}


def assert_identical(a, b) -> None:
    (model_a, history_a), (model_b, history_b) = a, b
    state_a, state_b = checkpoint.tensors(model_a), checkpoint.tensors(model_b)
    assert list(state_a) == list(state_b)
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert comparable(history_a) == comparable(history_b)


@pytest.mark.parametrize("name", list(RUNS))
def test_killed_and_resumed_run_equals_the_uninterrupted_one(name, tmp_path):
    """Killed during update ``k + 1``, the run leaves the checkpoint of the last multiple of
    ``checkpoint_every`` at or below ``k`` (none below the first: the rerun starts again);
    continued from it (a fresh process's objects:
    a new seed network, plan and observers) it ends with the same weights, buffers and
    history, bit for bit, through the growths still to come (kills before, between and after
    the growths)."""
    run, every, kills = RUNS[name]
    reference = run(tmp_path / "reference.pt")
    assert len(reference[1].events) >= 1
    for kill in kills:
        path = tmp_path / f"killed-{kill}.pt"
        with pytest.raises(Killed):
            run(path, kill)
        saved = kill // every * every
        assert (checkpoint.load(path)["iteration"] if path.exists() else 0) == saved
        resumed = run(path)
        assert resumed[1].resumed_at == ([saved] if saved else [])  # 0: started again
        assert_identical(reference, resumed)


def test_a_finished_run_resumes_to_its_end_without_training(tmp_path):
    """The last checkpoint is written after the last update: a rerun returns the same model
    and history at once (a driver's completed seed group is not trained again)."""
    path = tmp_path / "run.pt"
    first = sensli_seed_batched(path)
    again = sensli_seed_batched(path, kill=0)  # any update would raise
    assert_identical(first, again)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(Killed):
        sensli_seed_batched(path, kill=5)
    model = SeedBatchedFNN.initial([5], [0, 1, 2], activation="relu")
    with pytest.raises(ValueError, match="lr differ"):
        train(model, spiral(40), iterations=14, lr=0.1,
              plan=GrowthPlan(AtIterations(6), SensLI(), IdentityLayer()),
              step_metrics=killer(None), progress=False, checkpoint=path)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    checkpoint.save(path, {"iteration": 1})

    def broken(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"iteration": 2})
    monkeypatch.undo()
    assert checkpoint.load(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


# ---------------------------------------------------------------- the architecture
def _stacked():
    return StackedSeeds([MLP([4, 5, 3]), MLP([4, 5, 3])], [0, 1]), "vector"


def _inputs(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 4, generator=g) if kind == "vector" else torch.randn(
        5, *IMAGE, generator=g)


def _grown(model, kind: str):
    """``model`` grown once: every width site x1.5 with random units where it has width
    sites, then a layer or block at a random depth site where it has one."""
    from growcore.models.sites import growth_sites

    kinds = {site.kind for site in growth_sites(model)}
    split = Split(_inputs(kind), torch.zeros(5, dtype=torch.long))
    if "width" in kinds:
        plan = build_plan({"when": "at", "where": {"name": "grow_to_widths", "factor": 1.5,
                                                    "growths": 1}, "how": "random"},
                          {"iterations": 0})
        if not plan.candidates(model):
            return model
        probe = Probe(split)
        model = plan.apply(model, plan.propose(model, probe)[0], probe).model
    if "depth" in kinds and not isinstance(model, StackedSeeds):
        sites = [s for s in growth_sites(model) if s.kind == "depth"]
        proposals, _ = RandomDepth(seed=3)(model, sites)
        plain = sites[0].style == "plain" or isinstance(model, SeedBatchedNet)
        how = IdentityLayer() if plain else BlockInit("kaiming")
        model = apply_growth(model, proposals, how).model
    return model


@pytest.mark.parametrize("family", [*FAMILIES, "stacked"])
def test_the_architecture_rebuilds_every_family_seed_and_grown(family):
    """JSON from :func:`checkpoint.architecture` rebuilds the network, seed and grown (wider
    and deeper where the family grows so): same parameter and buffer names in the same
    order (an optimiser's state_dict fits), the same outputs bit for bit once the tensors
    are loaded."""
    model, kind = (_stacked() if family == "stacked" else FAMILIES[family]())
    for net in (model, _grown(model, kind)):
        spec = json.loads(json.dumps(checkpoint.architecture(net)))
        rebuilt = checkpoint.load_tensors(checkpoint.rebuild(spec), checkpoint.tensors(net))
        assert list(checkpoint.tensors(rebuilt)) == list(checkpoint.tensors(net))
        assert [n for n, _ in rebuilt.named_parameters()] == [
            n for n, _ in net.named_parameters()]
        net.eval(), rebuilt.eval()
        x = _inputs(kind)
        assert torch.equal(rebuilt(x), net(x))
    assert checkpoint.architecture(_grown(model, kind)) != checkpoint.architecture(model)


def test_part_state_keeps_references_to_the_network_and_between_parts():
    """LipGrow remembers the network it measured: restored, it remembers the rebuilt one;
    NAGN's criterion and the observer the loop attached stay one object."""
    model = resnet((1, 1), 3, widths=(4, 6), input_shape=IMAGE)
    policy = LipGrow(3, 2, 6, 2)
    policy._model, policy.base, policy.trace = model, 1.5, [(3, 1.5)]
    where = NAGN(NAGNObserver(window=2))
    where.observer.attach(model)
    where.observer.batches.append(([torch.tensor(2.0)], 4))
    blob = checkpoint.capture_state([policy, where, where.observer], model)

    rebuilt = checkpoint.rebuild(checkpoint.architecture(model))
    fresh_policy, fresh_where = LipGrow(3, 2, 6, 2), NAGN(NAGNObserver(window=2))
    fresh_where.observer.attach(rebuilt)
    handles = list(fresh_where.observer._handles)
    checkpoint.restore_state([fresh_policy, fresh_where, fresh_where.observer], blob, rebuilt)
    assert fresh_policy._model is rebuilt and fresh_policy.base == 1.5
    assert fresh_policy.trace == [(3, 1.5)]
    assert list(fresh_where.observer.batches) == [([torch.tensor(2.0)], 4)]
    assert fresh_where.observer._handles == handles  # the live hooks, not the saved ones


# ---------------------------------------------------------------- the driver
def _driver_config(every: int | None = None) -> dict:
    config = {"name": "checkpointed vgg", "seeds": [0, 1], "data": {"name": "cifar10"},
              "model": {"name": "vgg", "config": [[4], [4, 6]], "activation": "relu1"},
              "train": {"iterations": 8, "batch_size": 8, "lr": 0.05, "momentum": 0.9,
                        "schedule": "cosine", "eval_every": 2},
              "plan": {"when": {"name": "at", "iterations": [3]},
                       "where": {"name": "grow_to_widths", "factor": 2.0, "growths": 1},
                       "how": {"name": "gradmax", "batch_size": 8}}}
    if every:
        config["train"]["checkpoint_every"] = every
    return config


def _driver_split() -> Split:
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (40, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (40,), generator=g)
    return Split(X[:24], y[:24], X[24:32], y[24:32], X[32:], y[32:])


def _results_of(record: dict) -> dict:
    timing = ("wall_time", "step_time", "growth_time")
    metrics = {k: v for k, v in record["metrics"].items() if k not in timing}
    metrics["events"] = [{k: v for k, v in e.items() if k != "seconds"}
                         for e in metrics["events"]]
    return metrics


def test_the_driver_records_an_interrupted_run_and_continues_it(tmp_path, monkeypatch):
    """Killed during the second seed, a checkpointed run leaves a record with status
    ``interrupted`` (never reused), the first seed's final checkpoint and the second's last
    one; rerun, it continues (the first seed is not trained again) and writes a complete
    record with the metrics of an uninterrupted run, under the configuration hash of a run
    without checkpoints, and removes its checkpoints."""
    split = _driver_split()
    reference = driver.run_experiment(_driver_config(), split=split, directory=tmp_path / "a",
                                      progress=False)
    assert reference["status"] == "complete" and reference["resumed_at"] == [[], []]
    out = tmp_path / "b"
    counted = train_module.flops_per_example
    calls = [0]

    def dying(model):
        calls[0] += 1
        if calls[0] > 8 + 5:  # the second seed's sixth update
            raise Killed
        return counted(model)

    monkeypatch.setattr(train_module, "flops_per_example", dying)
    with pytest.raises(Killed):
        driver.run_experiment(_driver_config(every=2), split=split, directory=out,
                              progress=False)
    monkeypatch.undo()
    (stopped,) = [results.load_record(p) for p in out.glob("*.json")]
    assert stopped["status"] == "interrupted" and stopped["completed_groups"] == [[0]]
    assert stopped["checkpoint_iteration"] == {"0": 8, "1": 4}
    assert driver.saved_record(_driver_config(), out) is None
    record = driver.run_experiment(_driver_config(every=2), split=split, directory=out,
                                   progress=False, reuse=True)
    assert record["status"] == "complete" and record["resumed_at"] == [[8], [4]]
    assert _results_of(record) == _results_of(reference)
    assert record["config"] == reference["config"]
    assert record["path"].split("--")[1] == reference["path"].split("--")[1]
    assert not list((out / "checkpoints").iterdir())
    assert driver.saved_record(_driver_config(), out)["resumed_at"] == [[8], [4]]

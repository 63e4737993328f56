"""Seeds of an ordinary module as one tensor program (growcore.models.stacked), per-seed data
(growcore.data.SeedSplits) and the driver's ``model.seed_batched``.

The batched program must be the runs made one seed at a time: the same outputs, gradients,
growth (each seed's GradMax on its own network and data) and losses over a whole
teacher-student run with growth.
"""

import numpy as np
import pytest
import torch
from torch import nn

from growcore.activations import relu_with_slope_at_zero
from growcore.chapters.gradmax import ts_config
from growcore.data import SeedSplits, Split, teacher_student
from growcore.driver import gradient_norm, run_experiment
from growcore.how import GradMax
from growcore.models.mlp import MLP
from growcore.models.sites import Proposal
from growcore.models.stacked import StackedSeeds
from growcore.ops import rebuild_optimizer, widen, widen_seeds
from growcore.stats import Probe, TargetNorm
from growcore.train import evaluate

BATCHED_TOL = 1e-6  # float32: a batched matrix product may sum in another order
EXACT_TOL = 1e-12  # float64: the same computation, batched or not


def _nets(n=3, widths=(4, 3, 2), dtype=torch.float64):
    nets = []
    for s in range(n):
        torch.manual_seed(s)
        nets.append(MLP(list(widths)).to(dtype))
    return nets


def test_outputs_and_gradients_are_each_seeds_own():
    nets = _nets()
    model = StackedSeeds(nets, [5, 6, 7])
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(8, 4, generator=g, dtype=torch.float64)
    per_seed = torch.randn(3, 8, 4, generator=g, dtype=torch.float64)
    for X in (shared, per_seed):
        out = model(X)
        ref = torch.stack([net(X if X.dim() == 2 else X[i]) for i, net in enumerate(nets)])
        assert out.shape == (3, 8, 2) and torch.allclose(out, ref, atol=EXACT_TOL)
    model(per_seed).pow(2).sum().backward()
    for i, net in enumerate(nets):
        net.zero_grad()
        net(per_seed[i]).pow(2).sum().backward()
        for (name, p), q in zip(model.named_parameters(), net.parameters()):
            assert torch.allclose(p.grad[i], q.grad, atol=EXACT_TOL), name
    assert model.num_parameters() == sum(p.numel() for p in nets[0].parameters())
    assert model.spec() == {"class": "MLP", "seed_batched": True, "widths": {"layers.0": 3}}
    one = model.seed_module(1)
    assert type(one) is MLP and torch.equal(one(shared), nets[1](shared))
    assert one.layers[0].weight.requires_grad
    restacked = model.from_seed_modules([model.seed_module(i) for i in range(3)])
    assert torch.equal(restacked(per_seed), model(per_seed)) and restacked.seeds == [5, 6, 7]
    assert [s.name for s in model.width_sites()] == ["layers.0"]


def test_refuses_what_it_cannot_stack():
    with pytest.raises(ValueError, match="one architecture"):
        StackedSeeds([MLP([4, 3, 2]), MLP([4, 5, 2])])
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="buffers"):
        StackedSeeds([bn, bn])
    model = StackedSeeds(_nets(2))
    with pytest.raises(ValueError, match="per-seed inputs for 3 seeds"):
        model(torch.zeros(3, 5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="dimensions"):
        model(torch.zeros(4, dtype=torch.float64))


def test_relu1_under_vmap_keeps_its_slope_at_zero():
    """relu'(0) = 1 (and 1/2) under torch.func.vmap, as without it."""
    x = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 3.0, -2.0]], requires_grad=True)
    for slope in (1.0, 0.5):
        (g,) = torch.autograd.grad(torch.func.vmap(lambda r, s=slope: relu_with_slope_at_zero(
            r, s))(x).sum(), x)
        expected = (x > 0).double() + slope * (x == 0).double()
        assert torch.equal(g.double(), expected)


def test_width_growth_gives_every_seed_its_own_gradmax_on_its_own_data():
    """widen_seeds on per-seed data: each seed's new units are GradMax's for that seed's
    network and data alone (its probe is its own, so no seed reads another's statistics)."""
    nets = _nets(3, (5, 3, 4))
    splits = []
    for s in range(3):
        split, _ = teacher_student([5, 4, 4], 50, seed=s, dtype=torch.float64)
        splits.append(split)
    data = SeedSplits.stack(splits)
    model = StackedSeeds(nets)
    site = model.width_sites()[0]
    norm = TargetNorm(scale=0.5)
    hows = [GradMax("mse", norm=norm) for _ in range(3)]
    grown = widen_seeds(model, [Proposal(site, 2)], hows, Probe(data, "mse")).model
    for i in range(3):
        alone = widen(nets[i], [Proposal(site, 2)], GradMax("mse", norm=norm),
                      Probe(splits[i], "mse")).model
        assert torch.allclose(grown.seed_module(i).layers[1].weight, alone.layers[1].weight,
                              atol=EXACT_TOL)
    # the seeds' data differ, so their units do too
    assert not torch.allclose(grown.net.layers[1].weight[0], grown.net.layers[1].weight[1])


def test_shared_data_growth_does_not_mix_the_seeds_statistics():
    """Regression: with one probe for all seeds, GradMax's cache (keyed by the seed module's
    id, which Python reuses) could hand a seed another seed's statistics."""
    nets = _nets(4, (5, 3, 4))
    split, _ = teacher_student([5, 4, 4], 40, seed=0, dtype=torch.float64)
    model = StackedSeeds(nets)
    site = model.width_sites()[0]
    hows = [GradMax("mse") for _ in range(4)]
    grown = widen_seeds(model, [Proposal(site, 1)], hows, Probe(split, "mse")).model
    for i in range(4):
        alone = widen(nets[i], [Proposal(site, 1)], GradMax("mse"), Probe(split, "mse")).model
        assert torch.allclose(grown.seed_module(i).layers[1].weight, alone.layers[1].weight,
                              atol=EXACT_TOL)


def test_optimiser_state_is_carried_seed_by_seed():
    model = StackedSeeds(_nets(2, (4, 3, 2)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    X = torch.randn(2, 6, 4, dtype=torch.float64)
    model(X).pow(2).sum().backward()
    opt.step()
    old = {name: opt.state[p]["momentum_buffer"].clone() for name, p in model.named_parameters()}
    split = SeedSplits.stack([Split(X[i], torch.randn(6, 2, dtype=torch.float64))
                              for i in range(2)])
    growth = widen_seeds(model, [Proposal(model.width_sites()[0], 2)],
                         [GradMax("mse") for _ in range(2)], Probe(split, "mse"))
    opt = rebuild_optimizer(opt, model, growth, lr=0.1)
    for name, p in growth.model.named_parameters():
        buffer = opt.state[p]["momentum_buffer"]
        block = tuple(slice(0, n) for n in old[name].shape)
        assert torch.equal(buffer[block], old[name]), name
        rest = buffer.clone()
        rest[block] = 0
        assert not rest.any(), f"{name}: the new units' momentum must start at zero"


def test_seed_splits_stack_slice_and_train_full_batch_only():
    splits = [teacher_student([4, 3, 2], 10, seed=s)[0] for s in range(3)]
    data = SeedSplits.stack(splits)
    assert data.X_train.shape == (3, 10, 4) and data.n_seeds == 3
    assert torch.equal(data.seed(2).X_test, splits[2].X_test) and data.seed(0).X_val is None
    assert isinstance(data.to("cpu"), SeedSplits)
    (batch,) = data.minibatches(None)
    assert batch[0] is data.X_train
    with pytest.raises(ValueError, match="full-batch"):
        next(data.minibatches(4))
    with pytest.raises(ValueError, match="one seed's split"):
        next(data.chunks(4))
    with pytest.raises(ValueError, match="differ in shape"):
        SeedSplits.stack([splits[0], teacher_student([4, 3, 2], 12, seed=1)[0]])
    model = StackedSeeds(_nets(3, (4, 3, 2), torch.float32))
    together = evaluate(model, data.X_test, data.y_test, "mse", batch_size=4, per_seed=True)
    alone = [float(evaluate(model.seed_module(i), s.X_test, s.y_test, "mse"))
             for i, s in enumerate(splits)]
    assert np.allclose(together.numpy(), alone, atol=BATCHED_TOL)


def test_gradient_norm_metric_is_per_seed():
    model = StackedSeeds(_nets(3))
    X = torch.randn(3, 5, 4, dtype=torch.float64)
    model(X).pow(2).sum().backward()
    norms = gradient_norm(model)
    for i in range(3):
        net = model.seed_module(i)
        net(X[i]).pow(2).sum().backward()
        assert torch.isclose(norms[i], gradient_norm(net)[0], atol=EXACT_TOL)


@pytest.mark.parametrize("method", ["GradMax", "Random", "GradMaxOpt"])
def test_batched_teacher_student_run_is_the_runs_one_seed_at_a_time(method):
    """The chapter's run with seed_batched: the losses, test MSE, gradient norms and final
    models of the earlier one-seed-at-a-time configuration (the 5-seed records)."""
    plain = ts_config(method, [20, 10, 10], 5, 15, 60, [0, 1, 2], opt_steps=5)
    batched = ts_config(method, [20, 10, 10], 5, 15, 60, [0, 1, 2], opt_steps=5,
                        seed_batched=True)
    assert "seed_batched" not in plain["model"] and batched["model"]["seed_batched"] is True
    a = run_experiment(plain, save=False, progress=False, device="cpu")
    b = run_experiment(batched, save=False, progress=False, device="cpu")
    assert b["batched_seeds"] and b["seed_groups"] == [[0, 1, 2]]
    for key in ("loss", "test_error", "grad_norm", "final_train", "final_test"):
        assert np.allclose(a["metrics"][key], b["metrics"][key], rtol=1e-5,
                           atol=BATCHED_TOL), key
    widths = [m["widths"] for m in a["metrics"]["final_model"]]
    assert widths == [{"layers.0": 8}] * 3  # 3 growths of one unit at steps 15, 30, 45
    assert [m["widths"] for m in b["metrics"]["final_model"]] == widths
    assert b["metrics"]["total_cost_flops"] == a["metrics"]["total_cost_flops"]

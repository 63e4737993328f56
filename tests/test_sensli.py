"""SensLI building blocks: data, models, identity insertion, gradient identities, KKT, merits."""

import math
import re

import numpy as np
import pytest
import torch

from growcore.data import spiral, spiral_points
from growcore.how import IdentityLayer
from growcore.losses import per_seed_cross_entropy
from growcore.models import build
from growcore.ops import at_positions, insert_layers
from growcore.sensitivity import base_gradient, extended_problem, first_order_check, solve_kkt
from growcore.stats import Probe, extended_gradients
from growcore.where import SensLI, sensli_merits

EXACT = 1e-12      # float64 operations that should agree to rounding
FD_TOL = 1e-7      # finite differences (step 1e-6, float64) against backpropagation
SEEDS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def data():
    return spiral(dtype=torch.float64)


def test_spiral_matches_the_paper():
    X, y = spiral_points()
    assert X.shape == (600, 2) and (y == 0).sum() == 300
    # class 1 starts at +r0 (1, 0), class 0 at -r0 (1, 0); radius grows to r0 + turns (N-1)/N
    np.testing.assert_allclose(X[300], [0.5, 0.0])
    np.testing.assert_allclose(X[0], [-0.5, 0.0])
    np.testing.assert_allclose(np.linalg.norm(X[-1]), 0.5 + 299 / 300)


def test_spiral_split_is_seeded_and_a_partition():
    a, b, c = (spiral(seed=s, dtype=torch.float64) for s in (0, 0, 1))
    assert a.X_train.shape == (450, 2) and a.X_test.shape == (150, 2)
    assert torch.equal(a.X_train, b.X_train) and not torch.equal(a.X_train, c.X_train)
    every = torch.cat([a.X_train, a.X_test])
    X, _ = spiral_points()
    assert sorted(map(tuple, every.numpy())) == sorted(map(tuple, X))


@pytest.mark.parametrize("kind, widths, count", [
    ("fnn", [5], 27), ("fnn", [5, 5], 57), ("resnet", [3, 3], 33), ("resnet", [3, 3, 3], 54)])
def test_parameter_counts_of_table_3_1(kind, widths, count):
    assert build(kind, widths, [0]).num_parameters() == count


def test_insertion_grows_to_the_larger_architecture():
    for kind, small, big in [("fnn", [5], [5, 5]), ("resnet", [3, 3], [3, 3, 3])]:
        model = build(kind, small, [0])
        grown = insert_layers(model, at_positions(model, [1]), IdentityLayer()).model
        assert grown.num_parameters() == build(kind, big, [0]).num_parameters()


@pytest.mark.parametrize("kind, widths", [("fnn", [4, 3, 5]), ("resnet", [3, 3, 3, 3])])
def test_identity_insertion_preserves_the_function(kind, widths, data):
    model = build(kind, widths, SEEDS, dtype=torch.float64)
    before = model(data.X_test)
    positions = model.insertion_positions()
    for k in positions:
        grown = insert_layers(model, at_positions(model, [k] * len(SEEDS)), IdentityLayer()).model
        assert torch.allclose(grown(data.X_test), before, atol=EXACT, rtol=0)
    extended = insert_layers(model, at_positions(model, [positions] * len(SEEDS)),
                             IdentityLayer()).model
    assert torch.allclose(extended(data.X_test), before, atol=EXACT, rtol=0)


def test_insertion_at_different_positions_per_seed(data):
    model = build("fnn", [4, 4], SEEDS, dtype=torch.float64)
    growth = insert_layers(model, at_positions(model, [1, 2, 2, 1]), IdentityLayer())
    assert torch.allclose(growth.model(data.X_test), model(data.X_test), atol=EXACT, rtol=0)
    # seed 0 got its new layer at list index 1, seed 1 at index 2
    assert growth.sources["hidden.1.W"][:2] == [None, "hidden.1.W"]
    assert growth.sources["hidden.2.W"][:2] == ["hidden.1.W", None]
    assert growth.status("hidden.1.W") == "mixed" and growth.status("hidden.0.W") == "old"


def test_a_non_identity_initialisation_changes_the_function(data):
    """Guards the preservation tests: a wrong init must be detected."""
    model = build("resnet", [3, 3], [0], dtype=torch.float64)

    def not_identity(m, proposal, stats):
        layer = IdentityLayer()(m, proposal, stats)
        return {**layer, "W2": torch.ones_like(layer["W2"])}

    grown = insert_layers(model, at_positions(model, [1]), not_identity).model
    assert not torch.allclose(grown(data.X_test), model(data.X_test), atol=1e-6)


def test_identity_fnn_layer_needs_relu():
    model = build("fnn", [3], [0], activation="tanh")
    with pytest.raises(ValueError, match="ReLU"):
        insert_layers(model, at_positions(model, [1]), IdentityLayer())


def test_invalid_positions_are_named():
    model = build("resnet", [3, 3], [0])
    with pytest.raises(ValueError, match=r"valid positions k .*\[1\]"):
        insert_layers(model, at_positions(model, [2]), IdentityLayer())


def _single_example_grads(model, data, i, names):
    loss = per_seed_cross_entropy(model(data.X_train[i:i + 1]), data.y_train[i:i + 1]).sum()
    params = dict(model.named_parameters())
    return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))


def test_resnet_gradient_identities_2_5(data):
    """(2.5a-c): after inserting a block with W2 = 0, dL/dW1 = dL/db = 0 and
    dL/dW2 = sum_i dL/dx_i^k sigma(W1 x_i^{k-1} + b)^T."""
    model = build("resnet", [3, 3, 3], [0], dtype=torch.float64)
    grown = insert_layers(model, at_positions(model, [1]), IdentityLayer(0.8)).model
    new = grown.blocks[0]
    x_prev = grown.hidden_states(data.X_train)[1].detach()   # x^{k-1}, input of the new block
    # dL/dx^k: the rest of the network applied to x^k = x^{k-1} as an independent leaf
    x_k = x_prev.clone().requires_grad_(True)
    x = x_k
    for block in grown.blocks[1:]:
        x = x + torch.tanh(x @ block.W1.transpose(1, 2) + block.b.unsqueeze(1)) @ \
            block.W2.transpose(1, 2)
    logits = x @ grown.output[0].W.transpose(1, 2)
    (dl_dxk,) = torch.autograd.grad(per_seed_cross_entropy(logits, data.y_train).sum(), x_k)
    grads = torch.autograd.grad(per_seed_cross_entropy(grown(data.X_train), data.y_train).sum(),
                                [new.W1, new.b, new.W2])
    assert grads[0].abs().max() == 0 and grads[1].abs().max() == 0
    act = torch.tanh(x_prev[0] @ new.W1[0].T + new.b[0])
    expected = dl_dxk[0].T @ act
    assert torch.allclose(grads[2][0], expected, atol=EXACT)
    assert grads[2].abs().max() > 0


def test_fnn_gradient_identities_2_7(data):
    """(2.7a/b) per data point: dL/dW = sigma'(x^k) (W^{k+1})^T dL/dW^{k+1} and likewise for b."""
    model = build("fnn", [4, 4], [0], dtype=torch.float64)
    grown = insert_layers(model, at_positions(model, [1]), IdentityLayer()).model
    names = ["hidden.1.W", "hidden.1.b", "hidden.2.W", "hidden.2.b"]
    checked_nonzero = False
    for i in range(20):
        g = _single_example_grads(grown, data, i, names)
        x_k = grown.hidden_states(data.X_train[i:i + 1])[1][0, 0].detach()
        sigma_prime = torch.diag((x_k > 0).double())   # PyTorch: relu'(0) = 0
        W_next = grown.hidden[2].W[0].detach()
        assert torch.allclose(g["hidden.1.W"][0], sigma_prime @ W_next.T @ g["hidden.2.W"][0],
                              atol=EXACT)
        assert torch.allclose(g["hidden.1.b"][0], sigma_prime @ W_next.T @ g["hidden.2.b"][0],
                              atol=EXACT)
        checked_nonzero |= bool(g["hidden.1.W"].abs().max() > 0)
    assert checked_nonzero


def test_kkt_multiplier_equals_minus_backprop_gradient(data):
    """(2.11)/(2.12): solving the KKT system with a finite-difference gradient gives
    lambda = -grad_new f_ext from backpropagation, and (2.12a) grad_base f_ext = r holds."""
    model = build("resnet", [3, 3, 3], [0], dtype=torch.float64)
    problem = extended_problem(model, data, model.insertion_positions())
    grad_fd = problem.gradient_finite_differences()
    lam, residual = solve_kkt(problem, base_gradient(model, data), grad_fd)
    backprop = problem.gradient_backprop()
    assert residual < FD_TOL
    assert torch.allclose(lam, -backprop[problem.is_new], atol=FD_TOL)
    assert lam.abs().max() > 100 * FD_TOL


def test_relu_kink_finite_differences_see_half_slope(data):
    """At the identity init of a ReLU FNN, inactive units sit exactly at the kink: symmetric
    finite differences match backprop only with relu'(0) = 1/2, not PyTorch's 0."""
    for activation, agrees in [("relu", False), ("relu_half", True)]:
        model = build("fnn", [3, 3], [0], dtype=torch.float64, activation=activation)
        problem = extended_problem(model, data, [1, 2])
        diff = (problem.gradient_finite_differences() - problem.gradient_backprop()).abs().max()
        assert (diff < FD_TOL) == agrees


def test_first_order_prediction_error_shrinks_linearly(data):
    model = build("resnet", [3, 3, 3], [0], dtype=torch.float64)
    problem = extended_problem(model, data, [1])
    direction = torch.randn(int(problem.is_new.sum()), generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
    steps = [1e-1, 1e-2, 1e-3]
    actual, predicted = first_order_check(problem, direction, steps)
    relative = ((actual - predicted) / predicted).abs()
    assert relative[-1] < 1e-2 and relative[1] / relative[2] == pytest.approx(10, rel=0.2)


def test_merit_normalisation_and_selection(data):
    model = build("fnn", [6, 3], SEEDS, dtype=torch.float64)
    paper = sensli_merits(model, data, "paper")
    code = sensli_merits(model, data, "code")
    widths = torch.tensor([6.0, 3.0], dtype=torch.float64)
    assert torch.allclose(code, paper * widths**2)
    sites = [s for s in model.growth_sites() if s.kind == "depth"]
    proposals_max, info = SensLI("max")(model, sites, Probe(data))
    proposals_min, _ = SensLI("min")(model, sites, Probe(data))
    chosen_max = [p.site.position for p in sorted(proposals_max, key=lambda p: p.seed)]
    chosen_min = [p.site.position for p in sorted(proposals_min, key=lambda p: p.seed)]
    assert chosen_max == [[1, 2][i] for i in paper.argmax(1)] == info["chosen"]
    assert chosen_min == [[1, 2][i] for i in paper.argmin(1)]
    assert info["merits"] == paper.tolist()


def test_merit_is_the_squared_gradient_of_the_virtual_weight(data):
    model = build("resnet", [3, 3, 3], [0], dtype=torch.float64)
    merits = sensli_merits(model, data, "code")
    for p, k in enumerate(model.insertion_positions()):
        grown = insert_layers(model, at_positions(model, [k]), IdentityLayer()).model
        loss = per_seed_cross_entropy(grown(data.X_train), data.y_train).sum()
        (g,) = torch.autograd.grad(loss, grown.blocks[k - 1].W2)
        assert merits[0, p] == pytest.approx(float(g.pow(2).sum()), rel=1e-10)


def test_minibatch_merit_equals_full_batch(data):
    model = build("fnn", [4, 4], SEEDS, dtype=torch.float64)
    full = sensli_merits(model, data)
    epoch = sensli_merits(model, data, batch_size=64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(full, epoch, rtol=1e-10)
    _, grads = extended_gradients(model, data, batch_size=64)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_unknown_criterion_options_are_named():
    with pytest.raises(ValueError, match="select must be one of"):
        SensLI(select="largest")
    with pytest.raises(ValueError, match="normalisation must be one of"):
        SensLI(normalisation="none")


# The chapter's summaries of records (moved out of the notebook): hand-computed expectations.
# Student t quantiles of the 95 % interval in closed form: t(p, 1) = tan(pi (p - 1/2)) and
# t(p, 2) = (2p - 1) / sqrt(2 p (1 - p)), p = 0.975.
T95_1 = math.tan(math.pi * 0.475)
T95_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)


def _record(**metrics):
    return {"metrics": metrics}


def test_loss_of_sums_each_seeds_mean_cross_entropy():
    from growcore.chapters.sensli import loss_of

    a = 2.0
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]],      # seed 0: log 2 at each point
                           [[a, 0.0], [0.0, a]]],         # seed 1: log(1 + e^-a) at each
                          dtype=torch.float64)
    y = torch.tensor([0, 1])
    value = loss_of(lambda X: logits, torch.zeros(2, 2), y)
    assert value.item() == pytest.approx(math.log(2) + math.log1p(math.exp(-a)), abs=EXACT)


def test_summary_table_lists_size_final_loss_and_error():
    from growcore.chapters.sensli import summary_table

    records = {"A": _record(n_params=[[5, 7], [5, 7]], loss=[[1.0, 1.0], [3.0, 3.0]],
                            test_error=[[0.1, 0.1], [0.3, 0.3]])}
    header, row = summary_table(records, ["A"]).split("\n")
    assert header.split() == ["run", "params", "final", "loss", "final", "test", "error"]
    # two seeds: mean 2 and 0.2, sd sqrt(2) and 0.1 sqrt(2), half-width t(0.975, 1) sd / sqrt 2
    assert row.split() == ["A", "7", "2.000", "±", f"{T95_1:.3f}", "20.0", "±",
                           f"{100 * 0.1 * T95_1:.1f}", "%"]
    assert row.startswith("A" + " " * 29 + " ")            # the run name in 30 columns


def test_params_over_time_names_every_change():
    from growcore.chapters.sensli import params_over_time

    record = _record(n_params=[[27, 27, 57, 57, 60], [0, 0, 0, 0, 0]])   # the first seed's
    assert params_over_time(record) == ("27 from iteration 0, 57 from iteration 2, "
                                        "60 from iteration 4")
    assert params_over_time(_record(n_params=[[9, 9, 9]])) == "9 from iteration 0"


@pytest.mark.parametrize("budget, loss, t", [(25, 2.5, 1), (30, 1.5, 2), (1e9, 0.25, 3),
                                             (5, None, -1)])
def test_loss_within_budget_averages_the_last_iterations_within_it(budget, loss, t):
    from growcore.chapters.sensli import loss_within_budget

    record = _record(cost_flops=[[10, 20, 30, 40], [10, 20, 30, 40]],
                     loss=[[4.0, 3.0, 2.0, 0.0], [2.0, 1.0, 0.0, -1.0]])
    if loss is None:
        with pytest.raises(ValueError, match="below the cost of the first iteration"):
            loss_within_budget(record, budget)
        return
    found, at = loss_within_budget(record, budget, last=2)
    # the mean over seeds of the per-seed means of the 2 iterations ending at t
    assert at == t and found.shape == (2,) and found.mean() == pytest.approx(loss, abs=EXACT)


def test_final_cost_is_the_cost_at_the_end():
    from growcore.chapters.sensli import final_cost

    assert final_cost(_record(cost_flops=[[10, 20, 40], [10, 20, 60]])) == 50


def test_chosen_positions_counts_the_seeds_of_the_first_growth():
    from growcore.chapters.sensli import chosen_positions

    record = _record(events=[{"iteration": 9, "seeds": [0, 1, 2], "chosen": [1, 1, 1]},
                             {"iteration": 5, "seeds": [0, 1, 2], "chosen": [2, 1, 2]}])
    assert chosen_positions(record) == "after layer 1: 1 seeds, after layer 2: 2 seeds"


def test_compare_pairs_the_final_losses_by_seed():
    from growcore.chapters.sensli import compare

    records = {"a": _record(loss=[[9.0, -1.0, -1.0], [9.0, -2.0, -2.0], [9.0, 0.0, 0.0]]),
               "b": _record(loss=[[0.0] * 3] * 3)}
    # last 2 iterations: differences -1, -2, 0 (mean -1, sd 1); a lower in two seeds
    half = T95_2 / math.sqrt(3)
    expected = (f"-1 [{-1 - half:+.3g}, {-1 + half:+.3g}] (n = 3), first lower in 2 of 3 "
                f"seeds")
    assert compare(records, "a", "b", last=2) == expected
    assert compare(records, "b", "a", last=2).startswith("+1 [")


# The ResNet of the authors' code (nets.two_weight_resnet): biases in and out, tanh after the
# first layer; the same weight draws as eq. (2.3) seed by seed.
def _authors(widths, seeds=SEEDS):
    from growcore.models.seed_batched import SeedBatchedAuthorsResNet

    return SeedBatchedAuthorsResNet.initial(widths, seeds, dtype=torch.float64)


@pytest.mark.parametrize("widths, count", [([3, 3], 38), ([3, 3, 3], 59), ([3, 3, 3, 3], 80)])
def test_authors_resnet_counts_the_two_biases(widths, count):
    # eq. (2.3) + b^1 (h = 3) + b^{L+1} (c = 2)
    assert _authors(widths, [0]).num_parameters() == count
    assert count == build("resnet", widths, [0]).num_parameters() + 3 + 2


def test_authors_resnet_computes_the_codes_function_with_the_weights_of_eq_2_3(data):
    net, eq23 = _authors([3, 3, 3]), build("resnet", [3, 3, 3], SEEDS, dtype=torch.float64)
    for group in ("input", "blocks", "output"):
        for mine, theirs in zip(getattr(net, group), getattr(eq23, group)):
            for name, tensor in theirs.named_parameters():
                assert torch.equal(getattr(mine, name), tensor)
    assert net.input[0].b.abs().max() > 0 and net.output[0].b.abs().max() > 0
    X = data.X_test
    for s in range(len(SEEDS)):
        x = torch.tanh(X @ net.input[0].W[s].T + net.input[0].b[s])
        for block in net.blocks:
            x = x + torch.tanh(x @ block.W1[s].T + block.b[s]) @ block.W2[s].T
        expected = x @ net.output[0].W[s].T + net.output[0].b[s]
        assert torch.allclose(net(X)[s], expected, atol=EXACT, rtol=0)
    # and not the function of eq. (2.3)
    assert not torch.allclose(net(X), eq23(X), atol=1e-3)


def test_authors_resnet_insertion_preserves_the_function_and_keeps_its_biases(data):
    net = _authors([3, 3, 3])
    before = net(data.X_test)
    for positions in ([1] * 4, [2] * 4, [[1, 2]] * 4):
        grown = insert_layers(net, at_positions(net, positions), IdentityLayer(0.8)).model
        assert type(grown) is type(net) and "b" in dict(grown.input[0].named_parameters())
        assert torch.allclose(grown(data.X_test), before, atol=EXACT, rtol=0)
    assert net.insertion_positions() == [1, 2]    # between hidden layers, as the code of 2023


def test_authors_resnet_gradients_2_5_and_merit(data):
    """(2.5a/b) hold for the inserted block of the authors' net, and the merit is the squared
    gradient of the virtual W2 (eq. 2.15, code normalisation)."""
    net = _authors([3, 3, 3], [0])
    merits = sensli_merits(net, data, "code")
    for p, k in enumerate(net.insertion_positions()):
        grown = insert_layers(net, at_positions(net, [k]), IdentityLayer(0.8)).model
        new = grown.blocks[k - 1]
        loss = per_seed_cross_entropy(grown(data.X_train), data.y_train).sum()
        gW1, gb, gW2 = torch.autograd.grad(loss, [new.W1, new.b, new.W2])
        assert gW1.abs().max() == 0 and gb.abs().max() == 0 and gW2.abs().max() > 0
        assert merits[0, p] == pytest.approx(float(gW2.pow(2).sum()), rel=1e-10)


def test_authors_resnet_runs_in_the_driver_batched_as_one_seed_at_a_time():
    from growcore.driver import run_experiment
    from growcore.experiments import spiral_config

    config = spiral_config("resnet_authors", [3, 3], [0, 1, 2], iterations=12, lr=0.1,
                           insert_at=5)
    batched = run_experiment(config, save=False, progress=False, device="cpu")
    alone = run_experiment(config, save=False, progress=False, device="cpu", batched=False)
    assert batched["config"]["model"]["name"] == "resnet_seed_batched_authors"
    assert batched["metrics"]["final_model"][0]["architecture"].startswith("authors' code")
    assert batched["metrics"]["n_params"][0][4:6] == [38, 59]
    np.testing.assert_allclose(batched["metrics"]["loss"], alone["metrics"]["loss"], rtol=1e-5)


def test_the_chapter_runs_fig_3_3b_on_both_resnets():
    from growcore.chapters import sensli
    from growcore.runner import notebook_parameters

    runs = sensli.experiments(sensli.validate(notebook_parameters("sensli", "smoke")))
    for name in ("ResNet1", "ResNet2", "ResNetLI"):
        ours, theirs = runs[name], runs[f"{name} authors"]
        assert ours["model"]["name"] == "resnet_seed_batched"
        assert theirs["model"]["name"] == "resnet_seed_batched_authors"
        strip = lambda c: {k: v for k, v in c.items() if k not in ("name", "model")}  # noqa: E731
        assert strip(ours) == strip(theirs)    # same seeds, data, training and plan
    assert runs["ResNet[3,3,3,3] authors"]["model"]["widths"] == [3, 3, 3, 3]


@pytest.mark.parametrize("name, value, message", [
    ("spike_threshold", -0.1, "parameter 'spike_threshold' must be float >= 0"),
    ("authors_stop_test_error", 1.5, "is a test error in [0, 1]"),
    ("insertion_sweep", [10], "with at least 2 item(s); got [10]"),
    ("preset", "laptop", "parameter 'preset' must be str one of"),
])
def test_new_parameters_are_checked(name, value, message):
    from growcore.chapters import sensli
    from growcore.params import ParameterError
    from growcore.runner import notebook_parameters

    with pytest.raises(ParameterError, match=re.escape(message)):
        sensli.validate({**notebook_parameters("sensli", "smoke"), name: value})


def test_float32_spiral_differs_by_float32_rounding_only():
    from growcore.chapters.sensli import float32_spiral_deviation

    deviation = float32_spiral_deviation()
    # coordinates of size <= 1.5: a few float32 ulps (2^-23 ~ 1.2e-7 relative)
    assert 0 < deviation < 8 * 1.5 * 2.0**-23


def test_per_seed_measures_read_the_right_series():
    from growcore.chapters.sensli import per_seed

    record = _record(loss=[[9.0, 1.0, 3.0]], test_error=[[0.5, 0.2, 0.4]], final_test=[0.1],
                     final_train=[0.05])
    assert per_seed(record, "loss", last=2) == pytest.approx([2.0])
    assert per_seed(record, "last loss") == pytest.approx([3.0])
    assert per_seed(record, "test error", last=2) == pytest.approx([0.3])
    assert per_seed(record, "final test error") == pytest.approx([0.1])
    assert per_seed(record, "final train error") == pytest.approx([0.05])
    with pytest.raises(ValueError, match="measure must be one of"):
        per_seed(record, "best loss")


def test_paired_is_the_paired_difference_of_the_measure():
    from growcore.chapters.sensli import paired

    records = {"a": _record(loss=[[0.0, -1.9], [0.0, -2.0], [0.0, -2.1]]),
               "b": _record(loss=[[0.0, 0.0]] * 3)}
    d, lower = paired(records, "a", "b", "last loss")
    assert (d.mean, d.n, d.method, lower) == (pytest.approx(-2.0), 3, "paired t", 3)
    assert d.half == pytest.approx(T95_2 * 0.1 / math.sqrt(3))     # differences: sd 0.1
    back, lower_back = paired(records, "b", "a", "last loss")
    assert back.mean == pytest.approx(2.0) and back.half == pytest.approx(d.half)
    assert lower_back == 0


@pytest.mark.parametrize("shift, expect, verdict", [
    (-2.0, "below", "confirmed"), (2.0, "below", "contradicted"), (-2.0, "above", "contradicted"),
    (0.01, "below", "not resolved")])
def test_add_paired_adds_the_claim_with_the_verdict_of_its_interval(shift, expect, verdict):
    from growcore.chapters.sensli import add_paired
    from growcore.claims import Claims

    claims = Claims("sensli", "smoke")
    b = np.array([1.0, 2.0, 3.0])
    a = b + shift + np.array([-0.1, 0.0, 0.1])               # differences: sd 0.1
    lower = add_paired(claims, "k", "a is lower", "Fig. 1", "a - b", a, b, expect=expect)
    claim = claims.claims["k"]
    assert claim.estimate.method == "paired t" and claim.estimate.n == 3
    assert claim.estimate.mean == pytest.approx(shift)
    assert claim.verdict == verdict
    assert lower == f"{int((a < b).sum())} of 3"


def test_measures_table_gives_a_verdict_per_measure():
    from growcore.chapters.sensli import measures_table

    records = {"a": _record(loss=[[0.0, -1.9], [0.0, -2.0], [0.0, -2.1]],
                            final_test=[0.1, 0.2, 0.3]),
               "b": _record(loss=[[0.0, 0.0]] * 3, final_test=[0.1, 0.2, 0.3])}
    table = measures_table(records, {"a < b": ("a", "b")}, ("last loss", "final test error"))
    loss_row, error_row = table.to_dict("records")
    assert loss_row["verdict"] == "confirmed" and loss_row["a - b"].startswith("-2 [")
    assert loss_row["a lower"] == "3 of 3"
    # equal final errors: the differences are all zero, no side of zero
    assert error_row["verdict"].startswith("not resolved") and error_row["a lower"] == "0 of 3"
    assert error_row["measure"].endswith("(pp)")


def test_window_loss_and_the_least_favourable_run():
    from growcore.chapters.sensli import least_favourable, window_loss

    records = {"base": _record(loss=[[1.0, 1.0, 1.0, 1.0]] * 2),
               "x": _record(loss=[[1.0, 0.5, 0.5, 0.5]] * 2),
               "y": _record(loss=[[1.0, 0.9, 0.8, 0.9]] * 2)}
    np.testing.assert_allclose(window_loss(records["y"], 1, 2), [0.85, 0.85])
    np.testing.assert_allclose(window_loss(records["y"], 2), [0.85, 0.85])  # to the end
    with pytest.raises(ValueError, match="start must be an iteration"):
        window_loss(records["y"], 4)
    assert least_favourable(records, ["x", "y"], "base", last=3) == "y"


def test_final_frame_has_one_row_per_seed_and_run():
    from growcore.chapters.sensli import final_frame

    records = {"a": _record(loss=[[1.0, 2.0], [3.0, 4.0]])}
    frame = final_frame(records, {"label": "a"}, last=1)
    assert frame.to_dict("records") == [{"run": "label", "seed": 0, "value": 2.0},
                                        {"run": "label", "seed": 1, "value": 4.0}]


def test_every_method_of_the_figures_has_one_colour():
    from growcore.chapters.sensli import COLORS

    for small, large, inserted in [("FNN1", "FNN2", "FNNLI"), ("ResNet1", "ResNet2", "ResNetLI")]:
        assert len({COLORS[small], COLORS[large], COLORS[inserted]}) == 3
    assert len({COLORS[k] for k in ("LI", "LI_other", "random position")}) == 3


def test_spikes_count_one_iteration_jumps_from_the_insertion_on():
    from growcore.chapters.sensli import spikes

    record = _record(loss=[[1.0, 1.0, 2.0, 0.1, 0.1],        # jumps by 1.0 at iteration 1 -> 2
                           [1.0, 1.3, 1.6, 1.9, 2.2],        # rises by 1.2, never 0.5 at once
                           [1.0, 0.9, 0.8, 0.7, 0.6]])
    assert spikes(record, at=0) == (1, 3)
    assert spikes(record, at=2) == (0, 3)                    # the jump is before iteration 2
    assert spikes(record, at=0, threshold=0.25) == (2, 3)
    assert spikes(record, at=4) == (0, 3)                    # nothing after the last iteration


def test_authors_stop_ends_a_run_after_the_update_that_reaches_the_target():
    from growcore.chapters.sensli import authors_mean, authors_series, authors_stop

    # test_error[t]: the network after t updates; final_test: after all 4
    record = _record(loss=[[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0], [8.0, 6.0, 4.0, 2.0],
                           [4.0, 4.0, 4.0, 4.0]],
                     test_error=[[0.5, 0.0, 0.2, 0.0],    # 0 after update 0: one loss recorded
                                 [0.5, 0.5, 0.5, 0.5],    # 0 only after the last update
                                 [0.0, 0.5, 0.5, 0.5],    # 0 before training: not checked
                                 [0.5, 0.5, 0.1, 0.5]],
                     final_test=[0.0, 0.0, 0.5, 0.5])
    assert authors_stop(record).tolist() == [1, 4, 4, 4]
    assert authors_stop(record, target=0.1).tolist() == [1, 4, 4, 2]   # seed 3: 0.1 after 1
    series = authors_series(record)
    assert np.isnan(series[0, 1:]).all() and not np.isnan(series[1:]).any()
    np.testing.assert_allclose(authors_mean(record), [5.0, 13 / 3, 10 / 3, 7 / 3])
    everyone_stops = _record(loss=[[1.0, 1.0]], test_error=[[0.5, 0.0]], final_test=[0.0])
    assert np.isnan(authors_mean(everyone_stops)[1])


def test_early_stopping_table_averages_the_runs_still_going():
    from growcore.chapters.sensli import early_stopping_table

    records = {"A": _record(loss=[[2.0, 1.0, 0.0], [2.0, 2.0, 2.0]],
                            test_error=[[0.5, 0.0, 0.0], [0.5, 0.5, 0.5]],
                            final_test=[0.0, 0.5])}
    row = early_stopping_table(records, ["A"]).split("\n")[1].split()
    # seed 0 stops after its first update; at the end only seed 1 is going: 2.0 (n = 1)
    assert row[:3] == ["A", "1/2", "1"]
    assert row[3:7] == ["2.000", "±", "0.000", "("]
    # full training: seeds end at 0.0 and 2.0, sd sqrt 2: half-width t(0.975, 1) sqrt 2 / sqrt 2
    assert row[7:11] == ["1)", "1.000", "±", f"{T95_1:.3f}"]


def test_final_table_gives_the_last_values_beside_the_last_means():
    from growcore.chapters.sensli import final_table

    records = {"A": _record(loss=[[1.0, 3.0], [1.0, 3.0]], test_error=[[0.1, 0.3]] * 2,
                            final_test=[0.5, 0.5])}
    row = final_table(records, ["A"], last=2).split("\n")[1].split()
    values = row[2::3]                  # name, n, then "mean ± half" six times
    assert row[:2] == ["A", "2"]
    assert values == ["2.000", "3.000", "1.000", "20.0", "50.0", "30.0"]


def test_early_stopping_words_count_the_runs_that_stop():
    from growcore.chapters.sensli import early_stopping_words

    record = _record(loss=[[2.0, 1.0, 0.0], [2.0, 2.0, 2.0], [2.0, 2.0, 1.0]],
                     test_error=[[0.5, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]],
                     final_test=[0.0, 0.5, 0.5])
    # seed 0 stops after its first update; seeds 1 and 2 end at 2.0 and 1.0; all seeds: 1.0
    assert early_stopping_words(record) == (
        "1 of 3 runs stop (median at iteration 1); the plotted loss at the last iteration is "
        "1.500 over the 2 runs still going, against 1.000 over all seeds")
    going = _record(loss=[[2.0, 1.0]], test_error=[[0.5, 0.5]], final_test=[0.5])
    assert early_stopping_words(going).startswith("no run of 1 stops")


def test_the_lab_preset_is_a_reduced_cpu_run_that_keeps_the_papers_schedule():
    from growcore.chapters import sensli

    lab, cpu = sensli.notebook_parameters("lab"), sensli.notebook_parameters("cpu")
    assert lab["preset"] == "lab" and lab["n_seeds"] < cpu["n_seeds"]
    assert set(lab["insertion_sweep"]) < set(cpu["insertion_sweep"])
    for name in ("iterations", "insertion_iteration", "lr_fnn", "lr_resnet"):
        assert lab[name] == cpu[name]
    assert len(sensli.experiments(lab)) < len(sensli.experiments(cpu))


def test_the_chapters_two_panel_figure_draws_the_loss_band_in_log_space():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_hex

    from growcore.chapters.sensli import COLORS, color_of, loss_and_error

    assert color_of("LI (lr x0.8)") == COLORS["LI"] and color_of("other") is None
    loss = [[1.0, 0.1, 0.01]] * 3 + [[1.0, 0.2, 0.04]] * 3      # six seeds: a band
    record = {"metrics": {"loss": loss, "test_error": [[0.5, 0.4, 0.3]] * 6,
                          "events": []}}
    fig = loss_and_error({"FNN2": record}, "title")
    top = fig.axes[0]
    assert top.get_yscale() == "log" and top.get_title() == "title"
    (line,) = top.get_lines()
    assert to_hex(line.get_color()) == COLORS["FNN2"]
    # the geometric mean of 0.01 and 0.04 at the last iteration, not their mean 0.025
    assert line.get_ydata()[-1] == pytest.approx(0.02)
    band = top.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() > 0                                        # never below zero

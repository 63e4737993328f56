"""NAGN (Wang, Mille and Hidane): the statistic against a direct computation, the contrast,
extrapolation and increments against hand-computed values, the width growth of eq. (1),
the non-decreasing constraint, and the trigger and stop logic on synthetic histories."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from growcore.data import Split
from growcore.how import GradMax, KaimingNew
from growcore.models.sites import Proposal
from growcore.models.vgg import VGG
from growcore.ops import make_optimizer, rebuild_optimizer, widen
from growcore.plan import GrowthPlan
from growcore.stats import NAGNObserver, TargetNorm, nagn_direct
from growcore.train import train
from growcore.when import TrainState, ValidationWindow
from growcore.where import NAGN, increments, neighbour_average, non_decreasing, relative_contrast

EXACT = 1e-12       # float64 arithmetic on a handful of numbers
PRESERVED = 1e-5    # float32 forward passes before and after growth agree to rounding
SAMPLE_SIGMAS = 5   # a sample variance within 5 standard errors of its expectation


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.ReLU(),
                         nn.Linear(3, 4)).double()


def _data(n=16, d=5, classes=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randint(classes, (n,), generator=g))


def _observed(model, X, y):
    observer = NAGNObserver(window=1)
    observer.attach(model)
    nn.functional.cross_entropy(model(X), y).backward()  # the batch mean, as in train()
    observer.detach()
    return observer.nagn()


def test_nagn_of_an_mlp_matches_the_closed_form():
    model, (X, y) = _mlp(), _data()
    W = [m.weight for m in model if isinstance(m, nn.Linear)]
    z1 = model[0](X)
    z2 = model[2](z1.relu())
    z3 = model[4](z2.relu())
    d3 = z3.softmax(1) - nn.functional.one_hot(y, 4)       # dl/dz_L, per example
    d2 = (d3 @ W[2]) * (z2 > 0)
    d1 = (d2 @ W[1]) * (z1 > 0)
    expected = torch.stack([(d.pow(2).sum(1) / d.shape[1]).mean().sqrt() for d in (d1, d2, d3)])
    layers = [model[0], model[2], model[4]]
    assert torch.allclose(_observed(model, X, y), expected.detach(), atol=EXACT, rtol=0)
    assert torch.allclose(nagn_direct(model, X, y, layers), expected.detach(), atol=EXACT,
                          rtol=0)


def test_nagn_of_a_convnet_is_normalised_by_channels_times_pixels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)).double()
    g = torch.Generator().manual_seed(2)
    X = torch.randn(6, 2, 5, 5, generator=g, dtype=torch.float64)
    y = torch.randint(5, (6,), generator=g)
    layers = [model[0], model[2], model[5]]
    observed, direct = _observed(model, X, y), nagn_direct(model, X, y, layers)
    assert torch.allclose(observed, direct, atol=EXACT, rtol=0)
    # T_1 = 3 * 5 * 5: the unnormalised mean squared norm is 75 NAGN_1^2
    z = model[0](X[:1])
    loss = nn.functional.cross_entropy(model[1:](z), y[:1])
    (grad,) = torch.autograd.grad(loss, z)
    assert math.isclose(nagn_direct(model, X[:1], y[:1], layers)[0] ** 2 * 75,
                        float(grad.pow(2).sum()), rel_tol=EXACT)


def test_observer_averages_over_its_window_of_batches():
    model, (X, y) = _mlp(), _data(n=20)
    observer = NAGNObserver(window=2)
    observer.attach(model)
    for part in (slice(0, 10), slice(10, 20)):
        nn.functional.cross_entropy(model(X[part]), y[part]).backward()
    observer.detach()
    direct = nagn_direct(model, X, y, [model[0], model[2], model[4]])
    assert torch.allclose(observer.nagn(), direct, atol=EXACT, rtol=0)


def test_contrast_and_extrapolation_by_hand():
    # slopes 1, -1, 0: median 0; ends NAGN_2 - 0 = 2 and NAGN_3 + 0 = 1
    g = torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    assert neighbour_average(g).tolist() == [2.0, 1.0, 1.5, 1.0]
    assert torch.allclose(relative_contrast(g), torch.tensor([-0.5, 1.0, -1 / 3, 0.0],
                                                             dtype=torch.float64), atol=EXACT)


def test_even_number_of_slopes_uses_the_mean_of_the_middle_two():
    g = torch.tensor([1.0, 3.0, 2.0, 6.0, 5.0])  # slopes 2, -1, 4, -1: median 0.5
    average = neighbour_average(g)
    assert average[0] == pytest.approx(2.5) and average[-1] == pytest.approx(6.5)
    delta, info = increments(g, [10] * 5, tau=0.05, delta_max=100)
    assert info["r"][3] == pytest.approx(6 / 3.5 - 1)
    # s_2 = 1; s_4 = (5/7 - 0.05) / (1 - 0.05) = 0.699, floor(6.99) = 6; output never grows
    assert delta == [0, 10, 0, 6, 0]


def test_increments_by_hand_with_delta_max():
    delta, info = increments(torch.tensor([1.0, 2.0, 1.0, 1.0]), [4, 6, 8, 10], tau=0.05,
                             delta_max=4)
    assert delta == [0, 4, 0, 0] and not info["fallback"]
    assert info["s"] == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_a_tie_grows_both_layers_fully():
    delta, info = increments(torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0]), [4, 6, 4, 6, 10],
                             tau=0.05, delta_max=5)
    assert info["s"][1] == info["s"][3] == 1.0
    assert delta == [0, 5, 0, 5, 0]


def test_no_layer_passes_tau_falls_back_to_rising_layers():
    # r = 0, 0, 1.04 / 1.01 - 1 = 0.0297 < tau: layers 2 and 3 rise above their predecessor
    delta, info = increments(torch.tensor([1.0, 1.02, 1.04, 1.0]), [8, 8, 8, 10], tau=0.05,
                             delta_max=64, fallback_fraction=0.25)
    assert info["fallback"] and max(info["p"]) == 0
    assert delta == [0, 2, 2, 0]


def test_output_layer_never_grows_and_bad_neighbourhoods_give_no_contrast():
    delta, _ = increments(torch.tensor([1.0, 1.0, 1.0, 5.0]), [4, 4, 4, 10], tau=0.05,
                          delta_max=64)
    assert delta == [0, 0, 0, 0]
    # slopes 0 and 4: median 2, NAGN~_1 = 1 - 2 < 0: the ratio means nothing
    assert relative_contrast(torch.tensor([1.0, 1.0, 5.0]))[0] == 0


@pytest.mark.parametrize("widths, delta, limits, expected", [
    ([8, 3, 8], [0, 3, 0], [8, 3, 8], [0, 3, 0]),     # the bottleneck doubles, no more
    ([4, 4, 4], [4, 0, 0], [4, 4, 4], [4, 4, 4]),     # carried forward
    ([4, 8, 2], [0, 0, 0], [4, 8, 2], [0, 0, 2]),     # forward adjustment within the limit
    ([4, 8, 16], [0, 0, 0], [4, 8, 16], [0, 0, 0]),   # already non-decreasing
])
def test_non_decreasing_constraint(widths, delta, limits, expected):
    out = non_decreasing(widths, delta, limits)
    assert out == expected
    new = [n + d for n, d in zip(widths, out)]
    assert all(d <= max(lim, d0) for d, lim, d0 in zip(out, limits, delta))
    assert all(b >= a or b - n == lim for a, b, n, lim in zip(new, new[1:], widths[1:],
                                                               limits[1:]))


def _vgg(seed=0):
    torch.manual_seed(seed)
    return VGG([[4, 3], [6]], num_classes=5, head="flatten", hidden=(5,),
               input_shape=(3, 8, 8))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_width_growth_of_eq_1_preserves_the_function(mode):
    model = _vgg()
    X = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    model.train()
    for _ in range(3):  # non-trivial running statistics for the eval mode
        model(X)
    sites = model.width_sites()  # conv, conv, conv -> dense across the flatten, dense
    grown = widen(model, [Proposal(s, k) for s, k in zip(sites, [2, 3, 1, 2])],
                  KaimingNew(seed=3)).model
    model.train(mode == "train")
    grown.train(mode == "train")
    with torch.no_grad():
        before, after = model(X), grown(X)
    assert (after - before).abs().max() < PRESERVED
    new_bn = grown.get_submodule(sites[0].norm)
    assert torch.equal(new_bn.weight[4:], torch.ones(2))
    assert torch.equal(new_bn.bias[4:], torch.zeros(2))


def test_eq_1_blocks_variances_and_nonzero_gradient():
    model = _vgg()
    site = model.width_sites()[1]  # conv 4 -> 3 channels, 3x3: fan-in n_l k^2 = 36
    k = 400
    new = KaimingNew(seed=0)(model, Proposal(site, k))
    variance = float(new.incoming.double().var())
    assert abs(variance / (2 / 36) - 1) < SAMPLE_SIGMAS * math.sqrt(2 / new.incoming.numel())
    assert new.outgoing.abs().max() == 0                      # W^new1 = 0
    growth = widen(model, [Proposal(model.width_sites()[0], 2), Proposal(site, 3)],
                   KaimingNew(seed=1))
    conv2 = growth.model.get_submodule(site.producer)
    assert conv2.weight[3:, 4:].abs().max() == 0              # W^new3 = 0
    assert conv2.weight[:3, 4:].abs().max() == 0              # W^new1 = 0
    assert conv2.weight[3:, :4].abs().min() > 0               # W^new2 random
    X = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    loss = nn.functional.cross_entropy(growth.model(X), torch.arange(8) % 5)
    (grad,) = torch.autograd.grad(loss, conv2.weight)
    assert grad[:3, 4:].abs().max() > 0                        # the new units can learn


def test_adamw_state_survives_nagn_growth():
    model = _vgg()
    X = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    opt = make_optimizer("adamw", model.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), torch.arange(8) % 5).backward()
        opt.step()
    site = model.width_sites()[0]
    growth = widen(model, [Proposal(site, 2)], KaimingNew())
    new_opt = rebuild_optimizer(opt, model, growth)
    old_p = model.get_submodule(site.producer).weight
    new_p = growth.model.get_submodule(site.producer).weight
    assert float(new_opt.state[new_p]["step"]) == 2
    assert torch.equal(new_opt.state[new_p]["exp_avg"][:4], opt.state[old_p]["exp_avg"])
    assert new_opt.state[new_p]["exp_avg"][4:].abs().max() == 0


def _bottleneck_problem():
    """64 random 8x8 images of 5 classes, a VGG block [8, 2, 8] and its NAGN observer."""
    torch.manual_seed(0)
    X = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(64) % 5
    model = VGG([[8, 2, 8]], num_classes=5, input_shape=(3, 8, 8))
    return X, y, model, NAGNObserver(window=4)


def test_nagn_growth_in_the_training_loop_applies_its_increments():
    X, y, model, observer = _bottleneck_problem()
    where = NAGN(observer, tau=0.05, delta_max=64)
    plan = GrowthPlan(_At(8), where, KaimingNew(), op=widen)
    grown, history = train(model, Split(X, y), iterations=10, lr=1e-2, optimizer="adamw",
                           batch_size=16, plan=plan, progress=False)
    event = history.events[0]
    assert len(event["nagn"]) == 4 and event["widths"] == [8, 2, 8]
    assert sum(event["increments"]) > 0
    assert [grown.get_submodule(s.producer).out_channels for s in grown.width_sites()] == \
        [n + d for n, d in zip([8, 2, 8], event["increments"])]
    assert event["n_params_after"] > event["n_params_before"]


def test_nagn_where_composes_with_the_gradmax_initialiser():
    """NAGN decides where and how much; GradMax (the GradMax chapter's how) initialises."""
    X, y, model, observer = _bottleneck_problem()
    gradmax, made, checked = GradMax(batch_size=32, norm=TargetNorm(value=1e-3)), [], []

    def how(model, proposal, stats):
        made.append(gradmax(model, proposal, stats))
        return made[-1]

    how.kind = "width"  # the plan checks that where and how serve the same kind

    def op(model, proposals, how, stats):
        growth = widen(model, proposals, how, stats)
        model.eval(), growth.model.eval()
        with torch.no_grad():
            checked.append((growth.model(X) - model(X)).abs().max().item())
        model.train(), growth.model.train()
        return growth

    plan = GrowthPlan(_At(8), NAGN(observer, tau=0.05, delta_max=64), how, op=op)
    grown, history = train(model, Split(X, y), iterations=10, lr=1e-2, optimizer="adamw",
                           batch_size=16, plan=plan, progress=False)
    event = history.events[0]
    assert sum(event["increments"]) > 0 and len(made) == sum(d > 0 for d in event["increments"])
    widths = [grown.get_submodule(s.producer).out_channels for s in grown.width_sites()]
    assert widths == [n + d for n, d in zip([8, 2, 8], event["increments"])]
    assert checked[0] < PRESERVED, "GradMax's zero incoming weights keep the function"
    for new in made:
        assert torch.count_nonzero(new.incoming) == 0
        norms = new.outgoing.flatten(2).norm(dim=(0, 2))
        assert torch.allclose(norms, torch.full_like(norms, 1e-3), rtol=1e-4)


class _At:
    def __init__(self, t):
        self.t = t

    def __call__(self, state):
        return state.iteration == self.t

    def describe(self):
        return {"policy": "at", "iteration": self.t}


def _feed(policy, accuracies, per_eval=3):
    """Feed evaluations one at a time (the policy is asked several times per evaluation)."""
    history, fired = SimpleNamespace(evals=[]), []
    for i, a in enumerate(accuracies):
        history.evals.append({"iteration": i, "val_error": torch.tensor([1 - a])})
        for _ in range(per_eval):
            if policy(TrainState(i, history)):
                fired.append(i)
    return fired


def test_trigger_fires_on_a_plateau_and_waits_for_two_fresh_windows():
    policy = ValidationWindow(w_acc=3, delta_acc=3e-3, delta_stop=5e-2)
    rising = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9]               # gain 0.42: no trigger
    assert _feed(policy, rising) == []
    policy = ValidationWindow(w_acc=3, delta_acc=3e-3, delta_stop=5e-2)
    assert _feed(policy, [0.5] * 6 + [0.6] * 6 + [0.61] * 6) == [5, 11]
    assert policy.stopped_at == (17, pytest.approx(0.61))   # gain 1.7 % < 5 %: stop


@pytest.mark.parametrize("last, fires", [(0.501, True), (0.502, False)])
def test_trigger_threshold_is_relative(last, fires):
    policy = ValidationWindow(w_acc=3, delta_acc=3e-3)
    assert bool(_feed(policy, [0.5] * 3 + [last] * 3)) == fires  # gain 0.002 / 0.004


def test_stop_is_permanent():
    policy = ValidationWindow(w_acc=2, delta_acc=3e-3, delta_stop=5e-2)
    fired = _feed(policy, [0.5] * 4 + [0.5] * 4 + [0.9, 0.9] * 4)
    assert fired == [3] and policy.stopped_at[0] == 7


def test_mean_band_gives_the_t_half_width_over_seeds():
    """The band's mean and 95 % t half-width by hand; 0 for one value."""
    from growcore.plots import mean_band

    mean, half = mean_band([1.0, 2.0, 4.0])
    # deviations -4/3, -1/3, 5/3: sample variance (16 + 1 + 25) / 9 / 2 = 7/3
    t_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # t(p, 2) = (2p - 1) / sqrt(2p(1 - p))
    assert mean == pytest.approx(7 / 3, abs=EXACT)
    assert half == pytest.approx(t_975_2 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-9)
    one, none = mean_band([0.5])
    assert one == 0.5 and none == 0.0


def test_the_chapters_plan_is_the_papers_and_takes_any_width_initialiser():
    from growcore.chapters import nagn as chapter
    from growcore.how import GradMax, KaimingNew
    from growcore.registry import build_plan
    from growcore.when import ValidationWindow
    from growcore.where import NAGN

    g = {"w_acc": 3, "delta_acc": 3e-3, "delta_stop": 5e-2, "tau": 0.05, "delta_max": 64,
         "fallback_fraction": 0.25, "nagn_window_batches": 10}
    plan = build_plan(chapter.growth_plan(g), {"seed": 7})
    assert isinstance(plan.when, ValidationWindow) and isinstance(plan.where, NAGN)
    assert isinstance(plan.how, KaimingNew) and plan.how.seed == 7
    assert (plan.when.w_acc, plan.where.tau, plan.where.observer.window) == (3, 0.05, 10)
    other = build_plan(chapter.growth_plan({**g, "how": "gradmax"}), {"seed": 7})
    assert isinstance(other.how, GradMax) and other.how.seed == 7


def _images(n=60, seed=0):
    """Random 8x8 images of 10 classes: 40 to train on, 10 to validate, 10 to test."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 10
    return Split(X[:40], y[:40], X[50:], y[50:], X[40:50], y[40:50])


def test_the_chapters_runs_and_their_static_baselines_run_on_the_driver(tmp_path):
    """A grown run of the chapter (growth forced, as in the smoke preset) through
    growcore.driver, then its static baseline made from the grown record: the same seeds and
    conditions, each seed's final widths, no growth; the chapter's summaries read both."""
    from growcore.chapters import nagn as chapter
    from growcore.driver import run_experiment

    p = {**chapter.notebook_parameters("smoke"), "batch_size": 10, "epochs": 4,
         "evals_per_epoch": 2}
    runs = chapter.experiments(p)
    assert set(runs) == {"fig1", "grown [[4], [4], [8]]"}
    assert runs["fig1"]["seeds"] == [0, 1] and runs["fig1"]["plan"] is not None
    config = chapter.experiment(p, "grown", [[4], [4], [8]], [0, 1])
    options = {"split": _images(), "directory": tmp_path, "progress": False, "device": "cpu"}
    grown = run_experiment(config, **options)
    widths = chapter.final_widths(grown)
    for seed, final in zip(grown["seeds"], widths):
        events = chapter.seed_events(grown, seed)
        assert events and all(e["seeds"] == [seed] for e in events)
        if len(events) == 1:
            assert [n for block in final for n in block] == [
                n + d for n, d in zip(events[0]["widths"], events[0]["increments"])]
    static = run_experiment(chapter.static_baseline(grown, "static"), **options)
    assert static["config"]["plan"] is None and not static["metrics"]["events"]
    assert static["config"]["model"]["per_seed"] == {"0": {"config": widths[0]},
                                                     "1": {"config": widths[1]}}
    assert chapter.final_widths(static) == widths
    assert {k: static["config"][k] for k in ("seeds", "data", "train")} == \
        {k: grown["config"][k] for k in ("seeds", "data", "train")}
    accuracy = chapter.accuracy_at_last_eval(grown)
    assert accuracy == [1 - e[-1]["test_error"] for e in grown["metrics"]["evals"]]
    epochs, curves = chapter.accuracy_curves(grown)
    assert curves.shape == (2, len(epochs)) and epochs[1] == 0.5  # 2 evaluations per epoch
    assert curves[:, -1].tolist() == accuracy
    ratio = chapter.ratios(grown, static)
    assert set(ratio) == {"accuracy", "time", "flops"}
    assert ratio["accuracy"] == pytest.approx(
        sum(accuracy) / sum(chapter.accuracy_at_last_eval(static)), rel=EXACT)


def test_the_window_trigger_from_an_accuracy_of_zero():
    """No division by zero: from 0 any rise is an infinite relative gain, none a plateau."""
    from growcore.when.plateau import gained, window_trigger

    assert window_trigger([0.0, 0.0, 0.0, 0.0], 2, 3e-3) == (True, 0.0)
    assert window_trigger([0.0, 0.0, 0.1, 0.1], 2, 3e-3) == (False, 0.1)
    assert window_trigger([0.2, 0.2, 0.2, 0.2], 2, 3e-3) == (True, 0.2)
    assert gained(0.0, 0.1, 0.05) and not gained(0.0, 0.0, 0.05) and gained(0.0, 0.0, -1.0)

"""The composability matrix: every model family x where x how, through the registry.

Each legal combination grows once after a few training steps on tiny random data, keeps the
function at growth in train and in eval mode (the function-preserving initialisers, to
``PRESERVED``; Firefly-Opt's epsilon-sized outgoing weights to ``FIREFLY``), and carries the
optimiser state (old momentum unchanged, new entries zero). Each illegal combination is refused
before any training with a message naming both parts. The families and parts come from the
registry, so a new entry is tested without editing this file.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from growcore import registry
from growcore.data import Split
from growcore.losses import LOSSES, as_seed_batch
from growcore.models import MobileNetV2, SeedBatchedFNN, catalog
from growcore.models.mlp import MLP
from growcore.models.resnet import WideResNet
from growcore.models.seed_batched import SeedShapeMismatch
from growcore.models.sites import Proposal
from growcore.models.vgg import VGG
from growcore.ops import make_optimizer, rebuild_optimizer
from growcore.plan import PlanError
from growcore.stats import Probe
from growcore.train import train

PRESERVED = 1e-5   # float32 forward of the same function through a grown network
FIREFLY = 1e-2     # Firefly-Opt's new units carry outgoing weights of norm 1e-4: O(1e-4) change
STEPS = 3          # training steps before the growth (NAGN's observer needs backward passes)
EXACT = {"zero", "random", "kaiming_new", "gradmax", "gradmax_opt", "identity"}


FAMILIES = catalog.FAMILIES
CLASSES = catalog.CLASSES
RELU1 = catalog.RELU1


def _data(shape: str, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn((24, 4) if shape == "vector" else (12, 3, 8, 8), generator=g)
    y = torch.randint(0, CLASSES, (len(X),), generator=g)
    return Split(X, y)


SPEED = {"nagn": {"tau": 0.0, "delta_max": 2, "window_batches": STEPS},
         "singular_value": {"k": 2}, "gradmax_opt": {"steps": 5},
         "firefly_opt": {"steps": 2, "batch_size": 8}}


def _spec(role: str, name: str, model) -> dict:
    """The catalog's options for this model, plus small settings for speed."""
    return {"name": name, **catalog.example_options(name, model), **SPEED.get(name, {})}


def _plan(family: str, where: str, how: str):
    model, shape = FAMILIES[family]()
    spec = {"when": {"name": "at", "iterations": STEPS}, "where": _spec("where", where, model),
            "how": _spec("how", how, model)}
    return model, shape, spec


COMBINATIONS = [(f, c["where"], c["how"]) for f in FAMILIES for c in registry.matrix()]
SEED_BATCHED = ("seed-batched FNN", "seed-batched ResNet")
STAGED = ("VGG", "ResNet", "WRN", "MobileNet-v1", "MobileNetV2")


def legal(family: str, where: str, how: str) -> bool:
    """Which combinations must work, by the theory each part needs (written independently
    of the library's checks): width growth needs width sites (the seed-batched nets have
    none); blocks and stage orders need a staged model; identity layers fit every depth site
    of these families (their activations are ReLU forms, or the site is residual)."""
    if registry.entry("where", where).kind == "width":
        # the seed-batched FNN widens seed by seed; NAGN's hooks need per-seed layers, and
        # the seed-batched ResNet's residual stream couples all its widths (no width sites)
        if family == "seed-batched FNN":
            return where != "nagn"
        return family != "seed-batched ResNet"
    if how.startswith("block_") or where == "stage_order":
        return family in STAGED
    return True


def _outputs(model, X, train_mode: bool):
    model = copy.deepcopy(model).train(train_mode)  # running statistics stay untouched
    with torch.no_grad():
        return as_seed_batch(model(X))


def _grow_once(model, plan, split):
    for observer in plan.observers():
        observer.attach(model)
    opt = make_optimizer("sgd", model.parameters(), 0.01, momentum=0.9)
    batches = iter(split.minibatches(8, torch.Generator().manual_seed(0)))
    for _ in range(STEPS):
        X, y = next(batches, (split.X_train, split.y_train))
        opt.zero_grad()
        LOSSES["cross_entropy"](as_seed_batch(model(X)), y).sum().backward()
        opt.step()
    probe = Probe(split)
    proposals, _ = plan.propose(model, probe)
    for observer in plan.observers():
        observer.detach()
    try:
        return opt, proposals, plan.apply(model, proposals, probe)
    except SeedShapeMismatch:
        return opt, proposals, None


def _check_state(opt, old_model, new_opt, growth):
    old_state = {name: opt.state[p]["momentum_buffer"]
                 for name, p in old_model.named_parameters() if p in opt.state}
    for name, param in growth.model.named_parameters():
        status = growth.status(name)
        state = new_opt.state.get(param, {}).get("momentum_buffer")
        if status == "new":
            assert state is None or not state.any(), name
        elif status == "old":
            assert torch.equal(state, old_state[growth.source_of(name)]), name
        elif status == "extended":
            old = old_state[name]
            block = tuple(slice(0, n) for n in old.shape)
            assert torch.equal(state[block], old), name
            rest = state.clone()
            rest[block] = 0
            assert not rest.any(), f"{name}: new entries of the momentum are not zero"
        else:  # mixed: a seed-batched tensor that is new for some seeds
            assert status == "mixed"
            source = growth.sources[name]
            for s, src in enumerate(source):
                expected = old_state[src][s] if src is not None else torch.zeros_like(state[s])
                assert torch.equal(state[s], expected), (name, s)


@pytest.mark.parametrize(("family", "where", "how"), COMBINATIONS)
def test_every_combination_grows_or_is_refused(family, where, how):
    torch.manual_seed(0)
    model, shape, spec = _plan(family, where, how)
    plan = registry.build_plan(spec, {"seed": 0})
    if not legal(family, where, how):
        with pytest.raises(PlanError) as refusal:
            plan.check(model)
        message = str(refusal.value)
        assert any(part in message for part in (type(plan.where).__name__,
                                                type(plan.how).__name__)), message
        return
    plan.check(model)
    split = _data(shape)
    opt, proposals, growth = _grow_once(model, plan, split)
    if growth is None:
        # seeds of a batch chose different widths: refused as one tensor program (the
        # driver reruns the seeds grouped by their choice)
        per_seed = [sorted((p.site.name, p.amount) for p in proposals if p.seed == i)
                    for i in range(model.n_seeds)]
        assert len({repr(c) for c in per_seed}) > 1, per_seed
        return
    assert proposals and all(p.site.kind == plan.kind for p in proposals)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in growth.model.parameters())
    assert after >= before
    if any(p.amount > 0 for p in proposals):
        assert after > before, "proposals with units or layers, but no new parameters"
    X = split.X_train
    tolerance = PRESERVED if how in EXACT else FIREFLY if how == "firefly_opt" else None
    preserving = tolerance is not None or spec["how"].get("preserve", False)
    for train_mode in (True, False):
        old, new = _outputs(model, X, train_mode), _outputs(growth.model, X, train_mode)
        assert new.shape == old.shape
        if preserving:
            error = float((new - old).abs().max() / old.abs().max().clamp_min(1))
            assert error < (tolerance or PRESERVED), (train_mode, error)
    _check_state(opt, model, rebuild_optimizer(opt, model, growth), growth)


@pytest.mark.parametrize(("where", "how"), [
    ("sensli", "gradmax"), ("nagn", "identity"),
    ({"name": "stage_order", "seed": [1], "target": [2]}, "random")])
def test_a_width_part_with_a_depth_part_is_refused_when_the_plan_is_built(where, how):
    with pytest.raises(PlanError) as refusal:
        registry.build_plan({"when": {"name": "at", "iterations": 1}, "where": where,
                             "how": how})
    message = str(refusal.value)
    assert "where-criterion" in message and "how-initialiser" in message
    kind = registry.entry("where", where if isinstance(where, str) else where["name"]).kind
    assert all(name in message for name in registry.names("how", kind))


@pytest.mark.parametrize(("model", "where", "how", "reason"), [
    (lambda: MLP([4, 6, CLASSES], activation="tanh"), "sensli", "identity", "tanh"),
    (lambda: MLP([4, 6, CLASSES]), "sensli", "block_copy", "staged"),
    (lambda: MLP([4, 6, CLASSES]), "stage_order", "identity", "stages"),
    (lambda: SeedBatchedFNN.initial([4], [0]), "nagn", "gradmax", "hooks"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), "sensli", "identity",
     "no depth sites"),
])
def test_a_combination_that_does_not_fit_the_model_is_refused_before_training(
        model, where, how, reason):
    net = model()
    spec = {"when": {"name": "at", "iterations": 1}, "where": _spec("where", where, net),
            "how": how}
    plan = registry.build_plan(spec)
    with pytest.raises(PlanError, match=reason):
        train(net, _data("vector"), iterations=2, lr=0.1, plan=plan, progress=False)


def test_unknown_names_and_options_list_the_valid_ones():
    with pytest.raises(PlanError, match=r"valid: .*gradmax"):
        registry.build_part("how", "gradmaxx")
    with pytest.raises(PlanError, match=r"no option .*'alhpa'.*valid: .*alpha"):
        registry.build_part("when", {"name": "fragrow", "alhpa": 4})
    with pytest.raises(PlanError, match="missing"):
        registry.build_plan({"when": "at", "where": "nagn"})


@pytest.mark.parametrize("role", registry.ROLES)
def test_every_part_is_rebuilt_from_its_description(role):
    context = {"iterations": 5, "iterations_per_epoch": 10, "n_blocks": 2,
               "total_epochs": 6.0, "finetune_min": 2.0, "units": {"layers.0": 1},
               "factor": 2.0, "growths": 2, "seed": 7}
    required = {"every": {"interval": 3}, "stage_order": {"seed": [1, 1], "target": [2, 2]}}
    for name in registry.names(role):
        part = registry.build_part(role, {"name": name, **required.get(name, {})}, context)
        spec = registry.spec_from_description(
            {r: part.describe() if r == role else _any_description(r) for r in registry.ROLES})
        assert spec[role]["name"] == name
        again = registry.build_part(role, spec[role])
        assert again.describe() == part.describe(), name


def _any_description(role: str) -> dict:
    return {"when": {"policy": "AtIterations", "iterations": [1]},
            "where": {"criterion": "SensLI"}, "how": {"how": "IdentityLayer"}}[role]


def test_a_record_describes_the_plan_it_ran():
    split = _data("vector")
    plan = registry.build_plan({"when": {"name": "every", "interval": 2, "count": 1},
                                "where": "nagn", "how": "random"}, {"seed": 3})
    _, history = train(MLP([4, 6, CLASSES], activation="relu1"), split, iterations=4, lr=0.1,
                       batch_size=8, plan=plan, progress=False)
    described = history.as_dict()["plan"]
    assert described == plan.describe()
    assert registry.plan_from_description(described).describe() == described
    assert history.events and history.events[0]["proposals"]


def _checked(events: list):
    """The default operator, checking at every growth that the function is kept (train and
    eval mode, on the first examples the initialiser's probe holds)."""
    from growcore.plan import apply_growth

    def op(model, proposals, how, stats):
        growth = apply_growth(model, proposals, how, stats)
        X = stats.split.X_train[:8]
        for train_mode in (True, False):
            old, new = _outputs(model, X, train_mode), _outputs(growth.model, X, train_mode)
            events.append(float((new - old).abs().max()))
        return growth
    return op


def _images(n: int = 16, val: bool = False, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    X, Xv = torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 3, 8, 8, generator=g)
    y, yv = (torch.randint(0, CLASSES, (n,), generator=g) for _ in range(2))
    return Split(X, y, X_val=Xv, y_val=yv) if val else Split(X, y)


SCENARIOS = {
    # FRAGrow's timing with SensLI's merit on a VGG: depth growth by identity layers
    "fragrow x sensli x identity on VGG": (
        lambda: VGG([[4], [4]], CLASSES, activation=RELU1, input_shape=(3, 8, 8)),
        {"when": {"name": "fragrow", "alpha": 4}, "where": "sensli", "how": "identity"},
        {"iterations_per_epoch": 2, "n_blocks": 1, "total_epochs": 4, "finetune_min": 1},
        _images(val=True), "cross_entropy"),
    # NAGN with GradMax on MobileNetV2 x0.25 (the stem is residual there: not a site)
    "every x nagn x gradmax on MobileNetV2 x0.25": (
        lambda: MobileNetV2((1, 1, 1, 1, 1), 0.25, CLASSES, activation=RELU1,
                            input_shape=(3, 8, 8)),
        {"when": {"name": "every", "interval": 3, "count": 1},
         "where": {"name": "nagn", "tau": 0.0, "window_batches": 3},
         "how": {"name": "gradmax", "batch_size": 8}}, {}, _images(), "cross_entropy"),
    # GradMax's singular value choosing where, NAGN's Kaiming units filling it, on WRN-28
    "every x singular_value x kaiming_new on WRN-28": (
        lambda: WideResNet(28, 1, 0.25, CLASSES, activation=RELU1, input_shape=(3, 8, 8)),
        {"when": {"name": "every", "interval": 2, "count": 1},
         "where": {"name": "singular_value", "k": 2, "batch_size": 8}, "how": "kaiming_new"},
        {}, _images(), "cross_entropy"),
    # a plateau trigger with NAGN and Random units on an nn.Sequential MLP
    "validation_window x nagn x random on nn.Sequential": (
        lambda: nn.Sequential(nn.Linear(4, 6), RELU1(), nn.Linear(6, 6), RELU1(),
                              nn.Linear(6, CLASSES)),
        {"when": {"name": "validation_window", "w_acc": 1, "delta_acc": 1.0},
         "where": {"name": "nagn", "tau": 0.0, "window_batches": 2}, "how": "random"}, {},
        Split(*(_data("vector").X_train, _data("vector").y_train),
              X_val=_data("vector", 1).X_train, y_val=_data("vector", 1).y_train),
        "cross_entropy"),
    # SensLI's merit under the MSE loss of GradMax's teacher-student MLP
    "at x sensli x identity on the teacher-student MLP (MSE)": (
        lambda: MLP([4, 5, 5, 2], activation="relu1"),
        {"when": {"name": "at", "iterations": 2}, "where": "sensli", "how": "identity"}, {},
        Split(_data("vector").X_train, torch.randn(24, 2, generator=torch.Generator()
                                                    .manual_seed(1))), "mse"),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_combinations_no_paper_tried_run_through_the_loop(name):
    build, spec, context, split, loss = SCENARIOS[name]
    torch.manual_seed(0)
    plan = registry.build_plan(spec, {"seed": 0, **context})
    differences: list[float] = []
    plan.op = _checked(differences)
    model = build()
    before = sum(p.numel() for p in model.parameters())
    grown, history = train(model, split, iterations=8, lr=0.01, momentum=0.9, batch_size=8,
                           loss=loss, plan=plan, eval_every=2, progress=False)
    assert len(history.events) == 1, history.events
    assert sum(p.numel() for p in grown.parameters()) > before
    assert differences and max(differences) < PRESERVED, differences
    assert history.as_dict()["plan"]["where"] == plan.where.describe()


def test_the_books_table_agrees_with_the_theory():
    """The intro's table (growcore.registry.family_table) says "yes" exactly where the
    combinations are legal by the rules above, for every family and pair."""
    for family, build in FAMILIES.items():
        model = build()[0]
        for pair in registry.matrix():
            fits = registry.fits(pair["where"], pair["how"], model) is None
            assert fits == legal(family, pair["where"], pair["how"]), (family, pair)
    assert len(registry.family_table()) == 2 + len(registry.names("where"))


def test_gradmax_where_and_how_share_one_pass_of_the_probe(monkeypatch):
    """GradMax's singular value (where) and GradMax (how) in one growth step read the same
    statistics: one pass over the data, not one per part."""
    import growcore.stats.gradmax as statistics

    calls = []
    collect = statistics.collect
    monkeypatch.setattr(statistics, "collect",
                        lambda *args, **kwargs: calls.append(1) or collect(*args, **kwargs))
    model = MLP([4, 6, 5, CLASSES], activation="relu1")
    plan = registry.build_plan({"when": {"name": "at", "iterations": 0},
                                "where": {"name": "singular_value", "k": 2, "n_sites": 2},
                                "how": "gradmax"})
    probe = Probe(_data("vector"))
    proposals, _ = plan.propose(model, probe)
    plan.apply(model, proposals, probe)
    assert len(proposals) == 2 and len(calls) == 1
    plan.apply(model, proposals, Probe(_data("vector")))  # a new step: a new pass
    assert len(calls) == 2


def test_gradient_norm_baseline_scores_are_the_weights_gradient_norms():
    """GradientNorm's score of a site is ||dL/dW|| of its producer as backward() gives it
    on the full data, and scoring leaves the model's gradients alone."""
    from growcore.models.sites import width_sites
    from growcore.where import GradientNorm, RandomWidth

    torch.manual_seed(0)
    model = MLP([4, 6, 5, CLASSES], activation="relu1")
    split = _data("vector")
    sites = width_sites(model)
    proposals, info = GradientNorm(k=2, n_sites=1)(model, sites, Probe(split))
    assert all(p.grad is None for p in model.parameters())
    LOSSES["cross_entropy"](as_seed_batch(model(split.X_train)), split.y_train).sum().backward()
    expected = {s.producer: float(model.get_submodule(s.producer).weight.grad.norm())
                for s in sites}
    assert info["scores"] == pytest.approx(expected, rel=1e-6)
    assert proposals == [Proposal(next(s for s in sites if s.producer == max(
        expected, key=expected.get)), 2)]
    draws = [RandomWidth(n_sites=1, seed=s)(model, sites)[1]["chosen"][0] for s in range(40)]
    assert set(draws) == {s.name for s in sites}  # every site can be drawn
    assert RandomWidth(seed=3)(model, sites)[1] == RandomWidth(seed=3)(model, sites)[1]

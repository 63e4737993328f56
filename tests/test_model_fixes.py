"""Model fixes: MobileNetV2's stem width site and a VGG rebuilt from a grown network's spec."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn

from growcore.activations import ReLUWithSlopeAtZero
from growcore.models.mobilenet import FRAGROW_V2_SEED, MobileNetV2
from growcore.models.sites import Proposal, WidthSite, check_width_sites
from growcore.models.vgg import NAGN_EXAMPLE, VGG, ConvBlock, vgg11
from growcore.ops.widen import NewUnits, unit_sizes, widen

PRESERVED = 1e-5  # float32 forward passes of the same function through wider modules
NEW_UNITS = 2  # units added at every widened site
RELU1 = functools.partial(ReLUWithSlopeAtZero, 1.0)


def _widen(model: nn.Module, proposals: list[Proposal], seed: int = 0) -> nn.Module:
    """The library's width growth with zero incoming and random outgoing weights.

    Parameters
    ----------
    model : nn.Module
        Left unchanged.
    proposals : list of Proposal
        Sites and the number of units each gains.
    seed : int
        Seed of the outgoing weights.

    Returns
    -------
    nn.Module
        The grown copy (its function equals the model's: new units output zero).
    """
    generator = torch.Generator().manual_seed(seed)

    def how(net: nn.Module, proposal: Proposal, stats) -> NewUnits:
        k = proposal.amount
        D, o, R = unit_sizes(net, proposal.site)
        return NewUnits(torch.zeros(k, D), torch.randn(o, k, R, generator=generator))

    return widen(model, proposals, how).model


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)


def _producer_width(model: nn.Module, site: WidthSite) -> int:
    producer = model.get_submodule(site.producer)
    return producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features


@pytest.mark.parametrize("activation", [nn.ReLU6, RELU1], ids=["relu6", "relu-slope1"])
@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_mobilenetv2_every_site_widens_preserving_the_function(width, activation):
    torch.manual_seed(0)
    model = MobileNetV2(FRAGROW_V2_SEED, width=width, activation=activation).eval()
    X = _images()
    with torch.no_grad():
        before = model(X)
    sites = model.width_sites()
    grown = _widen(model, [Proposal(site, NEW_UNITS) for site in sites]).eval()
    check_width_sites(grown)
    for site in sites:
        assert _producer_width(grown, site) == _producer_width(model, site) + NEW_UNITS, site
    with torch.no_grad():
        after = grown(X)
    assert torch.allclose(after, before, atol=PRESERVED, rtol=PRESERVED)
    assert grown.train()(X).shape == before.shape  # batch statistics: a forward pass runs


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_mobilenetv2_stem_is_a_site_only_before_a_plain_first_block(width):
    model = MobileNetV2(FRAGROW_V2_SEED, width=width)
    first = model.stages[0][0]
    residual = model.stem[0].out_channels == first.project[0].out_channels
    assert first.residual == residual == (width == 0.25)  # 8 -> 8 channels at x0.25 only
    stem_listed = any(site.producer == "stem.0" for site in model.width_sites())
    assert stem_listed == (not residual)


def test_mobilenetv2_widened_stem_breaks_a_residual_first_block():
    """Why the stem is no site at x0.25: its output is also the first block's shortcut."""
    model = MobileNetV2(FRAGROW_V2_SEED, width=0.25).eval()
    first = model.block_names()[0]
    stem = WidthSite("stem.0", "stem.1", f"{first}.project.0",
                     depthwise=((f"{first}.dw.0", f"{first}.dw.1"),))
    grown = _widen(model, [Proposal(stem, NEW_UNITS)]).eval()
    with pytest.raises(RuntimeError, match="size of tensor"):
        grown(_images())


def vgg_models() -> dict[str, VGG]:
    return {
        "vgg11x0.0625": vgg11(width=0.0625),
        "vgg11x0.0625-nobn-stride-relu1": vgg11(width=0.0625, batch_norm=False,
                                                downsample="stride", activation=RELU1),
        "nagn-flatten-hidden": VGG(NAGN_EXAMPLE, head="flatten", hidden=(24,)),
    }


def _rebuild(model: VGG, activation) -> VGG:
    spec = json.loads(json.dumps(model.spec()))  # only what survives JSON
    args = {key: value for key, value in spec.items() if key != "activation"}
    return VGG(**args, activation=activation)


def _assert_same_network(model: VGG, twin: VGG) -> None:
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert {name: tuple(p.shape) for name, p in twin.named_parameters()} == shapes
    twin.load_state_dict(model.state_dict())  # strict: same names, same shapes
    X = _images()
    with torch.no_grad():
        assert torch.equal(twin.eval()(X), model.eval()(X))


@pytest.mark.parametrize("name", list(vgg_models()))
def test_vgg_rebuilt_from_the_spec_of_a_widened_model(name):
    torch.manual_seed(0)
    model = vgg_models()[name]
    config, hidden = model.config, model.hidden
    sites = model.width_sites()
    grown = _widen(model, [Proposal(sites[0], NEW_UNITS), Proposal(sites[-1], NEW_UNITS + 1)])
    assert model.config == config and model.hidden == hidden  # the input is left unchanged
    assert grown.config != config
    assert grown.config == [[b.conv.out_channels for b in stage] for stage in grown.stages]
    assert grown.hidden == [m.out_features for m in grown.classifier[:-1]
                            if isinstance(m, nn.Linear)]
    twin = _rebuild(grown, RELU1 if "relu1" in name else nn.ReLU)
    assert twin.config == grown.config and twin.hidden == grown.hidden
    _assert_same_network(grown, twin)


def test_vgg_spec_records_the_constructor_arguments():
    model = VGG(NAGN_EXAMPLE, num_classes=7, batch_norm=False, activation=RELU1,
                head="flatten", hidden=(24, 12), downsample="stride", input_shape=(3, 16, 16))
    assert model.spec() == {
        "config": [list(stage) for stage in NAGN_EXAMPLE], "num_classes": 7,
        "batch_norm": False, "head": "flatten", "hidden": [24, 12], "downsample": "stride",
        "input_shape": [3, 16, 16], "activation": "ReLUWithSlopeAtZero"}
    assert vgg11().config == [[64], [128], [256, 256], [512, 512], [512, 512]]


def test_vgg_config_follows_depth_growth_and_is_read_only():
    torch.manual_seed(0)
    model = vgg11(width=0.0625)
    model.stages[2].append(ConvBlock(16, 16))
    assert model.config == [[4], [8], [16, 16, 16], [32, 32], [32, 32]]
    _assert_same_network(model, _rebuild(model, nn.ReLU))
    with pytest.raises(AttributeError):
        model.config = [[4]]

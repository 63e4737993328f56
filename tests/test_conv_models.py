"""Convolutional models: shapes, parameter counts against hand counts, width sites, FLOPs."""

from __future__ import annotations

import functools
from itertools import pairwise

import pytest
import torch
from torch import nn

from growcore.activations import ReLUWithSlopeAtZero
from growcore.models.flops import count_flops
from growcore.models.mobilenet import FRAGROW_V2_SEED, MobileNetV1, MobileNetV2
from growcore.models.resnet import BasicBlock, WideResNet, resnet, wrn28
from growcore.models.sites import check_width_sites
from growcore.models.vgg import NAGN_EXAMPLE, VGG, VGG11, vgg, vgg11, vgg_staged

OUTPUT_TOLERANCE = 1e-5  # float32 results of the same network in two memory formats


def cifar_models() -> dict[str, nn.Module]:
    return {
        "vgg11x0.25": vgg11(0.25),
        "vgg11x0.25-flatten-stride": vgg11(0.25, head="flatten", downsample="stride"),
        "nagn": VGG(NAGN_EXAMPLE, head="flatten", hidden=(24,)),
        "vgg-1-1-1-1-2": vgg_staged((1, 1, 1, 1, 2), widths=(8, 8, 16, 16, 16)),
        "wrn-28-1x0.25": wrn28(1, block_width=0.25),
        "resnet-2-2-2-2": resnet((2, 2, 2, 2), widths=(8, 16, 16, 32)),
        "mobilenetv1x0.25": MobileNetV1(0.25, 10, "cifar", input_shape=(3, 32, 32)),
        "mobilenetv2-1-1-1-1-1": MobileNetV2(FRAGROW_V2_SEED, width=0.25),
    }


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return cifar_models()


def test_cifar_forward_shapes_from_uint8(models):
    X = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for name, model in models.items():
        assert model(X).shape == (2, 10), name


def test_imagenet_stems_at_small_resolution():
    X = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    nets = [resnet((1, 1, 1, 1), num_classes=7, stem="imagenet", widths=(8, 8, 16, 16),
                   input_shape=(3, 64, 64)),
            MobileNetV1(0.25, 7, "imagenet", input_shape=(3, 64, 64)),
            MobileNetV2(FRAGROW_V2_SEED, 0.25, 7, "imagenet", input_shape=(3, 64, 64))]
    for net in nets:
        assert net(X).shape == (2, 7)


def conv_bn(c_in: int, c_out: int, k: int = 3) -> int:
    """Parameters of a bias-free k x k conv and its BatchNorm (scale and shift)."""
    return k * k * c_in * c_out + 2 * c_out


def test_vgg11_parameter_count_by_hand():
    widths = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    by_hand = sum(conv_bn(a, b) for a, b in pairwise(widths)) + 512 * 10 + 10
    assert by_hand == 9_228_362
    assert vgg11().num_parameters() == by_hand
    assert [[c.out_channels for c in (b.conv for b in s)] for s in vgg11(0.25).stages] == \
        [[16], [32], [64, 64], [128, 128], [128, 128]]


def test_wrn_parameter_counts():
    """WRN-28-1 by hand; WRN-28-10's 36.5 M is the number of Zagoruyko and Komodakis."""
    stages, n = (16, 32, 64), 4
    by_hand, c_in = 9 * 3 * 16, 16  # stem conv
    for c in stages:
        for b in range(n):
            cin = c_in if b == 0 else c
            by_hand += 2 * cin + 9 * cin * c + 2 * c + 9 * c * c  # bn1 conv1 bn2 conv2
            by_hand += cin * c if cin != c else 0  # 1x1 shortcut when shapes change
        c_in = c
    by_hand += 2 * 64 + 64 * 10 + 10  # final BN and classifier
    assert wrn28(1).num_parameters() == by_hand == 369_498
    assert WideResNet(28, 10).num_parameters() == 36_479_194


def test_reference_parameter_counts():
    """ResNet-18, MobileNet-v1 (Howard et al.: 4.2 M) and MobileNetV2 on ImageNet."""
    shape = (3, 224, 224)
    assert resnet((2, 2, 2, 2), 1000, "imagenet", input_shape=shape).num_parameters() \
        == 11_689_512
    assert MobileNetV1(input_shape=shape).num_parameters() == 4_231_976
    assert MobileNetV2((2, 3, 4, 3, 3), num_classes=1000, stem="imagenet",
                       input_shape=shape).num_parameters() == 3_504_872


def test_presets():
    assert [[b.conv.out_channels for b in s] for s in vgg_staged((2, 2, 4, 4, 4)).stages] == \
        [[64] * 2, [128] * 2, [256] * 4, [512] * 4, [512] * 4]
    inner = [blk.conv1.out_channels for s in wrn28(1, block_width=0.25).stages for blk in s]
    assert inner == [4] * 4 + [8] * 4 + [16] * 4
    assert [len(s) for s in resnet((8, 8, 8, 8)).stages] == [8, 8, 8, 8]
    assert [len(s) for s in MobileNetV2((2, 3, 4, 3, 3)).stages] == [1, 2, 3, 4, 3, 3, 1]
    with pytest.raises(ValueError):
        vgg_staged((1, 1, 1))


def execution_order(model: nn.Module, shape) -> list[str]:
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(names[m]))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for hook in hooks:
        hook.remove()
    return order


def test_width_sites_are_consistent_and_in_forward_order(models):
    for name, model in models.items():
        check_width_sites(model)
        order = execution_order(model, model.input_shape)
        sites = model.width_sites()
        assert sites, name
        producers = [order.index(site.producer) for site in sites]
        assert producers == sorted(producers), name
        for site in sites:
            start, end = order.index(site.producer), order.index(site.consumer)
            between = [n for n in order[start + 1:end]
                       if not isinstance(model.get_submodule(n), nn.BatchNorm2d)]
            # nothing but the listed depthwise convs mixes the producer's channels on the way
            assert between == [conv for conv, _ in site.depthwise], (name, site)
            if site.norm is not None:
                assert start < order.index(site.norm) < end, (name, site)


def test_flatten_site_spatial_size():
    model = VGG(NAGN_EXAMPLE, head="flatten")  # three 2x2 poolings: 32 -> 4
    last = model.width_sites()[-1]
    assert last.spatial == 16 and model.get_submodule(last.consumer).in_features == 32 * 16


def test_check_width_sites_detects_a_mismatch():
    model = vgg([[4], [6]], input_shape=(3, 8, 8))
    model.stages[1][0].conv = nn.Conv2d(5, 6, 3, padding=1)  # reads 5 channels, gets 4
    with pytest.raises(ValueError, match="consumer"):
        check_width_sites(model)


def test_flops_against_hand_counts():
    tiny = VGG([[4]], num_classes=3, input_shape=(3, 8, 8))
    conv = 8 * 8 * 4 * 3 * 9  # multiply-adds: output pixels x out channels x 3 x 3 x 3
    assert tiny.flops_per_example() == 2 * (conv + 4 * 3)
    flat = VGG([[4]], num_classes=3, input_shape=(3, 8, 8), head="flatten")
    assert flat.flops_per_example() == 2 * (conv + 4 * 4 * 4 * 3)
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    assert count_flops(depthwise, (4, 5, 5)) == 2 * 5 * 5 * 4 * 9
    strided = nn.Conv2d(3, 2, 3, stride=2, padding=1)
    assert count_flops(strided, (3, 8, 8)) == 2 * 4 * 4 * 2 * 27


def test_flop_count_leaves_the_model_untouched_and_follows_growth():
    model = vgg([[4], [6]], input_shape=(3, 8, 8))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops = model.flops_per_example()
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.flops_per_example() == flops
    model.stages[1].append(type(model.stages[1][0])(6, 6))  # one more conv block
    assert model.flops_per_example() == flops + 2 * 4 * 4 * 6 * 6 * 9


def test_channels_last_gives_the_same_function():
    X = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for build in (lambda cl: vgg11(0.25, channels_last=cl),
                  lambda cl: resnet((1, 1, 1, 1), widths=(8, 8, 16, 16), channels_last=cl)):
        torch.manual_seed(1)
        plain = build(False).eval()
        torch.manual_seed(1)
        last = build(True).eval()
        assert next(iter(last.stages.parameters())).is_contiguous(
            memory_format=torch.channels_last)
        assert torch.allclose(plain(X), last(X), atol=OUTPUT_TOLERANCE)


def test_activation_factory_reaches_every_activation():
    relu1 = functools.partial(ReLUWithSlopeAtZero, 1.0)
    for model in (vgg11(0.25, activation=relu1), wrn28(1, 0.25, activation=relu1),
                  MobileNetV1(0.25, activation=relu1)):
        assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
        assert any(isinstance(m, ReLUWithSlopeAtZero) for m in model.modules())
    block = BasicBlock(4, 4, activation=relu1)
    assert isinstance(block.act1, ReLUWithSlopeAtZero)


def test_vgg11_full_width_is_vgg11():
    assert vgg11().config == [list(stage) for stage in VGG11]

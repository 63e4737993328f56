"""Width-growth sites: where a model's units or channels can grow, and who reads them.

A width-growth operator (GradMax's widening, NAGN's eq. (1)) adds units to one layer, the
*producer*, and must extend everything that reads those units: the BatchNorm right after it,
any depthwise convolution on the way (one filter per channel) and the *consumer* layer that
mixes them. :class:`WidthSite` names these modules; every image model of
:mod:`growcore.models` lists its sites in forward order with ``width_sites()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class WidthSite:
    """One place where a model can grow in width.

    Attributes
    ----------
    producer : str
        ``model.get_submodule`` name of the ``Conv2d`` or ``Linear`` whose output channels
        (units) grow: new rows of its weight (and entries of its bias).
    norm : str or None
        Name of the ``BatchNorm`` that normalises the producer's output, or None.
    consumer : str
        Name of the ``Conv2d`` or ``Linear`` that reads the producer's channels: new input
        columns of its weight.
    spatial : int
        ``H * W`` when the consumer is a ``Linear`` after a flatten (channel ``c`` of the
        producer feeds the consumer's inputs ``c * spatial ... (c + 1) * spatial - 1``,
        PyTorch's channel-major flatten); 1 otherwise.
    depthwise : tuple of (str, str or None)
        Depthwise convolutions (``groups == channels``) between producer and consumer, each
        with its BatchNorm or None (MobileNets): they gain one filter per new channel.
    """

    producer: str
    norm: str | None
    consumer: str
    spatial: int = 1
    depthwise: tuple[tuple[str, str | None], ...] = ()


def _out_units(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def _in_units(module: nn.Module) -> int:
    return module.in_channels if isinstance(module, nn.Conv2d) else module.in_features


def check_width_sites(model: nn.Module) -> None:
    """Raise ``ValueError`` if a site's widths disagree (e.g. after an incomplete growth).

    Checks that the producer's output width equals the norm's features, every depthwise
    convolution's channels and groups, and the consumer's input width divided by ``spatial``.
    """
    for site in model.width_sites():
        width = _out_units(model.get_submodule(site.producer))
        widths = {"consumer inputs / spatial":
                  _in_units(model.get_submodule(site.consumer)) / site.spatial}
        if site.norm is not None:
            widths["norm features"] = model.get_submodule(site.norm).num_features
        for conv_name, norm_name in site.depthwise:
            conv = model.get_submodule(conv_name)
            widths[f"{conv_name} channels"] = conv.in_channels
            widths[f"{conv_name} out channels"] = conv.out_channels
            widths[f"{conv_name} groups"] = conv.groups
            if norm_name is not None:
                widths[f"{norm_name} features"] = model.get_submodule(norm_name).num_features
        wrong = {name: w for name, w in widths.items() if w != width}
        if wrong:
            raise ValueError(f"width site {site}: producer has {width} units but {wrong}")

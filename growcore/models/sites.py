"""Growth sites: where a model can grow, in width or in depth, and proposals to grow there.

A *width site* (:class:`WidthSite`) is a unit-producing layer, the *producer*, with what
reads its units: the BatchNorm right after it, any depthwise convolution on the way (one
filter per channel) and the *consumer* layer that mixes them. A width-growth operator
(GradMax's widening, NAGN's eq. (1)) adds units to the producer and extends all of them.

A *depth site* (:class:`DepthSite`) is a place where a layer or a block can be inserted:
an index in a ``Sequential`` or ``ModuleList`` container (or, for the seed-batched nets of
SensLI, a position ``k``: after hidden layer k). Its ``style`` says what keeps the function
when something is inserted there: ``"plain"`` (a layer after an activation with
``f(f(x)) = f(x)``, identity-initialised as in Net2Net and SensLI eq. 2.6) or ``"residual"``
(a residual branch whose last layer starts at zero, SensLI eq. 2.4).

Every model of :mod:`growcore.models` lists its sites of both kinds with ``growth_sites()``;
:func:`growth_sites` also finds them in a plain ``nn.Sequential`` by inspection. A where-
criterion answers with :class:`Proposal` objects: a site and an amount (units, or layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

from torch import nn

from growcore.activations import RELUS, is_idempotent

STYLES = ("plain", "residual")
# activations (by function name or module class name) with f(f(x)) = f(x)
IDEMPOTENT = (*RELUS, "ReLU", "ReLU6", "ReLUWithSlopeAtZero")


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

    kind: ClassVar[str] = "width"

    @property
    def name(self) -> str:
        """The producer's module path: stable while the model grows."""
        return self.producer


@dataclass(frozen=True)
class DepthSite:
    """One place where a model can grow in depth.

    Attributes
    ----------
    container : str
        ``model.get_submodule`` name of the ``nn.Sequential`` or ``nn.ModuleList`` that
        receives the new layer or block (``""``: the model itself); for a seed-batched net,
        the name of its layer group (``"hidden"``, ``"blocks"``).
    index : int
        Where the new entry goes in the container (``len(container)`` appends).
    style : {"plain", "residual"}
        What keeps the function: an identity layer after an idempotent activation, or a
        residual branch whose last layer is zero.
    width : int
        Units (or channels) of the tensor at the site: the new layer maps width -> width.
    conv : bool
        Whether that tensor is a feature map (a convolution is inserted) or a vector.
    activation : str, optional
        Plain sites: the activation whose output the new layer reads (a function name of
        :data:`growcore.activations.ACTIVATIONS` or a module class name); the identity
        initialisation keeps the function only if it is idempotent (:attr:`idempotent`).
    position : int, optional
        Seed-batched nets only: SensLI's ``k``, "insert after hidden layer k" (1-based).
    """

    container: str
    index: int
    style: str
    width: int
    conv: bool = False
    activation: str | None = None
    position: int | None = None

    kind: ClassVar[str] = "depth"

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")

    @property
    def idempotent(self) -> bool:
        """Whether an identity layer here keeps the function: a residual site, or a plain site
        after a ReLU form or ReLU6."""
        return self.style == "residual" or self.activation in IDEMPOTENT

    @property
    def name(self) -> str:
        """``container@index``, e.g. ``stages.2@3`` (insert at index 3 of stage 2)."""
        return f"{self.container or 'model'}@{self.index}"


@dataclass(frozen=True)
class Proposal:
    """A where-criterion's answer: grow ``site`` by ``amount``.

    Attributes
    ----------
    site : WidthSite or DepthSite
    amount : int
        New units for a width site; 1 (one layer or block) for a depth site.
    seed : int, optional
        For a seed-batched model: the index of the seed that grows here (each seed of a batch
        may choose its own site); None: every seed.
    """

    site: WidthSite | DepthSite
    amount: int = 1
    seed: int | None = None

    def __post_init__(self):
        if int(self.amount) != self.amount or self.amount < 0:
            raise ValueError(f"amount must be a non-negative integer, got {self.amount!r}")

    def describe(self) -> dict:
        out = {"site": self.site.name, "kind": self.site.kind, "amount": int(self.amount)}
        return out if self.seed is None else {**out, "seed": self.seed}


def growth_sites(model: nn.Module) -> list[WidthSite | DepthSite]:
    """Every growth site of ``model``, width sites first, each kind in forward order.

    Models of :mod:`growcore.models` define ``growth_sites()``; a model that lists only
    ``width_sites()`` has those; an ``nn.Sequential`` of Linear/Conv2d layers, BatchNorms,
    activations and flattens is inspected (:func:`sequential_sites`).
    """
    model = getattr(model, "module", model)  # DistributedDataParallel
    if hasattr(model, "growth_sites"):
        return list(model.growth_sites())
    if hasattr(model, "width_sites"):
        return list(model.width_sites())
    if isinstance(model, nn.Sequential):
        return sequential_sites(model)
    raise TypeError(f"{type(model).__name__} lists no growth sites: use a model of "
                    "growcore.models, an nn.Sequential, or define growth_sites()")


def width_sites(model: nn.Module) -> list[WidthSite]:
    """The width sites of :func:`growth_sites`."""
    return [site for site in growth_sites(model) if site.kind == "width"]


def depth_sites(model: nn.Module) -> list[DepthSite]:
    """The depth sites of :func:`growth_sites`."""
    return [site for site in growth_sites(model) if site.kind == "depth"]


def stage_sites(model: nn.Module) -> list[DepthSite]:
    """One depth site at the end of every stage of a staged model (``model.stages``).

    The style is the block class's ``growth_style``: a block appended to a stage is built
    like its last one (a copy, or a fresh shape-preserving block of the same class).
    """
    sites = []
    for s, stage in enumerate(model.stages):
        last = stage[-1]
        convs = [m for m in last.modules() if isinstance(m, nn.Conv2d)]
        act = last.growth_activation() if last.growth_style == "plain" else None
        sites.append(DepthSite(f"stages.{s}", len(stage), last.growth_style,
                               convs[-1].out_channels, conv=True,
                               activation=type(act).__name__ if act is not None else None))
    return sites


_LAYERS = (nn.Linear, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def sequential_sites(model: nn.Sequential) -> list[WidthSite | DepthSite]:
    """Growth sites of a plain ``nn.Sequential``, found by inspection.

    Width sites: a Linear or (ungrouped) Conv2d producer, optionally a BatchNorm, then
    anything without weights (activations, pooling, dropout, a flatten) up to the next Linear
    or Conv2d, the consumer. A Conv2d producer read by a Linear through a flatten gets
    ``spatial = in_features / channels``. Depth sites: after every idempotent activation
    (ReLU, ReLU6) that some later layer reads, a plain site.
    """
    children = list(model.named_children())
    layers = [i for i, (_, m) in enumerate(children) if isinstance(m, _LAYERS)]
    sites: list[WidthSite | DepthSite] = []
    for a, b in pairwise(layers):
        site = _sequential_width_site(children, a, b)
        if site is not None:
            sites.append(site)
    for i, (_, module) in enumerate(children):
        before = [j for j in layers if j < i]
        if is_idempotent(module) and before and any(j > i for j in layers):
            producer = children[before[-1]][1]
            sites.append(DepthSite("", i + 1, "plain", _out_units(producer),
                                   conv=isinstance(producer, nn.Conv2d),
                                   activation=type(module).__name__))
    return sites


def _sequential_width_site(children, a: int, b: int) -> WidthSite | None:
    (p_name, producer), (c_name, consumer) = children[a], children[b]
    between = [m for _, m in children[a + 1:b]]
    if isinstance(producer, nn.Conv2d) and producer.groups != 1:
        return None
    if any(hasattr(m, "weight") and not isinstance(m, _NORMS) for m in between):
        return None
    norms = [name for name, m in children[a + 1:b] if isinstance(m, _NORMS)]
    if len(norms) > 1 or (norms and not isinstance(children[a + 1][1], _NORMS)):
        return None  # a BatchNorm must follow the producer directly
    units = _out_units(producer)
    spatial = 1
    if isinstance(producer, nn.Conv2d) and isinstance(consumer, nn.Linear):
        spatial, rest = divmod(consumer.in_features, units)
        if rest:
            return None
    return WidthSite(p_name, norms[0] if norms else None, c_name, spatial)


def _out_units(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def _in_units(module: nn.Module) -> int:
    return module.in_channels if isinstance(module, nn.Conv2d) else module.in_features


def check_width_sites(model: nn.Module) -> None:
    """Raise ``ValueError`` if a site's widths disagree (e.g. after an incomplete growth).

    Checks that the producer's output width equals the norm's features, every depthwise
    convolution's channels and groups, and the consumer's input width divided by ``spatial``.
    """
    for site in width_sites(model):
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

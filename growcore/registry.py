"""One registry of names for every when-policy, where-criterion and how-initialiser.

A plan can be written by names, e.g. as a notebook parameter or in a preset::

    {"when": {"name": "fragrow", "alpha": 4}, "where": "nagn", "how": "gradmax"}

Each entry is a name, the class it builds and, for where and how, the kind of growth it
serves. Options are the class's constructor parameters; values that depend on the training
run rather than on the method (``iterations_per_epoch``, ``total_epochs``, the number of
growths ``n_blocks``, ...) come from the ``context`` of :func:`build_plan` unless the spec sets
them. Unknown names and options are refused with the list of valid ones. A record stores
:meth:`growcore.plan.GrowthPlan.describe`, from which :func:`plan_from_description`
rebuilds the plan.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from growcore.how import (
    BlockInit,
    FireflyOpt,
    GradMax,
    GradMaxOpt,
    IdentityLayer,
    KaimingNew,
    Random,
    Zero,
)
from growcore.plan import GrowthPlan, PlanError
from growcore.stats import NAGNObserver, TargetNorm
from growcore.when import (
    AtIterations,
    Convergent,
    Every,
    FRAGrow,
    LipGrow,
    Periodic,
    ValidationWindow,
)
from growcore.where import (
    NAGN,
    FixedSites,
    GradientNorm,
    GrowToWidths,
    LargestSingularValue,
    RandomDepth,
    RandomWidth,
    SensLI,
    StageOrder,
)

ROLES = ("when", "where", "how")


@dataclass(frozen=True)
class Entry:
    """One registered part: its name, role, class, kind and a one-line summary."""

    name: str
    role: str
    cls: type
    build: Callable
    summary: str
    own: tuple[str, ...] = ()  # options never taken from the run's context

    @property
    def kind(self) -> str | None:
        """``"width"`` or ``"depth"`` for where and how; None for when."""
        return getattr(self.cls, "kind", None)

    @property
    def options(self) -> list[str]:
        """The option names the entry accepts."""
        return list(inspect.signature(self.build).parameters)


def _with_norm(cls):
    """Build ``cls`` with ``scale``/``value`` options turned into its ``norm=TargetNorm``."""
    def build(scale: float = 0.5, value: float | None = None, **options):
        return cls(norm=TargetNorm(scale, value), **options)
    build.__signature__ = _merged(cls, build, "norm")
    return build


def _merged(cls, build, replaced: str) -> inspect.Signature:
    """The options of a wrapper ``build`` that makes ``cls``'s argument ``replaced`` from its
    own options: its own, then the rest of ``cls``'s (for the registry's option lists)."""
    own = [p for p in inspect.signature(build).parameters.values()
           if p.kind is p.POSITIONAL_OR_KEYWORD]
    rest = [p for name, p in inspect.signature(cls).parameters.items()
            if name not in {replaced, *(q.name for q in own)}]
    return inspect.Signature([*own, *(p.replace(kind=p.KEYWORD_ONLY) for p in rest)])


def _nagn(window_batches: int = 100, **options) -> NAGN:
    """NAGN with its observer made from ``window_batches``."""
    return NAGN(NAGNObserver(window=window_batches), **options)


_nagn.__signature__ = _merged(NAGN, _nagn, "observer")


def _block(mode: str):
    def build(preserve: bool = False, moment_decay: float = 0.9) -> BlockInit:
        return BlockInit(mode, preserve, moment_decay=moment_decay)
    return build


_ENTRIES = [
    # when
    Entry("at", "when", AtIterations, AtIterations, "at fixed iterations (SensLI)"),
    Entry("every", "when", Every, Every, "every n iterations (GradMax)"),
    Entry("periodic", "when", Periodic, Periodic, "every I_max epochs (FRAGrow's baseline)"),
    Entry("convergent", "when", Convergent, Convergent, "when validation accuracy plateaus"),
    Entry("validation_window", "when", ValidationWindow, ValidationWindow,
          "NAGN's window of validation accuracies"),
    Entry("fragrow", "when", FRAGrow, FRAGrow, "interval set by the overfitting risk level"),
    Entry("lipgrow", "when", LipGrow, LipGrow, "when the Lipschitz estimate rises"),
    # where
    Entry("sensli", "where", SensLI, SensLI, "KKT multipliers of virtual identity layers"),
    Entry("nagn", "where", NAGN, _nagn, "activation-gradient contrast, widths to add"),
    Entry("singular_value", "where", LargestSingularValue, _with_norm(LargestSingularValue),
          "GradMax's predicted gradient norm"),
    Entry("fixed_sites", "where", FixedSites, FixedSites, "the same width sites every time"),
    Entry("grow_to_widths", "where", GrowToWidths, GrowToWidths,
          "every width site to a multiple of its width"),
    Entry("stage_order", "where", StageOrder, StageOrder, "the next stage of a staged net",
          own=("seed",)),  # its seed is the seed network's blocks, not a random seed
    Entry("gradient_norm", "where", GradientNorm, GradientNorm,
          "largest gradient norm of the layer's weights (baseline)"),
    Entry("random_width", "where", RandomWidth, RandomWidth, "width sites at random (control)"),
    Entry("random_depth", "where", RandomDepth, RandomDepth, "a depth site at random (control)"),
    # how, width
    Entry("zero", "how", Zero, Zero, "both sides zero"),
    Entry("random", "how", Random, _with_norm(Random), "random outgoing weights"),
    Entry("kaiming_new", "how", KaimingNew, KaimingNew, "NAGN eq. (1): Kaiming incoming"),
    Entry("gradmax", "how", GradMax, _with_norm(GradMax), "SVD maximiser of the gradient"),
    Entry("gradmax_opt", "how", GradMaxOpt, _with_norm(GradMaxOpt),
          "gradient ascent on GradMax's objective"),
    Entry("firefly_opt", "how", FireflyOpt, _with_norm(FireflyOpt),
          "new units trained a few steps"),
    # how, depth
    Entry("identity", "how", IdentityLayer, IdentityLayer, "identity layer (SensLI, Net2Net)"),
    Entry("block_copy", "how", BlockInit, _block("copy"), "copy of the preceding block"),
    Entry("block_moment", "how", BlockInit, _block("moment"),
          "moving average of the preceding block"),
    Entry("block_kaiming", "how", BlockInit, _block("kaiming"), "He-initialised block"),
]
REGISTRY: dict[str, dict[str, Entry]] = {role: {} for role in ROLES}
for _entry in _ENTRIES:
    REGISTRY[_entry.role][_entry.name] = _entry


def names(role: str, kind: str | None = None) -> list[str]:
    """Registered names of a role (and kind)."""
    return [n for n, e in REGISTRY[role].items() if kind is None or e.kind == kind]


def entry(role: str, name: str) -> Entry:
    """The entry of ``name``, or a ``PlanError`` listing the valid names."""
    if role not in REGISTRY:
        raise PlanError(f"role must be one of {ROLES}, got {role!r}")
    if name not in REGISTRY[role]:
        raise PlanError(f"unknown {role} {name!r}; valid: {', '.join(REGISTRY[role])}")
    return REGISTRY[role][name]


def build_part(role: str, spec: str | dict, context: dict | None = None):
    """One part from a name or ``{"name": ..., option: value, ...}``.

    Options the spec leaves out are taken from ``context`` when the part accepts them.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise PlanError(f"{role} must be a name or a mapping with 'name', got {spec!r}")
    found = entry(role, spec["name"])
    options = {k: v for k, v in spec.items() if k != "name"}
    unknown = sorted(set(options) - set(found.options))
    if unknown:
        raise PlanError(f"{role} {found.name!r} has no option {unknown}; valid: "
                        f"{', '.join(found.options) or 'none'}")
    taken = {k: v for k, v in (context or {}).items()
             if k in found.options and k not in options and k not in found.own}
    try:
        return found.build(**taken, **options)
    except (TypeError, ValueError) as error:
        raise PlanError(f"{role} {found.name!r}: {error} (options: "
                        f"{', '.join(found.options)})") from error


def build_plan(spec: dict, context: dict | None = None, lr_factor: float = 1.0) -> GrowthPlan:
    """A :class:`growcore.plan.GrowthPlan` from ``{"when": ..., "where": ..., "how": ...}``.

    Parameters
    ----------
    spec : dict
        Each role a name or a mapping ``{"name": ..., option: value}``; optionally
        ``lr_factor``.
    context : dict, optional
        Run-dependent values offered to every part that accepts them, e.g.
        ``iterations_per_epoch``, ``total_epochs``, ``finetune_min``, ``n_blocks``, ``seed``,
        ``loss``.
    """
    if not isinstance(spec, dict):
        raise PlanError(f"a plan must be a mapping with keys {ROLES}, got {spec!r}")
    unknown = sorted(set(spec) - {*ROLES, "lr_factor"})
    missing = [role for role in ROLES if role not in spec]
    if unknown or missing:
        raise PlanError(f"a plan has the keys {', '.join(ROLES)} (and lr_factor); "
                        f"unknown {unknown}, missing {missing}")
    parts = {role: build_part(role, spec[role], context) for role in ROLES}
    return GrowthPlan(**parts, lr_factor=spec.get("lr_factor", lr_factor))


def _name_of(role: str, description: dict) -> str:
    label = description.get({"when": "policy", "where": "criterion", "how": "how"}[role])
    if "name" in description:
        return description["name"]
    found = [e for e in REGISTRY[role].values() if e.cls.__name__ == label]
    if label == "BlockInit":
        found = [e for e in found if e.name == f"block_{description['mode']}"]
    if len(found) != 1:
        raise PlanError(f"no registered {role} for the description {description}")
    return found[0].name


def spec_from_description(description: dict) -> dict:
    """The name spec of a plan's :meth:`~growcore.plan.GrowthPlan.describe` (e.g. from a
    record): registry names and the options each part accepts."""
    spec = {}
    for role in ROLES:
        name = _name_of(role, description[role])
        accepted = entry(role, name).options
        spec[role] = {"name": name, **{k: v for k, v in description[role].items()
                                       if k in accepted}}
    return {**spec, "lr_factor": description.get("lr_factor", 1.0)}


def plan_from_description(description: dict, context: dict | None = None) -> GrowthPlan:
    """Rebuild a plan from its description."""
    return build_plan(spec_from_description(description), context)


def matrix() -> list[dict]:
    """Every where x how pair of one kind, with its kind: the combinations that exist."""
    return [{"kind": kind, "where": w, "how": h}
            for kind in ("width", "depth")
            for w in names("where", kind) for h in names("how", kind)]


def _first_line(cls: type) -> str:
    return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


SHORT_FAMILY = {"seed-batched FNN": "FNN&times;S", "seed-batched ResNet": "ResNet&times;S",
                "nn.Sequential": "Seq.", "MobileNet-v1": "MNv1", "MobileNetV2": "MNv2"}


def markdown() -> str:
    """The registry as MyST markdown: every name by role, and which pairs fit which models.

    Written by :func:`growcore.runner.run_notebooks` next to the executed chapters and
    included by the book's introduction, so the tables are never typed by hand.
    """
    lines = []
    for role, column in (("when", "counts in"), ("where", "kind"), ("how", "kind")):
        lines += [f"**{role.capitalize()}** (`growcore.{role}`)", "",
                  f"| name | class | {column} | what it does |", "|---|---|---|---|"]
        for name, found in REGISTRY[role].items():
            module = found.cls.__module__.removeprefix(f"growcore.{role}.")
            lines.append(f"| `{name}` | `{module}.{found.cls.__name__}` | "
                         f"{found.kind or getattr(found.cls, 'unit', '')} | {found.summary} |")
        lines.append("")
    lines += [f"{len(matrix())} where &times; how pairs of the same kind, each with any of the "
              f"{len(names('when'))} when-policies. A pair of different kinds is refused when "
              "the plan is built; a pair that does not fit a model (an identity layer after a "
              "tanh, blocks for a model without stages) before training starts. On one small "
              "model of each family (`growcore.models.catalog`; &times;S: seed-batched), how many "
              "of the how-initialisers of each criterion's kind fit:", ""]
    return "\n".join(lines + family_table()) + "\n"


def fits(where: str, how: str, model) -> str | None:
    """Why the pair cannot grow ``model`` (None if it can), with the catalog's options."""
    from growcore.models.catalog import example_options

    spec = {"when": {"name": "at", "iterations": 1},
            "where": {"name": where, **example_options(where, model)},
            "how": {"name": how, **example_options(how, model)}}
    try:
        build_plan(spec, {"seed": 0}).check(model)
    except PlanError as refusal:
        return str(refusal)
    return None


def family_table() -> list[str]:
    """Markdown rows: for every where-criterion and model family of the catalog, how many of
    the how-initialisers of its kind fit (``·``: none)."""
    from growcore.models.catalog import FAMILIES

    models = {name: build()[0] for name, build in FAMILIES.items()}
    header = [SHORT_FAMILY.get(name, name) for name in models]
    lines = ["| where | kind | " + " | ".join(header) + " |",
             "|---|---|" + ":-:|" * len(models)]
    for where in names("where"):
        kind = entry("where", where).kind
        hows = names("how", kind)
        cells = []
        for model in models.values():
            n = sum(fits(where, how, model) is None for how in hows)
            cells.append(f"{n}/{len(hows)}" if n else "·")
        lines.append(f"| `{where}` | {kind} | " + " | ".join(cells) + " |")
    return lines

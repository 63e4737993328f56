"""A growth plan: when x where x how, checked as a whole before any training.

A plan composes one part of each role:

* ``when(state) -> bool`` (:mod:`growcore.when`): grow now?
* ``where(model, sites, stats) -> (proposals, info)`` (:mod:`growcore.where`): given the
  model's candidate sites of the criterion's kind and the growth step's probe, the sites to
  grow and by how much;
* ``how(model, proposal, stats)`` (:mod:`growcore.how`): the new weights of one proposal, of
  the same kind (width or depth) as the criterion;
* the operator (:mod:`growcore.ops`), chosen by the kind and the model: ``widen`` for width
  sites, ``insert_layers`` for a seed-batched net, ``insert_modules`` for any other module.

Parts that collect statistics during training (NAGN's observer, the moment tracker) declare
them with ``observers()``; the loop attaches them to the model and re-attaches them after each
growth. A combination that makes no sense is refused when the plan is built (a width
initialiser with a depth criterion) or when it meets its model (:meth:`GrowthPlan.check`: an
identity layer after a tanh, blocks for a model without stages), with a message naming both
parts and what would fit.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from growcore.models.seed_batched import SeedBatchedNet
from growcore.models.sites import Proposal, growth_sites
from growcore.ops import insert_layers, insert_modules, widen, widen_seeds
from growcore.stats.probe import Probe

KINDS = ("width", "depth")


class PlanError(ValueError):
    """A when x where x how combination that cannot work (on this model)."""


def kind_of(part, role: str) -> str:
    """The kind (``"width"`` or ``"depth"``) a where-criterion or how-initialiser serves."""
    kind = getattr(part, "kind", None)
    if kind not in KINDS:
        raise PlanError(f"the {role} part {type(part).__name__} declares no kind (class "
                        f"attribute kind in {KINDS})")
    return kind


def describe_part(part) -> dict:
    """A part's ``describe()``, or its class name."""
    return part.describe() if hasattr(part, "describe") else {"name": type(part).__name__}


def apply_growth(model, proposals, how, stats=None):
    """The operator for ``proposals``: widen, or insert layers (seed-batched) or modules."""
    kinds = {p.site.kind for p in proposals}
    if len(kinds) > 1:
        raise PlanError("one growth step grows in width or in depth, not both")
    if kinds == {"width"}:
        if isinstance(model, SeedBatchedNet):
            return widen_seeds(model, proposals, how, stats)
        return widen(model, proposals, how, stats)
    if isinstance(model, SeedBatchedNet):
        return insert_layers(model, proposals, how, stats)
    return insert_modules(model, proposals, how, stats)


@dataclass
class GrowthPlan:
    """When x where x how of a growth step.

    Parameters
    ----------
    when : when-policy, ``(state) -> bool``
    where : where-criterion, ``(model, sites, stats) -> (proposals, info)``
    how : initialiser of the criterion's kind, ``(model, proposal, stats) -> new weights``
    op : callable ``(model, proposals, how, stats) -> Growth``, optional
        The operator; default :func:`apply_growth` (chosen by the kind and the model). Set it
        to wrap the default, e.g. ``growcore.distributed.distributed_op(apply_growth)``.
    lr_factor : float
        Learning rate multiplied by this after each growth (SensLI Fig. 3.4b: 0.8).
    """

    when: object
    where: object
    how: object
    op: Callable = apply_growth
    lr_factor: float = 1.0
    _seed_parts: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        where, how = kind_of(self.where, "where"), kind_of(self.how, "how")
        if where != how:
            raise PlanError(
                f"where-criterion {type(self.where).__name__} proposes {where} growth but "
                f"how-initialiser {type(self.how).__name__} fills {how} growth; pick a {where} "
                f"initialiser ({', '.join(_names(where))})")
        if not callable(self.when):
            raise PlanError(f"when must be a policy (state) -> bool, got {self.when!r}")
        if not self.lr_factor > 0:
            raise PlanError(f"lr_factor must be positive, got {self.lr_factor}")

    @property
    def kind(self) -> str:
        """``"width"`` or ``"depth"``."""
        return self.where.kind

    def observers(self) -> list:
        """Every observer a part declared (attached by the training loop)."""
        found = []
        for part in (self.when, self.where, self.how):
            for observer in getattr(part, "observers", list)():
                if all(observer is not seen for seen in found):
                    found.append(observer)
        return found

    def candidates(self, model) -> list:
        """The model's sites of the plan's kind that the initialiser can fill."""
        sites = [s for s in growth_sites(model) if s.kind == self.kind]
        refuses = getattr(self.how, "refuses", None)
        return [s for s in sites if refuses is None or refuses(model, s) is None]

    def check(self, model) -> None:
        """Refuse, before any training, a plan that cannot grow ``model``."""
        try:
            sites = [s for s in growth_sites(model) if s.kind == self.kind]
        except TypeError as error:
            raise PlanError(str(error)) from error
        if not sites:
            raise PlanError(f"{type(model).__name__} has no {self.kind} sites for "
                            f"{type(self.where).__name__}; its sites: "
                            f"{_site_kinds(model) or 'none'}")
        reason = getattr(self.where, "refuses", lambda m: None)(model)
        if reason:
            raise PlanError(f"{type(self.where).__name__} cannot grow {type(model).__name__}: "
                            f"{reason}")
        if not self.candidates(model):
            raise PlanError(f"{type(self.how).__name__} cannot fill any {self.kind} site of "
                            f"{type(model).__name__} for {type(self.where).__name__}: "
                            f"{self.how.refuses(model, sites[0])}")

    def propose(self, model, probe: Probe) -> tuple[list, dict]:
        """The where-criterion's proposals for ``model`` and its info dict.

        Width growth of a seed-batched net asks a copy of the criterion per seed, on that
        seed's network (``model.seed_module(i)``), and tags each proposal with its seed.
        """
        if not self._per_seed(model):
            return self.where(model, self.candidates(model), probe)
        proposals, infos = [], []
        for i, (where, _) in enumerate(self.seed_parts(model)):
            own = probe.for_seed(i) if hasattr(probe, "for_seed") else probe  # its data
            found, info = where(model.seed_module(i), self.candidates(model), own)
            proposals += [Proposal(p.site, p.amount, seed=i) for p in found]
            infos.append(info)
        return proposals, {"per_seed": infos}

    def apply(self, model, proposals, probe: Probe):
        """The operator with the how-initialiser (one per seed for the width growth of a
        seed-batched net): the :class:`growcore.ops.Growth`."""
        if self._per_seed(model):
            return self.op(model, proposals, [how for _, how in self.seed_parts(model)], probe)
        return self.op(model, proposals, self.how, probe)

    def _per_seed(self, model) -> bool:
        return self.kind == "width" and isinstance(model, SeedBatchedNet)

    def seed_parts(self, model) -> list[tuple]:
        """(where, how) of every seed of a seed-batched ``model``: copies made at the first
        growth and kept (stateful criteria count their own growths), each part with a
        ``seed`` rebuilt with that seed's value, so that a seed's random draws are those it
        makes when it runs alone."""
        if len(self._seed_parts) != model.n_seeds:
            self._seed_parts = [(_for_seed(self.where, s), _for_seed(self.how, s))
                                for s in model.seeds]
        return self._seed_parts

    def describe(self) -> dict:
        """The plan's full description: enough to rebuild it (see :mod:`growcore.registry`)."""
        return {"when": describe_part(self.when), "where": describe_part(self.where),
                "how": describe_part(self.how), "kind": self.kind,
                "op": getattr(self.op, "__name__", type(self.op).__name__),
                "lr_factor": self.lr_factor}


def _for_seed(part, seed: int):
    """A fresh copy of ``part`` whose ``seed`` option is ``seed`` (a plain copy if it has none)."""
    if dataclasses.is_dataclass(part) and any(f.name == "seed" and f.init
                                              for f in dataclasses.fields(part)):
        return dataclasses.replace(part, seed=seed)
    if hasattr(part, "seed") and hasattr(part, "generator"):  # e.g. KaimingNew
        return type(part)(seed=seed)
    return copy.deepcopy(part)


def _site_kinds(model) -> str:
    sites = growth_sites(model)
    return ", ".join(f"{sum(s.kind == k for s in sites)} {k}" for k in KINDS if any(
        s.kind == k for s in sites))


def _names(kind: str) -> list[str]:
    from growcore.registry import names  # the registry builds plans: imported when needed

    return names("how", kind)

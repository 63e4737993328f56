"""WHERE to widen, and by how much, by NAGN (Wang, Mille and Hidane, "Where to grow").

The relative contrast of the NAGN profile (:mod:`growcore.stats.nagn`) against the
neighbours (eq. 2, with the median-slope extrapolation at the two ends) gives the
under-expressiveness ``s_l`` and the increments ``Delta n_l = min(Delta_max, floor(s_l n_l))``
(:func:`increments`); the output layer never grows and the widths are kept non-decreasing
(:func:`non_decreasing`). :class:`NAGN` is the where-criterion that turns a model into width
increments for any width-growth operator and any initialiser of the new units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from growcore.models.seed_batched import SeedBatchedNet
from growcore.models.sites import Proposal, WidthSite
from growcore.ops.widen import width
from growcore.stats.nagn import NAGNObserver

FALLBACK_FRACTION = 0.25  # our choice: the paper says only "grow conservatively"


def neighbour_average(nagn: torch.Tensor) -> torch.Tensor:
    """The local neighbourhood average of every layer (eq. 2 and the end-layer rule).

    Interior layers: ``(NAGN_{l-1} + NAGN_{l+1}) / 2``. End layers, by the median slope
    ``m = median(NAGN_{l+1} - NAGN_l)``: ``NAGN_2 - m`` for the first and ``NAGN_{L-1} + m``
    for the last. With an even number of slopes the median is the mean of the two middle
    values (``torch.median`` would return the lower one). One layer is its own neighbourhood.
    """
    g = torch.as_tensor(nagn, dtype=torch.float64)
    if g.dim() != 1 or len(g) == 0:
        raise ValueError(f"nagn must be a non-empty 1-D profile, got shape {tuple(g.shape)}")
    if len(g) == 1:
        return g.clone()
    slope = float(torch.quantile(g[1:] - g[:-1], 0.5))  # the mean of the middle two if even
    average = torch.empty_like(g)
    average[1:-1] = (g[:-2] + g[2:]) / 2
    average[0] = g[1] - slope
    average[-1] = g[-2] + slope
    return average


def relative_contrast(nagn: torch.Tensor) -> torch.Tensor:
    """``r_l = NAGN_l / NAGN~_l - 1`` (eq. 2) for every layer, ends included.

    Where the neighbourhood average is not positive (an extrapolation below zero, or two
    dead neighbours) the ratio means nothing; such layers get ``r_l = 0`` (no evidence of
    under-expressiveness). The paper does not discuss the case.
    """
    g = torch.as_tensor(nagn, dtype=torch.float64)
    average = neighbour_average(g)
    positive = average > 0
    return torch.where(positive, g / torch.where(positive, average, 1.0) - 1, 0.0)


def increments(nagn: torch.Tensor, widths: list[int], tau: float, delta_max: int,
               fallback_fraction: float = FALLBACK_FRACTION) -> tuple[list[int], dict]:
    """Width increments ``Delta n_l`` of section 3 for every layer of a NAGN profile.

    ``p_l = max(r_l - tau, 0)``, ``s_l = p_l / max_j p_j``,
    ``Delta n_l = min(Delta_max, floor(s_l n_l))``. The last layer is the output layer and
    never grows (footnote 1). The maximum runs over the growable layers.

    If no growable layer passes ``tau``, the paper says "layers with g_l > g_{l-1} grow
    conservatively" without saying by how much; here every such layer (l >= 2, NAGN above
    its predecessor's) grows by ``min(Delta_max, max(1, floor(fallback_fraction n_l)))``.

    Parameters
    ----------
    nagn : Tensor [L]
        The profile, the output layer last.
    widths : list of int, length L
        ``n_l`` of every layer (the output layer's is not used).
    tau : float
        Contrast threshold.
    delta_max : int
        Most units added to one layer in one growth.

    Returns
    -------
    increments : list of int, length L (the last entry 0)
    info : dict with ``r``, ``p``, ``s`` (lists) and ``fallback`` (bool)
    """
    g = torch.as_tensor(nagn, dtype=torch.float64)
    if len(widths) != len(g):
        raise ValueError(f"widths ({len(widths)}) and the NAGN profile ({len(g)}) differ")
    r = relative_contrast(g)
    p = (r - tau).clamp(min=0)
    p[-1] = 0  # the output layer
    top = float(p.max())
    s = p / top if top > 0 else torch.zeros_like(p)
    if top > 0:
        delta = [min(delta_max, math.floor(float(s_l) * n)) for s_l, n in zip(s, widths)]
    else:
        step = [min(delta_max, max(1, math.floor(fallback_fraction * n))) for n in widths]
        delta = [0] + [step[i] if g[i] > g[i - 1] else 0 for i in range(1, len(g))]
    delta[-1] = 0
    return delta, {"r": r.tolist(), "p": p.tolist(), "s": s.tolist(), "fallback": top == 0}


def non_decreasing(widths: list[int], delta: list[int], limits: list[int]) -> list[int]:
    """Increments adjusted forward so that no layer ends narrower than its predecessor.

    Walking from the first layer on, layer l is widened to at least the new width of layer
    l-1, but never by more than ``limits[l]`` units in this step (section 4: "adjusting
    widths forward if necessary while respecting the per-step growth limit"). A layer that
    would need more than its limit stays narrower: the constraint may take several growth
    steps to reach. Layers never shrink.

    Returns
    -------
    list of int: the adjusted increments, each in ``[delta[l], limits[l]]`` unless
    ``delta[l]`` already exceeded the limit.
    """
    out, previous = [], 0
    for n, d, limit in zip(widths, delta, limits):
        want = max(n + d, previous)
        new = max(n + d, min(want, n + limit))
        out.append(new - n)
        previous = new
    return out


# ---------------------------------------------------------------- the where-criterion
@dataclass
class NAGN:
    """WHERE criterion of NAGN: width increments for every growable layer of a model.

    Calling it with the model's width sites (in forward order; the output layer is not one)
    returns ``(proposals, info)``: a :class:`Proposal` (site, increment) for every site, from
    the profile the observer collected, after :func:`increments` and :func:`non_decreasing`;
    the input of :func:`growcore.ops.widen.widen`, which applies them with any initialiser
    (the NAGN one of eq. 1, :class:`growcore.how.KaimingNew`, or GradMax).

    Parameters
    ----------
    observer : NAGNObserver
        Attached to the model by the training loop.
    tau : float
        Contrast threshold (paper: 5e-2).
    delta_max : int
        Most units added to one layer per growth.
    fallback_fraction : float
        Relative step of the conservative fallback (see :func:`increments`).
    monotone : bool
        Apply the non-decreasing width constraint (section 4).
    """

    observer: NAGNObserver = field(default_factory=NAGNObserver)
    tau: float = 5e-2
    delta_max: int = 64
    fallback_fraction: float = FALLBACK_FRACTION
    monotone: bool = True

    kind: ClassVar[str] = "width"

    def observers(self) -> list:
        """The observer the training loop attaches (it collects the profile for free)."""
        return [self.observer]

    def refuses(self, model: nn.Module) -> str | None:
        """Why NAGN cannot grow ``model`` (None if it can)."""
        if isinstance(model, SeedBatchedNet):
            return ("NAGN reads activation gradients by hooks on the model's layers while it "
                    "trains; a seed-batched net has no per-seed layers to hook (use the MLP "
                    "family, one seed at a time)")
        return None

    def __call__(self, model: nn.Module, sites: list[WidthSite], stats=None
                 ) -> tuple[list[Proposal], dict]:
        widths = [width(model, site) for site in sites]
        profile = self.observer.nagn()
        delta, info = increments(profile, [*widths, 0], self.tau, self.delta_max,
                                 self.fallback_fraction)
        delta = delta[:-1]
        raw = list(delta)
        if self.monotone:
            delta = monotone_by_kind(model, sites, widths, delta, self.delta_max)
        info = {"nagn": profile.tolist(), **info, "widths": widths, "raw_increments": raw,
                "increments": delta, "chosen": delta}
        return [Proposal(site, d) for site, d in zip(sites, delta)], info

    def describe(self) -> dict:
        return {"criterion": "NAGN", "tau": self.tau, "delta_max": self.delta_max,
                "fallback_fraction": self.fallback_fraction, "monotone": self.monotone,
                **self.observer.describe()}


def monotone_by_kind(model: nn.Module, sites, widths: list[int], delta: list[int],
                     delta_max: int) -> list[int]:
    """:func:`non_decreasing` within the convolutional layers and within the hidden dense
    layers separately (channels and units are not comparable), each layer limited to
    ``min(delta_max, n_l)`` units per step (at most doubling, as the increments)."""
    out = list(delta)
    convolutional = [isinstance(model.get_submodule(site.producer), nn.Conv2d)
                     for site in sites]
    for kind in (True, False):
        index = [i for i, conv in enumerate(convolutional) if conv == kind]
        if not index:
            continue
        w = [widths[i] for i in index]
        adjusted = non_decreasing(w, [delta[i] for i in index],
                                  [min(delta_max, n) for n in w])
        for i, d in zip(index, adjusted):
            out[i] = d
    return out

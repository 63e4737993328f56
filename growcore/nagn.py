"""NAGN: where to widen, how much, and when (Wang, Mille and Hidane, "Where to grow").

WHERE. The Normalized Activation Gradient Norm of layer l (section 3),

    NAGN_l = sqrt( E_{(x, y) in D} [ ||dL/dz_l||_2^2 / T_l ] ),

with ``z_l`` the layer's pre-activation output and ``T_l`` its number of elements per
example (``n_l`` for a dense layer, ``n_l H_l W_l`` for a convolution), is collected by
:class:`NAGNObserver` from the gradients that the normal backward pass computes anyway. Its
relative contrast against the neighbours (eq. 2, with the median-slope extrapolation at the
two ends) gives the under-expressiveness ``s_l`` and the increments
``Delta n_l = min(Delta_max, floor(s_l n_l))`` (:func:`increments`); the output layer never
grows and the widths are kept non-decreasing (:func:`non_decreasing`). :class:`NAGN` is the
where-criterion that turns a model into width increments for any width-growth operator and
any initialiser of the new units.

WHEN. :class:`ValidationWindow` fires when the mean validation accuracy of the last
``w_acc`` evaluations gains less than ``delta_acc`` (relative) over the ``w_acc`` before, and
stops growth for good when two consecutive triggers differ by less than ``delta_stop``
(section 4).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch
from torch import nn

from growcore.when import WhenPolicy
from growcore.widen import NewUnits, unit_sizes, width

FALLBACK_FRACTION = 0.25  # our choice: the paper says only "grow conservatively"


# ---------------------------------------------------------------- the statistic itself
def nagn_from_sums(square_sums, counts) -> torch.Tensor:
    """NAGN per layer from accumulated ``sum_i ||dL_i/dz_{l,i}||^2 / T_l`` and example counts.

    Parameters
    ----------
    square_sums : sequence of float, one per layer
        Sum over examples of the squared gradient norm divided by ``T_l``.
    counts : sequence of int, one per layer
        Number of examples in each sum.

    Returns
    -------
    Tensor [L], float64: ``NAGN_l = sqrt(square_sums_l / counts_l)`` (section 3).
    """
    sums = torch.as_tensor(square_sums, dtype=torch.float64)
    n = torch.as_tensor(counts, dtype=torch.float64)
    if (n <= 0).any():
        raise ValueError("every layer needs at least one example: run a backward pass first")
    return (sums / n).sqrt()


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


# ---------------------------------------------------------------- collecting it for free
def default_layers(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the pre-activations ``z_l``, forward order, output last.

    For a model with ``width_sites()`` (the VGG nets): each site's BatchNorm if it has one,
    else its producer, then the consumer of the last site (the output layer). The BatchNorm
    output is what the activation reads; the paper treats normalisation as "implicit
    operations between indices" without saying on which side of it ``z_l`` lies. We take the
    activation's input because it does not depend on the scale of the convolution's weights,
    which BatchNorm cancels (see :func:`producer_layers` for the other reading). Any other
    model gives all its ``Linear`` and ``Conv2d`` modules in registration order.
    """
    if not hasattr(model, "width_sites"):
        return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    sites = model.width_sites()
    names = [site.norm or site.producer for site in sites] + [sites[-1].consumer]
    return [model.get_submodule(name) for name in names]


def producer_layers(model: nn.Module) -> list[nn.Module]:
    """Like :func:`default_layers` but before BatchNorm: ``z_l = W_l h_{l-1} + b_l`` literally."""
    sites = model.width_sites()
    return [model.get_submodule(name)
            for name in [site.producer for site in sites] + [sites[-1].consumer]]


class NAGNObserver:
    """Squared activation-gradient norms collected during the normal backward pass.

    Attach it to a model (the training loop's ``observers=[...]`` re-attaches it after each
    growth); every backward pass then adds, per watched layer, ``sum_i ||dL_i/dz_i||^2 /
    T_l`` over the batch. The loss of the loop is the batch *mean*, so the per-example
    gradient is the batch size times the gradient the hook sees. With batch normalisation
    in training mode the examples of a batch are coupled and this per-example gradient is
    the standard one of the batch loss. The sums of the last ``window`` batches are kept.

    Parameters
    ----------
    window : int
        Number of recent training batches the statistic averages over (the data subset D).
    layers : callable ``model -> list[nn.Module]``
        Which modules' outputs are the pre-activations ``z_l`` (default :func:`default_layers`).
    """

    def __init__(self, window: int = 100, layers=default_layers):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window, self.layers = window, layers
        self.batches: deque = deque(maxlen=window)  # each: (per-layer sums, n examples)
        self._handles: list = []
        self._current: dict[int, float] = {}
        self._n_layers = 0

    def attach(self, model: nn.Module) -> None:
        self.detach()
        self.batches.clear()  # statistics of the old architecture do not describe the new one
        layers = self.layers(model)
        self._n_layers = len(layers)
        self._handles = [layer.register_forward_hook(self._forward_hook(i))
                         for i, layer in enumerate(layers)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward_hook(self, index: int):
        def hook(module, inputs, output):
            if torch.is_grad_enabled() and output.requires_grad:
                output.register_hook(self._gradient_hook(index, output.shape))
        return hook

    def _gradient_hook(self, index: int, shape: torch.Size):
        batch, per_example = shape[0], math.prod(shape[1:])

        def hook(grad: torch.Tensor) -> None:
            # kept as a tensor: no device synchronisation in the training loop
            self._current[index] = grad.detach().pow(2).sum() * (batch ** 2 / per_example)
            if len(self._current) == self._n_layers:  # the first layer's hook runs last
                sums = [self._current[i] for i in range(self._n_layers)]
                self.batches.append((sums, batch))
                self._current = {}
        return hook

    def nagn(self) -> torch.Tensor:
        """The NAGN profile [L] over the kept batches (``nagn_from_sums``)."""
        if not self.batches:
            raise ValueError("no backward pass has been observed since the last attach")
        sums = torch.stack([torch.stack(b[0]) for b in self.batches]).double().sum(dim=0)
        count = sum(b[1] for b in self.batches)
        return nagn_from_sums(sums.cpu(), [count] * self._n_layers)

    def describe(self) -> dict:
        return {"observer": "NAGN", "window_batches": self.window}


def nagn_direct(model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                layers: list[nn.Module]) -> torch.Tensor:
    """NAGN by definition, one example at a time (slow; the reference for tests).

    Each example's own loss is differentiated with respect to each layer's output, so no
    batch coupling enters; for a model without batch normalisation in training mode this
    equals what :class:`NAGNObserver` collects.
    """
    sums = torch.zeros(len(layers), dtype=torch.float64)
    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in layers]
    try:
        for i in range(len(X)):
            outputs.clear()
            loss = nn.functional.cross_entropy(model(X[i:i + 1]), y[i:i + 1])
            grads = torch.autograd.grad(loss, outputs)
            sums += torch.tensor([g.double().pow(2).sum() / g[0].numel() for g in grads])
    finally:
        for handle in handles:
            handle.remove()
    return (sums / len(X)).sqrt()


# ---------------------------------------------------------------- the where-criterion
@dataclass
class NAGN:
    """WHERE criterion of NAGN: width increments for every growable layer of a model.

    Calling it returns ``(sites, info)``: ``(WidthSite, increment)`` for every width site of
    the model (``model.width_sites()``, the output layer excluded), from the profile the
    observer collected, after :func:`increments` and :func:`non_decreasing`; the format of
    :func:`growcore.widen.widen`, which applies them with any initialiser (the NAGN one of
    eq. 1, :class:`KaimingNew`, or GradMax).

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

    def __call__(self, model: nn.Module, split=None) -> tuple[list[int], dict]:
        sites = model.width_sites()
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
        return list(zip(sites, delta)), info

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


# ---------------------------------------------------------------- how: eq. (1)
class KaimingNew:
    """The NAGN initialiser of new units (eq. 1), a ``how`` for :func:`growcore.widen.widen`.

    The incoming weights of the new units (``W^new2``) are drawn from a zero-centred normal
    with variance ``2 / n_l`` for a dense layer and ``2 / (n_l k_l^2)`` for a convolution,
    i.e. ``2 / D`` with ``D`` the fan-in of one unit (Kaiming); their biases are zero, and
    their outgoing weights (``W^new1``) are zero, so the output is unchanged while the
    gradient of the outgoing weights is not zero. ``W^new3`` (new units to new units, when
    consecutive layers grow together) is zero: ``widen`` pads the new consumer rows with
    zeros. BatchNorm channels get scale 1 and shift 0 from ``widen``.

    Parameters
    ----------
    seed : int
        Seed of the generator of the new weights (drawn on the CPU, so portable).
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, site, k: int, split=None) -> NewUnits:
        D, o, R = unit_sizes(model, site)
        like = model.get_submodule(site.producer).weight
        incoming = torch.randn(k, D, generator=self.generator, dtype=torch.float64)
        incoming = (incoming * math.sqrt(2 / D)).to(like)
        return NewUnits(incoming, like.new_zeros(o, k, R))


# ---------------------------------------------------------------- the when-policy
class ValidationWindow(WhenPolicy):
    """The NAGN growth trigger and its termination rule (section 4).

    With ``A`` the validation accuracy of each evaluation (``1 - val_error`` of
    ``history.evals``, averaged over the seeds of a batched model), a growth fires when the
    mean of the last ``w_acc`` evaluations, ``A_curr``, and the mean of the ``w_acc``
    before, ``A_prev``, satisfy ``(A_curr - A_prev) / A_prev < delta_acc``. Both windows
    must lie after the last growth. At every trigger after the first, if ``A_curr`` has
    gained less than ``delta_stop`` (relative) over its value at the previous trigger,
    growth is disabled for the rest of the run (and this trigger does not grow).

    The policy answers once per new evaluation; ``triggers`` and ``stopped_at`` record its
    decisions (iteration, ``A_curr``).
    """

    def __init__(self, w_acc: int = 3, delta_acc: float = 3e-3, delta_stop: float = 5e-2,
                 max_growths: int | None = None):
        if w_acc < 1:
            raise ValueError(f"w_acc must be >= 1, got {w_acc}")
        self.w_acc, self.delta_acc, self.delta_stop = w_acc, delta_acc, delta_stop
        self.max_growths = max_growths
        self.triggers: list[tuple[int, float]] = []
        self.stopped_at: tuple[int, float] | None = None
        self._seen = 0
        self._since = 0  # index in history.evals of the first evaluation after the last growth

    def __call__(self, iteration: int, history) -> bool:
        evals = history.evals
        if len(evals) == self._seen or self.stopped_at is not None:
            return False
        self._seen = len(evals)
        accuracy = [1 - float(torch.as_tensor(e["val_error"]).double().mean())
                    for e in evals[self._since:]]
        fire, current = window_trigger(accuracy, self.w_acc, self.delta_acc)
        if not fire:
            return False
        if self.triggers and not gained(self.triggers[-1][1], current, self.delta_stop):
            self.stopped_at = (iteration, current)
            return False
        if self.max_growths is not None and len(self.triggers) >= self.max_growths:
            return False
        self.triggers.append((iteration, current))
        self._since = len(evals)
        return True

    def describe(self) -> dict:
        return {"policy": "ValidationWindow", "w_acc": self.w_acc, "delta_acc": self.delta_acc,
                "delta_stop": self.delta_stop, "max_growths": self.max_growths}


def window_trigger(accuracy: list[float], w_acc: int, delta_acc: float) -> tuple[bool, float]:
    """Whether the last two windows of ``w_acc`` accuracies gain less than ``delta_acc``.

    Returns ``(fire, A_curr)``; ``fire`` is False while fewer than ``2 w_acc`` values exist.
    """
    if len(accuracy) < 2 * w_acc:
        return False, float("nan")
    current = sum(accuracy[-w_acc:]) / w_acc
    previous = sum(accuracy[-2 * w_acc:-w_acc]) / w_acc
    return (current - previous) / previous < delta_acc, current


def gained(before: float, after: float, delta_stop: float) -> bool:
    """Whether the accuracy rose by at least ``delta_stop`` (relative) between triggers."""
    return (after - before) / before >= delta_stop

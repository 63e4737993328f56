"""SensLI's sensitivity analysis, made explicit for a small network (section 2.4).

These functions expose the constrained view of layer insertion as flat vectors, so the book
can solve the KKT system (2.11) directly, independently of backpropagation, and compare the
first-order prediction with the actual change of the objective.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.func import functional_call

from growcore.data import Split
from growcore.how import IdentityLayer
from growcore.losses import per_seed_cross_entropy
from growcore.models.seed_batched import SeedBatchedNet
from growcore.ops import at_positions, insert_layers

FD_STEP = 1e-6  # central finite-difference step (float64)


@dataclass
class ExtendedProblem:
    """The extended training problem (2.9) of one network as a function of a flat vector.

    Attributes
    ----------
    theta : Tensor
        ``theta_ext = [theta_base, theta_new]`` at the identity initialisation (float64).
    is_new : Tensor of bool
        Which entries of ``theta`` are new parameters (the rows of ``M = [0, I]``).
    names, shapes : the parameter layout of ``theta``.
    """

    model: SeedBatchedNet
    split: Split
    theta: torch.Tensor
    is_new: torch.Tensor
    names: list[str]
    shapes: list[torch.Size]

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = shape.numel()
            out[name] = theta[start:start + n].view(shape)
            start += n
        return out

    def f(self, theta: torch.Tensor) -> torch.Tensor:
        """``f_ext(theta)``: the mean training loss of the extended network (eq. 2.1)."""
        logits = functional_call(self.model, self.unflatten(theta), (self.split.X_train,))
        return per_seed_cross_entropy(logits, self.split.y_train)[0]

    def gradient_backprop(self) -> torch.Tensor:
        theta = self.theta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.f(theta), theta)
        return grad

    def gradient_finite_differences(self, step: float = FD_STEP) -> torch.Tensor:
        """``grad f_ext`` by central differences: no backpropagation involved."""
        grad = torch.empty_like(self.theta)
        with torch.no_grad():
            for i in range(len(self.theta)):
                e = torch.zeros_like(self.theta)
                e[i] = step
                grad[i] = (self.f(self.theta + e) - self.f(self.theta - e)) / (2 * step)
        return grad

    def M(self) -> torch.Tensor:
        """The constraint matrix ``M = [0, I]`` of (2.9): it selects the new parameters."""
        eye = torch.eye(len(self.theta), dtype=self.theta.dtype)
        return eye[self.is_new]


def extended_problem(model: SeedBatchedNet, split: Split, positions: list[int],
                     how=IdentityLayer()) -> ExtendedProblem:
    """The extended problem of a one-seed ``model`` with identity layers at ``positions``."""
    if model.n_seeds != 1:
        raise ValueError("extended_problem works on a model with one seed")
    growth = insert_layers(model, at_positions(model, [positions]), how)
    params = dict(growth.model.named_parameters())
    names = list(params)
    theta = torch.cat([params[n].detach().reshape(-1) for n in names]).double()
    is_new = torch.cat([torch.full((params[n].numel(),), growth.status(n) == "new")
                        for n in names])
    return ExtendedProblem(growth.model.double(), split.to("cpu", torch.float64), theta, is_new,
                           names, [params[n].shape for n in names])


def solve_kkt(problem: ExtendedProblem, r: torch.Tensor, grad: torch.Tensor):
    """Solve (2.11a) ``grad f_ext - [r; 0] + M^T lambda = 0`` for lambda by least squares.

    Parameters
    ----------
    r : the residual ``grad f_base(theta_base)`` of the baseline network.
    grad : ``grad f_ext(theta_ext)`` (e.g. from finite differences).

    Returns
    -------
    lam : the Lagrange multiplier (one entry per new parameter)
    residual : the norm of the left-hand side of (2.11a) at ``lam``; zero iff the system is
        consistent, i.e. iff (2.12a) ``grad_base f_ext = r`` holds.
    """
    rhs = torch.zeros_like(grad)
    rhs[~problem.is_new] = r
    rhs = rhs - grad
    MT = problem.M().T
    lam = torch.linalg.lstsq(MT, rhs.unsqueeze(1)).solution.squeeze(1)
    residual = torch.linalg.norm(grad - torch.where(problem.is_new, 0, rhs + grad) + MT @ lam)
    return lam, residual


def base_gradient(model: SeedBatchedNet, split: Split) -> torch.Tensor:
    """``r = grad f_base(theta_base)`` of a one-seed model, flattened in parameter order."""
    model = copy.deepcopy(model).double()
    loss = per_seed_cross_entropy(model(split.X_train.double()), split.y_train)[0]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def first_order_check(problem: ExtendedProblem, direction: torch.Tensor, steps):
    """Actual and predicted change of ``f_ext`` when the constraint is relaxed by ``t * dv``.

    ``direction`` is ``dv`` (one entry per new parameter). The prediction is
    ``grad_new f_ext . (t dv) = -lambda . (t dv)`` (eq. 2.12b).

    Returns
    -------
    actual, predicted : Tensors, one entry per step ``t``.
    """
    grad_new = problem.gradient_backprop()[problem.is_new]
    f0 = problem.f(problem.theta)
    actual, predicted = [], []
    with torch.no_grad():
        for t in steps:
            theta = problem.theta.clone()
            theta[problem.is_new] += t * direction
            actual.append(problem.f(theta) - f0)
            predicted.append(t * grad_new @ direction)
    return torch.stack(actual), torch.stack(predicted)

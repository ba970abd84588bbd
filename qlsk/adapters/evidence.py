"""Regularisation chosen by the data: an L2 prior toward the starting weights whose
strength and noise level the linearised-Laplace evidence (or cross-validation) picks.

The adapter's trainable parameters ``θ`` start at ``θ₀`` (LoRA's ``B = 0``, the atoms
at the identity, the calibration at least squares). With residuals
``r_i = (y_i − f_θ(x_i)) / s`` in units of the loss scale ``s``, the regularised fit
minimises::

    mean_i r_i² + λ ‖(θ − θ₀) / w‖²                                     (1)

over ``N`` residuals, for a strength ``λ`` and per-parameter prior scales ``w``. That is
the maximum a posteriori point of ``r ~ N(0, σ²)`` under the prior
``(θ − θ₀)/w ~ N(0, σ² / (N λ) I)``. Linearising ``f`` at that point (``J`` its
``N × p`` Jacobian, columns scaled by ``w``) gives the marginal likelihood in closed
form, with ``α = N λ``::

    log Z(λ) = −N/2 log(2π σ²) − N/2 − ½ log det(I + J Jᵀ / α),
    σ² = (Σ r² + α ‖(θ − θ₀)/w‖²) / N                                   (2)

(the noise at its closed-form optimum). The determinant is taken as ``N × N`` or
``p × p``, whichever is smaller, so it is exact at a few hundred rows or parameters;
above ``max_rows`` rows the curvature ``JᵀJ`` is estimated from a random subset of rows,
scaled up (a sub-sampled generalised Gauss-Newton). The same linearisation gives a
predictive variance ``σ² jₓᵀ (JᵀJ + α I)⁻¹ jₓ`` for the network's output, to which the
noise ``σ²`` adds for a new observation.

Training is full-batch L-BFGS with a strong-Wolfe line search (or full-batch Adam) to
convergence, along a path of strengths from the strongest to the weakest, each fit
starting where the previous one ended.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

DEFAULT_STRENGTHS = tuple(float(v) for v in np.logspace(1, -4, 11))
MAX_ROWS = 2000
# The full-batch optimisers of (1) and their default learning rates: L-BFGS's step is
# scaled by its line search (1 is its natural first trial); Adam's 3e-3 was chosen on
# development tasks (as accurate as 1e-3, about twice as fast).
OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 3e-3}


def trainable_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters that train: ``(name, parameter)`` in a fixed order."""
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


@dataclass
class Fit:
    """One point of the regularisation path.

    Attributes
    ----------
    strength : float
        ``λ`` of (1).
    log_evidence : float
        ``log Z / N`` of (2), per residual.
    noise : float
        ``σ``, the noise standard deviation in units of the loss scale.
    objective : float
        The value of (1) at the end of training.
    steps : int
        Full-batch steps taken.
    cv_error : float
        Mean held-out squared residual over folds (``nan`` unless cross-validated).
    """

    strength: float
    log_evidence: float = math.nan
    noise: float = math.nan
    objective: float = math.nan
    steps: int = 0
    cv_error: float = math.nan
    state: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """The plain numbers, without the weights."""
        return {"strength": self.strength, "log_evidence": self.log_evidence,
                "noise": self.noise, "objective": self.objective, "steps": self.steps,
                "cv_error": self.cv_error}


class L2Prior:
    """The quadratic prior ``λ ‖(θ − θ₀)/w‖²`` around a module's starting weights.

    Parameters
    ----------
    module : torch.nn.Module
        Its trainable parameters, as they are now, are ``θ₀``.
    prior_scales : dict of str to float, optional
        ``w`` for parameters by name (default 1): a parameter in other units than
        the network's weights, such as an output shift in the target's units.
    """

    def __init__(self, module: nn.Module, prior_scales: dict | None = None):
        self.named = trainable_parameters(module)
        self.params = [p for _, p in self.named]
        self.start = [p.detach().clone() for p in self.params]
        prior_scales = prior_scales or {}
        self.scales = [torch.as_tensor(prior_scales.get(n, 1.0), dtype=p.dtype,
                                       device=p.device).expand_as(p)
                       for n, p in self.named]

    def __len__(self) -> int:
        return sum(p.numel() for p in self.params)

    def distance(self) -> torch.Tensor:
        """``‖(θ − θ₀)/w‖²``."""
        return sum((((p - p0) / w) ** 2).sum()
                   for p, p0, w in zip(self.params, self.start, self.scales))

    def flat_scales(self) -> torch.Tensor:
        return torch.cat([w.reshape(-1) for w in self.scales])


def fit_map(module: nn.Module, X: torch.Tensor, y: torch.Tensor, scale: torch.Tensor,
            prior: L2Prior, strength: float, *, optimizer: str = "lbfgs",
            lr: float | None = None, max_steps: int = 2000, tol: float = 1e-4,
            check_every: int = 50, extra_penalty: Callable | None = None,
            ) -> tuple[float, int]:
    """Minimise (1) by a full-batch optimiser from the module's current weights.

    ``optimizer="lbfgs"``: L-BFGS (history 20) with a strong-Wolfe line search, which
    only ever lowers (1) and needs a deterministic forward pass; ``"adam"``: Adam.
    Either stops when (1) improved by less than ``tol`` (relative) over the last
    ``check_every`` steps (Adam) or iterations (L-BFGS, whose line search may take
    several steps an iteration), after ``max_steps`` steps, or (L-BFGS) when its
    gradient or its step vanishes. A step is one evaluation of (1) and its gradient, so
    the two optimisers' counts cost the same. The prior's gradient is added in closed
    form, which halves the cost of a step of a small network.

    Returns
    -------
    objective : float
        (1) at the end.
    steps : int
        Steps taken.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    precision = [2 * strength / w ** 2 for w in prior.scales]

    def objective() -> float:
        with torch.no_grad():
            return float((((module(X) - y) / scale) ** 2).mean()
                         + strength * prior.distance())

    def gradient() -> torch.Tensor:
        """The data term's value, with the gradient of all of (1) left in ``.grad``."""
        loss = (((module(X) - y) / scale) ** 2).mean()
        if extra_penalty is not None:
            loss = loss + extra_penalty()
        loss.backward()
        with torch.no_grad():
            torch._foreach_add_([p.grad for p in prior.params], torch._foreach_mul(
                torch._foreach_sub(prior.params, prior.start), precision))
        return loss.detach()

    def check(value, step):
        if not math.isfinite(value):
            raise FloatingPointError(f"the regularised loss became non-finite at step "
                                     f"{step} with lr={lr:g} and strength={strength:g}")

    module.train()
    last = objective()
    if optimizer == "lbfgs":
        steps = _lbfgs(prior, gradient, objective, check, last, lr=lr, max_steps=max_steps,
                       tol=tol, check_every=check_every, strength=strength)
        module.eval()
        return objective(), steps
    adam = torch.optim.Adam(prior.params, lr=lr, foreach=True)
    step = 0
    for step in range(1, max_steps + 1):
        adam.zero_grad(set_to_none=True)
        loss = gradient()
        adam.step()
        check(float(loss), step)
        if step % check_every == 0:
            value = objective()
            if last - value <= tol * abs(last):
                last = value
                break
            last = value
    module.eval()
    return objective(), step


def _lbfgs(prior: L2Prior, gradient: Callable, objective: Callable, check: Callable,
           last: float, *, lr: float, max_steps: int, tol: float, check_every: int,
           strength: float) -> int:
    """:func:`fit_map`'s L-BFGS loop, ``check_every`` steps at a time; returns the steps."""
    optimizer = torch.optim.LBFGS(prior.params, lr=lr, max_iter=check_every,
                                  tolerance_grad=1e-7, tolerance_change=1e-9,
                                  history_size=20, line_search_fn="strong_wolfe")
    group = optimizer.param_groups[0]
    steps = 0

    def closure():
        nonlocal steps
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            penalty = strength * prior.distance()
        steps += 1
        return gradient() + penalty  # a non-finite trial is the line search's to reject

    while max_steps - steps >= 2:  # a call evaluates at least twice
        # at most check_every iterations and the steps left: torch may evaluate once
        # more than max_eval in a call
        group["max_eval"] = max_steps - steps - 1
        before = steps
        optimizer.step(closure)
        value = objective()
        check(value, steps)
        if steps - before <= 1 or last - value <= tol * abs(last):
            break  # converged (L-BFGS returned at once), or too little progress
        last = value
    return steps


def jacobian(module: nn.Module, X: torch.Tensor, prior: L2Prior, scale: torch.Tensor,
             chunk: int = 128) -> torch.Tensor:
    """``∂(f(x)/s)/∂θ`` with columns scaled by ``w``: shape ``(n · n_outputs, p)``.

    Rows of ``X`` must not interact in the forward pass (true of MLPs and adapters).
    """
    module.eval()
    blocks = []
    for start in range(0, len(X), chunk):
        out = (module(X[start:start + chunk]) / scale).reshape(-1)  # (c · k,)
        eye = torch.eye(len(out), dtype=out.dtype, device=out.device)
        grads = torch.autograd.grad(out, prior.params, grad_outputs=eye,
                                    is_grads_batched=True, allow_unused=True)
        blocks.append(torch.cat([
            (g if g is not None else torch.zeros(len(out), *p.shape, device=out.device))
            .reshape(len(out), -1) for g, p in zip(grads, prior.params)], dim=1).detach())
    return torch.cat(blocks) * prior.flat_scales()


@dataclass
class LaplacePosterior:
    """The linearised Gaussian posterior at a fitted strength.

    ``variance(J)`` is ``σ² jᵀ (G + α I)⁻¹ j`` per row ``j`` of ``J`` (scaled as
    :func:`jacobian` scales it), ``G`` the (estimated) ``JᵀJ`` of the training rows.
    Stored as ``U = L⁻¹ J_m`` with ``L Lᵀ = α I + J_m J_mᵀ`` (the row form) or as
    ``L`` with ``L Lᵀ = G + α I`` (the parameter form), whichever is smaller.
    """

    factor: torch.Tensor
    row_form: bool
    alpha: float
    noise_var: float

    def variance(self, J: torch.Tensor) -> torch.Tensor:
        J = J.to(self.factor)
        if self.row_form:
            reduced = (J ** 2).sum(1) - ((J @ self.factor.T) ** 2).sum(1)
            return (self.noise_var / self.alpha * reduced).clamp_min(0.0)
        solved = torch.linalg.solve_triangular(self.factor, J.T, upper=False)
        return self.noise_var * (solved ** 2).sum(0)


def evidence(J: torch.Tensor, n_residuals: int, objective: float,
             strength: float) -> tuple[float, float, LaplacePosterior]:
    """(2) from the Jacobian of ``m`` (sampled) rows standing for ``n_residuals``.

    Returns
    -------
    log_evidence : float
        ``log Z / N``.
    noise_var : float
        ``σ²``.
    posterior : LaplacePosterior
    """
    N = n_residuals
    alpha = N * strength
    J = J.to(torch.float64) * math.sqrt(N / len(J))
    m, p = J.shape
    noise_var = max(objective, 1e-12)  # (Σ r² + α‖Δ‖²) / N = the mean objective (1)
    row_form = m <= p
    gram = J @ J.T if row_form else J.T @ J
    eye = torch.eye(len(gram), dtype=gram.dtype)
    L = torch.linalg.cholesky(gram + alpha * eye)
    # log det(I + G/α) = log det(G + αI) − d log α
    logdet = 2 * torch.log(torch.diagonal(L)).sum().item() - len(gram) * math.log(alpha)
    log_z = -0.5 * N * (math.log(2 * math.pi * noise_var) + 1) - 0.5 * logdet
    factor = torch.linalg.solve_triangular(L, J, upper=False) if row_form else L
    return log_z / N, noise_var, LaplacePosterior(factor.float(), row_form, alpha, noise_var)


def regularisation_path(module: nn.Module, X: torch.Tensor, y: torch.Tensor,
                        scale: torch.Tensor, strengths: Sequence[float] = DEFAULT_STRENGTHS,
                        *, prior_scales: dict | None = None, select: str = "evidence",
                        cv_folds: Sequence[tuple[np.ndarray, np.ndarray]] = (),
                        max_rows: int = MAX_ROWS, patience: int = 2,
                        generator: torch.Generator | None = None,
                        progress: Callable | None = None,
                        **fit_options) -> tuple[list[Fit], int, LaplacePosterior]:
    """Fit (1) along the strengths, strongest first; leave the chosen fit in ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        At its starting weights ``θ₀``; its trainable parameters are fitted in place.
    X, y : torch.Tensor of shape (n, n_features) and (n, n_outputs)
    scale : torch.Tensor of shape (n_outputs,)
        The loss scale ``s``.
    strengths : sequence of float
        ``λ`` values; the path runs from the largest to the smallest.
    prior_scales : dict, optional
        See :class:`L2Prior`.
    select : {"evidence", "cv"}
        Choose the strength by (2), or by the mean held-out squared residual over
        ``cv_folds`` (each a ``(train, test)`` pair of row indices).
    max_rows : int
        Above this many rows the curvature is estimated on a random subset of them.
    patience : int
        Stop the path once the criterion has been worse than its best for this many
        strengths in a row (it is near-unimodal in ``λ``, and the weakest strengths
        are the slowest to fit).
    generator : torch.Generator, optional
        Draws that subset.
    progress : callable, optional
        Called with each finished :class:`Fit`.
    **fit_options
        Passed to :func:`fit_map`.

    Returns
    -------
    path : list of Fit
    chosen : int
        Index into ``path`` of the chosen strength.
    posterior : LaplacePosterior
        At the chosen strength.
    """
    strengths = sorted((float(s) for s in strengths), reverse=True)
    if not strengths or min(strengths) <= 0:
        raise ValueError(f"strengths must be a non-empty list of positive numbers, "
                         f"got {strengths!r}")
    prior = L2Prior(module, prior_scales)
    if select == "cv" and not cv_folds:
        raise ValueError("select='cv' needs cv_folds")
    start = _state(module)
    fold_states = [start] * len(cv_folds) if select == "cv" else []
    rows = torch.arange(len(X))
    if len(X) > max_rows:
        rows = torch.randperm(len(X), generator=generator)[:max_rows]
    path, posteriors, scores = [], [], []
    for strength in strengths:
        cv_error = math.nan
        if select == "cv":
            cv_error, fold_states = _cross_validate(module, X, y, scale, prior, strength,
                                                    cv_folds, fold_states, fit_options)
            module.load_state_dict(path[-1].state if path else start)
        objective, steps = fit_map(module, X, y, scale, prior, strength, **fit_options)
        log_z, noise_var, posterior = evidence(
            jacobian(module, X[rows], prior, scale), y.numel(), objective, strength)
        fit = Fit(strength, log_z, math.sqrt(noise_var), objective, steps, cv_error,
                  _state(module))
        path.append(fit)
        posteriors.append(posterior)
        scores.append(-log_z if select == "evidence" else cv_error)
        if progress is not None:
            progress(fit)
        if len(path) - 1 - int(np.argmin(scores)) >= patience:
            break  # the criterion has worsened for `patience` strengths in a row
    chosen = int(np.argmin(scores))
    module.load_state_dict(path[chosen].state)
    return path, chosen, posteriors[chosen]


def _state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _cross_validate(module, X, y, scale, prior, strength, folds, states, fit_options):
    """Mean held-out squared residual at one strength, each fold continuing its own path.

    Returns the error and the folds' states after this strength.
    """
    errors, after = [], []
    for (train, test), state in zip(folds, states):
        module.load_state_dict(state)
        fit_map(module, X[train], y[train], scale, prior, strength, **fit_options)
        with torch.no_grad():
            errors.append(float((((module(X[test]) - y[test]) / scale) ** 2).mean()))
        after.append(_state(module))
    return float(np.mean(errors)), after

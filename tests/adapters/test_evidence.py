"""The linearised-Laplace evidence and the regularisation path (pure torch).

On a linear model the linearisation is exact, so every quantity has a closed form to
check against: the MAP is ridge regression, the evidence is Bayesian linear regression's
marginal likelihood at its maximum-likelihood noise, and the predictive variance is its
posterior variance.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from qlsk.adapters.evidence import (
    L2Prior,
    evidence,
    fit_map,
    jacobian,
    regularisation_path,
)


def _linear_problem(n, p, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    w = rng.standard_normal(p) / math.sqrt(p)
    y = X @ w + noise * rng.standard_normal(n)
    return torch.tensor(X, dtype=torch.float64), torch.tensor(y[:, None], dtype=torch.float64)


def _linear_model(p):
    model = nn.Linear(p, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    return model


def _exact(X, y, alpha):
    """Bayesian linear regression with prior precision α/σ², σ² at its maximum."""
    X, y = X.numpy(), y.numpy().ravel()
    n = len(y)
    K = np.eye(n) + X @ X.T / alpha
    noise_var = y @ np.linalg.solve(K, y) / n
    log_z = -0.5 * n * (np.log(2 * np.pi * noise_var) + 1) - 0.5 * np.linalg.slogdet(K)[1]
    w = np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ y)
    return log_z / n, noise_var, w


@pytest.mark.parametrize("n, p", [(30, 5), (8, 20)])  # parameter form and row form
def test_evidence_and_variance_match_bayesian_linear_regression(n, p):
    X, y = _linear_problem(n, p)
    strength = 0.05
    alpha = n * strength
    log_z, noise_var, w = _exact(X, y, alpha)
    model = _linear_model(p)
    prior = L2Prior(model)  # centred on the zero start
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w)[None])
        scale = torch.ones(1, dtype=torch.float64)
        objective = float(((model(X) - y) ** 2).mean() + strength * prior.distance())
    got_z, got_var, posterior = evidence(jacobian(model, X, prior, scale), n, objective,
                                         strength)
    assert got_z == pytest.approx(log_z, rel=1e-4)
    assert got_var == pytest.approx(noise_var, rel=1e-4)
    Xs, _ = _linear_problem(5, p, seed=1)
    cov = noise_var * np.linalg.inv(X.numpy().T @ X.numpy() + alpha * np.eye(p))
    want = np.einsum("ij,jk,ik->i", Xs.numpy(), cov, Xs.numpy())
    got = posterior.variance(jacobian(model, Xs, prior, scale)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.parametrize("optimizer, lr", [("lbfgs", None), ("adam", 0.05)])
def test_fit_map_reaches_the_ridge_solution_around_the_start(optimizer, lr):
    X, y = _linear_problem(40, 4)
    model = _linear_model(4)
    with torch.no_grad():
        model.weight.fill_(0.3)  # the prior pulls toward this start, not toward zero
    prior = L2Prior(model)
    start = np.full(4, 0.3)
    strength = 0.1
    _, steps = fit_map(model, X, y, torch.ones(1, dtype=torch.float64), prior, strength,
                       optimizer=optimizer, lr=lr, max_steps=4000, tol=1e-10)
    if optimizer == "lbfgs":  # it solves a 4-parameter quadratic in a few steps
        assert steps <= 100
    Xn, yn, alpha = X.numpy(), y.numpy().ravel(), 40 * strength
    want = start + np.linalg.solve(Xn.T @ Xn + alpha * np.eye(4), Xn.T @ (yn - Xn @ start))
    np.testing.assert_allclose(model.weight.detach().numpy().ravel(), want, atol=1e-4)
    assert all(p.requires_grad for p in prior.params)


def test_prior_scales_make_a_parameter_in_other_units_as_cheap_to_move():
    # a shift in units 100 times larger needs a 100 times wider prior to be penalised alike
    model = nn.Linear(1, 1).double()
    prior = L2Prior(model, {"bias": 100.0})
    with torch.no_grad():
        model.bias.add_(100.0)
    assert float(prior.distance()) == pytest.approx(1.0)


def test_path_chooses_strong_regularisation_on_noise_and_weak_on_signal():
    torch.manual_seed(0)
    X, y = _linear_problem(60, 3, noise=0.01)
    noise = torch.randn_like(y)
    scale = torch.ones(1, dtype=torch.float64)
    strengths = [10.0, 1.0, 0.1, 0.01, 0.001]
    chosen = {}
    for label, target in (("signal", y), ("noise", noise)):
        model = _linear_model(3)
        path, i, _ = regularisation_path(model, X, target, scale, strengths,
                                         patience=10)
        chosen[label] = path[i].strength
        assert [f.strength for f in path] == strengths
        assert path[i].log_evidence == max(f.log_evidence for f in path)
    assert chosen["noise"] >= 1.0
    assert chosen["signal"] <= 0.01


def test_path_stops_once_the_evidence_keeps_falling():
    X, y = _linear_problem(60, 3, noise=1.0)
    path, _, _ = regularisation_path(_linear_model(3), X, y, torch.ones(1, dtype=torch.float64),
                                     [10.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5],
                                     patience=2)
    assert len(path) < 7


def test_cross_validation_selects_by_held_out_error():
    from sklearn.model_selection import KFold

    X, y = _linear_problem(50, 3, noise=0.05)
    folds = list(KFold(5, shuffle=True, random_state=0).split(X.numpy()))
    path, i, posterior = regularisation_path(
        _linear_model(3), X, y, torch.ones(1, dtype=torch.float64), [10.0, 0.1, 0.001],
        select="cv", cv_folds=folds, patience=5)
    errors = [f.cv_error for f in path]
    assert all(np.isfinite(errors)) and i == int(np.argmin(errors))
    assert path[i].strength < 10.0 and posterior.noise_var > 0


def test_curvature_from_a_subset_of_rows_approximates_the_evidence():
    X, y = _linear_problem(3000, 4, noise=0.2)
    scale = torch.ones(1, dtype=torch.float64)
    exact, _, _ = regularisation_path(_linear_model(4), X, y, scale, [0.01])
    sampled, _, _ = regularisation_path(_linear_model(4), X, y, scale, [0.01],
                                        max_rows=500,
                                        generator=torch.Generator().manual_seed(0))
    assert sampled[0].log_evidence == pytest.approx(exact[0].log_evidence, abs=2e-3)


def test_bad_strengths_are_refused():
    X, y = _linear_problem(10, 2)
    with pytest.raises(ValueError, match="strengths"):
        regularisation_path(_linear_model(2), X, y, torch.ones(1, dtype=torch.float64), [])
    with pytest.raises(ValueError, match="strengths"):
        regularisation_path(_linear_model(2), X, y, torch.ones(1, dtype=torch.float64), [0.0])
    with pytest.raises(ValueError, match="cv_folds"):
        regularisation_path(_linear_model(2), X, y, torch.ones(1, dtype=torch.float64), [1.0],
                            select="cv")


def test_an_unknown_optimizer_is_refused():
    X, y = _linear_problem(10, 2)
    model = _linear_model(2)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit_map(model, X, y, torch.ones(1, dtype=torch.float64), L2Prior(model), 0.1,
                optimizer="sgd")


@pytest.mark.parametrize("max_steps", [1, 2, 3, 10, 30, 51])
def test_lbfgs_takes_at_most_max_steps(max_steps):
    X, y = _linear_problem(40, 4)
    model = _linear_model(4)
    _, steps = fit_map(model, X, y, torch.ones(1, dtype=torch.float64), L2Prior(model), 1e-3,
                       optimizer="lbfgs", max_steps=max_steps, tol=0.0, check_every=5)
    assert steps <= max_steps

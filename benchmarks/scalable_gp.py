"""A scalable multi-fidelity GP peer: AR1 and NARGP as GPyTorch variational GPs.

The exact GPs of :class:`qlsk.MultiFidelityGPRegressor` cost the cube of the target rows
(every optimiser step factorises an ``n x n`` matrix), so they stop being practical at a
few thousand rows. :class:`SVGPRegressor` keeps their model and replaces the GP by a
stochastic variational GP (Hensman et al. 2013, GPyTorch's ``ApproximateGP`` with
learned inducing points), whose cost per step does not depend on ``n``:

- ``kind="ar1"``: ``y = ρ f(x) + c + δ(x)``, ``ρ, c`` by least squares (as the exact
  kind), ``δ`` the variational GP on the scaled inputs;
- ``kind="nargp"``: the variational GP on ``[x, f(x)]``, ``f`` standardised.

The kernel is the exact GPs' (an amplitude times an RBF with one length scale per input,
plus Gaussian noise). Training: Adam on mini-batches of the variational ELBO, a fixed
number of steps. Used by ``benchmarks.growing_n``; needs ``gpytorch`` (the ``bench``
extra).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from qlsk.estimators.bases import base_predictions
from qlsk.estimators.multifidelity import unit_box


def _model(inducing: torch.Tensor):
    import gpytorch

    class _SVGP(gpytorch.models.ApproximateGP):
        def __init__(self):
            distribution = gpytorch.variational.CholeskyVariationalDistribution(len(inducing))
            strategy = gpytorch.variational.VariationalStrategy(
                self, inducing, distribution, learn_inducing_locations=True)
            super().__init__(strategy)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.RBFKernel(ard_num_dims=inducing.shape[1]))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                             self.covar_module(x))

    return _SVGP()


class SVGPRegressor(RegressorMixin, BaseEstimator):
    """A multi-fidelity GP whose GP is a stochastic variational one (GPyTorch).

    Parameters
    ----------
    base : fitted regressor, torch module or None
        The pretrained base ``f``, as :class:`qlsk.MultiFidelityGPRegressor` takes it.
    kind : {"ar1", "nargp"}, default="nargp"
    bounds : array-like of shape (n_features, 2) or None, default=None
        The input box; ``None``: the range of the rows of ``fit``.
    n_inducing : int, default=256
        Inducing points (at most the number of rows), started at random rows.
    n_steps : int, default=2000
        Adam steps on mini-batches of ``batch_size`` rows (full batch below that).
    batch_size : int, default=512
    lr : float, default=0.01
    random_state : int or None, default=None

    Attributes
    ----------
    model_, likelihood_ : the trained GPyTorch modules
    n_trainable_params_ : int
        Kernel and noise hyperparameters, inducing locations and variational parameters.
    """

    def __init__(self, base=None, *, kind="nargp", bounds=None, n_inducing=256,
                 n_steps=2000, batch_size=512, lr=0.01, random_state=None):
        self.base = base
        self.kind = kind
        self.bounds = bounds
        self.n_inducing = n_inducing
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state

    def _inputs(self, X, f):
        box = (X - self.lo_) / self.span_
        if self.kind == "ar1":
            return box
        return np.column_stack([box, (f - self.f_mean_) / self.f_scale_])

    def fit(self, X, y):
        import gpytorch

        if self.kind not in ("ar1", "nargp"):
            raise ValueError(f"kind must be 'ar1' or 'nargp', got {self.kind!r}")
        X, y = validate_data(self, X, y, y_numeric=True)
        f = base_predictions(self.base, X, X)
        self.lo_, self.span_ = unit_box(X, self.bounds)
        self.f_mean_, self.f_scale_ = float(f.mean()), float(f.std()) or 1.0
        self.rho_ = self.c_ = 0.0
        if self.kind == "ar1":
            (self.rho_, self.c_), *_ = np.linalg.lstsq(
                np.column_stack([f, np.ones_like(f)]), y, rcond=None)
        residual = y - (self.rho_ * f + self.c_)
        self.y_mean_, self.y_scale_ = float(residual.mean()), float(residual.std()) or 1.0
        inputs = torch.as_tensor(self._inputs(X, f), dtype=torch.float32)
        target = torch.as_tensor((residual - self.y_mean_) / self.y_scale_,
                                 dtype=torch.float32)
        generator = torch.Generator().manual_seed(
            int(np.random.default_rng(self.random_state).integers(2**31 - 1)))
        start = torch.randperm(len(inputs), generator=generator)[:self.n_inducing]
        # GPyTorch draws from the global generator (the variational distribution's
        # initial jitter at the first forward): seed it, and leave the caller's alone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            model = _model(inputs[start].clone())
            likelihood = gpytorch.likelihoods.GaussianLikelihood()
            self._train(model, likelihood, inputs, target, generator)
        model.eval()
        likelihood.eval()
        self.model_, self.likelihood_ = model, likelihood
        self.n_trainable_params_ = (sum(p.numel() for p in model.parameters())
                                    + sum(p.numel() for p in likelihood.parameters())
                                    + 2 * (self.kind == "ar1"))
        return self

    def _train(self, model, likelihood, inputs, target, generator):
        import gpytorch

        model.train()
        likelihood.train()
        optimizer = torch.optim.Adam([*model.parameters(), *likelihood.parameters()],
                                     lr=self.lr)
        elbo = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=len(inputs))
        batch = min(self.batch_size, len(inputs))
        model(inputs[:batch])  # GPyTorch initialises the variational distribution here
        order, cursor = torch.randperm(len(inputs), generator=generator), 0
        for _ in range(self.n_steps):
            if cursor + batch > len(inputs):
                order, cursor = torch.randperm(len(inputs), generator=generator), 0
            rows = order[cursor:cursor + batch]
            cursor += batch
            optimizer.zero_grad()
            loss = -elbo(model(inputs[rows]), target[rows])
            loss.backward()
            optimizer.step()

    def predict(self, X, return_std=False):

        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False)
        f = base_predictions(self.base, X, X)
        inputs = torch.as_tensor(self._inputs(X, f), dtype=torch.float32)
        means, variances = [], []
        with torch.no_grad():
            for chunk in torch.split(inputs, 4096):
                out = self.likelihood_(self.model_(chunk))
                means.append(out.mean)
                variances.append(out.variance)
        mean = torch.cat(means).double().numpy() * self.y_scale_ + self.y_mean_
        mean = mean + self.rho_ * f + self.c_
        if not return_std:
            return mean
        return mean, torch.cat(variances).double().sqrt().numpy() * self.y_scale_

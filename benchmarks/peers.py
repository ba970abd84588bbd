"""Classical multi-fidelity peers: what a user with a source model and a few noisy target
rows has done for twenty years.

- ``gp-ar1``: the Kennedy–O'Hagan (2000) autoregressive model ``y = ρ f(x) + c + δ(x)``, with
  the pretrained base as ``f``, ``ρ, c`` by least squares on the target rows and ``δ``
  a GP with one length scale per input.
- ``gp-nargp``: the non-linear autoregressive GP (Perdikaris et al. 2017), one GP on
  ``[x, f(x)]`` with one length scale per input and one for ``f(x)``.
- ``mfk``: SMT's recursive multi-fidelity kriging on the raw source rows (low
  fidelity, at most ``MFK_MAX_SOURCE`` of them) and the target rows (``qlsk[mf]``).

Each is a scikit-learn regressor that scales inputs to the task's box (``bounds``) as
the target-only GP does, and counts its fitted hyperparameters in
``n_trainable_params_``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from qlsk.estimators.discrepancy import ard_kernel

PEERS = ("gp-ar1", "gp-nargp", "mfk")
# MFK's cost grows with the cube of all its rows; the source is subsampled to this many.
# 500 source and 50 target rows of borehole (8 inputs) take 13 s on one core.
MFK_MAX_SOURCE = 500
# What SMT prints, with the correlation matrix's eigenvalues, when a Cholesky fails.
_SMT_FAILURE = "exception : "


def _quiet_smt(call):
    """``call()`` with SMT's prints captured; returns its result and the number of
    failed Cholesky decompositions SMT printed (each prints hundreds of eigenvalues;
    the optimiser then moves on from that point)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = call()
    return result, printed.getvalue().count(_SMT_FAILURE)


def ard_gp(n_dims: int, random_state) -> GaussianProcessRegressor:
    """The GP of every GP method here: qlsk's ARD kernel, normalised ``y``, 2 restarts."""
    return GaussianProcessRegressor(ard_kernel(n_dims), normalize_y=True,
                                    n_restarts_optimizer=2, random_state=random_state)


def smt_available() -> bool:
    try:
        import smt.applications  # noqa: F401
    except ImportError:
        return False
    return True


class _BoxGP(RegressorMixin, BaseEstimator):
    """Inputs scaled to the unit box: by ``bounds`` when given, else by the rows of fit."""

    def _fit_box(self, X):
        bounds = (np.column_stack([X.min(0), X.max(0)]) if self.bounds is None
                  else np.asarray(self.bounds, dtype=float))
        if bounds.shape != (X.shape[1], 2):
            raise ValueError(f"bounds must have shape ({X.shape[1]}, 2), got {bounds.shape}")
        self.lo_ = bounds[:, 0]
        span = bounds[:, 1] - bounds[:, 0]
        self.span_ = np.where(span > 0, span, 1.0)

    def _box(self, X):
        return (X - self.lo_) / self.span_


class _BaseGP(_BoxGP):
    """A GP peer that reads the fitted ``base`` network's predictions."""

    def __init__(self, base, bounds=None, random_state=None):
        self.base = base
        self.bounds = bounds
        self.random_state = random_state


class AR1GPRegressor(_BaseGP):
    """``ŷ = ρ f(x) + c + δ(x)``: a calibrated base plus a GP discrepancy.

    Parameters
    ----------
    base : fitted regressor
        The pretrained source model ``f`` (anything with ``predict``).
    bounds : array-like of shape (n_features, 2) or None, default=None
        The input box; ``None``: the range of the training rows.
    random_state : int or None, default=None
        Seeds the GP optimiser's restarts.

    Attributes
    ----------
    rho_, c_ : float
        Least-squares scale and shift of ``f`` on the training rows.
    gp_ : GaussianProcessRegressor
        The discrepancy ``δ``, fitted on ``y − ρ f(x) − c`` over box-scaled inputs.
    n_trainable_params_ : int
        ``ρ``, ``c`` and the kernel's hyperparameters.
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        self._fit_box(X)
        f = np.asarray(self.base.predict(X), dtype=float)
        (self.rho_, self.c_), *_ = np.linalg.lstsq(np.column_stack([f, np.ones_like(f)]), y)
        self.gp_ = ard_gp(X.shape[1], self.random_state).fit(
            self._box(X), y - self.rho_ * f - self.c_)
        self.n_trainable_params_ = 2 + len(self.gp_.kernel_.theta)
        return self

    def predict(self, X, return_std=False):
        """The prediction; with ``return_std``, also the GP's predictive standard
        deviation of a new observation (its white noise included)."""
        check_is_fitted(self, "gp_")
        X = validate_data(self, X, reset=False)
        f = np.asarray(self.base.predict(X), dtype=float)
        delta = self.gp_.predict(self._box(X), return_std=return_std)
        if return_std:
            return self.rho_ * f + self.c_ + delta[0], delta[1]
        return self.rho_ * f + self.c_ + delta


class NARGPRegressor(_BaseGP):
    """``ŷ = g(x, f(x))``: one GP on the inputs augmented with the base's prediction.

    ``f(x)`` is standardised by its mean and standard deviation on the training rows
    and gets its own length scale, so the GP can learn a non-linear,
    input-dependent relation between the base and the target.

    Parameters
    ----------
    base : fitted regressor
        The pretrained source model ``f``.
    bounds : array-like of shape (n_features, 2) or None, default=None
        The input box; ``None``: the range of the training rows.
    random_state : int or None, default=None
        Seeds the GP optimiser's restarts.

    Attributes
    ----------
    gp_ : GaussianProcessRegressor
        Fitted on ``[box(x), (f(x) − f_mean_) / f_scale_]``.
    f_mean_, f_scale_ : float
        Standardisation of ``f`` on the training rows.
    n_trainable_params_ : int
        The kernel's hyperparameters.
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        self._fit_box(X)
        f = np.asarray(self.base.predict(X), dtype=float)
        self.f_mean_ = f.mean()
        self.f_scale_ = f.std() if f.std() > 0 else 1.0
        self.gp_ = ard_gp(X.shape[1] + 1, self.random_state).fit(self._augment(X, f), y)
        self.n_trainable_params_ = len(self.gp_.kernel_.theta)
        return self

    def _augment(self, X, f):
        return np.column_stack([self._box(X), (f - self.f_mean_) / self.f_scale_])

    def predict(self, X, return_std=False):
        """The prediction; with ``return_std``, also its standard deviation (as AR1's)."""
        check_is_fitted(self, "gp_")
        X = validate_data(self, X, reset=False)
        return self.gp_.predict(self._augment(X, np.asarray(self.base.predict(X), float)),
                                return_std=return_std)


class MFKRegressor(_BoxGP):
    """SMT's multi-fidelity kriging: source rows as low fidelity, target rows as high.

    Parameters
    ----------
    X_low, y_low : array-like
        The low-fidelity (source) rows; at most ``max_low`` of them are used, drawn
        at random.
    bounds : array-like of shape (n_features, 2) or None, default=None
        The input box; ``None``: the range of the target and kept source rows.
    max_low : int, default=MFK_MAX_SOURCE
        Cap on the source rows (the fit costs the cube of all rows).
    n_start : int, default=3
        Starts of SMT's hyperparameter optimiser per level: 3, like the other GPs'
        1 + 2 restarts (SMT's default 10 took 2x longer for 5% lower error on
        borehole-lf-to-hf at n = 50).
    random_state : int or None, default=None
        Seeds the subsample and SMT's optimiser starts.

    Attributes
    ----------
    model_ : smt.applications.MFK
        The trained model (``theta0 = 1e-2`` per input, noise estimated).
    n_low_ : int
        Source rows used.
    n_trainable_params_ : int
        Length scales and noise levels of both levels plus the scale ``ρ``.
    n_cholesky_failures_ : int
        Correlation matrices SMT failed to factorise while fitting (it prints each
        one's eigenvalues; they are captured here and only counted).
    """

    def __init__(self, X_low, y_low, bounds=None, max_low=MFK_MAX_SOURCE, n_start=3,
                 random_state=None):
        self.X_low = X_low
        self.y_low = y_low
        self.bounds = bounds
        self.max_low = max_low
        self.n_start = n_start
        self.random_state = random_state

    def fit(self, X, y):
        from smt.applications import MFK

        X, y = validate_data(self, X, y, y_numeric=True)
        X_low, y_low = np.asarray(self.X_low, dtype=float), np.asarray(self.y_low, dtype=float)
        rng = check_random_state(self.random_state)
        keep = rng.permutation(len(X_low))[:self.max_low]
        X_low, y_low = X_low[keep], y_low[keep]
        self.n_low_ = len(X_low)
        self._fit_box(np.vstack([X_low, X]) if self.bounds is None else X)
        # Cobyla is what SMT switches to (with a warning) when it estimates noise.
        model = MFK(theta0=[1e-2] * X.shape[1], print_global=False, eval_noise=True,
                    hyper_opt="Cobyla", n_start=self.n_start,
                    seed=int(rng.randint(2**31 - 1)))
        model.set_training_values(self._box(X_low), y_low[:, None], name=0)
        model.set_training_values(self._box(X), y[:, None])
        _, self.n_cholesky_failures_ = _quiet_smt(model.train)
        self.model_ = model
        levels = len(model.optimal_theta)
        self.n_trainable_params_ = (sum(np.size(t) for t in model.optimal_theta)
                                    + levels + levels - 1)
        return self

    def predict(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False)
        pred, _ = _quiet_smt(lambda: self.model_.predict_values(self._box(X)))
        return pred.ravel()


def make_peer(method: str, base, task, seed: int):
    """The peer ``method`` for a task's data (a ``load_task`` Bunch) and pretrained base."""
    if method == "gp-ar1":
        return AR1GPRegressor(base, bounds=task.bounds, random_state=seed)
    if method == "gp-nargp":
        return NARGPRegressor(base, bounds=task.bounds, random_state=seed)
    if method == "mfk":
        return MFKRegressor(task.X_source, task.y_source, bounds=task.bounds,
                            random_state=seed)
    raise ValueError(f"unknown peer {method!r}; choose from {PEERS}")

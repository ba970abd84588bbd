"""Classical multi-fidelity peers: what a user with a source model and a few noisy target
rows has done for twenty years.

- ``gp-ar1``, ``gp-nargp``, ``gp-auto``: :class:`qlsk.MultiFidelityGPRegressor` with
  ``kind="ar1"`` (the Kennedy–O'Hagan autoregressive model ``y = ρ f(x) + c + δ(x)``),
  ``"nargp"`` (Perdikaris et al.'s GP on ``[x, f(x)]``) or ``"auto"`` (both, weighted),
  on the task's input box.
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

from qlsk import MultiFidelityGPRegressor
from qlsk.estimators.discrepancy import ard_kernel
from qlsk.estimators.multifidelity import KINDS, unit_box

PEERS = ("gp-ar1", "gp-nargp", "gp-auto", "mfk")
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
        self.lo_, self.span_ = unit_box(X, self.bounds)

    def _box(self, X):
        return (X - self.lo_) / self.span_


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
    if method.startswith("gp-") and method[3:] in (*KINDS, "auto"):
        return MultiFidelityGPRegressor(base, kind=method[3:], bounds=task.bounds,
                                        random_state=seed)
    if method == "mfk":
        return MFKRegressor(task.X_source, task.y_source, bounds=task.bounds,
                            random_state=seed)
    raise ValueError(f"unknown peer {method!r}; choose from {PEERS}")

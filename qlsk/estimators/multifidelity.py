"""Multi-fidelity Gaussian processes that reuse a pretrained base: AR1, NARGP and both.

The two classical ways to transfer a source model ``f`` to a target from a few noisy
rows, as one scikit-learn regressor:

- ``"ar1"``: the Kennedy–O'Hagan autoregressive model ``y = ρ f(x) + c + δ(x)``, with
  ``ρ, c`` by least squares and ``δ`` a GP with one length scale per input;
- ``"nargp"``: the non-linear autoregressive GP of Perdikaris et al. (2017), one GP on
  ``[x, f(x)]`` with one length scale per input and one for ``f(x)``;
- ``"auto"``: both, combined by weights that the training rows choose (closed-form
  leave-one-out predictive densities; see :func:`combine`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
from scipy.linalg import cho_solve
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .bases import SharesFitted, base_predictions, check_feature_names, loaded
from .discrepancy import ard_kernel
from .registry import storable

KINDS = ("ar1", "nargp")
RULES = ("stacking", "evidence", "loo", "equal")
MIN_ROWS = 3  # a GP with a noise level, and AR1's scale and shift, need a few rows


@dataclass
class KindFit:
    """One fitted kind: its GP, the inputs it reads, and its scores on the training rows.

    Attributes
    ----------
    gp : GaussianProcessRegressor
        Fitted on ``inputs`` (box-scaled ``x``; for NARGP with the standardised
        ``f(x)`` as a last column) against ``y − offset``.
    rho, c : float
        AR1's scale and shift of ``f`` (0 for NARGP).
    loo_mean, loo_std : ndarray of shape (n_samples,)
        The closed-form leave-one-out predictive mean and standard deviation of each
        training row (the kernel's hyperparameters held at their fitted values, and
        AR1's ``ρ, c`` too).
    log_marginal_likelihood : float
        Of the training targets, in their own units.
    """

    gp: GaussianProcessRegressor
    rho: float
    c: float
    loo_mean: np.ndarray
    loo_std: np.ndarray
    log_marginal_likelihood: float


def combine(loo_means, loo_stds, y, log_marginal_likelihoods, rule="stacking"):
    """Weights of the kinds, from their leave-one-out predictions of the training rows.

    Parameters
    ----------
    loo_means, loo_stds : array-like of shape (n_kinds, n_samples)
        Each kind's leave-one-out predictive mean and standard deviation.
    y : array-like of shape (n_samples,)
        The training targets.
    log_marginal_likelihoods : array-like of shape (n_kinds,)
        Each kind's log marginal likelihood of ``y``.
    rule : {"stacking", "evidence", "loo", "equal"}, default="stacking"
        - ``"stacking"``: the convex weights that maximise the leave-one-out log
          density of the mixture (Yao et al. 2018, stacking of predictive
          distributions), by EM;
        - ``"evidence"``: Bayesian model averaging, weights ∝ marginal likelihood
          (nearly always one kind);
        - ``"loo"``: all weight on the kind with the smaller leave-one-out RMSE;
        - ``"equal"``: the plain average.

    Returns
    -------
    ndarray of shape (n_kinds,)
        Non-negative weights summing to 1.
    """
    means, stds = np.atleast_2d(loo_means), np.atleast_2d(loo_stds)
    y, lml = np.asarray(y, dtype=float), np.asarray(log_marginal_likelihoods, dtype=float)
    k = len(means)
    if rule == "equal":
        return np.full(k, 1 / k)
    if rule == "evidence":
        w = np.exp(lml - lml.max())
        return w / w.sum()
    if rule == "loo":
        w = np.zeros(k)
        w[np.argmin(np.sqrt(np.mean((means - y) ** 2, axis=1)))] = 1.0
        return w
    if rule != "stacking":
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    log_p = (-0.5 * ((y - means) / stds) ** 2 - np.log(stds) - 0.5 * np.log(2 * np.pi))
    log_p -= log_p.max(axis=0)  # per row: the responsibilities do not change
    p = np.exp(log_p)
    w = np.full(k, 1 / k)
    for _ in range(500):  # EM on the mixture weights: a concave problem, so it converges
        mix = w @ p
        new = w * (p / mix).mean(axis=1)
        done = np.abs(new - w).max() < 1e-8
        w = new / new.sum()
        if done:
            break
    return w


class MultiFidelityGPRegressor(SharesFitted, RegressorMixin, BaseEstimator):
    """A Gaussian process that reuses a pretrained base: AR1, NARGP, or both weighted.

    The classical multi-fidelity answer to qlsk's task (a source model ``f`` and a few
    noisy target rows), with the same ``base`` handling as the adapters. On the
    project's transfer benchmarks they are, below a few hundred target rows, the most
    accurate single method qlsk offers; :class:`~qlsk.TransferRegressor` stacks them
    with the adapters, which did better still at n = 50 (``docs/benchmarks.md``).

    - ``kind="ar1"`` (Kennedy & O'Hagan 2000): ``ŷ = ρ f(x) + c + δ(x)``, with ``ρ, c``
      by least squares on the training rows and ``δ`` a GP on the residuals. Best when
      the target is the source rescaled plus a smooth discrepancy.
    - ``kind="nargp"`` (Perdikaris et al. 2017): ``ŷ = g(x, f(x))``, one GP on the
      inputs and the standardised base prediction, which learns a non-linear,
      input-dependent relation between base and target.
    - ``kind="auto"``: fits both and predicts with their mixture, weighted by
      ``auto_weights`` from each kind's closed-form leave-one-out predictions of the
      training rows (no refit, so it costs the two fits).

    Every GP is scikit-learn's ``GaussianProcessRegressor`` with
    :func:`~qlsk.estimators.discrepancy.ard_kernel` (an amplitude, one length scale
    per input, a white-noise level) on inputs scaled to the unit box, normalised
    targets, and its hyperparameters by maximum marginal likelihood. A fit costs
    ``O(n³)`` time and ``O(n²)`` memory in the rows: a few thousand rows at most.

    Parameters
    ----------
    base : fitted regressor, FrozenEstimator, torch.nn.Module, path or None, default=None
        The source model ``f``: any fitted regressor with ``predict`` (a
        :class:`qlsk.MLPRegressor`, an adapted qlsk estimator, a scikit-learn model),
        possibly in a ``FrozenEstimator``; a torch module mapping raw inputs to one
        output; or the path of a model saved by :func:`qlsk.save`. It is never
        refitted, and ``clone`` shares it. ``None``: no source, so both kinds are a
        GP on the target rows alone.
    kind : {"auto", "ar1", "nargp"}, default="auto"
        Which model; see above.
    auto_weights : {"stacking", "evidence", "loo", "equal"}, default="stacking"
        How ``kind="auto"`` weights the two (see :func:`combine`); ignored otherwise.
    bounds : array-like of shape (n_features, 2) or None, default=None
        The input box the kernels' length scales are relative to; ``None``: the
        range of the training rows.
    max_rows : int or None, default=None
        Fit the GPs on a random subset of at most this many training rows (the
        classic subset-of-data approximation: the cost stays that of ``max_rows``
        rows, about 30 s per kind at 1,000 rows on one core); ``None``: every row.
        Above a few thousand rows the exact GP is out of reach, and the adapters,
        which use every row, were the more accurate from 3,000 rows on
        (``docs/benchmarks.md``, "As the target rows grow").
    n_restarts_optimizer : int, default=2
        Extra starts of each GP's marginal-likelihood optimiser.
    random_state : int, RandomState or None, default=None
        Seeds the optimisers' restarts and the subset; the same value gives the same
        predictions.

    Attributes
    ----------
    fits_ : dict of str to KindFit
        Each fitted kind: its GP, ``ρ, c``, its leave-one-out predictions and its log
        marginal likelihood.
    weights_ : dict of str to float
        The weight of each fitted kind in the prediction (1 for a fixed kind).
    kind_ : str
        The kind with the largest weight.
    scores_ : dict of str to dict
        Per kind: ``log_marginal_likelihood``, ``loo_rmse`` and ``loo_log_density``
        (mean per row) on the training rows, and its ``weight``: why ``auto`` chose.
    rho_, c_ : float
        AR1's least-squares scale and shift (when AR1 was fitted).
    f_mean_, f_scale_ : float
        Standardisation of the base's predictions on the training rows.
    base_ : object
        The source model used (a path ``base`` loaded).
    n_trainable_params_ : int
        Hyperparameters fitted: the kernels', and AR1's ``ρ, c``.
    n_rows_fitted_ : int
        Training rows the GPs condition on (fewer than given with ``max_rows``).
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.

    Examples
    --------
    >>> from qlsk import MLPRegressor, MultiFidelityGPRegressor
    >>> from qlsk.simlib import load_task
    >>> task = load_task("park91a-lf-to-hf", n_source=200, n_train=30, random_state=0)
    >>> base = MLPRegressor(max_epochs=5, random_state=0).fit(task.X_source, task.y_source)
    >>> gp = MultiFidelityGPRegressor(base=base, random_state=0)
    >>> mean, std = gp.fit(task.X_train, task.y_train).predict(task.X_test[:2],
    ...                                                          return_std=True)
    >>> mean.shape, std.shape, sorted(gp.weights_)
    ((2,), (2,), ['ar1', 'nargp'])
    """

    _parameter_constraints = {
        "base": "no_validation",  # checked by _base_predictions
        "kind": [StrOptions({"auto", *KINDS})],
        "auto_weights": [StrOptions(set(RULES))],
        "bounds": ["array-like", None],
        "max_rows": [Interval(Integral, MIN_ROWS, None, closed="left"), None],
        "n_restarts_optimizer": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, base=None, *, kind="auto", auto_weights="stacking", bounds=None,
                 max_rows=None, n_restarts_optimizer=2, random_state=None):
        self.base = base
        self.kind = kind
        self.auto_weights = auto_weights
        self.bounds = bounds
        self.max_rows = max_rows
        self.n_restarts_optimizer = n_restarts_optimizer
        self.random_state = random_state

    def fit(self, X, y):
        """Fit the kind(s) by maximum marginal likelihood, and weigh them.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Target inputs; a DataFrame's columns are checked against the base's.
        y : array-like of shape (n_samples,)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For NaN or infinite values, strings, fewer than 3 rows, a ``bounds`` of
            the wrong shape, columns that differ from the base's, or a base whose
            predictions are not finite or do not fit (one value per row).
        """
        self._validate_params()
        for name in ("rho_", "c_"):  # AR1's, from an earlier fit of another kind
            self.__dict__.pop(name, None)
        given = X
        X, y = validate_data(self, X, y, y_numeric=True)
        if len(X) < MIN_ROWS:
            raise ValueError(f"MultiFidelityGPRegressor needs at least {MIN_ROWS} rows, got "
                             f"n_samples={len(X)}")
        self.base_ = loaded(self.base)
        if self.base_ is not None:
            check_feature_names(getattr(self, "feature_names_in_", None), self.base_)
        f = self._base_predictions(given, X)
        if self.base_ is not None and np.ptp(f) == 0:
            warnings.warn("the base's predictions are the same on every training row, so "
                          "it tells the GP nothing: both kinds model the target alone",
                          UserWarning, stacklevel=2)
        # one seed for every kind's restarts, so that "auto" holds exactly the GPs the
        # fixed kinds fit (and for the subset of max_rows)
        seed = (self.random_state if isinstance(self.random_state, Integral)
                else check_random_state(self.random_state).randint(2**31 - 1))
        if self.max_rows is not None and len(X) > self.max_rows:
            keep = np.random.default_rng(seed).permutation(len(X))[:self.max_rows]
            X, y, f = X[keep], y[keep], f[keep]
        self.n_rows_fitted_ = len(X)
        self.lo_, self.span_ = unit_box(X, self.bounds)
        self.f_mean_ = float(f.mean())
        self.f_scale_ = float(f.std()) if f.std() > 0 else 1.0
        kinds = KINDS if self.kind == "auto" else (self.kind,)
        self.fits_ = {kind: self._fit_kind(kind, X, f, y, seed) for kind in kinds}
        fits = list(self.fits_.values())
        weights = (combine([k.loo_mean for k in fits], [k.loo_std for k in fits], y,
                           [k.log_marginal_likelihood for k in fits], self.auto_weights)
                   if len(fits) > 1 else np.ones(1))
        self.weights_ = {kind: float(w) for kind, w in zip(self.fits_, weights)}
        self.kind_ = max(self.weights_, key=self.weights_.get)
        self.scores_ = {kind: {**_scores(fit, y), "weight": self.weights_[kind]}
                        for kind, fit in self.fits_.items()}
        if "ar1" in self.fits_:
            self.rho_, self.c_ = self.fits_["ar1"].rho, self.fits_["ar1"].c
        self.n_trainable_params_ = sum(len(fit.gp.kernel_.theta) + 2 * (kind == "ar1")
                                       for kind, fit in self.fits_.items())
        return self

    def _fit_kind(self, kind, X, f, y, seed) -> KindFit:
        inputs = self._inputs(kind, X, f)
        rho = c = 0.0
        if kind == "ar1":
            (rho, c), *_ = np.linalg.lstsq(np.column_stack([f, np.ones_like(f)]), y,
                                           rcond=None)
        offset = rho * f + c
        gp = GaussianProcessRegressor(ard_kernel(inputs.shape[1]), normalize_y=True,
                                      n_restarts_optimizer=self.n_restarts_optimizer,
                                      random_state=int(seed)).fit(inputs, y - offset)
        loo_mean, loo_std = _leave_one_out(gp)
        std = gp._y_train_std  # sklearn's LML is of the normalised targets
        lml = float(gp.log_marginal_likelihood_value_ - len(y) * np.log(std))
        return KindFit(gp, float(rho), float(c), loo_mean + offset, loo_std, lml)

    def _inputs(self, kind, X, f):
        box = (X - self.lo_) / self.span_
        if kind == "ar1":
            return box
        return np.column_stack([box, (f - self.f_mean_) / self.f_scale_])

    def _base_predictions(self, given, X) -> np.ndarray:
        return base_predictions(self.base_, given, X)

    def predict(self, X, return_std=False):
        """Predict with the fitted kind, or the weighted mixture of both.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the predictive standard deviation of a new observation
            (the GP's white noise included; for ``"auto"``, of the mixture).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        y_std : ndarray of shape (n_samples,)
            Only with ``return_std=True``.
        """
        check_is_fitted(self, "fits_")
        given = X
        X = validate_data(self, X, reset=False)
        f = self._base_predictions(given, X)
        if len(self.fits_) == 1:
            (kind, fit), = self.fits_.items()
            return self._predict_kind(kind, fit, X, f, return_std)
        weighed = [(self.weights_[kind], self._predict_kind(kind, fit, X, f, True))
                   for kind, fit in self.fits_.items() if self.weights_[kind] > 0]
        mean, std = gaussian_mixture(*zip(*weighed))
        return (mean, std) if return_std else mean

    def _predict_kind(self, kind, fit, X, f, return_std):
        offset = fit.rho * f + fit.c
        if not return_std:
            return fit.gp.predict(self._inputs(kind, X, f)) + offset
        mean, std = fit.gp.predict(self._inputs(kind, X, f), return_std=True)
        return mean + offset, std


def unit_box(X, bounds=None) -> tuple[np.ndarray, np.ndarray]:
    """The corner and the side lengths of the box ``(X − lo) / span`` maps to the unit
    cube: ``bounds`` (shape (n_features, 2)) or, when ``None``, the range of ``X``'s
    rows; a side of length 0 counts as 1."""
    bounds = (np.column_stack([X.min(0), X.max(0)]) if bounds is None
              else np.asarray(bounds, dtype=float))
    if bounds.shape != (X.shape[1], 2):
        raise ValueError(f"bounds must have shape ({X.shape[1]}, 2), got {bounds.shape}")
    span = bounds[:, 1] - bounds[:, 0]
    return bounds[:, 0], np.where(span > 0, span, 1.0)


def gaussian_mixture(weights, predictions) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the mixture ``Σ w_k N(mean_k, std_k²)``.

    Parameters
    ----------
    weights : sequence of float
        Non-negative, summing to 1.
    predictions : sequence of (mean, std) pairs of arrays of one shape
    """
    mean = sum(w * m for w, (m, _) in zip(weights, predictions))
    second = sum(w * (s ** 2 + m ** 2) for w, (m, s) in zip(weights, predictions))
    return mean, np.sqrt(np.maximum(second - mean ** 2, 0.0))


def _leave_one_out(gp: GaussianProcessRegressor) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form leave-one-out predictive mean and standard deviation of each training
    row of a fitted GP (Rasmussen & Williams 2006, eq. 5.12), in the targets' units."""
    k_inv = cho_solve((gp.L_, True), np.eye(len(gp.L_)))
    diag = np.diag(k_inv)
    alpha = gp.alpha_.ravel()
    mean = gp.y_train_.ravel() - alpha / diag
    scale, shift = gp._y_train_std, gp._y_train_mean
    return mean * scale + shift, np.sqrt(1 / diag) * scale


def _scores(fit: KindFit, y) -> dict:
    z = (y - fit.loo_mean) / fit.loo_std
    log_density = -0.5 * z ** 2 - np.log(fit.loo_std) - 0.5 * np.log(2 * np.pi)
    return {"log_marginal_likelihood": fit.log_marginal_likelihood,
            "loo_rmse": float(np.sqrt(np.mean((y - fit.loo_mean) ** 2))),
            "loo_log_density": float(log_density.mean())}


def dump_fitted(estimator: MultiFidelityGPRegressor) -> tuple[dict, dict]:
    """A fitted estimator's state as JSON-able values and float64 tensors (for
    :func:`qlsk.save`): each GP is kept as its fitted hyperparameters and the rows it
    conditions on, which :func:`restore_fitted` factorises again without optimising."""
    check_is_fitted(estimator, "fits_")
    meta = {"lo_": estimator.lo_.tolist(), "span_": estimator.span_.tolist(),
            "f_mean_": estimator.f_mean_, "f_scale_": estimator.f_scale_,
            "weights_": estimator.weights_, "scores_": estimator.scores_,
            "n_trainable_params_": int(estimator.n_trainable_params_),
            "n_rows_fitted_": int(estimator.n_rows_fitted_), "kinds": {}}
    tensors = {}
    for kind, fit in estimator.fits_.items():
        meta["kinds"][kind] = {"rho": fit.rho, "c": fit.c,
                               "theta": fit.gp.kernel_.theta.tolist(),
                               "log_marginal_likelihood": fit.log_marginal_likelihood}
        targets = fit.gp.y_train_ * fit.gp._y_train_std + fit.gp._y_train_mean
        for name, value in (("inputs", fit.gp.X_train_), ("targets", targets),
                            ("loo_mean", fit.loo_mean), ("loo_std", fit.loo_std)):
            tensors[f"{kind}/{name}"] = torch.as_tensor(np.asarray(value, dtype=float))
    return meta, tensors


def restore_fitted(estimator: MultiFidelityGPRegressor, meta: dict, tensors: dict,
                   device: str = "cpu") -> None:
    """Set the fitted state :func:`dump_fitted` wrote on an unfitted ``estimator``
    (``device`` is not used: the GPs are numpy)."""
    kinds = meta["kinds"]
    if not kinds or set(kinds) - set(KINDS):
        raise ValueError(f"the saved GP kinds {sorted(kinds)} are not among {KINDS}")
    estimator.fits_ = {}
    for kind, state in kinds.items():
        inputs, targets = (tensors[f"{kind}/{name}"].numpy() for name in ("inputs", "targets"))
        kernel = ard_kernel(inputs.shape[1]).clone_with_theta(np.asarray(state["theta"]))
        gp = GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None).fit(
            inputs, targets)
        estimator.fits_[kind] = KindFit(gp, state["rho"], state["c"],
                                        tensors[f"{kind}/loo_mean"].numpy(),
                                        tensors[f"{kind}/loo_std"].numpy(),
                                        state["log_marginal_likelihood"])
    estimator.lo_, estimator.span_ = np.asarray(meta["lo_"]), np.asarray(meta["span_"])
    estimator.f_mean_, estimator.f_scale_ = meta["f_mean_"], meta["f_scale_"]
    estimator.weights_, estimator.scores_ = meta["weights_"], meta["scores_"]
    estimator.kind_ = max(estimator.weights_, key=estimator.weights_.get)
    if "ar1" in estimator.fits_:
        estimator.rho_, estimator.c_ = estimator.fits_["ar1"].rho, estimator.fits_["ar1"].c
    estimator.n_trainable_params_ = meta["n_trainable_params_"]
    # files saved before max_rows existed: every row was fitted
    estimator.n_rows_fitted_ = meta.get("n_rows_fitted_", len(next(iter(
        estimator.fits_.values())).gp.X_train_))


storable(MultiFidelityGPRegressor, dump=dump_fitted, restore=restore_fitted, key="gp")

"""``method="auto"`` for one target: choose, or stack, among the GPs and the adapters by
cross-validation."""

from __future__ import annotations

import time
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold, check_cv
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .bases import SharesFitted
from .discrepancy import _for_estimator
from .multifidelity import MultiFidelityGPRegressor, gaussian_mixture
from .regressors import FineTuneRegressor, LoraRegressor

STRATEGIES = ("select", "stack")


# Above this many rows the default GP candidate conditions on a random subset of them:
# an exact GP costs the cube of its rows (about 30 s per kind at 1,000 rows on one core,
# fitted once per fold), and from 3,000 rows on the adapters were the more accurate.
GP_MAX_ROWS = 1000


def default_candidates() -> dict:
    """What :class:`TransferRegressor` chooses among when ``candidates=None``: the
    multi-fidelity GP (``kind="auto"``, on at most :data:`GP_MAX_ROWS` rows), full
    fine-tuning and LoRA, each otherwise at its defaults (the adapters regularised by
    the evidence)."""
    return {"gp": MultiFidelityGPRegressor(max_rows=GP_MAX_ROWS),
            "finetune": FineTuneRegressor(), "lora": LoraRegressor()}


def stack_weights(predictions, y) -> np.ndarray:
    """Convex weights of the candidates' out-of-fold predictions that minimise the
    squared error of their weighted sum (stacked regression, Breiman 1996).

    Parameters
    ----------
    predictions : array-like of shape (n_candidates, n_samples)
    y : array-like of shape (n_samples,)

    Returns
    -------
    ndarray of shape (n_candidates,)
        Non-negative, summing to 1.
    """
    P, y = np.atleast_2d(np.asarray(predictions, dtype=float)), np.asarray(y, dtype=float)
    k = len(P)
    scale = max(float(np.mean((P - y) ** 2)), 1e-300)

    def loss(w):
        r = w @ P - y
        return float(r @ r) / len(y) / scale, 2 * (P @ r) / len(y) / scale

    start = np.full(k, 1 / k)
    result = minimize(loss, start, jac=True, method="SLSQP", bounds=[(0, 1)] * k,
                      constraints=({"type": "eq", "fun": lambda w: w.sum() - 1,
                                    "jac": lambda w: np.ones(k)},))
    w = np.clip(result.x if result.success else start, 0, None)
    return w / w.sum()


class TransferRegressor(SharesFitted, RegressorMixin, BaseEstimator):
    """One target, one base: pick (or stack) the best of qlsk's methods for these rows.

    Every candidate (by default the multi-fidelity GP, full fine-tuning and LoRA) is
    scored by ``cv``-fold cross-validation on the training rows; ``strategy="stack"``
    then weighs the candidates by the convex combination of their out-of-fold
    predictions with the smallest squared error (:func:`stack_weights`) and refits those
    with a weight, ``"select"`` refits only the one with the smallest out-of-fold RMSE.
    What was chosen and why is in ``chosen_``, ``weights_`` and ``cv_results_``.

    Fitting costs ``cv + 1`` fits of each candidate (the GP's are cheap below a few
    hundred rows; an adapter's under the evidence take seconds).

    Parameters
    ----------
    base : fitted regressor, FrozenEstimator, torch.nn.Module, path or None, default=None
        The pretrained source model, given to every candidate whose own ``base`` is
        ``None``; see :class:`~qlsk.LoraRegressor` and
        :class:`~qlsk.MultiFidelityGPRegressor` for what each accepts. ``clone`` shares
        it.
    candidates : dict of str to estimator, or None, default=None
        The methods to choose among, by name; ``None``: :func:`default_candidates`.
    strategy : {"stack", "select"}, default="stack"
        Predict with the stacked combination, or with the candidate of smallest
        cross-validated RMSE. Stacking was the better of the two on the development
        tasks (6 tasks, 2 seeds, n = 50 and 100: 0.94× selection's error at n = 50,
        0.99× at 100); selection chose worse than always taking the GP at n = 50.
    cv : int or cross-validation splitter, default=5
        Folds of the scoring; an int gives shuffled ``KFold`` seeded by
        ``random_state``. ``cv=3`` fits in 0.6x the time, at 1.05x the error at
        n = 50 and the same error at n = 100 on the development tasks
        (``docs/benchmarks.md``).
    n_jobs : int or None, default=None
        Candidate-and-fold fits run in this many parallel processes (joblib; ``None``:
        one after another in this process, ``-1``: every core). The folds' fits are
        independent and each is seeded, so the choice and the predictions do not depend
        on it beyond floating-point round-off (a process may use another number of
        threads).
    random_state : int, RandomState or None, default=None
        Seeds the folds, and every candidate whose own ``random_state`` is ``None``
        (an int is passed on as it is, so a candidate fits exactly as it would alone
        with that seed).

    Attributes
    ----------
    chosen_ : str
        The candidate with the largest weight (with ``"select"``, the only one).
    weights_ : dict of str to float
        Each candidate's weight in the prediction.
    cv_results_ : dict of str to dict
        Per candidate: ``rmse`` (out-of-fold, on the training rows), ``weight`` and
        ``fit_time_s`` (the mean time of one fold's fit).
    oof_predictions_ : dict of str to ndarray of shape (n_samples,)
        Each candidate's out-of-fold predictions of the training rows.
    estimators_ : dict of str to estimator
        The candidates with a weight, refitted on every row.
    n_trainable_params_ : int
        The sum of theirs (0 for one that does not say).
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.

    Examples
    --------
    >>> from qlsk import MLPRegressor, TransferRegressor
    >>> from qlsk.simlib import load_task
    >>> task = load_task("park91a-lf-to-hf", n_source=200, n_train=30, random_state=0)
    >>> base = MLPRegressor(max_epochs=5, random_state=0).fit(task.X_source, task.y_source)
    >>> auto = TransferRegressor(base=base, cv=2, random_state=0)
    >>> auto.fit(task.X_train, task.y_train).chosen_ in ("gp", "finetune", "lora")
    True
    """

    _parameter_constraints = {
        "base": "no_validation",
        "candidates": [dict, None],
        "strategy": [StrOptions(set(STRATEGIES))],
        "cv": ["cv_object"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    n_jobs = None  # what a model pickled before the parameter existed ran with

    def __init__(self, base=None, *, candidates=None, strategy="stack", cv=5, n_jobs=None,
                 random_state=None):
        self.base = base
        self.candidates = candidates
        self.strategy = strategy
        self.cv = cv
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _candidates(self, seed) -> dict:
        given = default_candidates() if self.candidates is None else self.candidates
        if not given:
            raise ValueError("candidates is empty: give at least one estimator")
        out = {}
        for name, estimator in given.items():
            if not hasattr(estimator, "fit") or not hasattr(estimator, "predict"):
                raise TypeError(f"candidate {name!r} is not an estimator (fit and predict)")
            estimator = clone(estimator)
            params = estimator.get_params(deep=False)
            if params.get("base", ...) is None and self.base is not None:
                estimator.set_params(base=self.base)
            if params.get("random_state", ...) is None:
                estimator.set_params(random_state=seed)
            out[name] = estimator
        return out

    def fit(self, X, y):
        """Score every candidate by cross-validation, weigh them, refit those weighed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A DataFrame reaches the candidates as given, so they check its columns.
        y : array-like of shape (n_samples,)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For NaN, strings or empty data, too few rows for the folds (the message
            names ``n_samples``), or an empty ``candidates``; a candidate's own error
            (e.g. too few rows in a fold for it) is raised with its name.
        """
        self._validate_params()
        given = X
        X, y = validate_data(self, X, y, y_numeric=True)
        X_in = _for_estimator(given, X)
        rng = check_random_state(self.random_state)
        seed = (self.random_state if isinstance(self.random_state, Integral)
                else int(rng.randint(2**31 - 1)))
        splitter = (KFold(self.cv, shuffle=True, random_state=seed)
                    if isinstance(self.cv, Integral) else check_cv(self.cv))
        n_folds = splitter.get_n_splits(X, y)
        if len(X) < 2 * n_folds:
            raise ValueError(f"TransferRegressor with {n_folds} folds needs at least "
                             f"{2 * n_folds} rows, got n_samples={len(X)}; use fewer folds "
                             "(cv) or fit one method directly")
        folds = list(splitter.split(X, y))
        candidates = self._candidates(seed)
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fold)(name, estimator, X_in, y, train, test)
            for name, estimator in candidates.items() for train, test in folds)
        self.oof_predictions_, self.cv_results_ = {}, {}
        for c, name in enumerate(candidates):
            oof, times = np.full(len(y), np.nan), []
            for (_, test), (seconds, predicted) in zip(
                    folds, fitted[c * len(folds):(c + 1) * len(folds)]):
                times.append(seconds)
                oof[test] = predicted
            if np.isnan(oof).any():
                raise ValueError("cv must put every row in exactly one test fold")
            self.oof_predictions_[name] = oof
            self.cv_results_[name] = {"rmse": float(np.sqrt(np.mean((oof - y) ** 2))),
                                      "fit_time_s": float(np.mean(times))}
        names = list(candidates)
        if self.strategy == "stack":
            weights = stack_weights([self.oof_predictions_[n] for n in names], y)
        else:
            weights = np.zeros(len(names))
            weights[np.argmin([self.cv_results_[n]["rmse"] for n in names])] = 1.0
        self.weights_ = {n: float(w) for n, w in zip(names, weights)}
        for name in names:
            self.cv_results_[name]["weight"] = self.weights_[name]
        self.chosen_ = max(self.weights_, key=self.weights_.get)
        self.estimators_ = {n: candidates[n].fit(X_in, y) for n in names
                            if self.weights_[n] > 0}
        self.n_trainable_params_ = sum(int(getattr(m, "n_trainable_params_", 0))
                                       for m in self.estimators_.values())
        return self

    def predict(self, X, return_std=False):
        """Predict with the chosen candidate, or the stacked combination.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return a predictive standard deviation: the chosen candidate's (with
            ``"stack"``, that of the weighted mixture of the candidates' Gaussians).
            Every weighed candidate must support it.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        y_std : ndarray of shape (n_samples,)
            Only with ``return_std=True``.

        Raises
        ------
        ValueError
            With ``return_std=True``, when a weighed candidate gives no standard
            deviation (the message names it).
        """
        check_is_fitted(self, "estimators_")
        given = X
        X = validate_data(self, X, reset=False)
        X_in = _for_estimator(given, X)
        if len(self.estimators_) == 1:
            (name, model), = self.estimators_.items()
            return _one(name, model, X_in, return_std)
        if not return_std:
            return sum(self.weights_[n] * _one(n, m, X_in, False)
                       for n, m in self.estimators_.items())
        return gaussian_mixture([self.weights_[n] for n in self.estimators_],
                                [_one(n, m, X_in, True) for n, m in self.estimators_.items()])


def _fold(name, estimator, X, y, train, test) -> tuple[float, np.ndarray]:
    """One candidate fitted on one fold: the fit's seconds and its test predictions."""
    t0 = time.perf_counter()
    try:
        model = clone(estimator).fit(_safe_indexing(X, train), y[train])
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"candidate {name!r} failed on a fold: {exc}") from exc
    return time.perf_counter() - t0, np.ravel(model.predict(_safe_indexing(X, test)))


def _one(name, model, X, return_std):
    """One candidate's prediction (and standard deviation), raveled."""
    if not return_std:
        return np.ravel(model.predict(X))
    try:
        mean, std = model.predict(X, return_std=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"candidate {name!r} ({type(model).__name__}) gives no standard "
                         f"deviation ({exc}); predict without return_std, or leave it out "
                         "of candidates") from None
    return np.ravel(mean), np.ravel(std)

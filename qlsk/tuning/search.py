"""Optuna searches over the estimators' hyperparameters, on one machine or many."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RetryHeartbeatStaleTrialCallback
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import KFold, check_cv

from ..estimators import (
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
)

LR = FloatDistribution(1e-4, 1e-2, log=True)


def default_search_space(estimator) -> dict[str, BaseDistribution]:
    """The search space :func:`tune` uses when none is given.

    ``QueryableLoraRegressor``: ``rank``, ``n_atoms``, ``top_k``, ``lr`` and, when a
    ``task_description`` is set, ``prior_strength``. ``LoraRegressor``: ``rank`` and
    ``lr``. ``FineTuneRegressor`` and ``MLPRegressor``: ``lr`` and ``weight_decay``.
    """
    if isinstance(estimator, QueryableLoraRegressor):
        space = {"rank": IntDistribution(2, 16, log=True),
                 "n_atoms": IntDistribution(2, 32, log=True),
                 "top_k": IntDistribution(1, 4), "lr": LR}
        if estimator.task_description is not None:
            space["prior_strength"] = FloatDistribution(0.0, 4.0)
        return space
    if isinstance(estimator, LoraRegressor):
        return {"rank": IntDistribution(1, 16, log=True), "lr": LR}
    if isinstance(estimator, FineTuneRegressor | MLPRegressor):
        return {"lr": LR, "weight_decay": FloatDistribution(1e-6, 1e-1, log=True)}
    raise TypeError(f"no default search space for {type(estimator).__name__}; pass "
                    "search_space")


def make_storage(storage, heartbeat_interval: int = 60, grace_period: int | None = None):
    """Turn ``None``, a file path or a database URL into an Optuna storage.

    ``None``: in memory (one process). A path: Optuna's journal file storage, shared by
    processes on one machine. ``postgresql://...`` (or another SQLAlchemy URL): Optuna's
    RDB storage for workers on many machines, with heartbeats so that the trial of a
    killed worker is marked failed and retried.
    """
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    storage = os.fspath(storage)
    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        directory = os.path.dirname(os.path.abspath(storage))
        if not os.path.isdir(directory):
            raise ValueError(f"storage directory {directory} does not exist")
        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    scheme = storage.split("://", 1)[0]
    if not scheme.startswith(("postgresql", "mysql", "sqlite")):
        raise ValueError(f"unsupported storage URL scheme {scheme!r}: use a file path or "
                         "postgresql://user@host:port/database")
    if scheme == "postgresql":  # SQLAlchemy's spelling of the default driver
        storage = "postgresql+psycopg2://" + storage.split("://", 1)[1]
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period or 2 * heartbeat_interval,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=3),
                )
        except (IntegrityError, ProgrammingError):
            # Workers that start together race to create Optuna's tables; the loser
            # finds them on the next attempt.
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
        except Exception as exc:  # SQLAlchemy raises many kinds
            from sqlalchemy.engine import make_url

            shown = make_url(storage).render_as_string(hide_password=True)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"cannot open storage {shown!r}: {reason}") from None


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution):
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"unsupported distribution for {name!r}: {dist!r}")


def _consistent(estimator, params: dict) -> dict:
    """Clip ``top_k`` to ``n_atoms``: the two are searched independently."""
    params = dict(params)
    if "top_k" in params:
        params["top_k"] = min(params["top_k"], params.get("n_atoms", estimator.n_atoms))
    return params


def tune(estimator, X, y, *, n_trials, search_space=None, cv=None, scoring=None,
         storage=None, study_name=None, pruner=None, timeout=None, n_jobs=1,
         random_state=None, heartbeat_interval=60, grace_period=None):
    """Search hyperparameters with Optuna and refit the best estimator on all data.

    Parameters
    ----------
    estimator : qlsk estimator
        The starting point; every trial is a clone with the trial's parameters.
    X, y : array-like
        Training data.
    n_trials : int
        Trials this call runs (processes sharing a study add theirs up).
    search_space : dict of str to optuna distribution, or None
        ``None``: :func:`default_search_space`. A dict replaces it; to extend the
        default, pass ``{**default_search_space(estimator), "alpha": ...}``.
    cv : int, cross-validation generator or None
        Folds for every trial (default: 3 shuffled folds).
    scoring : str, callable or None
        A scikit-learn scorer (greater is better); ``None``: the estimator's R^2.
    storage : None, str or os.PathLike, or optuna storage
        ``None`` in memory; a file path (journal storage, several processes on one
        machine); a ``postgresql://`` URL (many machines; heartbeats and retries).
    study_name : str or None
        Processes with the same storage and name join one study.
    pruner : optuna pruner, "median" or None
        Prunes hopeless trials on the per-epoch validation loss of the first fold
        (``SkorchPruningCallback``). With a pruner every fold trains with early
        stopping, so that a validation loss exists. ``None``: no pruning.
    timeout : float or None
        Seconds after which this call stops starting trials.
    n_jobs : int
        Trials run in parallel threads of this process.
    random_state : int or None
        Seeds the sampler and the folds; with one worker the search is reproducible.
    heartbeat_interval, grace_period : int
        RDB storages only: how often a running trial signals life, and after how long
        without a signal it is failed and retried.

    Returns
    -------
    study : optuna.Study
    best_estimator : estimator
        A clone with the best trial's parameters, fitted on all of ``X, y``.
    """
    space = default_search_space(estimator) if search_space is None else dict(search_space)
    if not space:
        raise ValueError("the search space is empty")
    unknown = sorted(set(space) - set(estimator.get_params()))
    if unknown:
        raise ValueError(f"search space names unknown parameters {unknown} of "
                         f"{type(estimator).__name__}")
    if int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    cv = check_cv(KFold(3, shuffle=True, random_state=random_state) if cv is None else cv)
    scorer = check_scoring(estimator, scoring=scoring)
    if pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5)
    study = optuna.create_study(
        storage=make_storage(storage, heartbeat_interval, grace_period),
        study_name=study_name, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=random_state), pruner=pruner)
    X, y = np.asarray(X), np.asarray(y)
    folds = list(cv.split(X, y))

    def objective(trial):
        params = _consistent(estimator, {n: _suggest(trial, n, d) for n, d in space.items()})
        scores = []
        for i, (train, test) in enumerate(folds):
            model = clone(estimator).set_params(**params)
            if pruner is not None:
                model.set_params(early_stopping=True)
                if i == 0:
                    from optuna_integration import SkorchPruningCallback

                    model.set_params(callbacks=[*(model.callbacks or ()),
                                                SkorchPruningCallback(trial, "valid_loss")])
            model.fit(X[train], y[train])
            scores.append(scorer(model, X[test], y[test]))
        trial.set_user_attr("fold_scores", [float(s) for s in scores])
        return float(np.mean(scores))

    study.optimize(objective, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs,
                   catch=(FloatingPointError,))
    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError("no trial completed; nothing to refit")
    best = clone(estimator).set_params(**_consistent(estimator, study.best_params))
    return study, best.fit(X, y)

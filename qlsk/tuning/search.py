"""Optuna searches over the estimators' hyperparameters, on one machine or many."""

from __future__ import annotations

import numbers
import os
import time
import warnings
from collections import Counter

import joblib
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
from sklearn.model_selection import GroupKFold, KFold, check_cv
from sklearn.utils import _safe_indexing

from ..estimators import (
    ConditionedLoraRegressor,
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    MultiFidelityGPRegressor,
    QueryableLoraRegressor,
    SharedMemoryRegressor,
)

LR = FloatDistribution(1e-4, 1e-2, log=True)
TOP_K = IntDistribution(1, 4)

# The user attribute of a study that names the estimator class its trials fit.
_ESTIMATOR_ATTR = "estimator"
# The user attribute of a trial that says why it failed.
_FAILURE_ATTR = "failure"
# The user attribute of a trial that fingerprints what else decided its scores.
_SETUP_ATTR = "setup"


class NoCompletedTrialError(RuntimeError):
    """No trial of a search completed, so there is no best trial to refit.

    The message counts the trials by state and gives the reasons they failed (each
    failed trial of :func:`tune` records its reason as ``user_attrs["failure"]``).
    """


def _step(estimator) -> dict[str, BaseDistribution]:
    """``lr``, unless the adapter's full-batch fits use L-BFGS, whose line search sets
    the step (a learning rate of 1e-4..1e-2 would only shrink every iteration's first
    trial step)."""
    if estimator._regime() != "fixed" and estimator._optimizer() == "lbfgs":
        return {}
    return {"lr": LR}


def default_search_space(estimator) -> dict[str, BaseDistribution]:
    """The search space :func:`tune` uses when none is given.

    ``MultiFidelityGPRegressor``: ``kind`` (its kernels' hyperparameters are fitted by
    marginal likelihood in every fit). ``QueryableLoraRegressor``: ``rank``,
    ``n_atoms``, ``top_k``, ``lr`` and, when a ``task_description`` is set,
    ``prior_strength``. ``LoraRegressor``: ``rank`` and ``lr``. ``FineTuneRegressor``
    and ``MLPRegressor``: ``lr`` and ``weight_decay`` (``FineTuneRegressor`` under its
    default ``regularization="evidence"``: ``lr`` alone, since the evidence chooses
    the penalty's strength). Under the evidence or CV with ``optimizer="lbfgs"`` (the
    adapters' default) ``lr`` is left out, as L-BFGS's line search sets the step;
    ``FineTuneRegressor`` then searches ``optimizer``.

    For described tasks (tune them with ``groups`` = the tasks, so every fold scores
    tasks it did not train on): ``SharedMemoryRegressor``: ``rank``, ``n_atoms``,
    ``top_k``, ``lr``, ``prior_strength`` and ``channels`` (the prior alone, with a
    FiLM layer, or every channel); ``ConditionedLoraRegressor``: ``rank``, ``lr`` and
    ``condition``.

    ``top_k`` (1 to 4) and ``n_atoms`` (4 to 32) are drawn independently, and
    ``n_atoms`` starts at the largest ``top_k``, so every combination is valid and
    every trial fits exactly the parameters it records. Drawing ``top_k`` from
    ``1..n_atoms`` instead would give one parameter name a different range from trial
    to trial, which Optuna's samplers do not model.
    """
    if isinstance(estimator, MultiFidelityGPRegressor):
        return {"kind": CategoricalDistribution(("ar1", "nargp", "auto"))}
    if isinstance(estimator, SharedMemoryRegressor):
        return {"rank": IntDistribution(2, 16, log=True),
                "n_atoms": IntDistribution(TOP_K.high, 32, log=True), "top_k": TOP_K,
                "lr": LR, "prior_strength": FloatDistribution(0.0, 4.0),
                "channels": CategoricalDistribution(
                    ("prior", "prior+shift+scale", "prior+query+shift+scale"))}
    if isinstance(estimator, ConditionedLoraRegressor):
        return {"rank": IntDistribution(1, 16, log=True), **_step(estimator),
                "condition": CategoricalDistribution(("shift", "film"))}
    if isinstance(estimator, QueryableLoraRegressor):
        space = {"rank": IntDistribution(2, 16, log=True),
                 "n_atoms": IntDistribution(TOP_K.high, 32, log=True),
                 "top_k": TOP_K, **_step(estimator)}
        if estimator.task_description is not None:
            space["prior_strength"] = FloatDistribution(0.0, 4.0)
        return space
    if isinstance(estimator, LoraRegressor):
        return {"rank": IntDistribution(1, 16, log=True), **_step(estimator)}
    if isinstance(estimator, FineTuneRegressor) and estimator.regularization != "fixed":
        # the evidence or cross-validation sets the penalty's strength; under L-BFGS
        # its line search sets the step, and what is left to choose is the optimiser
        return _step(estimator) or {"optimizer": CategoricalDistribution(("lbfgs", "adam"))}
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

    Raises
    ------
    ValueError
        For a journal file in a folder that does not exist, an unsupported URL scheme,
        or a database that cannot be opened (the message hides the password).
    """
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    storage = os.fspath(storage)
    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        directory = os.path.dirname(os.path.abspath(storage))
        if not os.path.isdir(directory):
            raise ValueError(f"storage directory {directory} does not exist; create it, "
                             "or give a journal file path in an existing folder")
        if os.path.isdir(storage):
            raise ValueError(f"storage {storage} is a folder; give a journal file path")
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


def _span(value):
    """The smallest and largest value a distribution (or a fixed value) can take."""
    if isinstance(value, IntDistribution | FloatDistribution):
        return value.low, value.high
    if isinstance(value, CategoricalDistribution):
        return min(value.choices), max(value.choices)
    return value, value


def _check_space(estimator, space: dict) -> None:
    """Refuse a space in which some trial would have ``top_k > n_atoms``."""
    if "top_k" not in estimator.get_params():
        return
    top_k = _span(space.get("top_k", estimator.top_k))[1]
    n_atoms = _span(space.get("n_atoms", estimator.n_atoms))[0]
    if top_k > n_atoms:
        raise ValueError(f"the search space allows top_k up to {top_k} but n_atoms down to "
                         f"{n_atoms}; every top_k must be <= every n_atoms (start n_atoms "
                         f"at {top_k})")


def check_study(estimator, storage, study_name) -> None:
    """Refuse to add trials of one estimator class to a study made with another.

    :func:`tune` records the estimator's class name in the study's user attributes
    (``study.user_attrs["estimator"]``) and calls this before any trial; call it
    yourself to fail before expensive preparation, such as pretraining a base.

    Parameters
    ----------
    estimator : qlsk estimator
        The estimator whose trials would join the study; it need not be fitted and
        its ``base`` may be unset.
    storage : None, str or os.PathLike, or optuna storage
        As for :func:`tune`.
    study_name : str or None
        The study. A study that does not exist yet, or any study in memory, passes.

    Raises
    ------
    ValueError
        When the study was made with another estimator class.
    """
    storage = make_storage(storage)
    if storage is None or study_name is None:
        return
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return
    made_with = storage.get_study_user_attrs(study_id).get(_ESTIMATOR_ATTR)
    name = type(estimator).__name__
    if made_with is not None and made_with != name:
        raise ValueError(f"study {study_name!r} was made with {made_with}; it cannot take "
                         f"trials of {name}: tune a {made_with}, or use another study name")


class _TrialSeededSampler(optuna.samplers.BaseSampler):
    """Optuna's TPE sampler, seeded afresh for every trial from the seed and its number.

    One ``TPESampler(seed=seed)`` per worker would make workers that share a study and
    a seed propose the same trials. Trial numbers are unique within a study, so here
    each trial draws its own random numbers: a single worker repeats its search
    exactly, and workers sharing a seed still explore different points.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._samplers = {}

    def _for(self, trial):
        if trial.number not in self._samplers:
            seed = np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0]
            self._samplers[trial.number] = optuna.samplers.TPESampler(seed=int(seed))
        return self._samplers[trial.number]

    def before_trial(self, study, trial):
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name,
                                                   param_distribution)

    def after_trial(self, study, trial, state, values):
        self._for(trial).after_trial(study, trial, state, values)
        del self._samplers[trial.number]


def tune(estimator, X, y, *, n_trials, search_space=None, cv=None, groups=None,
         scoring=None, storage=None, study_name=None, pruner=None, timeout=None, n_jobs=1,
         random_state=None, heartbeat_interval=60, grace_period=None, callbacks=None,
         refit=True):
    """Search hyperparameters with Optuna and refit the best estimator on all data.

    Every argument is checked before the first trial, and the storage is opened before
    it, so a mistake costs no training.

    Parameters
    ----------
    estimator : qlsk estimator
        The starting point; every trial is a clone with the trial's parameters.
    X, y : array-like
        Training data, passed unchanged (a DataFrame keeps its column names, so the
        best estimator has ``feature_names_in_``).
    n_trials : int
        Trials this call runs (processes sharing a study add theirs up); at least 1. A
        trial that proposes the parameters of a completed trial of the study, fitted
        with the same other settings (by their ``repr``), rows, folds and scorer, is
        not fitted again: it takes that trial's value and fold scores and records its
        number as ``user_attrs["repeat_of"]``, as the same seeded fits would give the
        same scores. Small spaces, such as LoRA's ``rank`` alone under L-BFGS, then
        cost one fit per point, however many trials. Not with a pruner, nor for an
        estimator with ``random_state=None``.
    search_space : dict of str to optuna distribution, or None
        ``None``: :func:`default_search_space`. A dict replaces it; to extend the
        default, pass ``{**default_search_space(estimator), "alpha": ...}``. A space
        that allows ``top_k > n_atoms`` is refused.
    cv : int, cross-validation generator or None
        Folds for every trial. An int is that many shuffled folds seeded by
        ``random_state``, at least 2: ``KFold``, or with ``groups`` ``GroupKFold`` (no
        group in both a fold's training and test rows); ``None``: 3.
    groups : array-like of shape (n_samples,) or None
        Group labels of the rows, passed to the splitter (as ``groups`` in
        ``GridSearchCV.fit``): needed by ``GroupKFold`` and its kind, and, for a
        multi-task estimator, the tasks, so that every fold scores tasks it did not
        train on (zero-shot).
    scoring : str, callable or None
        A scikit-learn scorer (greater is better); ``None``: the estimator's R^2.
    storage : None, str or os.PathLike, or optuna storage
        ``None`` in memory; a file path (journal storage, several processes on one
        machine; its folder must exist); a ``postgresql://`` URL (many machines;
        heartbeats and retries).
    study_name : str or None
        Processes with the same storage and name join one study. The study records
        the estimator's class name, and joining it with another class raises a
        ``ValueError`` (see :func:`check_study`).
    pruner : optuna pruner, "median" or None
        Prunes hopeless trials on the per-epoch validation loss of the first fold
        (``SkorchPruningCallback``). With a pruner every fold, and the refit, trains
        with early stopping, so that a validation loss exists and the refit trains as
        the trials that scored it did. Needs ``regularization="fixed"`` on an adapting
        estimator (the evidence's full-batch path has no epochs to prune). ``None``: no
        pruning.
    timeout : float or None
        Seconds after which this call stops starting trials.
    n_jobs : int
        Trials run in parallel threads of this process.
    random_state : int or None
        Seeds the sampler and the folds of an int ``cv``: with one worker and
        ``n_jobs=1`` the same call gives the same trials and values. The sampler
        draws each trial's random numbers from this seed and the trial's number, so
        workers sharing a study and a seed still propose different trials.
    heartbeat_interval, grace_period : int
        RDB storages only: how often a running trial signals life, and after how long
        without a signal it is failed and retried.
    callbacks : list of callable or None
        Called as ``callback(study, trial)`` after every trial of this call, as in
        ``optuna.Study.optimize`` (e.g. to print progress, or
        ``optuna.study.MaxTrialsCallback`` to stop a shared study at a total budget).
    refit : bool
        Fit the best trial's estimator on all of ``X, y`` (as ``GridSearchCV``'s
        ``refit``). ``False``: only search, e.g. in workers that share a study; refit
        later with :func:`refit_best`.

    Returns
    -------
    study : optuna.Study
    best_estimator : estimator or None
        A clone with the best trial's parameters, fitted on all of ``X, y``; ``None``
        when ``refit=False``.

    Raises
    ------
    ValueError
        For a bad argument, before any trial; among them folds with fewer than 2 test
        rows under the default score (R^2 is undefined there).
    NoCompletedTrialError
        With ``refit=True``, when no trial of the study completed (all diverged,
        scored NaN or were pruned); the message says why. A trial that diverges
        (:class:`~qlsk.TrainingDivergedError`) fails, the search goes on, and the
        trial records the reason as ``user_attrs["failure"]``.
    """
    space = default_search_space(estimator) if search_space is None else dict(search_space)
    if not space:
        raise ValueError("the search space is empty")
    unknown = sorted(set(space) - set(estimator.get_params()))
    if unknown:
        raise ValueError(f"search space names unknown parameters {unknown} of "
                         f"{type(estimator).__name__}")
    _check_space(estimator, space)
    if int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    if cv is None:
        cv = 3
    if isinstance(cv, numbers.Integral):
        if cv < 2:
            raise ValueError(f"cv must be at least 2 folds, got {cv!r}")
        cv = (KFold(cv, shuffle=True, random_state=random_state) if groups is None
              else GroupKFold(cv, shuffle=True, random_state=random_state))
    cv = check_cv(cv)
    folds = list(cv.split(X, y, groups))
    smallest = min(len(test) for _, test in folds)
    if scoring is None and smallest < 2:
        raise ValueError(f"cv leaves a test fold of {smallest} row(s), on which R^2 (the "
                         "default score) is undefined: every trial would fail; use fewer "
                         "folds or more rows")
    scorer = check_scoring(estimator, scoring=scoring)
    if isinstance(pruner, str):
        if pruner != "median":
            raise ValueError(f"pruner must be an Optuna pruner, 'median' or None, got "
                             f"{pruner!r}")
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5)
    if pruner is not None and "early_stopping" not in estimator.get_params():
        raise ValueError(f"a pruner reads per-epoch validation losses, which a "
                         f"{type(estimator).__name__} does not train with; tune it without "
                         "a pruner")
    regularized = hasattr(estimator, "_regime")  # the RegularizedAdapter estimators
    if pruner is not None and regularized and estimator._regime() != "fixed":
        raise ValueError("a pruner reads per-epoch validation losses, which only "
                         "regularization='fixed' produces; set it on the estimator or tune "
                         "without a pruner (it has regularization="
                         f"{estimator._regime_label()})")
    storage = make_storage(storage, heartbeat_interval, grace_period)
    check_study(estimator, storage, study_name)
    if pruner is not None:
        estimator = clone(estimator).set_params(early_stopping=True)
    sampler = (optuna.samplers.TPESampler() if random_state is None
               else _TrialSeededSampler(random_state))
    study = optuna.create_study(storage=storage, study_name=study_name,
                                direction="maximize", load_if_exists=True,
                                sampler=sampler, pruner=pruner)
    if _ESTIMATOR_ATTR not in study.user_attrs:
        study.set_user_attr(_ESTIMATOR_ATTR, type(estimator).__name__)

    setup = _setup(estimator, space, X, y, folds, scoring, pruner)

    def objective(trial):
        params = {n: _suggest(trial, n, d) for n, d in space.items()}
        earlier = _same_trial(trial, setup)
        if earlier is not None:  # the same fits would give the same scores
            trial.set_user_attr("repeat_of", earlier.number)
            trial.set_user_attr("fold_scores", earlier.user_attrs["fold_scores"])
            return earlier.value
        if setup is not None:
            trial.set_user_attr(_SETUP_ATTR, setup)
        scores = []
        for i, (train, test) in enumerate(folds):
            model = clone(estimator).set_params(**params)
            if pruner is not None:
                if i == 0:
                    from optuna_integration import SkorchPruningCallback

                    model.set_params(callbacks=[*(model.callbacks or ()),
                                                SkorchPruningCallback(trial, "valid_loss")])
            try:
                model.fit(_safe_indexing(X, train), _safe_indexing(y, train))
            except FloatingPointError as exc:  # diverged: this trial fails, not the search
                trial.set_user_attr(_FAILURE_ATTR, str(exc))
                raise
            scores.append(scorer(model, _safe_indexing(X, test), _safe_indexing(y, test)))
        trial.set_user_attr("fold_scores", [float(s) for s in scores])
        if not np.isfinite(scores).all():  # Optuna fails a trial that returns NaN
            trial.set_user_attr(_FAILURE_ATTR, f"fold scores {[float(s) for s in scores]} "
                                               "are not all finite")
        return float(np.mean(scores))

    if pruner is not None:
        study.set_user_attr("fixed_params", {"early_stopping": True})
    study.optimize(objective, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs,
                   catch=(FloatingPointError,), callbacks=callbacks)
    if not refit:
        return study, None
    return study, refit_best(estimator, study, X, y)


def _setup(estimator, space, X, y, folds, scoring, pruner) -> str | None:
    """A fingerprint of what, besides a trial's parameters, decides its scores: the
    estimator's other settings (by their ``repr``), the rows, the folds and the scorer;
    ``None`` where the same parameters need not give the same scores (an unseeded
    estimator) or where a pruner reads every trial's learning curve."""
    fixed = {k: v for k, v in estimator.get_params(deep=False).items() if k not in space}
    if fixed.get("random_state", 0) is None or pruner is not None:
        return None
    return joblib.hash((type(estimator).__name__, repr(sorted(fixed.items())), X, y,
                        [(train.tolist(), test.tolist()) for train, test in folds],
                        repr(scoring)))


def _same_trial(trial, setup: str | None):
    """A completed trial of ``trial``'s study with the same parameters and ``setup``,
    or ``None``."""
    if setup is None:
        return None
    for other in trial.study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.COMPLETE,)):
        if (other.number != trial.number and other.params == trial.params
                and other.user_attrs.get(_SETUP_ATTR) == setup
                and "fold_scores" in other.user_attrs):
            return other
    return None


def refit_best(estimator, study, X, y, trials=None):
    """Fit a clone of ``estimator`` with the best trial's parameters on ``X, y``.

    The parameters :func:`tune` fixed for every trial of ``study`` (early stopping
    under a pruner, recorded as ``study.user_attrs["fixed_params"]``) are set too, so
    the refit trains as the trials that scored it.

    Parameters
    ----------
    estimator : qlsk estimator
        The estimator :func:`tune` started from.
    study : optuna.Study
        A study made by :func:`tune` (directions: maximise the CV score).
    X, y : array-like
        The rows to fit on, usually all the rows the search cross-validated.
    trials : list of optuna.trial.FrozenTrial or None
        Choose the best among these (e.g. the first ``n`` trials of a study that
        workers overran); ``None``: every trial of the study.

    Returns
    -------
    estimator
        The fitted clone.

    Raises
    ------
    NoCompletedTrialError
        A ``RuntimeError``: when no trial (of ``trials``) completed. The message
        counts the trials by state and says why they failed.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise NoCompletedTrialError(f"no trial completed, so there is nothing to refit: "
                                    f"{_outcomes(trials)}")
    best = max(completed, key=lambda t: (t.value, -t.number))
    fixed = study.user_attrs.get("fixed_params", {})
    return clone(estimator).set_params(**fixed, **best.params).fit(X, y)


def _outcomes(trials) -> str:
    """The trials counted by state, and the distinct reasons the failed ones give."""
    if not trials:
        return "no trial ran"
    counts = Counter(t.state.name.lower() for t in trials)
    text = ", ".join(f"{n} {state}" for state, n in counts.items())
    reasons = list(dict.fromkeys(t.user_attrs[_FAILURE_ATTR] for t in trials
                                 if _FAILURE_ATTR in t.user_attrs))
    return text + "".join(f"; {reason}" for reason in reasons[:3])

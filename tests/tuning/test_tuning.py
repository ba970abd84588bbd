"""Optuna searches: in memory, shared by processes (journal file, PostgreSQL), killed
workers, pruning, reports and bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from optuna_integration import OptunaSearchCV
from sklearn.base import clone

from qlsk import FineTuneRegressor, LoraRegressor, MLPRegressor, QueryableLoraRegressor
from qlsk.simlib import load_task
from qlsk.tuning import (
    NoCompletedTrialError,
    check_study,
    default_search_space,
    make_storage,
    refit_best,
    tune,
)

# Small enough that a worker process starts, pretrains and runs a trial in seconds.
WORKER = ["--task", "park91a-lf-to-hf", "--n-source", "200", "--base-epochs", "5",
          "--n-train", "40", "--cv", "2", "--max-epochs", "5", "--max-steps", "30"]


# Two strengths instead of eleven: these tests are about the search, not the evidence.
FEW = [1e-2, 1e-3]


@pytest.fixture(scope="module")
def data():
    task = load_task("park91a-lf-to-hf", n_source=300, n_train=60, random_state=0)
    base = MLPRegressor(hidden_layer_sizes=(32, 32), max_epochs=20, random_state=0).fit(
        task.X_source, task.y_source)
    return task, base


def worker(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "qlsk.cli", "tune", *WORKER, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def run_workers(n, *args):
    """Start ``n`` worker processes with the same arguments and wait for all of them."""
    for proc in [worker(*args) for _ in range(n)]:
        finish(proc)


def states(study):
    return [t.state for t in study.trials]


def test_in_memory_search_is_reproducible_and_refits_the_best(data):
    task, base = data
    est = QueryableLoraRegressor(base=base, max_epochs=5, max_steps=30, l2_strengths=FEW,
                                 random_state=0,
                                 task_description=task.description)
    runs = [tune(est, task.X_train, task.y_train, n_trials=4, cv=3, random_state=1)
            for _ in range(2)]
    (study, best), (study2, _) = runs
    assert len(study.trials) == 4 and set(states(study)) == {TrialState.COMPLETE}
    assert [t.params for t in study.trials] == [t.params for t in study2.trials]
    assert [t.value for t in study.trials] == [t.value for t in study2.trials]
    assert set(study.best_params) == {"rank", "n_atoms", "top_k", "prior_strength"}
    assert best.rank == study.best_params["rank"] and best.top_k <= best.n_atoms
    assert best.predict(task.X_test).shape == task.y_test.shape
    assert best.base is base


def test_default_spaces_and_a_users_own_space(data):
    task, base = data
    # under L-BFGS (the adapters' default) its line search sets the step: no lr
    assert set(default_search_space(QueryableLoraRegressor())) == {"rank", "n_atoms", "top_k"}
    assert set(default_search_space(LoraRegressor())) == {"rank"}
    assert set(default_search_space(LoraRegressor(optimizer="adam"))) == {"rank", "lr"}
    assert set(default_search_space(LoraRegressor(regularization="fixed"))) == {"rank", "lr"}
    assert set(default_search_space(FineTuneRegressor())) == {"optimizer"}
    assert set(default_search_space(FineTuneRegressor(optimizer="adam"))) == {"lr"}
    assert set(default_search_space(MLPRegressor())) == {"lr", "weight_decay"}
    est = LoraRegressor(base=base, max_epochs=3, max_steps=30, l2_strengths=FEW, random_state=0,
                        optimizer="adam")
    space = {**default_search_space(est), "alpha": FloatDistribution(1, 32, log=True)}
    study, _ = tune(est, task.X_train, task.y_train, n_trials=2, search_space=space,
                    random_state=0)
    assert set(study.best_params) == {"rank", "lr", "alpha"}
    study, _ = tune(est, task.X_train, task.y_train, n_trials=2, cv=2,
                   search_space={"rank": IntDistribution(1, 2)}, scoring="neg_mean_squared_error")
    assert set(study.best_params) == {"rank"} and study.best_value < 0


def params_of(study):
    return [tuple(sorted(t.params.items())) for t in study.trials]


def test_bad_input_is_refused_before_any_study_exists(data, tmp_path):
    task, base = data
    est = LoraRegressor(base=base, max_epochs=2)
    storage = optuna.storages.InMemoryStorage()
    X, y = task.X_train, task.y_train
    for kwargs, message in [
        ({"search_space": {}}, "search space is empty"),
        ({"search_space": {"n_atoms": IntDistribution(1, 3)}}, "unknown parameters"),
        ({"n_trials": 0}, "n_trials must be a positive integer"),
        ({"cv": 1}, "cv must be at least 2 folds"),
        ({"pruner": "mediam"}, "pruner must be"),
        ({"storage": "foo://bar"}, "unsupported storage URL scheme 'foo'"),
        ({"storage": tmp_path / "missing" / "journal.log"}, "does not exist"),
    ]:
        with pytest.raises(ValueError, match=message):
            tune(est, X, y, **{"n_trials": 1, "storage": storage, "study_name": "s",
                               **kwargs})
    assert optuna.get_all_study_names(storage) == []
    assert not (tmp_path / "missing").exists()
    queryable = QueryableLoraRegressor(base=base, n_atoms=2)
    with pytest.raises(ValueError, match="top_k up to 4 but n_atoms down to 2"):
        tune(queryable, X, y, n_trials=1, search_space={"top_k": IntDistribution(1, 4)})
    with pytest.raises(ValueError, match="unsupported storage URL scheme 'redis'"):
        make_storage("redis://localhost/0")
    with pytest.raises(ValueError, match="cannot open storage") as error:
        make_storage("postgresql://nobody:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in str(error.value) and "***" in str(error.value)
    with pytest.raises(ValueError, match="does not exist"):
        make_storage(str(tmp_path / "missing" / "journal.log"))


def test_dataframe_column_names_reach_the_best_estimator(data):
    task, base = data
    columns = [f"x{i}" for i in range(task.X_train.shape[1])]
    X = pd.DataFrame(task.X_train, columns=columns)
    est = LoraRegressor(base=base, max_epochs=2, max_steps=30, l2_strengths=FEW, random_state=0)
    _, best = tune(est, X, pd.Series(task.y_train), n_trials=1, cv=2, random_state=0,
                   search_space={"rank": IntDistribution(1, 2)})
    assert list(best.feature_names_in_) == columns
    assert best.predict(X.iloc[:3]).shape == (3,)


def test_every_trial_fits_the_parameters_it_records(data):
    task, base = data
    est = QueryableLoraRegressor(base=base, max_epochs=1, max_steps=30, l2_strengths=FEW,
                                 random_state=0)
    study, best = tune(est, task.X_train, task.y_train, n_trials=6, cv=2,
                       random_state=2)
    for trial in study.trials:
        assert trial.params["top_k"] <= trial.params["n_atoms"]
        clone(est).set_params(**trial.params).fit(task.X_train, task.y_train)
    assert {k: getattr(best, k) for k in study.best_params} == study.best_params


def test_a_study_refuses_trials_of_another_estimator(data, tmp_path):
    task, base = data
    journal = tmp_path / "study.log"
    tune(LoraRegressor(base=base, max_steps=30, l2_strengths=FEW), task.X_train, task.y_train,
         n_trials=1, cv=2, storage=journal, study_name="lora",
         search_space={"rank": IntDistribution(1, 2)})
    queryable = QueryableLoraRegressor(base=base, max_epochs=1)
    with pytest.raises(ValueError, match="'lora' was made with LoraRegressor"):
        check_study(queryable, journal, "lora")
    with pytest.raises(ValueError, match="cannot take trials of QueryableLoraRegressor"):
        tune(queryable, task.X_train, task.y_train, n_trials=1, cv=2, storage=journal,
             study_name="lora")
    study = optuna.load_study(study_name="lora", storage=make_storage(journal))
    assert len(study.trials) == 1 and study.user_attrs["estimator"] == "LoraRegressor"


def test_random_state_shuffles_the_folds(data):
    task, base = data
    est = LoraRegressor(base=base, max_epochs=2, max_steps=30, l2_strengths=FEW, random_state=0)
    one_point = {"lr": CategoricalDistribution([1e-3])}

    def fold_scores(seed):
        study, _ = tune(est, task.X_train, task.y_train, n_trials=1, cv=2,
                        search_space=one_point, random_state=seed)
        return study.trials[0].user_attrs["fold_scores"]

    assert fold_scores(0) != fold_scores(1)  # the trials differ only in their folds


def test_groups_reach_the_splitter_and_no_group_is_split(data):
    from sklearn.model_selection import GroupKFold

    task, base = data
    est = LoraRegressor(base=base, max_epochs=1, max_steps=10, random_state=0)
    one_point = {"lr": CategoricalDistribution([1e-3])}
    groups = np.arange(len(task.X_train)) % 4
    seen = []

    def scorer(model, X, y):  # records the groups of each test fold
        seen.append(frozenset(groups[np.isin(task.X_train[:, 0], X[:, 0])]))
        return 0.0

    for cv in (GroupKFold(2), 2):  # a splitter that needs groups; an int: GroupKFold
        seen.clear()
        tune(est, task.X_train, task.y_train, n_trials=1, cv=cv, groups=groups,
             scoring=scorer, search_space=one_point, random_state=0, refit=False)
        assert len(seen) == 2 and not seen[0] & seen[1]  # every group in one test fold
        assert seen[0] | seen[1] == set(range(4))


def test_workers_sharing_a_seed_propose_different_trials(data):
    task, base = data
    # Adam's space has a continuous lr, so equal proposals could only come from equal
    # seeds (L-BFGS's is rank alone: 16 values, where 4 draws may meet by chance)
    est = LoraRegressor(base=base, max_epochs=1, max_steps=30, l2_strengths=FEW, random_state=0,
                        optimizer="adam")
    storage = optuna.storages.InMemoryStorage()
    for _ in range(4):  # two workers with the same seed, taking turns
        tune(est, task.X_train, task.y_train, n_trials=1, cv=2, storage=storage,
             study_name="shared", random_state=0)
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(set(params_of(study))) == 4


def test_pruning_on_validation_loss(data):
    task, base = data
    est = LoraRegressor(base=base, max_epochs=20, regularization="fixed", random_state=0)
    pruner = optuna.pruners.ThresholdPruner(upper=1e-12, n_warmup_steps=2)
    with pytest.raises(ValueError, match="regularization='fixed'"):  # no epochs to prune
        tune(LoraRegressor(base=base), task.X_train, task.y_train, n_trials=1, pruner=pruner)
    storage = optuna.storages.InMemoryStorage()
    with pytest.raises(RuntimeError, match="no trial completed"):
        tune(est, task.X_train, task.y_train, n_trials=2, pruner=pruner, random_state=0,
             storage=storage, study_name="pruned")
    trials = optuna.load_study(study_name="pruned", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    # pruned at the first epoch past the warm-up, from the validation loss
    assert all(sorted(t.intermediate_values) == [0, 1, 2] for t in trials)
    assert all(v > 0 for t in trials for v in t.intermediate_values.values())


def test_two_processes_share_one_journal_file(tmp_path):
    journal = str(tmp_path / "study.log")
    run_workers(2, "--method", "lora", "--n-trials", "2", "--storage", journal,
                "--study", "shared", "--optimizer", "adam")  # a continuous lr (above)
    study = optuna.load_study(study_name="shared", storage=make_storage(journal))
    assert states(study) == [TrialState.COMPLETE] * 4
    assert len(set(params_of(study))) == 4  # the same --seed, yet different trials
    report = tmp_path / "report"
    out = subprocess.run([sys.executable, "-m", "qlsk.cli", "tune", "--report", "--storage",
                          journal, "--study", "shared", "--output", str(report)],
                         capture_output=True, text=True, check=True).stdout
    assert "report written" in out
    for name in ("history.png", "importances.png", "summary.md"):
        assert (report / name).stat().st_size > 0
    summary = (report / "summary.md").read_text()
    assert "Trials: 4 (4 complete)" in summary and "| rank |" in summary


def test_two_processes_share_one_postgresql_study(postgres_url):
    run_workers(2, "--method", "finetune", "--n-trials", "2", "--storage", postgres_url,
                "--study", "pg-shared")
    study = optuna.load_study(study_name="pg-shared", storage=make_storage(postgres_url))
    assert states(study) == [TrialState.COMPLETE] * 4


def test_killed_worker_loses_no_completed_trial_and_its_trial_is_retried(postgres_url):
    args = ["--method", "lora", "--storage", postgres_url, "--study", "killed",
            "--heartbeat", "1", "--grace", "2"]
    # Long trials, so the signal lands in the middle of one.
    victim = worker(*args, "--n-trials", "50", "--max-epochs", "600", "--regularization", "fixed",
                    start_new_session=True)
    storage = make_storage(postgres_url, heartbeat_interval=1, grace_period=2)
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            trials = optuna.load_study(study_name="killed", storage=storage).trials
        except KeyError:  # the study does not exist yet
            trials = []
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        # a trial that has drawn its parameters: killed before that, it has none to retry
        running = [t for t in trials if t.state == TrialState.RUNNING and t.params]
        if done and running:
            break
        time.sleep(0.1)
    else:
        victim.kill()
        pytest.fail(f"no running trial after a completed one: {victim.communicate()[0]}")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed = running[0].number
    completed = {t.number: t.value for t in done}
    time.sleep(3)  # past the grace period: the killed trial's heartbeat is stale
    # One trial: the retry of the killed one, which the next worker runs first (shorter
    # now: its length no longer matters).
    finish(worker(*args, "--n-trials", "1", "--max-epochs", "60", "--regularization", "fixed"))
    study = optuna.load_study(study_name="killed", storage=storage)
    by_number = {t.number: t for t in study.trials}
    for number, value in completed.items():
        assert by_number[number].state == TrialState.COMPLETE
        assert by_number[number].value == value
    assert by_number[killed].state == TrialState.FAIL
    retried_from = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    retries = [t for t in study.trials if retried_from(t) == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == by_number[killed].params


def test_a_repeated_proposal_takes_the_earlier_trials_value_without_fitting(data, tmp_path):
    task, base = data
    fits = []

    class Counted(FineTuneRegressor):
        def fit(self, X, y):
            fits.append(self.optimizer)
            return super().fit(X, y)

    # Under L-BFGS fine-tuning searches `optimizer` alone: two points, five trials
    est = Counted(base=base, max_steps=30, l2_strengths=FEW, random_state=0)
    shared = {"storage": str(tmp_path / "s.log"), "study_name": "s", "cv": 2,
              "random_state": 0}
    study, best = tune(est, task.X_train, task.y_train, n_trials=5, **shared)
    points = {t.params["optimizer"] for t in study.trials}
    assert len(fits) == 2 * len(points) + 1  # two folds per point, and the refit
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert len(repeats) == 5 - len(points)
    for t in repeats:
        earlier = study.trials[t.user_attrs["repeat_of"]]
        assert earlier.params == t.params and "repeat_of" not in earlier.user_attrs
        assert earlier.value == t.value
        assert earlier.user_attrs["fold_scores"] == t.user_attrs["fold_scores"]
    # The same study, other settings: its trial is fitted, as is every unseeded one
    for other, n_trials in ((clone(est).set_params(max_steps=20), 1),
                            (clone(est).set_params(random_state=None), 2)):
        fits.clear()
        tune(other, task.X_train, task.y_train, n_trials=n_trials, refit=False, **shared)
        assert len(fits) == 2 * n_trials


def test_estimators_work_inside_optuna_search_cv(data):
    task, base = data
    est = LoraRegressor(base=base, max_epochs=3, max_steps=30, l2_strengths=FEW,
                        random_state=0)
    search = OptunaSearchCV(est,
                            {"rank": IntDistribution(1, 4),
                             "lr": FloatDistribution(1e-4, 1e-2, log=True)},
                            n_trials=3, cv=2, random_state=0)
    search.fit(task.X_train, task.y_train)
    assert len(search.trials_) == 3
    assert np.isfinite(search.score(task.X_test, task.y_test))


def test_a_search_where_no_trial_completes_says_why(data):
    task, base = data
    est = LoraRegressor(base=base, max_epochs=2)
    # targets far outside the base's range: every fit diverges at its first epoch
    with pytest.raises(NoCompletedTrialError,
                       match="nothing to refit: 2 fail; .*(diverged|rescale)"):
        tune(est, task.X_train, task.y_train * 1e30, n_trials=2, cv=2, random_state=0)
    # R^2 on a fold of one test row is NaN: refused before any trial
    with pytest.raises(ValueError, match="test fold of 1 row"):
        tune(est, task.X_train[:3], task.y_train[:3], n_trials=1, cv=2)


def test_refit_trains_as_the_scored_trials_did_and_can_be_deferred(data):
    task, base = data
    est = LoraRegressor(base=base, max_epochs=15, regularization="fixed", random_state=0)
    # Under a pruner every trial trained with early stopping; so must the refit.
    study, best = tune(est, task.X_train, task.y_train, n_trials=2, cv=2, random_state=0,
                       pruner=optuna.pruners.NopPruner())
    assert best.early_stopping is True and est.early_stopping is False
    assert study.user_attrs["fixed_params"] == {"early_stopping": True}
    # Without a refit the search returns no estimator; refit_best gives the same one.
    storage = optuna.storages.InMemoryStorage()
    study, none = tune(est, task.X_train, task.y_train, n_trials=2, cv=2, random_state=0,
                       pruner=optuna.pruners.NopPruner(), refit=False, storage=storage,
                       study_name="deferred")
    assert none is None
    later = refit_best(est, study, task.X_train, task.y_train)
    np.testing.assert_allclose(later.predict(task.X_test), best.predict(task.X_test))
    # Restricted to the first trial, the refit takes that trial's parameters.
    first = refit_best(est, study, task.X_train, task.y_train, trials=study.trials[:1])
    assert first.get_params()["lr"] == study.trials[0].params["lr"]
    with pytest.raises(RuntimeError, match="no trial completed"):
        refit_best(est, study, task.X_train, task.y_train, trials=[])


def test_described_estimators_have_default_spaces_and_tune_by_task(fam, fam_base):
    from qlsk import ConditionedLoraRegressor, SharedMemoryRegressor

    shared = SharedMemoryRegressor(base=fam_base, max_epochs=1, random_state=0)
    assert set(default_search_space(shared)) == {"rank", "n_atoms", "top_k", "lr",
                                                 "prior_strength", "channels"}
    conditioned = ConditionedLoraRegressor(base=fam_base, text_encoder="lexical",
                                           max_epochs=1, random_state=0)
    assert set(default_search_space(conditioned)) == {"rank", "lr", "condition"}
    groups = fam.X_train.description.factorize()[0]
    study, best = tune(shared, fam.X_train, fam.y_train, n_trials=2, cv=2, groups=groups,
                       random_state=0)
    assert len(study.trials) == 2
    assert best.channels == study.best_params["channels"]
    assert best.predict(fam.X_heldout).shape == (len(fam.X_heldout),)

"""The tuned-against-tuned benchmark: workers sharing one storage (a journal file, or
PostgreSQL on a real Dask cluster), reproducibility whatever the number of workers, and
resuming after a killed worker."""

import ast
import json

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from benchmarks import tuned
from qlsk.tuning import make_storage

TINY = ["--tasks", "forrester-lf-to-hf", "--seeds", "0", "--trials", "2", "--n-train", "30",
        "--n-source", "80", "--n-test", "60", "--base-epochs", "3"]


def _run(output, *extra):
    tuned.main([*TINY, "--output", str(output), *extra])
    return pd.read_csv(output / "results.csv")


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("tuned") / "one", "--workers", "1")


def test_every_method_tuned_and_reported(one_worker, tmp_path):
    df = one_worker
    assert list(df.method) == tuned.FULL["methods"] == ["lora", "ql", "finetune"]
    assert df.rmse_sd.gt(0).all() and df.search_time_s.gt(0).all()
    assert (df.complete + df.pruned + df.failed).eq(2).all()
    # every tuned hyperparameter is recorded, within its space
    for method, params in zip(df.method, df.best_params):
        params = ast.literal_eval(params)  # a dict, as the CSV writes it
        assert set(params) == set(tuned.SPACES[method])
        for name, value in params.items():
            dist = tuned.SPACES[method][name]
            assert dist.low <= value <= dist.high


def _studies(output):
    """Every study's trials and user attributes, as text, by name."""
    storage = make_storage(str(output / "studies.journal"))
    return {s.study_name: json.dumps([s.user_attrs, [t.params for t in storage.get_all_trials(
        s._study_id)]], sort_keys=True) for s in storage.get_all_studies()
        if not s.study_name.startswith("claim:")}


def test_two_workers_give_the_same_results_as_one(one_worker, tmp_path, monkeypatch):
    two = _run(tmp_path / "two", "--workers", "2")
    cols = ["task", "seed", "method", "rmse_sd", "best_params", "cv_r2"]
    pd.testing.assert_frame_equal(two[cols], one_worker[cols])
    text = (tmp_path / "two" / "tuned.md").read_text()
    assert "| ql / lora |" in text and "importances.png" in text
    assert (tmp_path / "two" / "importances.png").stat().st_size > 0
    # A second call finds every study done: it starts no worker and trains nothing.
    before = _studies(tmp_path / "two")

    def no_workers(*args):
        raise AssertionError("a worker was started for a finished run")

    monkeypatch.setattr(tuned, "executor", no_workers)
    _run(tmp_path / "two", "--workers", "2")
    assert _studies(tmp_path / "two") == before
    with pytest.raises(SystemExit, match="another configuration"):
        tuned.main([*TINY, "--trials", "3", "--output", str(tmp_path / "two")])


def test_a_killed_workers_trial_is_not_counted_and_the_study_resumes(tmp_path):
    output = tmp_path / "resume"
    output.mkdir()
    storage = make_storage(str(output / "studies.journal"))
    name = tuned.study_name("forrester-lf-to-hf", 0, "lora")
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.ask()  # a trial left running by a worker that was killed
    tuned.main([*TINY, "--methods", "lora", "--workers", "1", "--output", str(output)])
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["interrupted"]
    assert len(tuned.counted(trials)) == 2 and len(trials) == 3


def test_workers_on_a_dask_cluster_share_a_postgresql_storage(one_worker, tmp_path,
                                                               postgres_url):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        df = _run(tmp_path / "dask", "--storage", postgres_url, "--workers", "2",
                  "--methods", "lora", "--dask-scheduler", cluster.scheduler_address)
    cols = ["task", "seed", "method", "rmse_sd", "best_params"]
    lora = one_worker[one_worker.method == "lora"].reset_index(drop=True)
    pd.testing.assert_frame_equal(df[cols], lora[cols])
    names = {s.study_name for s in make_storage(postgres_url).get_all_studies()}
    assert tuned.study_name("forrester-lf-to-hf", 0, "lora") in names


def test_noisy_routing_joins_a_finished_run_through_its_storage(one_worker, tmp_path):
    # The option arm searches routing_noise too, and reads the other arms' studies
    # from the same storage instead of refitting them.
    first = tmp_path / "first"
    _run(first, "--workers", "1", "--methods", "lora")
    df = _run(tmp_path / "noise", "--workers", "1", "--methods", "lora", "ql-noise",
              "--storage", str(first / "studies.journal"))
    assert list(df.method) == ["lora", "ql-noise"]
    assert "routing_noise" in ast.literal_eval(df.best_params[1])
    assert "| ql-noise / lora |" in (tmp_path / "noise" / "tuned.md").read_text()
    lora = df[df.method == "lora"].iloc[0]
    assert lora.rmse_sd == one_worker[one_worker.method == "lora"].iloc[0].rmse_sd


def test_under_the_evidence_the_optimiser_space_keeps_lr_alone(tmp_path):
    df = _run(tmp_path / "evidence", "--workers", "1", "--methods", "lora",
              "--regularization", "evidence", "--trials", "1", "--max-steps", "50")
    params = ast.literal_eval(df.best_params[0])
    assert set(params) == set(tuned.EVIDENCE_SPACES["lora"]) == {"lr", "rank"}
    assert json.loads((tmp_path / "evidence" / "config.json").read_text())["max_steps"] == 50
    assert df.pruned.eq(0).all() and df.rmse_sd.gt(0).all()

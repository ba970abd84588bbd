"""The benchmark runner end to end on a tiny grid: files, schema, fairness, resume,
reproducibility and a real Dask cluster."""

import json
import os
import shutil

import pandas as pd
import pytest

from benchmarks.cells import METHODS
from benchmarks.run import main

TINY = ["--tasks", "forrester-lf-to-hf", "park91a-lf-to-hf", "--sizes", "16", "--seeds", "0",
        "--n-source", "150", "--n-test", "150", "--base-epochs", "3", "--max-epochs", "3",
        "--max-steps", "10",
        "--jobs", "1"]
TIMING = ["fit_time_s", "predict_ms_per_1000"]


def run(output, *extra):
    main([*TINY, "--output", str(output), *extra])
    return pd.read_csv(output / "results.csv")


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "run"
    return output, run(output)


def test_tiny_grid_end_to_end(first):
    output, df = first
    for name in ("results.csv", "results.json", "summary.md", "config.json", "cells.jsonl",
                 "methods_summary.png", "error_vs_n_park91a-lf-to-hf.png",
                 "training_curves_park91a-lf-to-hf.png", "atom_usage_park91a-lf-to-hf.png"):
        assert (output / name).stat().st_size > 0, name
    assert len(df) == 2 * len(METHODS) and set(df.method) == set(METHODS)
    for column in ("task", "seed", "n_train", "method", "noise", "n_source", "max_epochs",
                   "lr", "rmse_sd", "r2", "stability", "fit_time_s", "predict_ms_per_1000",
                   "n_trainable_params", "convergence_warnings", "cholesky_failures"):
        assert column in df, column
    assert df.rmse_sd.notna().all() and (df.rmse_sd > 0).all()
    rows = json.loads((output / "results.json").read_text())
    ql = [r for r in rows if r["method"] == "ql-prior"]
    # under the evidence, one point of the curve per strength fitted (11 at most)
    assert all(len(r["atom_usage"]) == 2 and 1 <= len(r["train_curve"]) <= 11 for r in ql)
    summary = (output / "summary.md").read_text()
    assert "**" in summary and "QL + description" in summary and "GP (target only)" in summary


def test_lora_parameter_budget_matches_queryable_lora(first):
    _, df = first
    for _, cell in df.groupby(["task", "seed", "n_train"]):
        counts = cell.set_index("method").n_trainable_params
        lora_rank = cell.set_index("method").loc["lora", "rank"]
        per_rank = counts["lora"] / lora_rank
        assert abs(counts["lora"] - counts["ql"]) <= per_rank / 2
        assert counts["ql"] == counts["ql-prior"] == counts["ql-misleading"]
        assert counts["peft-lora"] == counts["lora"]  # PEFT's LoRA at the same rank


def test_same_seed_same_numbers_and_resume_gives_the_same_table(first, tmp_path):
    output, df = first
    again = tmp_path / "again"
    shutil.copytree(output, again)
    # Interrupt: keep the first finished cell and half a line of the second. The resumed
    # run computes the second cell anew, with the same seed: the same numbers.
    cells = (again / "cells.jsonl").read_text().splitlines()
    (again / "cells.jsonl").write_text(cells[0] + "\n" + cells[1][:50])
    os.remove(again / "results.csv")
    resumed = run(again, "--jobs", "2")  # in a process pool: pool and serial agree
    assert len((again / "cells.jsonl").read_text().splitlines()) == 2
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMING), df.drop(columns=TIMING))
    with pytest.raises(SystemExit, match="another configuration"):
        main([*TINY, "--output", str(again), "--noise", "0.3"])


def test_cells_run_on_a_dask_cluster(first, tmp_path):
    from distributed import LocalCluster

    _, df = first
    task = "forrester-lf-to-hf"  # one cell, on one worker process
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        on_dask = run(tmp_path / "dask", "--tasks", task,
                      "--dask-scheduler", cluster.scheduler_address)
    pd.testing.assert_frame_equal(on_dask.drop(columns=TIMING),
                                  df[df.task == task].reset_index(drop=True).drop(columns=TIMING))


def test_summary_shows_a_spread_only_over_several_seeds():
    from benchmarks.report import summary_table

    def table(seeds):
        rows = [{"task": "t", "n_train": 16, "seed": s, "method": m, "rmse_sd": v + s / 10}
                for s in seeds for m, v in (("lora", 0.5), ("ql", 0.3))]
        return summary_table(pd.DataFrame(rows), ["lora", "ql", "gp"]).splitlines()[-1]

    assert table([0]) == "| t | 16 | 0.5000 | **0.3000** | – |"
    assert table([0, 1]) == "| t | 16 | 0.5500 ± 0.0500 | **0.3500 ± 0.0500** | – |"


def test_speed_table_prints_a_dash_where_a_cell_does_not_apply():
    from benchmarks.adapter_speed import format_row

    base = format_row("small", "base", 0.001, 0.004, None, None, None)
    lora = format_row("small", "lora", 0.004, 0.004, 0.9, 6216, 1.0)
    assert base.split()[2:] == ["1.000", "0.25", "–", "–", "–"]
    assert lora.split()[2:] == ["4.000", "1.00", "0.9", "6216", "1.00"]
    assert len(base) == len(lora)  # the columns line up


def test_headline_table_pairs_methods_on_the_same_task_size_and_seed():
    from benchmarks.report import headline_table

    # ql is 0.8x lora on every pair; ql-prior is level with ql; no ql-misleading run
    rows = [{"task": t, "n_train": 16, "seed": s, "method": m, "rmse_sd": v * (1 + s + t),
             "stability": 1.0, "fit_time_s": 2.0 if m == "ql" else 1.0}
            for t in range(3) for s in range(3)
            for m, v in (("lora", 1.0), ("ql", 0.8), ("ql-prior", 0.8))]
    text = headline_table(pd.DataFrame(rows))
    line = next(row for row in text.splitlines() if row.startswith("| QL, no prior / LoRA")
                and "test RMSE" in row)
    assert "| 0.800 (0.800–0.800) |" in line and "100% of 9" in line
    assert "| 2.000 (2.000–2.000) |" in text  # fit time
    assert "wrong description" not in text  # not run: left out
    assert "QL + description / QL, no prior | test RMSE | 1.000" in text


def test_headline_table_compares_the_best_adapter_with_the_best_gp_per_cell_and_size():
    from benchmarks.report import headline_table

    # per cell the best adapter is 0.9 (lora), the best GP 0.6 (gp-ar1 at n = 16) or
    # 1.8 (gp-nargp at n = 32); the base is in neither group
    rows = [{"task": t, "n_train": n, "seed": s, "method": m, "rmse_sd": v,
             "stability": 1.0, "fit_time_s": 1.0}
            for t in range(2) for s in range(2) for n in (16, 32)
            for m, v in (("lora", 0.9), ("finetune", 1.2), ("base", 0.1),
                         ("gp-ar1", 0.6 if n == 16 else 2.0),
                         ("gp-nargp", 0.7 if n == 16 else 1.8))]
    lines = headline_table(pd.DataFrame(rows)).splitlines()
    label = "| best adapting method / best GP per cell, n = {} |"
    at_16 = next(r for r in lines if r.startswith(label.format(16)))
    at_32 = next(r for r in lines if r.startswith(label.format(32)))
    assert "| 1.500 (1.500–1.500) |" in at_16 and "0% of 4" in at_16
    assert "| 0.500 (0.500–0.500) |" in at_32 and "100% of 4" in at_32


def test_mfk_counts_failed_choleskys_and_prints_nothing(monkeypatch, capsys):
    """SMT prints a failed Cholesky's eigenvalues (hundreds of lines each); the peer
    captures them and counts the failures instead."""
    pytest.importorskip("smt.applications")
    import numpy as np
    import scipy.linalg

    from benchmarks.peers import MFKRegressor

    cholesky, calls = scipy.linalg.cholesky, []

    def fail_twice(a, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise scipy.linalg.LinAlgError("1-th leading minor is not positive definite")
        return cholesky(a, *args, **kwargs)

    monkeypatch.setattr(scipy.linalg, "cholesky", fail_twice)
    rng = np.random.default_rng(0)
    X_low, X = rng.uniform(size=(30, 1)), rng.uniform(size=(8, 1))
    model = MFKRegressor(X_low, np.sin(6 * X_low[:, 0]), n_start=1, random_state=0)
    pred = model.fit(X, np.sin(6 * X[:, 0]) + X[:, 0]).predict(X)
    assert model.n_cholesky_failures_ == 2 and np.isfinite(pred).all()
    assert capsys.readouterr().out == ""


def test_convergence_warnings_are_counted_not_shown():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from benchmarks.cells import _ConvergenceWarnings

    counted = _ConvergenceWarnings()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        for _ in range(2):  # fit, then predict: the count adds up
            with counted:
                warnings.warn("length scale at its bound", ConvergenceWarning, stacklevel=1)
                warnings.warn("something else", UserWarning, stacklevel=1)
    assert counted.count == 2
    assert [w.category for w in shown] == [UserWarning, UserWarning]


def test_overview_sums_the_numerical_warnings_of_each_method():
    from benchmarks.report import method_overview

    rows = [{"task": "t", "n_train": 16, "seed": s, "method": m, "rmse_sd": 0.5, "r2": 0.5,
             "stability": 0.0, "fit_time_s": 1.0, "predict_ms_per_1000": 1.0,
             "n_trainable_params": 3, "convergence_warnings": w, "cholesky_failures": c}
            for s in (0, 1) for m, w, c in (("gp", 1, 0), ("mfk", 0, 3))]
    overview = method_overview(pd.DataFrame(rows), ["gp", "mfk"])
    assert overview["numerical warnings"].tolist() == [2, 6]

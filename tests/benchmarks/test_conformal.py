"""benchmarks.conformal end to end on a tiny grid, and MAPIE's cross-conformal
intervals around qlsk estimators (the recipe docs/benchmarks.md gives)."""

import numpy as np
import pandas as pd
from mapie.regression import CrossConformalRegressor

from benchmarks.conformal import main
from qlsk import MLPRegressor, MultiFidelityGPRegressor
from qlsk.simlib import load_task

TINY = ["--tasks", "forrester-lf-to-hf", "--sizes", "20", "--seeds", "0", "--n-source", "150",
        "--n-test", "100", "--max-steps", "50"]


def test_tiny_run_scores_both_intervals_of_both_estimators_and_resumes(tmp_path, capsys):
    output = tmp_path / "run"
    main([*TINY, "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    assert set(zip(df.estimator, df.interval)) == {(e, i) for e in ("gp", "lora")
                                                   for i in ("own", "cv+")}
    assert df.coverage.between(0, 1).all() and (df.width > 0).all()
    assert "tasks in 85–95%" in (output / "conformal.md").read_text()
    capsys.readouterr()
    main([*TINY, "--output", str(output)])  # resumed: nothing refitted, the same table
    assert "cell 1/1" not in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(output / "results.csv"), df)


def test_cross_conformal_intervals_around_a_qlsk_estimator_cover_new_observations():
    # a GP on the base: MAPIE clones it for its folds (clones share the fitted base)
    task = load_task("forrester-lf-to-hf", n_source=200, n_train=40, n_test=2000,
                     random_state=1)
    base = MLPRegressor(hidden_layer_sizes=(16, 16), max_epochs=30, random_state=0).fit(
        task.X_source, task.y_source)
    conformal = CrossConformalRegressor(MultiFidelityGPRegressor(base=base, random_state=0),
                                        confidence_level=0.9, method="plus", cv=5,
                                        random_state=0)
    conformal.fit_conformalize(task.X_train, task.y_train)
    mean, bounds = conformal.predict_interval(task.X_test)
    noisy = task.y_test + np.random.default_rng(0).normal(0, task.noise_std, len(task.y_test))
    inside = (noisy >= bounds[:, 0, 0]) & (noisy <= bounds[:, 1, 0])
    assert mean.shape == (len(task.X_test),) and np.all(bounds[:, 1, 0] > bounds[:, 0, 0])
    # CV+ guarantees at least 1 - 2 * 0.1 for exchangeable rows; typically about 0.9
    assert inside.mean() >= 0.8

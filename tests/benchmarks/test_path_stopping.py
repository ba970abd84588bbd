"""The study of whether the evidence's path could stop sooner, end to end on a tiny run."""

import json
import math

import pandas as pd

from benchmarks.path_stopping import main, replay

TINY = ["--tasks", "forrester-lf-to-hf", "--sizes", "30", "--seeds", "0",
        "--n-source", "150", "--n-test", "100", "--max-steps", "60"]


def test_replay_stops_by_patience_or_at_a_fall_past_the_margin():
    # log evidence per residual, over 10 residuals: best at index 1, then a fall of
    # 0.5 nats (index 2) and of 3 nats (index 3), then a rise above the best
    path = [[10.0, 0.0, 5], [1.0, 0.1, 5], [0.1, 0.05, 5], [0.01, -0.2, 5], [1e-3, 0.5, 5]]
    assert replay(path, 10, math.inf) == (1, 4)  # two strengths below the best
    assert replay(path, 10, 1.0) == (1, 4)  # the 0.5-nat fall is within the margin
    assert replay(path, 10, 0.25) == (1, 3)  # stopped at the first fall
    assert replay(path, 10, math.inf, patience=5) == (4, 5)  # the rise was past the stop


def test_tiny_run_replays_the_estimators_paths(tmp_path, capsys):
    output = tmp_path / "run"
    main([*TINY, "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    assert sorted(df.arm) == ["finetune", "lora", "ql"]
    for row in df.itertuples():
        path = json.loads(row.path)
        chosen, fitted = replay(path, row.n_residuals, math.inf)
        # the estimators stop by the patience: replayed under it, the path is whole
        assert fitted == len(path) and 0 <= chosen < len(path)
    text = (output / "path_stopping.md").read_text()
    assert "#### development tasks, n = 30 (1 tasks, 3 fits)" in text
    assert "| inf | all | 3 of 3 | 1.00 | 1.00 |" in text and "| 1 | all |" in text
    assert json.loads((output / "config.json").read_text())["optimizer"] == "lbfgs"
    assert "Could the evidence's path stop sooner?" in capsys.readouterr().out

"""The study of where the evidence's path may stop, end to end on a tiny run."""

import json
import math

import pandas as pd

from benchmarks.path_stopping import main, replay
from qlsk.adapters import evidence

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


def test_tiny_run_replays_paths_fitted_with_the_patience_alone(tmp_path, capsys):
    output = tmp_path / "run"
    main([*TINY, "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    assert sorted(df.arm) == ["finetune", "lora", "ql"]
    for row in df.itertuples():
        path = json.loads(row.path)
        chosen, fitted = replay(path, row.n_residuals, math.inf)
        # fitted with the patience alone: the path ran to its end under that rule
        assert fitted == len(path)
    assert evidence.PATH_MARGIN_NATS == 1.0  # switched off only inside the fits
    text = (output / "path_stopping.md").read_text()
    assert "| 1 (default) | all |" in text and "| inf | all | 3 of 3 | 1.00 | 1.00 |" in text
    assert json.loads((output / "config.json").read_text())["optimizer"] == "lbfgs"
    assert "Where the evidence's path may stop" in capsys.readouterr().out

"""The few-shot regime study end to end on a tiny run."""

import numpy as np
import pandas as pd

from benchmarks.fewshot_regimes import METHODS, main


def test_tiny_run_scores_every_method_and_size(tmp_path):
    output = tmp_path / "run"
    main(["--families", "mixed-2d", "--encoders", "lexical", "--sizes", "10",
          "--base-epochs", "5", "--max-epochs", "1", "--few-steps", "20",
          "--max-steps", "30", "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    assert set(df.method) == set(METHODS) and set(df.n) == {10}
    per_cell = df.groupby(["member", "n"]).method.nunique()
    assert (per_cell == len(METHODS)).all()
    assert np.isfinite(df.rmse_sd).all() and (df.rmse_sd > 0).all()
    evidence = df[df.method == "memory-evidence"]
    assert evidence.l2_strength.between(1e-4, 10).all()
    assert df[df.method == "memory-fixed"].l2_strength.isna().all()
    assert "memory-evidence / memory-fixed" in (output / "summary.md").read_text()

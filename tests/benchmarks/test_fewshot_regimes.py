"""The few-shot regime study end to end on a tiny run."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.fewshot_regimes import EVIDENCE, METHODS, main

TINY = ["--families", "mixed-2d", "--encoders", "lexical", "--sizes", "10",
        "--base-epochs", "5", "--max-epochs", "1", "--few-steps", "20", "--max-steps", "30"]


def test_tiny_run_scores_every_method_and_size_on_both_optimizers(tmp_path):
    output = tmp_path / "run"
    main([*TINY, "--compare-optimizer", "lbfgs", "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    compared = {f"{m}-lbfgs" for m in EVIDENCE}
    assert set(df.method) == set(METHODS) | compared and set(df.n) == {10}
    per_cell = df.groupby(["member", "n"]).method.nunique()
    assert (per_cell == len(METHODS) + len(compared)).all()
    assert np.isfinite(df.rmse_sd).all() and (df.rmse_sd > 0).all()
    evidence = df[df.method.isin(["memory-evidence", "memory-evidence-lbfgs"])]
    assert evidence.l2_strength.between(1e-4, 10).all()
    assert df[df.method == "memory-fixed"].l2_strength.isna().all()
    summary = (output / "summary.md").read_text()
    assert "memory-evidence / memory-fixed" in summary
    assert all(f"{m} / {m}-lbfgs" in summary for m in EVIDENCE)
    # the folder holds Adam's evidence arms: a run on L-BFGS does not mix into it
    with pytest.raises(SystemExit, match="another configuration"):
        main([*TINY, "--optimizer", "lbfgs", "--output", str(output)])
    with pytest.raises(SystemExit):  # the comparison needs another optimiser
        main([*TINY, "--compare-optimizer", "adam", "--output", str(tmp_path / "same")])

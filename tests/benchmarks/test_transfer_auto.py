"""The study of ``TransferRegressor`` (method "auto") end to end on a tiny run."""

import json

import pandas as pd
import pytest

from benchmarks.transfer_auto import main

TINY = ["--tasks", "forrester-lf-to-hf", "--sizes", "20", "--seeds", "0",
        "--n-source", "150", "--n-test", "100", "--no-mfk", "--max-steps", "20"]


def test_tiny_run_scores_the_stack_against_every_fixed_method(tmp_path, capsys):
    output = tmp_path / "run"
    main([*TINY, "--optimizer", "lbfgs", "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    assert set(df.arm) == {"auto-stack", "auto-select", "gp", "finetune", "lora", "gp-ar1",
                           "gp-nargp", "ql"}
    assert (df.rmse_sd > 0).all() and df.rmse_sd.notna().all()
    stack = df[df.arm == "auto-stack"].iloc[0]
    weights = [stack[f"weight_{k}"] for k in ("gp", "finetune", "lora")]
    assert min(weights) >= 0 and sum(weights) == pytest.approx(1)
    # "select" is the candidate of smallest CV error, refitted: the fitted arm itself
    select = df[df.arm == "auto-select"].iloc[0]
    assert select.rmse_sd == df[df.arm == select.chosen].rmse_sd.iloc[0]
    text = (output / "transfer_auto.md").read_text()
    assert "auto-stack / per-cell best of every fixed method" in text
    assert "per-cell best adapter / per-cell best GP" in text
    assert "optimiser: lbfgs" in text
    assert json.loads((output / "config.json").read_text())["optimizer"] == "lbfgs"
    assert "auto-stack" in capsys.readouterr().out
    # the folder holds L-BFGS fits: the study's Adam default does not mix into it
    with pytest.raises(SystemExit, match="another configuration"):
        main([*TINY, "--output", str(output)])

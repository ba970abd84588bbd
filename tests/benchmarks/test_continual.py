"""The continual-stage study end to end on a tiny run."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.continual import REFERENCE, main


def test_tiny_run_scores_every_stage_of_every_variant_and_resumes(tmp_path):
    output = tmp_path / "run"
    argv = ["--families", "mixed-2d", "--seeds", "0", "--encoders", "lexical",
            "--variants", "memory-replay", "replay + anchor 10",
            "--max-epochs", "2", "--base-epochs", "2", "--output", str(output)]
    main(argv)
    df = pd.read_csv(output / "results.csv")
    assert set(df.method) == {"memory-replay", "replay + anchor 10", "seq-lora", "base"}
    continual = df[df.stage.notna()]
    # after stage s every task of stages 0..s is scored: 3 stages, each variant alike
    counts = continual.groupby(["method", "stage"]).size().unstack("stage")
    assert (counts.nunique() == 1).all() and (counts.diff(axis=1).iloc[:, 1:] > 0).to_numpy().all()
    assert np.isfinite(df.rmse_sd).all() and (df.rmse_sd > 0).all()
    table = pd.read_csv(output / "comparisons.csv")
    mine = table[table.variant == "replay + anchor 10"].set_index("measure")
    assert f"forgetting: / {REFERENCE}" in mine.index
    assert mine.loc[f"earlier tasks after the last stage: / {REFERENCE}", "ratio"] != 1.0
    assert "Continual stages" in (output / "summary.md").read_text()
    before = (output / "cells.jsonl").read_text()
    main(argv)  # a rerun resumes: nothing is recomputed
    assert (output / "cells.jsonl").read_text() == before


def test_the_reference_must_run(tmp_path):
    with pytest.raises(SystemExit, match=REFERENCE):
        main(["--families", "mixed-2d", "--variants", "replay + anchor 1",
              "--output", str(tmp_path / "x")])

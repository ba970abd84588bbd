"""benchmarks.gp_kinds end to end on a tiny grid: every rule weighs the same two fits."""

import numpy as np
import pandas as pd

from benchmarks.gp_kinds import main
from qlsk.estimators.multifidelity import RULES

TINY = ["--tasks", "forrester-lf-to-hf", "--sizes", "20", "--seeds", "0", "--n-source", "150",
        "--n-test", "100", "--no-mfk"]


def test_tiny_run_weighs_the_same_fits_by_every_rule(tmp_path):
    output = tmp_path / "run"
    main([*TINY, "--output", str(output)])
    df = pd.read_csv(output / "results.csv").set_index("arm")
    assert set(df.index) == {"ar1", "nargp", *(f"auto-{r}" for r in RULES)}
    assert df.loc["auto-equal", "weight_ar1"] == 0.5
    assert df.loc["auto-loo", "weight_ar1"] in (0.0, 1.0)
    # a rule that puts all weight on one kind predicts exactly that kind
    picked = "ar1" if df.loc["auto-loo", "weight_ar1"] == 1 else "nargp"
    assert np.isclose(df.loc["auto-loo", "rmse_sd"], df.loc[picked, "rmse_sd"])
    assert df.coverage.between(0, 1).all() and (df.crps > 0).all()
    report = (output / "gp_kinds.md").read_text()
    assert "auto-stacking / per-cell best of ar1, nargp" in report

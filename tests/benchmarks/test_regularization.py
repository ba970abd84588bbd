"""benchmarks.regularization end to end on a tiny grid: files, arms, interval scores,
resume."""

import pandas as pd

from benchmarks.regularization import ADAPTERS, PEERS, main
from benchmarks.stats import interval_scores

TINY = ["--tasks", "forrester-lf-to-hf", "--sizes", "20", "--seeds", "0", "--n-source", "150",
        "--n-test", "100", "--max-steps", "50"]


def test_tiny_run_writes_every_arm_and_scores_intervals(tmp_path, capsys):
    output = tmp_path / "run"
    main([*TINY, "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    arms = {*ADAPTERS, *(f"{a}-fixed" for a in ADAPTERS), *PEERS}
    assert set(df.arm) == arms and len(df) == len(arms)
    with_std = df[~df.arm.str.endswith("-fixed")]
    assert with_std.coverage.between(0, 1).all() and (with_std.width > 0).all()
    assert df[df.arm.str.endswith("-fixed")].coverage.isna().all()
    assert df[df.arm.isin(ADAPTERS)].l2_strength.gt(0).all()
    report = (output / "regularization.md").read_text()
    assert "lora / lora-fixed" in report and "90% intervals" in report
    assert "capped at 50 full-batch steps" in report  # not to be read as the defaults
    capsys.readouterr()
    main([*TINY, "--output", str(output)])  # resumed: nothing refitted, the same table
    assert "cell 1/1" not in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(output / "results.csv"), df)


def test_optimizers_compared_on_the_same_cells(tmp_path):
    import json

    import pytest

    output = tmp_path / "run"
    main([*TINY, "--tasks", "forrester-lf-to-hf", "--optimizer", "lbfgs",
          "--compare-optimizer", "adam", "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    assert {f"{a}-adam" for a in ADAPTERS} <= set(df.arm)
    config = json.loads((output / "config.json").read_text())
    assert config["optimizer"] == "lbfgs" and config["compare_optimizer"] == "adam"
    report = (output / "regularization.md").read_text()
    assert "lora / lora-adam" in report and "optimiser: lbfgs" in report
    with pytest.raises(SystemExit):  # the two arms would be the same fits
        main([*TINY, "--optimizer", "adam", "--compare-optimizer", "adam",
              "--output", str(tmp_path / "same")])
    with pytest.raises(SystemExit, match="another configuration"):  # not mixed into Adam's
        main([*TINY, "--output", str(output)])
    alone = tmp_path / "lbfgs"  # the optimiser alone is recorded and reported
    main([*TINY, "--optimizer", "lbfgs", "--output", str(alone)])
    assert json.loads((alone / "config.json").read_text())["optimizer"] == "lbfgs"
    assert "optimiser: lbfgs" in (alone / "regularization.md").read_text()


def test_interval_scores_of_a_perfect_gaussian():
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.normal(size=200_000)
    scores = interval_scores(y, np.zeros_like(y), np.ones_like(y))
    assert abs(scores["coverage"] - 0.9) < 0.005
    assert abs(scores["width"] - 2 * 1.6449) < 1e-3
    assert abs(scores["nll"] - 0.5 * (np.log(2 * np.pi) + 1)) < 0.01
    # E|X - Y| - E|X - X'| / 2 for three standard normals: 2/sqrt(pi) - 1/sqrt(pi)
    assert abs(scores["crps"] - 1 / np.sqrt(np.pi)) < 0.005

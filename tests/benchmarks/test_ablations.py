"""Smoke tests of the ablation and Pareto benchmarks and their paired statistics."""

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import ablations, pareto
from benchmarks.stats import geometric_ratio_ci, paired_summary, wilcoxon_p

TINY = ["--tasks", "forrester-lf-to-hf", "--seeds", "0", "--max-epochs", "2"]


def test_paired_statistics():
    ratios = np.array([0.8, 0.9, 0.7, 0.85, 0.95, 0.75, 0.9, 0.8])
    mean, low, high = geometric_ratio_ci(ratios)
    assert mean == pytest.approx(np.exp(np.log(ratios).mean()))
    assert low < mean < high < 1
    assert wilcoxon_p(ratios) < 0.01  # all eight below 1
    assert np.isnan(wilcoxon_p(np.ones(5)))
    summary = paired_summary(np.array([2.0, 0.5]))
    assert summary["ratio"] == pytest.approx(1.0) and summary["better"] == 0.5
    assert summary["pairs"] == 2


def test_ablations_end_to_end_and_resume(tmp_path, capsys):
    output = tmp_path / "abl"
    argv = [*TINY, "--sizes", "12", "--n-source", "80", "--n-test", "60",
            "--base-epochs", "2", "--output", str(output)]
    ablations.main(argv)
    df = pd.read_csv(output / "results.csv")
    assert set(df.variant) == {*ablations.VARIANTS, "lora"}
    assert len(df) == len(ablations.VARIANTS) + 1
    rmse = df.set_index("variant").rmse_sd
    # the prior and the noise change the fit; a prior from another task differs again
    assert len({rmse["full"], rmse["prior"], rmse["misleading-prior"], rmse["noise"]}) == 4
    assert df.rmse_sd.gt(0).all() and df.fit_time_s.gt(0).all()
    table = pd.read_csv(output / "ablations.csv").set_index("variant")
    assert table.loc["lora", "ratio vs full"] > 0 and np.isnan(table.loc["full", "ratio vs full"])
    text = (output / "ablations.md").read_text()
    assert "RMSE vs full" in text and "gradient_diagnostics.png" in text
    assert "capped" not in text  # no --max-steps: nothing to warn of
    assert (output / "gradient_diagnostics.png").stat().st_size > 0
    curves = json.loads((output / "gradient_diagnostics.json").read_text())["curves"]
    assert len(curves) == 3
    assert all(len(c["grad_concentration"]) == 2 for c in curves.values())
    capsys.readouterr()
    ablations.main([*argv, "--no-diagnostics"])  # everything is read back
    assert "cell 1/" not in capsys.readouterr().out
    with pytest.raises(SystemExit, match="another configuration"):
        ablations.main([*argv[:-2], "--sizes", "13", "--output", str(output)])
    subset = tmp_path / "subset"
    ablations.main([*argv[:-2], "--variants", "full", "prior", "--no-diagnostics",
                    "--output", str(subset)])
    assert set(pd.read_csv(subset / "results.csv").variant) == {"full", "prior", "lora"}
    with pytest.raises(SystemExit, match="must include full"):
        ablations.main([*argv[:-2], "--variants", "prior", "--output", str(tmp_path / "x")])


def test_pareto_end_to_end_marks_a_front(tmp_path):
    output = tmp_path / "pareto"
    pareto.main([*TINY, "--ranks", "2", "--atoms", "2", "4", "--top-k", "1", "4",
                 "--lora-ranks", "1", "2", "--n-train", "12", "--n-source", "80", "--n-test", "60",
                 "--base-epochs", "2", "--output", str(output)])
    df = pd.read_csv(output / "pareto.csv")
    # k <= M: (2, 1), (4, 1), (4, 4) for Queryable LoRA, two LoRA ranks
    assert len(df) == 5 and set(df.method) == {"ql", "lora"}
    assert (df.latency_us_per_row > 0).all()
    summary = pd.read_csv(output / "pareto_summary.csv")
    assert set(summary.task) == {"forrester-lf-to-hf", "all"}
    for axis in ("latency_us_per_row", "n_trainable_params"):
        assert summary[f"front_{axis}"].any()
    for name in ("pareto_all.png", "pareto_forrester-lf-to-hf.png", "pareto.md"):
        assert (output / name).stat().st_size > 0


def test_pareto_front_keeps_only_undominated_points():
    cost, error = [1, 2, 3, 4], [4.0, 2.0, 3.0, 1.0]
    assert pareto.pareto_front(cost, error).tolist() == [True, True, False, True]


def test_defaults_benchmark_compares_defaults_with_alternatives(tmp_path):
    from benchmarks import defaults

    output = tmp_path / "defaults"
    defaults.main(["--tasks", "forrester-lf-to-hf", "--sizes", "12", "--seeds", "0",
                   "--n-source", "80", "--n-test", "60", "--max-steps", "50",
                   "--output", str(output)])
    df = pd.read_csv(output / "results.csv").set_index("arm")
    assert list(df.index) == list(defaults.ARMS)
    text = (output / "defaults.md").read_text()
    for arm, (cls, params) in defaults.ALTERNATIVES.items():
        # an alternative differs from its class's defaults
        assert any(cls().get_params()[k] != v for k, v in params.items())
        assert f"| {arm} / " in text
        assert df.loc[arm, "rmse_sd"] > 0
    assert "| ql / lora |" in text


def test_ablations_under_the_evidence_skip_the_per_epoch_diagnostics(tmp_path):
    output = tmp_path / "ev"
    ablations.main([*TINY, "--sizes", "12", "--n-source", "80", "--n-test", "60",
                    "--base-epochs", "2", "--variants", "full",
                    "--regularization", "evidence", "--max-steps", "50",
                    "--output", str(output)])
    df = pd.read_csv(output / "results.csv")
    assert set(df.variant) == {"full", "lora"} and df.rmse_sd.gt(0).all()
    config = json.loads((output / "config.json").read_text())
    assert config["regularization"] == "evidence" and config["max_steps"] == 50
    report = (output / "ablations.md").read_text()
    assert "Gradient concentration" not in report
    assert not (output / "gradient_diagnostics.png").exists()

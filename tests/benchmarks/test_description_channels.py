"""The description-channel study end to end on a tiny run."""

import numpy as np
import pandas as pd

from benchmarks.description_channels import VARIANTS, main


def test_tiny_run_scores_every_variant_and_resumes(tmp_path, capsys):
    output = tmp_path / "run"
    argv = ["--families", "mixed-2d", "--seeds", "0", "--encoders", "lexical",
            "--variants", "prior", "prior+film", "prior+film, balanced",
            "LoRA + film (no memory)",
            "--references", "conditioning", "conditioning-film",
            "--max-epochs", "1", "--output", str(output)]
    main(argv)
    df = pd.read_csv(output / "results.csv")
    assert set(df.method) == {"conditioning", "conditioning-film", "prior", "prior+film",
                              "prior+film, balanced", "LoRA + film (no memory)"}
    held = df[df.split == "heldout"]
    assert set(held.control) == {"right", "shuffled", "paraphrased"}
    assert set(df[df.split == "train"].control) == {"right"}
    assert np.isfinite(df.rmse_sd).all() and (df.rmse_sd > 0).all()
    memory = df[df.method == "prior"]
    assert memory.atoms_used.between(1, 8).all() and memory.task_spread.between(0, 1).all()
    assert (df[df.method == "LoRA + film (no memory)"].atoms_used == 1).all()
    assert df[df.method == "prior+film, balanced"].atoms_used.between(1, 8).all()
    summary = (output / "summary.md").read_text()
    assert "| prior+film |" in summary and "held out: right / shuffled" in summary
    assert "method / conditioning-film (film)" in summary
    assert "| prior+film, balanced / prior+film |" in summary  # each against its own base
    before = (output / "cells.jsonl").read_text()
    main(argv)  # a rerun resumes: nothing is recomputed
    assert (output / "cells.jsonl").read_text() == before
    assert set(VARIANTS) >= {"prior", "prior+film"}

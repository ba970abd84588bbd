"""The multi-task benchmark end to end on a tiny grid: files, rows, resume, figures."""

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks.described_tasks import _symmetric_kl, atom_entropy, forgetting, main

TINY = ["--quick", "--encoders", "lexical", "--sizes", "10", "25", "--n-per-member", "25",
        "--n-test", "20", "--n-source", "150", "--base-epochs", "2", "--max-epochs", "2",
        "--few-steps", "3", "--paraphrase-augmented"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    output = tmp_path_factory.mktemp("multitask") / "run"
    main([*TINY, "--output", str(output)])
    return output, pd.read_csv(output / "results.csv")


def test_tiny_run_writes_every_file_and_figure(tiny):
    output, _ = tiny
    for name in ("summary.md", "results.csv", "headline.csv", "config.json", "cells.jsonl",
                 "fewshot_ishigami-ab.png", "forgetting_ishigami-ab.png"):
        assert (output / name).stat().st_size > 0, name
    for figure in ("atom_usage", "usage_drift", "atom_entropy", "task_separation",
                   "route_drift"):
        assert (output / f"continual_{figure}_ishigami-ab_lexical-seed0.png").exists()
    cells = [json.loads(line) for line in (output / "cells.jsonl").read_text().splitlines()]
    assert [c["key"] for c in cells] == ["ishigami-ab|0|blind", "ishigami-ab|0|lexical"]


def test_rows_cover_methods_controls_and_sizes(tiny):
    _, df = tiny
    held = df[(df.split == "heldout") & df.stage.isna()]
    few = held[held.method == "memory-fewshot"]
    assert set(zip(few.n, few.control)) == {(n, c) for n in (10, 25)
                                            for c in ("right", "shuffled", "none")}
    for method in ("lora", "finetune", "gp", "conditioning-fewshot"):
        assert set(held[held.method == method].n) == {10, 25}, method
    zero = df[(df.n == 0) & df.stage.isna()]
    for method in ("memory", "conditioning"):
        asked = zero[zero.method == method]
        assert set(asked[asked.split == "train"].control) == {"right", "shuffled", "none"}
        # held-out members are also asked with their description paraphrased
        assert set(asked[asked.split == "heldout"].control) == {"right", "shuffled", "none",
                                                                "paraphrased"}
    headline = pd.read_csv(tiny[0] / "headline.csv")
    assert headline.comparison.str.contains("paraphrased / canonical").any()
    # with --paraphrase-augmented: both models again, trained on both wordings
    for method in ("memory-para", "conditioning-para"):
        asked = zero[(zero.method == method) & (zero.split == "heldout")]
        assert set(asked.control) == {"right", "shuffled", "none", "paraphrased"}, method
    assert headline.comparison.str.contains("trained with paraphrases / without").any()
    assert headline.comparison.str.contains("both paraphrase-augmented").any()
    assert {"base", "shared-lora"} <= set(zero.method)
    # the LoRA-factor few-shot methods train the same parameters per task
    params = held[held.method.isin(["memory-fewshot", "lora", "conditioning-fewshot"])]
    assert params.n_trainable_params.nunique() == 1
    assert np.isfinite(df.rmse_sd).all() and (df.rmse_sd > 0).all()


def test_continual_forgetting_against_sequential_lora(tiny):
    _, df = tiny
    forget = forgetting(df)
    assert set(forget.method) == {"memory", "memory-grow", "memory-replay", "seq-lora"}
    assert (forget.origin < forget["last"]).all()
    assert np.allclose(forget.forgetting, forget.final / forget.own)
    headline = pd.read_csv(tiny[0] / "headline.csv")
    assert headline.comparison.str.startswith("(c)").any()
    # each continual method's own forgetting, pooled with its interval
    own = headline[headline.comparison.str.endswith("right after its own stage")]
    assert len(own) == 4 and own.pairs.eq(len(forget) // 4).all()
    assert ((headline.low <= headline.ratio) & (headline.ratio <= headline.high)).all()


def test_rerun_resumes_without_recomputing(tiny):
    output, _ = tiny
    before = (output / "cells.jsonl").read_text()
    main([*TINY, "--output", str(output)])
    assert (output / "cells.jsonl").read_text() == before


def test_routing_statistics():
    usage = np.array([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    kl = _symmetric_kl(usage)
    assert np.allclose(kl, kl.T) and np.allclose(np.diag(kl), 0)
    assert kl[0, 1] < 1e-9 < kl[0, 2]
    entropy = atom_entropy(usage)
    # atoms 0 and 1 are shared by two of three tasks; atom 2 belongs to one; 3 is unused
    assert np.allclose(entropy[:3], [np.log(2) / np.log(3)] * 2 + [0.0])
    assert np.isnan(entropy[3])

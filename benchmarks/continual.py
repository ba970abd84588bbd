"""``python -m benchmarks.continual``: what guards the shared memory against forgetting.

The continual part of :mod:`benchmarks.described_tasks` alone, over more variants: the
training members of each family in ``n_stages`` stages, one
:class:`~qlsk.SharedMemoryRegressor` with ``warm_start=True`` per variant, every task
seen so far scored after every stage (the same families, seeds, bases, stages and
settings as that study, so its rows of the variants both run are the same numbers).
A variant is a set of parameters applied from the second stage on: replaying kept rows
(``replay_rows``), the anchor (``stage_anchor``: the earlier tasks' predictions on
their kept rows held near the last stage's, :mod:`qlsk.adapters.anchor`), or both;
every variant starts from ``stage_anchor=0`` and 32 kept rows per task, as first run,
unless it sets ``kept_rows``, which decides what every stage keeps and so applies from
the first stage.

Reported per variant, paired with the reference variant (replay, the best guard the
multi-task study found) on the same family, seed and task:

- **earlier tasks, after the last stage**: the error the guard is for;
- **forgetting**: that error over the task's error right after its own stage (the
  multi-task study's target was at most 1.2);
- **the last stage's tasks, right after it**: what the guard costs in learning the
  new tasks (plasticity).

Designs are chosen on the development families (``--development``) and reported on
the report families (the default). Cells (family, seed) resume from ``--output``.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch

from .described_tasks import DEFAULTS as DESCRIBED_DEFAULTS
from .described_tasks import FULL as DESCRIBED_FULL
from .described_tasks import (
    _base,
    _Family,
    _row,
    _same_settings,
    _sequential_lora,
    add_family_arguments,
    chosen_families,
    continual,
    forgetting,
)
from .runner import run_cells
from .stats import paired_summary

REFERENCE = "memory-replay"
VARIANTS = {
    "memory": {},
    "memory-replay": {"replay_rows": 10},
    "anchor 1": {"stage_anchor": 1.0},
    "anchor 10": {"stage_anchor": 10.0},
    "anchor 30": {"stage_anchor": 30.0},
    "anchor 100": {"stage_anchor": 100.0},
    "anchor 10, 100 rows": {"stage_anchor": 10.0, "kept_rows": 100},
    "anchor 3, 100 rows": {"stage_anchor": 3.0, "kept_rows": 100},  # the defaults
    "replay + anchor 1": {"replay_rows": 10, "stage_anchor": 1.0},
    "replay + anchor 10": {"replay_rows": 10, "stage_anchor": 10.0},
}
DEFAULTS = {
    **{k: DESCRIBED_DEFAULTS[k] for k in ("n_per_member", "n_test", "n_source", "noise",
                                          "hidden", "lr", "batch_size", "rank", "n_atoms",
                                          "top_k", "block_size", "n_stages")},
    "base_epochs": DESCRIBED_FULL["base_epochs"], "max_epochs": DESCRIBED_FULL["max_epochs"],
    "seeds": [0, 1, 2], "encoder": "semantic",
    "variants": ["memory", "memory-replay", "anchor 1", "anchor 10", "replay + anchor 1",
                 "replay + anchor 10"],
}


def run_cell(config: dict, family: str, seed: int) -> dict:
    """Every variant's stages on one family and seed."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = _Family(config, family, seed)
    base = _base(config, data)
    rows, _ = continual(config, data, base, config["encoder"],
                        {name: VARIANTS[name] for name in config["variants"]})
    rows += _sequential_lora(config, data, base)  # the task-blind reference
    for row in rows:
        row["encoder"] = config["encoder"]
    for member in data.fam.train_members:  # what "below the unadapted base" compares with
        rmse = data.score(lambda X: base.predict(X[data.features].to_numpy()), member)
        rows.append(_row(data, "blind", "base", member, "none", 0, rmse, fit_s=0.0))
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def plasticity(df: pd.DataFrame) -> pd.DataFrame:
    """The last stage's tasks right after it: one row per family, seed, method, member."""
    last = df.groupby(["family", "seed"]).stage.transform("max")
    new = df[(df.stage == last) & (df.origin == last)]
    return new[["family", "seed", "method", "member", "rmse_sd"]]


def comparisons(df: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per variant, paired with ``reference`` on (family, seed, member): earlier tasks'
    error after the last stage, forgetting, and the last stage's tasks' error."""
    forget = forgetting(df)
    new = plasticity(df)
    keys = ["family", "seed", "member"]
    rows = []
    for method in dict.fromkeys(forget.method):
        mine = forget[forget.method == method]
        rows.append({"variant": method, "measure": "forgetting (final / own)",
                     **paired_summary((mine.final / mine.own).to_numpy())})
        rows.append({"variant": method, "measure": "earlier tasks after the last stage / "
                     "the base", **paired_summary((mine.final / mine.base).to_numpy())})
        if method == reference:
            continue
        for measure, frame, column in (
                ("earlier tasks after the last stage", forget, "final"),
                ("forgetting", forget, "forgetting"),
                ("the last stage's tasks, right after it", new, "rmse_sd")):
            a = frame[frame.method == method].set_index(keys)[column]
            b = frame[frame.method == reference].set_index(keys)[column]
            paired = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
            rows.append({"variant": method, "measure": f"{measure}: / {reference}",
                         **paired_summary((paired.a / paired.b).to_numpy())})
    return pd.DataFrame(rows)


def report(records: list[dict], config: dict, output: str) -> str:
    """Write results.csv, comparisons.csv and summary.md; return the table."""
    df = pd.DataFrame([row for r in records for row in r["rows"]])
    df.to_csv(os.path.join(output, "results.csv"), index=False)
    table = comparisons(df)
    table.to_csv(os.path.join(output, "comparisons.csv"), index=False)
    shown = table.assign(ratio=table.ratio.map("{:.3f}".format),
                         ci=[f"{lo:.3f}–{hi:.3f}" for lo, hi in zip(table.low, table.high)],
                         p=table.p.map("{:.2g}".format),
                         better=[f"{b:.0%}" for b in table.better])
    text = shown[["variant", "measure", "ratio", "ci", "p", "better", "pairs"]].to_markdown(
        index=False)
    minutes = sum(r["seconds"] for r in records) / 60
    with open(os.path.join(output, "summary.md"), "w") as f:
        f.write("\n".join([
            "# Continual stages: guards against forgetting", "",
            f"{len(records)} cells ({minutes:.1f} min of compute): families "
            f"{sorted(df.family.unique())}, seeds {sorted(map(int, df.seed.unique()))}, "
            f"encoder {config['encoder']}, {config['n_stages']} stages of "
            f"{config['max_epochs']} epochs. Geometric means of paired ratios, bootstrap "
            "95% CI, Wilcoxon p; < 1: the variant has the lower error.", "", text, ""]))
    return text


def make_config(args) -> dict:
    config = dict(DEFAULTS)
    for key in ("seeds", "variants", "max_epochs", "base_epochs", "n_stages"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    if args.encoders:
        if len(args.encoders) != 1:
            raise SystemExit("give one --encoders value")
        config["encoder"] = args.encoders[0]
    unknown = sorted(set(config["variants"]) - set(VARIANTS))
    if unknown or REFERENCE not in config["variants"]:
        raise SystemExit(f"--variants must include {REFERENCE} and be among {list(VARIANTS)}"
                         f" (unknown: {unknown})")
    config["families"] = chosen_families(args)
    return config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.continual",
                                     description=__doc__.splitlines()[0])
    add_family_arguments(parser)
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"among {list(VARIANTS)}; default: "
                        f"{DEFAULTS['variants']}")
    parser.add_argument("--base-epochs", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--n-stages", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel")
    parser.add_argument("--output", default=None, help="an existing folder resumes")
    args = parser.parse_args(argv)
    config = make_config(args)
    output = args.output or os.path.join(
        os.path.dirname(__file__), "results",
        f"continual-{'development' if args.development else 'report'}")
    t0 = time.perf_counter()
    cells = [(f, s) for s in config["seeds"] for f in config["families"]]
    records = list(run_cells(run_cell, config, cells, output, same=_same_settings,
                             jobs=args.jobs).values())
    print(report(records, config, output))
    print(f"\n{len(records)} cells, {time.perf_counter() - t0:.0f} s; summary.md and "
          f"results.csv in {output}")


if __name__ == "__main__":
    main()

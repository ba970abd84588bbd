"""``python -m benchmarks.fewshot_regimes``: few-shot from the memory, fixed recipe or evidence.

For every task family and seed, on one pretrained base, a :class:`~qlsk.SharedMemoryRegressor`
and a :class:`~qlsk.ConditionedLoraRegressor` (both at their defaults) are fitted on the
training members. Then, on each held-out member and for each ``n`` in ``sizes``, its
first ``n`` noisy rows adapt:

- ``memory-fixed``: :class:`~qlsk.FewShotRegressor` with the fixed recipe (the same
  optimiser steps as :mod:`benchmarks.described_tasks` gives every few-shot fit);
- ``memory-evidence``: the same with ``regularization="evidence"`` (L2 toward the
  shared model's weights, chosen by the linearised-Laplace evidence);
- ``conditioning-fixed``: the description-as-input network from its multi-task fit,
  its map frozen (as in :mod:`benchmarks.described_tasks`);
- ``conditioning-evidence``: the same with ``regularization="evidence"``, the
  symmetric rival of ``memory-evidence``;
- ``lora-evidence``: :class:`~qlsk.LoraRegressor` at its defaults on the ``n`` rows
  alone (no description): the single-task answer.

The evidence's fits use Adam, as the published figures were measured, unless
``--optimizer lbfgs``; ``--compare-optimizer`` adds the three evidence arms on the
other optimiser (``memory-evidence-adam``, ...) to the same cells, paired in the
summary.

Settings are :mod:`benchmarks.described_tasks`'s. Designs are chosen on the development
families (``--development``) and reported on the others. RMSE on clean test rows over
the member's sd; ``cells.jsonl``, ``results.csv`` and ``summary.md`` in ``--output``
(a rerun resumes).
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from qlsk import (
    ConditionedLoraRegressor,
    FewShotRegressor,
    LoraRegressor,
    SharedMemoryRegressor,
)
from qlsk.adapters.evidence import OPTIMIZERS

from .cells import _seed, study_optimizer
from .described_tasks import (
    DEFAULTS,
    FULL,
    _few_common,
    _fit,
    add_family_arguments,
    chosen_families,
    training_members,
)
from .run import add_optimizer_arguments, record_optimizer
from .runner import run_cells, write_rows
from .stats import paired_summary, ratio_line

METHODS = ("memory-fixed", "memory-evidence", "conditioning-fixed", "conditioning-evidence",
           "lora-evidence")
SIZES = [10, 25, 50]
EVIDENCE = ("memory-evidence", "conditioning-evidence", "lora-evidence")


def _evidence_models(config, memory, conditioned, base, seed: int, optimizer: str) -> dict:
    """The three evidence arms of one member and size, on ``optimizer``."""
    settings = {"max_steps": config["max_steps"], "optimizer": optimizer,
                "random_state": seed}
    return {
        "memory-evidence": FewShotRegressor(memory, regularization="evidence", **settings),
        "conditioning-evidence": ConditionedLoraRegressor(
            init=conditioned, freeze_condition=True, regularization="evidence", **settings),
        "lora-evidence": LoraRegressor(base=base, **settings),
    }


def run_cell(config: dict, family: str, seed: int, encoder: str) -> list[dict]:
    """Every method, held-out member and size of one family, seed and encoder."""
    data, base, X, y, common = training_members(config, family, seed, encoder)
    memory = SharedMemoryRegressor(**common)
    conditioned = ConditionedLoraRegressor(**common)
    _fit(memory, X, y)
    _fit(conditioned, X, y)
    rows = []
    for member in data.fam.heldout_members:
        for n in config["sizes"]:
            X_n, y_n = data.rows([member], n)
            few = _few_common(config, n, _seed(family, seed, member, n))
            evidence = _evidence_models(config, memory, conditioned, base,
                                        few["random_state"], study_optimizer(config))
            models = {
                "memory-fixed": FewShotRegressor(memory, regularization="fixed", **few),
                "memory-evidence": evidence["memory-evidence"],
                "conditioning-fixed": ConditionedLoraRegressor(
                    init=conditioned, freeze_condition=True, regularization="fixed", **few),
                "conditioning-evidence": evidence["conditioning-evidence"],
                "lora-evidence": evidence["lora-evidence"],
            }
            if config.get("compare_optimizer"):  # the same arms on the other optimiser
                other = config["compare_optimizer"]
                models.update({f"{m}-{other}": model for m, model in _evidence_models(
                    config, memory, conditioned, base, few["random_state"], other).items()})
            for method, model in models.items():
                described = not method.startswith("lora-evidence")
                fit_s = _fit(model, X_n if described else X_n[data.features].to_numpy(), y_n)
                rmse = data.score(model.predict if described else (
                    lambda Xt, m=model: m.predict(Xt[data.features].to_numpy())), member)
                rows.append({"family": family, "seed": seed, "encoder": encoder,
                             "method": method, "member": member, "n": n, "rmse_sd": rmse,
                             "fit_s": fit_s, "l2_strength": getattr(model, "l2_strength_",
                                                                     float("nan"))})
    return rows


def summary(df: pd.DataFrame) -> str:
    """Paired ratios per size as markdown."""
    keys = ["family", "seed", "encoder", "member", "n"]
    wide = df.pivot_table(index=keys, columns="method", values="rmse_sd")
    lines = ["| comparison | n | ratio (95% CI) | p | better in |", "|---|---|---|---|---|"]
    for a, b in (("memory-evidence", "memory-fixed"), ("memory-evidence", "conditioning-fixed"),
                 ("memory-fixed", "conditioning-fixed"),
                 ("conditioning-evidence", "conditioning-fixed"),
                 ("memory-evidence", "conditioning-evidence"),
                 ("memory-evidence", "lora-evidence"), ("conditioning-fixed", "lora-evidence"),
                 ("conditioning-evidence", "lora-evidence")):
        if a not in wide or b not in wide:
            continue
        for n, part in wide.groupby(level="n"):
            lines.append(ratio_line(f"{a} / {b}", n, paired_summary(part[a] / part[b])))
    for other in OPTIMIZERS:
        for method in EVIDENCE:
            if f"{method}-{other}" not in wide:
                continue
            for n, part in wide.groupby(level="n"):
                lines.append(ratio_line(f"{method} / {method}-{other}", n,
                                        paired_summary(part[method] / part[f"{method}-{other}"])))
    times = df.groupby("method").fit_s.median().round(1).to_dict()
    lines += ["", f"median fit seconds: {times}"]
    for method in ("memory-evidence", "conditioning-evidence"):
        strengths = df[df.method == method].groupby("n").l2_strength.median().to_dict()
        lines.append(f"median strength chosen by the evidence, {method}, by n: {strengths}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fewshot_regimes",
                                     description=__doc__.splitlines()[0])
    add_family_arguments(parser, seeds=[0], encoders=["semantic"])
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES)
    parser.add_argument("--base-epochs", type=int, default=None,
                        help="epochs of the base's pretraining")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="epochs of the multi-task fits")
    parser.add_argument("--few-steps", type=int, default=None,
                        help="optimiser steps of the fixed-recipe few-shot fits")
    parser.add_argument("--max-steps", type=int, default=2000,
                        help="full-batch steps per strength of the evidence's fits (their "
                             "default)")
    add_optimizer_arguments(parser, compare=True)
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel")
    parser.add_argument("--output", default=None, help="result folder (an existing one resumes)")
    args = parser.parse_args(argv)
    families = chosen_families(args)
    config = {**DEFAULTS, **FULL, "families": families, "seeds": args.seeds,
              "encoders": args.encoders, "sizes": args.sizes, "max_steps": args.max_steps,
              "methods": list(METHODS)}  # a folder of other methods is not resumed
    for key in ("base_epochs", "max_epochs", "few_steps"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    record_optimizer(args, config)  # recorded only when not Adam: older runs resume
    output = args.output or os.path.join(
        os.path.dirname(__file__), "results",
        f"fewshot-{'dev' if args.development else 'report'}-{time.strftime('%Y%m%d-%H%M%S')}")
    cells = [(f, s, e) for e in args.encoders for s in args.seeds for f in families]
    records = run_cells(run_cell, config, cells, output, jobs=args.jobs)
    write_rows(records, output, summary)

if __name__ == "__main__":
    main()

"""``python -m benchmarks.path_stopping``: could the evidence's path stop sooner?

The adapters fit a path of L2 strengths, strongest first, and keep the fit of largest
evidence; the path stops once the evidence has been below its best for two strengths
in a row (the patience). The weakest strengths are the slowest to fit, so a rule that
stops at once when the evidence falls more than a margin below its best would save
time. The fits before a stop do not depend on the rule, so a path fitted under the
patience shows exactly what any margin would have chosen and which optimiser steps it
would have skipped: this study fits LoRA, Queryable LoRA (with the task's description)
and fine-tuning at their defaults, records each path, and replays it under margins
from 1 to 25 nats over all ``N`` residuals, and from 0.01 to 0.1 nats per residual.

Writes ``cells.jsonl`` (resumable), ``config.json``, ``results.csv`` (one row per fit,
its path as JSON) and ``path_stopping.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pandas as pd
import torch

from qlsk import LoraRegressor

from .cells import _seed, sizes_on_one_base
from .defaults import COMMON
from .regularization import (
    ADAPTERS,
    DEVELOPMENT_TASKS,
    FULL,
    QUICK,
    add_split_argument,
    development_split,
)
from .run import (
    adapter_settings,
    add_adapter_arguments,
    add_grid_arguments,
    grid_config,
    serial_study,
)

# Margins in nats over all N residuals, and per residual (N times as many nats).
MARGINS = (1.0, 5.0, 25.0, math.inf)
PER_RESIDUAL = (0.01, 0.05, 0.1)


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Fit the three adapters at every size of one task and seed; record their paths."""
    torch.set_num_threads(1)
    rows = []
    for n_train, task, base in sizes_on_one_base(config, task_name, seed):
        for name, cls in ADAPTERS.items():
            extra = ({"task_description": task.description} if name == "ql" else {})
            model = cls(base=base, random_state=_seed(task_name, seed, n_train), **extra,
                        **adapter_settings(config))
            t0 = time.perf_counter()
            model.fit(task.X_train, task.y_train)
            path = [[f["strength"], f["log_evidence"], f["steps"]]
                    for f in model.regularization_path_]
            rows.append({"task": task_name, "seed": seed, "n_train": n_train, "arm": name,
                         "n_residuals": int(np.size(task.y_train)),
                         "fit_time_s": time.perf_counter() - t0, "path": json.dumps(path)})
    return rows


def replay(path: list, n_residuals: int, margin: float, patience: int = 2) -> tuple[int, int]:
    """The index chosen and the number of strengths fitted had the path stopped by
    ``patience`` and ``margin`` (nats below the best, over ``n_residuals``)."""
    log_z = [p[1] * n_residuals for p in path]
    for i in range(len(log_z)):
        best = int(np.argmax(log_z[: i + 1]))
        if i - best >= patience or log_z[best] - log_z[i] > margin:
            return best, i + 1
    return int(np.argmax(log_z)), len(log_z)


def table(df: pd.DataFrame) -> str:
    """Per split, size and margin: fits whose choice equals the estimators' rule's, and
    the share of strengths and optimiser steps fitted."""
    out = []
    for subset, label in ((df[df.task.isin(DEVELOPMENT_TASKS)], "development tasks"),
                          (df[~df.task.isin(DEVELOPMENT_TASKS)], "other tasks")):
        for n, part_n in subset.groupby("n_train"):
            out += [f"#### {label}, n = {n} ({part_n.task.nunique()} tasks, {len(part_n)} "
                    "fits)", "", "| margin (nats) | adapter | same choice as the patience | "
                    "strengths fitted | steps fitted |", "|---|---|---|---|---|"]
            for margin in (*MARGINS, *PER_RESIDUAL):
                for arm in (*ADAPTERS, "all"):
                    part = part_n if arm == "all" else part_n[part_n.arm == arm]
                    out.append(_replayed(part, margin, arm, margin in PER_RESIDUAL))
            out.append("")
    return "\n".join(out)


def _replayed(part: pd.DataFrame, margin: float, arm: str, per_residual: bool) -> str:
    same = strengths = steps = total_strengths = total_steps = 0
    for row in part.itertuples():
        path = json.loads(row.path)
        nats = margin * row.n_residuals if per_residual else margin
        chosen, k = replay(path, row.n_residuals, nats)
        same += chosen == replay(path, row.n_residuals, math.inf)[0]
        strengths += k
        total_strengths += len(path)
        steps += sum(p[2] for p in path[:k])
        total_steps += sum(p[2] for p in path)
    label = f"{margin:g} per residual" if per_residual else f"{margin:g}"
    return (f"| {label} | {arm} | {same} of {len(part)} | "
            f"{strengths / total_strengths:.2f} | {steps / total_steps:.2f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.path_stopping",
                                     description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "2 tasks, n = 50, 1 seed")
    add_split_argument(parser)
    add_adapter_arguments(parser)
    args = parser.parse_args(argv)
    config = grid_config(args, COMMON, QUICK, FULL)
    # the estimators' own optimiser unless --optimizer says otherwise: their paths,
    # measured as they ship
    config.setdefault("optimizer", args.optimizer or LoraRegressor().optimizer)
    development_split(args, config)
    serial_study(run_cell, config, args, "path_stopping", lambda df: [
        "# Could the evidence's path stop sooner?", "",
        f"{df.task.nunique()} tasks, sizes {config['sizes']}, seeds {config['seeds']}; "
        "each path fitted as the estimators fit it (stopped after two strengths below "
        "the best) and replayed under each margin; inf is the estimators' rule.", "",
        table(df)])


if __name__ == "__main__":
    main()

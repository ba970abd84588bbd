"""``python -m benchmarks.path_stopping``: where the evidence's path of strengths may stop.

The adapters fit a path of L2 strengths, strongest first, and keep the fit of largest
evidence. The path stops after two strengths below its best (the patience) or, since
the margin rule, at once when the evidence falls more than
:data:`qlsk.adapters.evidence.PATH_MARGIN_NATS` nats below its best. The fits before
the stop do not depend on the rule, so a path fitted with the patience alone shows what
every margin would have chosen and how many of its optimiser steps it would have
skipped: this study fits LoRA, Queryable LoRA (with the task's description) and
fine-tuning at their defaults with the margin switched off, records each path, and
replays it under several margins.

Writes ``cells.jsonl`` (resumable), ``config.json``, ``results.csv`` (one row per fit,
its path as JSON) and ``path_stopping.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time

import numpy as np
import pandas as pd
import torch

from qlsk import LoraRegressor
from qlsk.adapters import evidence

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

MARGINS = (0.25, 0.5, 1.0, 2.0, math.inf)


@contextlib.contextmanager
def patience_alone():
    """Switch the margin rule off inside ``with`` (the paths stop by the patience)."""
    before = evidence.PATH_MARGIN_NATS
    evidence.PATH_MARGIN_NATS = math.inf
    try:
        yield
    finally:
        evidence.PATH_MARGIN_NATS = before


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
            with patience_alone():
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
    """Per margin and split: fits whose choice equals the patience alone's, and the
    share of strengths and optimiser steps fitted."""
    out = []
    for subset, label in ((df[df.task.isin(DEVELOPMENT_TASKS)], "development tasks"),
                          (df[~df.task.isin(DEVELOPMENT_TASKS)], "tasks the margin never saw")):
        if subset.empty:
            continue
        out += [f"#### {label} ({subset.task.nunique()} tasks, {len(subset)} fits)", "",
                "| margin (nats) | adapter | same choice as the patience alone | "
                "strengths fitted | steps fitted |", "|---|---|---|---|---|"]
        for margin in MARGINS:
            for arm in (*ADAPTERS, "all"):
                part = subset if arm == "all" else subset[subset.arm == arm]
                same = strengths = steps = total_strengths = total_steps = 0
                for row in part.itertuples():
                    path = json.loads(row.path)
                    alone, _ = replay(path, row.n_residuals, math.inf)
                    chosen, k = replay(path, row.n_residuals, margin)
                    same += chosen == alone
                    strengths += k
                    total_strengths += len(path)
                    steps += sum(p[2] for p in path[:k])
                    total_steps += sum(p[2] for p in path)
                default = " (default)" if margin == evidence.PATH_MARGIN_NATS else ""
                out.append(f"| {margin:g}{default} | {arm} | {same} of {len(part)} | "
                           f"{strengths / total_strengths:.2f} | {steps / total_steps:.2f} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.path_stopping",
                                     description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "2 tasks, n = 50, 1 seed")
    add_split_argument(parser)
    add_adapter_arguments(parser)
    args = parser.parse_args(argv)
    config = grid_config(args, COMMON, QUICK, FULL)
    # the estimators' own optimiser unless --optimizer says otherwise: the margin is a
    # default of theirs, measured as they ship
    config.setdefault("optimizer", args.optimizer or LoraRegressor().optimizer)
    development_split(args, config)
    serial_study(run_cell, config, args, "path_stopping", lambda df: [
        "# Where the evidence's path may stop", "",
        f"{df.task.nunique()} tasks, sizes {config['sizes']}, seeds {config['seeds']}; "
        "each path fitted with the patience alone (two strengths below the best) and "
        "replayed under each margin.", "", table(df)])


if __name__ == "__main__":
    main()

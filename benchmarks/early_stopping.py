"""``python -m benchmarks.early_stopping``: should the estimators stop early by default?

Fits every neural estimator at its defaults (200 epochs) with ``early_stopping`` off and
on, on tasks and seeds that the main benchmark does not report (so the choice is not
made on the figures it is judged by), plus a pure-noise target where the right answer is
the mean. Prints the geometric mean of the RMSE ratio (on / off) per method and size with
a bootstrap 95% interval over task x seed pairs, and writes ``early_stopping.csv``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch

from qlsk import LoraRegressor, MLPRegressor, QueryableLoraRegressor
from qlsk.simlib import load_task

from .stats import geometric_ratio_ci

TASKS = ["currin-lf-to-hf", "borehole-kw-range", "ishigami-b-halved", "gfunc-reweighted",
         "lim-pol-to-non"]
SEEDS = [10, 11]
SIZES = [50, 200]
METHODS = {"mlp": MLPRegressor, "lora": LoraRegressor, "ql": QueryableLoraRegressor}


def _rows(task_name: str, seed: int, n: int, base, noise_only: bool) -> list[dict]:
    task = load_task(task_name, n_source=2000, n_train=n, n_test=2000, noise=0.1,
                     random_state=seed)
    y_train, y_test = task.y_train, task.y_test
    if noise_only:  # the target is pure noise: the best prediction is the mean
        rng = np.random.default_rng(seed)
        y_train, y_test = rng.standard_normal(n), np.zeros(len(task.y_test))
    scale = y_test.std() if not noise_only else 1.0
    rows = []
    for method, cls in METHODS.items():
        for stop in (False, True):
            kw = {} if method == "mlp" else {"base": base, "regularization": "fixed"}
            model = cls(early_stopping=stop, random_state=seed, **kw)
            t0 = time.perf_counter()
            model.fit(task.X_train, y_train)
            rows.append({
                "task": task_name + (" (noise)" if noise_only else ""), "seed": seed,
                "n": n, "method": method, "early_stopping": stop,
                "rmse": float(np.sqrt(np.mean((model.predict(task.X_test) - y_test) ** 2))
                              / scale),
                "epochs": len(model.history_), "fit_s": time.perf_counter() - t0})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/early_stopping.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    done = pd.read_csv(args.output) if os.path.exists(args.output) else pd.DataFrame()
    rows = done.to_dict("records")
    for task_name in TASKS:
        for seed in SEEDS:
            source = load_task(task_name, n_source=2000, n_train=0, n_test=0,
                               random_state=seed)
            base = None
            for n in SIZES:
                for noise_only in (False, True) if task_name == TASKS[0] else (False,):
                    label = task_name + (" (noise)" if noise_only else "")
                    if len(done) and ((done.task == label) & (done.seed == seed)
                                      & (done.n == n)).any():
                        continue
                    if base is None:
                        base = MLPRegressor(random_state=seed).fit(source.X_source,
                                                                   source.y_source)
                    rows += _rows(task_name, seed, n, base, noise_only)
                    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
                    pd.DataFrame(rows).to_csv(args.output, index=False)
                    print(f"done {label} seed {seed} n {n}", flush=True)
    frame = pd.DataFrame(rows)
    wide = frame.pivot_table(index=["task", "seed", "n", "method"], columns="early_stopping",
                             values="rmse").reset_index()
    wide["ratio"] = wide[True] / wide[False]
    lines = ["| method | n | targets | RMSE ratio on/off (geo. mean) | 95% CI | on better |",
             "|---|---|---|---|---|---|"]
    for noise in (False, True):
        part = wide[wide.task.str.endswith("(noise)") == noise]
        for (method, n), group in part.groupby(["method", "n"]):
            mean, lo, hi = geometric_ratio_ci(group.ratio.to_numpy())
            lines.append(f"| {method} | {n} | {'pure noise' if noise else 'tasks'} | "
                         f"{mean:.3f} | {lo:.3f}–{hi:.3f} | "
                         f"{(group.ratio < 1).mean():.0%} of {len(group)} |")
    print("\n".join(lines))
    epochs = frame.groupby(["method", "early_stopping"]).epochs.median()
    print("\nmedian epochs run:\n" + epochs.to_string())


if __name__ == "__main__":
    main()

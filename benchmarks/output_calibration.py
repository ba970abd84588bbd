"""``python -m benchmarks.output_calibration``: should the adapters calibrate their output
by default?

Fits LoRA and Queryable LoRA with ``output_calibration`` off and on (with several
``calibration_shrinkage`` strengths) on every task of the main benchmark, at seeds it
does not report (10 and 11), so the default is not chosen on the figures it is judged
by. The budget is the main benchmark's (base: 60 epochs on 2,000 source rows; adapters:
150 epochs, lr 1e-3). Prints, per method, variant and size, the geometric mean of the
RMSE ratio (variant / off) with a bootstrap 95% interval and a Wilcoxon p-value over
task x seed pairs, and writes ``calibration.csv`` (rerun to resume).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd
import torch

from qlsk import LoraRegressor, MLPRegressor, QueryableLoraRegressor
from qlsk.simlib import list_tasks, load_task

from .stats import paired_summary

SEEDS = [10, 11]
SIZES = [50, 100]
VARIANTS = {"off": None, "shrink 0": 0.0, "shrink 25": 25.0, "shrink 100": 100.0}
METHODS = {"lora": (LoraRegressor, {"rank": 5}),
           "ql": (QueryableLoraRegressor, {"rank": 4, "n_atoms": 8, "top_k": 2})}


def _cell(task_name: str, seed: int) -> list[dict]:
    rows, base = [], None
    for n in SIZES:
        task = load_task(task_name, n_source=2000, n_train=n, n_test=2000, noise=0.1,
                         random_state=seed)
        if base is None:
            base = MLPRegressor(max_epochs=60, random_state=seed).fit(task.X_source,
                                                                      task.y_source)
        for method, (cls, params) in METHODS.items():
            for variant, shrinkage in VARIANTS.items():
                calibration = {"output_calibration": False} if shrinkage is None else {
                    "output_calibration": True, "calibration_shrinkage": shrinkage}
                model = cls(base=base, max_epochs=150, regularization="fixed", random_state=seed,
                            **params,
                            **calibration).fit(task.X_train, task.y_train)
                error = np.sqrt(np.mean((model.predict(task.X_test) - task.y_test) ** 2))
                rows.append({"task": task_name, "seed": seed, "n": n, "method": method,
                             "variant": variant, "rmse_sd": error / task.y_test.std()})
    return rows


def table(frame: pd.DataFrame) -> str:
    """Markdown: every variant against no calibration, paired over task x seed."""
    wide = frame.pivot_table(index=["task", "seed", "n", "method"], columns="variant",
                             values="rmse_sd").reset_index()
    lines = ["| method | n | variant | RMSE ratio vs off | 95% CI | Wilcoxon p | better |",
             "|---|---|---|---|---|---|---|"]
    for (method, n), group in wide.groupby(["method", "n"]):
        for variant in [v for v in VARIANTS if v != "off"]:
            s = paired_summary((group[variant] / group["off"]).to_numpy())
            lines.append(f"| {method} | {int(n)} | {variant} | {s['ratio']:.3f} | "
                         f"{s['low']:.3f}–{s['high']:.3f} | {s['p']:.3g} | "
                         f"{s['better']:.0%} of {s['pairs']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/calibration.csv")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    frame = pd.read_csv(args.output) if os.path.exists(args.output) else pd.DataFrame(
        columns=["task", "seed"])
    for task_name in list_tasks()["name"]:
        for seed in args.seeds:
            if ((frame.task == task_name) & (frame.seed == seed)).any():
                continue
            frame = pd.concat([frame, pd.DataFrame(_cell(task_name, seed))])
            os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
            frame.to_csv(args.output, index=False)
            print(f"done {task_name} seed {seed}", flush=True)
    print(table(frame))


if __name__ == "__main__":
    main()

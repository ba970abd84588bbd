"""``python -m benchmarks.defaults``: the estimators' defaults against an alternative set.

Candidate defaults come from the tuned-against-tuned run (``python -m benchmarks.tuned``,
seeds 10-12; see ``docs/benchmarks.md``). This benchmark judges them on data the choice
never saw: seeds 0-2 of every task, n = 50 and 100, each estimator at its current
defaults (nothing set but the base, the seed and, for Queryable LoRA, the task's
description) against the same estimator with the settings of :data:`ALTERNATIVES`, on
the same base and rows. The table gives geometric-mean test RMSE ratios over task x
seed x n pairs with bootstrap 95% intervals and Wilcoxon p-values.

Writes ``cells.jsonl`` (resumable), ``config.json``, ``results.csv`` and
``defaults.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from qlsk import LoraRegressor, QueryableLoraRegressor

from .cells import _seed, rmse_sd, sizes_on_one_base
from .run import (
    DEFAULTS,
    adapter_settings,
    add_adapter_arguments,
    add_grid_arguments,
    grid_config,
    serial_study,
)
from .stats import paired_summary

# Settings that differ from the current defaults; each is compared with its class at
# its defaults ("lora" and "ql" below, which set nothing).
ALTERNATIVES = {"ql-candidate": (QueryableLoraRegressor, {"block_size": 1})}
ARMS = {"lora": (LoraRegressor, {}), "ql": (QueryableLoraRegressor, {}), **ALTERNATIVES}
FULL = {"tasks": None, "sizes": [50, 100], "seeds": [0, 1, 2], "n_source": 2000,
        "n_test": 2000}
QUICK = {"tasks": ["park91a-lf-to-hf", "forrester-lf-to-hf"], "sizes": [50], "seeds": [0],
         "n_source": 1000, "n_test": 1000}
COMMON = {"noise": DEFAULTS["noise"], "hidden": DEFAULTS["hidden"], "base_epochs": 60,
          "batch_size": DEFAULTS["batch_size"], "lr": DEFAULTS["lr"]}  # lr: the base's


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Fit every arm at every size of one task and seed, on one base."""
    rows = []
    for n_train, task, base in sizes_on_one_base(config, task_name, seed):
        for arm, (cls, params) in ARMS.items():
            extra = ({"task_description": task.description}
                     if cls is QueryableLoraRegressor else {})
            model = cls(base=base, random_state=_seed(task_name, seed, n_train), **extra,
                        **params, **adapter_settings(config))
            t0 = time.perf_counter()
            model.fit(task.X_train, task.y_train)
            fit_time = time.perf_counter() - t0
            pred = model.predict(task.X_test)
            rows.append({"task": task_name, "seed": seed, "n_train": n_train, "arm": arm,
                         "rmse_sd": rmse_sd(task.y_test, pred),
                         "fit_time_s": fit_time,
                         "n_trainable_params": int(model.n_trainable_params_)})
    return rows


def table(df: pd.DataFrame) -> str:
    """Paired ratios: each alternative against its class's defaults; QL against LoRA."""
    wide = df.pivot_table(index=["task", "seed", "n_train"], columns="arm", values="rmse_sd")
    fit = df.pivot_table(index=["task", "seed", "n_train"], columns="arm",
                         values="fit_time_s")
    lines = ["| comparison | RMSE ratio (95% CI) | p | better in | fit time ratio |",
             "|---|---|---|---|---|"]
    defaults = {cls: arm for arm, (cls, params) in ARMS.items() if not params}
    pairs = [(arm, defaults[cls]) for arm, (cls, _) in ALTERNATIVES.items()]
    pairs += [(arm, "lora") for arm, (cls, _) in ARMS.items()
              if cls is QueryableLoraRegressor]
    for first, second in pairs:
        s = paired_summary(wide[first] / wide[second])
        t = paired_summary(fit[first] / fit[second])["ratio"]
        lines.append(f"| {first} / {second} | {s['ratio']:.3f} ({s['low']:.3f}–"
                     f"{s['high']:.3f}) | {s['p']:.2g} | {s['better']:.0%} of {s['pairs']} "
                     f"| {t:.2f} |")
    return "\n".join(lines)


def make_config(args) -> dict:
    config = grid_config(args, COMMON, QUICK, FULL)
    config["alternatives"] = {arm: params for arm, (_, params) in ALTERNATIVES.items()}
    return config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.defaults",
                                     description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "2 tasks, n = 50, 1 seed")
    add_adapter_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = make_config(args)
    serial_study(run_cell, config, args, "defaults", lambda df: [
        "# Current defaults against alternatives", "",
        "Alternatives: " + "; ".join(f"{arm}: {params}" for arm, (_, params)
                                     in ALTERNATIVES.items()), "",
        f"{df.task.nunique()} tasks, sizes {config['sizes']}, seeds {config['seeds']}; "
        "below 1: the first has the lower test error.", "", table(df), ""])


if __name__ == "__main__":
    main()

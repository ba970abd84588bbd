"""``python -m benchmarks.pareto``: accuracy against latency and size over r, M and k.

Sweeps Queryable LoRA over rank ``r``, atom count ``M`` and sparsity ``k`` (``k <= M``)
and plain LoRA over its rank, on one base per task and seed, at one target sample size.
Every configuration gets the same training budget (150 epochs, AdamW, lr 1e-3). Per
configuration: clean test RMSE / sd(target), prediction latency per row (median of
repeated ``predict`` calls on the test rows) and trainable parameters. The Pareto front
(lower error and lower cost, both methods together) is marked per task and over tasks.

Writes to ``--output`` (default ``benchmarks/results/pareto-<mode>``): ``cells.jsonl``
(resumable, as ``python -m benchmarks``), ``config.json``, ``pareto.csv`` (every fit),
``pareto_summary.csv`` (per task and configuration, with the front marked),
``pareto.md`` and ``pareto_<task>.png`` / ``pareto_all.png``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import numpy as np
import pandas as pd
import torch

from qlsk import LoraRegressor, QueryableLoraRegressor
from qlsk.simlib import load_task

from .cells import STUDY_OPTIMIZER, _seed, pretrain_base, rmse_sd
from .run import DEFAULTS, resolve_tasks, run_serially

FULL = {"tasks": ["park91a-lf-to-hf", "friedman-sine-doubled", "borehole-kw-range"],
        "seeds": [0, 1, 2], "ranks": [2, 4, 8, 16], "atoms": [4, 8, 16, 32],
        "top_k": [1, 2, 4], "lora_ranks": [1, 2, 4, 8, 16, 32]}
QUICK = {"tasks": ["park91a-lf-to-hf", "friedman-sine-doubled"], "seeds": [0],
         "ranks": [2, 4, 8], "atoms": [4, 8, 16], "top_k": [1, 2],
         "lora_ranks": [1, 2, 4, 8, 16, 32]}
# Output calibration off: the adapters as in the paper, whatever the estimators' default.
COMMON = {"n_train": 100, "n_source": 1000, "n_test": 1000, "base_epochs": 60,
          "max_epochs": 150, "latency_repeats": 5, "output_calibration": False,
          "regularization": "fixed",  # the sweep as reported, under the fixed recipe
          **{key: DEFAULTS[key] for key in ("noise", "lr", "batch_size", "hidden",
                                            "block_size")}}


def configurations(config: dict) -> list[dict]:
    """Every Queryable LoRA (r, M, k) with k <= M, then every LoRA rank."""
    ql = [{"method": "ql", "rank": r, "n_atoms": m, "top_k": k}
          for r, m, k in itertools.product(config["ranks"], config["atoms"], config["top_k"])
          if k <= m]
    return ql + [{"method": "lora", "rank": r, "n_atoms": None, "top_k": None}
                 for r in config["lora_ranks"]]


def _latency_us(model, X: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(X)
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times)) / len(X)


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Fit every configuration on one task and seed."""
    task = load_task(task_name, n_source=config["n_source"], n_train=config["n_train"],
                     n_test=config["n_test"], noise=config["noise"], random_state=seed)
    base = pretrain_base(config, task, task_name, seed)
    fixed = config["regularization"] == "fixed"  # else: the full-batch path's own lr
    common = {"base": base, "max_epochs": config["max_epochs"],
              "lr": config["lr"] if fixed else None,
              "batch_size": config["batch_size"], "regularization": config["regularization"],
              "output_calibration": config["output_calibration"],
              "optimizer": STUDY_OPTIMIZER,  # under the evidence: as its figures were
              "random_state": _seed(task_name, seed, config["n_train"])}
    rows = []
    for setting in configurations(config):
        if setting["method"] == "ql":
            model = QueryableLoraRegressor(
                rank=setting["rank"], n_atoms=setting["n_atoms"], top_k=setting["top_k"],
                block_size=config["block_size"], **common)
        else:
            model = LoraRegressor(rank=setting["rank"], **common)
        t0 = time.perf_counter()
        model.fit(task.X_train, task.y_train)
        fit_time = time.perf_counter() - t0
        pred = model.predict(task.X_test)
        rows.append({"task": task_name, "seed": seed, **setting,
                     "rmse_sd": rmse_sd(task.y_test, pred),
                     "latency_us_per_row": _latency_us(model, task.X_test,
                                                       config["latency_repeats"]),
                     "n_trainable_params": int(model.n_trainable_params_),
                     "fit_time_s": fit_time})
    return rows


def pareto_front(cost, error) -> np.ndarray:
    """Mask of the points no other point beats on both ``cost`` and ``error`` (lower)."""
    cost, error = np.asarray(cost, dtype=float), np.asarray(error, dtype=float)
    front = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        no_worse = (cost <= cost[i]) & (error <= error[i])
        better = (cost < cost[i]) | (error < error[i])
        front[i] = not np.any(no_worse & better)
    return front


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per task (and "all": geometric mean over tasks) and configuration, front marked.

    Error: geometric mean of RMSE / sd over seeds; latency and parameters: medians.
    """
    keys = ["method", "rank", "n_atoms", "top_k"]
    df = df.assign(n_atoms=df.n_atoms.fillna(0).astype(int),
                   top_k=df.top_k.fillna(0).astype(int), log_rmse=np.log(df.rmse_sd))
    per_task = df.groupby(["task", *keys]).agg(
        log_rmse=("log_rmse", "mean"), latency_us_per_row=("latency_us_per_row", "median"),
        n_trainable_params=("n_trainable_params", "median"),
        fit_time_s=("fit_time_s", "median")).reset_index()
    overall = per_task.groupby(keys).agg(
        log_rmse=("log_rmse", "mean"), latency_us_per_row=("latency_us_per_row", "median"),
        n_trainable_params=("n_trainable_params", "median"),
        fit_time_s=("fit_time_s", "median")).reset_index().assign(task="all")
    out = pd.concat([per_task, overall], ignore_index=True)
    out["rmse_sd"] = np.exp(out.pop("log_rmse"))
    for axis in ("latency_us_per_row", "n_trainable_params"):
        out[f"front_{axis}"] = False
        for _, group in out.groupby("task"):
            out.loc[group.index, f"front_{axis}"] = pareto_front(group[axis], group.rmse_sd)
    return out


def label(row) -> str:
    if row["method"] == "lora":
        return f"LoRA r={row['rank']}"
    return f"QL r={row['rank']} M={row['n_atoms']} k={row['top_k']}"


def plot(summary: pd.DataFrame, task: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    group = summary[summary.task == task]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, axis, xlabel in zip(axes, ("latency_us_per_row", "n_trainable_params"),
                                ("prediction latency (µs per row, batch of test rows)",
                                 "trainable parameters")):
        ql, lora = group[group.method == "ql"], group[group.method == "lora"]
        points = ax.scatter(ql[axis], ql.rmse_sd, c=np.log2(ql["rank"]), s=12 * ql.top_k ** 1.5,
                            cmap="viridis", alpha=0.75, label="Queryable LoRA (size: k)")
        ax.scatter(lora[axis], lora.rmse_sd, marker="s", color="C3", label="LoRA")
        for _, row in lora.iterrows():
            ax.annotate(f"r={row['rank']}", (row[axis], row.rmse_sd), fontsize=7)
        front = group[group[f"front_{axis}"]].sort_values(axis)
        ax.step(front[axis], front.rmse_sd, where="post", color="k", lw=1,
                label="Pareto front")
        for _, row in front[front.method == "ql"].iterrows():  # LoRA's are labelled
            ax.annotate(label(row), (row[axis], row.rmse_sd), fontsize=6,
                        xytext=(3, -8), textcoords="offset points")
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="test RMSE / sd(target)")
        ax.legend(fontsize=7)
    fig.colorbar(points, ax=axes, label="log2 rank (Queryable LoRA)")
    fig.suptitle(f"{task}: geometric mean over seeds" if task != "all"
                 else "all tasks: geometric mean of RMSE / sd over tasks and seeds")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def front_table(summary: pd.DataFrame, axis: str) -> str:
    front = summary[(summary.task == "all") & summary[f"front_{axis}"]].sort_values(axis)
    lines = ["| configuration | RMSE / sd | latency µs / row | trainable |", "|---|---|---|---|"]
    lines += [f"| {label(row)} | {row.rmse_sd:.4f} | {row.latency_us_per_row:.2f} | "
              f"{int(row.n_trainable_params):,} |" for _, row in front.iterrows()]
    return "\n".join(lines)


def make_config(args) -> dict:
    config = {**COMMON, **(QUICK if args.quick else FULL)}
    for key in ("tasks", "seeds", "ranks", "atoms", "top_k", "lora_ranks", "n_train",
                "n_source", "n_test", "base_epochs", "max_epochs", "regularization"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    resolve_tasks(config)
    return config


def run(config: dict, output: str) -> pd.DataFrame:
    """Run the cells not yet in ``output/cells.jsonl``; return every row."""
    return pd.DataFrame(run_serially(run_cell, config, output))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pareto",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 tasks, 1 seed, r in {2, 4, 8}, M in {4, 8, 16}, k in {1, 2}")
    parser.add_argument("--output", default=None, help="an existing folder resumes")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--ranks", nargs="+", type=int, default=None)
    parser.add_argument("--atoms", nargs="+", type=int, default=None)
    parser.add_argument("--top-k", nargs="+", type=int, default=None)
    parser.add_argument("--lora-ranks", nargs="+", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-source", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--base-epochs", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--regularization", choices=["evidence", "cv", "fixed"], default=None,
                        help="the adapters' regime (default: fixed, the sweep as reported)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = make_config(args)
    output = args.output or os.path.join(os.path.dirname(__file__), "results",
                                         f"pareto-{'quick' if args.quick else 'full'}")
    t0 = time.perf_counter()
    df = run(config, output)
    df.to_csv(os.path.join(output, "pareto.csv"), index=False)
    summary = summarise(df)
    summary.to_csv(os.path.join(output, "pareto_summary.csv"), index=False)
    for task in [*config["tasks"], "all"]:
        plot(summary, task, os.path.join(output, f"pareto_{task}.png"))
    text = ["# Pareto sweep", "",
            f"Tasks {config['tasks']}, seeds {config['seeds']}, n = {config['n_train']}; "
            f"QL r {config['ranks']}, M {config['atoms']}, k {config['top_k']}; LoRA r "
            f"{config['lora_ranks']}; regularization {config['regularization']!r}. Error: "
            "geometric mean over tasks and seeds.", "",
            "## Front: error against latency", "", front_table(summary, "latency_us_per_row"),
            "", "## Front: error against trainable parameters", "",
            front_table(summary, "n_trainable_params"), ""]
    with open(os.path.join(output, "pareto.md"), "w") as f:
        f.write("\n".join(text))
    print("\n".join(text))
    print(f"\n{len(df)} fits in {time.perf_counter() - t0:.0f} s; results in {output}")


if __name__ == "__main__":
    main()

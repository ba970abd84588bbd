"""``python -m benchmarks.growing_n``: where adapters overtake the multi-fidelity GPs as
the target rows grow.

Per cell (task, seed), one base pretrained on the source rows, then at every target size
``n`` (50 up to 10,000 rows): the exact GPs of :class:`qlsk.MultiFidelityGPRegressor`
(``gp-ar1``, ``gp-nargp``; their cost grows with ``n³``, so only up to
``--exact-max`` rows; above that, ``gp-ar1-subset`` and ``gp-nargp-subset`` fit them on a
random ``--exact-max`` of the rows, the classic fallback), the same two models as
stochastic variational GPs (``svgp-ar1``, ``svgp-nargp``: GPyTorch, 256 learned
inducing points, from ``--svgp-min`` rows) and the adapters at their defaults (``lora``, ``ql``,
``finetune``: regularisation chosen by the evidence). Scores: test RMSE / sd(target)
on clean targets, and fit time. The crossover ``n*`` of a task is the smallest size
from which an adapter beats every GP fitted at that size, at that size and every
larger one.

The tasks are fixed before any result: four non-control tasks outside the development
set, of 4, 5, 8 and 20 inputs. Writes ``cells.jsonl`` (resumable per task and seed),
``config.json``, ``results.csv``, ``growing_n.md`` and one plot per task,
``growing_n_<task>.png``, to ``--output``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from qlsk import FineTuneRegressor, LoraRegressor, QueryableLoraRegressor

from .cells import _seed, rmse_sd, sizes_on_one_base
from .defaults import COMMON
from .peers import make_peer
from .run import (
    adapter_settings,
    add_adapter_arguments,
    add_grid_arguments,
    grid_config,
    serial_study,
)
from .stats import group_best, paired_summary, ratio_line

TASKS = ["park91a-lf-to-hf", "friedman-sine-doubled", "robot-3-to-4-segments",
         "moon-hd-to-c2"]
FULL = {"tasks": TASKS, "sizes": [50, 200, 1000, 3000, 10000], "seeds": [0],
        "n_source": 2000, "n_test": 2000, "exact_max": 1000, "svgp_min": 1000,
        "svgp_steps": 2000, "subset_gp": True}
QUICK = {"tasks": ["park91a-lf-to-hf"], "sizes": [50, 1000], "seeds": [0],
         "n_source": 1000, "n_test": 1000, "exact_max": 1000, "svgp_min": 1000,
         "svgp_steps": 2000, "subset_gp": True}
ADAPTERS = {"lora": LoraRegressor, "ql": QueryableLoraRegressor, "finetune": FineTuneRegressor}
GPS = ("gp-ar1", "gp-nargp", "gp-ar1-subset", "gp-nargp-subset", "svgp-ar1", "svgp-nargp")


def _models(config, task, base, seed, n_train) -> dict:
    """``method: model`` for one size (the subset GPs pick their own seeded rows)."""
    models = {}
    exact = config["exact_max"]
    for kind in ("ar1", "nargp"):
        if n_train <= exact:
            models[f"gp-{kind}"] = make_peer(f"gp-{kind}", base, task, seed)
        elif config["subset_gp"]:  # the classic scalable fallback: the exact GP on a subset
            models[f"gp-{kind}-subset"] = make_peer(f"gp-{kind}", base, task, seed).set_params(
                max_rows=exact)
    if n_train >= config["svgp_min"]:
        from .scalable_gp import SVGPRegressor

        models.update({f"svgp-{kind}": SVGPRegressor(base, kind=kind, bounds=task.bounds,
                                                     n_steps=config["svgp_steps"],
                                                     random_state=seed)
                       for kind in ("ar1", "nargp")})
    # the adapters at their defaults; --max-steps caps their fits (for a quick check only)
    models.update({name: cls(base=base, random_state=seed, **adapter_settings(config))
                   for name, cls in ADAPTERS.items()})
    return models


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Fit every method at every size of one task and seed, on one base."""
    rows = []
    with threadpool_limits(1):  # as every study here: one core per cell
        for n_train, task, base in sizes_on_one_base(config, task_name, seed):
            model_seed = _seed(task_name, seed, n_train)
            models = _models(config, task, base, model_seed, n_train)
            for method, model in models.items():
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    model.fit(task.X_train, task.y_train)
                fit_time = time.perf_counter() - t0
                rows.append({"task": task_name, "seed": seed, "n_train": n_train,
                             "method": method, "fit_time_s": fit_time,
                             "convergence_warnings": len(caught),
                             "rmse_sd": rmse_sd(task.y_test, model.predict(task.X_test))})
    return rows


def crossover(df: pd.DataFrame) -> dict:
    """Per task (over the mean of its seeds): the smallest size from which the best
    adapter beats every GP fitted at that size, at every larger size too; None if none."""
    out = {}
    mean = df.groupby(["task", "n_train", "method"]).rmse_sd.mean().unstack()
    for task, part in mean.groupby(level="task"):
        part = part.droplevel("task").sort_index()
        ahead = (group_best(part, ADAPTERS) < group_best(part, GPS)).to_numpy()
        sizes = part.index.to_numpy()
        found = [n for i, n in enumerate(sizes) if ahead[i:].all()]
        out[task] = int(found[0]) if found else None
    return out


def table(df: pd.DataFrame) -> str:
    mean = df.groupby(["task", "n_train", "method"]).rmse_sd.mean().unstack()
    order = [m for m in (*GPS, *ADAPTERS) if m in mean]
    times = df.groupby(["n_train", "method"]).fit_time_s.median().unstack()
    wide = df.pivot_table(index=["task", "seed", "n_train"], columns="method",
                          values="rmse_sd")
    best_gp = group_best(wide, GPS)
    out = ["Test RMSE / sd(target), mean over seeds (best per row in bold):", "",
           "| task | n | " + " | ".join(order) + " |", "|---|---|" + "---|" * len(order)]
    for (task, n), row in mean[order].iterrows():
        best = row.min()
        cells = [("–" if np.isnan(v) else (f"**{v:.4f}**" if v == best else f"{v:.4f}"))
                 for v in row]
        out.append(f"| {task} | {n} | " + " | ".join(cells) + " |")
    out += ["", "Each adapter against the best GP fitted at the same size (ratio of RMSE, "
            "geometric mean over tasks and seeds; below 1: the adapter is better):", "",
            "| comparison | n | ratio (95% CI) | p | better in |", "|---|---|---|---|---|"]
    for name in ADAPTERS:
        for n in sorted(df.n_train.unique()):
            part = wide.xs(n, level="n_train")
            ref = best_gp.xs(n, level="n_train")
            out.append(ratio_line(f"{name} / best GP", n, paired_summary(part[name] / ref)))
    out += ["", "Crossover n* (an adapter ahead of every GP from this size on): "
            + ", ".join(f"{task}: {n if n is not None else 'none found'}"
                        for task, n in crossover(df).items()),
            "", "Median fit time (s) on one core:", "",
            times[[m for m in order if m in times]].round(1).to_markdown(), ""]
    return "\n".join(out)


def plot(df: pd.DataFrame, output: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for task, part in df.groupby("task"):
        fig, (ax_err, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
        for method, rows in part.groupby("method"):
            rows = rows.groupby("n_train")[["rmse_sd", "fit_time_s"]].mean()
            style = "--" if method in GPS else "-"
            ax_err.plot(rows.index, rows.rmse_sd, style, marker="o", label=method)
            ax_time.plot(rows.index, rows.fit_time_s, style, marker="o", label=method)
        for ax, label in ((ax_err, "test RMSE / sd(target)"), (ax_time, "fit time (s)")):
            ax.set(xscale="log", yscale="log", xlabel="target rows n", ylabel=label)
        ax_err.legend(fontsize=8)
        fig.suptitle(task)
        fig.tight_layout()
        fig.savefig(os.path.join(output, f"growing_n_{task}.png"), dpi=100)
        plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.growing_n",
                                     description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "1 task, n = 50 and 1000, 1 seed")
    parser.add_argument("--exact-max", type=int, default=None,
                        help="the largest n the exact GPs are fitted at (default 1000)")
    parser.add_argument("--svgp-min", type=int, default=None,
                        help="the smallest n the variational GPs are fitted at (default 1000)")
    parser.add_argument("--no-subset-gp", dest="subset_gp", action="store_false",
                        help="no exact GPs on a subset above --exact-max rows")
    add_adapter_arguments(parser)
    parser.add_argument("--svgp-steps", type=int, default=None,
                        help="Adam steps of each variational GP (default 2000)")
    args = parser.parse_args(argv)
    config = grid_config(args, COMMON, QUICK, FULL)
    config["subset_gp"] = args.subset_gp
    for key in ("exact_max", "svgp_min", "svgp_steps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    serial_study(run_cell, config, args, "growing_n", lambda df: [
        "# Where adapters overtake the GPs as n grows", "",
        f"Tasks {config['tasks']}, sizes {config['sizes']}, seeds {config['seeds']}; exact "
        f"GPs up to n = {config['exact_max']}, variational GPs from n = "
        f"{config['svgp_min']}.", "", table(df)], figures=plot)

if __name__ == "__main__":
    main()

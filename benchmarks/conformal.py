"""``python -m benchmarks.conformal``: the estimators' own 90% intervals against MAPIE's
cross-conformal (CV+) intervals around the same estimators, task by task.

Per cell (task, seed, n), on one base: ``MultiFidelityGPRegressor()`` and
``LoraRegressor()`` at their defaults, each scored twice on the same test rows:

- ``own``: ``mean ± 1.645 sd`` from ``predict(X, return_std=True)`` (the GP's posterior
  plus its noise; the adapter's linearised posterior plus its learned noise);
- ``cv+``: MAPIE's ``CrossConformalRegressor(method="plus", cv=5)`` around a clone of
  the same estimator (5 refits on the folds), whose coverage of a new observation is
  guaranteed near 90% for exchangeable rows, whatever the model.

Intervals are for a new observation, so they are scored on noisy test targets (the clean
ones plus noise of the training rows' level); the clean-target coverage is reported
beside. Nothing is chosen here, but the six development tasks are left out as in the
other single-task studies. Writes ``cells.jsonl`` (resumable), ``config.json``,
``results.csv`` and ``conformal.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from qlsk import LoraRegressor, MultiFidelityGPRegressor

from .cells import _seed, sizes_on_one_base
from .defaults import COMMON
from .regularization import add_split_argument, development_split
from .run import (
    adapter_settings,
    add_adapter_arguments,
    add_grid_arguments,
    grid_config,
    serial_study,
)

FULL = {"tasks": None, "sizes": [50, 100], "seeds": [0, 1], "n_source": 2000,
        "n_test": 2000}
QUICK = {"tasks": ["park91a-lf-to-hf"], "sizes": [50], "seeds": [0], "n_source": 500,
         "n_test": 500}
LEVEL = 0.9
Z = 1.6448536269514722  # the standard normal's 95% quantile: a central 90% interval


def _estimators(base, seed: int, config: dict) -> dict:
    return {"gp": MultiFidelityGPRegressor(base=base, random_state=seed),
            "lora": LoraRegressor(base=base, random_state=seed, **adapter_settings(config))}


def _scores(low, high, noisy, clean, scale: float) -> dict:
    return {"coverage": float(np.mean((noisy >= low) & (noisy <= high))),
            "coverage_clean": float(np.mean((clean >= low) & (clean <= high))),
            "width": float(np.mean(high - low) / scale)}


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Both interval kinds of both estimators at every size of one task and seed."""
    from mapie.regression import CrossConformalRegressor

    torch.set_num_threads(1)
    rows = []
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GP length scales at their bounds, calibration
        for n_train, task, base in sizes_on_one_base(config, task_name, seed):
            s = _seed(task_name, seed, n_train)
            rng = np.random.default_rng(_seed(task_name, seed, n_train, "test-noise"))
            noisy = task.y_test + rng.normal(0.0, task.noise_std, size=len(task.y_test))
            key = {"task": task_name, "seed": seed, "n_train": n_train}
            for name, estimator in _estimators(base, s, config).items():
                t0 = time.perf_counter()
                mean, std = clone(estimator).fit(task.X_train, task.y_train).predict(
                    task.X_test, return_std=True)
                own_time = time.perf_counter() - t0
                rows.append({**key, "estimator": name, "interval": "own",
                             "fit_time_s": own_time, **_scores(
                                 mean - Z * std, mean + Z * std, noisy, task.y_test,
                                 task.target_std)})
                t0 = time.perf_counter()
                conformal = CrossConformalRegressor(
                    clone(estimator), confidence_level=LEVEL, method="plus", cv=5,
                    random_state=s).fit_conformalize(task.X_train, task.y_train)
                _, bounds = conformal.predict_interval(task.X_test)
                rows.append({**key, "estimator": name, "interval": "cv+",
                             "fit_time_s": time.perf_counter() - t0, **_scores(
                                 bounds[:, 0, 0], bounds[:, 1, 0], noisy, task.y_test,
                                 task.target_std)})
    return rows


def table(df: pd.DataFrame) -> str:
    """Mean coverage, its range over tasks (each task averaged over seeds), the share
    of tasks inside 85–95%, width and fit time, per estimator, interval and n."""
    per_task = df.groupby(["estimator", "interval", "n_train", "task"])[
        ["coverage", "coverage_clean", "width", "fit_time_s"]].mean()
    groups = per_task.groupby(level=["estimator", "interval", "n_train"])
    out = pd.DataFrame({
        "coverage": groups.coverage.mean(),
        "worst task": groups.coverage.min(),
        "best task": groups.coverage.max(),
        "tasks in 85–95%": groups.coverage.apply(
            lambda c: f"{int(((c >= 0.85) & (c <= 0.95)).sum())} of {len(c)}"),
        "clean coverage": groups.coverage_clean.mean(),
        "width": groups.width.mean(),
        "median fit s": df.groupby(["estimator", "interval", "n_train"]).fit_time_s.median(),
    })
    return out.round(3).reset_index().to_markdown(index=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conformal",
                                     description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "1 task, n = 50, 1 seed")
    add_adapter_arguments(parser)
    add_split_argument(parser)
    args = parser.parse_args(argv)
    config = grid_config(args, COMMON, QUICK, FULL)
    development_split(args, config)
    serial_study(run_cell, config, args, "conformal", lambda df: [
        "# Own intervals against cross-conformal (CV+) intervals, task by task", "",
        f"{df.task.nunique()} tasks, sizes {config['sizes']}, seeds {config['seeds']}; "
        f"{LEVEL:.0%} intervals scored on noisy test targets (width in sd(target)).", "",
        table(df), ""])


if __name__ == "__main__":
    main()

"""``python -m benchmarks.gp_kinds``: how ``MultiFidelityGPRegressor(kind="auto")`` should
weigh AR1 and NARGP, and whether it beats each fixed kind and SMT's MFK.

Per cell (task, seed, n), on one base: AR1 and NARGP are fitted once, and every rule of
:func:`qlsk.estimators.multifidelity.combine` weighs those same two fits (exactly what
``kind="auto"`` with that rule predicts, without fitting them again); SMT's MFK on the
raw source rows is fitted beside them. Run ``--development`` first: the rule is chosen
on its 6 tasks at seeds 20–21, and the default is judged on the other 13 tasks at
seeds 0–2 (the plain run). Intervals are scored on noisy test targets, as in
``benchmarks.regularization``.

Writes ``cells.jsonl`` (resumable), ``config.json``, ``results.csv`` and
``gp_kinds.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from qlsk.estimators.multifidelity import KINDS, RULES, combine, gaussian_mixture

from .cells import _seed, rmse_sd, sizes_on_one_base
from .defaults import COMMON
from .peers import make_peer, smt_available
from .regularization import add_split_argument, development_split
from .run import add_grid_arguments, grid_config, serial_study
from .stats import paired_summary, ratio_line, scaled_interval_scores

FULL = {"tasks": None, "sizes": [50, 100, 200], "seeds": [0, 1, 2], "n_source": 2000,
        "n_test": 2000}
QUICK = {"tasks": ["park91a-lf-to-hf", "borehole-lf-to-hf"], "sizes": [50], "seeds": [0],
         "n_source": 1000, "n_test": 1000}


def _row(task, noisy, pred, std) -> dict:
    return {**scaled_interval_scores(noisy, pred, std, task.target_std),
            "rmse_sd": rmse_sd(task.y_test, pred)}


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Fit AR1, NARGP (and MFK) at every size of one task and seed; weigh by each rule."""
    rows = []
    with threadpool_limits(1):  # small factorisations: a threaded BLAS only contends
        for n_train, task, base in sizes_on_one_base(config, task_name, seed):
            rng = np.random.default_rng(_seed(task_name, seed, n_train, "test-noise"))
            noisy = task.y_test + rng.normal(0.0, task.noise_std, size=len(task.y_test))
            key = {"task": task_name, "seed": seed, "n_train": n_train}
            fits, preds, times = {}, {}, {}
            for kind in KINDS:
                model = make_peer(f"gp-{kind}", base, task, _seed(task_name, seed, n_train))
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    model.fit(task.X_train, task.y_train)
                times[kind] = time.perf_counter() - t0
                fits[kind], preds[kind] = model.fits_[kind], model.predict(task.X_test, True)
                rows.append({**key, "arm": kind, "fit_time_s": times[kind],
                             "convergence_warnings": len(caught),
                             **_row(task, noisy, *preds[kind])})
            loo = [fits[k] for k in KINDS]
            for rule in RULES:
                weights = combine([f.loo_mean for f in loo], [f.loo_std for f in loo],
                                  task.y_train, [f.log_marginal_likelihood for f in loo], rule)
                rows.append({**key, "arm": f"auto-{rule}", "fit_time_s": sum(times.values()),
                             "weight_ar1": float(weights[0]),
                             **_row(task, noisy, *gaussian_mixture(
                                 weights, [preds[k] for k in KINDS]))})
            if config["mfk"]:
                model = make_peer("mfk", base, task, _seed(task_name, seed, n_train))
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    model.fit(task.X_train, task.y_train)
                pred = model.predict(task.X_test)
                rows.append({**key, "arm": "mfk", "fit_time_s": time.perf_counter() - t0,
                             "convergence_warnings": len(caught),
                             "cholesky_failures": model.n_cholesky_failures_,
                             "rmse_sd": rmse_sd(task.y_test, pred)})
    return rows


def table(df: pd.DataFrame) -> str:
    """Each auto rule against each fixed kind, MFK and the per-cell best; intervals."""
    wide = df.pivot_table(index=["task", "seed", "n_train"], columns="arm", values="rmse_sd")
    fixed = [a for a in ("ar1", "nargp", "mfk") if a in wide]
    out = [f"{df.task.nunique()} tasks; RMSE ratios (geometric mean, bootstrap 95% CI, "
           "Wilcoxon p); below 1: the first is better.", "",
           "| comparison | n | ratio (95% CI) | p | better in |", "|---|---|---|---|---|"]
    for rule in RULES:
        arm = f"auto-{rule}"
        for other in [*fixed, "best"]:
            for n in sorted(df.n_train.unique()):
                part = wide.xs(n, level="n_train")
                ref = part[fixed].min(axis=1) if other == "best" else part[other]
                named = f"per-cell best of {', '.join(fixed)}" if other == "best" else other
                label = f"{arm} / {named}"
                out.append(ratio_line(label, n, paired_summary(part[arm] / ref)))
    out += ["", "Mean weight of AR1 under each rule:", "",
            df.dropna(subset=["weight_ar1"]).groupby(["arm", "n_train"]).weight_ar1.mean()
            .unstack().round(2).to_markdown(), ""]
    scored = df.dropna(subset=["coverage"])
    summary = scored.groupby(["arm", "n_train"])[["coverage", "width", "nll", "crps"]].mean()
    summary["coverage min–max over tasks"] = scored.groupby(["arm", "n_train"]).apply(
        lambda g: f"{g.groupby('task').coverage.mean().min():.2f}–"
                  f"{g.groupby('task').coverage.mean().max():.2f}", include_groups=False)
    out += ["90% intervals on noisy test targets (width, CRPS in sd(target)):", "",
            summary.round(3).to_markdown(), "", "Median fit time (s):", "",
            df.groupby(["arm", "n_train"]).fit_time_s.median().unstack().round(2)
            .to_markdown(), ""]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gp_kinds",
                                     description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "2 tasks, n = 50, 1 seed")
    add_split_argument(parser)
    parser.add_argument("--no-mfk", dest="mfk", action="store_false",
                        help="leave SMT's MFK out (it is the slowest arm)")
    args = parser.parse_args(argv)
    config = grid_config(args, COMMON, QUICK, FULL)
    config["mfk"] = bool(args.mfk and smt_available())
    development_split(args, config)
    name = "gp_kinds-dev" if args.development else "gp_kinds"
    serial_study(run_cell, config, args, name, lambda df: [
        "# How MultiFidelityGPRegressor(kind='auto') weighs AR1 and NARGP", "",
        f"Sizes {config['sizes']}, seeds {config['seeds']}.", "", table(df)])


if __name__ == "__main__":
    main()

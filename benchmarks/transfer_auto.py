"""``python -m benchmarks.transfer_auto``: ``TransferRegressor`` (method "auto") against
every fixed method and the per-cell best.

Per cell (task, seed, n), on one base: ``TransferRegressor`` at its defaults (5-fold
cross-validation over the multi-fidelity GP, fine-tuning and LoRA, stacked); the same
three candidates fitted alone on all rows (what it refits, seed for seed); the
candidate of smallest cross-validated error among those fits (what
``strategy="select"`` predicts, from the same folds); and the other fixed methods: the
GP's two kinds alone, Queryable LoRA and SMT's MFK. ``--development`` runs the 6 tasks and
seeds 20–21 where the strategy is chosen; the plain run judges it on the other 13 tasks
at seeds 0–1.

Writes ``cells.jsonl`` (resumable), ``config.json``, ``results.csv`` and
``transfer_auto.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from qlsk import QueryableLoraRegressor, TransferRegressor
from qlsk.estimators.transfer import default_candidates

from .cells import _seed, rmse_sd, sizes_on_one_base
from .defaults import COMMON
from .peers import make_peer, smt_available
from .regularization import add_split_argument, development_split
from .report import ADAPTING, GPS
from .run import (
    adapter_settings,
    add_adapter_arguments,
    add_grid_arguments,
    grid_config,
    serial_study,
)
from .stats import group_best, paired_summary, ratio_line

FULL = {"tasks": None, "sizes": [50, 100], "seeds": [0, 1], "n_source": 2000,
        "n_test": 2000}
QUICK = {"tasks": ["park91a-lf-to-hf"], "sizes": [50], "seeds": [0], "n_source": 1000,
         "n_test": 1000}
FIXED = ("gp", "finetune", "lora", "gp-ar1", "gp-nargp", "ql", "mfk")


def _timed(model, task):
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(task.X_train, task.y_train)
    return time.perf_counter() - t0, len(caught)


def _candidates(config: dict) -> dict:
    """``default_candidates()`` with the adapters on the study's optimiser: Adam unless
    ``--optimizer`` says otherwise, as the first published figures were measured
    (L-BFGS became the estimators' default after); ``--max-steps`` where given."""
    candidates = default_candidates()
    for name in ("finetune", "lora"):
        candidates[name].set_params(**adapter_settings(config))
    return candidates


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Every arm at every size of one task and seed, on one base."""
    torch.set_num_threads(1)
    rows = []
    with threadpool_limits(1):
        for n_train, task, base in sizes_on_one_base(config, task_name, seed):
            s = _seed(task_name, seed, n_train)
            key = {"task": task_name, "seed": seed, "n_train": n_train}
            fits = {}  # "auto-stack": the default 5 folds; "auto-stack-cvK": K folds
            for folds in (5, *config.get("extra_folds", ())):
                arm = "auto-stack" if folds == 5 else f"auto-stack-cv{folds}"
                fits[arm] = TransferRegressor(base=base, candidates=_candidates(config), cv=folds,
                                              random_state=s)
                fit_time, _ = _timed(fits[arm], task)
                rows.append({**key, "arm": arm, "chosen": fits[arm].chosen_,
                             "fit_time_s": fit_time,
                             "rmse_sd": rmse_sd(task.y_test, fits[arm].predict(task.X_test)),
                             **{f"weight_{k}": v for k, v in fits[arm].weights_.items()},
                             **{f"cv_rmse_{k}": v["rmse"]
                                for k, v in fits[arm].cv_results_.items()}})
                if folds == 5:
                    auto, auto_time = fits[arm], fit_time
            preds = {}
            arms = {name: model.set_params(base=base, random_state=s)
                    for name, model in _candidates(config).items()}
            arms["gp-ar1"] = make_peer("gp-ar1", base, task, s)
            arms["gp-nargp"] = make_peer("gp-nargp", base, task, s)
            arms["ql"] = QueryableLoraRegressor(base=base, random_state=s,
                                                **adapter_settings(config),
                                                task_description=task.description)
            if config["mfk"]:
                arms["mfk"] = make_peer("mfk", base, task, s)
            for name, model in arms.items():
                fit_time, caught = _timed(model, task)
                preds[name] = np.ravel(model.predict(task.X_test))
                rows.append({**key, "arm": name, "fit_time_s": fit_time,
                             "warnings": caught, "rmse_sd": rmse_sd(task.y_test, preds[name])})
            # strategy="select" refits the candidate of smallest CV error: the same fit
            chosen = min(auto.cv_results_, key=lambda k: auto.cv_results_[k]["rmse"])
            rows.append({**key, "arm": "auto-select", "chosen": chosen,
                         "fit_time_s": auto_time, "rmse_sd": rmse_sd(task.y_test,
                                                                     preds[chosen])})
    return rows


def table(df: pd.DataFrame) -> str:
    """Each strategy against every fixed method and the per-cell best of all of them."""
    wide = df.pivot_table(index=["task", "seed", "n_train"], columns="arm", values="rmse_sd")
    fixed = [a for a in FIXED if a in wide]
    out = [f"{df.task.nunique()} tasks; RMSE ratios (geometric mean, bootstrap 95% CI, "
           "Wilcoxon p); below 1: the first is better.", "",
           "| comparison | n | ratio (95% CI) | p | better in |", "|---|---|---|---|---|"]
    fewer = sorted(a for a in wide if a.startswith("auto-stack-cv"))
    for arm in ("auto-select", "auto-stack", *fewer):
        for other in [*fixed, "best", *(["auto-stack"] if arm in fewer else [])]:
            for n in sorted(df.n_train.unique()):
                part = wide.xs(n, level="n_train")
                ref = part[fixed].min(axis=1) if other == "best" else part[other]
                named = "per-cell best of every fixed method" if other == "best" else other
                out.append(ratio_line(f"{arm} / {named}", n, paired_summary(part[arm] / ref)))
    for n in sorted(df.n_train.unique()):
        part = wide.xs(n, level="n_train")
        out.append(ratio_line("per-cell best adapter / per-cell best GP", n, paired_summary(
            group_best(part, ADAPTING) / group_best(part, GPS))))
    chosen = df[df.arm == "auto-select"].groupby("n_train").chosen.value_counts().unstack()
    weights = df[df.arm == "auto-stack"].groupby("n_train")[
        [c for c in df if c.startswith("weight_")]].mean().round(2)
    out += ["", "What `auto-select` chose (cells):", "", chosen.fillna(0).astype(int)
            .to_markdown(), "", "Mean weights of `auto-stack`:", "", weights.to_markdown(),
            "", "Median fit time (s):", "",
            df.groupby(["arm", "n_train"]).fit_time_s.median().unstack().round(2)
            .to_markdown(), ""]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer_auto",
                                     description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "1 task, n = 50, 1 seed")
    add_split_argument(parser)
    parser.add_argument("--no-mfk", dest="mfk", action="store_false",
                        help="leave SMT's MFK out")
    parser.add_argument("--extra-folds", nargs="+", type=int, default=[],
                        help="also run auto with these numbers of folds (arms "
                             "auto-stack-cvK), against its default 5")
    add_adapter_arguments(parser)
    args = parser.parse_args(argv)
    config = grid_config(args, COMMON, QUICK, FULL)
    if any(k < 2 for k in args.extra_folds):
        parser.error(f"--extra-folds needs numbers of folds of at least 2, got "
                     f"{args.extra_folds}")
    if set(args.extra_folds) - {5}:  # a run without them keeps its earlier configuration
        config["extra_folds"] = sorted(set(args.extra_folds) - {5})
    config["mfk"] = bool(args.mfk and smt_available())
    development_split(args, config)
    name = "transfer_auto-dev" if args.development else "transfer_auto"
    serial_study(run_cell, config, args, name, lambda df: [
        "# TransferRegressor (method 'auto') against every fixed method", "",
        f"Sizes {config['sizes']}, seeds {config['seeds']}.", "", table(df)])


if __name__ == "__main__":
    main()

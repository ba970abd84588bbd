"""``python -m benchmarks.tuned``: every neural method tuned with the same Optuna budget.

For every task of :mod:`qlsk.simlib` and seed, one base is pretrained on the source
rows, and LoRA, Queryable LoRA (with the task's description) and fine-tuning each get
their own Optuna study of ``--trials`` trials (30 by default) over their full space
(:data:`SPACES`), scored by 3-fold cross-validation on the ``n_train`` target rows, with
median pruning on the first fold's validation loss (so every fit uses early stopping;
``max_epochs`` is its cap). The best trial is refitted on all target rows and scored on
the test rows. Fine-tuning has no adapter hyperparameters and gets the same number of
trials over the optimiser's.

The studies live in one Optuna storage (a journal file in ``--output`` by default, or a
``postgresql://`` URL) shared by ``--workers`` processes, or by workers on a Dask
cluster (``--dask-scheduler``). A worker claims a whole study and runs its trials one
after another, so a study's trials do not depend on how many workers share the
storage: the same seed gives the same search. An interrupted run resumes: trials that
were running are marked failed and not counted, and the study goes on to its budget.
Start one launcher per storage at a time: on starting, it releases the claims that the
workers of an earlier, interrupted launch still held.
The test score of each study is stored in the study's user attributes.

Writes ``tuned.md`` (per-task table, paired ratios with bootstrap intervals and
Wilcoxon p-values, wins per task, the tuned hyperparameters and where they sit in each
search space, fANOVA importances), ``results.csv`` and ``importances.png`` (fANOVA
importance of each hyperparameter, mean over studies).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from qlsk import FineTuneRegressor, LoraRegressor, QueryableLoraRegressor
from qlsk.simlib import load_task
from qlsk.tuning import make_storage, refit_best, tune

from .cells import _seed, pretrain_base, rmse_sd
from .run import (
    DEFAULTS,
    adapter_settings,
    add_adapter_arguments,
    capped_note,
    record_optimizer,
    resolve_tasks,
)
from .runner import executor
from .stats import paired_summary

METHODS = ("lora", "ql", "finetune", "ql-noise")
_OPTIMISER = {"lr": FloatDistribution(1e-4, 1e-2, log=True),
              "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
              "max_epochs": IntDistribution(50, 400, log=True)}
SPACES = {
    "lora": {**_OPTIMISER, "rank": IntDistribution(1, 16, log=True)},
    "ql": {**_OPTIMISER, "rank": IntDistribution(2, 16, log=True),
           "n_atoms": IntDistribution(4, 32, log=True), "top_k": IntDistribution(1, 4),
           "prior_strength": FloatDistribution(0.0, 4.0),
           "block_size": IntDistribution(1, 3),
           "temperature": FloatDistribution(0.25, 4.0, log=True)},
    "finetune": dict(_OPTIMISER),
}
# Queryable LoRA with noisy top-k routing searched too: the routing regulariser that the
# ablations point to, tried as an option (not run by default).
SPACES["ql-noise"] = {**SPACES["ql"], "routing_noise": FloatDistribution(0.0, 2.0)}
# Under regularization="evidence" (the estimators' default) the penalty's strength and
# the number of steps are the evidence's, so the optimiser's space keeps ``lr`` alone;
# a full-batch path has no epochs, so there is no pruning either.
EVIDENCE_SPACES = {method: {k: v for k, v in space.items()
                            if k not in ("weight_decay", "max_epochs")}
                   for method, space in SPACES.items()}
# Seeds the main benchmark does not report (it uses 0-2), so that defaults chosen from
# this run are judged there on other data.
FULL = {"tasks": None, "seeds": [10, 11, 12], "n_train": 100, "n_source": 2000,
        "n_test": 2000, "trials": 30, "methods": ["lora", "ql", "finetune"]}
QUICK = {"tasks": ["park91a-lf-to-hf", "forrester-lf-to-hf"], "seeds": [10],
         "n_train": 100, "n_source": 1000, "n_test": 1000, "trials": 4,
         "methods": ["lora", "ql", "finetune"]}
COMMON = {"noise": DEFAULTS["noise"], "batch_size": DEFAULTS["batch_size"],
          "hidden": DEFAULTS["hidden"], "base_epochs": 60, "lr": DEFAULTS["lr"],  # the base's
          "cv": 3, "regularization": "fixed"}
# Study names: one per task, seed and method; a claim marks a study a worker runs.
_CLAIM = "claim:"


def study_name(task: str, seed: int, method: str) -> str:
    return f"{task}|{seed}|{method}"


def _estimator(method: str, base, description: str, seed: int, config: dict):
    # "fixed": the study as it was first run (docs/benchmarks.md); "evidence": the default
    common = {"base": base, "batch_size": config["batch_size"], "random_state": seed,
              "regularization": config["regularization"], **adapter_settings(config)}
    if method == "lora":
        return LoraRegressor(**common)
    if method in ("ql", "ql-noise"):
        return QueryableLoraRegressor(task_description=description, **common)
    return FineTuneRegressor(**common)


def counted(trials) -> list:
    """The trials that count against the budget, by number: all but interrupted ones."""
    return sorted((t for t in trials if t.state != TrialState.RUNNING
                   and not t.user_attrs.get("interrupted")), key=lambda t: t.number)


def _mark_interrupted(study) -> None:
    """Trials left running by a killed worker: failed, and not counted."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _claim(storage, name: str) -> bool:
    try:
        storage.create_new_study(directions=[optuna.study.StudyDirection.MAXIMIZE],
                                 study_name=_CLAIM + name)
        return True
    except optuna.exceptions.DuplicatedStudyError:
        return False


def release_claims(storage) -> None:
    """Forget which worker held which study (call before any worker starts)."""
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name.startswith(_CLAIM):
            optuna.delete_study(study_name=summary.study_name, storage=storage)


def run_study(config: dict, storage, name: str, seed: int, method: str, base, task) -> None:
    """Run one study to its budget, refit its best trial and store the test score."""
    key = study_name(name, seed, method)
    estimator = _estimator(method, base, task.description, _seed(name, seed, "tuned"), config)
    try:
        study = optuna.load_study(study_name=key, storage=storage)
        _mark_interrupted(study)
        left = config["trials"] - len(counted(study.get_trials(deepcopy=False)))
    except KeyError:
        study, left = None, config["trials"]
    t0 = time.perf_counter()
    fixed = config["regularization"] == "fixed"
    space = (SPACES if fixed else EVIDENCE_SPACES)[method]
    if not fixed and adapter_settings(config)["optimizer"] == "lbfgs":
        space = {k: v for k, v in space.items() if k != "lr"}  # its line search's step
    if left > 0:
        study, _ = tune(estimator, task.X_train, task.y_train, n_trials=left,
                        search_space=space, cv=config["cv"],
                        pruner="median" if fixed else None, storage=storage,
                        study_name=key, random_state=seed, refit=False)
    search_time = time.perf_counter() - t0 + study.user_attrs.get("search_time_s", 0.0)
    study.set_user_attr("search_time_s", search_time)
    trials = counted(study.get_trials())[:config["trials"]]
    t0 = time.perf_counter()
    best = refit_best(estimator, study, task.X_train, task.y_train, trials=trials)
    fit_time = time.perf_counter() - t0
    pred = best.predict(task.X_test)
    rmse = rmse_sd(task.y_test, pred)
    states = [t.state.name for t in trials]
    study.set_user_attr("result", {
        "task": name, "seed": seed, "method": method, "n_train": config["n_train"],
        "rmse_sd": rmse, "refit_time_s": fit_time, "search_time_s": search_time,
        "n_trainable_params": int(best.n_trainable_params_),
        "best_params": {k: best.get_params()[k] for k in space},
        "cv_r2": float(max(t.value for t in trials if t.state == TrialState.COMPLETE)),
        "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL")})


def worker(config: dict, storage_url: str, worker_id: int) -> int:
    """Claim unfinished studies one by one and run them; return how many it ran."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(storage_url)
    ran = 0
    for name in config["tasks"]:
        for seed in config["seeds"]:
            task = base = None
            for method in config["methods"]:
                key = study_name(name, seed, method)
                if _result(storage, key) is not None or not _claim(storage, key):
                    continue
                if base is None:
                    task = load_task(name, n_source=config["n_source"],
                                     n_train=config["n_train"], n_test=config["n_test"],
                                     noise=config["noise"], random_state=seed)
                    base = pretrain_base(config, task, name, seed)
                t0 = time.perf_counter()
                run_study(config, storage, name, seed, method, base, task)
                ran += 1
                print(f"worker {worker_id}: {key} in {time.perf_counter() - t0:.0f} s",
                      flush=True)
    return ran


def _result(storage, key: str):
    try:
        study_id = storage.get_study_id_from_name(key)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id).get("result")


def run(config: dict, storage_url: str, workers: int, dask_scheduler=None) -> None:
    """Start the workers on the storage and wait until every study is done (none are
    started when every study already is)."""
    studies = len(config["tasks"]) * len(config["seeds"]) * len(config["methods"])
    if len(results(config, storage_url)) == studies:
        return
    release_claims(make_storage(storage_url))
    with executor(workers, dask_scheduler) as (submit, completed):
        for future in completed([submit(worker, config, storage_url, i)
                                 for i in range(workers)]):
            future.result()


def results(config: dict, storage_url: str) -> pd.DataFrame:
    """One row per finished study of ``config`` (studies still running are left out)."""
    storage = make_storage(storage_url)
    rows = [_result(storage, study_name(t, s, m)) for t in config["tasks"]
            for s in config["seeds"] for m in config["methods"]]
    return pd.DataFrame([r for r in rows if r is not None])


def _paired(df: pd.DataFrame, method: str, reference: str) -> dict | None:
    wide = df.pivot_table(index=["task", "seed"], columns="method", values="rmse_sd")
    if method not in wide or reference not in wide:
        return None
    wide = wide[[method, reference]].dropna()
    if wide.empty:
        return None
    summary = paired_summary(wide[method] / wide[reference])
    per_task = np.exp(np.log(wide[method] / wide[reference]).groupby(level="task").mean())
    summary["task_wins"] = int((per_task < 1).sum())
    summary["tasks"] = len(per_task)
    return summary


def report(df: pd.DataFrame, config: dict) -> str:
    """The markdown summary of the finished studies."""
    methods = [m for m in config["methods"] if m in set(df.method)]
    gm = df.groupby(["task", "method"]).rmse_sd.apply(lambda v: float(np.exp(np.log(v).mean())))
    lines = ["# Tuned against tuned", "", *capped_note(config),
             f"{df.groupby('method').size().to_dict()} finished studies of "
             f"{len(config['tasks']) * len(config['seeds'])} per method; n = "
             f"{config['n_train']}, seeds {config['seeds']}, {config['trials']} trials "
             f"per study, {config['cv']}-fold CV, "
             + ("median pruning." if config["regularization"] == "fixed" else
                "regularisation chosen by the evidence, no pruning."), "",
             "## Paired ratios (test RMSE, below 1: the first method is better)", "",
             "| comparison | ratio | 95% CI | p (Wilcoxon) | better in | tasks won |",
             "|---|---|---|---|---|---|"]
    for method, reference in (("ql", "lora"), ("finetune", "lora"), ("ql", "finetune"),
                              ("ql-noise", "lora"), ("ql-noise", "ql")):
        s = _paired(df, method, reference)
        if s is not None:
            lines.append(f"| {method} / {reference} | {s['ratio']:.3f} | {s['low']:.3f}–"
                         f"{s['high']:.3f} | {s['p']:.2g} | {s['better']:.0%} of "
                         f"{s['pairs']} | {s['task_wins']} of {s['tasks']} |")
    time_ratio = df.pivot_table(index=["task", "seed"], columns="method",
                                values="search_time_s")
    if {"ql", "lora"} <= set(time_ratio):
        ratio = paired_summary((time_ratio.ql / time_ratio.lora).dropna())
        lines += ["", f"Search time ql / lora: {ratio['ratio']:.2f} "
                      f"({ratio['low']:.2f}–{ratio['high']:.2f}); median search per study: "
                  + ", ".join(f"{m} {df[df.method == m].search_time_s.median():.0f} s"
                              for m in methods)]
    lines += ["", "## Test RMSE / sd per task (geometric mean over seeds)", "",
              "| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for task in dict.fromkeys(df.task):
        values = {m: gm.get((task, m), np.nan) for m in methods}
        best = min(values, key=lambda m: values[m] if np.isfinite(values[m]) else np.inf)
        lines.append(f"| {task} | " + " | ".join(
            (f"**{v:.4f}**" if m == best else f"{v:.4f}") for m, v in values.items()) + " |")
    lines += ["", "## Where the tuned values sit in each search space", "",
              "position: median quantile of the tuned value under the search distribution "
              "(0.5 = no preference); p: Mann-Whitney U against draws from it.", "",
              preferences(df).to_markdown(index=False, floatfmt=".3g")]
    lines += ["", "## Tuned hyperparameters (median, or counts of each value)", ""]
    for method in methods:
        params = pd.DataFrame(list(df[df.method == method].best_params))
        parts = []
        for col in params:
            if col in ("top_k", "block_size"):
                parts.append(f"{col} " + ", ".join(
                    f"{k}: {v}" for k, v in sorted(params[col].value_counts().items())))
            else:
                q = params[col].quantile([0.25, 0.5, 0.75])
                parts.append(f"{col} {q[0.5]:.3g} ({q[0.25]:.3g}–{q[0.75]:.3g})")
        lines.append(f"- {method}: " + "; ".join(parts))
    return "\n".join(lines)


def _prior_sample(dist, n: int = 20000, seed: int = 0) -> np.ndarray:
    """Draws from a search distribution as a sampler without information would make."""
    rng = np.random.default_rng(seed)
    low, high = float(dist.low), float(dist.high)
    integer = isinstance(dist, IntDistribution)
    if integer:  # Optuna's integer draws: continuous on [low - 0.5, high + 0.5], rounded
        low, high = low - 0.5, high + 0.5
    if dist.log:
        values = np.exp(rng.uniform(np.log(max(low, 1e-12)), np.log(high), n))
    else:
        values = rng.uniform(low, high, n)
    return np.clip(np.round(values), dist.low, dist.high) if integer else values


def preferences(df: pd.DataFrame) -> pd.DataFrame:
    """Where the tuned values of each hyperparameter sit within its search space.

    ``position``: the median over studies of the tuned value's quantile under the
    search distribution (0.5: no preference; near 0 or 1: the low or high end), with
    ties counted half. ``p``: Mann-Whitney U test of the tuned values against draws from
    the search distribution; a small p says the data prefer a region of the space.
    """
    from scipy.stats import mannwhitneyu

    rows = []
    for method, group in df.groupby("method", sort=False):
        params = pd.DataFrame(list(group.best_params))
        for name, dist in SPACES[method].items():
            if name not in params:  # under the evidence: not searched
                continue
            tuned_values = params[name].to_numpy(float)
            prior = np.sort(_prior_sample(dist))
            below = np.searchsorted(prior, tuned_values, "left")
            equal = np.searchsorted(prior, tuned_values, "right") - below
            position = np.median((below + 0.5 * equal) / len(prior))
            rows.append({"method": method, "param": name,
                         "median tuned": float(np.median(tuned_values)),
                         "median of the space": float(np.median(prior)),
                         "position": float(position),
                         "p": float(mannwhitneyu(tuned_values, prior).pvalue)})
    return pd.DataFrame(rows)


def importances(config: dict, storage_url: str, path: str) -> pd.DataFrame:
    """fANOVA importance of each hyperparameter, mean over each method's studies; plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    storage = make_storage(storage_url)
    rows = []
    for t in config["tasks"]:
        for s in config["seeds"]:
            for m in config["methods"]:
                if _result(storage, study_name(t, s, m)) is None:
                    continue
                study = optuna.load_study(study_name=study_name(t, s, m), storage=storage)
                if len(study.get_trials(states=(TrialState.COMPLETE,))) < 2:
                    continue
                imp = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
                rows += [{"method": m, "param": p, "importance": v} for p, v in imp.items()]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    mean = table.groupby(["method", "param"]).importance.mean().unstack(0)
    fig, axes = plt.subplots(1, mean.shape[1], figsize=(4 * mean.shape[1], 3.5), sharex=True)
    for ax, method in zip(np.atleast_1d(axes), mean.columns):
        values = mean[method].dropna().sort_values()
        ax.barh(values.index, values.values)
        ax.set_title(method)
        ax.set_xlabel("fANOVA importance (mean over studies)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return mean


def make_config(args) -> dict:
    config = {**COMMON, **(QUICK if args.quick else FULL)}
    for key in ("tasks", "seeds", "methods", "n_train", "n_source", "n_test", "trials",
                "base_epochs", "regularization", "max_steps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    record_optimizer(args, config)
    resolve_tasks(config)
    if set(config["methods"]) - set(METHODS):
        raise SystemExit(f"unknown methods; choose from {list(METHODS)}")
    if config["trials"] < 1:
        raise SystemExit("--trials must be at least 1")
    return config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tuned",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 tasks, 1 seed, 4 trials: a smoke run of a few minutes")
    parser.add_argument("--output", default=None, help="an existing folder resumes")
    parser.add_argument("--storage", default=None,
                        help="postgresql://... for workers on many machines (default: a "
                             "journal file in --output)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--dask-scheduler", default=None,
                        help="tcp://HOST:PORT: run the workers on a Dask cluster (with a "
                             "postgresql:// --storage they can all reach)")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=None, help=" ".join(METHODS))
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-source", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--base-epochs", type=int, default=None)
    parser.add_argument("--regularization", choices=("fixed", "evidence"), default=None,
                        help="the adapters' regime (default fixed, as first run; evidence: "
                             "the estimators' default, searched without weight decay, "
                             "epochs or pruning)")
    add_adapter_arguments(parser)
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the studies finished so far")
    args = parser.parse_args(argv)
    config = make_config(args)
    output = args.output or os.path.join(os.path.dirname(__file__), "results",
                                         f"tuned-{'quick' if args.quick else 'full'}")
    os.makedirs(output, exist_ok=True)
    config_path = os.path.join(output, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            if json.load(f) != config:
                raise SystemExit(f"{output} holds a run with another configuration; use "
                                 "a new --output to keep it")
    else:
        with open(config_path, "w") as f:
            json.dump(config, f, indent=1)
    storage_url = args.storage or os.path.join(output, "studies.journal")
    t0 = time.perf_counter()
    if not args.report_only:
        run(config, storage_url, args.workers, args.dask_scheduler)
    df = results(config, storage_url)
    if df.empty:
        raise SystemExit("no study has finished yet")
    df.to_csv(os.path.join(output, "results.csv"), index=False)
    text = report(df, config)
    mean = importances(config, storage_url, os.path.join(output, "importances.png"))
    if not mean.empty:
        text += ("\n\n## Hyperparameter importance (fANOVA, mean over studies)\n\n"
                 + mean.round(3).astype(object).fillna("–").to_markdown()
                 + "\n\n![importances](importances.png)\n")
    with open(os.path.join(output, "tuned.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\n{len(df)} studies in {time.perf_counter() - t0:.0f} s; results in {output}")


if __name__ == "__main__":
    main()

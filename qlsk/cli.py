"""The ``qlsk`` command line.

``qlsk tune --task NAME --method queryable|lora|finetune --n-trials N --storage PATH_OR_URL
--study NAME`` runs trials of one shared study: any number of processes or machines
running the same command join it. ``qlsk tune --report --storage ... --study ...``
writes the optimisation history, parameter importances and the best trial as PNG plots
and a markdown summary.
"""

from __future__ import annotations

import argparse
import os
import sys

METHODS = ("queryable", "lora", "finetune")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qlsk", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tune = sub.add_parser("tune", help="run trials of a shared Optuna study, or report on it")
    tune.add_argument("--task", default="park91a-lf-to-hf", help="transfer task name")
    tune.add_argument("--method", default="queryable", help="|".join(METHODS))
    tune.add_argument("--n-trials", type=int, default=20, help="trials this process runs")
    tune.add_argument("--storage", default=None,
                      help="journal file path, or postgresql://user@host:port/db")
    tune.add_argument("--study", default=None, help="study name shared by the workers")
    tune.add_argument("--n-source", type=int, default=2000)
    tune.add_argument("--base-epochs", type=int, default=100,
                      help="epochs of pretraining the base on the source data")
    tune.add_argument("--n-train", type=int, default=100)
    tune.add_argument("--noise", type=float, default=0.1)
    tune.add_argument("--seed", type=int, default=0,
                      help="seed of the task data and the pretrained base (same for all workers)")
    tune.add_argument("--max-epochs", type=int, default=100)
    tune.add_argument("--cv", type=int, default=3)
    tune.add_argument("--pruner", choices=("none", "median"), default="none")
    tune.add_argument("--heartbeat", type=int, default=60,
                      help="seconds between heartbeats of a running trial (RDB storages)")
    tune.add_argument("--grace", type=int, default=None,
                      help="seconds without heartbeat before a trial is failed and retried")
    tune.add_argument("--report", action="store_true", help="write plots and a summary")
    tune.add_argument("--output", default=None, help="report folder (default: STUDY-report)")
    return parser


def _estimator(method: str, task, base_epochs: int, max_epochs: int, seed: int):
    from qlsk import FineTuneRegressor, LoraRegressor, MLPRegressor, QueryableLoraRegressor

    base = MLPRegressor(max_epochs=base_epochs, random_state=seed).fit(
        task.X_source, task.y_source)
    common = {"base": base, "max_epochs": max_epochs, "random_state": seed}
    if method == "queryable":
        return QueryableLoraRegressor(task_description=task.description, **common)
    if method == "lora":
        return LoraRegressor(**common)
    return FineTuneRegressor(**common)


def run_tune(args) -> None:
    import optuna

    from qlsk.simlib import load_task
    from qlsk.tuning import make_storage, tune

    if args.method not in METHODS:
        raise SystemExit(f"qlsk tune: unknown method {args.method!r}; use one of {METHODS}")
    task = load_task(args.task, n_source=args.n_source, n_train=args.n_train,
                     noise=args.noise, random_state=args.seed)
    estimator = _estimator(args.method, task, args.base_epochs, args.max_epochs, args.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(args.storage, args.heartbeat, args.grace)
    study, best = tune(estimator, task.X_train, task.y_train, n_trials=args.n_trials,
                       storage=storage, study_name=args.study, cv=args.cv,
                       pruner=None if args.pruner == "none" else args.pruner)
    rmse = ((best.predict(task.X_test) - task.y_test) ** 2).mean() ** 0.5 / task.y_test.std()
    print(f"study {study.study_name}: {len(study.trials)} trials, best CV R^2 "
          f"{study.best_value:.4f} with {study.best_params}; refit test RMSE/sd {rmse:.4f}")


def run_report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    from qlsk.tuning import make_storage

    if args.storage is None or args.study is None:
        raise SystemExit("qlsk tune --report needs --storage and --study")
    study = optuna.load_study(study_name=args.study, storage=make_storage(args.storage))
    out = args.output or f"{args.study}-report"
    os.makedirs(out, exist_ok=True)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    written = []
    plots = [("history.png", ovm.plot_optimization_history)]
    if len(complete) >= 2 and len(study.best_params) >= 1:
        plots.append(("importances.png", ovm.plot_param_importances))
    for name, plot in plots:
        plot(study)
        plt.gcf().set_size_inches(8, 5)
        plt.tight_layout()
        plt.savefig(os.path.join(out, name), dpi=100)
        plt.close("all")
        written.append(name)
    states = {}
    for trial in study.trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    counts = ", ".join(f"{v} {k.lower()}" for k, v in states.items())
    lines = [f"# Study `{study.study_name}`", "", f"Trials: {len(study.trials)} ({counts}).", ""]
    if complete:
        best = study.best_trial
        lines += [f"Best trial: #{best.number}, value {best.value:.5f}.", "",
                  "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {v:.5g} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in best.params.items()]
        if "importances.png" in written:
            lines += ["", "| parameter | importance |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |"
                      for k, v in optuna.importance.get_param_importances(study).items()]
    lines += ["", *[f"![{name}]({name})" for name in written]]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"report written to {out}/: summary.md, {', '.join(written)}")


def main(argv=None) -> None:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        (run_report if args.report else run_tune)(args)
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"qlsk tune: {exc}") from None


if __name__ == "__main__":
    main()

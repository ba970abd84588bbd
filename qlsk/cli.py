"""The ``qlsk`` command line.

``qlsk tune --task NAME --method queryable|lora|finetune|gp --n-trials N --storage PATH_OR_URL
--study NAME`` runs trials of one shared study: any number of processes or machines
running the same command join it. ``qlsk tune --report --storage ... --study ...``
writes the optimisation history, parameter importances and the best trial as PNG plots
and a markdown summary.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import textwrap
import warnings

from . import __version__

# The estimator class that each --method tunes.
METHODS = {"queryable": "QueryableLoraRegressor", "lora": "LoraRegressor",
           "finetune": "FineTuneRegressor", "gp": "MultiFidelityGPRegressor"}

DESCRIPTION = ("Tune Queryable LoRA, LoRA, fine-tuning or the multi-fidelity GP of a "
               "pretrained base on a transfer task, in Optuna studies that any number of "
               "processes and machines share.")

EXAMPLES = """\
examples:
  qlsk tune --task park91a-lf-to-hf --method queryable --n-trials 10 \\
            --storage study.log --study park-ql
  qlsk tune --report --storage study.log --study park-ql
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the examples' line breaks, and show every default that is a value."""

    def _get_help_string(self, action):
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return action.help
        return f"{action.help} (default: %(default)s)"


def _at_least(low, kind=int):
    """An argparse type: a number of ``kind`` no smaller than ``low``."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not value >= low:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qlsk", description=textwrap.fill(DESCRIPTION), formatter_class=_HelpFormatter,
        epilog=EXAMPLES + "\nrun 'qlsk tune --help' for the options of tune")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tune = sub.add_parser(
        "tune", help="run trials of a shared Optuna study, or report on it",
        description=textwrap.fill(
            "Run trials of an Optuna study, or (--report) write plots and a summary of "
            "it. Every process that runs the same command with the same --storage and "
            "--study joins the study; a line per finished trial goes to stderr, the "
            "result to stdout."),
        epilog=EXAMPLES, formatter_class=_HelpFormatter)

    study = tune.add_argument_group("study")
    study.add_argument("--storage", default=None,
                       help="journal file path (processes on one machine) or "
                            "postgresql://user:password@host:port/database (many "
                            "machines); without it the study lives in memory")
    study.add_argument("--study", default=None,
                       help="study name shared by the workers; without it a new name")
    study.add_argument("--report", action="store_true",
                       help="write plots and a summary of the study instead of running "
                            "trials")
    study.add_argument("--output", default=None,
                       help="report folder; without it STUDY-report")

    task = tune.add_argument_group("task and pretrained base")
    task.add_argument("--task", default="park91a-lf-to-hf",
                      help="transfer task, a name from qlsk.simlib.list_tasks()")
    task.add_argument("--n-source", type=_at_least(1), default=2000,
                      help="rows of source data the base is pretrained on")
    task.add_argument("--base-epochs", type=_at_least(1), default=100,
                      help="epochs of pretraining the base on the source data")
    task.add_argument("--n-train", type=_at_least(2), default=100,
                      help="rows of noisy target data the trials cross-validate on")
    task.add_argument("--noise", type=_at_least(0.0, float), default=0.1,
                      help="noise on the target training labels, as a fraction of "
                           "sd(target)")
    task.add_argument("--seed", type=int, default=0,
                      help="seeds the task data, the base, the folds and the sampler: the "
                           "same command gives the same trials; workers of one study "
                           "share it and still propose different trials")

    trials = tune.add_argument_group("trials")
    trials.add_argument("--method", choices=tuple(METHODS), default="queryable",
                        help="estimator to tune: QueryableLoraRegressor, LoraRegressor or "
                             "FineTuneRegressor")
    trials.add_argument("--n-trials", type=_at_least(1), default=20,
                        help="trials this process runs; workers of a study add theirs up")
    trials.add_argument("--regularization", choices=("evidence", "cv", "fixed"),
                        default="evidence",
                        help="the estimator's regime (its default: evidence); --max-epochs "
                             "and --pruner need 'fixed'")
    trials.add_argument("--max-steps", type=_at_least(1), default=2000,
                        help="full-batch steps per strength under evidence or cv")
    trials.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs",
                        help="the full-batch optimiser under evidence or cv (its default: "
                             "lbfgs, whose line search sets the step: lr is then not "
                             "searched)")
    trials.add_argument("--max-epochs", type=_at_least(1), default=100,
                        help="training epochs of every fit in a trial under 'fixed'")
    trials.add_argument("--cv", type=_at_least(2), default=3,
                        help="cross-validation folds of every trial")
    trials.add_argument("--pruner", choices=("none", "median"), default="none",
                        help="'median' stops a trial whose first fold's validation loss "
                             "is worse than the median of earlier trials")
    trials.add_argument("--heartbeat", type=_at_least(1), default=60,
                        help="seconds between heartbeats of a running trial (database "
                             "storages)")
    trials.add_argument("--grace", type=_at_least(1), default=None,
                        help="seconds without heartbeat before a trial is failed and "
                             "retried; without it twice --heartbeat")
    return parser


def _check_task(name: str) -> None:
    from qlsk.simlib import list_tasks

    names = list(list_tasks()["name"])
    if name not in names:
        close = [repr(n) for n in difflib.get_close_matches(name, names)]
        if close:
            listed = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
            hint = f"did you mean {listed}?"
        else:
            hint = f"choose from {', '.join(names)}"
        raise ValueError(f"unknown task {name!r}; {hint}")


def _estimator(method: str, task, args):
    """The estimator to tune, still without its pretrained base."""
    import qlsk

    if method == "gp":  # its kernels are fitted by marginal likelihood, not epochs
        return qlsk.MultiFidelityGPRegressor(random_state=args.seed)
    params = {"max_epochs": args.max_epochs, "regularization": args.regularization,
              "max_steps": args.max_steps, "optimizer": args.optimizer,
              "random_state": args.seed}
    if method == "queryable":
        params["task_description"] = task.description
    return getattr(qlsk, METHODS[method])(**params)


def _format_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _print_trial(study, trial) -> None:
    """An Optuna callback: one line per finished trial, so a long run shows progress."""
    line = f"trial {trial.number} {trial.state.name.lower()}"
    if trial.value is not None:
        line += (f": CV R^2 {trial.value:.4f} (best {study.best_value:.4f}, trial "
                 f"{study.best_trial.number})")
    line = f"{line} with {_format_params(trial.params)}"
    repeat = trial.user_attrs.get("repeat_of")
    if repeat is not None:
        line += f" (as trial {repeat}: its value, not fitted again)"
    print(line, file=sys.stderr, flush=True)


def run_tune(args) -> None:
    import optuna

    from qlsk import MLPRegressor
    from qlsk.simlib import load_task
    from qlsk.tuning import check_study, make_storage, tune

    # Everything that can be refused is refused before the base is pretrained, which
    # takes minutes.
    _check_task(args.task)
    if args.n_train < 2 * args.cv:
        raise ValueError(f"--n-train {args.n_train} is too small for --cv {args.cv}: every "
                         "fold needs at least 2 test rows for R^2")
    storage = make_storage(args.storage, args.heartbeat, args.grace)
    task = load_task(args.task, n_source=args.n_source, n_train=args.n_train,
                     noise=args.noise, random_state=args.seed)
    estimator = _estimator(args.method, task, args)
    check_study(estimator, storage, args.study)

    print(f"pretraining the base on {args.n_source} source rows for {args.base_epochs} "
          "epochs", file=sys.stderr, flush=True)
    estimator.set_params(base=MLPRegressor(max_epochs=args.base_epochs,
                                           random_state=args.seed).fit(task.X_source,
                                                                       task.y_source))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, best = tune(estimator, task.X_train, task.y_train, n_trials=args.n_trials,
                       storage=storage, study_name=args.study, cv=args.cv,
                       pruner=None if args.pruner == "none" else args.pruner,
                       random_state=args.seed, callbacks=[_print_trial])
    rmse = ((best.predict(task.X_test) - task.y_test) ** 2).mean() ** 0.5 / task.y_test.std()
    print(f"study {study.study_name}: {len(study.trials)} trials, best CV R^2 "
          f"{study.best_value:.4f} with {_format_params(study.best_params)}; refit test "
          f"RMSE/sd {rmse:.4f}")


def run_report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import optuna

    from qlsk.tuning import make_storage

    if args.storage is None or args.study is None:
        raise ValueError("--report needs --storage and --study")
    # Opening a journal file creates it; a report must not leave an empty one behind.
    if "://" not in args.storage and not os.path.isfile(args.storage):
        raise ValueError(f"storage {args.storage} does not exist")
    storage = make_storage(args.storage)
    try:
        names = optuna.get_all_study_names(storage)
    except ValueError:  # a file whose lines are not the journal's JSON
        names = []
    if not names and "://" not in args.storage and os.path.getsize(args.storage):
        raise ValueError(f"storage {args.storage} is not an Optuna journal file (one that "
                         "qlsk tune --storage writes)")
    if args.study not in names:
        held = f"it holds {', '.join(map(repr, names))}" if names else "it holds no study"
        raise ValueError(f"study {args.study!r} does not exist in this storage; {held}")
    study = optuna.load_study(study_name=args.study, storage=storage)
    out = args.output or f"{args.study}-report"
    os.makedirs(out, exist_ok=True)
    with warnings.catch_warnings():
        # Optuna marks its matplotlib plots experimental; a user cannot act on that.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        written = _write_report(study, out)
    print(f"report written to {out}/: {', '.join(written)}")


def _write_report(study, out: str) -> list[str]:
    """Write the plots and ``summary.md`` into ``out``; return the file names."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

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
    return ["summary.md", *written]


def main(argv=None) -> None:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``)."""
    args = _parser().parse_args(argv)
    from qlsk.tuning import NoCompletedTrialError  # after --help, which needs no optuna

    try:
        (run_report if args.report else run_tune)(args)
    except (ValueError, KeyError, NoCompletedTrialError) as exc:
        # str() of a KeyError is its message in quotes.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"qlsk: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

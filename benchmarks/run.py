"""``python -m benchmarks``: transfer tasks x methods x target sample sizes x seeds.

Writes to ``benchmarks/results/<run>/`` (or ``--output DIR``): ``results.csv`` and
``results.json`` (one row per task, method, size and seed, with every setting),
``summary.md`` (mean +- std over seeds, best per row in bold) and PNG plots. A cell is
one task and seed: one pretrained base, shared by every method and sample size. Cells run
in parallel local processes, or on a Dask cluster with ``--dask-scheduler``. A run
that is interrupted resumes where it stopped when started again with the same
``--output``: finished cells are read back, not recomputed.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from qlsk.adapters.evidence import OPTIMIZERS

from .cells import METHODS, STUDY_OPTIMIZER, run_cell, study_optimizer
from .runner import cell_key, check_output, read_done, run_cells

QUICK = {
    "tasks": ["park91a-lf-to-hf", "friedman-sine-doubled", "forrester-lf-to-hf"],
    "sizes": [50, 100], "seeds": [0, 1], "n_source": 1000, "n_test": 1000,
    "base_epochs": 60, "max_epochs": 150,
}
# Methods the quick job skips: the GP head on LoRA (kept in 1 of 16 fits) and the
# misleading description (an ablation); both are in the full grid.
QUICK_LEAVES_OUT = ("lora-gphead", "ql-misleading")
FULL = {
    "tasks": None,  # every task
    "sizes": [25, 50, 100, 200], "seeds": [0, 1, 2], "n_source": 2000,
    "n_test": 2000, "base_epochs": 60, "max_epochs": 150,
}
# The multi-fidelity regimes: 8-20 inputs and up to 2,000 target rows, against the
# GP peers that use the base (docs/benchmarks.md, "Peers against adapters").
MULTIFIDELITY = {
    "tasks": ["borehole-lf-to-hf", "wingweight-lf-to-hf", "robot-3-to-4-segments",
              "welch-ben-ari-to-welch", "moon-hd-to-c3"],
    "sizes": [100, 500, 1000, 2000], "seeds": [0, 1], "n_source": 2000, "n_test": 2000,
    "base_epochs": 60, "max_epochs": 150,
    "methods": ["lora", "ql", "lora-cal", "ql-cal", "gp", "gp-ar1", "gp-nargp", "gp-auto"],
}
DEFAULTS = {
    "methods": None,  # every method; PEFT's only where the package is installed
    "noise": 0.1, "lr": 1e-3, "batch_size": 32,
    "early_stopping": False, "hidden": [64, 64, 64], "rank": 4, "n_atoms": 8, "top_k": 2,
    "block_size": 2, "tune_trials": 0,
    # the adapters' regime (the estimators' default); "fixed": max_epochs of mini-batches
    "regularization": "evidence", "max_steps": 2000,
    "optimizer": "lbfgs",  # the adapters' full-batch optimiser (the estimators' default)
    "adapter_lr": None,  # the adapters' lr; None: the estimators' default for the regime
}


def resolve_tasks(config: dict) -> dict:
    """Set ``config["tasks"]`` (``None``: every task of :mod:`qlsk.simlib`); refuse
    unknown task names. Every benchmark's configuration goes through here."""
    from qlsk.simlib import list_tasks

    known = list(list_tasks()["name"])
    if config["tasks"] is None:
        config["tasks"] = known
    unknown = sorted(set(config["tasks"]) - set(known))
    if unknown:
        raise SystemExit(f"unknown tasks {unknown}")
    return config


GRID_KEYS = ("tasks", "sizes", "seeds", "n_source", "n_test")



def add_grid_arguments(parser, quick_help: str) -> None:
    """The options of a study over tasks × sizes × seeds (``--quick`` and overrides)."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--output", default=None, help="an existing folder resumes")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--n-source", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)


def add_adapter_arguments(parser, compare: bool = False) -> None:
    """``--max-steps`` (a cap on the adapters' full-batch steps, for quick checks) and
    the optimiser's options (:func:`add_optimizer_arguments`)."""
    parser.add_argument("--max-steps", type=int, default=None,
                        help="full-batch steps per strength under the evidence (default: "
                             "the estimators' 2,000; a smaller cap is for quick checks)")
    add_optimizer_arguments(parser, compare)


def add_optimizer_arguments(parser, compare: bool = False) -> None:
    """``--optimizer`` (the adapters' full-batch optimiser) and, with ``compare``,
    ``--compare-optimizer`` (the same arms on the other one too, in the same cells);
    :func:`record_optimizer` puts them in a run's configuration."""
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                        help="the adapters' full-batch optimiser under the evidence "
                             "(default: adam, with which this study's published figures "
                             "were measured; the single-task adapters' own default is lbfgs)")
    if compare:
        parser.add_argument("--compare-optimizer", choices=OPTIMIZERS, default=None,
                            help="also fit the evidence's arms with this optimiser (arms "
                                 "'<arm>-<optimiser>') in the same cells, and pair the two")


def adapter_settings(config: dict) -> dict:
    """The adapters' ``optimizer`` (``"adam"`` unless ``--optimizer`` said otherwise),
    and ``max_steps`` where ``--max-steps`` was given. Each is recorded in
    ``config.json`` only when it differs from how the published figures were
    measured, so older runs still resume."""
    settings = {"optimizer": study_optimizer(config)}
    if config.get("max_steps") is not None:
        settings["max_steps"] = config["max_steps"]
    return settings


def record_optimizer(args, config: dict) -> None:
    """Put ``--optimizer`` in ``config`` where it differs from the studies' Adam, so that
    older runs still resume and runs on another optimiser do not mix into them; and
    ``--compare-optimizer`` where given, which must name the other optimiser."""
    if getattr(args, "optimizer", None) not in (None, STUDY_OPTIMIZER):
        config["optimizer"] = args.optimizer
    other = getattr(args, "compare_optimizer", None)
    if other:
        if other == study_optimizer(config):
            raise SystemExit("--compare-optimizer must differ from --optimizer (the two "
                             "arms would be the same fits)")
        config["compare_optimizer"] = other


def capped_note(config: dict) -> list[str]:
    """A report's lines (and a blank one) saying the adapters ran capped, if they did,
    and with L-BFGS, if they did."""
    lines = []
    if config.get("max_steps") is not None:
        lines.append(f"The adapters ran capped at {config['max_steps']} full-batch steps "
                     "per strength (`--max-steps`): a quick check, not their defaults.")
    if study_optimizer(config) != STUDY_OPTIMIZER:
        lines.append(f"The adapters' full-batch optimiser: {config['optimizer']} "
                     "(`--optimizer`).")
    return lines + [""] if lines else []


def grid_config(args, common: dict, quick: dict, full: dict) -> dict:
    """``common`` with the preset ``args.quick`` picks, then the options given."""
    config = {**common, **(quick if args.quick else full)}
    config.update({key: getattr(args, key) for key in GRID_KEYS
                   if getattr(args, key) is not None})
    if getattr(args, "max_steps", None) is not None:  # the studies that take --max-steps
        config["max_steps"] = args.max_steps
    record_optimizer(args, config)
    return resolve_tasks(config)


def serial_study(run_cell, config: dict, args, name: str, report,
                 figures=None) -> pd.DataFrame:
    """Run a study's cells one after another and write what it found.

    Cells go to ``args.output`` (default ``results/<name>-quick`` or ``-full``; an
    existing folder resumes); ``results.csv`` holds every row and ``<name>.md`` the
    lines ``report(df)`` returns, which are also printed; ``figures(df, output)``, if
    given, draws the study's plots into the same folder.
    """
    output = args.output or os.path.join(os.path.dirname(__file__), "results",
                                         f"{name}-{'quick' if args.quick else 'full'}")
    t0 = time.perf_counter()
    df = pd.DataFrame(run_serially(run_cell, config, output))
    df.to_csv(os.path.join(output, "results.csv"), index=False)
    lines = report(df)  # a title and a blank line first
    text = "\n".join(lines[:2] + capped_note(config) + lines[2:])
    with open(os.path.join(output, f"{name}.md"), "w") as f:
        f.write(text)
    if figures is not None:
        figures(df, output)
    print(text)
    print(f"{len(df)} rows in {time.perf_counter() - t0:.0f} s; results in {output}")
    return df


def make_config(args) -> dict:
    preset = QUICK if args.quick else MULTIFIDELITY if args.multifidelity else FULL
    config = {**DEFAULTS, **preset}
    for key in ("tasks", "sizes", "seeds", "methods", "n_source", "n_test", "base_epochs",
                "max_epochs", "noise", "tune_trials", "regularization", "max_steps",
                "optimizer"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    # recorded only when it is not Adam, as in the runs before it, and only where the
    # adapters train full-batch
    if config["optimizer"] == STUDY_OPTIMIZER or config["regularization"] == "fixed":
        del config["optimizer"]
    resolve_tasks(config)
    if config["methods"] is None:
        from .peft_methods import available

        config["methods"] = [m for m in METHODS if available() or not m.startswith("peft")]
        if args.quick:  # two measured dead ends, in the full grid only, to leave time
            config["methods"] = [m for m in config["methods"] if m not in QUICK_LEAVES_OUT]
    unknown = sorted(set(config["methods"]) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(METHODS)}")
    config["hidden"] = list(config["hidden"])
    return config


def run_serially(run_cell, config: dict, output: str, report_only: bool = False) -> list[dict]:
    """Run the missing cells one after another in this process; return every row.

    ``run_cell(config, task, seed)`` returns a cell's rows. With ``report_only``, run
    nothing and return the rows of the cells finished so far.
    """
    cells = [(t, s) for t in config["tasks"] for s in config["seeds"]]
    if report_only:
        check_output(config, output)
        done = read_done(os.path.join(output, "cells.jsonl"))
        return [row for c in cells if cell_key(*c) in done for row in done[cell_key(*c)]]
    records = run_cells(run_cell, config, cells, output)
    return [row for record in records.values() for row in record["rows"]]


def run(config: dict, output: str, args) -> list[dict]:
    """Run the missing cells of ``config`` into ``output`` (local processes or a Dask
    cluster); return every row, in a fixed order."""
    cells = [(t, s) for t in config["tasks"] for s in config["seeds"]]
    records = run_cells(run_cell, config, cells, output, jobs=args.jobs,
                        dask_scheduler=args.dask_scheduler, progress="bar")
    order = {n: i for i, n in enumerate(config["sizes"])}
    rows = [row for record in records.values() for row in record["rows"]]
    return sorted(rows, key=lambda r: (config["tasks"].index(r["task"]), order[r["n_train"]],
                                       r["seed"], config["methods"].index(r["method"])))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a few tasks, sizes and seeds: minutes on a laptop")
    parser.add_argument("--multifidelity", action="store_true",
                        help="8-20-input tasks, 100-2,000 target rows, the GP peers that use "
                             "the base: hours on 2 cores (the GPs' cost grows with n^3)")
    parser.add_argument("--output", default=None,
                        help="result folder (default benchmarks/results/<mode>-<time>); "
                             "an existing one resumes")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=None, help=" ".join(METHODS))
    parser.add_argument("--n-source", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--base-epochs", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--regularization", choices=["evidence", "cv", "fixed"], default=None,
                        help="the adapters' regime (default: evidence)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="full-batch steps per strength under evidence or cv")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                        help="the adapters' full-batch optimiser (default: lbfgs, the "
                             "estimators' default; --tune-trials then tunes no adapter's "
                             "lr, since L-BFGS's line search sets the step)")
    parser.add_argument("--noise", type=float, default=None)
    parser.add_argument("--tune-trials", type=int, default=None,
                        help="Optuna trials over lr for every neural method (default 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(),
                        help="parallel local processes")
    parser.add_argument("--dask-scheduler", default=None,
                        help="tcp://HOST:PORT: run the cells on a Dask cluster")
    args = parser.parse_args(argv)
    config = make_config(args)
    output = args.output or os.path.join(
        os.path.dirname(__file__), "results",
        f"{'quick' if args.quick else 'multifidelity' if args.multifidelity else 'full'}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    rows = run(config, output, args)
    from .report import write_report

    table = write_report(rows, config, output)
    print(table)
    print(f"\n{len(rows)} rows in {time.perf_counter() - t0:.0f} s; results, summary.md and "
          f"plots in {output}")

"""``python -m benchmarks.ablations``: what each part of Queryable LoRA contributes.

Every variant of Queryable LoRA (``docs/method.md``, "Ablations") is fitted on the same
base, target rows and seed as the full method and as parameter-matched LoRA, on the
tasks of :mod:`qlsk.simlib` at n = 50 and 100. The table gives, per variant, the
geometric mean of the test RMSE ratio against the full method and against LoRA over
task x seed x n pairs, with a bootstrap 95% interval and a Wilcoxon signed-rank
p-value (:mod:`benchmarks.stats`), and the fit-time ratio. A gradient-diagnostics plot
(per-layer gradient norms and their concentration over training, the paper's Figures
3-4) compares LoRA, Queryable LoRA and fine-tuning on one task.

Writes to ``--output`` (default ``benchmarks/results/ablations-<mode>``): ``cells.jsonl``
(one line per finished task and seed; an interrupted run resumes from it),
``config.json``, ``results.csv``, ``ablations.md``, ``gradient_diagnostics.json`` and
``gradient_diagnostics.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch

from qlsk import (
    FineTuneRegressor,
    GradientDiagnostics,
    LoraRegressor,
    QueryableLoraRegressor,
)
from qlsk.simlib import load_task

from .cells import (
    _seed,
    matched_lora_rank,
    misleading_description,
    pretrain_base,
    rmse_sd,
    sizes_on_one_base,
)
from .run import (
    DEFAULTS,
    adapter_settings,
    add_adapter_arguments,
    add_grid_arguments,
    capped_note,
    record_optimizer,
    resolve_tasks,
    run_serially,
)
from .stats import paired_summary

# name: (QueryableLoraRegressor options over the full method, what it removes)
VARIANTS = {
    "full": ({}, "the method: query from the block's state and the depth summary"),
    "state": ({"query": "state"}, "no depth summary: query from the block's state"),
    "detached": ({"query": "detached"}, "no gradient from the routing into A"),
    "constant": ({"query": "constant"}, "one learned route per block, blind to the input"),
    "random": ({"query": "random"}, "fixed random routing of each input, never trained"),
    "dense": (None, "dense routing: top_k = n_atoms"),  # set from the config
    "frozen-atoms": ({"freeze_atoms": True}, "atoms fixed at I: the update is LoRA's"),
    # The instruction prior: the task's own description, and another task's.
    "prior": ({"task_description": "<own>"}, "the method with the instruction prior from "
              "the task's description (strength 1)"),
    "misleading-prior": ({"task_description": "<other>"},
                         "the method with the prior from another task's description"),
    # A routing regulariser tried as an option (issue #11), not part of the method.
    "noise": ({"routing_noise": 1.0}, "noisy top-k routing: N(0, 1) added to the logits "
              "while training"),
}
QUICK = {"tasks": ["park91a-lf-to-hf", "friedman-sine-doubled", "forrester-lf-to-hf"],
         "sizes": [50, 100], "seeds": [0, 1], "n_source": 1000, "n_test": 1000}
FULL = {"tasks": None, "sizes": [50, 100], "seeds": [0, 1, 2], "n_source": 2000,
        "n_test": 2000}
COMMON = {key: DEFAULTS[key] for key in ("noise", "lr", "batch_size", "hidden", "rank",
                                         "n_atoms", "top_k", "block_size")}
# Output calibration off: the adapters as in the paper, whatever the estimators' default.
COMMON.update({"base_epochs": 60, "max_epochs": 150, "output_calibration": False,
               "regularization": "fixed",  # the study of the fixed recipe, as reported
               "diagnostics_task": "friedman-sine-doubled"})


def _variant_options(config: dict, variant: str, task_name: str) -> dict:
    options = VARIANTS[variant][0]
    if options is None:
        return {"top_k": config["n_atoms"]}
    description = {"<own>": lambda: load_task(task_name, n_source=0, n_train=0,
                                              n_test=0).description,
                   "<other>": lambda: misleading_description(task_name)}
    return {k: description[v]() if k == "task_description" else v
            for k, v in options.items()}


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Fit every variant and LoRA at every sample size of one task and seed."""
    rows = []
    for n_train, task, base in sizes_on_one_base(config, task_name, seed):
        common = {"base": base, "max_epochs": config["max_epochs"], "lr": config["lr"],
                  "batch_size": config["batch_size"], "regularization": config["regularization"],
                  "output_calibration": config["output_calibration"],
                  "random_state": _seed(task_name, seed, n_train), **adapter_settings(config)}
        ql = {"rank": config["rank"], "n_atoms": config["n_atoms"], "top_k": config["top_k"],
              "block_size": config["block_size"], **common}
        models = {v: QueryableLoraRegressor(**{**ql, **_variant_options(config, v, task_name)})
                  for v in config["variants"]}
        rank = matched_lora_rank(models["full"], base, task.X_train.shape[1])
        models["lora"] = LoraRegressor(rank=rank, **common)
        for variant, model in models.items():
            t0 = time.perf_counter()
            model.fit(task.X_train, task.y_train)
            fit_time = time.perf_counter() - t0
            pred = model.predict(task.X_test)
            rows.append({"task": task_name, "seed": seed, "n_train": n_train,
                         "variant": variant,
                         "rmse_sd": rmse_sd(task.y_test, pred),
                         "fit_time_s": fit_time,
                         "n_trainable_params": int(model.n_trainable_params_),
                         "lora_rank": rank})
    return rows


def run(config: dict, output: str, report_only: bool = False) -> pd.DataFrame:
    """Run the cells of ``config`` not yet in ``output/cells.jsonl``; return every row.

    With ``report_only``, run nothing and return the rows of the cells finished so far.
    """
    return pd.DataFrame(run_serially(run_cell, config, output, report_only))


def _pairs(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per task, seed and size, one column per variant."""
    return df.pivot_table(index=["task", "seed", "n_train"], columns="variant", values=value)


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per variant: RMSE ratios against the full method and LoRA, fit-time ratio."""
    rmse, fit = _pairs(df, "rmse_sd"), _pairs(df, "fit_time_s")
    params = df.groupby("variant").n_trainable_params.median()
    rows = []
    for variant in [v for v in [*VARIANTS, "lora"] if v in rmse]:
        row = {"variant": variant, "what": VARIANTS[variant][1] if variant in VARIANTS
               else "LoRA at the rank matching the full method's trainable parameters"}
        for ref in ("full", "lora"):
            if variant == ref:
                continue
            stats = paired_summary(rmse[variant] / rmse[ref])
            row.update({f"{k} vs {ref}": v for k, v in stats.items()})
        row["fit time vs full"] = paired_summary(fit[variant] / fit["full"])["ratio"]
        row["trainable params"] = int(params[variant])
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame) -> str:
    def ratio(row, ref):
        if pd.isna(row.get(f"ratio vs {ref}")):
            return ["–"] * 3
        return [f"{row[f'ratio vs {ref}']:.3f} ({row[f'low vs {ref}']:.3f}–"
                f"{row[f'high vs {ref}']:.3f})", f"{row[f'p vs {ref}']:.2g}",
                f"{row[f'better vs {ref}']:.0%}"]

    lines = ["| variant | RMSE vs full (95% CI) | p | better | RMSE vs LoRA (95% CI) | p | "
             "better | fit time vs full | trainable |", "|" + "---|" * 9]
    for _, row in table.iterrows():
        cells = [row.variant, *ratio(row, "full"), *ratio(row, "lora"),
                 f"{row['fit time vs full']:.2f}", f"{row['trainable params']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_task_table(df: pd.DataFrame) -> str:
    """Geometric mean RMSE/sd over seeds and sizes, per task and variant."""
    means = np.exp(np.log(df.rmse_sd).groupby([df.task, df.variant]).mean()).unstack()
    columns = [v for v in [*VARIANTS, "lora"] if v in means]
    return means[columns].to_markdown(floatfmt=".4f")


def gradient_diagnostics(config: dict, output: str, seed: int = 0) -> dict:
    """Per-layer gradient norms over training for LoRA, Queryable LoRA and fine-tuning.

    One task (``config["diagnostics_task"]``) at the largest size; writes
    ``gradient_diagnostics.json`` and ``gradient_diagnostics.png`` and returns the
    curves.
    """
    name, n_train = config["diagnostics_task"], max(config["sizes"])
    task = load_task(name, n_source=config["n_source"], n_train=n_train,
                     n_test=config["n_test"], noise=config["noise"], random_state=seed)
    base = pretrain_base(config, task, name, seed)
    common = {"base": base, "max_epochs": config["max_epochs"], "lr": config["lr"],
              "batch_size": config["batch_size"], "regularization": config["regularization"],
              "output_calibration": config["output_calibration"],
              "random_state": _seed(name, seed, n_train)}
    ql = QueryableLoraRegressor(rank=config["rank"], n_atoms=config["n_atoms"],
                                top_k=config["top_k"], block_size=config["block_size"],
                                **common)
    rank = matched_lora_rank(ql, base, task.X_train.shape[1])
    models = {f"LoRA (rank {rank})": LoraRegressor(rank=rank, **common),
              "Queryable LoRA": ql, "fine-tune": FineTuneRegressor(**common)}
    curves = {}
    for label, model in models.items():
        model.set_params(callbacks=[GradientDiagnostics()]).fit(task.X_train, task.y_train)
        curves[label] = {key: [row[key] for row in model.history_]
                         for key in ("grad_norms", "grad_concentration", "train_loss")}
    with open(os.path.join(output, "gradient_diagnostics.json"), "w") as f:
        json.dump({"task": name, "n_train": n_train, "seed": seed, "curves": curves}, f)
    _plot_gradients(curves, f"{name}, n = {n_train}, seed {seed}",
                    os.path.join(output, "gradient_diagnostics.png"))
    return curves


def _plot_gradients(curves: dict, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(values, window=10):  # the epoch-to-epoch noise hides the trend
        return pd.Series(values).rolling(window, min_periods=1).mean()

    fig, axes = plt.subplots(1, 1 + len(curves), figsize=(4 * (1 + len(curves)), 3.8))
    for ax in axes[2:]:
        ax.sharey(axes[1])
    for i, (label, curve) in enumerate(curves.items()):
        color = f"C{i}"
        axes[0].plot(curve["grad_concentration"], color=color, alpha=0.25, lw=0.8)
        axes[0].plot(smooth(curve["grad_concentration"]), color=color, label=label)
        norms = np.asarray(curve["grad_norms"])  # (epochs, layers)
        for layer in range(norms.shape[1]):
            axes[i + 1].plot(smooth(norms[:, layer]), label=f"layer {layer + 1}")
        axes[i + 1].set(title=label, xlabel="epoch", yscale="log",
                        ylabel="per-layer gradient norm" if i == 0 else None)
        axes[i + 1].legend(fontsize=7)
    axes[0].set(xlabel="epoch", ylabel="max / mean of per-layer norms",
                title="gradient concentration")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title} (10-epoch moving averages)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def make_config(args) -> dict:
    config = {**COMMON, **(QUICK if args.quick else FULL), "variants": list(VARIANTS)}
    for key in ("tasks", "sizes", "seeds", "n_source", "n_test", "base_epochs",
                "max_epochs", "variants", "regularization", "max_steps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    record_optimizer(args, config)
    resolve_tasks(config)
    if set(config["variants"]) - set(VARIANTS) or "full" not in config["variants"]:
        raise SystemExit(f"--variants must include full and be among {list(VARIANTS)}")
    return config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablations",
                                     description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "3 tasks, 2 seeds, 1,000 source rows")
    parser.add_argument("--base-epochs", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=None,
                        help="the variants to fit (full is always needed; LoRA always "
                             "runs): " + " ".join(VARIANTS))
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the gradient-diagnostics plot")
    parser.add_argument("--regularization", choices=("fixed", "evidence"), default=None,
                        help="the adapters' regime (default fixed, as reported first; "
                             "evidence: the estimators' default, without the per-epoch "
                             "gradient diagnostics, which need epochs)")
    add_adapter_arguments(parser)
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the cells finished so far")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = make_config(args)
    output = args.output or os.path.join(os.path.dirname(__file__), "results",
                                         f"ablations-{'quick' if args.quick else 'full'}")
    t0 = time.perf_counter()
    df = run(config, output, args.report_only)
    df.to_csv(os.path.join(output, "results.csv"), index=False)
    table = ablation_table(df)
    text = ["# Ablations of Queryable LoRA", "", *capped_note(config),
            f"Tasks {df.task.nunique()} of {len(config['tasks'])}, sizes {config['sizes']}, "
            f"seeds {config['seeds']}: "
            f"{len(_pairs(df, 'rmse_sd'))} pairs. Ratios are geometric means over pairs "
            "(below 1: the variant has the lower error); p: Wilcoxon signed-rank.", "",
            _markdown(table), "", "## Geometric mean RMSE / sd per task", "",
            per_task_table(df), ""]
    if not args.no_diagnostics and config["regularization"] == "fixed":
        curves = gradient_diagnostics(config, output, seed=config["seeds"][0])
        text += ["## Gradient concentration (max / mean of per-layer norms)", "",
                 "| method | first epoch | mean over epochs | last epoch |", "|---|---|---|---|"]
        text += [f"| {label} | {c['grad_concentration'][0]:.2f} | "
                 f"{np.mean(c['grad_concentration']):.2f} | {c['grad_concentration'][-1]:.2f} |"
                 for label, c in curves.items()]
        text += ["", "![gradient diagnostics](gradient_diagnostics.png)", ""]
    with open(os.path.join(output, "ablations.md"), "w") as f:
        f.write("\n".join(text))
    table.to_csv(os.path.join(output, "ablations.csv"), index=False)
    print("\n".join(text))
    print(f"\n{len(df)} rows in {time.perf_counter() - t0:.0f} s; results in {output}")


if __name__ == "__main__":
    main()

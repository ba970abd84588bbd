"""Tables and plots from benchmark rows."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from .cells import study_optimizer
from .peers import PEERS
from .stats import group_best, paired_summary

LABELS = {
    "base": "base (unadapted)", "target-only": "MLP, target only", "finetune": "fine-tune",
    "lora": "LoRA (param-matched)", "ql": "QL, no prior", "ql-prior": "QL + description",
    "ql-misleading": "QL + wrong description", "gp": "GP (target only)",
    "peft-lora": "PEFT LoRA (param-matched)", "peft-vblora": "PEFT VB-LoRA",
    "gp-ar1": "GP AR1 (ρ·base + c + GP)", "gp-nargp": "NARGP (GP on [x, base(x)])",
    "gp-auto": "MF GP, auto (AR1 + NARGP stacked)",
    "auto": "auto (TransferRegressor, by CV)",
    "mfk": "SMT MFK (source as low fidelity)", "lora-cal": "LoRA + output calibration",
    "ql-cal": "QL + output calibration", "lora-gphead": "LoRA + GP discrepancy head",
}


def _mean_std(values: pd.Series) -> str:
    # One seed has no spread: "± 0.0000" would claim a measured one.
    if len(values) == 1:
        return f"{values.mean():.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=0):.4f}"


def summary_table(df: pd.DataFrame, methods: list[str]) -> str:
    """Markdown: mean ± std over seeds of RMSE/sd per task and size; best in bold.

    A cell with a single seed shows the value alone; a method not run shows "–".
    """
    header = "| task | n | " + " | ".join(LABELS[m] for m in methods) + " |"
    lines = [header, "|" + "---|" * (len(methods) + 2)]
    for (task, n), group in df.groupby(["task", "n_train"], sort=False):
        stats = group.groupby("method")["rmse_sd"]
        means = stats.mean()
        best = means.reindex(methods).idxmin()
        cells = []
        for m in methods:
            text = _mean_std(stats.get_group(m)) if m in means else "–"
            cells.append(f"**{text}**" if m == best else text)
        lines.append(f"| {task} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# (first, second, quantity): the comparisons the summary reports pair by pair.
HEADLINES = (
    ("ql", "lora", "rmse_sd"), ("ql-prior", "lora", "rmse_sd"),
    ("ql-prior", "ql", "rmse_sd"), ("ql-prior", "ql-misleading", "rmse_sd"),
    ("ql-cal", "lora-cal", "rmse_sd"), ("ql", "lora", "stability"),
    ("ql-prior", "ql", "stability"), ("ql", "lora", "fit_time_s"),
)
_QUANTITY = {"rmse_sd": "test RMSE", "stability": "stability (sd of last 10 train losses)",
             "fit_time_s": "fit time"}


def headline_table(df: pd.DataFrame) -> str:
    """Markdown: paired ratios of the headline comparisons over task x size x seed.

    Each row is a geometric-mean ratio (below 1: the first method has the lower value)
    with a bootstrap 95% interval, the Wilcoxon signed-rank p-value and the share of
    pairs below 1; comparisons whose methods were not both run are left out.
    """
    lines = ["| comparison | quantity | ratio (95% CI) | p (Wilcoxon) | first lower in |",
             "|---|---|---|---|---|"]
    for first, second, quantity in HEADLINES:
        if quantity not in df or not {first, second} <= set(df.method):
            continue
        wide = df.pivot_table(index=["task", "n_train", "seed"], columns="method",
                              values=quantity)
        if not {first, second} <= set(wide.columns):
            continue  # all NaN for one of them (e.g. no epochs, so no stability)
        wide = wide[[first, second]].dropna()
        ratios = wide[first] / wide[second]
        ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
        if len(ratios) == 0:
            continue
        s = paired_summary(ratios)
        lines.append(f"| {LABELS[first]} / {LABELS[second]} | {_QUANTITY[quantity]} | "
                     f"{s['ratio']:.3f} ({s['low']:.3f}–{s['high']:.3f}) | {s['p']:.2g} | "
                     f"{s['better']:.0%} of {s['pairs']} |")
    lines += _group_lines(df)
    return "\n".join(lines) if len(lines) > 2 else "–"


# The groups of the per-cell comparisons: qlsk's adapting estimators against the GPs.
ADAPTING = ("finetune", "lora", "ql", "ql-prior", "lora-cal", "ql-cal", "lora-gphead")
GPS = ("gp", *PEERS)


def _group_lines(df: pd.DataFrame) -> list[str]:
    """Headline rows, one per size: the best adapting method of each cell (the adapters
    and fine-tuning; chosen after the fact, which flatters them) against the best GP
    of the same cell."""
    if not set(ADAPTING) & set(df.method) or not set(GPS) & set(df.method):
        return []
    wide = df.pivot_table(index=["task", "n_train", "seed"], columns="method", values="rmse_sd")
    ratios = group_best(wide, ADAPTING) / group_best(wide, GPS)
    lines = []
    for n, part in ratios.groupby(level="n_train"):
        part = part[np.isfinite(part) & (part > 0)]
        if len(part):
            s = paired_summary(part)
            lines.append(f"| best adapting method / best GP per cell, n = {n} | test RMSE | "
                         f"{s['ratio']:.3f} ({s['low']:.3f}–{s['high']:.3f}) | {s['p']:.2g} "
                         f"| {s['better']:.0%} of {s['pairs']} |")
    return lines


def method_overview(df: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per method: mean rank over (task, size, seed), wins, error, R², cost, and the
    numerical warnings its fits gave (ConvergenceWarnings, MFK's failed Cholesky
    decompositions), summed."""
    ranks = df.groupby(["task", "n_train", "seed"])["rmse_sd"].rank()
    df = df.assign(rank_in_cell=ranks)
    grouped = df.groupby("method")
    overview = pd.DataFrame({
        "mean rank": grouped["rank_in_cell"].mean(),
        "wins": grouped["rank_in_cell"].apply(lambda r: int((r == 1).sum())),
        "median RMSE/sd": grouped["rmse_sd"].median(),
        "mean R²": grouped["r2"].mean(),
        "stability (sd of last 10 train losses)": grouped["stability"].median(),
        "fit s": grouped["fit_time_s"].median(),
        "predict ms / 1000 rows": grouped["predict_ms_per_1000"].median(),
        "trainable params": grouped["n_trainable_params"].median(),
    })
    # counted at the fits instead of printed (rows from before the count have none)
    trouble = [c for c in ("convergence_warnings", "cholesky_failures") if c in df]
    if trouble:
        overview["numerical warnings"] = grouped[trouble].sum().sum(axis=1).astype(int)
    overview = overview.reindex(methods)
    overview.index = [LABELS[m] for m in overview.index]
    return overview


def _plots(df: pd.DataFrame, rows: list[dict], methods: list[str], output: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, group in df.groupby("task", sort=False):
        # accuracy and fit time against n side by side: the GPs' cost grows with n^3
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for m in methods:
            for ax, column in zip(axes, ("rmse_sd", "fit_time_s")):
                stats = group[group.method == m].groupby("n_train")[column]
                if len(stats) and stats.mean().notna().any():
                    mean, std = stats.mean(), stats.std(ddof=0).fillna(0)
                    ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o",
                                capsize=3, label=LABELS[m])
        axes[0].set(xscale="log", yscale="log", xlabel="target training samples",
                    ylabel="test RMSE / sd(target)", title=task)
        axes[1].set(xscale="log", yscale="log", xlabel="target training samples",
                    ylabel="fit time (s)", title=f"{task}: fit time")
        axes[0].legend(fontsize=7)
        written.append(_save(fig, output, f"error_vs_n_{task}.png"))

        fig, ax = plt.subplots(figsize=(7, 4.5))
        largest = group.n_train.max()
        for m in methods:
            curves = [r["train_curve"] for r in rows if r["task"] == task and r["method"] == m
                      and r["n_train"] == largest and r["train_curve"]]
            if curves:
                length = min(map(len, curves))
                ax.plot(np.mean([c[:length] for c in curves], axis=0), label=LABELS[m])
        ax.set(yscale="log", xlabel="epoch", ylabel="training loss (scaled MSE)",
               title=f"{task}, n = {largest}, mean over seeds")
        if ax.get_legend_handles_labels()[0]:  # none when no method trains by epochs
            ax.legend(fontsize=7)
        written.append(_save(fig, output, f"training_curves_{task}.png"))

        usage = [np.asarray(r["atom_usage"]) for r in rows
                 if r["task"] == task and r["method"] == "ql-prior" and "atom_usage" in r]
        if usage:
            fig, ax = plt.subplots(figsize=(7, 2.5))
            mean_usage = np.mean(usage, axis=0)
            image = ax.imshow(mean_usage, aspect="auto", cmap="viridis")
            ax.set_yticks(range(mean_usage.shape[0]))
            ax.set(xlabel="atom", ylabel="block", title=f"{task}: atom usage, QL + description")
            fig.colorbar(image, ax=ax)
            written.append(_save(fig, output, f"atom_usage_{task}.png"))

    overview = method_overview(df, methods)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.barh(overview.index[::-1], overview["mean rank"][::-1])
    ax.set(xlabel="mean rank of test RMSE within a cell (1 = best)",
           title="methods over every task, size and seed")
    written.append(_save(fig, output, "methods_summary.png"))
    return written


def _save(fig, output: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(output, name), dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


def _regime(config: dict) -> str:
    """How the adapters were trained, in words (runs before the evidence default: fixed)."""
    regime = config.get("regularization", "fixed")
    if regime == "fixed":
        return "adapters trained by the fixed recipe"
    optimizer = {"lbfgs": "L-BFGS", "adam": "Adam"}[study_optimizer(config)]
    return (f"adapters regularised by the {regime} (full-batch {optimizer}, up to "
            f"{config.get('max_steps', 2000)} steps per strength)")


def write_report(rows: list[dict], config: dict, output: str) -> str:
    """Write results.csv, results.json, summary.md and plots; return the summary table."""
    methods = [m for m in config["methods"]]
    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump(rows, f)
    df = pd.DataFrame(rows)
    flat = df.drop(columns=[c for c in ("train_curve", "atom_usage") if c in df])
    flat.to_csv(os.path.join(output, "results.csv"), index=False)
    table = summary_table(df, methods)
    overview = method_overview(df, methods)
    params = (df[df.method.isin(["lora", "ql"])].groupby(["task", "method"])
              ["n_trainable_params"].first().unstack())
    plots = _plots(df, rows, methods, output)
    text = [
        "# Benchmark summary", "",
        f"Tasks {len(config['tasks'])}, sizes {config['sizes']}, seeds {config['seeds']}, "
        f"noise {config['noise']}; {_regime(config)}, the MLP from scratch and fixed-recipe "
        f"arms {config['max_epochs']} epochs (lr {config['lr']}, batch "
        f"{config['batch_size']}, early stopping {config['early_stopping']}), base pretrained "
        f"{config['base_epochs']} epochs on {config['n_source']} source rows, Optuna trials "
        f"per method {config['tune_trials']}.", "",
        "## Test RMSE / sd(target), mean ± std over seeds (best per row in bold)", "", table,
        "", "## Methods overall", "", overview.to_markdown(floatfmt=".4g"), "",
        "## Headline comparisons, pair by pair (same task, size and seed)", "",
        headline_table(df), "",
        "## Trainable parameters: LoRA is given the rank that matches Queryable LoRA", "",
        params.to_markdown() if len(params) else "–", "",
        "## Plots", "", *[f"- [{p}]({p})" for p in plots], "",
    ]
    with open(os.path.join(output, "summary.md"), "w") as f:
        f.write("\n".join(text))
    return table + "\n\n" + overview.to_markdown(floatfmt=".4g")

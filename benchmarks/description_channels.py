"""``python -m benchmarks.description_channels``: where should the description enter the memory?

For every task family, seed and text encoder, on one pretrained base, the shared memory
(:class:`~qlsk.SharedMemoryRegressor`) is fitted on the training members once per
*variant* — a choice of description channels (:mod:`qlsk.adapters.channels`) or of
capacity — next to the description-as-input network
(:class:`~qlsk.ConditionedLoraRegressor`, with the description as a shift and, with
``--references``, as a FiLM layer), all with the same rows, epochs and seed.
Each is scored zero-shot on every held-out member (right description, another held-out
member's, and the paraphrase) and on the training members.

Designs are chosen on the development families (``--development``) and reported on the
others (the default), as in :mod:`benchmarks.described_tasks`, whose settings this
study shares. Besides the errors, every variant's routing on the held-out members is
summarised: how many atoms carry it (``atoms_used``: the perplexity of the mean atom
usage, averaged over blocks) and how much the tasks' usages differ (``task_spread``:
the mean total-variation distance between two held-out members' usages). Finished cells
go to ``cells.jsonl`` in ``--output`` (a rerun resumes); ``summary.md`` and
``results.csv`` are rewritten from every finished cell.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import warnings

import numpy as np
import pandas as pd

from qlsk import ConditionedLoraRegressor, SharedMemoryRegressor, UnfamiliarDescriptionWarning

from .described_tasks import (
    DEFAULTS,
    FULL,
    _Family,
    _fit,
    add_family_arguments,
    chosen_families,
    training_members,
)
from .runner import run_cells, write_rows
from .stats import paired_summary, ratio_line

# name -> SharedMemoryRegressor options; "prior" is the method as published.
VARIANTS = {
    "prior": {"channels": "prior"},
    "prior+query": {"channels": "prior+query"},
    "prior+shift": {"channels": "prior+shift"},
    "prior+film": {"channels": "prior+shift+scale"},
    "all": {"channels": "prior+query+shift+scale"},
    "shift": {"channels": "shift"},
    "prior, 16 atoms dense": {"channels": "prior", "n_atoms": 16, "top_k": 16},
    # the default's channels with dense routing: can a new description blend atoms?
    "prior+film, dense": {"channels": "prior+shift+scale", "n_atoms": 8, "top_k": 8},
    # capacity against collapse: load balancing across tasks (qlsk.adapters.balance)
    "prior, balanced": {"channels": "prior", "load_balance": 0.1},
    "prior+film, balanced 0.01": {"channels": "prior+shift+scale", "load_balance": 0.01},
    "prior+film, balanced": {"channels": "prior+shift+scale", "load_balance": 0.1},
    # a prior map that composes? the shared adapter learns the common part alone
    "prior+film, dropout 0.2": {"channels": "prior+shift+scale", "description_dropout": 0.2},
    "prior+film, dropout 0.5": {"channels": "prior+shift+scale", "description_dropout": 0.5},
    # controls without a memory: one atom fixed at I is plain LoRA (docs/method.md), so
    # these are LoRA with the description as a shift (the description-as-input network
    # again, through this estimator) and as a FiLM layer
    "LoRA + shift (no memory)": {"channels": "shift", "n_atoms": 1, "top_k": 1,
                                 "freeze_atoms": True},
    "LoRA + film (no memory)": {"channels": "shift+scale", "n_atoms": 1, "top_k": 1,
                                "freeze_atoms": True},
}
# Variants that change one thing of another: the summary pairs each with that one.
MODIFIES = {"prior, balanced": "prior", "prior+film, balanced 0.01": "prior+film",
            "prior+film, balanced": "prior+film", "prior+film, dense": "prior+film",
            "prior+film, dropout 0.2": "prior+film", "prior+film, dropout 0.5": "prior+film"}
# The description-as-input network (ConditionedLoraRegressor) as references: the first is
# the one the memory is compared against by default.
REFERENCES = {"conditioning": {"condition": "shift"},
              "conditioning-film": {"condition": "film"},
              # the multi-task fit regularised by the evidence (its own lr: full batch)
              "conditioning, evidence": {"condition": "shift", "regularization": "evidence",
                                         "lr": None}}
REFERENCE = "conditioning"
CONTROLS = ("right", "shuffled", "paraphrased")
# The variants a plain run fits; the later ones (load balancing, description dropout,
# dense FiLM) were measured on the development families only, and are asked by name.
DEFAULT_VARIANTS = ["prior", "prior+query", "prior+shift", "prior+film", "all", "shift",
                    "prior, 16 atoms dense", "LoRA + shift (no memory)",
                    "LoRA + film (no memory)"]
SETTINGS = {"seeds": [0, 1, 2], "encoders": ["semantic"], "variants": DEFAULT_VARIANTS,
            "references": [REFERENCE]}


def _routing_summary(model: SharedMemoryRegressor, data: _Family, members) -> dict:
    """``atoms_used`` and ``task_spread`` over ``members`` (see the module's docstring)."""
    usage = np.stack([model.atom_usage(data.test(m)[0][:200]).mean(axis=1)
                      for m in members])  # (members, blocks, M)
    mean = usage.mean(axis=0)  # (blocks, M)
    entropy = -(mean * np.log(np.clip(mean, 1e-12, None))).sum(axis=-1)
    pairs = list(itertools.combinations(range(len(members)), 2))
    spread = np.mean([0.5 * np.abs(usage[i] - usage[j]).sum(axis=-1).mean()
                      for i, j in pairs]) if pairs else 0.0
    return {"atoms_used": float(np.exp(entropy).mean()), "task_spread": float(spread)}


def run_cell(config: dict, family: str, seed: int, encoder: str) -> list[dict]:
    """Every variant and the reference on one family, seed and encoder."""
    # paraphrases are scored on purpose: not worth a warning
    warnings.simplefilter("ignore", UnfamiliarDescriptionWarning)
    data, base, X, y, common = training_members(config, family, seed, encoder)
    size = {k: config[k] for k in ("n_atoms", "top_k", "block_size")}
    models = {name: ConditionedLoraRegressor(**{**common, **REFERENCES[name]})
              for name in config.get("references", [REFERENCE])}
    models.update({name: SharedMemoryRegressor(**common, **{**size, **VARIANTS[name]})
                   for name in config["variants"]})
    rows = []
    for method, model in models.items():
        fit_s = _fit(model, X, y)
        extra = {} if method in REFERENCES else _routing_summary(
            model, data, data.fam.heldout_members)
        for member in data.split.index:
            controls = CONTROLS if data.split[member] == "heldout" else ("right",)
            for control in controls:
                rmse = data.score(model.predict, member, data.described(member, control))
                rows.append({"family": family, "seed": seed, "encoder": encoder,
                             "method": method, "member": member,
                             "split": data.split[member], "control": control,
                             "rmse_sd": rmse, "fit_s": fit_s,
                             "n_trainable_params": model.n_trainable_params_, **extra})
    return rows


def _pairs(df: pd.DataFrame, numerator: str, denominator: str, split: str,
           control_num: str = "right", control_den: str = "right") -> pd.Series:
    keys = ["family", "seed", "encoder", "member"]

    def pick(method, control):
        part = df[(df.method == method) & (df.split == split) & (df.control == control)]
        return part.set_index(keys).rmse_sd

    a, b = pick(numerator, control_num), pick(denominator, control_den)
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    return joined.a / joined.b


def _encoder_lines(df: pd.DataFrame, methods) -> list[str]:
    """With two text encoders in the run: each method's error under the first over its
    error under the second, on the same family, seed and member."""
    encoders = list(dict.fromkeys(df.encoder))
    if len(encoders) != 2:
        return []
    first, second = encoders
    keys = ["family", "seed", "member"]
    lines = ["", f"## The text encoders: error with {first} / with {second}, same members", "",
             "| method | held out, right (95% CI) | held out, paraphrased (95% CI) | "
             "seen members (95% CI) |", "|---|---|---|---|"]
    for name in methods:
        cells = []
        for split, control in (("heldout", "right"), ("heldout", "paraphrased"),
                               ("train", "right")):
            part = df[(df.method == name) & (df.split == split) & (df.control == control)]
            a, b = (part[part.encoder == e].set_index(keys).rmse_sd for e in encoders)
            pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
            if pairs.empty:
                cells.append("–")
                continue
            s = paired_summary(pairs.a / pairs.b)
            cells.append(f"{s['ratio']:.3f} ({s['low']:.3f}–{s['high']:.3f})")
        if cells != ["–"] * 3:
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def summary(df: pd.DataFrame) -> str:
    """The report's tables as markdown."""
    references = [m for m in REFERENCES if m in set(df.method)]
    variants = [m for m in df.method.unique() if m not in REFERENCES]
    lines = []
    for reference in references:
        lines += [f"## Zero-shot on held-out members: method / {reference} "
                  f"({REFERENCES[reference]['condition']})", "",
                  "| method | pairs | ratio (95% CI) | p | better in |", "|---|---|---|---|---|"]
        for name in [*references, *variants]:
            if name != reference:
                s = paired_summary(_pairs(df, name, reference, "heldout"))
                lines.append(ratio_line(name, s["pairs"], s))
        lines.append("")
    lines += ["## The description's weight and the routing, per method", "",
              "| method | held out: right / shuffled | paraphrased / right | seen members: "
              "/ description as input | atoms used | task spread | fit s | parameters |",
              "|---|---|---|---|---|---|---|---|"]
    for name in [*references, *variants]:
        part = df[df.method == name]
        rs = paired_summary(_pairs(df, name, name, "heldout", "right", "shuffled"))
        para = paired_summary(_pairs(df, name, name, "heldout", "paraphrased", "right"))
        seen = paired_summary(_pairs(df, name, references[0], "train"))
        used = (f"{part.atoms_used.mean():.1f} | {part.task_spread.mean():.3f}"
                if "atoms_used" in part and part.atoms_used.notna().any() else "– | –")
        lines.append(f"| {name} | {rs['ratio']:.2f} ({rs['low']:.2f}–{rs['high']:.2f}) | "
                     f"{para['ratio']:.2f} | {seen['ratio']:.2f} | {used} | "
                     f"{part.fit_s.median():.0f} | {int(part.n_trainable_params.median())} |")
    lines += _encoder_lines(df, [*references, *variants])
    changed = [(name, MODIFIES[name]) for name in variants
               if MODIFIES.get(name) in set(df.method)]
    if changed:
        lines += ["", "## Each variant against the variant it modifies", "",
                  "| variant / the one it modifies | held out (95% CI) | seen members (95% CI) |",
                  "|---|---|---|"]
        for name, base in changed:
            held, seen = (paired_summary(_pairs(df, name, base, split))
                          for split in ("heldout", "train"))
            lines.append(f"| {name} / {base} | {held['ratio']:.3f} ({held['low']:.3f}–"
                         f"{held['high']:.3f}) | {seen['ratio']:.3f} ({seen['low']:.3f}–"
                         f"{seen['high']:.3f}) |")
    return "\n".join(lines)


def _cells(config: dict):
    return [(f, s, e) for e in config["encoders"] for s in config["seeds"]
            for f in config["families"]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.description_channels",
                                     description=__doc__.splitlines()[0])
    add_family_arguments(parser, SETTINGS["seeds"], SETTINGS["encoders"])
    parser.add_argument("--variants", nargs="+", default=SETTINGS["variants"],
                        choices=list(VARIANTS))
    parser.add_argument("--references", nargs="+", default=SETTINGS["references"],
                        choices=list(REFERENCES),
                        help="description-as-input networks fitted beside the variants "
                             "(the first is the one the seen-member column divides by)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel")
    parser.add_argument("--output", default=None,
                        help="result folder (an existing one resumes)")
    args = parser.parse_args(argv)
    config = {**DEFAULTS, **FULL, "families": chosen_families(args), "seeds": args.seeds,
              "encoders": args.encoders, "variants": args.variants}
    if args.references != SETTINGS["references"]:  # older runs' configs have no key
        config["references"] = args.references
    if args.max_epochs:
        config["max_epochs"] = args.max_epochs
    output = args.output or os.path.join(
        os.path.dirname(__file__), "results",
        f"channels-{'dev' if args.development else 'report'}-{time.strftime('%Y%m%d-%H%M%S')}")
    records = run_cells(run_cell, config, _cells(config), output, jobs=args.jobs)
    write_rows(records, output, summary)

if __name__ == "__main__":
    main()

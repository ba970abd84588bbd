"""``python -m benchmarks.described_tasks``: one atom memory for many described tasks.

For every task family and seed, on one pretrained base (``docs/multitask.md``). The
families are split: designs and defaults are chosen on the development families
(``--development``, :data:`qlsk.simlib.DEVELOPMENT_FAMILIES`), and a plain full run
reports on the others (:data:`qlsk.simlib.REPORT_FAMILIES`).

- **Zero-shot**: :class:`~qlsk.SharedMemoryRegressor` and the
  description-as-input network (:class:`qlsk.ConditionedLoraRegressor`)
  are fitted on the training members and scored on every member with the right
  description, a shuffled one (another member's of the same split) and none (a zero
  embedding), and each held-out member also with its description paraphrased (the
  family's paraphrase: other words, another order); task-blind references: the base,
  one LoRA on the pooled rows.
- **Few-shot**: on each held-out member, ``n`` of its noisy rows (``sizes``):
  :class:`~qlsk.FewShotRegressor` from the shared memory (memory
  frozen; right description, and at ``n <= 25`` shuffled and none), the conditioning
  network from its multi-task fit (map frozen), and per-task LoRA, fine-tuning and a GP
  fitted on the ``n`` rows alone. Every neural few-shot fit takes the same number of
  optimiser steps; the three LoRA-factor methods train the same parameters.
- **Continual**: the training members in ``n_stages`` stages; the shared memory with
  ``warm_start=True`` (and a variant that grows ``grow_atoms`` atoms per stage and keeps
  the earlier ones, and one that replays ``replay_rows`` kept rows of every earlier
  task in each later stage), all without the stage anchor and with 32 kept rows per task
  (``stage_anchor=0, kept_rows=32``, as first measured: :mod:`benchmarks.continual`
  measures the anchor), against sequential LoRA (one LoRA
  trained stage after stage). After every stage each task seen so far is scored;
  forgetting is a task's error after the last stage over its error right after its own
  stage. The memory's routing after each stage
  (:meth:`~qlsk.SharedMemoryRegressor.atom_usage`, ``stages_``, ``route_drift``) gives
  the continual figures.

A cell is a family, a seed and a part: ``blind`` (the task-blind and per-task
baselines, which no text encoder changes) or a text encoder (``semantic``,
``lexical``). Finished cells are appended to ``cells.jsonl`` in ``--output``; a run
started again with the same ``--output`` resumes. The report (``summary.md``,
``results.csv``, PNGs) is rewritten from every finished cell, so it can be read while
a long run goes on. RMSE is on clean test rows, divided by the member's sd; ratios are
geometric means with percentile-bootstrap 95% intervals and Wilcoxon p over (family,
seed, member[, n]) pairs (:mod:`benchmarks.stats`).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from qlsk import (
    ConditionedLoraRegressor,
    FewShotRegressor,
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    SharedMemoryRegressor,
    UnfamiliarDescriptionWarning,
)
from qlsk.simlib import DEVELOPMENT_FAMILIES, REPORT_FAMILIES, list_families, load_family

from .cells import _gp, _seed, rmse_sd
from .runner import run_cells
from .stats import paired_summary

QUICK = {"families": ["ishigami-ab"], "seeds": [0], "encoders": ["semantic"],
         "base_epochs": 60, "max_epochs": 60, "few_steps": 150}
FULL = {"families": None, "seeds": [0, 1, 2], "encoders": ["semantic", "lexical"],
        "base_epochs": 150, "max_epochs": 150, "few_steps": 300}
DEFAULTS = {"sizes": [10, 25, 50, 100], "n_per_member": 100, "n_test": 500,
            "n_source": 2000, "noise": 0.1, "hidden": [64, 64, 64], "lr": 1e-3,
            "batch_size": 32, "few_batch_size": 16, "rank": 4, "n_atoms": 8, "top_k": 2,
            "block_size": 1, "n_stages": 3, "grow_atoms": 4, "replay_rows": 10,
            "control_max_n": 25}
CONTROLS = ("right", "shuffled", "none")
LABELS = {
    "base": "base (unadapted)", "shared-lora": "one LoRA, task-blind",
    "memory": "shared memory", "conditioning": "description as input",
    "memory-fewshot": "few-shot from the memory", "conditioning-fewshot":
    "few-shot, description as input", "lora": "LoRA per task", "finetune":
    "fine-tune per task", "gp": "GP per task", "seq-lora": "sequential LoRA",
    "memory-grow": "shared memory, grown atoms",
    "memory-replay": "shared memory, replaying kept rows",
    "memory-para": "shared memory, paraphrase-augmented",
    "conditioning-para": "description as input, paraphrase-augmented",
}
# At most this many test rows per task feed the atom-usage figures.
USAGE_ROWS = 200
# LoRA and fine-tuning without the learned output calibration, like the shared memory
# and the conditioning network: every LoRA-factor method trains the same parameters.
PLAIN = {"output_calibration": False, "regularization": "fixed"}


def _predict(model, X, control: str) -> np.ndarray:
    """Predict with the rows' own descriptions, or with none (a zero embedding)."""
    return model.predict(X, use_description=control != "none")


class _Family:
    """One family's data for one seed, with what every method needs from it."""

    def __init__(self, config: dict, name: str, seed: int):
        self.fam = fam = load_family(name, n_per_member=config["n_per_member"],
                                     n_test=config["n_test"], n_source=config["n_source"],
                                     noise=config["noise"], random_state=seed)
        self.name, self.seed, self.features = name, seed, list(fam.feature_names)
        members = fam.members.set_index("member")
        self.sd, self.description = members.target_std, members.description
        self.paraphrase = members.paraphrase  # same meaning, other words and order
        self.split = members.split
        self.member_of = {d: m for m, d in self.description.items()}

    def test(self, member: str, description: str | None = None):
        rows = self.fam.test_frame[self.fam.test_frame.member == member]
        X = rows[[*self.features, "description"]]
        if description is not None:
            X = X.assign(description=description)
        return X, rows.y.to_numpy()

    def shuffled(self, member: str) -> str:
        """Another member's description, of the same split (the next one, cyclically)."""
        names = (self.fam.train_members if self.split[member] == "train"
                 else self.fam.heldout_members)
        return self.description[names[(names.index(member) + 1) % len(names)]]

    def described(self, member: str, control: str) -> str:
        if control == "shuffled":
            return self.shuffled(member)
        if control == "paraphrased":
            return self.paraphrase[member]
        return self.description[member]

    def rows(self, members, n: int | None = None):
        """The noisy rows of ``members`` (the first ``n`` of each): ``X`` and ``y``."""
        frame = self.fam.frame[self.fam.frame.member.isin(list(members))]
        if n is not None:
            frame = frame.groupby("member", sort=False).head(n)
        X = frame[[*self.features, "description"]].reset_index(drop=True)
        return X, frame.y.to_numpy()

    def score(self, predict, member: str, description: str | None = None) -> float:
        X, y = self.test(member, description)
        return rmse_sd(y, predict(X), self.sd[member])

    def stages(self, n_stages: int) -> list[list[str]]:
        order = np.random.default_rng(self.seed).permutation(self.fam.train_members)
        return [list(s) for s in np.array_split(order, n_stages) if len(s)]


def _base(config: dict, data: _Family) -> MLPRegressor:
    return MLPRegressor(config["hidden"], max_epochs=config["base_epochs"], batch_size=64,
                        lr=config["lr"], random_state=_seed(data.name, data.seed)).fit(
        data.fam.X_source, data.fam.y_source)


def training_members(config: dict, family: str, seed: int, encoder: str):
    """What a study of described estimators starts a cell from: the family's data, its
    pretrained base, the training members' rows and the settings every multi-task fit
    shares. Returns ``(data, base, X, y, common)``."""
    torch.set_num_threads(1)
    data = _Family(config, family, seed)
    base = _base(config, data)
    X, y = data.rows(data.fam.train_members)
    common = {"base": base, "text_encoder": encoder, "rank": config["rank"],
              **_common(config, _seed(family, seed, encoder))}
    return data, base, X, y, common


def _few_epochs(config: dict, n: int) -> int:
    """Epochs that give every few-shot fit ``few_steps`` optimiser steps."""
    return max(1, round(config["few_steps"] / math.ceil(n / config["few_batch_size"])))


def _row(data: _Family, part: str, method: str, member: str, control: str, n: int,
         rmse: float, **extra) -> dict:
    return {"family": data.name, "seed": data.seed, "part": part, "method": method,
            "member": member, "split": data.split[member], "control": control, "n": n,
            "rmse_sd": rmse, **extra}


def _common(config: dict, seed: int) -> dict:
    return {"lr": config["lr"], "batch_size": config["batch_size"],
            "max_epochs": config["max_epochs"], "random_state": seed}


def _few_common(config: dict, n: int, seed: int) -> dict:
    return {"lr": config["lr"], "batch_size": config["few_batch_size"],
            "max_epochs": _few_epochs(config, n), "random_state": seed}


def _fit(model, X, y, **fit_params) -> float:
    """Fit ``model`` on ``X, y``; return the seconds it took."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # GP length scales at their bounds are fine here
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y, **fit_params)
    return time.perf_counter() - t0


def _blind_cell(config: dict, data: _Family, base) -> tuple[list[dict], dict]:
    """Task-blind and per-task baselines: base, pooled LoRA, per-task fits, sequential LoRA."""
    fam, part, rows = data.fam, "blind", []
    X_train, y_train = data.rows(fam.train_members)
    shared = LoraRegressor(base=base, rank=config["rank"], **PLAIN,
                           **_common(config, _seed(data.name, data.seed, "pool")))
    fit_s = _fit(shared, X_train[data.features].to_numpy(), y_train)
    for member in data.split.index:
        for method, model in (("base", base), ("shared-lora", shared)):
            rmse = data.score(lambda X, m=model: m.predict(X[data.features].to_numpy()), member)
            rows.append(_row(data, part, method, member, "none", 0, rmse,
                             fit_s=fit_s if method == "shared-lora" else 0.0,
                             n_trainable_params=getattr(model, "n_trainable_params_", 0)))
    for member in fam.heldout_members:
        for n in config["sizes"]:
            X, y = data.rows([member], n)
            X = X[data.features].to_numpy()
            seed = _seed(data.name, data.seed, member, n)
            models = {
                "lora": LoraRegressor(base=base, rank=config["rank"], **PLAIN,
                                      **_few_common(config, n, seed)),
                "finetune": FineTuneRegressor(base=base, **PLAIN,
                                              **_few_common(config, n, seed)),
                "gp": _gp(seed, fam.bounds),
            }
            for method, model in models.items():
                fit_s = _fit(model, X, y)
                params = (len(model[-1].kernel_.theta) if method == "gp"
                          else model.n_trainable_params_)
                rmse = data.score(lambda X, m=model: m.predict(X[data.features].to_numpy()),
                                  member)
                rows.append(_row(data, part, method, member, "none", n, rmse, fit_s=fit_s,
                                 n_trainable_params=params))
    rows += _sequential_lora(config, data, base)
    return rows, {}


def _sequential_lora(config: dict, data: _Family, base) -> list[dict]:
    """One LoRA trained stage after stage on the pooled rows, blind to the task."""
    rows, model, seen = [], None, []
    for stage, members in enumerate(data.stages(config["n_stages"])):
        X, y = data.rows(members)
        X = X[data.features].to_numpy()
        t0 = time.perf_counter()
        if model is None:
            model = LoraRegressor(base=base, rank=config["rank"], **PLAIN, **_common(
                config, _seed(data.name, data.seed, "sequential"))).fit(X, y)
        else:  # the same net, optimiser and all, trained on for another stage
            model.net_.partial_fit(X.astype(np.float32), y.reshape(-1, 1).astype(np.float32))
        fit_s = time.perf_counter() - t0
        seen += [(m, stage) for m in members]
        for member, origin in seen:
            rmse = data.score(lambda X, m=model: m.predict(X[data.features].to_numpy()),
                              member)
            rows.append(_row(data, "blind", "seq-lora", member, "none", 0, rmse,
                             stage=stage, origin=origin, fit_s=fit_s,
                             n_trainable_params=model.n_trainable_params_))
    return rows


def _encoder_cell(config: dict, data: _Family, base, encoder: str) -> tuple[list[dict], dict]:
    """The shared memory and the description-as-input network with one text encoder."""
    fam, rows = data.fam, []
    X_train, y_train = data.rows(fam.train_members)
    seed = _seed(data.name, data.seed, encoder)
    memory = SharedMemoryRegressor(
        base=base, text_encoder=encoder, rank=config["rank"], n_atoms=config["n_atoms"],
        top_k=config["top_k"], block_size=config["block_size"], **_common(config, seed))
    conditioned = ConditionedLoraRegressor(base=base, text_encoder=encoder,
                                           rank=config["rank"], **_common(config, seed))
    models = [("memory", memory, X_train, y_train),
              ("conditioning", conditioned, X_train, y_train)]
    if config.get("paraphrase_augmented"):
        # the same models trained on every training row twice, once with its member's
        # paraphrase, for half the epochs (the same optimiser steps)
        X_both = pd.concat([X_train, X_train.assign(description=[
            data.paraphrase[data.member_of[d]] for d in X_train.description])],
            ignore_index=True)
        y_both = np.concatenate([y_train, y_train])
        halved = {**_common(config, seed), "max_epochs": max(1, config["max_epochs"] // 2)}
        models += [("memory-para", clone(memory).set_params(**halved), X_both, y_both),
                   ("conditioning-para", clone(conditioned).set_params(**halved), X_both,
                    y_both)]
    for method, model, X_fit, y_fit in models:
        fit_s = _fit(model, X_fit, y_fit)
        for member in data.split.index:
            # a held-out member is also asked with its description paraphrased
            held_out = data.split[member] == "heldout"
            for control in (*CONTROLS, "paraphrased") if held_out else CONTROLS:
                rmse = data.score(lambda X, m=model, c=control: _predict(m, X, c), member,
                                  data.described(member, control))
                rows.append(_row(data, encoder, method, member, control, 0, rmse,
                                 encoder=encoder, fit_s=fit_s,
                                 n_trainable_params=model.n_trainable_params_))
    for member in fam.heldout_members:
        for n in config["sizes"]:
            X, y = data.rows([member], n)
            few_seed = _seed(data.name, data.seed, member, n)
            common = _few_common(config, n, few_seed)
            controls = CONTROLS if n <= config["control_max_n"] else ("right",)
            fits = [("memory-fewshot", c, FewShotRegressor(  # every few-shot fit: the same
                memory, freeze_memory=True, regularization="fixed", **common))  # steps
                for c in controls]
            fits.append(("conditioning-fewshot", "right", ConditionedLoraRegressor(
                init=conditioned, freeze_condition=True, regularization="fixed", **common)))
            for method, control, model in fits:
                described = data.described(member, control)
                fit_s = _fit(model, X.assign(description=described), y,
                             **({"use_description": False} if control == "none" else {}))
                rmse = data.score(lambda X, m=model, c=control: _predict(m, X, c), member,
                                  described)
                rows.append(_row(data, encoder, method, member, control, n, rmse,
                                 encoder=encoder, fit_s=fit_s,
                                 n_trainable_params=model.n_trainable_params_))
    continual_rows, figures = continual(config, data, base, encoder)
    return rows + continual_rows, figures


def continual_variants(config: dict) -> dict:
    """This study's continual methods: the shared memory as it is, growing, replaying
    (each: the parameters set from the second stage on); a variant whose switch is off
    in ``config`` would be the plain memory again and is left out."""
    variants = {"memory": {},
                "memory-grow": {"grow_atoms": config["grow_atoms"],
                                "freeze_previous_atoms": True},
                "memory-replay": {"replay_rows": config.get("replay_rows", 0)}}
    if not config["grow_atoms"] > 0:
        del variants["memory-grow"]
    if not config.get("replay_rows", 0) > 0:
        del variants["memory-replay"]
    return variants


def continual(config: dict, data: _Family, base, encoder: str,
              variants: dict | None = None) -> tuple[list[dict], dict]:
    """The shared memory over stages, once per variant (name to the parameters set from
    the second stage on, but ``kept_rows``, which sets what every stage keeps, from the
    first; default :func:`continual_variants`): every task seen so far scored after
    every stage, and the routing after each stage."""
    rows, figures = [], {}
    stages = data.stages(config["n_stages"])
    variants = continual_variants(config) if variants is None else variants
    for method, later in variants.items():
        model = SharedMemoryRegressor(
            base=base, text_encoder=encoder, rank=config["rank"], n_atoms=config["n_atoms"],
            top_k=config["top_k"], block_size=config["block_size"], warm_start=True,
            stage_anchor=0.0,  # as first measured: a variant switches the anchor on
            kept_rows=later.get("kept_rows", 32),  # likewise, 32 kept rows per task
            **_common(config, _seed(data.name, data.seed, encoder, "continual")))
        seen, usage, drift = [], [], []
        for stage, members in enumerate(stages):
            if stage == 1:
                model.set_params(**later)
            X, y = data.rows(members)
            fit_s = _fit(model, X, y)
            seen += [(m, stage) for m in members]
            stage_usage = {}
            for member, origin in seen:
                X_test, y_test = data.test(member)
                rows.append(_row(data, encoder, method, member, "right", 0,
                                 rmse_sd(y_test, model.predict(X_test), data.sd[member]),
                                 encoder=encoder, stage=stage, origin=origin, fit_s=fit_s,
                                 n_trainable_params=model.n_trainable_params_))
                stage_usage[member] = model.atom_usage(X_test[:USAGE_ROWS]).mean(
                    axis=1).tolist()  # (n_blocks, n_atoms)
            usage.append(stage_usage)
            drift.append([{**r, "member": data.member_of[r["description"]]}
                          for r in model.route_drift().to_dict("records")])
        figures[method] = {"stages": stages, "usage": usage, "drift": drift}
    return rows, figures


def run_cell(config: dict, family: str, seed: int, part: str) -> dict:
    """One family, seed and part: ``{"rows": [...], "figures": {...}}``."""
    torch.set_num_threads(1)
    # paraphrases and shuffled descriptions are scored on purpose: not worth a warning
    warnings.simplefilter("ignore", UnfamiliarDescriptionWarning)
    data = _Family(config, family, seed)
    t0 = time.perf_counter()
    base = _base(config, data)
    base_s = time.perf_counter() - t0
    if part == "blind":
        rows, figures = _blind_cell(config, data, base)
    else:
        rows, figures = _encoder_cell(config, data, base, part)
    return {"rows": rows, "figures": figures, "base_s": base_s,
            "seconds": time.perf_counter() - t0}


# ---- report -------------------------------------------------------------------------


def _gmean(values) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=float)))))


def _ratio(df: pd.DataFrame, numerator: dict, denominator: dict, keys: list[str]) -> dict:
    """Geometric-mean ratio of two selections' RMSE, paired on ``keys``, with a 95% CI."""
    def pick(selection):
        mask = np.ones(len(df), dtype=bool)
        for column, value in selection.items():
            mask &= (df[column].isin(value) if isinstance(value, list)
                     else df[column] == value).to_numpy()
        return df[mask].set_index(keys)["rmse_sd"]

    a, b = pick(numerator), pick(denominator)
    paired = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if paired.empty:
        return {"ratio": float("nan"), "low": float("nan"), "high": float("nan"),
                "p": float("nan"), "better": float("nan"), "pairs": 0}
    return _paired_ci(paired.a, paired.b)


def forgetting(df: pd.DataFrame) -> pd.DataFrame:
    """Per continual method and earlier-stage task: error after the last stage, after its own.

    Returns one row per (family, seed, encoder, method, member) with ``own`` (RMSE right
    after the task's stage), ``final`` (after the last stage) and ``forgetting``
    (``final / own``), and ``base``, the unadapted base's RMSE on the task; tasks of the
    last stage are left out (nothing came after them).
    """
    cont = df[df.stage.notna()].copy()  # the continual rows: they have a stage
    if cont.empty:
        return pd.DataFrame()
    cont["encoder"] = cont["encoder"].fillna("-")
    keys = ["family", "seed", "encoder", "method", "member"]
    last = cont.groupby(["family", "seed"]).stage.transform("max")
    own = cont[cont.stage == cont.origin].set_index(keys).rmse_sd
    final = cont[cont.stage == last].set_index(keys)
    out = pd.DataFrame({"own": own, "final": final.rmse_sd, "origin": final.origin,
                        "last": final.stage}).dropna().reset_index()
    out = out[out.origin < out["last"]]
    out["forgetting"] = out.final / out.own
    base = df[(df.method == "base") & df.stage.isna()]
    return out.merge(base[["family", "seed", "member", "rmse_sd"]].rename(
        columns={"rmse_sd": "base"}), on=["family", "seed", "member"], how="left")


def headline(df: pd.DataFrame, config: dict) -> pd.DataFrame:
    """The issue's comparisons as geometric-mean RMSE ratios with bootstrap 95% CIs."""
    rows, held = [], df[(df.split == "heldout") & df.stage.isna()]
    unit = ["family", "seed", "member", "n"]
    for encoder in config["encoders"]:
        enc = held[held.encoder == encoder]
        if enc.empty:
            continue
        small = [n for n in config["sizes"] if n <= config["control_max_n"]]
        for label, sizes in [("zero-shot", [0]), *[(f"n = {n}", [n]) for n in small],
                             (f"n ≤ {config['control_max_n']} (pooled)", small)]:
            method = "memory" if sizes == [0] else "memory-fewshot"
            for control in ("shuffled", "none"):
                r = _ratio(enc, {"method": method, "control": "right", "n": sizes},
                           {"method": method, "control": control, "n": sizes}, unit)
                rows.append({"encoder": encoder, "comparison": f"(a) right / {control}",
                             "at": label, **r})
        few = [n for n in config["sizes"] if n <= 50]
        both = pd.concat([enc, held[held.part == "blind"]])
        for label, sizes in [*[(f"n = {n}", [n]) for n in few], ("n ≤ 50 (pooled)", few)]:
            for other in ("lora", "conditioning-fewshot", "finetune", "gp"):
                r = _ratio(both, {"method": "memory-fewshot", "control": "right",
                                  "n": sizes}, {"method": other, "n": sizes}, unit)
                rows.append({"encoder": encoder, "comparison":
                             f"(b) memory few-shot / {LABELS[other]}", "at": label, **r})
        for method in ("memory", "conditioning", "memory-para", "conditioning-para"):
            if not (enc.method == method).any():
                continue
            r = _ratio(enc, {"method": method, "control": "paraphrased", "n": 0},
                       {"method": method, "control": "right", "n": 0}, unit)
            rows.append({"encoder": encoder, "comparison":
                         f"zero-shot {LABELS[method]}: paraphrased / canonical",
                         "at": "zero-shot", **r})
        for method in ("memory", "conditioning"):
            if not (enc.method == f"{method}-para").any():
                continue
            for control in ("right", "paraphrased"):
                r = _ratio(enc, {"method": f"{method}-para", "control": control, "n": 0},
                           {"method": method, "control": control, "n": 0}, unit)
                rows.append({"encoder": encoder, "comparison":
                             f"zero-shot {LABELS[method]}, trained with paraphrases / "
                             f"without ({control} description)", "at": "zero-shot", **r})
        for other in ("conditioning", "shared-lora", "base"):
            r = _ratio(both, {"method": "memory", "control": "right", "n": 0},
                       {"method": other, "control": "right" if other == "conditioning"
                                          else "none", "n": 0}, unit)
            rows.append({"encoder": encoder, "comparison":
                         f"zero-shot memory / {LABELS[other]}", "at": "zero-shot", **r})
        if (enc.method == "memory-para").any():
            r = _ratio(enc, {"method": "memory-para", "control": "right", "n": 0},
                       {"method": "conditioning-para", "control": "right", "n": 0}, unit)
            rows.append({"encoder": encoder, "comparison": "zero-shot memory / description "
                         "as input, both paraphrase-augmented", "at": "zero-shot", **r})
    forget = forgetting(df)
    if not forget.empty:
        for encoder in config["encoders"]:
            mine = forget[forget.encoder == encoder]
            seq = forget[forget.method == "seq-lora"].drop(columns="encoder")
            for method in ("memory", "memory-grow", "memory-replay"):
                ours = mine[mine.method == method].drop(columns="encoder")
                paired = ours.merge(seq, on=["family", "seed", "member"],
                                    suffixes=("", "_seq"))
                if paired.empty:
                    continue
                for measure, other, against in (
                        ("forgetting", "forgetting_seq", "sequential LoRA: forgetting"),
                        ("final", "final_seq", "sequential LoRA: error on earlier tasks"),
                        ("final", "base", "base (unadapted): error on earlier tasks")):
                    rows.append({"encoder": encoder,
                                 "comparison": f"(c) {LABELS[method]} / {against}",
                                 "at": "after the last stage",
                                 **_paired_ci(paired[measure], paired[other])})
        for (method, encoder), mine in forget.groupby(["method", "encoder"], sort=False):
            rows.append({"encoder": encoder, "comparison": f"(c) {LABELS[method]}: error "
                         "after the last stage / right after its own stage",
                         "at": "earlier tasks", **_paired_ci(mine.final, mine.own)})
        seq = forget[forget.method == "seq-lora"]
        if len(seq):
            rows.append({"encoder": "-", "comparison": "(c) sequential LoRA / base "
                         "(unadapted): error on earlier tasks", "at": "after the last stage",
                         **_paired_ci(seq.final, seq.base)})
    return pd.DataFrame(rows)


def _paired_ci(a: pd.Series, b: pd.Series) -> dict:
    return paired_summary((a / b).to_numpy())


def _per_encoder(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the text-blind methods repeated under every encoder run, for the tables."""
    encoders = list(df.encoder.dropna().unique()) or ["-"]
    blind = df[df.encoder.isna()]
    return pd.concat([df[df.encoder.notna()],
                      *[blind.assign(encoder=e) for e in encoders]], ignore_index=True)


def _zero_shot_table(df: pd.DataFrame) -> str:
    zero = _per_encoder(df[(df.n == 0) & df.stage.isna()])
    zero["column"] = [_label(m, c) for m, c in zip(zero.method, zero.control)]
    table = zero.groupby(["family", "split", "encoder", "column"]).rmse_sd.apply(
        _gmean).unstack("column")
    return table.reset_index().to_markdown(index=False, floatfmt=".3f")


def _label(method: str, control: str) -> str:
    """A method's name, with its description control where it has one."""
    described = method in ("memory", "memory-fewshot", "conditioning", "conditioning-fewshot")
    return f"{LABELS[method]} [{control}]" if described else LABELS[method]


def _few_shot_table(df: pd.DataFrame) -> str:
    few = _per_encoder(df[(df.split == "heldout") & df.stage.isna()])
    few["method"] = [_label(m, c) for m, c in zip(few.method, few.control)]
    table = few.groupby(["family", "encoder", "method", "n"]).rmse_sd.apply(
        _gmean).unstack("n")
    return table.reset_index().to_markdown(index=False, floatfmt=".3f")


def _continual_table(df: pd.DataFrame) -> str:
    forget = forgetting(df)
    if forget.empty:
        return "–"
    table = forget.groupby(["family", "encoder", "method"]).agg(
        tasks=("forgetting", "size"), own=("own", _gmean), final=("final", _gmean),
        forgetting=("forgetting", _gmean), base=("base", _gmean))
    return table.reset_index().to_markdown(index=False, floatfmt=".3f")


def _headline_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "–"
    shown = table.assign(
        ratio=table.ratio.map("{:.3f}".format),
        ci=[f"{lo:.3f}–{hi:.3f}" for lo, hi in zip(table.low, table.high)],
        p=table.p.map("{:.2g}".format), better=[f"{b:.0%}" for b in table.better])
    return shown[["encoder", "comparison", "at", "ratio", "ci", "p", "better", "pairs"]
                 ].to_markdown(index=False)


# ---- figures ------------------------------------------------------------------------


def _usage_matrix(usage: dict, members: list[str]) -> np.ndarray:
    """Tasks x atoms: each task's routing weights, averaged over blocks."""
    return np.array([np.mean(usage[m], axis=0) for m in members])


def _symmetric_kl(P: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    P = (P + eps) / (P + eps).sum(axis=1, keepdims=True)
    logs = np.log(P)
    kl = (P[:, None, :] * (logs[:, None, :] - logs[None, :, :])).sum(-1)  # KL(p_i || p_j)
    return kl + kl.T


def atom_entropy(U: np.ndarray) -> np.ndarray:
    """Per atom: the entropy of its usage over tasks, over ``log(n_tasks)``.

    1: the atom serves every task alike; 0: one task only; NaN: no task uses it.
    """
    total = U.sum(axis=0, keepdims=True)
    share = U / np.maximum(total, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(share > 0, share * np.log(share), 0.0), axis=0)
    return np.where(total[0] > 1e-9, h / np.log(max(len(U), 2)), np.nan)


def continual_figures(figures: dict, family: str, tag: str, output: str) -> list[str]:
    """The paper's continual figures, from one cell's routing record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages, usage, drift = figures["stages"], figures["usage"], figures["drift"]
    order = [m for s in stages for m in s]
    short = {m: m.replace(family.split("-")[0] + "-", "")[:18] for m in order}
    written = []

    fig, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3.6), squeeze=False)
    top = max(np.max(_usage_matrix(u, list(u))) for u in usage)
    for s, ax in enumerate(axes[0]):
        seen = [m for m in order if m in usage[s]]
        image = ax.imshow(_usage_matrix(usage[s], seen), aspect="auto", cmap="viridis",
                          vmin=0, vmax=top)
        ax.set_yticks(range(len(seen)), [short[m] for m in seen], fontsize=7)
        ax.set(xlabel="atom", title=f"after stage {s + 1}")
    fig.colorbar(image, ax=axes[0].tolist(), label="mean routing weight")
    fig.suptitle(f"{family} ({tag}): atom usage by task")
    written.append(_save(fig, output, f"continual_atom_usage_{family}_{tag}.png", tight=False))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    frame = pd.DataFrame([{**r, "after": s} for s, rows in enumerate(drift) for r in rows])
    for member, group in frame.groupby("member", sort=False):
        ax.plot(group.after + 1, group.drift, marker="o",
                label=f"{short[member]} (stage {group.stage.iloc[0] + 1})")
    ax.set(xlabel="after stage", ylabel="usage drift since its stage (TV)",
           title=f"{family} ({tag}): per-task usage drift")
    ax.set_xticks(range(1, len(stages) + 1))
    ax.legend(fontsize=6)
    written.append(_save(fig, output, f"continual_usage_drift_{family}_{tag}.png"))

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    entropy = [atom_entropy(_usage_matrix(u, list(u))) for u in usage]
    width = 0.8 / len(entropy)
    for s, h in enumerate(entropy):
        ax.bar(np.arange(len(h)) + s * width, h, width, label=f"after stage {s + 1}")
    ax.set(xlabel="atom", ylabel="usage entropy over tasks / log(tasks)",
           title=f"{family} ({tag}): per-atom usage entropy")
    ax.legend(fontsize=7)
    written.append(_save(fig, output, f"continual_atom_entropy_{family}_{tag}.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    final = usage[-1]
    kl = _symmetric_kl(_usage_matrix(final, order))
    image = ax.imshow(kl, cmap="magma")
    ax.set_xticks(range(len(order)), [short[m] for m in order], rotation=90, fontsize=6)
    ax.set_yticks(range(len(order)), [short[m] for m in order], fontsize=6)
    ax.set_title(f"{family} ({tag}): task separation\n(symmetric KL of mean routing)",
                 fontsize=9)
    fig.colorbar(image, ax=ax)
    written.append(_save(fig, output, f"continual_task_separation_{family}_{tag}.png"))

    fig, ax = plt.subplots(figsize=(6, 3.8))
    stagewise = frame.groupby(["stage", "after"]).drift.mean().reset_index()
    for stage, group in stagewise.groupby("stage"):
        ax.plot(group.after + 1, group.drift, marker="o", label=f"tasks of stage {stage + 1}")
    ax.set(xlabel="after stage", ylabel="mean route drift (TV)",
           title=f"{family} ({tag}): stagewise route drift")
    ax.set_xticks(range(1, len(stages) + 1))
    ax.legend(fontsize=7)
    written.append(_save(fig, output, f"continual_route_drift_{family}_{tag}.png"))
    return written


def _curve_figures(df: pd.DataFrame, output: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    held = df[(df.split == "heldout") & df.stage.isna()]
    for family, group in held.groupby("family", sort=False):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (method, control, encoder), g in group.groupby(
                ["method", "control", group.encoder.fillna("-")]):
            if method in ("base", "shared-lora", "memory", "conditioning") or (
                    control == "shuffled"):
                continue
            curve = g.groupby("n").rmse_sd.apply(_gmean)
            label = LABELS[method]
            if encoder != "-":
                label += f" ({encoder}{', no description' if control == 'none' else ''})"
            ax.plot(curve.index, curve.values, marker="o", label=label,
                    linestyle="--" if encoder == "lexical" else "-")
        for method in ("memory", "conditioning"):
            zero = group[(group.method == method) & (group.control == "right")
                         & (group.encoder == "semantic")]
            if len(zero):
                ax.axhline(_gmean(zero.rmse_sd), color="grey",
                           linestyle=":" if method == "memory" else "-.", linewidth=1,
                           label=f"zero-shot {LABELS[method]} (semantic)")
        ax.set(xscale="log", yscale="log", xlabel="rows of the held-out member",
               ylabel="clean RMSE / sd (geometric mean)", title=f"{family}: few-shot")
        ax.legend(fontsize=6)
        written.append(_save(fig, output, f"fewshot_{family}.png"))

    cont = df[df.stage.notna()]
    for family, group in cont.groupby("family", sort=False):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        first = group[group.origin == 0]
        for (method, encoder), g in first.groupby(["method", first.encoder.fillna("-")]):
            curve = g.groupby("stage").rmse_sd.apply(_gmean)
            ax.plot(curve.index + 1, curve.values, marker="o",
                    label=LABELS[method] + ("" if encoder == "-" else f" ({encoder})"))
        ax.set(yscale="log", xlabel="after stage", ylabel="RMSE / sd on stage-1 tasks",
               title=f"{family}: forgetting of the first stage's tasks")
        ax.legend(fontsize=7)
        written.append(_save(fig, output, f"forgetting_{family}.png"))
    return written


def _save(fig, output: str, name: str, tight: bool = True) -> str:
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    fig.savefig(os.path.join(output, name), dpi=90)
    plt.close(fig)
    return name


def write_report(records: list[dict], config: dict, output: str) -> str:
    """Write results.csv, headline.csv, summary.md and the PNGs; return the headline table."""
    df = pd.DataFrame([row for r in records for row in r["rows"]])
    for column in ("encoder", "stage", "origin"):
        if column not in df:
            df[column] = np.nan
    df.to_csv(os.path.join(output, "results.csv"), index=False)
    heads = headline(df, config)
    heads.to_csv(os.path.join(output, "headline.csv"), index=False)
    plots = _curve_figures(df, output)
    drawn = set()
    for record in records:
        family, part = record["family"], record["part"]
        if "memory" in record["figures"] and (family, part) not in drawn:
            drawn.add((family, part))
            plots += continual_figures(record["figures"]["memory"], family,
                                       f"{part}-seed{record['seed']}", output)
    seconds = sum(r["seconds"] for r in records)
    text = [
        "# Multi-task benchmark summary", "",
        f"{len(records)} cells ({seconds / 60:.1f} min of compute): families "
        f"{sorted(df.family.unique())}, seeds {sorted(map(int, df.seed.unique()))}, "
        f"encoders {sorted(df.encoder.dropna().unique())}. Base {config['base_epochs']} epochs on "
        f"{config['n_source']} source rows; multi-task and stage fits "
        f"{config['max_epochs']} epochs (batch {config['batch_size']}, lr {config['lr']}); "
        f"few-shot fits {config['few_steps']} steps (batch {config['few_batch_size']}); "
        f"{config['n_per_member']} noisy rows per member (noise {config['noise']}), "
        f"{config['n_test']} clean test rows; r = {config['rank']}, M = {config['n_atoms']}, "
        f"k = {config['top_k']}, block size {config['block_size']}; "
        f"{config['n_stages']} continual stages.", "",
        "## Headline ratios (geometric mean of RMSE ratios, bootstrap 95% CI, Wilcoxon p; "
        "< 1: the first is better)", "", _headline_table(heads), "",
        "## Zero-shot: geometric mean RMSE / sd over seeds and members", "",
        _zero_shot_table(df), "",
        "## Few-shot on held-out members: geometric mean RMSE / sd by rows n "
        "(0: zero-shot)", "", _few_shot_table(df), "",
        "## Continual: tasks of earlier stages (geometric means)", "",
        "`own`: RMSE / sd right after the task's stage; `final`: after the last stage; "
        "`forgetting`: final / own; `base`: the unadapted base on the same tasks.", "",
        _continual_table(df), "",
        "## Plots", "", *[f"- [{p}]({p})" for p in plots], "",
    ]
    with open(os.path.join(output, "summary.md"), "w") as f:
        f.write("\n".join(text))
    return _headline_table(heads)


# ---- running ------------------------------------------------------------------------


def add_family_arguments(parser, seeds=None, encoders=None) -> None:
    """The options every study over described task families shares: which families
    (the report split, the development split, or named ones), seeds and encoders."""
    parser.add_argument("--families", nargs="+", default=None,
                        help="default: the report families (qlsk.simlib.REPORT_FAMILIES), "
                             "or the development ones with --development")
    parser.add_argument("--development", action="store_true",
                        help="the development families, where designs and defaults are "
                             "chosen (qlsk.simlib.DEVELOPMENT_FAMILIES)")
    parser.add_argument("--seeds", nargs="+", type=int, default=seeds)
    parser.add_argument("--encoders", nargs="+", default=encoders,
                        choices=["semantic", "lexical"])


def chosen_families(args, default=None) -> list[str]:
    """``--families``, else ``default``, else the protocol's split (choose on the
    development families, report on the others); unknown names are refused."""
    if args.development and args.families is not None:
        raise SystemExit("give --families or --development, not both")
    families = args.families or default or list(
        DEVELOPMENT_FAMILIES if args.development else REPORT_FAMILIES)
    known = list(list_families()["name"])
    unknown = sorted(set(families) - set(known))
    if unknown:
        raise SystemExit(f"unknown families {unknown}; choose from {known}")
    return list(families)


def make_config(args) -> dict:
    config = {**DEFAULTS, **(QUICK if args.quick else FULL)}
    if args.paraphrase_augmented:
        config["paraphrase_augmented"] = True
    for key in ("seeds", "encoders", "sizes", "base_epochs", "max_epochs",
                "few_steps", "n_test", "n_per_member", "n_source", "n_stages"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    config["families"] = chosen_families(args, config["families"])
    if max(config["sizes"]) > config["n_per_member"]:
        raise SystemExit(f"sizes up to {max(config['sizes'])} need --n-per-member of at "
                         f"least that, not {config['n_per_member']}")
    return config


def cells(config: dict) -> list[tuple[str, int, str]]:
    """(family, seed, part), seed by seed: every family's baselines and first encoder, then
    the other encoders, so that a run cut short covers every family."""
    first = [(f, s, p) for s in config["seeds"] for f in config["families"]
             for p in ("blind", config["encoders"][0])]
    rest = [(f, s, e) for e in config["encoders"][1:] for s in config["seeds"]
            for f in config["families"]]
    return first + rest


def _cell(config: dict, family: str, seed: int, part: str) -> dict:
    return {"family": family, "seed": seed, "part": part, **run_cell(config, family, seed, part)}


def _same_settings(previous: dict, config: dict) -> bool:
    """A run may grow by families, seeds and encoders; every other setting must match."""
    grown = ("families", "seeds", "encoders")
    return ({k: v for k, v in previous.items() if k not in grown}
            == {k: v for k, v in config.items() if k not in grown})


def run(config: dict, output: str, limit_s: float | None = None,
        jobs: int = 1) -> list[dict]:
    """Run the missing cells of ``config`` into ``output``; return every record.

    ``limit_s``: start no new cell after this many seconds (the run resumes later; one
    cell at a time only). ``jobs``: cells run in that many processes.
    """
    return list(run_cells(_cell, config, cells(config), output, same=_same_settings,
                          limit_s=limit_s, jobs=jobs).values())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.described_tasks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one family, one seed, the semantic encoder, fewer epochs")
    parser.add_argument("--output", default=None,
                        help="result folder (default benchmarks/results/multitask-<mode>-"
                             "<time>); an existing one resumes")
    add_family_arguments(parser)
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--base-epochs", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--few-steps", type=int, default=None,
                        help="optimiser steps of every neural few-shot fit")
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--n-per-member", type=int, default=None)
    parser.add_argument("--n-source", type=int, default=None)
    parser.add_argument("--n-stages", type=int, default=None)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="minutes after which no new cell starts (rerun to resume; "
                             "one job only)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel")
    parser.add_argument("--paraphrase-augmented", action="store_true",
                        help="also train the memory and the description-as-input network "
                             "on every training row twice, once with its member's "
                             "paraphrase (half the epochs), and score both wordings")
    args = parser.parse_args(argv)
    config = make_config(args)
    output = args.output or os.path.join(
        os.path.dirname(__file__), "results",
        f"multitask-{'quick' if args.quick else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    records = run(config, output, args.time_limit and 60 * args.time_limit, args.jobs)
    table = write_report(records, config, output) if records else "no cell finished"
    print(table)
    print(f"\n{len(records)} cells, {time.perf_counter() - t0:.0f} s; summary.md, "
          f"results.csv and plots in {output}")


if __name__ == "__main__":
    main()

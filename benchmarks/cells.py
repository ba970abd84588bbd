"""One benchmark cell: a task and a seed, every target sample size and method on it.

A cell pretrains one base on the task's source data and adapts it with each method,
under the same training settings, at every target sample size. It returns one row per method
and size with every setting. Numerical trouble is counted in the row, not printed:
``convergence_warnings`` (scikit-learn's, from the GPs' optimisers) and
``cholesky_failures`` (correlation matrices SMT's MFK failed to factorise).
"""

from __future__ import annotations

import time
import warnings
import zlib

import numpy as np
import optuna
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from threadpoolctl import threadpool_limits

from qlsk import (
    FineTuneRegressor,
    GPDiscrepancyRegressor,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
    TransferRegressor,
)
from qlsk.adapters.calibration import CalibrationWarning
from qlsk.estimators.transfer import default_candidates
from qlsk.simlib import list_tasks, load_task
from qlsk.tuning import tune

from .peers import PEERS, ard_gp, make_peer, smt_available

METHODS = ("base", "target-only", "finetune", "lora", "ql", "ql-prior", "ql-misleading",
           "lora-cal", "ql-cal", "lora-gphead", "gp", *PEERS, "auto", "peft-lora",
           "peft-vblora")
NEURAL = ("target-only", "finetune", "lora", "ql", "ql-prior", "ql-misleading", "lora-cal",
          "ql-cal", "peft-lora", "peft-vblora")


def misleading_description(task_name: str) -> str:
    """The description of another task (the next one in the list): a wrong prior."""
    names = list(list_tasks()["name"])
    other = names[(names.index(task_name) + 1) % len(names)]
    return load_task(other, n_source=0, n_train=0, n_test=0).description


# The adapters' full-batch optimiser where a run's configuration names none: the one the
# published figures were measured with, before L-BFGS became the single-task adapters'
# default. The studies keep it unless --optimizer; the main grid records its own.
STUDY_OPTIMIZER = "adam"


def study_optimizer(config: dict) -> str:
    """The adapters' full-batch optimiser of a run's ``config``."""
    return config.get("optimizer", STUDY_OPTIMIZER)


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) % (2**31)


def _gp(seed: int, bounds) -> Pipeline:
    """A GP with one length scale per input, on inputs scaled to the task's unit box."""
    lo, span = bounds[:, 0], bounds[:, 1] - bounds[:, 0]
    return make_pipeline(FunctionTransformer(lambda X: (X - lo) / span), ard_gp(len(lo), seed))


def _models(config, task_name, description, base, seed, n_features):
    common = {"max_epochs": config["max_epochs"], "batch_size": config["batch_size"],
              "lr": config["lr"], "early_stopping": config["early_stopping"],
              "random_state": seed}
    # the adapters as in the paper ("-cal" adds the calibration), in the configured regime
    plain = {"output_calibration": False, "regularization": config["regularization"],
             "max_steps": config["max_steps"], "optimizer": study_optimizer(config)}
    adapting = {**common, "lr": config["adapter_lr"]}  # None: the regime's default
    ql = {"rank": config["rank"], "n_atoms": config["n_atoms"], "top_k": config["top_k"],
          "block_size": config["block_size"], "base": base, **adapting}
    models = {
        "target-only": MLPRegressor(hidden_layer_sizes=config["hidden"], **common),
        "finetune": FineTuneRegressor(base=base, **plain, **adapting),
        "ql": QueryableLoraRegressor(**plain, **ql),
        "ql-prior": QueryableLoraRegressor(task_description=description, **plain, **ql),
        "ql-misleading": QueryableLoraRegressor(
            task_description=misleading_description(task_name), **plain, **ql),
    }
    rank = matched_lora_rank(models["ql"], base, n_features)
    models["lora"] = LoraRegressor(base=base, rank=rank, **plain, **adapting)
    models["lora-cal"] = clone(models["lora"]).set_params(output_calibration=True)
    models["ql-cal"] = clone(models["ql"]).set_params(output_calibration=True)
    models["lora-gphead"] = GPDiscrepancyRegressor(clone(models["lora"]), random_state=seed)
    # method "auto": chooses among the GP, fine-tuning and LoRA at their package
    # defaults, the adapters in the configured regime
    candidates = default_candidates()
    for name in ("finetune", "lora"):
        candidates[name].set_params(regularization=config["regularization"],
                                    max_steps=config["max_steps"], lr=config["adapter_lr"],
                                    optimizer=plain["optimizer"])
    models["auto"] = TransferRegressor(base=base, candidates=candidates, random_state=seed)
    if "peft-lora" in config["methods"] or "peft-vblora" in config["methods"]:
        from .peft_methods import PeftRegressor

        models["peft-lora"] = PeftRegressor(base=base, peft_method="lora", rank=rank, **common)
        models["peft-vblora"] = PeftRegressor(base=base, peft_method="vblora",
                                              rank=config["rank"], **common)
    return models


def matched_lora_rank(ql: QueryableLoraRegressor, base: MLPRegressor, n_features: int) -> int:
    """The LoRA rank whose trainable parameter count is closest to Queryable LoRA's."""
    X, y = np.zeros((2, n_features)), np.zeros(2)
    one_epoch = {"regularization": "fixed", "max_epochs": 1, "random_state": 0}  # counted
    n_ql = clone(ql).set_params(**one_epoch).fit(X, y).n_trainable_params_
    per_rank = LoraRegressor(base=base, rank=1, output_calibration=ql.output_calibration,
                             **one_epoch).fit(X, y).n_trainable_params_
    return max(1, int(round(n_ql / per_rank)))


def pretrain_base(config: dict, task, task_name: str, seed: int) -> MLPRegressor:
    """The base every method of a (task, seed) cell adapts, pretrained on the source rows.

    Every benchmark pretrains its bases here, so one task and seed gives the same base
    in all of them.
    """
    return MLPRegressor(hidden_layer_sizes=config["hidden"], max_epochs=config["base_epochs"],
                        batch_size=config["batch_size"], lr=config["lr"],
                        random_state=_seed(task_name, seed)).fit(task.X_source, task.y_source)


def sizes_on_one_base(config: dict, task_name: str, seed: int):
    """Yield ``(n_train, task, base)`` for every size of a cell, all on one base.

    The source rows are drawn first, so they are the same for every size: the base is
    pretrained once, on the first size's draw.
    """
    base = None
    for n_train in config["sizes"]:
        task = load_task(task_name, n_source=config["n_source"], n_train=n_train,
                         n_test=config["n_test"], noise=config["noise"], random_state=seed)
        if base is None:
            base = pretrain_base(config, task, task_name, seed)
        yield n_train, task, base


def rmse_sd(y_true, pred, sd: float | None = None) -> float:
    """Test RMSE divided by ``sd`` (default: the standard deviation of the test targets;
    a family member's own sd in the multi-task studies)."""
    y_true = np.asarray(y_true)
    return float(np.sqrt(np.mean((np.ravel(pred) - y_true) ** 2))
                 / (y_true.std() if sd is None else sd))


class _ConvergenceWarnings:
    """Counts scikit-learn's ConvergenceWarnings raised inside ``with`` (a GP's length
    scale at its bound, in the peers and the GP head) and qlsk's CalibrationWarnings (a
    fold whose base carries no signal, inside ``auto``'s cross-validation) instead of
    printing them; any other warning is shown as usual. Use it again to add to
    ``count`` and ``calibration``."""

    def __init__(self):
        self.count = 0
        self.calibration = 0

    def __enter__(self):
        self._catch = warnings.catch_warnings(record=True)
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.simplefilter("always", CalibrationWarning)
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        for w in self._caught:
            if issubclass(w.category, ConvergenceWarning):
                self.count += 1
            elif issubclass(w.category, CalibrationWarning):
                self.calibration += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return False


def _stability(history) -> float:
    """The spread of the last 10 epochs' training loss; NaN for a path of strengths (the
    evidence's history holds one row per strength, not epochs)."""
    if not history or "strength" in history[-1]:
        return float("nan")
    return float(np.std([row["train_loss"] for row in history[-10:]]))


def run_cell(config: dict, task_name: str, seed: int) -> list[dict]:
    """Run every configured method at every sample size on one (task, seed) cell."""
    torch.set_num_threads(1)  # cells run in parallel processes
    threadpool_limits(1)  # and BLAS under the GPs: oversubscribed, MFK ran 10-25x slower
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    base = base_time = None
    for n_train in config["sizes"]:
        # The source rows are drawn first, so they are the same for every n_train.
        task = load_task(task_name, n_source=config["n_source"], n_train=n_train,
                         n_test=config["n_test"], noise=config["noise"], random_state=seed)
        if base is None:
            t0 = time.perf_counter()
            base = pretrain_base(config, task, task_name, seed)
            base_time = time.perf_counter() - t0
        rows += _run_size(config, task_name, seed, n_train, task, base, base_time)
    return rows


def _run_size(config, task_name, seed, n_train, task, base, base_time) -> list[dict]:
    models = _models(config, task_name, task.description, base, _seed(task_name, seed, n_train),
                     task.X_train.shape[1])
    rows = []
    for method in config["methods"]:
        row = {"task": task_name, "seed": seed, "n_train": n_train, "method": method,
               "noise": config["noise"], "n_source": config["n_source"],
               "max_epochs": config["max_epochs"], "base_epochs": config["base_epochs"],
               "lr": config["lr"], "tune_trials": config["tune_trials"],
               "regularization": config["regularization"], "max_steps": config["max_steps"],
               "optimizer": study_optimizer(config)}
        if method == "mfk" and not smt_available():
            rows.append({**row, "rmse_sd": float("nan"), "r2": float("nan"),
                         "note": "skipped: smt is not installed (pip install qlsk[mf])"})
            continue
        t0 = time.perf_counter()
        # counted in the row, not printed: pages of them would hide the table
        convergence = _ConvergenceWarnings()
        if method == "base":
            model, fit_time = base, base_time
        elif method == "gp" or method in PEERS:
            model = (_gp(seed, task.bounds) if method == "gp"
                     else make_peer(method, base, task, seed))
            with convergence:
                model.fit(task.X_train, task.y_train)
            fit_time = time.perf_counter() - t0
        else:
            model = models[method]
            with convergence:
                if config["tune_trials"] and method in NEURAL and _tunes_lr(model):
                    _, model = tune(model, task.X_train, task.y_train, random_state=seed,
                                    n_trials=config["tune_trials"], cv=3,
                                    search_space={"lr": _lr_space()})
                else:
                    model.fit(task.X_train, task.y_train)
            fit_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        with convergence:
            pred = model.predict(task.X_test)
        predict_time = time.perf_counter() - t0
        history = getattr(model, "history_", [])
        row.update({
            "rmse_sd": rmse_sd(task.y_test, pred),
            "r2": float(r2_score(task.y_test, pred)),
            "stability": _stability(history) if method != "base" else float("nan"),
            "fit_time_s": fit_time,
            "predict_ms_per_1000": 1e3 * predict_time / len(task.X_test) * 1000,
            "n_trainable_params": (len(model[-1].kernel_.theta) if method == "gp"
                                   else 0 if method == "base" else model.n_trainable_params_),
            "rank": getattr(model, "rank", None),
            "gp_head_kept": getattr(model, "discrepancy_kept_", None),
            "chosen": getattr(model, "chosen_", None),
            "convergence_warnings": convergence.count,
            "calibration_warnings": convergence.calibration,
            "cholesky_failures": getattr(model, "n_cholesky_failures_", 0),
            "train_curve": [r["train_loss"] for r in history] if method != "base" else [],
        })
        if isinstance(model, QueryableLoraRegressor):
            row["atom_usage"] = model.atom_usage(task.X_test).mean(axis=1).tolist()
        rows.append(row)
    return rows


def _tunes_lr(model) -> bool:
    """Whether ``--tune-trials`` searches this model's ``lr``: not an adapter whose
    full-batch fits use L-BFGS, whose line search sets the step (it fits at its
    defaults instead)."""
    return not (getattr(model, "regularization", "fixed") != "fixed"
                and getattr(model, "optimizer", "adam") == "lbfgs")


def _lr_space():
    from optuna.distributions import FloatDistribution

    return FloatDistribution(1e-4, 1e-2, log=True)

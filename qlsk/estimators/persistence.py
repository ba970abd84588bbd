"""Saving fitted estimators as safetensors plus JSON: loading executes no code."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..adapters import AdaptedModel, inject
from ..adapters.calibration import OutputCalibration, uncalibrated
from ._net import MLP

FORMAT = "qlsk-1"


def _json_params(estimator) -> dict:
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key in ("base", "callbacks"):
            continue  # the weights are saved whole; callbacks belong to one fit
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except TypeError:
            raise TypeError(f"cannot save parameter {key}={value!r} as JSON; set it to a "
                            "plain value (e.g. text_encoder='lexical') or use pickle") from None
        params[key] = value
    return params


def _dump(estimator, prefix: str = "") -> tuple[dict, dict]:
    """The JSON metadata and the tensors (keys under ``prefix``) of a fitted estimator.

    An adapter's ``base`` is stored with it (recursively, under ``base/``), so that a
    loaded model refits from the same base rather than pretraining a new one.
    """
    check_is_fitted(estimator, "net_")
    from . import regressors

    if getattr(regressors, type(estimator).__name__, None) is not type(estimator):
        raise TypeError(f"save() stores the single-task estimators; keep a "
                        f"{type(estimator).__name__} with pickle (its atom memory alone: "
                        "save_memory)")
    whole = estimator.net_.module_
    module = uncalibrated(whole)
    adapted = isinstance(module, AdaptedModel)
    mlp = module.base_model if adapted else module
    if not isinstance(mlp, MLP):
        raise TypeError("save() stores qlsk MLP networks; this one has a custom torch "
                        "base, so use pickle instead")
    meta = {
        "class": type(estimator).__name__,
        "params": _json_params(estimator),
        "mlp": mlp.spec(),
        "adapter": ({"method": module.method, "config": {
            k: v for k, v in module.config.items()
            if k not in ("task_description", "text_encoder")}} if adapted else None),
        "calibrated": whole is not module,
        "n_features_in_": int(estimator.n_features_in_),
        "feature_names_in_": (estimator.feature_names_in_.tolist()
                              if hasattr(estimator, "feature_names_in_") else None),
        "n_outputs_": int(estimator.n_outputs_),
        "y_was_1d": bool(estimator._y_was_1d),
        "n_trainable_params_": int(estimator.n_trainable_params_),
        "history_": estimator.history_,
    }
    tensors = {prefix + k: v.detach().cpu().contiguous()
               for k, v in whole.state_dict().items()}
    if "base" in estimator.get_params(deep=False):
        # base=None pretrained its own base_: kept too, though a refit pretrains anew
        key = "base" if estimator.base is not None else "pretrained_base"
        meta[key], base_tensors = _dump_base(getattr(estimator, key.replace(
            "pretrained_base", "base_")), prefix + "base/")
        tensors.update(base_tensors)
    return meta, tensors


def _dump_base(base, prefix: str) -> tuple[dict | None, dict]:
    from sklearn.frozen import FrozenEstimator

    if base is None:
        return None, {}
    if isinstance(base, str | os.PathLike):
        return {"kind": "path", "path": os.fspath(base)}, {}
    if isinstance(base, MLP):
        tensors = {prefix + k: v.detach().cpu().contiguous()
                   for k, v in base.state_dict().items()}
        return {"kind": "module", "mlp": base.spec()}, tensors
    frozen = isinstance(base, FrozenEstimator)
    try:
        meta, tensors = _dump(base.estimator if frozen else base, prefix)
    except (TypeError, AttributeError, NotFittedError):
        raise TypeError(f"save() cannot store the base ({type(base).__name__}); keep the "
                        "model with pickle, or adapt a qlsk MLPRegressor") from None
    return {"kind": "frozen" if frozen else "estimator", "estimator": meta}, tensors


def save(estimator, path, overwrite: bool = False) -> None:
    """Write a fitted qlsk estimator to ``path`` (safetensors with JSON metadata).

    An adapting estimator is saved with its ``base`` (a fitted MLPRegressor, in a
    FrozenEstimator or not, a qlsk MLP module, or a path, kept as the path), so the
    loaded model refits from the same base.

    Parameters
    ----------
    estimator : fitted qlsk estimator
        Its network must be a qlsk MLP, adapted or not (custom torch bases: pickle).
    path : str or os.PathLike
        The file to write.
    overwrite : bool, default=False
        Replace an existing file. Without it an existing file is never touched.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    TypeError
        If the network or the base is not one that can be stored without pickle.
    """
    from safetensors.torch import save_file

    check_is_fitted(estimator, "net_")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    meta, tensors = _dump(estimator)
    meta["format"] = FORMAT
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"qlsk": json.dumps(meta)})
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"{path} appeared while saving; nothing was overwritten")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path, device: str = "cpu"):
    """Load an estimator written by :func:`save`, on ``device`` (default the CPU).

    A model trained on CUDA loads on a machine without a GPU. No code from the file
    is executed: the weights are safetensors and the rest is JSON. An adapting
    estimator comes back with its ``base``.

    Returns
    -------
    estimator
        Fitted, ready to ``predict``.
    """
    from safetensors import SafetensorError, safe_open

    from ._base import resolve_device

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("qlsk")
            state = {k: f.get_tensor(k) for k in f.keys()} if raw is not None else None
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a model saved by qlsk ({exc})") from None
    if raw is None:
        raise ValueError(f"{path} is not a model saved by qlsk")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return _restore(meta, state, "", resolve_device(device))


def _restore(meta: dict, tensors: dict, prefix: str, device: str):
    from . import regressors

    params = meta["params"]
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    if meta.get("base") is not None:
        params["base"] = _restore_base(meta["base"], tensors, prefix + "base/", device)
    estimator = getattr(regressors, meta["class"])(**params)
    state = {k[len(prefix):]: v for k, v in tensors.items()
             if k.startswith(prefix) and "/" not in k[len(prefix):]}
    inner = "model." if meta.get("calibrated") else ""
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten: keep RNG
        module = MLP(**meta["mlp"])
        if meta["adapter"] is not None:
            module = inject(module, meta["adapter"]["method"], **meta["adapter"]["config"])
        if inner + "memory.log_prior" in state:
            module.memory.set_prior(state[inner + "memory.log_prior"])
        if inner:
            module = OutputCalibration(module, torch.ones(meta["n_outputs_"]))
    module.load_state_dict(state)
    estimator.net_ = estimator._make_net(module, module_scale(module), 2, 0, device)
    estimator.net_.initialize()
    estimator.n_features_in_ = meta["n_features_in_"]
    if meta["feature_names_in_"] is not None:
        estimator.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
    estimator.n_outputs_ = meta["n_outputs_"]
    estimator._y_was_1d = meta["y_was_1d"]
    estimator.n_trainable_params_ = meta["n_trainable_params_"]
    estimator.history_ = meta["history_"]
    if meta.get("pretrained_base") is not None:
        estimator.base_ = _restore_base(meta["pretrained_base"], tensors, prefix + "base/",
                                        device)
    elif meta.get("base") is not None:
        estimator.base_ = estimator.base
    return estimator


def _restore_base(meta: dict, tensors: dict, prefix: str, device: str):
    from sklearn.frozen import FrozenEstimator

    if meta["kind"] == "path":
        return meta["path"]
    if meta["kind"] == "module":
        module = MLP(**meta["mlp"])
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                if k.startswith(prefix)})
        return module
    base = _restore(meta["estimator"], tensors, prefix, device)
    return FrozenEstimator(base) if meta["kind"] == "frozen" else base


def module_scale(module) -> torch.Tensor:
    module = uncalibrated(module)
    mlp = module.base_model if isinstance(module, AdaptedModel) else module
    return mlp.y_scale.clone()

"""Saving fitted estimators as safetensors plus JSON: loading executes no code."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..adapters import AdaptedModel, inject
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


def save(estimator, path, overwrite: bool = False) -> None:
    """Write a fitted qlsk estimator to ``path`` (safetensors with JSON metadata).

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
    """
    from safetensors.torch import save_file

    check_is_fitted(estimator, "net_")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    module = estimator.net_.module_
    adapted = isinstance(module, AdaptedModel)
    mlp = module.base_model if adapted else module
    if not isinstance(mlp, MLP):
        raise TypeError("save() stores qlsk MLP networks; this one has a custom torch "
                        "base, so use pickle instead")
    meta = {
        "format": FORMAT,
        "class": type(estimator).__name__,
        "params": _json_params(estimator),
        "mlp": mlp.spec(),
        "adapter": ({"method": module.method, "config": {
            k: v for k, v in module.config.items()
            if k not in ("task_description", "text_encoder")}} if adapted else None),
        "n_features_in_": int(estimator.n_features_in_),
        "feature_names_in_": (estimator.feature_names_in_.tolist()
                              if hasattr(estimator, "feature_names_in_") else None),
        "n_outputs_": int(estimator.n_outputs_),
        "y_was_1d": bool(estimator._y_was_1d),
        "n_trainable_params_": int(estimator.n_trainable_params_),
        "history_": estimator.history_,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
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
    is executed: the weights are safetensors and the rest is JSON.

    Returns
    -------
    estimator
        Fitted, ready to ``predict``.
    """
    from safetensors import SafetensorError, safe_open

    from . import regressors
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
    params = meta["params"]
    if "hidden_layer_sizes" in params:
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    estimator = getattr(regressors, meta["class"])(**params)
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten: keep RNG
        module = MLP(**meta["mlp"])
        if meta["adapter"] is not None:
            module = inject(module, meta["adapter"]["method"], **meta["adapter"]["config"])
        if "memory.log_prior" in state:
            module.memory.set_prior(state["memory.log_prior"])
    module.load_state_dict(state)
    device = resolve_device(device)
    estimator.net_ = estimator._make_net(module, module_scale(module), 2, 0, device)
    estimator.net_.initialize()
    estimator.n_features_in_ = meta["n_features_in_"]
    if meta["feature_names_in_"] is not None:
        estimator.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
    estimator.n_outputs_ = meta["n_outputs_"]
    estimator._y_was_1d = meta["y_was_1d"]
    estimator.n_trainable_params_ = meta["n_trainable_params_"]
    estimator.history_ = meta["history_"]
    return estimator


def module_scale(module) -> torch.Tensor:
    mlp = module.base_model if isinstance(module, AdaptedModel) else module
    return mlp.y_scale.clone()

"""Saving fitted estimators as safetensors plus JSON: loading executes no code."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..adapters import AdaptedModel, inject
from ..adapters.calibration import OutputCalibration, uncalibrated
from ..files import write_safetensors
from ..nn import MLP
from . import registry
from .regularized import dump_posterior, restore_posterior

FORMAT = "qlsk-1"

# The metadata every saved estimator carries; a file without one of them is refused.
_META_KEYS = ("class", "params", "mlp", "adapter", "calibrated", "n_features_in_",
              "feature_names_in_", "n_outputs_", "y_was_1d", "n_trainable_params_",
              "history_")


def _network_classes() -> list[str]:
    return [name for name in registry.names() if registry.entry_named(name).network]


def _check_storable(estimator) -> registry.Storable:
    """The registry entry of ``estimator`` (refused if its class is not registered),
    then, for a network, that it is fitted."""
    entry = registry.entry_for(estimator)
    if entry is None:
        name = type(estimator).__name__
        memory = " (its atom memory alone: save_memory)" if hasattr(
            estimator, "save_memory") else ""
        raise TypeError(f"save() stores the single-task networks "
                        f"({', '.join(_network_classes())}) and "
                        f"{', '.join(n for n in registry.names() if n not in _network_classes())}"
                        f"; keep a {name} with pickle{memory}")
    if entry.network:
        check_is_fitted(estimator, "net_")
    else:
        check_is_fitted(estimator)
    return entry


def _dump_state(estimator, entry: registry.Storable, prefix: str = "") -> tuple[dict, dict]:
    """The metadata and tensors (keys under ``prefix``) of an estimator registered with
    its own ``dump``: its parameters, its fitted state (under ``entry.key``), its base,
    kept as an adapter's is, and its nested estimators, each stored whole."""
    state, state_tensors = entry.dump(estimator)
    meta = {"class": type(estimator).__name__,
            "params": _json_params(estimator, skip=entry.nested),
            entry.key: state, "n_features_in_": int(estimator.n_features_in_),
            "feature_names_in_": (estimator.feature_names_in_.tolist()
                                  if hasattr(estimator, "feature_names_in_") else None)}
    tensors = {}
    if "base" in estimator.get_params(deep=False):
        meta["base"], tensors = _dump_base(estimator.base, prefix + "base/")
    for name in entry.nested:
        inner = getattr(estimator, name)
        inner_entry = _check_storable(inner)
        meta[name], inner_tensors = (
            _dump(inner, f"{prefix}{name}/") if inner_entry.network
            else _dump_state(inner, inner_entry, f"{prefix}{name}/"))
        tensors.update(inner_tensors)
    tensors.update({f"{prefix}{entry.key}/{k}": v.contiguous()
                    for k, v in state_tensors.items()})
    return meta, tensors


def _restore_state(meta: dict, tensors: dict, device: str, entry: registry.Storable,
                   prefix: str = ""):
    name = entry.cls.__name__
    missing = [k for k in ("params", entry.key, "n_features_in_", "feature_names_in_",
                           *entry.nested) if k not in meta]
    if missing:
        raise ValueError(f"the metadata lacks {missing}")
    params = _checked_params(entry.cls, meta["params"])
    stored_as_params = sorted(set(entry.nested) & set(params))
    if stored_as_params:
        raise ValueError(f"{name}'s {stored_as_params} are stored whole, not as parameters")
    if meta.get("base") is not None:
        params["base"] = _restore_base(meta["base"], tensors, prefix + "base/", device)
    for key in entry.nested:
        inner = meta[key]
        inner_entry = registry.entry_named(inner.get("class") if isinstance(inner, dict)
                                           else None)
        if inner_entry is None:
            raise ValueError(f"the nested {key!r} is not a class load() builds")
        params[key] = (_restore(inner, tensors, f"{prefix}{key}/", device)
                       if inner_entry.network else
                       _restore_state(inner, tensors, device, inner_entry, f"{prefix}{key}/"))
    estimator = entry.cls(**params)
    state_prefix = f"{prefix}{entry.key}/"
    try:
        estimator._validate_params()
        entry.restore(estimator, meta[entry.key], {
            k[len(state_prefix):]: v for k, v in tensors.items() if k.startswith(state_prefix)},
            device=device)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the saved {name} is incomplete or inconsistent: {exc!r}") from None
    except ValueError as exc:  # scikit-learn's InvalidParameterError among them
        raise ValueError(f"invalid saved {name}: {exc}") from None
    estimator.n_features_in_ = meta["n_features_in_"]
    if meta["feature_names_in_"] is not None:
        estimator.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
    if "base" in estimator.get_params(deep=False):
        base = estimator.base
        estimator.base_ = load(base, device) if isinstance(base, str) else base
    return estimator


# What to do about a parameter that JSON cannot hold, by name (None: any other).
_PLAIN_VALUE = {
    "text_encoder": "set it back to 'lexical' or 'semantic' before saving (the prior "
                    "itself is stored with the weights), or use pickle",
    "target_modules": "pass the layer names as a list or a regular expression, or use "
                      "pickle",
    None: "set it to a plain value (a number, string, list or None), or use pickle",
}


def _json_params(estimator, skip=()) -> dict:
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key in ("base", "callbacks", *skip):
            continue  # stored whole (weights, nested estimators); callbacks belong to one fit
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, os.PathLike):  # e.g. a memory file's path
            value = os.fspath(value)
        if isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except TypeError:
            raise TypeError(f"cannot save parameter {key}={value!r} as JSON; "
                            f"{_PLAIN_VALUE.get(key, _PLAIN_VALUE[None])}") from None
        params[key] = value
    return params


def _dump(estimator, prefix: str = "") -> tuple[dict, dict]:
    """The JSON metadata and the tensors (keys under ``prefix``) of a fitted estimator.

    An adapter's ``base`` is stored with it (recursively, under ``base/``), so that a
    loaded model refits from the same base rather than pretraining a new one.
    """
    if not _check_storable(estimator).network:
        raise TypeError(f"a {type(estimator).__name__} cannot be stored as a base")
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
            if k not in ("task_description", "text_encoder")},
            "layers": _adapted_layer_names(module)} if adapted else None),
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
    dump_posterior(estimator, meta, tensors, prefix)
    if "base" in estimator.get_params(deep=False):
        # base=None pretrained its own base_: kept too, though a refit pretrains anew
        key = "base" if estimator.base is not None else "pretrained_base"
        meta[key], base_tensors = _dump_base(getattr(estimator, key.replace(
            "pretrained_base", "base_")), prefix + "base/")
        tensors.update(base_tensors)
    return meta, tensors


def _adapted_layer_names(module: AdaptedModel) -> list[str]:
    """The names of the adapted layers in forward order: what ``target_modules`` chose,
    kept as names so that a callable or a pattern need not be stored."""
    names = {id(m): n for n, m in module.base_model.named_modules()}
    return [names[id(layer)] for layer in module.adapted_layers]


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
    loaded model refits from the same base. The adapted layers are recorded by name,
    so a model fitted with ``target_modules`` loads with the same layers adapted.

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
    FileNotFoundError
        If the folder of ``path`` does not exist.
    TypeError
        If the estimator's class is not one save() keeps: the four single-task
        networks (:class:`~qlsk.MLPRegressor`, :class:`~qlsk.FineTuneRegressor`,
        :class:`~qlsk.LoraRegressor`, :class:`~qlsk.QueryableLoraRegressor`),
        :class:`~qlsk.MultiFidelityGPRegressor` (kept as its fitted hyperparameters
        and the rows its GPs condition on), :class:`~qlsk.ConditionedLoraRegressor`,
        :class:`~qlsk.SharedMemoryRegressor` (weights, memory, prior map, stages
        and the text encoder's name) and :class:`~qlsk.FewShotRegressor` (with its
        shared model, stored whole); or if its network, base or a parameter cannot be
        stored without pickle (a custom torch base, a callable text encoder).
    """
    entry = _check_storable(estimator)
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    meta, tensors = _dump(estimator) if entry.network else _dump_state(estimator, entry)
    meta["format"] = FORMAT
    write_safetensors(path, tensors, meta, overwrite=overwrite)


def load(path, device: str = "cpu"):
    """Load an estimator written by :func:`save`, on ``device`` (default the CPU).

    A model trained on CUDA loads on a machine without a GPU. No code from the file
    is executed: the weights are safetensors and the rest is JSON. An adapting
    estimator comes back with its ``base``.

    Only the estimator classes :func:`save` writes are ever built, with parameters
    they accept; a file that names another class, an adapter that does not belong to
    its class, an unknown or invalid parameter, or weights that do not fit the
    recorded architecture is refused.

    Returns
    -------
    estimator
        Fitted, ready to ``predict``.

    Raises
    ------
    ValueError
        If ``path`` is not a model saved by qlsk, or its contents are inconsistent
        (the message names what).
    """
    from safetensors import SafetensorError, safe_open

    from ._base import resolve_device

    device = resolve_device(device)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("qlsk")
            state = {k: f.get_tensor(k) for k in f.keys()} if raw is not None else None
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a model saved by qlsk ({exc})") from None
    if raw is None:
        raise ValueError(f"{path} is not a model saved by qlsk")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise ValueError(f"{path} is not a model saved by qlsk (its metadata is not "
                         "JSON)") from None
    format_ = meta.get("format") if isinstance(meta, dict) else None
    if format_ != FORMAT:
        raise ValueError(f"{path} has format {format_!r}, expected {FORMAT!r}")
    try:
        entry = registry.entry_named(meta.get("class"))
        if entry is not None and not entry.network:
            return _restore_state(meta, state, device, entry)
        return _restore(meta, state, "", device)
    except ValueError as exc:
        raise ValueError(f"cannot load {path}: {exc}") from None


def _checked_class(meta) -> type:
    """The class ``meta`` names, if load() builds it, with its adapter kind checked."""
    if not isinstance(meta, dict):
        raise ValueError("an estimator's metadata is not a JSON object")
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise ValueError(f"the metadata lacks {missing}")
    name = meta["class"]
    entry = registry.entry_named(name)
    if entry is None or not entry.network:
        raise ValueError(f"class {name!r} is not one that load() builds "
                         f"({', '.join(registry.names())})")
    cls = entry.cls
    adapter = meta["adapter"]
    method = adapter.get("method") if isinstance(adapter, dict) else adapter
    expected = getattr(cls, "_method", None)  # FineTune and MLP carry no adapter
    if method != expected:
        raise ValueError(f"a {name} carries adapter {expected!r}, but the file holds "
                         f"{method!r}")
    return cls


def _checked_params(cls: type, params) -> dict:
    """``params`` as ``cls`` takes them; names it does not take are refused."""
    if not isinstance(params, dict):
        raise ValueError("the saved parameters are not a JSON object")
    # the base is stored apart (meta["base"]) and callbacks are never stored
    unknown = sorted(set(params) - (set(cls._get_param_names()) - {"base", "callbacks"}))
    if unknown:
        raise ValueError(f"{cls.__name__} has no saved parameter(s) {unknown}")
    if isinstance(params.get("hidden_layer_sizes"), list):
        params = {**params, "hidden_layer_sizes": tuple(params["hidden_layer_sizes"])}
    return params


def _restore(meta: dict, tensors: dict, prefix: str, device: str):
    cls = _checked_class(meta)
    params = _checked_params(cls, meta["params"])
    if meta.get("base") is not None:
        params["base"] = _restore_base(meta["base"], tensors, prefix + "base/", device)
    estimator = cls(**params)
    try:
        estimator._validate_params()
    except ValueError as exc:  # scikit-learn's InvalidParameterError
        raise ValueError(f"invalid saved parameter: {exc}") from None
    state = {k[len(prefix):]: v for k, v in tensors.items()
             if k.startswith(prefix) and "/" not in k[len(prefix):]}
    module = _network(meta, state)
    estimator.net_ = estimator._make_net(module, module_scale(module), 2, 0, device)
    estimator.net_.initialize()
    estimator.n_features_in_ = meta["n_features_in_"]
    if meta["feature_names_in_"] is not None:
        estimator.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
    estimator.n_outputs_ = meta["n_outputs_"]
    estimator._y_was_1d = meta["y_was_1d"]
    estimator.n_trainable_params_ = meta["n_trainable_params_"]
    estimator.history_ = meta["history_"]
    restore_posterior(estimator, meta, tensors, prefix)
    if meta.get("pretrained_base") is not None:
        estimator.base_ = _restore_base(meta["pretrained_base"], tensors, prefix + "base/",
                                        device)
    elif meta.get("base") is not None:
        estimator.base_ = estimator.base
    return estimator


def _network(meta: dict, state: dict) -> torch.nn.Module:
    """The torch module ``meta`` describes (``mlp``, and for an estimator ``adapter``
    and ``calibrated``), holding the weights ``state``."""
    inner = "model." if meta.get("calibrated") else ""
    adapter = meta.get("adapter")
    try:
        with torch.random.fork_rng(devices=[]):  # initial weights are overwritten
            module = MLP(**meta["mlp"])
            if adapter is not None:
                # files written before the layers were recorded adapted every linear layer
                module = inject(module, adapter["method"], adapter.get("layers"),
                                **adapter["config"])
            if inner + "memory.log_prior" in state:
                module.memory.set_prior(state[inner + "memory.log_prior"])
            if inner:
                module = OutputCalibration(module, torch.ones(meta["n_outputs_"]))
        module.load_state_dict(state)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(f"the saved network does not match its metadata: {exc}") from None
    return module


def _restore_base(meta: dict, tensors: dict, prefix: str, device: str):
    from sklearn.frozen import FrozenEstimator

    kinds = ("path", "module", "estimator", "frozen")
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in kinds:
        raise ValueError(f"the base has kind {kind!r}, not one of {kinds}")
    if kind == "path":
        if not isinstance(meta.get("path"), str):
            raise ValueError("the base's path is missing")
        return meta["path"]
    if kind == "module":
        return _network(meta, {k[len(prefix):]: v for k, v in tensors.items()
                               if k.startswith(prefix)})
    base = _restore(meta.get("estimator"), tensors, prefix, device)
    return FrozenEstimator(base) if kind == "frozen" else base


def module_scale(module) -> torch.Tensor:
    module = uncalibrated(module)
    mlp = module.base_model if isinstance(module, AdaptedModel) else module
    return mlp.y_scale.clone()

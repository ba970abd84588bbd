"""How every estimator takes its ``base``: one place for what a base may be.

A base is a fitted qlsk estimator (possibly in scikit-learn's ``FrozenEstimator``), a
torch ``nn.Module``, the path of a model saved by :func:`qlsk.save`, or, for the GP
estimators, any fitted regressor with ``predict``. The adapting estimators copy its
torch module (:func:`base_module`); the GP estimators call it (:func:`base_predictions`).
Both check the user's columns against the base's (:func:`check_feature_names`), and
both share it with their clones rather than copying it (:class:`SharesFitted`).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..adapters import LoraLinear
from ..nn import MLP
from ._base import BaseNeuralRegressor
from .persistence import load


def unwrap(base):
    """The estimator inside a FrozenEstimator; anything else unchanged."""
    from sklearn.frozen import FrozenEstimator

    return base.estimator if isinstance(base, FrozenEstimator) else base


def check_feature_names(got, base) -> None:
    """Refuse columns ``got`` that differ from the base's, by name or order, as
    scikit-learn does (``got`` None: a plain array, which only warns)."""
    base = unwrap(base)
    if isinstance(base, str | os.PathLike):
        base = load(base)
    expected = getattr(base, "feature_names_in_", None)
    if expected is None:
        return
    if got is None:
        warnings.warn(f"X has no feature names, but the base was fitted with feature names "
                      f"{list(expected)}", UserWarning, stacklevel=4)
        return
    if list(got) != list(expected):
        unseen = [c for c in got if c not in set(expected)]
        missing = [c for c in expected if c not in set(got)]
        detail = (f"unseen {unseen}, missing {missing}" if unseen or missing
                  else "the same names in another order")
        raise ValueError(f"X's feature names {list(got)} differ from those the base was "
                         f"fitted with {list(expected)} ({detail}); pass the columns by the "
                         "base's names, in its order")


def base_module(base) -> nn.Module:
    """The torch module behind whatever the user passed as ``base``."""
    base = unwrap(base)
    if isinstance(base, str | os.PathLike):
        base = load(base)
    if isinstance(base, BaseNeuralRegressor):
        check_is_fitted(base, "net_")
        base = base.net_.module_
    if not isinstance(base, nn.Module):
        raise TypeError("base must be a fitted qlsk.MLPRegressor (possibly in a "
                        "FrozenEstimator), a torch nn.Module, a path to a model saved by "
                        f"qlsk, or None; got {type(base).__name__}")
    if any(isinstance(m, LoraLinear) for m in base.modules()):
        raise TypeError("base is already adapted; pass the network it was adapted from")
    return base


def check_fits(module: nn.Module, n_features: int, n_outputs: int) -> None:
    if isinstance(module, MLP):
        shape_in, shape_out = module.n_features, module.n_outputs
    else:
        try:
            with torch.no_grad():
                out = module.eval()(torch.zeros(2, n_features))
        except RuntimeError as exc:
            raise ValueError(f"the base network does not accept {n_features} features: "
                             f"{exc}") from None
        shape_in, shape_out = n_features, (out.shape[1] if out.dim() == 2 else None)
    if shape_in != n_features:
        raise ValueError(f"X has {n_features} features, but the base network expects "
                         f"{shape_in}")
    if shape_out != n_outputs:
        raise ValueError(f"y has {n_outputs} output(s), but the base network returns "
                         f"{shape_out} (it must return shape (n_samples, n_outputs))")


def loaded(base):
    """``base`` with a saved model's path loaded; anything else unchanged."""
    if isinstance(base, str | os.PathLike):
        return load(base)
    return base


def base_predictions(base, given, X) -> np.ndarray:
    """The base's predictions of the rows ``X`` (``given``: as the user passed them, so a
    DataFrame reaches a base fitted on one), checked to be one finite value per row."""
    if base is None:
        return np.zeros(len(X))
    inner = unwrap(base)
    if isinstance(inner, nn.Module):
        param = next(inner.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad():
            out = inner.eval()(torch.as_tensor(X, dtype=dtype)).cpu().numpy()
    elif hasattr(base, "predict"):
        out = base.predict(given if hasattr(given, "columns") else X)
    else:
        raise TypeError("base must be a fitted regressor (with predict), a torch "
                        "nn.Module, a path to a model saved by qlsk, or None; got "
                        f"{type(base).__name__}")
    out = np.asarray(out, dtype=float)
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (len(X),):
        raise ValueError(f"the base must predict one value per row, shape ({len(X)},); got "
                         f"{out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"the base's predictions contain NaN or infinity on "
                         f"{int(np.sum(~np.isfinite(out)))} of {len(X)} rows; check the base "
                         "and the inputs' range")
    return out


class SharesFitted:
    """The fitted objects named in ``_shared`` (by default the base) are shared, not owned.

    ``clone`` (hence every search, cross-validation and refit) passes them on as they
    are: a clone of a fitted base would be unfitted. Listing their parameters
    (``get_params(deep=True)``) or setting them (``set_params(base__x=...)``) would
    change the user's own fitted object, and every clone's, without any effect on
    adaptation, which never retrains it, so neither is offered.
    """

    _shared: tuple[str, ...] = ("base",)

    def __sklearn_clone__(self):
        from sklearn.base import clone

        params = self.get_params(deep=False)
        return type(self)(**{k: v if k in self._shared else clone(v, safe=False)
                             for k, v in params.items()})

    def get_params(self, deep=True):
        """Get this estimator's parameters (``deep`` has no effect: see the class)."""
        return super().get_params(deep=False)

    def set_params(self, **params):
        """Set this estimator's parameters; those of the shared fitted objects are refused."""
        nested = sorted(k for k in params if k.split("__")[0] in self._shared and "__" in k)
        if nested:
            name = nested[0].split("__")[0]
            raise ValueError(f"cannot set {nested}: {name}= is a fitted object shared "
                             f"with every clone and never retrained by this estimator; fit "
                             f"another and pass it as {name}=...")
        return super().set_params(**params)

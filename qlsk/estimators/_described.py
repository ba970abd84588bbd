"""The plumbing shared by every described estimator (shared memory, few-shot, conditioned).

``X`` is a pandas DataFrame whose numeric columns are the inputs and whose one text
column (``description_column``) holds each row's task description. Why a column and
not scikit-learn's metadata routing is explained in ``docs/multitask.md``: in short,
the description belongs to the row, so it must follow the row through every split,
shuffle, pipeline and scorer, and a column does that with no configuration.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_array, check_is_fitted
from torch import nn

from ..adapters.prior_map import SharedMemoryModel, save_memory
from ..text import UnfamiliarDescriptionWarning, embed, unfamiliar_descriptions
from ._base import BaseNeuralRegressor
from ._net import Net, _Batches
from .regularized import POSTERIOR_KEY, RegularizedAdapter, dump_posterior, restore_posterior

_DESCRIBED_FITTED = ("feature_columns_", "embedding_dim_", "descriptions_", "stages_",
                     "n_atoms_")


# The fitted facts of a described estimator that qlsk.save keeps, besides its weights.
_SAVED_STATE = ("feature_columns_", "descriptions_", "embedding_dim_", "n_outputs_",
                "n_trainable_params_", "history_")


def dump_described(estimator) -> dict:
    """The JSON part of a fitted described estimator's file that every such estimator
    shares: its columns, descriptions, sizes, history and loss scale."""
    check_is_fitted(estimator, "net_")
    return {"feature_columns_": list(estimator.feature_columns_),
            "descriptions_": list(estimator.descriptions_),
            "embedding_dim_": int(estimator.embedding_dim_),
            "n_outputs_": int(estimator.n_outputs_), "y_was_1d": bool(estimator._y_was_1d),
            "n_trainable_params_": int(estimator.n_trainable_params_),
            "history_": estimator.history_,
            "loss_scale": estimator.net_.criterion_.scale.cpu().tolist()}


def restore_described(estimator, meta: dict) -> torch.Tensor:
    """Set what :func:`dump_described` kept back on ``estimator``; return the loss scale."""
    for name in _SAVED_STATE:
        setattr(estimator, name, meta[name])
    estimator._y_was_1d = meta["y_was_1d"]
    return torch.as_tensor(np.asarray(meta["loss_scale"], dtype=np.float32))


class _Packed(nn.Module):
    """Reads ``[inputs | embedding | task id]`` rows: one float matrix per batch.

    Packing keeps the skorch loop, its validation split and every callback unchanged:
    they see one array of rows, as for the single-task estimators.
    """

    def __init__(self, model: SharedMemoryModel, n_features: int):
        super().__init__()
        self.model, self.n_features = model, n_features

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        d = self.n_features
        return self.model(Z[:, :d], Z[:, d:-1], Z[:, -1].long())

    @property
    def penalty(self):
        """The model's extra training term (a callable), or ``None``."""
        return getattr(self.model, "penalty", None)


class _TaskBatches:
    """Shuffled training batches, each drawn from one task (the last column's id)."""

    def __init__(self, batches: _Batches):
        self.batches = batches

    def _groups(self) -> list[torch.Tensor]:
        b, task = self.batches, self.batches.X[:, -1]
        groups = []
        for t in task.unique():
            rows = (task == t).nonzero(as_tuple=True)[0]
            rows = rows[torch.randperm(len(rows), generator=b.generator)]
            groups.extend(rows.split(b.batch_size))
        return [groups[i] for i in torch.randperm(len(groups), generator=b.generator)]

    def __len__(self) -> int:
        counts = self.batches.X[:, -1].unique(return_counts=True)[1]
        return int(torch.ceil(counts / self.batches.batch_size).sum())

    def __iter__(self):
        for index in self._groups():
            yield self.batches.X[index], self.batches.y[index]


class _TaskNet(Net):
    """The qlsk net, training on mini-batches drawn from one task at a time."""

    def get_iterator(self, dataset, training=False):
        batches = super().get_iterator(dataset, training)
        return _TaskBatches(batches) if training else batches


def _check_description(value, row) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"row {row!r} has the task description {value!r}: every row needs "
                         "a non-empty string describing its task")
    return value


class _DescribedRegressor(BaseNeuralRegressor):
    """Fit and predict on DataFrames with a description column, one task per batch.

    Subclasses give ``_text_settings() -> (column, encoder)`` and
    ``_build_module(Z, y, seed) -> (module, loss_scale)``.
    """

    def _forget(self):
        super()._forget()
        for name in _DESCRIBED_FITTED:
            self.__dict__.pop(name, None)

    def _frame(self, X, reset: bool):
        """The numeric inputs (float32) and the descriptions of a DataFrame ``X``."""
        import pandas as pd
        from pandas.api.types import is_numeric_dtype

        column, _ = self._text_settings()
        name = type(self).__name__
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"{name} needs X as a pandas DataFrame with the text column "
                            f"{column!r} holding each row's task description; got "
                            f"{type(X).__name__}")
        if column not in X.columns:
            raise ValueError(f"X has no description column {column!r} (columns: "
                             f"{list(X.columns)}): every row needs its task's description, "
                             "also for predict")
        if len(X) == 0:
            raise ValueError(f"X has 0 rows; {name} needs at least one")
        columns = [c for c in X.columns if c != column]
        if reset:
            self._check_columns(columns)
            self.n_features_in_ = X.shape[1]
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
            self.feature_columns_ = columns
        elif columns != list(self.feature_columns_):
            raise ValueError(f"X has {len(columns)} input column(s) {columns}, but {name} "
                             f"was fitted on {len(self.feature_columns_)}: "
                             f"{list(self.feature_columns_)}; every task must have the same "
                             "inputs, in the same order")
        descriptions = np.asarray([_check_description(v, i) for i, v in
                                   zip(X.index, X[column])], dtype=object)
        not_numeric = [c for c in columns if not is_numeric_dtype(X[c])]
        if not columns or not_numeric:
            raise ValueError(f"every column but {column!r} must be a numeric input; "
                             f"not numeric: {not_numeric or 'no input columns at all'}")
        values = X[columns].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"the task {descriptions[row]!r} has a missing or infinite value "
                             f"in column {columns[col]!r}: every task must have the same "
                             "inputs, all finite")
        if not np.isfinite(values.astype(np.float32)).all():
            raise ValueError("X has values too large for float32")
        return values.astype(np.float32), descriptions

    def _check_columns(self, columns) -> None:
        """Hook: refuse input columns that do not fit what the model was built on."""

    def _embed(self, descriptions) -> tuple[np.ndarray, np.ndarray]:
        """Every row's description embedding and task id (one per distinct text)."""
        _, encoder = self._text_settings()
        texts, task = np.unique(descriptions.astype(str), return_inverse=True)
        vectors = np.stack([embed(t, encoder) for t in texts]).astype(np.float32)
        if hasattr(self, "embedding_dim_") and vectors.shape[1] != self.embedding_dim_:
            raise ValueError(f"the text encoder gives embeddings of length {vectors.shape[1]}, "
                             f"but the model was fitted with length {self.embedding_dim_}")
        return vectors[task], task.astype(np.float32)

    def _pack(self, X, reset: bool) -> np.ndarray:
        values, descriptions = self._frame(X, reset)
        embeddings, task = self._embed(descriptions)
        if reset:
            self.embedding_dim_ = embeddings.shape[1]
            self.descriptions_ = sorted(set(descriptions))
        else:
            self._warn_unfamiliar(descriptions)
        return np.hstack([values, embeddings, task[:, None]])

    def _warn_unfamiliar(self, descriptions) -> None:
        """Warn about descriptions outside what the training descriptions span."""
        _, encoder = self._text_settings()
        found = unfamiliar_descriptions(descriptions, self.descriptions_, encoder)
        if found:
            text, nearest, similarity, floor = found[0]
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            warnings.warn(
                f"the description {text!r}{more} is unlike every description "
                f"{type(self).__name__} was trained on: its nearest, {nearest!r}, has "
                f"similarity {similarity:.2f}, below the {floor:.2f} of the two least alike "
                "training descriptions. Its prediction is a guess from the nearest "
                "descriptions, not a reading of its words (another language, another kind "
                "of task, or a rewording the text encoder cannot relate; see "
                "docs/multitask.md, 'Unfamiliar descriptions')",
                UnfamiliarDescriptionWarning, stacklevel=5)

    def _validate_fit_data(self, X, y):
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self._y_was_1d = y.ndim == 1
        y2 = y.reshape(len(y), -1).astype(np.float32)
        if not np.isfinite(y2).all():
            raise ValueError("y has values too large for float32")
        return self._pack(X, reset=True), y2

    def _validate_predict_data(self, X) -> np.ndarray:
        check_is_fitted(self, "net_")
        return self._pack(X, reset=False)

    def predict(self, X, use_description=True):
        """Predict targets for the rows of ``X``.

        Parameters
        ----------
        X : pandas DataFrame
            The input columns and the description column (which may be absent with
            ``use_description=False``).
        use_description : bool, default=True
            ``False``: predict every row as if its task had no description (a zero
            embedding): what the model learned for all tasks at once. A way to measure
            what the descriptions carry.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        if use_description:
            return super().predict(X)
        check_is_fitted(self, "net_")
        column, _ = self._text_settings()
        if hasattr(X, "columns"):  # the descriptions are not read: none is embedded
            X = X.assign(**{column: "no description"})
        values, _ = self._frame(X, reset=False)
        Z = np.hstack([values, np.zeros((len(values), self.embedding_dim_ + 1), np.float32)])
        y = self.net_.predict(Z).astype(np.float64)
        return y.ravel() if self._y_was_1d else y

    def _make_net(self, module, loss_scale, n_samples, seed, device):
        params = super()._make_net(module, loss_scale, n_samples, seed, device).get_params(
            deep=False)
        params["callbacks"] = [*params["callbacks"], *self._stage_callbacks()]
        # scikit-learn's clone idiom, into the subclass that batches by task
        return _TaskNet(**params)

    def _stage_callbacks(self) -> list:
        """Hook: extra callbacks for this fit."""
        return []


def dump_network(estimator) -> tuple[dict, dict]:
    """A fitted described estimator's file parts: :func:`dump_described`'s JSON, the
    module's weights and, under the evidence, its posterior (read by
    :func:`restore_network`)."""
    meta = dump_described(estimator)
    tensors = dict(estimator.net_.module_.state_dict())
    dump_posterior(estimator, meta, tensors)
    return meta, tensors


def restore_network(estimator, module: nn.Module, meta: dict, tensors: dict,
                    scale: torch.Tensor, device: str, fitted_on: str) -> None:
    """Load a saved described estimator's weights into ``module`` (a fresh one of the
    same architecture), set its net, and its posterior where the file has one.
    ``fitted_on`` names what the weights must fit, for the error."""
    try:
        module.load_state_dict({k: v for k, v in tensors.items() if k != POSTERIOR_KEY})
    except RuntimeError as exc:
        raise ValueError(f"the saved weights do not fit {fitted_on}: {exc}") from None
    estimator.net_ = estimator._make_net(module, scale, 2, 0, device)
    estimator.net_.initialize()
    restore_posterior(estimator, meta, tensors)  # none under the fixed recipe or in old files


class _RegularizedDescribed(RegularizedAdapter, _DescribedRegressor):
    """A described estimator that adapts under the ``regularization`` regimes (few-shot
    from the memory, the description-as-input network): the two ``predict`` options."""

    optimizer = "adam"  # their default, and what a model pickled before the parameter used

    def predict(self, X, return_std=False, use_description=True):
        """Predict targets for the rows of ``X``.

        Parameters
        ----------
        X : pandas DataFrame
            The input columns and the description column (which may be absent with
            ``use_description=False``).
        return_std : bool, default=False
            Also return the standard deviation of a new observation at each row
            (fitted under the evidence or cross-validation only).
        use_description : bool, default=True
            ``False``: predict every row as if its task had no description (a zero
            embedding): what the model learned for all tasks at once. Not with
            ``return_std``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        y_std : ndarray, the same shape
            Only with ``return_std=True``.
        """
        if use_description:
            return RegularizedAdapter.predict(self, X, return_std=return_std)
        if return_std:
            raise ValueError("return_std=True needs the rows' descriptions: the posterior "
                             "was fitted with them (use_description=True)")
        return _DescribedRegressor.predict(self, X, use_description=False)


class _MemoryViews:
    """What an estimator built on a shared atom memory offers besides predictions (the
    memory and few-shot estimators; the description-as-input network has no memory)."""

    @property
    def shared_model_(self) -> SharedMemoryModel:
        """The fitted :class:`~qlsk.adapters.prior_map.SharedMemoryModel`."""
        return self.module_.model

    def atom_usage(self, X) -> np.ndarray:
        """Each block's routing weights for the rows of ``X``, every row with its task's prior.

        Returns
        -------
        ndarray of shape (n_blocks, n_samples, n_atoms)
            ``.mean(axis=1)`` over one task's rows is that task's atom usage.
        """
        Z = torch.as_tensor(self._validate_predict_data(X))
        module = self.module_.eval()
        device = next(module.parameters()).device
        with torch.no_grad():
            module(Z.to(device))
        return self.shared_model_.routing.cpu().numpy()

    def save_memory(self, path, overwrite: bool = False) -> None:
        """Write the shared memory alone (atoms, router, prior map) as safetensors + JSON.

        A new :class:`~qlsk.SharedMemoryRegressor` starts from it with ``memory=path``, on any
        base with the same number of adapted blocks.
        """
        check_is_fitted(self, "net_")
        _, encoder = self._text_settings()
        save_memory(self.shared_model_, path, overwrite=overwrite, metadata={
            "text_encoder": encoder if isinstance(encoder, str) else None,
            "descriptions": list(self.descriptions_)})

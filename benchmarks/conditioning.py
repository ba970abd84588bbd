"""The obvious alternative to a prior over atoms: the description as an extra input.

:class:`ConditionedLoraRegressor` is plain LoRA on the frozen base, with the
description's embedding entering the first hidden layer through a learned linear map
``V`` (zero-initialised, so training starts at the base):

    h_1 = act(W_1 x + b_1 + s B_1 A_1 x + V e(c))

It was the winner of the multi-task prototype (``/work/shared/method.md``), and is the
baseline the multi-task benchmark (``python -m benchmarks.multitask``) measures the
shared atom memory against. It reads the same DataFrames as
:class:`qlsk.estimators.multitask.SharedMemoryRegressor` (inputs and a ``description``
column) and lives here, not in ``qlsk``, because it is a baseline.
"""

from __future__ import annotations

import copy
from numbers import Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from qlsk.adapters import inject
from qlsk.estimators._base import BaseNeuralRegressor
from qlsk.estimators.multitask import _DescribedRegressor


class _Shifted(nn.Module):
    """A layer whose output is shifted by ``shift`` (set per pass, one row per input row)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer, self.shift = layer, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        return out if self.shift is None else out + self.shift


class _Conditioned(nn.Module):
    """Reads ``[inputs | embedding | task id]`` rows; ``V e`` shifts the first hidden layer."""

    def __init__(self, adapted: nn.Module, embedding_dim: int, n_features: int):
        super().__init__()
        layers = adapted.base_model.layers
        layers[0] = _Shifted(layers[0])
        self.adapted, self.n_features = adapted, n_features
        self.condition = nn.Linear(embedding_dim, layers[0].layer.out_features, bias=False)
        nn.init.zeros_(self.condition.weight)

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        d = self.n_features
        first = self.adapted.base_model.layers[0]
        first.shift = self.condition(Z[:, d:-1])  # (n, width of the first hidden layer)
        try:
            return self.adapted(Z[:, :d])
        finally:
            first.shift = None  # keep the graph out of the module's state (copies, pickles)


class ConditionedLoraRegressor(_DescribedRegressor):
    """LoRA on a frozen base, with the description's embedding as an extra input.

    Parameters
    ----------
    base : qlsk.MLPRegressor or None
        The fitted base to adapt (copied, never modified). Ignored with ``init``.
    init : ConditionedLoraRegressor or None
        A fitted model to start from instead (few-shot adaptation): its LoRA factors
        and map ``V`` are copied.
    freeze_condition : bool, default=False
        Keep ``V`` fixed: only the LoRA factors train.
    description_column : str, default="description"
    text_encoder : {"lexical", "semantic"} or callable, default="semantic"
    rank, alpha : int, float
        Of the LoRA factors on every linear layer (defaults 4, 16).
    lr, weight_decay, max_epochs, batch_size, early_stopping, validation_fraction, \
patience, device, random_state, verbose, callbacks
        As for every qlsk estimator.

    Attributes
    ----------
    feature_columns_, descriptions_, embedding_dim_, n_trainable_params_
        As for :class:`qlsk.estimators.multitask.SharedMemoryRegressor`.

    Examples
    --------
    >>> from qlsk import MLPRegressor
    >>> from qlsk.simlib import load_family
    >>> from benchmarks.conditioning import ConditionedLoraRegressor
    >>> fam = load_family("ishigami-ab", n_per_member=20, n_test=5, n_source=200,
    ...                   random_state=0)
    >>> base = MLPRegressor((16, 16), max_epochs=3, random_state=0).fit(
    ...     fam.X_source, fam.y_source)
    >>> model = ConditionedLoraRegressor(base=base, text_encoder="lexical", max_epochs=2,
    ...                                  random_state=0).fit(fam.X_train, fam.y_train)
    >>> model.predict(fam.X_heldout[:3]).shape
    (3,)
    """

    def __init__(self, base=None, init=None, freeze_condition=False,
                 description_column="description", text_encoder="semantic", rank=4,
                 alpha=16.0, lr=1e-3, weight_decay=0.0, max_epochs=150, batch_size=32,
                 early_stopping=False, validation_fraction=0.1, patience=20, device="cpu",
                 random_state=None, verbose=0, callbacks=None):
        self.base = base
        self.init = init
        self.freeze_condition = freeze_condition
        self.description_column = description_column
        self.text_encoder = text_encoder
        self.rank = rank
        self.alpha = alpha
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    _parameter_constraints = {
        **BaseNeuralRegressor._parameter_constraints,
        "base": "no_validation",
        "init": "no_validation",
        "freeze_condition": ["boolean"],
        "description_column": [str],
        "text_encoder": [StrOptions({"lexical", "semantic"}), callable],
        "rank": [Interval(Real, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="neither")],
    }

    def _check_params(self):
        super()._check_params()
        if self.init is not None:
            check_is_fitted(self.init, "net_")
        elif self.base is None:
            raise ValueError("give a fitted base (an MLPRegressor) or init")

    def _text_settings(self):
        if self.init is not None:
            return self.init._text_settings()
        return self.description_column, self.text_encoder

    def _build_module(self, Z, y, seed):
        if self.init is not None:
            module = copy.deepcopy(self.init.module_).cpu().float()
            scale = self.init.net_.criterion_.scale.clone().cpu()
        else:
            network = copy.deepcopy(self.base.module_).cpu().float()
            scale = network.y_scale.clone()
            adapted = inject(network, "lora", rank=int(self.rank), alpha=self.alpha)
            module = _Conditioned(adapted, self.embedding_dim_, len(self.feature_columns_))
        module.condition.requires_grad_(not self.freeze_condition)
        return module, scale

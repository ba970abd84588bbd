"""The description as an extra input: a learned shift of the first hidden layer.

:class:`DescriptionInput` wraps an adapted network (LoRA on every linear layer) and
reads packed rows ``[inputs | embedding | task id]``. The embedding ``e(c)`` of the task's
description enters the first hidden layer through a linear map ``V``, zero-initialised
so that training starts at the adapted network:

    h_1 = act(W_1 x + b_1 + s B_1 A_1 x + V e(c))

The plainest way to condition a network on text; the estimator that uses it is
:class:`qlsk.ConditionedLoraRegressor`.
"""

from __future__ import annotations

import torch
from torch import nn


class _Shifted(nn.Module):
    """A layer whose output is shifted by ``shift`` (set per pass, one row per input row)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer, self.shift = layer, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        return out if self.shift is None else out + self.shift


class DescriptionInput(nn.Module):
    """An adapted MLP whose first hidden layer is shifted by ``V e(c)``.

    Parameters
    ----------
    adapted : AdaptedModel
        The adapted network (its ``base_model.layers[0]`` is wrapped in place).
    embedding_dim : int
        Length of the description embeddings.
    n_features : int
        Number of numeric inputs: the first ``n_features`` columns of a packed row.
    """

    def __init__(self, adapted: nn.Module, embedding_dim: int, n_features: int):
        super().__init__()
        layers = adapted.base_model.layers
        layers[0] = _Shifted(layers[0])
        self.adapted, self.n_features = adapted, n_features
        self.condition = nn.Linear(embedding_dim, layers[0].layer.out_features, bias=False)
        nn.init.zeros_(self.condition.weight)

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        """``Z``: rows ``[inputs | embedding | task id]`` (the id is not read)."""
        d = self.n_features
        first = self.adapted.base_model.layers[0]
        first.shift = self.condition(Z[:, d:-1])  # (n, width of the first hidden layer)
        try:
            return self.adapted(Z[:, :d])
        finally:
            first.shift = None  # keep the graph out of the module's state (copies, pickles)

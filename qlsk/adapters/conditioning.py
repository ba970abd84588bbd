"""The description as an extra input: a learned shift (and scale) of the first hidden layer.

:class:`DescriptionInput` wraps an adapted network (LoRA on every linear layer) and
reads packed rows ``[inputs | embedding | task id]``. The embedding ``e(c)`` of the task's
description enters the first hidden layer through a linear map ``V``, zero-initialised
so that training starts at the adapted network:

    h_1 = act(W_1 x + b_1 + s B_1 A_1 x + V e(c))

or, with ``film=True``, also through a scale ``U`` (a FiLM layer, Perez et al. 2018):

    h_1 = act((W_1 x + b_1 + s B_1 A_1 x) * (1 + U e(c)) + V e(c))

The plainest way to condition a network on text; the estimator that uses it is
:class:`qlsk.ConditionedLoraRegressor`. The same maps, beside a shared atom memory, are
the ``"shift"`` and ``"scale"`` channels of :mod:`qlsk.adapters.channels`.
"""

from __future__ import annotations

import torch
from torch import nn

from .channels import modulate


class _Shifted(nn.Module):
    """A layer whose output is scaled by ``scale`` and shifted by ``shift`` (each set per
    pass, or ``None``)."""

    scale = None  # a class default: modules pickled before the scale existed lack it

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer, self.shift = layer, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return modulate(self.layer(x), self.scale, self.shift)


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
    film : bool
        Also scale the first hidden layer by ``1 + U e(c)`` (``U`` zero-initialised).

    Attributes
    ----------
    condition : torch.nn.Linear
        ``V``.
    condition_scale : torch.nn.Linear
        ``U``, with ``film=True`` only.
    """

    def __init__(self, adapted: nn.Module, embedding_dim: int, n_features: int,
                 film: bool = False):
        super().__init__()
        layers = adapted.base_model.layers
        layers[0] = _Shifted(layers[0])
        self.adapted, self.n_features = adapted, n_features
        width = layers[0].layer.out_features
        self.condition = nn.Linear(embedding_dim, width, bias=False)
        nn.init.zeros_(self.condition.weight)
        if film:
            self.condition_scale = nn.Linear(embedding_dim, width, bias=False)
            nn.init.zeros_(self.condition_scale.weight)

    @property
    def film(self) -> bool:
        return hasattr(self, "condition_scale")

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        """``Z``: rows ``[inputs | embedding | task id]`` (the id is not read)."""
        d = self.n_features
        first = self.adapted.base_model.layers[0]
        e = Z[:, d:-1]
        first.shift = self.condition(e)  # (n, width of the first hidden layer)
        if self.film:
            first.scale = 1 + self.condition_scale(e)
        try:
            return self.adapted(Z[:, :d])
        finally:  # keep the graph out of the module's state (copies, pickles)
            first.shift = first.scale = None

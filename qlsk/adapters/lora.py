"""Plain LoRA on one linear layer: ``y = W h + b + s B A h`` with ``s = alpha / r``."""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``s * B A``.

    Parameters
    ----------
    base : torch.nn.Linear
        The layer to adapt. Its parameters are frozen, never modified except by
        :meth:`merge` and :meth:`unmerge`.
    rank : int
        Rank ``r`` of the update.
    alpha : float
        Scale numerator: the update is multiplied by ``alpha / rank``.
    dropout : float
        Dropout on the layer input of the low-rank branch.

    Attributes
    ----------
    lora_A : torch.nn.Parameter of shape (rank, in_features)
        Kaiming-uniform initialised.
    lora_B : torch.nn.Parameter of shape (out_features, rank)
        Zero initialised, so the layer starts as the base layer.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA adapts nn.Linear layers, got {type(base).__name__}")
        if not isinstance(rank, numbers.Integral) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not isinstance(alpha, numbers.Real) or not alpha > 0:
            raise ValueError(f"alpha must be a number > 0 (0 leaves the adapter inert), "
                             f"got {alpha!r}")
        if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        self.base.requires_grad_(False)
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scale = self.alpha / self.rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(self.rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The base weight, so code that reads ``layer.weight`` keeps working."""
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        u = self.bottleneck(F.linear(self.dropout(x), self.lora_A))  # (..., r)
        if u.dim() == 2:  # one fused multiply-add for the common case
            return torch.addmm(y, u, self.lora_B.T, alpha=self.scale)
        return y + self.scale * F.linear(u, self.lora_B)

    def bottleneck(self, u: torch.Tensor) -> torch.Tensor:
        """The operator applied inside the low-rank bottleneck: identity for LoRA."""
        return u

    def delta_weight(self) -> torch.Tensor:
        """The update ``s B A`` of shape (out_features, in_features)."""
        return self.scale * (self.lora_B @ self.lora_A)

    def merge(self) -> None:
        """Add the update to the base weight; the layer then computes the same outputs."""
        if not self.merged:
            with torch.no_grad():
                self.base.weight += self.delta_weight()
            self.merged = True

    def unmerge(self) -> None:
        """Subtract a merged update from the base weight again."""
        if self.merged:
            with torch.no_grad():
                self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"

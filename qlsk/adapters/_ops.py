"""Three fused autograd operations of the routing path.

On a CPU with small batches a training step costs about one unit per autograd node,
whatever the FLOPs; each function here replaces three to five nodes by one, with the
backward pass written out. ``tests/test_adapters.py`` checks them with gradcheck.
"""

from __future__ import annotations

import torch

EPS = 1e-6


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        inv = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + EPS)
        ctx.save_for_backward(x, inv)
        return x * inv

    @staticmethod
    def backward(ctx, grad):
        x, inv = ctx.saved_tensors
        # d(x * inv)/dx = inv * (g - x * inv^2 * mean(g * x))
        return inv * (grad - x * inv.pow(2) * (grad * x).mean(dim=-1, keepdim=True))


class _TopKSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, k: int):
        top, index = logits.topk(k, dim=-1)
        alpha = torch.zeros_like(logits).scatter_(-1, index, top.softmax(dim=-1))
        ctx.save_for_backward(alpha)
        return alpha

    @staticmethod
    def backward(ctx, grad):
        (alpha,) = ctx.saved_tensors
        # The softmax Jacobian restricted to the kept logits (alpha is zero elsewhere).
        return alpha * (grad - (alpha * grad).sum(dim=-1, keepdim=True)), None


class _RowMatVec(torch.autograd.Function):
    @staticmethod
    def forward(ctx, S, u):
        ctx.save_for_backward(S, u)
        return (S * u.unsqueeze(1)).sum(dim=-1)  # (n, r): S_n u_n

    @staticmethod
    def backward(ctx, grad):
        S, u = ctx.saved_tensors
        return grad.unsqueeze(2) * u.unsqueeze(1), (S * grad.unsqueeze(2)).sum(dim=1)


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last axis, without learned scale."""
    return _RMSNorm.apply(x)


def topk_softmax(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Softmax over the ``k`` largest logits of every row; zeros elsewhere."""
    return _TopKSoftmax.apply(logits, k)


def row_matvec(S: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``S[n] @ u[n]`` for every row: S (n, r, r), u (n, r) -> (n, r)."""
    return _RowMatVec.apply(S, u)

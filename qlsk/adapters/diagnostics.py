"""The paper's diagnostics: routing, atom usage and its entropy, gradient concentration."""

from __future__ import annotations

import torch

from .inject import AdaptedModel


def routing_weights(model: AdaptedModel) -> torch.Tensor:
    """Each block's routing weights from the last forward pass.

    Returns
    -------
    torch.Tensor of shape (n_blocks, n_rows, n_atoms)
        ``alpha``: non-negative, each row sums to one, ``top_k`` non-zeros per row.
    """
    if model.memory is None:
        raise TypeError("plain LoRA has no routing; use method='queryable'")
    if not model.memory.routing:
        raise RuntimeError("no routing recorded yet: run a forward pass first")
    return torch.stack(model.memory.routing)


def atom_usage(weights: torch.Tensor) -> torch.Tensor:
    """Mean routing weight of every atom per block, shape (n_blocks, n_atoms)."""
    return weights.mean(dim=-2)


def usage_entropy(usage: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of atom usage along the last axis: ``log M`` is uniform use."""
    p = usage / usage.sum(dim=-1, keepdim=True)
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)


def adapter_grad_norms(model: AdaptedModel) -> torch.Tensor:
    """Per-layer norm of the adapter gradients (A and B), after ``backward()``.

    Returns
    -------
    torch.Tensor of shape (n_layers,)
        Zero for a layer without gradients.
    """
    norms = []
    for layer in model.adapted_layers:
        squares = [p.grad.pow(2).sum() for p in (layer.lora_A, layer.lora_B)
                   if p.grad is not None]
        norms.append(torch.stack(squares).sum().sqrt() if squares
                     else torch.zeros((), device=layer.lora_A.device))
    return torch.stack(norms)


def gradient_concentration(norms: torch.Tensor) -> float:
    """The gradient concentration index: max / mean of per-layer gradient norms."""
    mean = norms.mean()
    return float(norms.max() / mean) if mean > 0 else float("nan")

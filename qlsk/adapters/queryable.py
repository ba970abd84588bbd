"""Queryable LoRA: a shared memory of r x r update atoms, routed per block of layers.

Every adapted layer ``l`` of block ``b`` computes ``y = W_l h + b_l + s B_l S_b A_l h``
where ``S_b = sum_m alpha_{b,m} C_m`` is a sparse convex combination of the shared
atoms, chosen per input row from the block's low-rank state, an attention summary of
earlier blocks and an optional instruction prior. ``docs/method.md`` gives the
equations with these names.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._ops import rms_norm, row_matvec, topk_softmax
from .lora import LoraLinear

PRIOR_SEED = 0


def instruction_prior(embedding, n_atoms: int, temperature: float = 0.5,
                      seed: int = PRIOR_SEED) -> torch.Tensor:
    """Map a text embedding to the log of a prior over atoms.

    ``log pi(c) = log_softmax(P e(c) / temperature)`` with ``P`` a fixed projection
    drawn from a seeded generator, so the prior is a deterministic function of the
    text and similar descriptions give similar priors.

    Parameters
    ----------
    embedding : array-like of shape (d,)
        The description's embedding; it is normalised to unit length here.
    n_atoms : int
        Number of atoms ``M``.
    temperature : float
        ``tau_pi``; smaller values make the prior more peaked.
    seed : int
        Seed of the projection ``P``.

    Returns
    -------
    torch.Tensor of shape (n_atoms,)
        Log-probabilities.
    """
    e = np.asarray(embedding, dtype=np.float64).ravel()
    norm = np.linalg.norm(e)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("the task description's embedding is zero or not finite")
    projection = np.random.default_rng(seed).standard_normal((n_atoms, e.size))
    logits = torch.from_numpy(projection @ (e / norm)) / temperature
    return torch.log_softmax(logits, dim=0).float()


class AtomMemory(nn.Module):
    """The shared, queryable memory of one adapted model.

    Parameters
    ----------
    rank : int
        ``r``: atoms are ``r x r``.
    n_atoms : int
        ``M``, the number of atoms.
    n_blocks : int
        ``N_b``, the number of blocks of adapted layers.
    top_k : int
        Atoms kept per row and block; the rest get weight zero.
    temperature : float
        ``tau`` of the softmax over the kept logits.
    key_dim : int or None
        ``d_k``, the dimension of keys and queries (default ``max(rank, 8)``).
    prior_strength : float
        ``lambda >= 0``, the weight of the instruction prior in the logits.
    log_prior : torch.Tensor of shape (n_atoms,) or None
        ``log pi(c)``; ``None`` routes without a prior.
    atom_init_std : float
        Atoms start at ``I + D`` with ``D ~ N(0, atom_init_std^2)``.

    Attributes
    ----------
    atom_deltas : torch.nn.Parameter of shape (M, r, r)
        ``D_m``; the atoms are ``C_m = I + D_m`` (see :attr:`atoms`).
    keys : torch.nn.Parameter of shape (M, d_k)
        ``K``.
    query_proj : torch.nn.Linear
        ``W_q`` of shape (d_k, 2r), shared by all blocks.
    block_embed : torch.nn.Parameter of shape (N_b, d_k)
        ``e_b``.
    depth_queries : torch.nn.Parameter of shape (N_b - 1, r)
        ``w_b`` for blocks ``b > 1``, zero-initialised (a plain average).
    routing : list of torch.Tensor
        After a forward pass, each block's routing weights ``alpha`` (rows x M),
        detached.
    """

    def __init__(self, rank: int, n_atoms: int, n_blocks: int, top_k: int = 2,
                 temperature: float = 1.0, key_dim: int | None = None,
                 prior_strength: float = 0.0, log_prior: torch.Tensor | None = None,
                 atom_init_std: float = 0.01):
        super().__init__()
        for label, value, low in (("n_atoms", n_atoms, 1), ("n_blocks", n_blocks, 1),
                                  ("top_k", top_k, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        if top_k > n_atoms:
            raise ValueError(f"top_k={top_k} exceeds n_atoms={n_atoms}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not prior_strength >= 0:
            raise ValueError(f"prior_strength must be >= 0, got {prior_strength!r}")
        self.rank, self.n_atoms, self.n_blocks = int(rank), int(n_atoms), int(n_blocks)
        self.top_k, self.temperature = int(top_k), float(temperature)
        self.prior_strength = float(prior_strength)
        self.key_dim = int(key_dim or max(rank, 8))
        d_k = self.key_dim
        self.atom_deltas = nn.Parameter(atom_init_std * torch.randn(n_atoms, rank, rank))
        self.keys = nn.Parameter(torch.randn(n_atoms, d_k))
        self.query_proj = nn.Linear(2 * rank, d_k, bias=False)
        self.block_embed = nn.Parameter(0.1 * torch.randn(n_blocks, d_k))
        self.depth_queries = nn.Parameter(torch.zeros(n_blocks - 1, rank))
        self.register_buffer("eye", torch.eye(rank), persistent=False)
        self.register_buffer("log_prior", log_prior if log_prior is None
                             else torch.as_tensor(log_prior, dtype=torch.float32))
        self.routing: list[torch.Tensor] = []
        self.expected = 0  # index of the adapted layer that must run next
        self.close()

    @property
    def atoms(self) -> torch.Tensor:
        """The atoms ``C_m = I + D_m``, shape (M, r, r)."""
        return self.eye + self.atom_deltas

    @property
    def prior(self) -> torch.Tensor | None:
        """The instruction prior ``pi(c)`` over atoms, or ``None``."""
        return None if self.log_prior is None else self.log_prior.exp()

    def set_prior(self, log_prior: torch.Tensor | None) -> None:
        """Replace ``log pi(c)`` (``None`` removes the prior)."""
        self.log_prior = None if log_prior is None else torch.as_tensor(
            log_prior, dtype=self.keys.dtype, device=self.keys.device)

    def _begin_pass(self) -> None:
        """Per-pass constants shared by every block (one small graph per forward).

        ``q K^T / sqrt(d_k) = [n(z); n(s)] G + c_b`` with ``G = W_q^T K^T / sqrt(d_k)``
        and ``c_b = e_b K^T / sqrt(d_k) + lambda log pi``: the same logits as
        projecting the query first, in fewer operations.
        """
        keys_t = self.keys.T / math.sqrt(self.key_dim)  # (d_k, M)
        self._G = self.query_proj.weight.T @ keys_t  # (2r, M)
        bias = self.block_embed @ keys_t  # (N_b, M)
        if self.log_prior is not None and self.prior_strength > 0:
            bias = bias + self.prior_strength * self.log_prior
        self._bias = bias
        self._atoms_flat = self.atoms.reshape(self.n_atoms, -1)  # (M, r*r)
        self._states, self.routing = [], []

    def _logits(self, z: torch.Tensor, block: int) -> torch.Tensor:
        """Routing logits ``l_b`` (rows x M) from the block state ``z`` (rows x r)."""
        zn = rms_norm(z)
        if not self._states:  # first block: the depth summary is zero
            return torch.addmm(self._bias[block], zn, self._G[: self.rank])
        Z = torch.stack(self._states, dim=1)  # (n, b, r)
        scores = rms_norm(Z) @ self.depth_queries[block - 1]  # (n, b)
        summary = (scores.softmax(dim=1).unsqueeze(-1) * Z).sum(dim=1)  # (n, r)
        return torch.addmm(self._bias[block], torch.cat([zn, rms_norm(summary)], -1),
                           self._G)

    def route(self, logits: torch.Tensor) -> torch.Tensor:
        """Sparse convex weights ``alpha`` (rows x M): softmax over the top-k logits."""
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.top_k == self.n_atoms:
            return logits.softmax(dim=-1)
        return topk_softmax(logits, self.top_k)

    def open_block(self, block: int, u: torch.Tensor) -> None:
        """Route block ``block`` from its first layer's low-rank state ``u = A h``."""
        if block == 0:
            self._begin_pass()
        # pool over tokens for sequence inputs: (n, r)
        z = u if u.dim() == 2 else u.reshape(u.shape[0], -1, self.rank).mean(dim=1)
        alpha = self.route(self._logits(z, block))
        self._states.append(z)
        self.routing.append(alpha.detach())
        # One matmul combines the atoms for every row: (n, r, r)
        self._S = (alpha @ self._atoms_flat).view(-1, self.rank, self.rank)

    def apply(self, u: torch.Tensor) -> torch.Tensor:
        """``S_b u`` for every row of ``u`` (rows x ... x r)."""
        if u.dim() == 2:  # a broadcast product: cheaper than a bmm of tiny matrices
            return row_matvec(self._S, u)
        flat = u.reshape(u.shape[0], -1, self.rank)  # (n, tokens, r)
        return torch.bmm(flat, self._S.transpose(1, 2)).view_as(u)

    def close(self) -> None:
        """Drop the per-pass tensors once the last block has run."""
        self._states, self._S, self._G, self._bias, self._atoms_flat = [], None, None, None, None


class QueryableLoraLinear(LoraLinear):
    """A LoRA layer whose bottleneck applies the block's routed operator ``S_b``.

    Parameters
    ----------
    base : torch.nn.Linear
        The frozen layer.
    memory : AtomMemory
        The model's shared memory (held by reference, registered once by the model).
    index : int
        The layer's position ``l`` among the adapted layers, in forward order.
    block_size : int
        Layers per block.
    n_layers : int
        The number of adapted layers.
    rank, alpha, dropout
        As for :class:`LoraLinear`.
    """

    def __init__(self, base: nn.Linear, memory: AtomMemory, index: int, block_size: int,
                 n_layers: int, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__(base, rank=rank, alpha=alpha, dropout=dropout)
        object.__setattr__(self, "memory", memory)  # a reference, not a submodule
        self.index, self.block_size, self.n_layers = index, block_size, n_layers
        self.block = index // block_size

    def bottleneck(self, u: torch.Tensor) -> torch.Tensor:
        memory = self.memory
        if u.dim() == 1:
            return self.bottleneck(u.unsqueeze(0)).squeeze(0)
        if self.index == 0:
            memory.expected = 0
        if memory.expected != self.index:
            raise RuntimeError(
                f"adapted layer {self.index} ran when layer {memory.expected} was "
                "expected: Queryable LoRA needs its layers in forward order (pass "
                "target_modules as a list in the order the model calls them)")
        if self.index % self.block_size == 0:
            memory.open_block(self.block, u)
        out = memory.apply(u)
        memory.expected = self.index + 1
        if memory.expected == self.n_layers:
            memory.expected = 0
            memory.close()
        return out

    def merge(self) -> None:
        raise TypeError(
            "Queryable LoRA cannot be merged into the base weights: its update "
            "B S_b(h) A depends on the input through the routing")

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, index={self.index}, block={self.block}"

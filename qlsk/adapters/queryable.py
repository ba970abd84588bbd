"""Queryable LoRA: a shared memory of r x r update atoms, routed per block of layers.

Every adapted layer ``l`` of block ``b`` computes ``y = W_l h + b_l + s B_l S_b A_l h``
where ``S_b = sum_m alpha_{b,m} C_m`` is a sparse convex combination of the shared
atoms, chosen per input row from the block's low-rank state, an attention summary of
the blocks' states so far and an optional instruction prior. ``docs/method.md`` gives
the equations with these names; :mod:`qlsk.adapters.ablations` holds the variants
that switch parts of the method off.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .lora import LoraLinear

PRIOR_SEED = 0


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last axis, without a learned scale."""
    return F.rms_norm(x, (x.shape[-1],), eps=1e-6)


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
    routing_noise : float
        ``sigma >= 0``: in training mode, Gaussian noise ``N(0, sigma^2)`` is added to
        every routing logit before the top-k choice (noisy top-k gating, Shazeer et
        al. 2017), a regulariser of the routing; evaluation routes without noise. The
        noise comes from torch's global generator, which the estimators seed.

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
        ``w_b`` for blocks ``b > 1``, zero-initialised (a plain average); absent with
        one block.
    routing : list of torch.Tensor
        After a forward pass, each block's routing weights ``alpha`` (rows x M),
        detached.
    keep_probs : bool
        In training mode, also keep each block's dense routing distribution (the
        softmax of all ``M`` logits, with its graph) in ``probs``, for a routing term of
        the loss (:mod:`qlsk.adapters.balance`); off by default.
    probs : list of torch.Tensor
        With ``keep_probs``, after a training pass: each block's dense routing
        distribution (rows x M); empty otherwise.

    query_scale : torch.Tensor of shape (d_k,) or None
        Set for one pass by a description channel (:mod:`qlsk.adapters.channels`):
        every query ``W_q [n(z); s]`` is multiplied by it elementwise; ``None`` leaves
        the queries as they are.

    Notes
    -----
    With one atom the routing is always 1, so the router cannot learn: its parameters
    are then frozen. :mod:`qlsk.adapters.ablations` holds variants of the query.
    """

    query_scale: torch.Tensor | None = None  # a class default: old pickles lack it
    keep_probs = False
    probs: tuple | list = ()  # set per training pass when keep_probs

    def __init__(self, rank: int, n_atoms: int, n_blocks: int, top_k: int = 2,
                 temperature: float = 1.0, key_dim: int | None = None,
                 prior_strength: float = 0.0, log_prior: torch.Tensor | None = None,
                 atom_init_std: float = 0.01, routing_noise: float = 0.0):
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
        if not routing_noise >= 0:
            raise ValueError(f"routing_noise must be >= 0, got {routing_noise!r}")
        self.rank, self.n_atoms, self.n_blocks = int(rank), int(n_atoms), int(n_blocks)
        self.top_k, self.temperature = int(top_k), float(temperature)
        self.prior_strength = float(prior_strength)
        self.routing_noise = float(routing_noise)
        self.key_dim = int(key_dim or max(rank, 8))
        self.atom_deltas = nn.Parameter(atom_init_std * torch.randn(n_atoms, rank, rank))
        self._init_router()
        if self.n_atoms == 1:
            self.freeze_router()
        self.register_buffer("eye", torch.eye(rank), persistent=False)
        self.register_buffer("log_prior", log_prior if log_prior is None
                             else torch.as_tensor(log_prior, dtype=torch.float32))
        self.routing: list[torch.Tensor] = []
        self.expected = 0  # index of the adapted layer that must run next
        self.close()

    def _init_router(self) -> None:
        """Create the router: keys, block embeddings, ``W_q`` and the pseudo-queries."""
        self._init_keys()
        self.query_proj = nn.Linear(2 * self.rank, self.key_dim, bias=False)
        if self.n_blocks > 1:
            self.depth_queries = nn.Parameter(torch.zeros(self.n_blocks - 1, self.rank))

    def _init_keys(self) -> None:
        self.keys = nn.Parameter(torch.randn(self.n_atoms, self.key_dim))
        self.block_embed = nn.Parameter(0.1 * torch.randn(self.n_blocks, self.key_dim))

    def router_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the atoms: what decides the routing."""
        return [p for name, p in self.named_parameters() if name != "atom_deltas"]

    def freeze_router(self) -> None:
        """Stop training the router (for a router that cannot receive a gradient)."""
        for p in self.router_parameters():
            p.requires_grad_(False)

    @property
    def _no_bias(self) -> torch.Tensor:
        return self.atom_deltas.new_zeros(self.n_atoms)

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
            log_prior, dtype=self.atom_deltas.dtype, device=self.atom_deltas.device)

    def _scaled_prior(self) -> torch.Tensor:
        """``lambda log pi(c)``, or zeros without a prior."""
        if self.log_prior is None:
            return self._no_bias
        return self.prior_strength * self.log_prior

    def _block_bias(self) -> torch.Tensor:
        """``e_b K^T / sqrt(d_k) + lambda log pi`` for every block, shape (N_b, M)."""
        return torch.addmm(self._scaled_prior(), self.block_embed, self.keys.T,
                           alpha=1 / math.sqrt(self.key_dim))

    def _prepare_router(self) -> None:
        """Per-pass constants shared by every block (one small graph per forward).

        ``q K^T / sqrt(d_k) = [n(z); s] G + c_b`` with ``G = W_q^T K^T / sqrt(d_k)``
        and ``c_b = e_b K^T / sqrt(d_k) + lambda log pi``: the same logits as
        projecting the query first, in fewer operations.
        """
        weight = self.query_proj.weight  # (d_k, 2r)
        if self.query_scale is not None:
            weight = weight * self.query_scale.unsqueeze(-1)
        self._G = torch.addmm(self._no_bias, weight.T, self.keys.T, beta=0,
                              alpha=1 / math.sqrt(self.key_dim))  # (2r, M)
        self._bias = self._block_bias()  # (N_b, M)

    def _summary(self, block: int) -> torch.Tensor:
        """``s_b``: attention with pseudo-query ``w_b`` over the normalised states so far.

        The sources are blocks 1..b, this block's own state included (as in Attention
        Residuals), so the softmax never runs over a single element and every ``w_b``
        can learn. Values are normalised like the keys: ``s_b`` is a convex
        combination of unit-RMS states, with RMS at most 1.
        """
        normed = torch.stack(self._normed, dim=1)  # (n, b, r)
        scores = (normed * self.depth_queries[block - 1]).sum(dim=-1)  # (n, b)
        return (scores.softmax(dim=1).unsqueeze(-1) * normed).sum(dim=1)  # (n, r)

    def _logits(self, z: torch.Tensor, block: int) -> torch.Tensor:
        """Routing logits ``l_b`` (rows x M) from block ``block``'s state ``z_b``."""
        zn = rms_norm(z)
        self._normed.append(zn)
        if block == 0:  # the depth summary of the first block is zero
            return torch.addmm(self._bias[0], zn, self._G[: self.rank])
        return torch.addmm(self._bias[block], torch.cat([zn, self._summary(block)], -1),
                           self._G)

    def route(self, logits: torch.Tensor) -> torch.Tensor:
        """Sparse convex weights ``alpha`` (rows x M): softmax over the top-k logits.

        The values are exactly that; for ``top_k < M`` the gradient is the dense
        softmax's over all ``M`` logits (straight-through). The exact gradient would
        ignore the atoms left out and vanish for ``top_k = 1``.
        """
        if self.routing_noise and self.training:
            logits = logits + self.routing_noise * torch.randn_like(logits)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.top_k == self.n_atoms:
            return logits.softmax(dim=-1)
        top, index = logits.detach().topk(self.top_k, dim=-1)  # (n, k)
        alpha = torch.zeros_like(logits).scatter(-1, index, top.softmax(dim=-1))
        if not logits.requires_grad:
            return alpha
        dense = logits.softmax(dim=-1)
        return alpha + (dense - dense.detach())  # exactly alpha: x - x == 0

    def observe(self, x: torch.Tensor) -> None:
        """See the input of the first adapted layer; the method routes without it."""

    def open_block(self, block: int, u: torch.Tensor) -> None:
        """Route block ``block`` from its first layer's low-rank state ``u = A h``."""
        if block == 0:
            self._normed, self.routing = [], []
            self._deltas_flat = self.atom_deltas.view(self.n_atoms, -1)  # (M, r*r)
            self._prepare_router()
        # pool over tokens for sequence inputs: (n, r)
        z = u if u.dim() == 2 else u.reshape(u.shape[0], -1, self.rank).mean(dim=1)
        logits = self._logits(z, block)
        alpha = self.route(logits)
        self.routing.append(alpha.detach())
        if self.keep_probs and self.training:
            if block == 0:
                self.probs = []
            self.probs.append((logits / self.temperature).softmax(dim=-1))
        # S = sum_m alpha_m (I + D_m) = I + alpha D, as sum(alpha) = 1: one addmm, (n, r*r)
        self._S = torch.addmm(self.eye.view(-1), alpha, self._deltas_flat)

    # Not ``apply``: that would shadow nn.Module.apply(fn), which callers use on any
    # module (e.g. ``adapted.apply(init_fn)``) and which reaches this memory.
    def mix(self, u: torch.Tensor) -> torch.Tensor:
        """``S_b u`` for every row of ``u`` (rows x ... x r): the block's routed operator."""
        S = self._S.view(-1, self.rank, self.rank)
        if u.dim() == 2:  # a broadcast product: cheaper than a bmm of tiny matrices
            return (S * u.unsqueeze(1)).sum(dim=-1)
        flat = u.reshape(u.shape[0], -1, self.rank)  # (n, tokens, r)
        return torch.bmm(flat, S.transpose(1, 2)).view_as(u)

    def close(self) -> None:
        """Drop the per-pass tensors once the last block has run."""
        self._normed = []
        self._S = self._G = self._bias = self._deltas_flat = None


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index == 0:
            self.memory.observe(x)
        return super().forward(x)

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
        out = memory.mix(u)
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

"""Ablations of Queryable LoRA: where the query comes from, and atoms fixed at ``I``.

``inject(model, "queryable", query=..., freeze_atoms=...)`` builds its memory with
:func:`build_memory`; the defaults, ``query="state+depth"`` and ``freeze_atoms=False``,
are the method itself (:class:`~qlsk.adapters.queryable.AtomMemory`). Every other query
is an ``AtomMemory`` that overrides one seam: which router parameters exist
(``_init_router``) and how a block's logits are formed (``_logits``).

=============== ========================================== ===========================
``query``       routing logits ``l_b`` (``+ lambda log pi``) router parameters
=============== ========================================== ===========================
"state+depth"   ``[n(z_b); s_b] W_q^T K^T/sqrt(d_k)``      ``K, W_q (d_k x 2r), e_b,
                ``+ e_b K^T/sqrt(d_k)`` (the method)       w_b``
"state"         ``n(z_b) W_q^T K^T/sqrt(d_k) + e_b K^T``   ``K, W_q (d_k x r), e_b``
                ``/sqrt(d_k)``: no depth summary
"detached"      as "state+depth" from ``sg(z)``: no        as "state+depth"
                gradient from the routing into ``A``
"constant"      ``e_b K^T/sqrt(d_k)``: one learned route   ``K, e_b``
                per block, the same for every row
"random"        ``R_b n([x; 1])``: fixed random routing    none
                of every row, never trained
=============== ========================================== ===========================

``freeze_atoms=True`` fixes every atom at ``I`` (with any query).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .queryable import AtomMemory, rms_norm


class StateQuery(AtomMemory):
    """``query="state"``: ``q_b = W_q n(z_b) + e_b``, without the depth summary.

    ``query_proj`` has shape (d_k, r) and there are no ``depth_queries``. Parameters as
    for :class:`AtomMemory`.
    """

    def _init_router(self) -> None:
        self._init_keys()
        self.query_proj = nn.Linear(self.rank, self.key_dim, bias=False)

    def _logits(self, z: torch.Tensor, block: int) -> torch.Tensor:
        return torch.addmm(self._bias[block], rms_norm(z), self._G)


class DetachedQuery(AtomMemory):
    """``query="detached"``: the method's query, built from the states ``sg(z_b)``.

    The router (keys, ``W_q``, ``e_b``, ``w_b``) still learns, but no gradient flows
    from the routing back into the low-rank states, so each ``A_l`` learns from its
    own update ``B_l S_b A_l h`` alone. Parameters as for :class:`AtomMemory`.
    """

    def _logits(self, z: torch.Tensor, block: int) -> torch.Tensor:
        return super()._logits(z.detach(), block)


class ConstantQuery(AtomMemory):
    """``query="constant"``: ``q_b = e_b``, a learned query per block, blind to the input.

    Every row of a block gets the same routing (still shaped by the prior); there is no
    ``query_proj`` and there are no ``depth_queries``. Parameters as for
    :class:`AtomMemory`.
    """

    def _init_router(self) -> None:
        self._init_keys()

    def _prepare_router(self) -> None:
        self._bias = self._block_bias()  # (N_b, M)

    def _logits(self, z: torch.Tensor, block: int) -> torch.Tensor:
        return self._bias[block].expand(z.shape[0], -1)


class RandomRouting(AtomMemory):
    """``query="random"``: a fixed random routing of every input row, never trained.

    ``l_b = R_b n([x; 1]) + lambda log pi(c)``, with ``x`` the first adapted layer's
    input (mean over tokens for sequences) and ``R`` a Gaussian with variance
    ``1 / (d + 1)`` drawn at construction (the buffer ``projection``, saved with the
    adapter). The top-k atoms of a row are thus a fixed random partition of that
    input's space, as in hash routing; since only the frozen base lies before the first
    adapted layer, every row keeps its route throughout training. There are no router
    parameters; the atoms, ``A`` and ``B`` train.

    Parameters
    ----------
    rank, n_atoms, n_blocks
        As for :class:`AtomMemory`.
    input_dim : int
        ``d``, the width of the first adapted layer's input.
    **kwargs
        The other options of :class:`AtomMemory`.
    """

    def __init__(self, rank: int, n_atoms: int, n_blocks: int, input_dim: int,
                 **kwargs):
        super().__init__(rank, n_atoms, n_blocks, **kwargs)
        width = int(input_dim) + 1
        self.register_buffer(
            "projection", torch.randn(self.n_blocks * self.n_atoms, width) / math.sqrt(width))

    def _init_router(self) -> None:
        """No learned router."""

    def _prepare_router(self) -> None:
        self._bias = self._scaled_prior()  # (M,)

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.dim() == 1:
            x = x.unsqueeze(0)
        elif x.dim() > 2:
            x = x.reshape(x.shape[0], -1, x.shape[-1]).mean(dim=1)
        lifted = rms_norm(torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1))  # (n, d + 1)
        self._fixed = (lifted @ self.projection.T).view(-1, self.n_blocks, self.n_atoms)

    def _logits(self, z: torch.Tensor, block: int) -> torch.Tensor:
        if self._fixed is None:
            raise RuntimeError("random routing needs the first adapted layer's input: "
                               "call the adapted model, not its layers one by one")
        return self._fixed[:, block] + self._bias

    def close(self) -> None:
        super().close()
        self._fixed = None


QUERIES = {"state+depth": AtomMemory, "state": StateQuery, "detached": DetachedQuery,
           "constant": ConstantQuery, "random": RandomRouting}


def fix_atoms_at_identity(memory: AtomMemory) -> AtomMemory:
    """``freeze_atoms=True``: every atom is ``C_m = I`` and stays so.

    Then ``S_b = I`` whatever the routing and each layer's update is plain LoRA's
    ``s B_l A_l h``: the ablation that takes the atoms' capacity away. The router can
    receive no gradient through identical atoms and is frozen too; the routing is
    still computed, so the diagnostics still run. ``atom_deltas`` becomes a zero
    buffer that is not saved with the adapter.
    """
    deltas = memory.atom_deltas
    del memory.atom_deltas
    memory.register_buffer("atom_deltas", torch.zeros(
        deltas.shape, dtype=deltas.dtype, device=deltas.device), persistent=False)
    memory.freeze_router()
    return memory


def build_memory(rank: int, n_atoms: int, n_blocks: int, input_dim: int,
                 query: str = "state+depth", freeze_atoms: bool = False,
                 **kwargs) -> AtomMemory:
    """The atom memory of one adapted model, with the method or one of its ablations.

    Parameters
    ----------
    rank, n_atoms, n_blocks
        As for :class:`AtomMemory`.
    input_dim : int
        Width of the first adapted layer's input (used by ``query="random"``).
    query : {"state+depth", "state", "detached", "constant", "random"}
        Where the routing comes from: the method's query from the block's low-rank
        state and the depth summary; the state alone; the method's query with no
        gradient into the states; a learned constant per block; a fixed random
        routing of each input row (see the classes of this module).
    freeze_atoms : bool
        Fix every atom at the identity (see :func:`fix_atoms_at_identity`).
    **kwargs
        The other options of :class:`AtomMemory`.

    Returns
    -------
    AtomMemory
    """
    if query not in QUERIES:
        raise ValueError(f"query must be one of {list(QUERIES)}, got {query!r}")
    if not isinstance(freeze_atoms, bool):
        raise ValueError(f"freeze_atoms must be True or False, got {freeze_atoms!r}")
    if query == "random":
        memory = RandomRouting(rank, n_atoms, n_blocks, input_dim, **kwargs)
    else:
        memory = QUERIES[query](rank, n_atoms, n_blocks, **kwargs)
    return fix_atoms_at_identity(memory) if freeze_atoms else memory

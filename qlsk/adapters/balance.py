"""Load balancing across tasks: a routing term against atom collapse in a shared memory.

A memory shared by many tasks tends to route every task through the same few atoms
(on the development families 3 of 8 atoms carried the routing). :class:`RoutingBalance`
adds to the training loss, after every forward pass,

    ``strength · M · mean_b Σ_m u_bm p_bm``,

where ``p_b`` is the batch's mean dense routing distribution over the ``M`` atoms in
block ``b`` (the softmax of the routing logits, before top-k) and ``u_b`` a running
mean of ``p_b`` over earlier batches, held fixed in the gradient: the Switch
Transformer's load-balancing loss (Fedus et al. 2022), with the dispatch fractions
replaced by the running usage. Minimising it moves a batch's routing away from the
atoms the memory as a whole overuses. Batches of the shared memory are drawn one task
at a time, so the term balances the memory *across tasks* and leaves each task free to
concentrate on a few atoms: when usage over tasks is even (``u = 1/M``) the term is the
constant ``strength`` and has no gradient.
"""

from __future__ import annotations

import torch
from torch import nn


class RoutingBalance(nn.Module):
    """The load-balancing term of a shared memory (see the module's docstring).

    Parameters
    ----------
    strength : float
        Weight of the term in the loss (in the loss's units: it equals ``strength`` at
        even usage); must be > 0.
    n_blocks : int
        Routing decisions per forward pass.
    n_atoms : int
        ``M``.
    momentum : float
        Weight of the newest batch in the running usage ``u``; in (0, 1].

    Attributes
    ----------
    usage : torch.Tensor of shape (n_blocks, n_atoms)
        The running usage ``u``: a buffer outside the state dict, so a model loaded by
        :func:`qlsk.load` restarts it even (a pickle or a deep copy carries it).
    """

    def __init__(self, strength: float, n_blocks: int, n_atoms: int, momentum: float = 0.1):
        super().__init__()
        for label, value in (("n_blocks", n_blocks), ("n_atoms", n_atoms)):
            if int(value) != value or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        if not strength > 0:
            raise ValueError(f"the load-balancing strength must be > 0, got {strength!r}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        self.strength, self.momentum = float(strength), float(momentum)
        self.register_buffer("usage", torch.full((n_blocks, n_atoms), 1.0 / n_atoms),
                             persistent=False)
        self._batch: list[torch.Tensor] = []

    def observe(self, probs: torch.Tensor) -> None:
        """Keep one pass's dense routing, ``(n_blocks, n_rows, n_atoms)``, for the loss;
        a pass without gradients (an objective evaluated under ``no_grad``) is not kept."""
        if torch.is_grad_enabled():
            self._batch.append(probs.mean(dim=1))

    def penalty(self) -> torch.Tensor:
        """The term for the passes observed since the last call, then update ``u``.

        Returns zero (no graph) when nothing was observed, e.g. after an evaluation
        pass.
        """
        if not self._batch:
            return self.usage.new_zeros(())
        mean = torch.stack(self._batch).mean(dim=0)  # (n_blocks, M)
        self._batch = []
        n_atoms = mean.shape[-1]
        loss = self.strength * n_atoms * (self.usage.clone() * mean).sum(dim=-1).mean()
        with torch.no_grad():
            self.usage.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
        return loss

    def __getstate__(self):  # copies and pickles never carry a pass's graph
        state = dict(super().__getstate__())
        state["_batch"] = []
        return state

    def extra_repr(self) -> str:
        return f"strength={self.strength:g}, momentum={self.momentum:g}"

"""An anchor for continual stages: keep the earlier tasks' predictions where they were.

When a shared adapter trains on new tasks, the loss on the earlier tasks is not seen and
their error grows (forgetting). :class:`StageAnchor` adds to a stage's loss::

    λ · w · mean_x ((f_θ(x) − f_θ*(x)) / s)²

over kept rows ``x`` of the earlier tasks, ``θ*`` the weights at the end of the last
stage and ``s`` the loss scale: the earlier tasks' squared error measured against the
last stage's own predictions instead of their targets (distillation, as in "learning
without forgetting", Li & Hoiem 2016; a function-space prior, Benjamin et al. 2019).
To second order in ``θ − θ*`` it is the Gauss-Newton (Laplace) approximation of the
earlier tasks' loss, with every parameter correlation kept: a diagonal one (elastic
weight consolidation) was measured here first and barely held the predictions, since
the many small moves of correlated weights add up in the output and not in a sum of
per-weight squares. ``w`` is the number of earlier tasks over the number of new ones,
so that at ``λ = 1`` every earlier task weighs as much as a new one.
"""

from __future__ import annotations

import torch
from torch import nn


class StageAnchor:
    """The distillation penalty toward a module's predictions now, on some rows.

    Parameters
    ----------
    module : torch.nn.Module
        At the weights ``θ*`` to anchor to; :meth:`penalty` runs it again (in whatever
        mode it is then in) on ``rows``.
    rows : torch.Tensor of shape (n, ...)
        Inputs of the earlier tasks, as ``module`` reads them.
    scale : torch.Tensor of shape (n_outputs,)
        The training loss's scale ``s``.
    strength : float
        ``λ ≥ 0``.
    weight : float, default=1.0
        Multiplies ``λ`` (the earlier tasks' count over the new ones').

    Attributes
    ----------
    targets : torch.Tensor of shape (n, n_outputs)
        ``f_θ*(rows)``, computed in evaluation mode.
    coefficient : float
        ``λ · w``.

    Notes
    -----
    Each :meth:`penalty` runs ``module`` on every row: a stage after many earlier
    tasks costs that many more rows per training step.
    """

    def __init__(self, module: nn.Module, rows: torch.Tensor, scale: torch.Tensor,
                 strength: float, weight: float = 1.0):
        if not strength >= 0:
            raise ValueError(f"strength must be non-negative, got {strength!r}")
        if len(rows) == 0:
            raise ValueError("the anchor needs at least one row of the earlier tasks")
        rows = rows.to(next(module.parameters()).device)  # e.g. a stage fitted on CUDA
        self.module, self.rows, self.scale = module, rows, scale.to(rows)
        was_training = module.training
        module.eval()
        with torch.no_grad():
            self.targets = module(rows).reshape(len(rows), -1).detach()
        module.train(was_training)
        self.coefficient = float(strength) * float(weight)

    def penalty(self) -> torch.Tensor:
        """The penalty at the module's weights now.

        Returns
        -------
        torch.Tensor
            ``λ · w · mean ((f_θ(x) − f_θ*(x)) / s)²``, a scalar with its graph.
        """
        device = next(self.module.parameters()).device
        if self.rows.device != device:  # the module has moved (e.g. to CUDA) since
            self.rows, self.targets, self.scale = (
                t.to(device) for t in (self.rows, self.targets, self.scale))
        moved = (self.module(self.rows).reshape(self.targets.shape) - self.targets) / self.scale
        return self.coefficient * (moved ** 2).mean()

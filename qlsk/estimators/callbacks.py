"""skorch callbacks for the estimators' ``callbacks=`` option."""

from __future__ import annotations

import torch
from skorch.callbacks import Callback
from torch import nn

from ..adapters import AdaptedModel, adapter_grad_norms, gradient_concentration


def layer_grad_norms(module: nn.Module) -> torch.Tensor:
    """Per-layer gradient norms of whatever ``module`` trains, after ``backward()``.

    A module that is or holds an adapted model (LoRA or Queryable LoRA, also inside
    an output calibration): the norm of each adapted layer's ``A`` and ``B`` gradients
    (:func:`qlsk.adapters.adapter_grad_norms`). Any other network (fine-tuning, an MLP
    from scratch): the norm of the weight gradient of each trained ``nn.Linear``, in
    registration order.

    Returns
    -------
    torch.Tensor of shape (n_layers,)
        Zero for a layer that got no gradient.

    Raises
    ------
    TypeError
        If the module has neither adapted layers nor a trained ``nn.Linear``.
    """
    adapted = next((m for m in module.modules() if isinstance(m, AdaptedModel)), None)
    if adapted is not None:
        return adapter_grad_norms(adapted).detach()
    weights = [m.weight for m in module.modules()
               if isinstance(m, nn.Linear) and m.weight.requires_grad]
    if not weights:
        raise TypeError(f"{type(module).__name__} has no adapted layers and no trained "
                        "nn.Linear: nothing to take gradient norms of")
    return torch.stack([w.grad.detach().norm() if w.grad is not None
                        else torch.zeros((), device=w.device) for w in weights])


class GradientDiagnostics(Callback):
    """Record per-layer gradient norms and their concentration in ``history_``.

    The paper's training diagnostics (its Figures 3–4). After every training step the
    per-layer gradient norms are taken (:func:`layer_grad_norms`: the adapter's ``A``
    and ``B`` for LoRA and Queryable LoRA, the weight of every linear layer for
    fine-tuning); at the end of each epoch their mean over the epoch's steps is
    recorded, with the gradient concentration index of that mean (max / mean over
    layers, :func:`qlsk.adapters.gradient_concentration`). An index near 1 means every
    layer learns alike; a large one, that a few layers take the whole gradient.

    Recorded per epoch (``estimator.history_[epoch][key]``):

    - ``grad_norms``: list of float, one per adapted layer in forward order;
    - ``grad_concentration``: float.

    Examples
    --------
    >>> from qlsk import GradientDiagnostics, LoraRegressor
    >>> from qlsk.simlib import load_task
    >>> task = load_task("park91a-lf-to-hf", random_state=0)
    >>> model = LoraRegressor(rank=2, max_epochs=3, random_state=0, regularization="fixed",
    ...                       callbacks=[GradientDiagnostics()])
    >>> history = model.fit(task.X_train, task.y_train).history_
    >>> len(history), len(history[-1]["grad_norms"])
    (3, 4)
    """

    def on_epoch_begin(self, net, **kwargs):
        self._sum = None
        self._steps = 0

    def on_grad_computed(self, net, named_parameters, X=None, y=None, training=None,
                         **kwargs):
        norms = layer_grad_norms(net.module_)
        self._sum = norms if self._sum is None else self._sum + norms
        self._steps += 1

    def on_epoch_end(self, net, **kwargs):
        if not self._steps:
            return
        norms = self._sum / self._steps
        net.history.record("grad_norms", norms.cpu().tolist())
        net.history.record("grad_concentration", gradient_concentration(norms))

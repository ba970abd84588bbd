"""Every skorch callback of qlsk: :class:`GradientDiagnostics` for the estimators'
``callbacks=`` option, and those the estimators add themselves (divergence check,
progress bar, kept atoms)."""

from __future__ import annotations

import numpy as np
import torch
from skorch.callbacks import Callback
from torch import nn

from ..adapters import AdaptedModel, adapter_grad_norms, gradient_concentration
from ..nn import MLP


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


class TrainingDivergedError(ValueError, FloatingPointError):
    """Training diverged, or could not start from a finite loss.

    The message names the cause: a learning rate too high for a loss that became
    non-finite or exploded far above its start, or data far outside the range of the
    network's scaling when the starting loss itself is not finite.
    """


# An input this many standard deviations (of the data the network's scaling was set
# on) from their mean lies far outside anything the network was trained on.
FAR_INPUT_SD = 10.0


def divergence_advice(module: nn.Module, X) -> str:
    """What to do about a training that diverged on ``X``.

    Inputs far outside the range the network's input scaling was set on (the base's
    training data, for an adapter) come first: no learning rate fixes those. Else:
    a smaller learning rate.
    """
    mlp = next((m for m in module.modules() if isinstance(m, MLP)), None)
    X = torch.as_tensor(X)
    if mlp is not None and X.dim() == 2 and X.shape[1] == mlp.n_features:
        with torch.no_grad():
            spread = float(((X.to(mlp.x_mean.device) - mlp.x_mean) / mlp.x_scale).abs().max())
        if spread > FAR_INPUT_SD:
            return (f"X reaches {spread:.3g} standard deviations from the mean of the data "
                    "the network's input scaling was set on (for an adapter, the base's "
                    "training data): rescale X, or adapt a base trained on its range, "
                    "before trying a smaller learning rate")
    return "use a smaller learning rate"


class StopOnDivergence(Callback):
    """Stop training with an error that names the cause when the loss diverges.

    Parameters
    ----------
    factor : float
        An epoch loss above ``factor * max(start, 1)`` counts as diverged, where
        ``start`` is the starting network's loss on the training rows (in units of
        the target scale, so a loss of 1 is a constant predictor's).

    Attributes
    ----------
    start_ : float
        The starting loss, measured when training begins.
    advice_ : str
        What the error advises (:func:`divergence_advice`), set when training begins:
        the training rows themselves are not kept.
    """

    def __init__(self, factor: float = 1e3):
        self.factor = factor

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.start_ = None
        self.advice_ = ("use a smaller learning rate" if X is None
                        else divergence_advice(net.module_, X))
        if X is None or y is None:
            return
        with torch.no_grad():
            start = float(net.get_loss(net.forward(X, device=net.device),
                                       torch.as_tensor(y)))
        if not np.isfinite(start):
            raise TrainingDivergedError(
                "the starting network's loss on the training rows is not finite: X or y "
                "lies far outside the range the network's scaling was set on (the base's "
                "training data for an adapter); rescale X or y")
        self.start_ = start

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        limit = self.factor * max(self.start_ or 0.0, 1.0)
        for key in ("train_loss", "valid_loss"):
            if key not in row:
                continue
            if not np.isfinite(row[key]) or row[key] > limit:
                what = "became non-finite" if not np.isfinite(row[key]) else (
                    f"exploded to {row[key]:.3g} from a start of {self.start_:.3g}")
                raise TrainingDivergedError(
                    f"training diverged: {key} {what} at epoch {row['epoch']} with "
                    f"lr={net.lr:g}; {self.advice_}")


class EpochProgress(Callback):
    """A progress bar over epochs with the current losses.

    Parameters
    ----------
    label : str or None, default=None
        The bar's label (the estimator's class name); ``None``: the module's class name.
    """

    def __init__(self, label=None):
        self.label = label

    def on_train_begin(self, net, **kwargs):
        from tqdm.auto import tqdm

        label = self.label if self.label is not None else type(net.module_).__name__
        self._bar = tqdm(total=net.max_epochs, desc=label, unit="epoch", leave=False)

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        self._bar.set_postfix({k: f"{row[k]:.4g}" for k in ("train_loss", "valid_loss")
                               if k in row})
        self._bar.update(1)

    def on_train_end(self, net, **kwargs):
        self._bar.close()


class _KeepAtoms(Callback):
    """Restore the first ``n`` atoms after every step: earlier stages' atoms stay fixed."""

    def __init__(self, n: int):
        self.n = n

    def on_train_begin(self, net, **kwargs):
        self.kept_ = net.module_.model.memory.atom_deltas[:self.n].detach().clone()

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            with torch.no_grad():
                net.module_.model.memory.atom_deltas[:self.n] = self.kept_

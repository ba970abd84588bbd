"""The torch pieces behind the estimators: the MLP, the loss, the skorch net."""

from __future__ import annotations

import math

import numpy as np
import torch
from skorch import NeuralNetRegressor
from skorch.callbacks import Callback
from torch import nn

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLP(nn.Module):
    """A fully connected network that maps raw inputs to raw targets.

    Inputs are standardised and outputs de-standardised by buffers inside the module,
    so a saved or adapted network carries its own scaling.

    Parameters
    ----------
    n_features, n_outputs : int
        Input and output widths.
    hidden_layer_sizes : tuple of int
        Widths of the hidden layers.
    activation : {"silu", "relu", "tanh", "gelu"}
        Non-linearity after every hidden layer.
    """

    def __init__(self, n_features: int, n_outputs: int, hidden_layer_sizes=(64, 64, 64),
                 activation: str = "silu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.hidden_layer_sizes = tuple(int(h) for h in hidden_layer_sizes)
        self.activation = activation
        widths = (n_features, *self.hidden_layer_sizes, n_outputs)
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(w_in, w_out))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)
        for name, size in (("x_mean", n_features), ("x_scale", n_features),
                           ("y_mean", n_outputs), ("y_scale", n_outputs)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))

    @property
    def n_features(self) -> int:
        return self.x_mean.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.y_mean.shape[0]

    def spec(self) -> dict:
        """What rebuilds this architecture: ``MLP(**spec)``."""
        return {"n_features": self.n_features, "n_outputs": self.n_outputs,
                "hidden_layer_sizes": list(self.hidden_layer_sizes),
                "activation": self.activation}

    def set_scaling(self, X: np.ndarray, y: np.ndarray) -> None:
        """Standardise with the mean and standard deviation of ``X`` and ``y``.

        The statistics are computed in float64: in float32 the squares of values
        above about 1e19 overflow, and every prediction would become one constant.

        Raises
        ------
        ValueError
            If a mean or standard deviation does not fit in float32.
        """
        for label, data in (("X", X), ("y", y)):
            data = np.asarray(data, dtype=np.float64)
            mean, std = data.mean(0), _safe_std(data)
            if not (np.isfinite(mean.astype(np.float32)).all()
                    and np.isfinite(std.astype(np.float32)).all()):
                raise ValueError(f"the mean or standard deviation of {label} does not fit in "
                                 f"float32 (largest |value| {np.abs(data).max():.3g}); "
                                 f"rescale {label} before fitting")
            prefix = label.lower()
            getattr(self, f"{prefix}_mean").copy_(torch.as_tensor(mean, dtype=torch.float32))
            getattr(self, f"{prefix}_scale").copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.layers((X - self.x_mean) / self.x_scale) * self.y_scale + self.y_mean


def _safe_std(a: np.ndarray) -> np.ndarray:
    std = np.asarray(a, dtype=np.float64).std(0)
    return np.where(std > 0, std, 1.0)


class ScaledMSELoss(nn.Module):
    """Mean squared error of targets divided by ``scale`` (one value per output)."""

    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return (((y_pred - y_true) / self.scale) ** 2).mean()


class _Batches:
    """Mini-batches sliced from whole tensors: far fewer calls than a DataLoader."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, generator=None):
        indices = None
        if isinstance(dataset, torch.utils.data.Subset):
            dataset, indices = dataset.dataset, np.asarray(dataset.indices)
        X, y = dataset.X, dataset.y
        if indices is not None:
            X, y = X[indices], (None if y is None else y[indices])
        self.X = torch.as_tensor(X)
        self.y = None if y is None else torch.as_tensor(y)
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator

    def __len__(self) -> int:
        return math.ceil(len(self.X) / self.batch_size)

    def __iter__(self):
        n = len(self.X)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                index = slice(start, start + self.batch_size)
            else:
                index = order[start:start + self.batch_size]
            yield self.X[index], (None if self.y is None else self.y[index])


class Net(NeuralNetRegressor):
    """skorch's regressor, training only parameters that require gradients.

    Parameters
    ----------
    seed : int
        Seed of the shuffling of training batches.
    predict_batch_size : int
        Rows per forward pass at validation and prediction time.
    """

    def __init__(self, *args, seed: int = 0, predict_batch_size: int = 4096, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.predict_batch_size = predict_batch_size

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        penalty = getattr(self.module_, "penalty", None)  # a prior on the module's own terms
        return loss + penalty() if training and penalty is not None else loss

    def get_all_learnable_params(self):
        for name, param in super().get_all_learnable_params():
            if param.requires_grad:
                yield name, param

    def get_iterator(self, dataset, training=False):
        if training:
            if getattr(self, "_generator", None) is None:
                self._generator = torch.Generator().manual_seed(self.seed)
            return _Batches(dataset, self.batch_size, True, self._generator)
        return _Batches(dataset, max(self.batch_size, self.predict_batch_size), False)

    def initialize(self):
        self._generator = None
        return super().initialize()

    def _set_training(self, training=True):
        # skorch sets the mode of every submodule before every batch; once per switch
        # is enough, and saves ~10% of a small network's step.
        if getattr(self, "module_", None) is None or self.module_.training != training:
            super()._set_training(training)


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

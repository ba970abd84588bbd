"""The torch modules behind the estimators: the MLP and its loss (no scikit-learn or
skorch here)."""

from __future__ import annotations

import numpy as np
import torch
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

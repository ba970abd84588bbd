"""Output calibration ``ŷ = ρ ⊙ g(x) + c``: the scale and shift of the autoregressive
multi-fidelity model (Kennedy & O'Hagan 2000), trainable alongside any adapter.

A base that is right in shape and wrong in scale (a low-fidelity code that omits a term,
another unit) is common; one trainable ``ρ`` and ``c`` per output lets the adapter spend
its capacity on the shape. A least-squares ``ρ, c`` from a few noisy rows is itself
noisy, so :func:`least_squares_calibration` and :meth:`OutputCalibration.penalty` share
a prior that holds the calibrated outputs near the base's, of strength ``shrinkage``
pseudo-rows: it fades as the number of rows grows.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class CalibrationWarning(UserWarning):
    """The base carries no signal to calibrate on; the calibration starts as identity."""


class OutputCalibration(nn.Module):
    """``ŷ = ρ ⊙ model(x) + c`` with ``ρ`` and ``c`` trainable, one of each per output.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs to outputs of shape ``(n_samples, n_outputs)`` (or
        ``(n_samples,)`` for one output).
    rho, c : float or array-like of shape (n_outputs,), default=1.0 and 0.0
        Starting scale and shift.
    prior_precision : tensor of shape (n_outputs, 2, 2) or None, default=None
        The quadratic prior on ``(ρ − 1, c)`` per output that :meth:`penalty`
        evaluates; ``None``: no prior. :meth:`from_predictions` builds it.

    Examples
    --------
    >>> import torch
    >>> from qlsk.adapters.calibration import OutputCalibration
    >>> base = torch.nn.Linear(3, 1)
    >>> X = torch.randn(40, 3)
    >>> with torch.no_grad():
    ...     f = base(X)
    >>> calibrated = OutputCalibration.from_predictions(base, f, 2 * f + 1)
    >>> [round(v.item(), 3) for v in (calibrated.rho, calibrated.c)]
    [2.0, 1.0]
    """

    def __init__(self, model: nn.Module, rho=1.0, c=0.0, prior_precision=None):
        super().__init__()
        self.model = model
        rho, c = torch.broadcast_tensors(
            torch.as_tensor(rho, dtype=torch.float32).reshape(-1),
            torch.as_tensor(c, dtype=torch.float32).reshape(-1))
        self.rho = nn.Parameter(rho.clone())
        self.c = nn.Parameter(c.clone())
        if prior_precision is None:
            prior_precision = torch.zeros(len(rho), 2, 2)
        prior_precision = torch.as_tensor(prior_precision, dtype=torch.float32)
        if prior_precision.shape != (len(rho), 2, 2):
            raise ValueError(f"prior_precision must have shape ({len(rho)}, 2, 2), got "
                             f"{tuple(prior_precision.shape)}")
        self.register_buffer("prior_precision", prior_precision)

    @classmethod
    def from_predictions(cls, model: nn.Module, base_pred, y, shrinkage: float = 0.0,
                         scale=None, min_signal: float = 0.1) -> OutputCalibration:
        """Wrap ``model`` with ``ρ, c`` fitted to ``y`` and the matching prior.

        Parameters
        ----------
        model : torch.nn.Module
            The (adapted) network; at its start it should predict ``base_pred``.
        base_pred : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The base's predictions on the training rows.
        y : array-like, same shape as ``base_pred``
            The training targets.
        shrinkage : float, default=0.0
            Strength of the prior towards ``ρ = 1, c = 0``, in pseudo-rows (see
            :func:`least_squares_calibration`); the same prior is then kept during
            training through :meth:`penalty`.
        scale : array-like of shape (n_outputs,) or None, default=None
            The per-output scale the training loss divides errors by, so the
            penalty is in the loss's units; ``None``: the standard deviation of ``y``.
        min_signal : float, default=0.1
            See :func:`least_squares_calibration`.

        Returns
        -------
        OutputCalibration
        """
        f, y = _as_2d(base_pred, y)
        rho, c = least_squares_calibration(f, y, shrinkage=shrinkage, min_signal=min_signal)
        if scale is None:
            scale = y.std(0, unbiased=False)
        scale = torch.as_tensor(scale, dtype=torch.float64).reshape(-1).expand(f.shape[1])
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        moments = torch.stack([
            torch.stack([(f ** 2).mean(0), f.mean(0)], -1),
            torch.stack([f.mean(0), torch.ones(f.shape[1], dtype=f.dtype)], -1),
        ], dim=-2)  # (k, 2, 2): E[(f, 1)ᵀ (f, 1)] per output
        precision = shrinkage / len(f) * moments / scale[:, None, None] ** 2
        return cls(model, rho, c, precision)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.rho * self.model(*args, **kwargs) + self.c

    def __getattr__(self, name: str):
        # Everything else is the wrapped model's (its memory, adapted layers, config),
        # so code written for the adapted network works on the calibrated one.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def penalty(self) -> torch.Tensor:
        """The prior's term to add to the training loss (0 without a prior).

        With the base's predictions ``f`` on the ``n`` training rows and ``m =
        shrinkage``, it is ``(m / n) · mean_rows(((ρ − 1) f + c) / scale)²``, averaged
        over outputs: how far the calibration moves the base's outputs, in the units
        of a mean squared error per row, weighted like ``m`` extra rows that say the
        base is right.
        """
        delta = torch.stack([self.rho - 1, self.c], dim=-1)  # (k, 2)
        return torch.einsum("ki,kij,kj->k", delta, self.prior_precision, delta).mean()


def uncalibrated(module: nn.Module) -> nn.Module:
    """The network inside an :class:`OutputCalibration`, or ``module`` itself."""
    return module.model if isinstance(module, OutputCalibration) else module


def least_squares_calibration(base_pred, y, shrinkage: float = 0.0,
                              min_signal: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """``ρ, c`` per output minimising ``Σ (y − ρ f − c)² + (m / n) Σ ((ρ − 1) f + c)²``.

    With ``m = shrinkage = 0`` this is ordinary least squares of ``y`` on ``[f, 1]``.
    The second term is a prior worth ``m`` rows that say the base is right; its
    solution is the least-squares one pulled towards identity,
    ``ρ = (n ρ_LS + m) / (n + m)`` and ``c = n c_LS / (n + m)``: at ``m = n`` the
    calibration goes half way.

    Parameters
    ----------
    base_pred : array-like of shape (n_samples,) or (n_samples, n_outputs)
        The base's predictions ``f`` on the training rows.
    y : array-like, same shape as ``base_pred``
        The training targets.
    shrinkage : float, default=0.0
        ``m``, the prior's weight in rows; ``>= 0``.
    min_signal : float, default=0.1
        When the base carries too little signal, ``|ρ| · sd(f) <= min_signal ·
        sd(y)`` (a constant base, or ``ρ`` near zero), the fit would scale away the
        network and the gradient its adapter learns from; then ``ρ = 1`` and ``c`` is
        the (shrunk) mean of ``y − f``, with a :class:`CalibrationWarning`.

    Returns
    -------
    rho, c : tensors of shape (n_outputs,), float32

    Raises
    ------
    ValueError
        For non-finite values, mismatched shapes, no rows or a negative
        ``shrinkage``.
    """
    if not shrinkage >= 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage!r}")
    f, y = _as_2d(base_pred, y)
    n = len(f)
    f_mean, y_mean = f.mean(0), y.mean(0)
    f_var = ((f - f_mean) ** 2).mean(0)
    cov = ((f - f_mean) * (y - y_mean)).mean(0)
    constant = f_var <= (1e-12 * (f_mean ** 2 + y.var(0, unbiased=False))).clamp_min(1e-300)
    rho_ls = torch.where(constant, torch.zeros_like(cov), cov / f_var.clamp_min(1e-300))
    weight = n / (n + shrinkage)
    rho = weight * rho_ls + (1 - weight)
    c = weight * (y_mean - rho_ls * f_mean)
    no_signal = constant | (rho.abs() * f_var.sqrt() <= min_signal * y.std(0, unbiased=False))
    if no_signal.any():
        warnings.warn(
            f"output(s) {no_signal.nonzero().flatten().tolist()}: the base's predictions "
            "are constant or carry almost no signal about y (least-squares rho near 0); "
            "calibration starts there at rho = 1, c = mean(y - f)", CalibrationWarning,
            stacklevel=2)
        rho = torch.where(no_signal, torch.ones_like(rho), rho)
        c = torch.where(no_signal, weight * (y_mean - f_mean), c)
    return rho.float(), c.float()


def _as_2d(base_pred, y) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.as_tensor(base_pred).detach().to(torch.float64)
    y = torch.as_tensor(y).detach().to(torch.float64)
    if f.dim() == 1:
        f = f[:, None]
    if y.dim() == 1:
        y = y[:, None]
    if f.dim() != 2 or f.shape != y.shape:
        raise ValueError(f"base predictions of shape {tuple(f.shape)} do not match targets "
                         f"of shape {tuple(y.shape)}")
    if len(f) == 0:
        raise ValueError("calibration needs at least one row")
    if not torch.isfinite(f).all():
        raise ValueError("the base's predictions contain NaN or infinite values; "
                         "cannot calibrate on them")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values")
    return f, y

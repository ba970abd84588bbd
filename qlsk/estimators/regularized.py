"""Adapters whose regularisation the data chooses, with predictive intervals.

The estimator side of :mod:`qlsk.adapters.evidence`: ``regularization="evidence"``
(the default of the adapting estimators) or ``"cv"`` replaces the fixed mini-batch
recipe by full-batch training along a path of L2 strengths toward the starting weights,
keeps the strength that the marginal likelihood (or cross-validation) prefers, and
``predict(X, return_std=True)`` returns the linearised posterior's spread plus the
learned noise.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.model_selection import KFold
from sklearn.utils._param_validation import Interval, StrOptions

from ..adapters.calibration import OutputCalibration
from ..adapters.evidence import (
    DEFAULT_LR,
    DEFAULT_STRENGTHS,
    MAX_ROWS,
    OPTIMIZERS,
    L2Prior,
    LaplacePosterior,
    jacobian,
    regularisation_path,
)
from .callbacks import StopOnDivergence, TrainingDivergedError

REGULARIZATIONS = ("evidence", "cv", "fixed")


class RegularizedAdapter:
    """Mixin for adapting estimators: the ``regularization`` parameters and intervals.

    Subclasses that list ``regularization`` in their constructor get the data-chosen
    regularisation; others (the multi-task memory) keep the class defaults below and
    train with the fixed recipe.
    """

    regularization = "fixed"
    l2_strengths = None
    max_steps = 2000
    tol = 1e-4
    optimizer = "lbfgs"  # a model pickled before the parameter existed refits as a new one

    _regularization_constraints: dict = {
        "regularization": [StrOptions(set(REGULARIZATIONS))],
        "l2_strengths": ["array-like", Interval(Real, 0, None, closed="neither"), None],
        "max_steps": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
    }

    def _regime(self) -> str:
        """The regime this fit trains under: ``regularization``, resolved where a
        subclass offers ``"auto"``."""
        return self.regularization

    def _regime_label(self) -> str:
        """``regularization`` for messages, with what it resolved to where that differs."""
        regime = self._regime()
        if regime == self.regularization:
            return repr(regime)
        return f"{self.regularization!r} (here {regime!r})"

    def _learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self._regime() == "fixed" else DEFAULT_LR[self._optimizer()]

    def _optimizer(self) -> str:
        """``optimizer``, except that L-BFGS's line search needs a deterministic
        objective: with ``dropout`` or ``routing_noise`` above 0 the forward pass is
        random, and the full-batch fits use Adam."""
        if self.optimizer == "lbfgs" and (getattr(self, "dropout", 0.0)
                                          or getattr(self, "routing_noise", 0.0)):
            return "adam"
        return self.optimizer

    def _strengths(self) -> list[float]:
        if self.l2_strengths is None:
            return list(DEFAULT_STRENGTHS)
        strengths = np.atleast_1d(np.asarray(self.l2_strengths, dtype=np.float64)).ravel()
        if strengths.size == 0 or not np.all(np.isfinite(strengths)) or np.any(strengths <= 0):
            raise ValueError(f"l2_strengths must be positive finite numbers, got "
                             f"{self.l2_strengths!r}")
        return strengths.tolist()

    def _check_params(self):
        super()._check_params()
        if self._regime() != "fixed":
            self._strengths()
            if self.callbacks:
                raise ValueError(
                    f"callbacks run only with regularization='fixed' (skorch's epochs); "
                    f"this {type(self).__name__} has regularization="
                    f"{self._regime_label()}, whose full-batch path has none")

    def _validate_fit_data(self, X, y):
        # before any base is pretrained or calibrated on rows too few for the noise
        X, y = super()._validate_fit_data(X, y)
        if self._regime() != "fixed" and len(X) < 2:
            raise ValueError(f"regularization={self._regime_label()} needs at least 2 "
                             f"samples to estimate the noise, got {len(X)} sample(s)")
        if self._regime() == "cv" and len(X) < 5:
            raise ValueError(f"regularization='cv' needs at least 5 samples for 5 folds, "
                             f"got {len(X)} sample(s)")
        return X, y

    def _train(self, net, X, y, seed):
        if self._regime() == "fixed":
            return super()._train(net, X, y, seed)
        net.initialize()
        guard = StopOnDivergence()  # the fixed recipe's check of the start, and its advice
        guard.on_train_begin(net, X, y)
        module = net.module_
        device = next(module.parameters()).device
        Xt = torch.as_tensor(X, device=device)
        yt = torch.as_tensor(y, device=device)
        scale = net.criterion_.scale.to(device)
        folds = ()
        if self._regime() == "cv":
            folds = list(KFold(5, shuffle=True, random_state=seed).split(X))
        generator = torch.Generator().manual_seed(seed)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            strengths = self._strengths()
            bar = tqdm(total=len(strengths), desc=f"{type(self).__name__} ({self._regime()})",
                       unit="strength", leave=False)
            if len(X) > MAX_ROWS:
                print(f"{type(self).__name__}: {len(X)} rows > {MAX_ROWS}: the evidence's "
                      f"curvature is estimated on a random subset of {MAX_ROWS} rows")
        history = []

        def progress(fit):
            known = {k: v for k, v in fit.summary().items() if not np.isnan(v)}
            history.append({"epoch": len(history) + 1, "train_loss": fit.objective, **known})
            if bar is not None:
                bar.set_postfix(strength=f"{fit.strength:.3g}")
                bar.update(1)

        try:
            path, chosen, posterior = regularisation_path(
                module, Xt, yt, scale, self._strengths(), prior_scales=_prior_scales(module, scale),
                select=self._regime(), cv_folds=folds, max_rows=MAX_ROWS, generator=generator,
                progress=progress, optimizer=self._optimizer(), lr=self._learning_rate(),
                max_steps=self.max_steps, tol=self.tol,
                extra_penalty=getattr(module, "penalty", None))
        except FloatingPointError as exc:
            advice = guard.advice_
            if self._optimizer() == "lbfgs" and advice == "use a smaller learning rate":
                advice = "try optimizer='adam' with a smaller learning rate"  # lr: its first trial
            raise TrainingDivergedError(f"training diverged: {exc}; {advice}") from None
        finally:
            if bar is not None:
                bar.close()
        self.regularization_path_ = [fit.summary() for fit in path]
        self.l2_strength_ = path[chosen].strength
        self.noise_std_ = (path[chosen].noise * scale).detach().cpu().double().numpy()
        self.posterior_ = posterior
        if self.verbose:
            print(f"{type(self).__name__}: l2_strength_={self.l2_strength_:.3g}, noise "
                  f"{path[chosen].noise:.3g} of the loss scale")
        return history

    def predict(self, X, return_std=False):
        """Predict targets for ``X``, optionally with the predictive standard deviation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the standard deviation of a new observation at each row:
            the linearised posterior's spread of the network's output plus the
            learned noise (``regularization`` ``"evidence"`` or ``"cv"`` only).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        y_std : ndarray, the same shape
            Only with ``return_std=True``.

        Raises
        ------
        ValueError
            ``return_std=True`` on a model fitted with ``regularization="fixed"``.
        """
        if not return_std:
            return super().predict(X)
        posterior = getattr(self, "posterior_", None)
        if getattr(self, "net_", None) is not None and posterior is None:
            message = ("return_std=True needs the posterior of regularization='evidence' "
                       "or 'cv'; this model was fitted under the fixed recipe, which keeps "
                       "none")
            if self._regime() != "fixed":  # the parameters changed since the fit
                message += (f" (its parameters now say regularization="
                            f"{self._regime_label()}: fit it again to get one)")
            elif self.regularization != "fixed":  # e.g. 'auto' that meant 'fixed'
                message += f" (regularization={self._regime_label()})"
            raise ValueError(message)
        X = self._validate_predict_data(X)
        mean = self.net_.predict(X).astype(np.float64)
        module = self.net_.module_
        device = next(module.parameters()).device
        scale = self.net_.criterion_.scale.detach().to(device)
        prior = L2Prior(module, _prior_scales(module, scale))
        variances = []
        for start in range(0, len(X), 1024):
            J = jacobian(module, torch.as_tensor(X[start:start + 1024], device=device),
                         prior, scale)
            variances.append(posterior.variance(J.cpu()).reshape(-1, len(scale)))
        var = torch.cat(variances).double() + posterior.noise_var
        std = (var.sqrt() * scale.cpu().double()).numpy()
        if self._y_was_1d:
            return mean.ravel(), std.ravel()
        return mean, std


def _prior_scales(module, scale: torch.Tensor) -> dict:
    """The calibration's shift is in the targets' units: its prior scales with them, so
    that one strength means the same for every target scale."""
    return {"c": scale} if isinstance(module, OutputCalibration) else {}



POSTERIOR_KEY = "posterior/factor"  # the factor's key among a file's tensors


def dump_posterior(estimator, meta: dict, tensors: dict, prefix: str = "") -> None:
    """Put what :func:`qlsk.save` stores of the evidence's choice into a file's parts:
    ``meta["posterior"]`` (JSON, ``None`` under the fixed recipe) and the factor in
    ``tensors`` under ``prefix``."""
    posterior = getattr(estimator, "posterior_", None)
    meta["posterior"] = None
    if posterior is None:
        return
    meta["posterior"] = {
        "regularization_path_": estimator.regularization_path_,
        "l2_strength_": float(estimator.l2_strength_),
        "noise_std_": estimator.noise_std_.tolist(), "alpha": posterior.alpha,
        "noise_var": posterior.noise_var, "row_form": posterior.row_form}
    tensors[prefix + POSTERIOR_KEY] = posterior.factor.detach().cpu().contiguous()


def restore_posterior(estimator, meta: dict, tensors: dict, prefix: str = "") -> None:
    """Set what :func:`dump_posterior` stored back on a loaded estimator (nothing for a
    file without one: the fixed recipe, or a file from before the evidence)."""
    saved, factor = meta.get("posterior"), tensors.get(prefix + POSTERIOR_KEY)
    if saved is None:
        return
    if factor is None or not isinstance(saved, dict):
        raise ValueError("the saved posterior is incomplete")
    try:
        estimator.posterior_ = LaplacePosterior(factor.float(), bool(saved["row_form"]),
                                                float(saved["alpha"]),
                                                float(saved["noise_var"]))
        estimator.regularization_path_ = list(saved["regularization_path_"])
        estimator.l2_strength_ = float(saved["l2_strength_"])
        estimator.noise_std_ = np.asarray(saved["noise_std_"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the saved posterior is invalid: {exc!r}") from None

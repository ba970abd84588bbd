"""The scikit-learn contract shared by every qlsk regressor."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.callbacks import Callback, EarlyStopping
from skorch.dataset import ValidSplit

from ..nn import ScaledMSELoss
from ._net import Net
from .callbacks import EpochProgress, StopOnDivergence

# What fit learns; forgotten at the start of every fit and after a failed one.
_FITTED = ("net_", "history_", "n_trainable_params_", "n_outputs_", "base_",
           "n_features_in_", "feature_names_in_", "_y_was_1d", "regularization_path_",
           "l2_strength_", "noise_std_", "posterior_")


def resolve_device(device: str) -> str:
    """Map ``"auto"`` to CUDA when present; refuse ``"cuda"`` without it."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; "
                         "use device='cpu' or device='auto'")
    if device != "cpu" and not str(device).startswith("cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    return device


def _kept(key: str) -> bool:
    """History keys worth keeping: all but skorch's bookkeeping.

    That is ``epoch``, the losses, ``dur`` and whatever a user's callback records; not
    the per-batch log, batch counts, best-so-far flags or checkpoint events.
    """
    return not (key == "batches" or key.endswith(("_best", "_batch_count"))
                or key.startswith("event_"))


def _plain(value):
    """Plain Python numbers and lists: they print and serialise cleanly."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, torch.Tensor | np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class BaseNeuralRegressor(RegressorMixin, BaseEstimator):
    """Validation, seeding, the skorch training loop and prediction.

    Subclasses implement ``_build_module(X, y, seed) -> (module, loss_scale)``.
    """

    # Checked at the top of every fit, before any data is touched or a base pretrained.
    _parameter_constraints: dict = {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callbacks": [list, tuple, None],
    }

    def _check_params(self):
        """Validate every hyperparameter; raise a ValueError or TypeError naming it."""
        self._validate_params()
        name = type(self).__name__
        if not np.isfinite(self._learning_rate()):
            raise ValueError(f"The 'lr' parameter of {name} must be finite, got {self.lr!r}")
        for callback in self.callbacks or ():
            named = isinstance(callback, tuple) and len(callback) == 2 and isinstance(
                callback[0], str)
            cb = callback[1] if named else callback
            if not (isinstance(cb, Callback) or (isinstance(cb, type)
                                                 and issubclass(cb, Callback))):
                raise TypeError(f"callbacks of {name} must be skorch callbacks (instances, "
                                f"classes or (name, callback) pairs), got {callback!r}")

    def _learning_rate(self) -> float:
        """``lr``, or the default of the training regime where it is None."""
        return self.lr

    def _forget(self):
        for name in _FITTED:
            self.__dict__.pop(name, None)

    def _validate_fit_data(self, X, y):
        # "numeric", as scikit-learn's regressors: a float dtype would parse strings
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True, dtype="numeric")
        y = np.asarray(y)
        self._y_was_1d = y.ndim == 1
        y2 = y.reshape(len(y), -1).astype(np.float32)
        if not np.isfinite(X.astype(np.float32)).all() or not np.isfinite(y2).all():
            raise ValueError("X or y has values too large for float32")
        return X.astype(np.float32), y2

    def _make_net(self, module, loss_scale, n_samples: int, seed: int, device: str) -> Net:
        callbacks = [("stop_on_divergence", StopOnDivergence())]
        train_split = None
        if self.early_stopping:
            n_valid = int(np.ceil(self.validation_fraction * n_samples))
            if n_valid < 1 or n_samples - n_valid < 1:
                raise ValueError(f"early_stopping needs at least 2 samples, got {n_samples}")
            train_split = ValidSplit(self.validation_fraction, random_state=seed)
            callbacks.append(("early_stopping", EarlyStopping(
                monitor="valid_loss", patience=self.patience, load_best=True)))
        if self.verbose:
            callbacks.append(("progress", EpochProgress(type(self).__name__)))
        callbacks.extend((f"user_{i}", cb) for i, cb in enumerate(self.callbacks or ()))
        return Net(
            module=module, criterion=ScaledMSELoss, criterion__scale=loss_scale,
            optimizer=torch.optim.AdamW, lr=self._learning_rate(),
            optimizer__weight_decay=self.weight_decay, max_epochs=self.max_epochs,
            batch_size=self.batch_size, train_split=train_split, callbacks=callbacks,
            device=device, seed=seed, verbose=0,
        )

    def fit(self, X, y):
        """Fit the network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For NaN or infinite values, strings, empty data, ``y`` of the wrong
            length, a hyperparameter of the wrong type or range (checked before any
            data is touched), or when the loss diverges
            (:class:`TrainingDivergedError` names the cause). The estimator is then
            left unfitted.
        TypeError
            For ``callbacks`` that are not skorch callbacks.
        """
        self._forget()
        try:
            self._check_params()
            device = resolve_device(self.device)
            X, y = self._validate_fit_data(X, y)
            seed = int(check_random_state(self.random_state).randint(2**31 - 1))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module, loss_scale = self._build_module(X, y, seed)
                net = self._make_net(module, loss_scale, len(X), seed, device)
                history = self._train(net, X, y, seed)
        except BaseException:
            self._forget()
            raise
        self.net_ = net
        self.n_outputs_ = y.shape[1]
        self.n_trainable_params_ = sum(p.numel() for _, p in net.get_all_learnable_params())
        self.history_ = [{k: _plain(v) for k, v in row.items() if _kept(k)}
                         for row in history]
        return self

    def _train(self, net: Net, X: np.ndarray, y: np.ndarray, seed: int) -> list[dict]:
        """Train ``net`` on ``X, y``; return the per-epoch history.

        The seam where an adapter trains another way (:mod:`qlsk.estimators.regularized`).
        """
        net.fit(X, y)
        return list(net.history)

    def _validate_predict_data(self, X) -> np.ndarray:
        check_is_fitted(self, "net_")
        X = validate_data(self, X, reset=False, dtype="numeric")
        return X.astype(np.float32)

    def predict(self, X):
        """Predict targets for ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The shape of ``y`` seen in ``fit``.
        """
        X = self._validate_predict_data(X)
        y = self.net_.predict(X).astype(np.float64)
        return y.ravel() if self._y_was_1d else y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    @property
    def module_(self) -> torch.nn.Module:
        """The fitted torch module (raw inputs to raw targets)."""
        check_is_fitted(self, "net_")
        return self.net_.module_

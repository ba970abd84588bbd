"""The four estimators: an MLP trained from scratch and three ways to adapt a base."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..adapters import QUERIES, inject, routing_weights
from ..adapters.calibration import OutputCalibration, uncalibrated
from ..adapters.config import LoraConfig, QueryableLoraConfig
from ..nn import ACTIVATIONS, MLP, _safe_std
from ._base import BaseNeuralRegressor
from .bases import SharesFitted, base_module, check_feature_names, check_fits
from .registry import storable
from .regularized import RegularizedAdapter

# The class docstrings here, in multitask.py and in fewshot.py are plain literals that
# repeat shared entries (training settings, adapting, calibration, regularisation,
# fitted attributes) and the adapter options as parameter_docs renders them from the
# configs; tests/estimators/test_docstrings.py keeps the copies identical: edit them together.


@storable
class MLPRegressor(BaseNeuralRegressor):
    """A multi-layer perceptron trained from scratch.

    It pretrains the base network on plentiful source data, and it is the "train on
    the target alone" baseline. Inputs and targets are standardised inside the
    network (their means and standard deviations are stored as buffers), so the
    fitted module maps raw inputs to raw targets.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(64, 64, 64)
        Widths of the hidden layers (an int: one hidden layer).
    activation : {"silu", "relu", "tanh", "gelu"}, default="silu"
        Non-linearity after every hidden layer.
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=0.0
        AdamW weight decay.
    max_epochs : int, default=200
        Passes over the training data.
    batch_size : int, default=32
        Rows per training step.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when the validation loss
        has not improved for ``patience`` epochs, and keep the best weights.
    validation_fraction : float, default=0.1
        Share of rows held out when ``early_stopping`` is on.
    patience : int, default=20
        Epochs without improvement before stopping.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where to train; ``"auto"`` takes CUDA when present, else the CPU.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling and the validation split: the same value
        gives the same predictions on the same machine.
    verbose : int, default=0
        ``1`` shows a progress bar over epochs.
    callbacks : list of skorch callbacks or None, default=None
        Extra callbacks for the skorch net (e.g. Optuna pruning).

    Attributes
    ----------
    net_ : skorch.NeuralNetRegressor
        The trained skorch net; ``net_.module_`` is the torch module.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss`` (with early stopping)
        and ``dur`` (seconds), plus whatever callbacks record (e.g.
        :class:`qlsk.GradientDiagnostics`: ``grad_norms``, ``grad_concentration``).
        Losses are mean squared errors of targets divided by the target scale.
    n_trainable_params_ : int
        Parameters that were trained.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    n_outputs_ : int
        Number of targets.

    Examples
    --------
    >>> from qlsk import MLPRegressor
    >>> from qlsk.simlib import load_task
    >>> task = load_task("park91a-lf-to-hf", n_source=200, random_state=0)
    >>> base = MLPRegressor(max_epochs=5, random_state=0).fit(task.X_source, task.y_source)
    >>> base.predict(task.X_test[:3]).shape
    (3,)
    """

    def __init__(self, hidden_layer_sizes=(64, 64, 64), *, activation="silu", lr=1e-3,
                 weight_decay=0.0, max_epochs=200, batch_size=32, early_stopping=False,
                 validation_fraction=0.1, patience=20, device="cpu", random_state=None,
                 verbose=0, callbacks=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    _parameter_constraints = {
        **BaseNeuralRegressor._parameter_constraints,
        "hidden_layer_sizes": [Interval(Integral, 1, None, closed="left"), tuple, list],
        "activation": [StrOptions(set(ACTIVATIONS))],
    }

    def _check_params(self):
        super()._check_params()
        _hidden_sizes(self.hidden_layer_sizes)

    def _build_module(self, X, y, seed):
        module = MLP(X.shape[1], y.shape[1], _hidden_sizes(self.hidden_layer_sizes),
                     self.activation)
        module.set_scaling(X, y)
        return module, module.y_scale.clone()


def _hidden_sizes(sizes) -> tuple[int, ...]:
    """``hidden_layer_sizes`` as a tuple of positive ints (an int is one layer)."""
    sizes = (sizes,) if isinstance(sizes, Integral) else tuple(sizes)
    bad = [h for h in sizes if not isinstance(h, Integral) or isinstance(h, bool) or h < 1]
    if not sizes or bad:
        raise ValueError("hidden_layer_sizes must be a positive int or a non-empty tuple of "
                         f"positive ints, got {sizes!r}")
    return tuple(int(h) for h in sizes)


def adapter_options(estimator, config: type[LoraConfig]) -> dict:
    """The options of ``config`` that ``estimator`` takes as parameters, with its values.

    An estimator takes an adapter option as the constructor parameter of the same name;
    the options it does not take keep the config's default.
    """
    params = set(estimator._get_param_names())
    return {name: getattr(estimator, name) for name in config.option_names() if name in params}


class _AdaptingRegressor(SharesFitted, RegularizedAdapter, BaseNeuralRegressor):
    """Adapts a base network to new data; subclasses say how (``_adapt``)."""

    def __init__(self, base=None, *, hidden_layer_sizes=(64, 64, 64), lr=None,
                 weight_decay=0.0, max_epochs=200, batch_size=32, early_stopping=False,
                 validation_fraction=0.1, patience=20, device="cpu", random_state=None,
                 verbose=0, callbacks=None):
        self.base = base
        self.hidden_layer_sizes = hidden_layer_sizes
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    _parameter_constraints = {
        **BaseNeuralRegressor._parameter_constraints,
        **RegularizedAdapter._regularization_constraints,
        "base": "no_validation",  # a fitted estimator, module, path or None: base_module
        "hidden_layer_sizes": MLPRegressor._parameter_constraints["hidden_layer_sizes"],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "output_calibration": ["boolean"],
        "calibration_shrinkage": [Interval(Real, 0, None, closed="left")],
    }

    # Defaults for subclasses that do not offer the calibration as parameters.
    output_calibration = False
    calibration_shrinkage = 0.0

    def _check_params(self):
        super()._check_params()
        _hidden_sizes(self.hidden_layer_sizes)
        if self.base is not None:
            base_module(self.base)

    def _pretrain(self, X, y, seed) -> MLPRegressor:
        # Every MLPRegressor setting this estimator shares; callbacks belong to adapting.
        shared = set(MLPRegressor._get_param_names()) & set(self._get_param_names())
        params = {name: getattr(self, name) for name in shared}
        if params.get("lr") is None:  # the adapters' own default is the regime's
            params["lr"] = MLPRegressor().lr
        return MLPRegressor(**{**params, "random_state": seed, "callbacks": None}).fit(X, y)

    def _build_module(self, X, y, seed):
        if self.base is not None:
            check_feature_names(getattr(self, "feature_names_in_", None), self.base)
        self.base_ = self._pretrain(X, y, seed) if self.base is None else self.base
        module = copy.deepcopy(base_module(self.base_)).cpu().float()
        check_fits(module, X.shape[1], y.shape[1])
        scale = module.y_scale.clone() if isinstance(module, MLP) else torch.as_tensor(
            _safe_std(y), dtype=torch.float32)
        if not self.output_calibration:
            return self._adapt(module), scale
        # the base's predictions, taken before the adapters change the module in place
        with torch.no_grad():
            start = torch.cat([module.eval()(torch.as_tensor(X[i:i + 65536]))
                               for i in range(0, len(X), 65536)])
        return OutputCalibration.from_predictions(
            self._adapt(module), start, y, shrinkage=self.calibration_shrinkage,
            scale=scale), scale


@storable
class FineTuneRegressor(_AdaptingRegressor):
    """Full fine-tuning: every weight of a copy of the base is trained.

    Parameters
    ----------
    base : qlsk.MLPRegressor, FrozenEstimator, torch.nn.Module, path or None, default=None
        The pretrained network to adapt; it is copied and never modified, and
        ``clone`` (hence every search and refit) shares it rather than re-fitting it.
        ``None``: ``fit`` first pretrains an MLP (``hidden_layer_sizes``) on the data
        it is given, then adapts that, so ``fit(X, y)`` works alone. A plain torch
        module must map raw inputs to outputs of shape (n_samples, n_outputs); its
        loss is scaled by the standard deviation of the training targets.
    output_calibration : bool, default=True
        Predict ``rho * g(x) + c`` with a trainable scale ``rho`` and shift ``c`` per
        output around the adapted network ``g``, initialised by least squares of the
        targets on the base's predictions and trained with the adapter (the
        autoregressive multi-fidelity model; see :mod:`qlsk.adapters.calibration`).
        It pays where the base is right in shape but wrong in scale. On by default:
        over the 19 transfer tasks at two seeds the benchmark does not report, it
        cut the test error by 13-15% in geometric mean (``docs/benchmarks.md``), though
        on a base that is already right in scale it can cost (up to 1.9x at n = 50).
    calibration_shrinkage : float, default=0.0
        Strength, in pseudo-rows, of a prior holding ``rho`` near 1 and ``c`` near 0
        (0: plain least squares); the same prior is a penalty during training.
        The least-squares start uses every row given to ``fit``, including those
        ``early_stopping`` later holds out, so its validation loss is slightly
        optimistic.
    regularization : {"evidence", "cv", "fixed"}, default="evidence"
        How the adapter is kept from fitting the noise. ``"evidence"``: an L2 penalty
        toward the starting weights (the base, LoRA's zero update, the least-squares
        calibration), fitted by a full-batch optimiser to convergence at every strength of
        ``l2_strengths``, keeping the strength of largest linearised-Laplace marginal
        likelihood; the noise level comes out in closed form and
        ``predict(X, return_std=True)`` works. ``"cv"``: the same path, the strength
        chosen by 5-fold cross-validation (about 6x the cost). ``"fixed"``: the
        mini-batch AdamW recipe of ``weight_decay``, ``max_epochs``, ``batch_size``
        and ``early_stopping`` (no intervals). ``weight_decay``, ``max_epochs``,
        ``batch_size`` and the early-stopping settings apply to ``"fixed"`` only (and
        to the pretraining when ``base=None``); ``callbacks`` need ``"fixed"``. See
        ``docs/method.md``, "Regularisation chosen by the data".
    l2_strengths : array-like of float or None, default=None
        The strengths ``lambda`` tried, in units of the mean squared error of targets
        divided by the loss scale (``None``: 11 values from 10 down to 1e-4, evenly
        spaced in log). A single value fits that strength alone.
    max_steps : int, default=2000
        At most this many full-batch steps per strength (a step is one evaluation of
        the objective and its gradient); a fit stops earlier once the objective
        improves by less than ``tol`` (relative) over 50 steps, or when L-BFGS finds
        no descent left.
    tol : float, default=1e-4
        The convergence tolerance of those fits.
    optimizer : {"lbfgs", "adam"}, default="lbfgs"
        The full-batch optimiser of ``"evidence"`` and ``"cv"``: L-BFGS with a
        strong-Wolfe line search, or Adam. Chosen on development tasks: L-BFGS was as
        accurate as Adam and fitted in a third to a half of the time
        (``docs/method.md``, "Regularisation chosen by the data"). A line search needs
        a deterministic objective, so where an adapter has ``dropout`` or
        ``routing_noise`` above 0 the fits use Adam.
    hidden_layer_sizes : int or tuple of int, default=(64, 64, 64)
        The MLP pretrained when ``base`` is None. That pretraining also uses this
        estimator's ``lr``, ``weight_decay``, ``max_epochs``, ``batch_size`` and
        early-stopping settings.
    lr : float or None, default=None
        The learning rate. ``None``: for the full-batch path (``"evidence"``,
        ``"cv"``) 1 with L-BFGS (its line search's first trial step) and 3e-3 with
        Adam (chosen on development tasks: as accurate as 1e-3 and about twice as
        fast); 1e-3 for ``"fixed"`` (AdamW) and for the pretraining when ``base=None``.
    weight_decay : float, default=0.0
        AdamW weight decay.
    max_epochs : int, default=200
        Passes over the training data.
    batch_size : int, default=32
        Rows per training step.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when the validation loss
        has not improved for ``patience`` epochs, and keep the best weights.
    validation_fraction : float, default=0.1
        Share of rows held out when ``early_stopping`` is on.
    patience : int, default=20
        Epochs without improvement before stopping.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where to train; ``"auto"`` takes CUDA when present, else the CPU.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling and the validation split: the same value
        gives the same predictions on the same machine.
    verbose : int, default=0
        ``1`` shows a progress bar over epochs.
    callbacks : list of skorch callbacks or None, default=None
        Extra callbacks for the skorch net (e.g. Optuna pruning).

    Attributes
    ----------
    base_ : estimator or torch.nn.Module
        The base that was adapted (the MLP pretrained in ``fit`` when ``base=None``).
    regularization_path_ : list of dict
        With ``regularization`` ``"evidence"`` or ``"cv"``: per strength tried,
        ``strength``, ``log_evidence`` (per residual), ``noise`` (in units of the
        loss scale), ``objective``, ``steps`` and ``cv_error``.
    l2_strength_ : float
        The strength chosen.
    noise_std_ : ndarray of shape (n_outputs,)
        The learned noise standard deviation, in the targets' units.
    net_ : skorch.NeuralNetRegressor
        The trained skorch net; ``net_.module_`` is the torch module.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss`` (with early stopping)
        and ``dur`` (seconds), plus whatever callbacks record (e.g.
        :class:`qlsk.GradientDiagnostics`: ``grad_norms``, ``grad_concentration``).
        Losses are mean squared errors of targets divided by the target scale.
    n_trainable_params_ : int
        Parameters that were trained.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    n_outputs_ : int
        Number of targets.

    Examples
    --------
    >>> from qlsk import FineTuneRegressor, MLPRegressor
    >>> from qlsk.simlib import load_task
    >>> task = load_task("park91a-lf-to-hf", n_source=200, random_state=0)
    >>> base = MLPRegressor(max_epochs=5, random_state=0).fit(task.X_source, task.y_source)
    >>> # the evidence's path, capped at 200 full-batch steps per strength for a quick look
    >>> model = FineTuneRegressor(base=base, max_steps=200, random_state=0)
    >>> model.fit(task.X_train, task.y_train).predict(task.X_test[:2]).shape
    (2,)
    """

    def __init__(self, base=None, *, output_calibration=True, calibration_shrinkage=0.0,
                 regularization="evidence", l2_strengths=None, max_steps=2000, tol=1e-4,
                 optimizer="lbfgs", hidden_layer_sizes=(64, 64, 64), lr=None,
                 weight_decay=0.0, max_epochs=200,
                 batch_size=32, early_stopping=False, validation_fraction=0.1, patience=20,
                 device="cpu", random_state=None, verbose=0, callbacks=None):
        super().__init__(
            base=base, hidden_layer_sizes=hidden_layer_sizes, lr=lr, weight_decay=weight_decay,
            max_epochs=max_epochs, batch_size=batch_size, early_stopping=early_stopping,
            validation_fraction=validation_fraction, patience=patience, device=device,
            random_state=random_state, verbose=verbose, callbacks=callbacks)
        self.output_calibration = output_calibration
        self.calibration_shrinkage = calibration_shrinkage
        self.regularization = regularization
        self.l2_strengths = l2_strengths
        self.max_steps = max_steps
        self.tol = tol
        self.optimizer = optimizer

    def _adapt(self, module):
        return module.requires_grad_(True)


@storable
class LoraRegressor(_AdaptingRegressor):
    """Plain LoRA: a trainable ``(alpha / rank) B A`` on every linear layer.

    Parameters
    ----------
    base : qlsk.MLPRegressor, FrozenEstimator, torch.nn.Module, path or None, default=None
        The pretrained network to adapt; it is copied and never modified, and
        ``clone`` (hence every search and refit) shares it rather than re-fitting it.
        ``None``: ``fit`` first pretrains an MLP (``hidden_layer_sizes``) on the data
        it is given, then adapts that, so ``fit(X, y)`` works alone. A plain torch
        module must map raw inputs to outputs of shape (n_samples, n_outputs); its
        loss is scaled by the standard deviation of the training targets.
    rank : int, default=8
        Rank of every update (the atoms of Queryable LoRA are ``rank x rank``).
    alpha : float, default=16.0
        The update is scaled by ``alpha / rank``; must be > 0 (0 would leave the adapter
        inert).
    dropout : float, default=0.0
        Dropout, in [0, 1), on the layer input of the low-rank branch while training.
    target_modules : None, str, list of str or callable, default=None
        Layers to adapt (see :func:`qlsk.adapters.inject`); ``None`` adapts every
        ``nn.Linear``.
    output_calibration : bool, default=True
        Predict ``rho * g(x) + c`` with a trainable scale ``rho`` and shift ``c`` per
        output around the adapted network ``g``, initialised by least squares of the
        targets on the base's predictions and trained with the adapter (the
        autoregressive multi-fidelity model; see :mod:`qlsk.adapters.calibration`).
        It pays where the base is right in shape but wrong in scale. On by default:
        over the 19 transfer tasks at two seeds the benchmark does not report, it
        cut the test error by 13-15% in geometric mean (``docs/benchmarks.md``), though
        on a base that is already right in scale it can cost (up to 1.9x at n = 50).
    calibration_shrinkage : float, default=0.0
        Strength, in pseudo-rows, of a prior holding ``rho`` near 1 and ``c`` near 0
        (0: plain least squares); the same prior is a penalty during training.
        The least-squares start uses every row given to ``fit``, including those
        ``early_stopping`` later holds out, so its validation loss is slightly
        optimistic.
    regularization : {"evidence", "cv", "fixed"}, default="evidence"
        How the adapter is kept from fitting the noise. ``"evidence"``: an L2 penalty
        toward the starting weights (the base, LoRA's zero update, the least-squares
        calibration), fitted by a full-batch optimiser to convergence at every strength of
        ``l2_strengths``, keeping the strength of largest linearised-Laplace marginal
        likelihood; the noise level comes out in closed form and
        ``predict(X, return_std=True)`` works. ``"cv"``: the same path, the strength
        chosen by 5-fold cross-validation (about 6x the cost). ``"fixed"``: the
        mini-batch AdamW recipe of ``weight_decay``, ``max_epochs``, ``batch_size``
        and ``early_stopping`` (no intervals). ``weight_decay``, ``max_epochs``,
        ``batch_size`` and the early-stopping settings apply to ``"fixed"`` only (and
        to the pretraining when ``base=None``); ``callbacks`` need ``"fixed"``. See
        ``docs/method.md``, "Regularisation chosen by the data".
    l2_strengths : array-like of float or None, default=None
        The strengths ``lambda`` tried, in units of the mean squared error of targets
        divided by the loss scale (``None``: 11 values from 10 down to 1e-4, evenly
        spaced in log). A single value fits that strength alone.
    max_steps : int, default=2000
        At most this many full-batch steps per strength (a step is one evaluation of
        the objective and its gradient); a fit stops earlier once the objective
        improves by less than ``tol`` (relative) over 50 steps, or when L-BFGS finds
        no descent left.
    tol : float, default=1e-4
        The convergence tolerance of those fits.
    optimizer : {"lbfgs", "adam"}, default="lbfgs"
        The full-batch optimiser of ``"evidence"`` and ``"cv"``: L-BFGS with a
        strong-Wolfe line search, or Adam. Chosen on development tasks: L-BFGS was as
        accurate as Adam and fitted in a third to a half of the time
        (``docs/method.md``, "Regularisation chosen by the data"). A line search needs
        a deterministic objective, so where an adapter has ``dropout`` or
        ``routing_noise`` above 0 the fits use Adam.
    hidden_layer_sizes : int or tuple of int, default=(64, 64, 64)
        The MLP pretrained when ``base`` is None. That pretraining also uses this
        estimator's ``lr``, ``weight_decay``, ``max_epochs``, ``batch_size`` and
        early-stopping settings.
    lr : float or None, default=None
        The learning rate. ``None``: for the full-batch path (``"evidence"``,
        ``"cv"``) 1 with L-BFGS (its line search's first trial step) and 3e-3 with
        Adam (chosen on development tasks: as accurate as 1e-3 and about twice as
        fast); 1e-3 for ``"fixed"`` (AdamW) and for the pretraining when ``base=None``.
    weight_decay : float, default=0.0
        AdamW weight decay.
    max_epochs : int, default=200
        Passes over the training data.
    batch_size : int, default=32
        Rows per training step.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when the validation loss
        has not improved for ``patience`` epochs, and keep the best weights.
    validation_fraction : float, default=0.1
        Share of rows held out when ``early_stopping`` is on.
    patience : int, default=20
        Epochs without improvement before stopping.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where to train; ``"auto"`` takes CUDA when present, else the CPU.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling and the validation split: the same value
        gives the same predictions on the same machine.
    verbose : int, default=0
        ``1`` shows a progress bar over epochs.
    callbacks : list of skorch callbacks or None, default=None
        Extra callbacks for the skorch net (e.g. Optuna pruning).

    Attributes
    ----------
    base_ : estimator or torch.nn.Module
        The base that was adapted.
    regularization_path_ : list of dict
        With ``regularization`` ``"evidence"`` or ``"cv"``: per strength tried,
        ``strength``, ``log_evidence`` (per residual), ``noise`` (in units of the
        loss scale), ``objective``, ``steps`` and ``cv_error``.
    l2_strength_ : float
        The strength chosen.
    noise_std_ : ndarray of shape (n_outputs,)
        The learned noise standard deviation, in the targets' units.
    net_ : skorch.NeuralNetRegressor
        The trained skorch net; ``net_.module_`` is the torch module.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss`` (with early stopping)
        and ``dur`` (seconds), plus whatever callbacks record (e.g.
        :class:`qlsk.GradientDiagnostics`: ``grad_norms``, ``grad_concentration``).
        Losses are mean squared errors of targets divided by the target scale.
    n_trainable_params_ : int
        Parameters that were trained.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    n_outputs_ : int
        Number of targets.

    Examples
    --------
    >>> from qlsk import LoraRegressor
    >>> from qlsk.simlib import load_task
    >>> task = load_task("park91a-lf-to-hf", random_state=0)
    >>> LoraRegressor(rank=2, max_steps=200, random_state=0).fit(  # 200: a quick look
    ...     task.X_train, task.y_train).predict(task.X_test[:2]).shape
    (2,)
    """

    # The adapter options (rank, alpha, dropout) and their defaults are LoraConfig's.
    def __init__(self, base=None, *, rank=8, alpha=16.0, dropout=0.0, target_modules=None,
                 output_calibration=True, calibration_shrinkage=0.0,
                 regularization="evidence", l2_strengths=None, max_steps=2000, tol=1e-4,
                 optimizer="lbfgs", hidden_layer_sizes=(64, 64, 64), lr=None,
                 weight_decay=0.0, max_epochs=200, batch_size=32, early_stopping=False,
                 validation_fraction=0.1, patience=20, device="cpu", random_state=None,
                 verbose=0, callbacks=None):
        super().__init__(
            base=base, hidden_layer_sizes=hidden_layer_sizes, lr=lr, weight_decay=weight_decay,
            max_epochs=max_epochs, batch_size=batch_size, early_stopping=early_stopping,
            validation_fraction=validation_fraction, patience=patience, device=device,
            random_state=random_state, verbose=verbose, callbacks=callbacks)
        self.output_calibration = output_calibration
        self.calibration_shrinkage = calibration_shrinkage
        self.regularization = regularization
        self.l2_strengths = l2_strengths
        self.max_steps = max_steps
        self.tol = tol
        self.optimizer = optimizer
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.target_modules = target_modules

    # One constraint per option of _config_class (tests/adapters/test_config.py checks they agree).
    _parameter_constraints = {
        **_AdaptingRegressor._parameter_constraints,
        "rank": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "target_modules": [None, str, list, tuple, callable],
    }

    _config_class = LoraConfig
    _method = LoraConfig.method

    def _check_params(self):
        super()._check_params()
        self._config_class(**self._adapter_config())  # what the constraints cannot see: top_k

    def _adapter_config(self) -> dict:
        """Every adapter option, from the parameter of the same name."""
        return adapter_options(self, self._config_class)

    def _adapt(self, module):
        return inject(module, self._method, self.target_modules, **self._adapter_config())


@storable
class QueryableLoraRegressor(LoraRegressor):
    """Queryable LoRA: LoRA whose bottleneck applies routed, shared atoms.

    Every adapted layer keeps LoRA factors A and B; a shared memory of ``n_atoms``
    ``rank x rank`` atoms is queried per block of ``block_size`` layers from the
    block's low-rank state and an attention summary over the earlier blocks and its
    own, and a sparse
    top-k convex combination of atoms acts inside the bottleneck. A text
    ``task_description`` adds a prior over atoms of strength ``prior_strength``
    (see ``docs/method.md``).

    Parameters
    ----------
    base : qlsk.MLPRegressor, FrozenEstimator, torch.nn.Module, path or None, default=None
        The pretrained network to adapt; it is copied and never modified, and
        ``clone`` (hence every search and refit) shares it rather than re-fitting it.
        ``None``: ``fit`` first pretrains an MLP (``hidden_layer_sizes``) on the data
        it is given, then adapts that, so ``fit(X, y)`` works alone. A plain torch
        module must map raw inputs to outputs of shape (n_samples, n_outputs); its
        loss is scaled by the standard deviation of the training targets.
    rank : int, default=8
        Rank of every update (the atoms of Queryable LoRA are ``rank x rank``).
    alpha : float, default=16.0
        The update is scaled by ``alpha / rank``; must be > 0 (0 would leave the adapter
        inert).
    dropout : float, default=0.0
        Dropout, in [0, 1), on the layer input of the low-rank branch while training.
    n_atoms : int, default=16
        Atoms in the shared memory.
    top_k : int, default=2
        Atoms combined per row and block; at most ``n_atoms``.
    block_size : int, default=2
        Consecutive adapted layers that share one routing decision.
    temperature : float, default=1.0
        Softmax temperature over the kept routing logits.
    routing_noise : float, default=0.0
        Standard deviation of Gaussian noise added to the routing logits while training
        (noisy top-k gating); a routing regulariser, off by default (``docs/method.md``,
        "Ablations").
    key_dim : int or None, default=None
        Dimension of the memory's keys and queries; ``None``: ``max(rank, 8)``.
    prior_strength : float, default=1.0
        Weight ``lambda`` of the instruction prior; 0 ignores the description.
    prior_temperature : float, default=0.5
        Temperature ``tau_pi`` of the instruction prior; smaller is more peaked.
    task_description : str, array-like or None, default=None
        Plain-English description of the target task (or a precomputed embedding); it
        sets a prior over atoms. ``None``: no prior.
    text_encoder : {"lexical", "semantic"} or callable, default="lexical"
        How the description is embedded (see :mod:`qlsk.text`).
    target_modules : None, str, list of str or callable, default=None
        Layers to adapt, in forward order (see :func:`qlsk.adapters.inject`).
    query : {"state+depth", "state", "detached", "constant", "random"}, default="state+depth"
        Where the routing query comes from (ablations, ``docs/method.md``): the block's
        low-rank state plus the depth summary of earlier blocks (the method); the state
        alone; the method's query with no gradient into ``A`` through it; a learned
        constant per block (the same route for every row); a fixed random projection of
        the input (routing never trains).
    freeze_atoms : bool, default=False
        Fix every atom at the identity: the update is then plain LoRA whatever the
        routing (an ablation).
    output_calibration : bool, default=True
        Predict ``rho * g(x) + c`` with a trainable scale ``rho`` and shift ``c`` per
        output around the adapted network ``g``, initialised by least squares of the
        targets on the base's predictions and trained with the adapter (the
        autoregressive multi-fidelity model; see :mod:`qlsk.adapters.calibration`).
        It pays where the base is right in shape but wrong in scale. On by default:
        over the 19 transfer tasks at two seeds the benchmark does not report, it
        cut the test error by 13-15% in geometric mean (``docs/benchmarks.md``), though
        on a base that is already right in scale it can cost (up to 1.9x at n = 50).
    calibration_shrinkage : float, default=0.0
        Strength, in pseudo-rows, of a prior holding ``rho`` near 1 and ``c`` near 0
        (0: plain least squares); the same prior is a penalty during training.
        The least-squares start uses every row given to ``fit``, including those
        ``early_stopping`` later holds out, so its validation loss is slightly
        optimistic.
    regularization : {"evidence", "cv", "fixed"}, default="evidence"
        How the adapter is kept from fitting the noise. ``"evidence"``: an L2 penalty
        toward the starting weights (the base, LoRA's zero update, the least-squares
        calibration), fitted by a full-batch optimiser to convergence at every strength of
        ``l2_strengths``, keeping the strength of largest linearised-Laplace marginal
        likelihood; the noise level comes out in closed form and
        ``predict(X, return_std=True)`` works. ``"cv"``: the same path, the strength
        chosen by 5-fold cross-validation (about 6x the cost). ``"fixed"``: the
        mini-batch AdamW recipe of ``weight_decay``, ``max_epochs``, ``batch_size``
        and ``early_stopping`` (no intervals). ``weight_decay``, ``max_epochs``,
        ``batch_size`` and the early-stopping settings apply to ``"fixed"`` only (and
        to the pretraining when ``base=None``); ``callbacks`` need ``"fixed"``. See
        ``docs/method.md``, "Regularisation chosen by the data".
    l2_strengths : array-like of float or None, default=None
        The strengths ``lambda`` tried, in units of the mean squared error of targets
        divided by the loss scale (``None``: 11 values from 10 down to 1e-4, evenly
        spaced in log). A single value fits that strength alone.
    max_steps : int, default=2000
        At most this many full-batch steps per strength (a step is one evaluation of
        the objective and its gradient); a fit stops earlier once the objective
        improves by less than ``tol`` (relative) over 50 steps, or when L-BFGS finds
        no descent left.
    tol : float, default=1e-4
        The convergence tolerance of those fits.
    optimizer : {"lbfgs", "adam"}, default="lbfgs"
        The full-batch optimiser of ``"evidence"`` and ``"cv"``: L-BFGS with a
        strong-Wolfe line search, or Adam. Chosen on development tasks: L-BFGS was as
        accurate as Adam and fitted in a third to a half of the time
        (``docs/method.md``, "Regularisation chosen by the data"). A line search needs
        a deterministic objective, so where an adapter has ``dropout`` or
        ``routing_noise`` above 0 the fits use Adam.
    hidden_layer_sizes : int or tuple of int, default=(64, 64, 64)
        The MLP pretrained when ``base`` is None. That pretraining also uses this
        estimator's ``lr``, ``weight_decay``, ``max_epochs``, ``batch_size`` and
        early-stopping settings.
    lr : float or None, default=None
        The learning rate. ``None``: for the full-batch path (``"evidence"``,
        ``"cv"``) 1 with L-BFGS (its line search's first trial step) and 3e-3 with
        Adam (chosen on development tasks: as accurate as 1e-3 and about twice as
        fast); 1e-3 for ``"fixed"`` (AdamW) and for the pretraining when ``base=None``.
    weight_decay : float, default=0.0
        AdamW weight decay.
    max_epochs : int, default=200
        Passes over the training data.
    batch_size : int, default=32
        Rows per training step.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when the validation loss
        has not improved for ``patience`` epochs, and keep the best weights.
    validation_fraction : float, default=0.1
        Share of rows held out when ``early_stopping`` is on.
    patience : int, default=20
        Epochs without improvement before stopping.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where to train; ``"auto"`` takes CUDA when present, else the CPU.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling and the validation split: the same value
        gives the same predictions on the same machine.
    verbose : int, default=0
        ``1`` shows a progress bar over epochs.
    callbacks : list of skorch callbacks or None, default=None
        Extra callbacks for the skorch net (e.g. Optuna pruning).

    Attributes
    ----------
    base_ : estimator or torch.nn.Module
        The base that was adapted.
    regularization_path_ : list of dict
        With ``regularization`` ``"evidence"`` or ``"cv"``: per strength tried,
        ``strength``, ``log_evidence`` (per residual), ``noise`` (in units of the
        loss scale), ``objective``, ``steps`` and ``cv_error``.
    l2_strength_ : float
        The strength chosen.
    noise_std_ : ndarray of shape (n_outputs,)
        The learned noise standard deviation, in the targets' units.
    net_ : skorch.NeuralNetRegressor
        The trained skorch net; ``net_.module_`` is the torch module.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss`` (with early stopping)
        and ``dur`` (seconds), plus whatever callbacks record (e.g.
        :class:`qlsk.GradientDiagnostics`: ``grad_norms``, ``grad_concentration``).
        Losses are mean squared errors of targets divided by the target scale.
    n_trainable_params_ : int
        Parameters that were trained.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    n_outputs_ : int
        Number of targets.

    Examples
    --------
    >>> from qlsk import QueryableLoraRegressor
    >>> from qlsk.simlib import load_task
    >>> task = load_task("park91a-lf-to-hf", random_state=0)
    >>> model = QueryableLoraRegressor(rank=4, n_atoms=8, max_steps=200, random_state=0,
    ...                                task_description=task.description)  # a quick look
    >>> model.fit(task.X_train, task.y_train).atom_usage(task.X_test[:5]).shape
    (2, 5, 8)
    """

    # The adapter options and their defaults are QueryableLoraConfig's.
    def __init__(self, base=None, *, rank=8, alpha=16.0, dropout=0.0, n_atoms=16, top_k=2,
                 block_size=2, temperature=1.0, routing_noise=0.0, key_dim=None,
                 prior_strength=1.0, prior_temperature=0.5, task_description=None,
                 text_encoder="lexical", target_modules=None,
                 query="state+depth", freeze_atoms=False, output_calibration=True,
                 calibration_shrinkage=0.0, regularization="evidence", l2_strengths=None,
                 max_steps=2000, tol=1e-4, optimizer="lbfgs",
                 hidden_layer_sizes=(64, 64, 64), lr=None, weight_decay=0.0, max_epochs=200,
                 batch_size=32, early_stopping=False, validation_fraction=0.1, patience=20,
                 device="cpu", random_state=None, verbose=0, callbacks=None):
        super().__init__(
            base=base, rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules,
            output_calibration=output_calibration, calibration_shrinkage=calibration_shrinkage,
            regularization=regularization, l2_strengths=l2_strengths, max_steps=max_steps,
            tol=tol, optimizer=optimizer, hidden_layer_sizes=hidden_layer_sizes, lr=lr,
            weight_decay=weight_decay,
            max_epochs=max_epochs, batch_size=batch_size, early_stopping=early_stopping,
            validation_fraction=validation_fraction, patience=patience, device=device,
            random_state=random_state, verbose=verbose, callbacks=callbacks)
        self.n_atoms = n_atoms
        self.top_k = top_k
        self.block_size = block_size
        self.temperature = temperature
        self.routing_noise = routing_noise
        self.key_dim = key_dim
        self.prior_strength = prior_strength
        self.prior_temperature = prior_temperature
        self.task_description = task_description
        self.text_encoder = text_encoder
        self.query = query
        self.freeze_atoms = freeze_atoms

    _config_class = QueryableLoraConfig
    _method = QueryableLoraConfig.method

    _parameter_constraints = {
        **LoraRegressor._parameter_constraints,
        "n_atoms": [Interval(Integral, 1, None, closed="left")],
        "top_k": [Interval(Integral, 1, None, closed="left")],
        "block_size": [Interval(Integral, 1, None, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "routing_noise": [Interval(Real, 0, None, closed="left")],
        "key_dim": [Interval(Integral, 1, None, closed="left"), None],
        "prior_strength": [Interval(Real, 0, None, closed="left")],
        "prior_temperature": [Interval(Real, 0, None, closed="neither")],
        "task_description": [None, str, "array-like"],
        "text_encoder": [StrOptions({"lexical", "semantic"}), callable],
        "query": [StrOptions(set(QUERIES))],
        "freeze_atoms": ["boolean"],
    }

    def atom_usage(self, X) -> np.ndarray:
        """Each block's routing weights for the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_blocks, n_samples, n_atoms)
            Non-negative weights, each row summing to one with ``top_k`` non-zeros.
            ``.mean(axis=1)`` is the usage of every atom per block.
        """
        X = self._validate_predict_data(X)
        module = uncalibrated(self.net_.module_).eval()
        device = next(module.parameters()).device
        chunks = []
        with torch.no_grad():
            for start in range(0, len(X), 4096):
                module(torch.as_tensor(X[start:start + 4096], device=device))
                chunks.append(routing_weights(module).cpu())
        return torch.cat(chunks, dim=1).numpy()

"""Adapt a fitted shared atom memory to new described tasks: :class:`FewShotRegressor`."""

from __future__ import annotations

import copy
from numbers import Real

from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._base import BaseNeuralRegressor
from ._described import (
    _MemoryViews,
    _RegularizedDescribed,
    dump_network,
    restore_described,
    restore_network,
)
from .bases import SharesFitted
from .multitask import SharedMemoryRegressor
from .registry import storable
from .regularized import RegularizedAdapter


class FewShotRegressor(SharesFitted, _MemoryViews, _RegularizedDescribed):
    """Adapt a fitted :class:`~qlsk.SharedMemoryRegressor` to new tasks from a few rows.

    Training starts from a copy of the shared model (base, LoRA factors, memory and
    prior map), so before any step it predicts exactly as the shared model does
    zero-shot; ``X`` is a DataFrame with the same columns, description included.

    Parameters
    ----------
    shared : SharedMemoryRegressor
        A fitted shared-memory model; it is copied, never modified, and ``clone``
        shares it.
    freeze_memory : bool, default=True
        Keep the memory (atoms, router, prior map and description channels) as the
        shared model learned it and train only the LoRA factors; ``False`` trains
        everything.
    regularization : {"evidence", "cv", "fixed"}, default="evidence"
        ``"evidence"`` (or ``"cv"``): the adapting estimators' regime (see
        :class:`~qlsk.LoraRegressor`): full-batch training along a path of L2
        strengths toward the shared model's weights, the strength and the noise
        chosen by the linearised-Laplace evidence (or 5-fold CV), and
        ``predict(X, return_std=True)``. ``"fixed"``: mini-batch AdamW for
        ``max_epochs`` (``weight_decay``, ``max_epochs``, ``batch_size`` and the
        early-stopping settings apply to it only; ``callbacks`` need it). The default
        was chosen on the development families, where the evidence was 0.83–0.93x the
        fixed recipe's error at n = 10–50 (``docs/multitask.md``).
    l2_strengths : array-like of float or None, default=None
        The strengths tried by ``"evidence"`` and ``"cv"`` (``None``: 11 values from 10
        down to 1e-4).
    max_steps : int, default=2000
        At most this many full-batch steps per strength.
    tol : float, default=1e-4
        The convergence tolerance of those fits.
    optimizer : {"adam", "lbfgs"}, default="adam"
        The full-batch optimiser of ``"evidence"`` and ``"cv"`` (see
        :class:`~qlsk.LoraRegressor`). Adam here: on the development families
        L-BFGS, the single-task adapters' default, fitted in a quarter of the time
        at 1.010-1.016x the error (``docs/multitask.md``), and accuracy comes
        first. ``"lbfgs"`` is the faster choice.
    lr : float or None, default=None
        The learning rate (``None``: 1e-3 for ``"fixed"``'s AdamW; on the full-batch
        path 3e-3 with Adam, 1 with L-BFGS).
    weight_decay : float, default=0.0
        AdamW weight decay.
    max_epochs : int, default=50
        Passes over the training data.
    batch_size : int, default=16
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
    feature_columns_, descriptions_, embedding_dim_, shared_model_
        As for :class:`~qlsk.SharedMemoryRegressor`.
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
    >>> from qlsk import FewShotRegressor, SharedMemoryRegressor
    >>> from qlsk.simlib import load_family
    >>> fam = load_family("ishigami-ab", n_per_member=20, n_test=5, random_state=0)
    >>> shared = SharedMemoryRegressor(hidden_layer_sizes=(16,), max_epochs=2,
    ...                                random_state=0).fit(fam.X_train, fam.y_train)
    >>> few = FewShotRegressor(shared, max_epochs=2, random_state=0)
    >>> few.fit(fam.X_heldout[:10], fam.y_heldout[:10]).predict(fam.X_heldout[:2]).shape
    (2,)
    """

    def __init__(self, shared=None, *, freeze_memory=True, regularization="evidence",
                 l2_strengths=None, max_steps=2000, tol=1e-4, optimizer="adam", lr=None,
                 weight_decay=0.0, max_epochs=50, batch_size=16, early_stopping=False,
                 validation_fraction=0.1, patience=20, device="cpu", random_state=None,
                 verbose=0, callbacks=None):
        self.shared = shared
        self.freeze_memory = freeze_memory
        self.regularization = regularization
        self.l2_strengths = l2_strengths
        self.max_steps = max_steps
        self.tol = tol
        self.optimizer = optimizer
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
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "shared": "no_validation",  # checked in _check_params: a fitted model
        "freeze_memory": ["boolean"],
    }

    def _check_params(self):
        super()._check_params()
        if not isinstance(self.shared, SharedMemoryRegressor):
            raise TypeError("shared must be a fitted SharedMemoryRegressor, got "
                            f"{type(self.shared).__name__}")
        check_is_fitted(self.shared, "net_")

    _shared = ("shared",)

    def fit(self, X, y, use_description=True):
        """Adapt a copy of the shared model to the rows of ``X``.

        Parameters
        ----------
        X : pandas DataFrame
            The input columns and the description column.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        use_description : bool, default=True
            ``False``: train as if the rows had no description (a zero embedding, as
            ``predict(X, use_description=False)`` predicts): the memory's routing
            without its text prior, the control that measures what the description
            carries in a few-shot fit. With ``regularization="fixed"`` only: a
            posterior fitted so would not match ``predict``'s described rows.

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            As :meth:`qlsk.LoraRegressor.fit` raises them; also for columns other than
            the shared model's, and for ``use_description=False`` under the evidence or
            cross-validation.
        """
        if not use_description and self._regime() != "fixed":
            raise ValueError(f"fit(use_description=False) trains without a posterior: it "
                             f"needs regularization='fixed', not "
                             f"{self._regime_label()}")
        self._describe_rows = bool(use_description)
        try:
            return super().fit(X, y)
        finally:
            del self._describe_rows

    def _validate_fit_data(self, X, y):
        Z, y = super()._validate_fit_data(X, y)
        if not getattr(self, "_describe_rows", True):
            Z[:, len(self.feature_columns_):-1] = 0  # the embedding; the task column stays
        return Z, y

    def _text_settings(self):
        return self.shared._text_settings()

    def _check_columns(self, columns) -> None:
        expected = list(self.shared.feature_columns_)
        if list(columns) != expected:
            raise ValueError(f"X has {len(columns)} input column(s) {list(columns)}, but the "
                             f"shared model was fitted on {len(expected)}: {expected}; every "
                             "task must have the same inputs, in the same order")

    def _build_module(self, Z, y, seed):
        if y.shape[1] != self.shared.n_outputs_:
            raise ValueError(f"y has {y.shape[1]} output(s), the shared model "
                             f"{self.shared.n_outputs_}")
        if self.embedding_dim_ != self.shared.embedding_dim_:
            raise ValueError("the text encoder gives embeddings of another length than the "
                             "shared model's")
        return _copy_shared(self), self.shared.net_.criterion_.scale.clone().cpu()


def _copy_shared(estimator: FewShotRegressor):
    """The shared model's network for one task: its weights, without the multi-task
    training terms (load balancing across tasks, description dropout: a few-shot fit
    has one task and its description), the memory frozen where asked."""
    module = copy.deepcopy(estimator.shared.module_).cpu().float()
    module.model.set_balance(None)
    module.model.description_dropout = 0.0
    if estimator.freeze_memory:
        module.model.freeze_memory()
    return module


# ---- qlsk.save / qlsk.load ----------------------------------------------------------

def _dump(estimator: FewShotRegressor) -> tuple[dict, dict]:
    """What :func:`qlsk.save` keeps besides the parameters and the shared model (stored
    whole, as the ``shared`` parameter): the fitted columns and descriptions, the
    network's weights and, under the evidence, its posterior."""
    return dump_network(estimator)


def _restore(estimator: FewShotRegressor, meta: dict, tensors: dict,
             device: str = "cpu") -> None:
    scale = restore_described(estimator, meta)
    module = _copy_shared(estimator)  # the same architecture
    restore_network(estimator, module, meta, tensors, scale, device, "the shared model")


storable(FewShotRegressor, dump=_dump, restore=_restore, key="fewshot", nested=("shared",))

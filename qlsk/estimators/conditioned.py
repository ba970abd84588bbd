"""LoRA with the task's description as an extra input: the plain rival of the atom
memory's text channel, and today the better of the two (``docs/multitask.md``)."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..adapters import inject
from ..adapters.conditioning import DescriptionInput
from ..nn import _safe_std
from ._base import BaseNeuralRegressor
from ._described import (
    _RegularizedDescribed,
    dump_network,
    restore_described,
    restore_network,
)
from .bases import SharesFitted, base_module, check_feature_names, check_fits
from .registry import storable
from .regularized import RegularizedAdapter


class ConditionedLoraRegressor(SharesFitted, _RegularizedDescribed):
    """LoRA on a frozen base, with the description's embedding as an extra input.

    Every linear layer of a copy of ``base`` gets LoRA factors, and the embedding
    ``e(c)`` of each row's task description shifts the first hidden layer through a
    learned map ``V`` (zero at the start, so training starts at the base):
    ``h_1 = act(W_1 x + b_1 + s B_1 A_1 x + V e(c))``; with ``condition="film"`` it also
    scales it, ``h_1 = act((W_1 x + b_1 + s B_1 A_1 x) * (1 + U e(c)) + V e(c))``.
    Trained on rows of many described tasks, it predicts a new task from its
    description alone (zero-shot), and adapts to a few of its rows from a fitted model
    (``init``, few-shot).

    ``X`` is a pandas DataFrame: numeric input columns and one text column,
    ``description_column``, holding each row's task description, as for
    :class:`~qlsk.SharedMemoryRegressor`.

    Parameters
    ----------
    base : qlsk.MLPRegressor, FrozenEstimator, torch.nn.Module, path or None, default=None
        The fitted network to adapt (copied, never modified; shared with clones).
        Ignored with ``init``; one of the two is needed.
    init : ConditionedLoraRegressor or None, default=None
        A fitted model to start from instead (few-shot adaptation): its LoRA factors
        and map ``V`` are copied.
    condition : {"shift", "film"}, default="film"
        How the description enters the first hidden layer: a shift ``V e(c)``, or a
        shift and a scale ``1 + U e(c)`` (a FiLM layer). Ignored with ``init`` (its
        module is copied). The default was chosen on the development families, where
        the FiLM layer predicted new tasks zero-shot 13% more accurately
        (``docs/multitask.md``).
    freeze_condition : bool, default=False
        Keep ``V`` (and ``U``) fixed: only the LoRA factors train.
    description_column : str, default="description"
        The text column of ``X``.
    text_encoder : {"lexical", "semantic"} or callable, default="lexical"
        How descriptions become vectors (:func:`qlsk.text.embed`): ``"lexical"`` a
        hashed bag of character n-grams, ``"semantic"`` a sentence encoder (MiniLM,
        shipped in the ``text`` extra); a callable maps a string to a 1-d array. The
        default was chosen on the development families, where the sentence encoder gave
        this estimator (FiLM) the same zero-shot error (1.00x) and 1.46x on reworded
        descriptions (``docs/multitask.md``, "Which text encoder").
    rank : int, default=4
        Rank of the LoRA factors on every linear layer.
    alpha : float, default=16.0
        LoRA scale numerator (the update is scaled by ``alpha / rank``).
    regularization : {"auto", "fixed", "evidence", "cv"}, default="auto"
        ``"fixed"``: mini-batch AdamW for ``max_epochs`` (``weight_decay``,
        ``max_epochs``, ``batch_size`` and the early-stopping settings apply to it
        only; ``callbacks`` need it). ``"evidence"`` (or ``"cv"``): the adapting
        estimators' regime (see :class:`~qlsk.LoraRegressor`): full-batch training
        along a path of L2 strengths toward the starting weights (the base, or
        ``init``'s model), the strength and the noise chosen by the linearised-Laplace
        evidence (or 5-fold CV), and ``predict(X, return_std=True)``. ``"auto"``:
        ``"evidence"`` when adapting from ``init`` (few-shot, as
        :class:`~qlsk.FewShotRegressor`), ``"fixed"`` for the multi-task fit from a
        base. Chosen on the development families, where the evidence was 0.80-0.89x
        the fixed recipe's few-shot error at n = 10-50 (0.94-0.99x on the report
        families); for the multi-task fit the evidence was 1.39x the fixed recipe's
        zero-shot error there (its path stops among the strongest strengths, where
        the evidence is flat; ``docs/multitask.md``).
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
        L-BFGS, the single-task adapters' default, fitted few-shot in a quarter of
        the time at 1.008-1.010x the error (``docs/multitask.md``), and accuracy
        comes first. ``"lbfgs"`` is the faster choice (with it, ``lr`` leaves
        :func:`~qlsk.tuning.tune`'s default search space).
    lr : float or None, default=None
        The learning rate (``None``: 1e-3 for ``"fixed"``'s AdamW; on the full-batch
        path 3e-3 with Adam, 1 with L-BFGS).
    weight_decay : float, default=0.0
        AdamW weight decay.
    max_epochs : int, default=150
        Passes over the training rows.
    batch_size : int, default=32
        Rows per step; every batch holds the rows of one task.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows and stop after ``patience`` epochs
        without improvement, keeping the best weights.
    validation_fraction : float, default=0.1
    patience : int, default=20
    device : {"cpu", "cuda", "auto"}, default="cpu"
    random_state : int, RandomState or None, default=None
        The same value gives the same predictions on the same machine.
    verbose : int, default=0
        ``1`` shows a progress bar over epochs.
    callbacks : list of skorch callbacks or None, default=None

    Attributes
    ----------
    net_ : skorch.NeuralNetRegressor
        The trained net; ``net_.module_`` is the
        :class:`~qlsk.adapters.conditioning.DescriptionInput` module.
    feature_columns_ : list of str
        The numeric input columns, in order.
    descriptions_ : list of str
        The distinct descriptions seen in ``fit``.
    embedding_dim_ : int
        Length of the description embeddings.
    n_trainable_params_ : int
        LoRA factors plus ``V`` (and ``U``).
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss`` (and ``valid_loss``), ``dur``; under
        ``"evidence"`` or ``"cv"``, one entry per strength of the path.
    l2_strength_, noise_std_, regularization_path_
        Under ``"evidence"`` or ``"cv"``: the chosen strength, the learned noise in
        the targets' units, and every strength tried (as for
        :class:`~qlsk.LoraRegressor`).

    See Also
    --------
    SharedMemoryRegressor : the description as a prior over shared update atoms.

    Examples
    --------
    >>> from qlsk import ConditionedLoraRegressor, MLPRegressor
    >>> from qlsk.simlib import load_family
    >>> fam = load_family("ishigami-ab", n_per_member=20, n_test=5, n_source=200,
    ...                   random_state=0)
    >>> base = MLPRegressor((16, 16), max_epochs=3, random_state=0).fit(
    ...     fam.X_source, fam.y_source)
    >>> model = ConditionedLoraRegressor(base=base, text_encoder="lexical", max_epochs=2,
    ...                                  random_state=0).fit(fam.X_train, fam.y_train)
    >>> model.predict(fam.X_heldout[:3]).shape
    (3,)
    """

    def __init__(self, base=None, *, init=None, condition="film", freeze_condition=False,
                 description_column="description", text_encoder="lexical", rank=4,
                 alpha=16.0, regularization="auto", l2_strengths=None, max_steps=2000,
                 tol=1e-4, optimizer="adam", lr=None, weight_decay=0.0, max_epochs=150,
                 batch_size=32, early_stopping=False, validation_fraction=0.1, patience=20,
                 device="cpu", random_state=None, verbose=0, callbacks=None):
        self.base = base
        self.init = init
        self.condition = condition
        self.freeze_condition = freeze_condition
        self.description_column = description_column
        self.text_encoder = text_encoder
        self.rank = rank
        self.alpha = alpha
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

    _shared = ("base", "init")  # fitted objects: clones share them
    regularization = "fixed"  # what a model pickled before the parameter existed used
    condition = "shift"  # what a model pickled before the parameter existed was built with

    _parameter_constraints = {
        **BaseNeuralRegressor._parameter_constraints,
        **RegularizedAdapter._regularization_constraints,
        "regularization": [StrOptions({"auto", "fixed", "evidence", "cv"})],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "base": "no_validation",  # a fitted estimator, module, path: bases.base_module
        "init": "no_validation",
        "condition": [StrOptions({"shift", "film"})],
        "freeze_condition": ["boolean"],
        "description_column": [str],
        "text_encoder": [StrOptions({"lexical", "semantic"}), callable],
        "rank": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="neither")],
    }

    def _check_params(self):
        super()._check_params()
        if self.init is not None:
            if not isinstance(self.init, ConditionedLoraRegressor):
                raise TypeError(f"init must be a fitted ConditionedLoraRegressor, got "
                                f"{type(self.init).__name__}")
            check_is_fitted(self.init, "net_")
        elif self.base is None:
            raise ValueError("ConditionedLoraRegressor needs a fitted base (base=...) or a "
                             "fitted model to start from (init=...)")
        else:
            base_module(self.base)

    def _regime(self) -> str:
        if self.regularization == "auto":
            return "fixed" if self.init is None else "evidence"
        return self.regularization

    def _check_columns(self, columns) -> None:
        if self.init is not None and list(columns) != list(self.init.feature_columns_):
            expected = list(self.init.feature_columns_)
            raise ValueError(f"X has input column(s) {list(columns)}, but init was fitted on "
                             f"{expected}; every task must have the same inputs, in the "
                             "same order")

    def _text_settings(self):
        if self.init is not None:
            return self.init._text_settings()
        return self.description_column, self.text_encoder

    def _fresh_module(self, n_outputs: int) -> DescriptionInput:
        """The untrained module: LoRA on a copy of the base, and ``V = 0``."""
        network = copy.deepcopy(base_module(self.base)).cpu().float()
        check_fits(network, len(self.feature_columns_), n_outputs)
        adapted = inject(network, "lora", rank=int(self.rank), alpha=self.alpha)
        return DescriptionInput(adapted, self.embedding_dim_, len(self.feature_columns_),
                                film=self.condition == "film")

    def _build_module(self, Z, y, seed):
        if self.init is not None:
            module = copy.deepcopy(self.init.module_).cpu().float()
            scale = self.init.net_.criterion_.scale.clone().cpu()
        else:
            check_feature_names(list(self.feature_columns_), self.base)
            module = self._fresh_module(y.shape[1])
            scale = _loss_scale(module, y)
        module.condition.requires_grad_(not self.freeze_condition)
        if module.film:
            module.condition_scale.requires_grad_(not self.freeze_condition)
        return module, scale


def _loss_scale(module: DescriptionInput, y) -> torch.Tensor:
    """The base MLP's target scale; for a custom torch base, that of the targets."""
    mlp = module.adapted.base_model
    if hasattr(mlp, "y_scale"):
        return mlp.y_scale.clone()
    return torch.as_tensor(_safe_std(y), dtype=torch.float32)


def _dump(estimator: ConditionedLoraRegressor) -> tuple[dict, dict]:
    """What :func:`qlsk.save` keeps besides the parameters and the base: the fitted
    columns, descriptions, the whole module's weights and, under the evidence, its
    posterior."""
    check_is_fitted(estimator, "net_")
    if estimator.init is not None:
        raise TypeError("save() keeps a ConditionedLoraRegressor fitted from a base; one "
                        "fitted from init=... needs pickle")
    return dump_network(estimator)


def _restore(estimator: ConditionedLoraRegressor, meta: dict, tensors: dict,
             device: str = "cpu") -> None:
    scale = restore_described(estimator, meta)
    if "condition_scale.weight" not in tensors and estimator.condition == "film":
        # a file saved before ``condition`` existed holds a shift-only model
        estimator.set_params(condition="shift")
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten
        module = estimator._fresh_module(meta["n_outputs_"])
    restore_network(estimator, module, meta, tensors, scale, device, "the base")


storable(ConditionedLoraRegressor, dump=_dump, restore=_restore, key="conditioned")

"""One atom memory for many described tasks: :class:`SharedMemoryRegressor`.

``X`` is a pandas DataFrame with a description column (see :mod:`._described`);
:class:`~qlsk.FewShotRegressor` (in ``fewshot.py``) adapts a fitted one to new tasks.
"""

from __future__ import annotations

import copy
import os
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..adapters import inject
from ..adapters.anchor import StageAnchor
from ..adapters.balance import RoutingBalance
from ..adapters.channels import DescriptionChannels, parse_channels
from ..adapters.config import QueryableLoraConfig
from ..adapters.prior_map import (
    PriorMap,
    SharedMemoryModel,
    grow_memory,
    load_memory_state,
    read_memory,
)
from ..nn import _safe_std
from ._base import _FITTED
from ._described import (  # noqa: F401  (_TaskNet: old pickles name it here)
    _DESCRIBED_FITTED,
    _DescribedRegressor,
    _MemoryViews,
    _Packed,
    _TaskNet,
    dump_described,
    restore_described,
)
from .bases import base_module, check_feature_names, check_fits
from .callbacks import _KeepAtoms
from .registry import storable
from .regressors import QueryableLoraRegressor, _AdaptingRegressor, adapter_options
from .replay import keep_rows, with_replay

# The adapter options documented as QueryableLoraRegressor's (text_encoder and
# prior_temperature, also options, are documented here for the prior map; the docstring's
# entries for these options must read as parameter_docs renders them, which
# tests/estimators/test_docstrings.py checks), and the defaults of this estimator that differ from
# QueryableLoraConfig's on purpose: a smaller memory and one routing decision per layer.
_SHARED_OPTIONS = ("rank", "alpha", "n_atoms", "top_k", "block_size", "temperature",
                   "routing_noise", "prior_strength", "query", "freeze_atoms")
_SHARED_DEFAULTS = {"rank": 4, "n_atoms": 8, "block_size": 1}


class SharedMemoryRegressor(_MemoryViews, _DescribedRegressor, _AdaptingRegressor):
    """Queryable LoRA with one atom memory shared by many described tasks.

    ``fit`` takes a DataFrame whose numeric columns are the inputs and whose text
    column ``description_column`` holds each row's task description. One adapter (LoRA
    factors, the memory of atoms and its router) is trained on every task, each
    mini-batch drawn from one task and routed with that task's prior over atoms,
    ``log pi(c) = log_softmax(P e(c) / prior_temperature)``, where ``e(c)`` embeds the
    description. ``predict`` routes every row with its own description's prior, so a
    description never seen in ``fit`` predicts a new task zero-shot.

    Parameters
    ----------
    base : qlsk.MLPRegressor, FrozenEstimator, torch.nn.Module, path or None, default=None
        The pretrained network to adapt; it is copied and never modified, and
        ``clone`` (hence every search and refit) shares it rather than re-fitting it.
        ``None``: ``fit`` first pretrains an MLP (``hidden_layer_sizes``) on the data
        it is given, then adapts that, so ``fit(X, y)`` works alone. A plain torch
        module must map raw inputs to outputs of shape (n_samples, n_outputs); its
        loss is scaled by the standard deviation of the training targets.
    description_column : str, default="description"
        The column of ``X`` holding the task descriptions (non-empty strings).
    text_encoder : {"lexical", "semantic"} or callable, default="lexical"
        How descriptions are embedded (see :mod:`qlsk.text`). On the development
        families the sentence encoder (``"semantic"``) gave this memory 1.04x the
        lexical encoder's zero-shot error and 1.36x on reworded descriptions
        (``docs/multitask.md``, "Which text encoder").
    prior_map : {"learned", "fixed"}, default="learned"
        ``"fixed"``: ``P`` is the seeded projection of
        :func:`qlsk.adapters.instruction_prior`. ``"learned"``: ``P`` starts there and
        is trained with the adapter.
    channels : str, default="prior+shift+scale"
        Where the description enters, ``"+"``-joined: ``"prior"`` (the method's prior
        over atoms), ``"query"`` (it rescales every block's query, so it changes how
        the rows' state chooses atoms), ``"shift"`` and ``"scale"`` (a learned shift
        and scale of the first adapted layer's output, a FiLM layer: the description
        as an input, beside the routing). ``"prior"`` alone is the method as
        published. Every added map starts at zero, so training starts from the prior
        alone; without ``"prior"`` the prior map is not used. The default was chosen
        on the development families (zero-shot error 1.71x lower than ``"prior"``
        alone); see :mod:`qlsk.adapters.channels` and ``docs/multitask.md``.
    rank : int, default=4
        Rank of every update (the atoms of Queryable LoRA are ``rank x rank``).
    alpha : float, default=16.0
        The update is scaled by ``alpha / rank``; must be > 0 (0 would leave the adapter
        inert).
    n_atoms : int, default=8
        Atoms in the shared memory.
    top_k : int, default=2
        Atoms combined per row and block; at most ``n_atoms``.
    block_size : int, default=1
        Consecutive adapted layers that share one routing decision.
    temperature : float, default=1.0
        Softmax temperature over the kept routing logits.
    routing_noise : float, default=0.0
        Standard deviation of Gaussian noise added to the routing logits while training
        (noisy top-k gating); a routing regulariser, off by default (``docs/method.md``,
        "Ablations").
    prior_strength : float, default=1.0
        Weight ``lambda`` of the instruction prior; 0 ignores the description.
    prior_temperature : float, default=0.5
        ``tau_pi`` of the prior map.
    load_balance : float, default=0.0
        Weight of a load-balancing term across tasks in the training loss (the Switch
        Transformer's, against a running mean of the atoms' usage; see
        :mod:`qlsk.adapters.balance`): it moves each task's routing toward the atoms
        the other tasks use least, against a memory that routes every task through
        the same few atoms. ``0``: off (measured in ``docs/multitask.md``). A warm
        stage takes the value set when it starts, and its running usage starts even.
    description_dropout : float, default=0.0
        While training, the probability that a task's batch runs without its
        description (no prior, every channel unchanged, as ``predict(...,
        use_description=False)`` runs it): the shared adapter then learns what the
        tasks share, and the description what sets a task apart. ``0``: off (measured
        in ``docs/multitask.md``).
    query : {"state+depth", "state", "detached", "constant", "random"}, default="state+depth"
        Where the routing query comes from (ablations, ``docs/method.md``): the block's
        low-rank state plus the depth summary of earlier blocks (the method); the state
        alone; the method's query with no gradient into ``A`` through it; a learned
        constant per block (the same route for every row); a fixed random projection of
        the input (routing never trains).
    freeze_atoms : bool, default=False
        Fix every atom at the identity: the update is then plain LoRA whatever the
        routing (an ablation).
    memory : str, os.PathLike or None, default=None
        A memory written by :meth:`save_memory` to start from (its rank, atom count,
        number of blocks, embedding length and named text encoder must match; rank,
        atom count and encoder are checked before any training); ``None``: a new memory.
    freeze_memory : bool, default=False
        Keep the memory (atoms, router and prior map) as it starts; the LoRA factors
        and the description channels other than the prior train.
    target_modules : None, str, list of str or callable, default=None
        Layers to adapt, in forward order (see :func:`qlsk.adapters.inject`).
    warm_start : bool, default=False
        Continual stages: a ``fit`` on a fitted model continues from its adapter
        (LoRA factors, memory, prior map, base) on the new rows, and appends a stage to
        ``stages_``; ``False``: every fit starts anew.
    grow_atoms : int, default=0
        In a warm-started stage, add this many atoms (starting at ``I``, with new keys
        and prior-map rows) before training. It applies at every warm stage while it is
        set (set it back to 0 to stop growing); ``n_atoms`` keeps the first stage's
        count and ``n_atoms_`` is the memory's count now.
    freeze_previous_atoms : bool, default=False
        In a warm-started stage, keep the atoms of earlier stages as they were; new
        atoms, the router and the LoRA factors still train.
    replay_rows : int, default=0
        In a warm-started stage, also train on this many rows (with their targets) of
        every task of the earlier stages, from the rows each stage keeps (``kept_rows``;
        experience replay, against forgetting; see :mod:`qlsk.estimators.replay`).
        ``0``: only the new rows. At most ``kept_rows``; a stage that kept fewer rows of
        a task (a smaller task, an older model that kept 32) replays the rows it kept.
    stage_anchor : float, default=3.0
        In a warm-started stage, add to the loss the squared distance of the earlier
        tasks' predictions from the last stage's, on the rows each earlier task kept
        (``kept_rows``; distillation, against forgetting; see :mod:`qlsk.adapters.anchor`),
        times ``stage_anchor``. At ``1`` each earlier task weighs as much as a new one;
        a task the stage trains again is not anchored. ``0``: none. Chosen on the
        development families: with 100 kept rows, 3 and 10 leave the earlier tasks the
        same error after the last stage (1.00x, 95% CI 0.97-1.03) and 3 the new tasks
        0.91x (0.86-0.96) the error, so 3 (with 32 kept rows 10 had been chosen; 30 and
        100 did no better). Training only: the first fit and the fitted model do not
        use it; a stage's ``train_loss`` in ``history_`` includes it.
    kept_rows : int, default=100
        Rows per task every stage keeps, with their targets: the first ``kept_rows`` of
        each task in ``X``. The stage anchor holds the earlier tasks' predictions on
        them, replay draws from them and :meth:`route_drift` rescores them; ``stages_``
        (and a saved model) carries them. It applies from the first fit. Chosen on the
        development families, where 100 rows is every row of a task (so a gain from
        more than 100 rows of a larger task is not measured) and 100 instead of 32 lowered
        the forgetting under the anchor (at 10) from 1.10x to 0.97x; on the report
        families the defaults leave no forgetting (1.00x, 95% CI 0.95-1.05) and the
        earlier tasks 0.51x the error replay leaves them, at about the same time per
        stage as 32 rows (``docs/multitask.md``).
    hidden_layer_sizes : int or tuple of int, default=(64, 64, 64)
        The MLP pretrained when ``base`` is None. That pretraining also uses this
        estimator's ``lr``, ``weight_decay``, ``max_epochs``, ``batch_size`` and
        early-stopping settings.
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=0.0
        AdamW weight decay.
    max_epochs : int, default=150
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
        The base that was adapted (with ``base=None``, an MLP pretrained on every row,
        blind to the task).
    stages_ : list of dict
        One entry per stage (one without ``warm_start``): ``descriptions`` trained in
        it, ``n_atoms`` after it, ``atom_usage`` (description -> mean routing weights,
        ``(n_blocks, n_atoms)``, at the end of the stage), ``probe`` (the first
        ``kept_rows`` of the stage's rows per task, for :meth:`route_drift`, replay and
        the stage anchor) and ``probe_y`` (their targets, 2-D).
    n_atoms_ : int
        The memory's atom count after the last stage: ``n_atoms`` plus every
        ``grow_atoms`` since. A memory saved from this model (:meth:`save_memory`) is
        reused with ``n_atoms=n_atoms_``.
    feature_columns_ : list of str
        The numeric input columns.
    descriptions_ : list of str
        The distinct task descriptions seen in ``fit``.
    embedding_dim_ : int
        Length of the description embeddings.
    shared_model_ : qlsk.adapters.prior_map.SharedMemoryModel
        The adapted network with its prior map.
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
    >>> from qlsk.estimators.multitask import SharedMemoryRegressor
    >>> from qlsk.simlib import load_family
    >>> fam = load_family("ishigami-ab", n_per_member=20, n_test=5, n_source=200,
    ...                   random_state=0)
    >>> base = MLPRegressor((16, 16), max_epochs=3, random_state=0).fit(
    ...     fam.X_source, fam.y_source)
    >>> model = SharedMemoryRegressor(base=base, max_epochs=2, random_state=0)
    >>> model.fit(fam.X_train, fam.y_train).predict(fam.X_heldout[:3]).shape
    (3,)
    """

    # Adapter options are QueryableLoraConfig's, with its defaults but those in
    # _SHARED_DEFAULTS (rank=4, n_atoms=8, block_size=1, kept from before the config).
    # No task_description (each row's comes from X), dropout or key_dim.
    def __init__(self, base=None, *, description_column="description", text_encoder="lexical",
                 prior_map="learned", channels="prior+shift+scale", rank=4, alpha=16.0,
                 n_atoms=8, top_k=2,
                 block_size=1, temperature=1.0, routing_noise=0.0, prior_strength=1.0,
                 prior_temperature=0.5, load_balance=0.0, description_dropout=0.0,
                 query="state+depth",
                 freeze_atoms=False, memory=None,
                 freeze_memory=False, target_modules=None, warm_start=False, grow_atoms=0,
                 freeze_previous_atoms=False, replay_rows=0, stage_anchor=3.0,
                 kept_rows=100, hidden_layer_sizes=(64, 64, 64),
                 lr=1e-3, weight_decay=0.0, max_epochs=150, batch_size=32,
                 early_stopping=False, validation_fraction=0.1, patience=20, device="cpu",
                 random_state=None, verbose=0, callbacks=None):
        super().__init__(
            base=base, hidden_layer_sizes=hidden_layer_sizes, lr=lr, weight_decay=weight_decay,
            max_epochs=max_epochs, batch_size=batch_size, early_stopping=early_stopping,
            validation_fraction=validation_fraction, patience=patience, device=device,
            random_state=random_state, verbose=verbose, callbacks=callbacks)
        self.description_column = description_column
        self.text_encoder = text_encoder
        self.prior_map = prior_map
        self.channels = channels
        self.rank = rank
        self.alpha = alpha
        self.n_atoms = n_atoms
        self.top_k = top_k
        self.block_size = block_size
        self.temperature = temperature
        self.routing_noise = routing_noise
        self.prior_strength = prior_strength
        self.prior_temperature = prior_temperature
        self.load_balance = load_balance
        self.description_dropout = description_dropout
        self.query = query
        self.freeze_atoms = freeze_atoms
        self.memory = memory
        self.freeze_memory = freeze_memory
        self.target_modules = target_modules
        self.warm_start = warm_start
        self.grow_atoms = grow_atoms
        self.freeze_previous_atoms = freeze_previous_atoms
        self.replay_rows = replay_rows
        self.stage_anchor = stage_anchor
        self.kept_rows = kept_rows

    # What a model pickled before these parameters existed was built with.
    channels = "prior"
    replay_rows = 0
    load_balance = 0.0
    description_dropout = 0.0
    # The anchor acts only in later stages: an old model's next stage anchors as a new
    # model's would, whether it comes back by pickle or by qlsk.load.
    stage_anchor = 3.0
    kept_rows = 100  # likewise: an old model's next stage keeps what a new one would

    _parameter_constraints = {
        **QueryableLoraRegressor._parameter_constraints,
        "description_column": [str],
        "prior_map": [StrOptions({"learned", "fixed"})],
        "channels": [str],
        "prior_temperature": [Interval(Real, 0, None, closed="neither")],
        "load_balance": [Interval(Real, 0, None, closed="left")],
        "description_dropout": [Interval(Real, 0, 1, closed="left")],
        "memory": [str, os.PathLike, None],
        "freeze_memory": ["boolean"],
        "warm_start": ["boolean"],
        "grow_atoms": [Interval(Integral, 0, None, closed="left")],
        "freeze_previous_atoms": ["boolean"],
        "replay_rows": [Interval(Integral, 0, None, closed="left")],
        "stage_anchor": [Interval(Real, 0, None, closed="left")],
        "kept_rows": [Interval(Integral, 1, None, closed="left")],
    }

    def fit(self, X, y):
        """Fit the shared adapter on every task of ``X``; with ``warm_start``, a new stage.

        Parameters
        ----------
        X : pandas.DataFrame
            Numeric input columns and the text column ``description_column``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For the problems listed in ``docs/multitask.md`` (a missing or empty
            description, inputs that differ between tasks or from the base, a memory of
            another shape, ...). A failed first fit leaves the estimator unfitted; a
            failed later stage (``warm_start``) leaves the earlier stages as they were.
            Also for ``replay_rows`` above ``kept_rows``.
        """
        previous = self._previous_stage()
        if previous is None:  # a fresh fit: refused parameters leave it unfitted
            self._forget()
        self._validate_params()  # before replay draws from the kept rows
        if self.replay_rows > self.kept_rows:
            raise ValueError(f"replay_rows={self.replay_rows} is more than the "
                             f"kept_rows={self.kept_rows} rows each stage keeps per task")
        kept = {name: self.__dict__[name] for name in (*_FITTED, *_DESCRIBED_FITTED)
                if previous is not None and name in self.__dict__}
        self._previous = previous
        if previous is not None:
            previous["rows"] = X  # this stage's own rows, before any replay
        X_fit, y_fit = X, y
        if previous is not None and self.replay_rows:
            X_fit, y_fit = with_replay(X, y, previous["stages_"], self.description_column,
                                       self.replay_rows)
        try:
            super().fit(X_fit, y_fit)
        except BaseException:
            self.__dict__.update(kept)  # a failed stage leaves the earlier stages intact
            raise
        finally:
            del self._previous
        self.net_.module_.model.set_anchor(None)  # a stage's training term, not kept
        self._record_stage(X, y, previous)
        return self

    def _previous_stage(self) -> dict | None:
        if not (self.warm_start and hasattr(self, "net_")):
            return None
        return {"module": self.net_.module_, "base_": self.base_, "stages_": self.stages_,
                "descriptions_": self.descriptions_, "scale": self.net_.criterion_.scale,
                "feature_columns_": self.feature_columns_,
                "embedding_dim_": self.embedding_dim_}

    def _record_stage(self, X, y, previous) -> None:
        usage = self.atom_usage(X)  # (n_blocks, n, M)
        described = X[self.description_column].to_numpy()
        probe, probe_y = keep_rows(X, y, self.description_column, self.kept_rows)
        stage = {"descriptions": sorted(set(described)), "n_atoms": usage.shape[2],
                 "atom_usage": {}, "probe": probe, "probe_y": probe_y}
        for text in stage["descriptions"]:
            stage["atom_usage"][text] = usage[:, described == text].mean(axis=1)
        if previous is not None:
            self.descriptions_ = sorted(set(previous["descriptions_"]) | set(described))
        self.stages_ = [*(previous["stages_"] if previous else []), stage]
        self.n_atoms_ = stage["n_atoms"]

    def route_drift(self):
        """How far every stage's tasks have moved in atom usage since their stage.

        Returns
        -------
        pandas.DataFrame
            One row per stage and description: ``stage``, ``description`` and
            ``drift``, the total-variation distance between the task's atom usage at
            the end of its stage and now, on the same probe rows, averaged over blocks
            (0: the same atoms, 1: disjoint ones). Atoms added later count as unused
            at the earlier stage.
        """
        import pandas as pd

        check_is_fitted(self, "net_")
        rows = []
        for index, stage in enumerate(self.stages_):
            now = self.atom_usage(stage["probe"])
            described = stage["probe"][self.description_column].to_numpy()
            for text, then in stage["atom_usage"].items():
                current = now[:, described == text].mean(axis=1)
                then = np.pad(then, ((0, 0), (0, current.shape[1] - then.shape[1])))
                drift = 0.5 * np.abs(current - then).sum(axis=1).mean()
                rows.append({"stage": index, "description": text, "drift": float(drift)})
        return pd.DataFrame(rows)

    def _stage_callbacks(self) -> list:
        previous = getattr(self, "_previous", None)
        if previous is None or not self.freeze_previous_atoms:
            return []
        return [("keep_previous_atoms", _KeepAtoms(previous["module"].model.memory.n_atoms))]

    def _check_columns(self, columns) -> None:
        previous = getattr(self, "_previous", None)
        if previous is not None and list(columns) != list(previous["feature_columns_"]):
            raise ValueError(f"X has input columns {list(columns)}, but the earlier stages "
                             f"were fitted on {list(previous['feature_columns_'])}; every "
                             "stage must have the same inputs, in the same order")

    def _check_params(self):
        super()._check_params()
        self._config_class(**self._adapter_config())  # what the constraints cannot see
        if "query" in parse_channels(self.channels) and self.query in ("constant", "random"):
            raise ValueError(f"channels={self.channels!r} rescales the memory's queries, and "
                             f"query={self.query!r} has none; use query='state+depth', "
                             "'state' or 'detached', or drop the 'query' channel")
        if self.memory is not None:  # a missing, foreign or unfitting file fails before
            self._check_memory_file()  # pretraining

    def _check_memory_file(self):
        """Refuse a memory of another rank, atom count or text encoder than these
        parameters, naming the saved values (the block count, which depends on the base,
        is checked when the memory is loaded)."""
        meta, _ = read_memory(self.memory)
        config, encoder = meta.get("config", {}), meta.get("text_encoder")
        differ = [f"{k}={config[k]!r} (this estimator: {getattr(self, k)!r})"
                  for k in ("rank", "n_atoms") if k in config and config[k] != getattr(self, k)]
        if isinstance(encoder, str) and isinstance(self.text_encoder, str) and (
                encoder != self.text_encoder):
            differ.append(f"text_encoder={encoder!r} (this estimator: {self.text_encoder!r})")
        if differ:
            raise ValueError(f"memory {os.fspath(self.memory)} does not fit this estimator: it "
                             f"was saved with {', '.join(differ)}; set these parameters to "
                             "the saved values")

    def _text_settings(self):
        return self.description_column, self.text_encoder

    _config_class = QueryableLoraConfig

    def _adapter_config(self) -> dict:
        """The adapter options this estimator takes, from the parameters of the same name
        (the prior comes from the prior map, not from ``task_description``)."""
        return adapter_options(self, self._config_class)

    def _build_module(self, Z, y, seed):
        previous = getattr(self, "_previous", None)
        if previous is not None:
            return self._continue(previous)
        d = len(self.feature_columns_)
        X = Z[:, :d]
        if self.base is not None:
            check_feature_names(list(self.feature_columns_), self.base)
        self.base_ = self._pretrain(X, y, seed) if self.base is None else self.base
        module = copy.deepcopy(base_module(self.base_)).cpu().float()
        check_fits(module, d, y.shape[1])
        scale = getattr(module, "y_scale", None)
        scale = scale.clone() if scale is not None else torch.as_tensor(
            _safe_std(y), dtype=torch.float32)
        adapted = inject(module, "queryable", self.target_modules, **self._adapter_config())
        shared = self._shared_model(adapted, self.embedding_dim_, self.n_atoms)
        if self.memory is not None:
            load_memory_state(shared, *read_memory(self.memory))
        if self.freeze_memory:  # the channels are not in a memory file: they train
            shared.freeze_memory(channels=False)
        return _Packed(shared, d), scale

    def _shared_model(self, adapted, embedding_dim: int, n_atoms: int) -> SharedMemoryModel:
        """The adapted network with its prior map and description channels."""
        prior = PriorMap(embedding_dim, n_atoms, self.prior_temperature,
                         learned=self.prior_map == "learned")
        channels = None  # the prior alone: the method as published
        if parse_channels(self.channels) != ("prior",):
            channels = DescriptionChannels(self.channels, embedding_dim,
                                           adapted.memory.key_dim,
                                           adapted.adapted_layers[0].out_features)
        return SharedMemoryModel(adapted, prior, channels, self._balance(adapted.memory),
                                 self.description_dropout)

    def _balance(self, memory) -> RoutingBalance | None:
        """The load-balancing term of ``load_balance`` for ``memory``, or ``None``."""
        if not self.load_balance > 0:
            return None
        return RoutingBalance(self.load_balance, memory.n_blocks, memory.n_atoms)

    def _continue(self, previous):
        """The module of a warm-started stage: the last stage's, grown if asked."""
        if self.embedding_dim_ != previous["embedding_dim_"]:
            raise ValueError(f"the text encoder gives embeddings of length "
                             f"{self.embedding_dim_}, the earlier stages "
                             f"{previous['embedding_dim_']}")
        self.base_ = previous["base_"]
        module = copy.deepcopy(previous["module"])
        scale = previous["scale"].clone()
        module.model.set_balance(None)  # this stage's, below
        if self.stage_anchor > 0:  # the last stage's predictions, before any atom is grown
            module.model.set_anchor(self._anchor(module, scale, previous))
        grow_memory(module.model, self.grow_atoms)
        module.model.set_balance(self._balance(module.model.memory))
        module.model.description_dropout = float(self.description_dropout)
        if self.freeze_memory:
            module.model.freeze_memory(channels=False)
        return module, scale

    def _anchor(self, module, scale, previous) -> StageAnchor | None:
        """The :class:`~qlsk.adapters.anchor.StageAnchor` of ``stage_anchor`` at the
        weights ``module`` starts this stage with, on the kept rows of the earlier tasks
        this stage does not train again (``None`` if it trains them all)."""
        column = self.description_column
        new = set(previous["rows"][column])
        kept, seen = [], set(new)
        for stage in reversed(previous["stages_"]):  # a task's rows from its latest stage
            probe = stage["probe"]
            kept.append(probe[~probe[column].isin(seen)])
            seen |= set(probe[column])
        probe = pd.concat(kept[::-1], ignore_index=True)
        if probe.empty:
            return None
        rows = torch.as_tensor(self._pack(probe, reset=False))
        return StageAnchor(module, rows, scale, self.stage_anchor,
                           weight=probe[column].nunique() / len(new))


# ---- qlsk.save / qlsk.load ----------------------------------------------------------

def _dump(estimator: SharedMemoryRegressor) -> tuple[dict, dict]:
    """What :func:`qlsk.save` keeps besides the parameters and the base: the network's
    architecture, the adapted layers, the memory's size, every stage's record (its
    probe rows included, for :meth:`SharedMemoryRegressor.route_drift`) and all weights
    (base, LoRA factors, memory, router and prior map)."""
    check_is_fitted(estimator, "net_")
    shared = estimator.shared_model_
    mlp = shared.adapted.base_model
    if not hasattr(mlp, "spec"):
        raise TypeError("save() keeps a SharedMemoryRegressor adapted from a qlsk MLP; this "
                        "one has a custom torch base, so use pickle")
    names = {id(m): n for n, m in mlp.named_modules()}
    column = estimator.description_column
    stages = [{"descriptions": stage["descriptions"], "n_atoms": int(stage["n_atoms"]),
               "atom_usage": {text: np.asarray(usage).tolist()
                              for text, usage in stage["atom_usage"].items()},
               "probe": {"inputs": stage["probe"][estimator.feature_columns_]
                         .to_numpy(dtype=float).tolist(),
                         "descriptions": stage["probe"][column].astype(str).tolist(),
                         "targets": np.asarray(stage["probe_y"]).tolist()}}
              for stage in estimator.stages_]
    meta = {**dump_described(estimator), "mlp": mlp.spec(),
            "layers": [names[id(m)] for m in shared.adapted.adapted_layers],
            "n_atoms_": int(estimator.n_atoms_), "stages_": stages}
    return meta, dict(estimator.net_.module_.state_dict())


def _restore(estimator: SharedMemoryRegressor, meta: dict, tensors: dict,
             device: str = "cpu") -> None:
    import pandas as pd

    from ..nn import MLP

    scale = restore_described(estimator, meta)
    estimator.n_atoms_ = meta["n_atoms_"]
    if not any(k.startswith("model.channels.") for k in tensors):
        # a file saved before the channels existed holds the prior alone
        estimator.set_params(channels="prior")
    config = {**estimator._adapter_config(), "n_atoms": meta["n_atoms_"]}
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten
        adapted = inject(MLP(**meta["mlp"]), "queryable", meta["layers"], **config)
        shared = estimator._shared_model(adapted, meta["embedding_dim_"], meta["n_atoms_"])
    if estimator.freeze_memory:  # as fit left it: what trains decides a few-shot copy's
        shared.freeze_memory(channels=False)
    module = _Packed(shared, len(meta["feature_columns_"]))
    try:
        module.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ValueError(f"the saved weights do not fit the saved architecture: {exc}") \
            from None
    estimator.net_ = estimator._make_net(module, scale, 2, 0, device)
    estimator.net_.initialize()
    column = estimator.description_column
    estimator.stages_ = [
        {"descriptions": stage["descriptions"], "n_atoms": stage["n_atoms"],
         "atom_usage": {text: np.asarray(usage) for text, usage in
                        stage["atom_usage"].items()},
         "probe": pd.DataFrame(stage["probe"]["inputs"], columns=meta["feature_columns_"])
         .assign(**{column: stage["probe"]["descriptions"]}),
         # files saved before replay kept no targets
         "probe_y": (None if stage["probe"].get("targets") is None
                     else np.asarray(stage["probe"]["targets"], dtype=np.float64))}
        for stage in meta["stages_"]]
    estimator.base_ = estimator.base  # a base that was pretrained in fit is not kept


storable(SharedMemoryRegressor, dump=_dump, restore=_restore, key="shared")

"""One atom memory for many described tasks: a map from descriptions to priors over atoms.

:class:`PriorMap` turns a description's embedding ``e(c)`` into ``log pi(c) =
log_softmax(P e(c) / tau_pi)``. With ``learned=False`` it is exactly the fixed, seeded
projection of :func:`~qlsk.adapters.queryable.instruction_prior`; with ``learned=True``
``P`` starts there and is trained with the adapter, so that descriptions which call for
the same update learn to ask for the same atoms. :class:`SharedMemoryModel` runs an
adapted network on rows of several tasks, setting the memory's prior (and any other
description channels, :mod:`qlsk.adapters.channels`) per task, and :func:`save_memory` /
:func:`load_memory` move the memory (atoms, router, prior map) alone between models.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..files import write_safetensors
from .anchor import StageAnchor
from .balance import RoutingBalance
from .channels import DescriptionChannels
from .inject import AdaptedModel
from .queryable import PRIOR_SEED

MEMORY_FORMAT = "qlsk-memory-1"
# What must agree between a saved memory and the model it is loaded into.
SHAPE_KEYS = ("rank", "n_atoms", "n_blocks", "key_dim", "embedding_dim")


def seeded_projection(n_atoms: int, embedding_dim: int, seed: int = PRIOR_SEED) -> np.ndarray:
    """The fixed projection ``P`` of :func:`~qlsk.adapters.queryable.instruction_prior`.

    Returns
    -------
    ndarray of shape (n_atoms, embedding_dim)
    """
    return np.random.default_rng(seed).standard_normal((n_atoms, embedding_dim))


class PriorMap(nn.Module):
    """``e -> log_softmax(P e / temperature)`` for unit-normalised embeddings ``e``.

    Parameters
    ----------
    embedding_dim : int
        Length of the description embeddings.
    n_atoms : int
        ``M``.
    temperature : float
        ``tau_pi``.
    learned : bool
        Train ``P`` (a parameter) or keep the seeded projection (a buffer).
    seed : int
        Seed of the initial projection.

    Attributes
    ----------
    weight : torch.Tensor of shape (n_atoms, embedding_dim)
        ``P``.
    """

    def __init__(self, embedding_dim: int, n_atoms: int, temperature: float = 0.5,
                 learned: bool = True, seed: int = PRIOR_SEED):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"prior temperature must be > 0, got {temperature!r}")
        weight = torch.as_tensor(seeded_projection(n_atoms, embedding_dim, seed),
                                 dtype=torch.float32)
        if learned:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)
        self.temperature, self.learned = float(temperature), bool(learned)

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Log-prior over atoms, shape ``(..., n_atoms)``, for embeddings ``(..., d)``."""
        e = F.normalize(embedding, dim=-1)
        return torch.log_softmax(F.linear(e, self.weight) / self.temperature, dim=-1)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, n_atoms={self.weight.shape[0]}, "
                f"temperature={self.temperature:g}, learned={self.learned}")


class SharedMemoryModel(nn.Module):
    """An adapted network shared by many tasks, conditioned on each task's description.

    Parameters
    ----------
    adapted : AdaptedModel
        A network adapted with ``inject(..., "queryable")``.
    prior_map : PriorMap
        Maps a description embedding to the memory's log-prior.
    channels : DescriptionChannels or None
        Where the description enters (:mod:`qlsk.adapters.channels`); ``None``: the
        prior alone, the method as published. Without the ``"prior"`` channel the
        prior map is kept (and frozen) but not used.
    balance : RoutingBalance or None
        A load-balancing term across tasks (:mod:`qlsk.adapters.balance`), added to
        the training loss through :attr:`penalty`; ``None``: none.
    description_dropout : float
        In training mode, the probability that a task's pass runs without its
        description (as a row of zeros would: no prior, every channel unchanged), so
        that the shared adapter alone learns what the tasks share and the description
        what sets a task apart. Draws come from torch's global generator.

    Attributes
    ----------
    routing : torch.Tensor of shape (n_blocks, n_rows, n_atoms)
        After a forward pass, every row's routing weights, detached.
    """

    description_dropout = 0.0  # a class default: models built before it lack it

    def __init__(self, adapted: AdaptedModel, prior_map: PriorMap,
                 channels: DescriptionChannels | None = None,
                 balance: RoutingBalance | None = None, description_dropout: float = 0.0):
        super().__init__()
        if adapted.memory is None:
            raise TypeError("a shared memory needs method='queryable', not plain LoRA")
        if prior_map.weight.shape[0] != adapted.memory.n_atoms:
            raise ValueError(f"the prior map has {prior_map.weight.shape[0]} atoms, the "
                             f"memory {adapted.memory.n_atoms}")
        self.adapted, self.prior_map = adapted, prior_map
        if channels is not None:
            if "query" in channels.names and not hasattr(adapted.memory, "query_proj"):
                raise ValueError(f"the query channel rescales the memory's queries, and "
                                 f"{type(adapted.memory).__name__} has none (use "
                                 "query='state+depth', 'state' or 'detached')")
            channels.attach(adapted)
            if not channels.prior:
                prior_map.requires_grad_(False)
            self.channels = channels
        if not 0 <= description_dropout < 1:
            raise ValueError(f"description_dropout must be in [0, 1), got "
                             f"{description_dropout!r}")
        self.set_balance(balance)
        self.description_dropout = float(description_dropout)
        self.routing = None

    @property
    def memory(self):
        return self.adapted.memory

    def freeze_memory(self, channels: bool = True) -> None:
        """Stop training what the tasks share besides the LoRA factors: the atoms, the
        router, the prior map and, with ``channels``, the description channels."""
        for part in (self.memory, self.prior_map, self._channels() if channels else None):
            if part is not None:
                part.requires_grad_(False)

    def _channels(self) -> DescriptionChannels | None:
        return getattr(self, "channels", None)  # absent: built before channels existed

    def set_balance(self, balance: RoutingBalance | None) -> None:
        """Add, replace or (``None``) remove the load-balancing term."""
        self._modules.pop("balance", None)
        if balance is not None:
            self.balance = balance
        self.memory.keep_probs = balance is not None

    def set_anchor(self, anchor: StageAnchor | None) -> None:
        """Add, replace or (``None``) remove a continual stage's anchor
        (:class:`~qlsk.adapters.anchor.StageAnchor`), a term of :attr:`penalty`."""
        self.__dict__.pop("anchor", None)
        if anchor is not None:
            self.__dict__["anchor"] = anchor  # not a submodule: its tensors are not state

    @property
    def penalty(self):
        """The extra training terms, a stage's anchor
        (:meth:`~qlsk.adapters.anchor.StageAnchor.penalty`) and load balancing
        (:meth:`~qlsk.adapters.balance.RoutingBalance.penalty`), as one callable the
        training loss adds, or ``None`` without either. The anchor's passes run as the
        last stage's predictions were made: with every description and unseen by the
        load-balancing term."""
        anchor = self._anchor_penalty if "anchor" in self.__dict__ else None
        balance = self._modules.get("balance")
        terms = [t for t in (anchor, None if balance is None else balance.penalty)
                 if t is not None]
        if len(terms) < 2:
            return terms[0] if terms else None
        return lambda: sum(term() for term in terms)

    _anchoring = False  # True while the anchor's passes run

    def _anchor_penalty(self) -> torch.Tensor:
        self._anchoring = True
        try:
            return self.__dict__["anchor"].penalty()
        finally:
            self._anchoring = False

    def forward(self, X: torch.Tensor, embedding: torch.Tensor,
                task: torch.Tensor) -> torch.Tensor:
        """Predict rows of several tasks, each conditioned on its own description.

        Parameters
        ----------
        X : torch.Tensor of shape (n, n_features)
        embedding : torch.Tensor of shape (n, embedding_dim)
            Every row's description embedding; a row of zeros is run without a
            description (no prior, every channel unchanged).
        task : torch.Tensor of shape (n,), integer
            Task ids: rows with the same id share their embedding. A batch of one task
            costs one pass; ``k`` tasks cost ``k`` passes.
        """
        ids = task.unique()
        if len(ids) == 1:
            out, routing = self._run(X, embedding[0])
            self.routing = routing
            return out
        out = routing = None
        for t in ids:
            rows = (task == t).nonzero(as_tuple=True)[0]
            y, alpha = self._run(X[rows], embedding[rows[0]])
            if out is None:
                out = y.new_zeros((len(X), *y.shape[1:]))
                routing = alpha.new_zeros((alpha.shape[0], len(X), alpha.shape[2]))
            out = out.index_copy(0, rows, y)
            routing[:, rows] = alpha
        self.routing = routing
        return out

    def _run(self, X: torch.Tensor, embedding: torch.Tensor):
        described = bool(embedding.abs().sum() > 0)
        if described and self.training and self.description_dropout > 0 and not self._anchoring:
            described = bool(torch.rand(()) >= self.description_dropout)
        channels = self._channels()
        prior = channels is None or channels.prior
        try:
            self.memory.set_prior(self.prior_map(embedding) if described and prior else None)
            if channels is not None:
                channels.set(self.memory, embedding if described else None)
            out = self.adapted(X)
            balance = self._modules.get("balance")
            if balance is not None and self.training and not self._anchoring:
                balance.observe(torch.stack(self.memory.probs))
        finally:
            if self.memory.keep_probs:
                self.memory.probs = []
            # The prior and the channels' tensors carry the graph of their maps: keep it
            # out of the module's state, which must stay copyable and picklable.
            self.memory.set_prior(None)
            if channels is not None:
                channels.clear(self.memory)
        return out, torch.stack(self.memory.routing)


def _memory_config(model: SharedMemoryModel) -> dict:
    memory = model.memory
    return {"rank": memory.rank, "n_atoms": memory.n_atoms, "n_blocks": memory.n_blocks,
            "key_dim": memory.key_dim, "embedding_dim": model.prior_map.embedding_dim,
            "memory_class": type(memory).__name__, "learned": model.prior_map.learned,
            "top_k": memory.top_k, "temperature": memory.temperature,
            "prior_strength": memory.prior_strength,
            "prior_temperature": model.prior_map.temperature}


def memory_state_dict(model: SharedMemoryModel) -> dict[str, torch.Tensor]:
    """The shared memory alone: atoms, router (``memory.*``) and prior map (``prior_map.*``)."""
    state = {f"memory.{k}": v for k, v in model.memory.state_dict().items()
             if k != "log_prior"}
    state.update({f"prior_map.{k}": v for k, v in model.prior_map.state_dict().items()})
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def save_memory(model: SharedMemoryModel, path, metadata: dict | None = None,
                overwrite: bool = False) -> None:
    """Write the shared memory to ``path``: safetensors with its configuration as JSON.

    Parameters
    ----------
    model : SharedMemoryModel
    path : str or os.PathLike
    metadata : dict or None
        Extra JSON-serialisable facts stored with it (e.g. the text encoder's name).
    overwrite : bool
        Replace an existing file.
    """
    meta = {"format": MEMORY_FORMAT, "config": _memory_config(model), **(metadata or {})}
    write_safetensors(path, memory_state_dict(model), meta, overwrite=overwrite)


def read_memory(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON metadata and the tensors of a memory written by :func:`save_memory`."""
    from safetensors import SafetensorError, safe_open

    if os.path.isdir(path):  # else safetensors reports "No such device"
        raise ValueError(f"memory {path} is a folder; give the file written by save_memory")
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("qlsk")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a memory saved by qlsk ({exc})") from None
    meta = json.loads(raw) if raw is not None else {}
    if meta.get("format") != MEMORY_FORMAT:
        raise ValueError(f"{path} is not a memory saved by qlsk.save_memory (format "
                         f"{meta.get('format')!r}, expected {MEMORY_FORMAT!r})")
    return meta, tensors


def load_memory_state(model: SharedMemoryModel, meta: dict,
                      tensors: dict[str, torch.Tensor]) -> None:
    """Copy a saved memory into ``model``, refusing one of another shape.

    Raises
    ------
    ValueError
        If the rank, atom count, block count, key dimension, embedding dimension or
        the kind of memory differ, naming the saved and the expected values.
    """
    saved, own = meta["config"], _memory_config(model)
    differ = [k for k in (*SHAPE_KEYS, "memory_class") if saved.get(k) != own[k]]
    if differ:
        detail = ", ".join(f"{k}={saved.get(k)!r} (this model: {own[k]!r})" for k in differ)
        raise ValueError(f"the saved memory does not fit this model: {detail}")
    expected = set(memory_state_dict(model))
    if set(tensors) != expected:
        raise ValueError(f"the saved memory does not fit this model: missing "
                         f"{sorted(expected - set(tensors))}, unexpected "
                         f"{sorted(set(tensors) - expected)}")
    for part, module in (("memory", model.memory), ("prior_map", model.prior_map)):
        module.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items()
                                if k.startswith(part + ".")})


def grow_memory(model: SharedMemoryModel, n_new: int) -> None:
    """Append ``n_new`` atoms to the memory, each starting at ``I``, with new keys.

    Existing atoms, keys and prior-map rows are kept, so the routing of rows that do
    not pick a new atom is unchanged until training moves it. New keys are drawn like
    the memory's own; the prior map's new rows are the rows the seeded projection of
    the larger memory has there (its first rows are the old projection), so a fixed map
    stays :func:`~qlsk.adapters.queryable.instruction_prior` of the grown memory.

    Raises
    ------
    TypeError
        For a memory without keys (the ``"random"`` query ablation).
    """
    memory, prior = model.memory, model.prior_map
    if n_new < 1:
        return
    if memory.n_atoms == 1:
        raise TypeError("a memory of one atom has a frozen router: it cannot grow")
    if not isinstance(getattr(memory, "keys", None), nn.Parameter):
        raise TypeError(f"{type(memory).__name__} has no keys: it cannot grow")
    old = memory.n_atoms
    deltas, keys = memory.atom_deltas, memory.keys
    with torch.no_grad():
        grown = torch.cat([deltas, deltas.new_zeros(n_new, *deltas.shape[1:])])
        if isinstance(deltas, nn.Parameter):
            memory.atom_deltas = nn.Parameter(grown, requires_grad=deltas.requires_grad)
        else:  # freeze_atoms: the atoms stay a zero buffer, not saved
            memory.atom_deltas = grown
        fresh = torch.randn(n_new, keys.shape[1], dtype=keys.dtype, device=keys.device)
        memory.keys = nn.Parameter(torch.cat([keys, fresh]), requires_grad=keys.requires_grad)
        rows = torch.as_tensor(seeded_projection(old + n_new, prior.embedding_dim)[old:],
                               dtype=prior.weight.dtype, device=prior.weight.device)
        weight = torch.cat([prior.weight.detach(), rows])
        if prior.learned:
            prior.weight = nn.Parameter(weight, requires_grad=prior.weight.requires_grad)
        else:
            prior.weight = weight
    memory.n_atoms = old + n_new

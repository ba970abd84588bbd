"""Attach LoRA or Queryable LoRA to the linear layers of any network."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import nn

from ..files import write_safetensors
from .ablations import build_memory
from .config import METHOD_CONFIGS, LoraConfig, QueryableLoraConfig, config_class
from .lora import LoraLinear
from .queryable import AtomMemory, QueryableLoraLinear, instruction_prior

METHODS = tuple(METHOD_CONFIGS)
# Read-only views of the config classes' defaults (defined in qlsk.adapters.config).
LORA_OPTIONS = MappingProxyType(LoraConfig.defaults())
QUERYABLE_OPTIONS = MappingProxyType(QueryableLoraConfig.defaults())


class AdaptedModel(nn.Module):
    """A network with adapted linear layers; calls it exactly like the original.

    Parameters
    ----------
    base_model : torch.nn.Module
        The network, with its targeted ``nn.Linear`` layers replaced by adapter layers.
    layers : list of LoraLinear
        The adapted layers in forward order.
    method : {"queryable", "lora"}
        The adapter kind.
    memory : AtomMemory or None
        The shared atom memory (Queryable LoRA only).
    config : dict
        The options the adapters were built with.
    """

    def __init__(self, base_model: nn.Module, layers: list[LoraLinear], method: str,
                 memory: AtomMemory | None, config: dict):
        super().__init__()
        self.base_model = base_model
        self.memory = memory
        self.method = method
        self.config = dict(config)
        object.__setattr__(self, "adapted_layers", list(layers))

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)


def _select(model: nn.Module, target_modules) -> list[tuple[str, nn.Linear]]:
    named = dict(model.named_modules())
    if target_modules is None:
        chosen = [(n, m) for n, m in named.items() if isinstance(m, nn.Linear)]
    elif isinstance(target_modules, str):
        pattern = re.compile(target_modules)
        chosen = [(n, m) for n, m in named.items()
                  if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
    elif callable(target_modules):
        chosen = [(n, m) for n, m in named.items() if target_modules(n, m)]
    elif isinstance(target_modules, Sequence):
        missing = [n for n in target_modules if n not in named]
        if missing:
            raise ValueError(f"target_modules not found in the model: {missing}")
        chosen = [(n, named[n]) for n in target_modules]
    else:
        raise TypeError("target_modules must be None, a regex string, a list of module "
                        f"names or a predicate (name, module) -> bool, got {target_modules!r}")
    wrong = [n for n, m in chosen if not isinstance(m, nn.Linear)]
    if wrong:
        raise TypeError(f"only nn.Linear layers can be adapted, not {wrong}")
    if not chosen:
        raise ValueError("no nn.Linear layer matched target_modules")
    return chosen


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _options(method, config: dict) -> tuple[str, dict]:
    """The method's name and every option (validated), from a name and keyword options
    or from a config object alone."""
    if isinstance(method, LoraConfig):
        if config:
            raise TypeError("give the options in the config object or as keywords, not "
                            f"both: {sorted(config)}")
        return method.method, method.to_dict()
    return method, config_class(method).from_options(**config).to_dict()


def _log_prior(options: dict) -> torch.Tensor | None:
    if options["task_description"] is None:
        return None
    from ..text import embed

    return instruction_prior(embed(options["task_description"], options["text_encoder"]),
                             options["n_atoms"], options["prior_temperature"])


def inject(model: nn.Module, method: str | LoraConfig = "queryable", target_modules=None,
           **config) -> AdaptedModel:
    """Freeze ``model`` and wrap its linear layers with LoRA or Queryable LoRA.

    The model is changed in place (its targeted layers are replaced) and returned
    wrapped in an :class:`AdaptedModel`; deep-copy it first to keep the original.

    Parameters
    ----------
    model : torch.nn.Module
        Any network with ``nn.Linear`` layers: an MLP, attention projections, ...
    method : {"queryable", "lora"}, LoraConfig or QueryableLoraConfig
        Queryable LoRA (shared routed atoms) or plain LoRA; or a config object of
        :mod:`qlsk.adapters.config`, which gives the method and every option.
    target_modules : None, str, list of str or callable
        Which layers to adapt. ``None``: every ``nn.Linear`` in registration order.
        A string: a regular expression that must match the full module name. A list
        of names: exactly those, **in the given order**, which must be the order in
        which the model calls them. A callable ``(name, module) -> bool``.
    **config
        The options of the method, with their defaults, documentation and
        validation in :class:`~qlsk.adapters.config.LoraConfig` (``"lora"``: ``rank``,
        ``alpha``, ``dropout``) and :class:`~qlsk.adapters.config.QueryableLoraConfig`
        (``"queryable"``: those, the memory and routing options, the instruction prior,
        and the ablation switches ``query`` and ``freeze_atoms``, see
        :func:`qlsk.adapters.ablations.build_memory`).

    Returns
    -------
    AdaptedModel
        Only the adapter parameters require gradients; ``config`` holds every option.

    Raises
    ------
    TypeError
        For an option the method does not have, naming it.
    ValueError
        For an unknown method or an invalid option value, naming it.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from qlsk.adapters import inject
    >>> net = nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(),
    ...                     nn.Linear(32, 1))
    >>> adapted = inject(net, "queryable", rank=4, n_atoms=8, top_k=2)
    >>> adapted(torch.randn(5, 4)).shape
    torch.Size([5, 1])
    """
    method, options = _options(method, config)
    chosen = _select(model, target_modules)
    model.requires_grad_(False)
    n_layers = len(chosen)
    rank, alpha, dropout = options["rank"], options["alpha"], options["dropout"]
    memory = None
    if method == "queryable":
        block_size = options["block_size"]
        first = chosen[0][1]
        memory = build_memory(
            rank, options["n_atoms"], math.ceil(n_layers / block_size), first.in_features,
            query=options["query"], freeze_atoms=options["freeze_atoms"],
            top_k=options["top_k"], temperature=options["temperature"],
            routing_noise=options["routing_noise"],
            key_dim=options["key_dim"], prior_strength=options["prior_strength"],
            log_prior=_log_prior(options),
        ).to(device=first.weight.device, dtype=first.weight.dtype)
    layers = []
    for index, (name, linear) in enumerate(chosen):
        if method == "queryable":
            layer = QueryableLoraLinear(linear, memory, index, block_size, n_layers,
                                        rank=rank, alpha=alpha, dropout=dropout)
        else:
            layer = LoraLinear(linear, rank=rank, alpha=alpha, dropout=dropout)
        _replace(model, name, layer)
        layers.append(layer)
    return AdaptedModel(model, layers, method, memory, options)


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _is_adapter_key(key: str) -> bool:
    return ".lora_" in key or key.startswith("lora_") or key.startswith("memory.")


def adapter_state_dict(model: AdaptedModel) -> dict[str, torch.Tensor]:
    """The adapter parameters and buffers only (A, B, atoms, keys, routing, prior)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if _is_adapter_key(k)}


def load_adapter_state_dict(model: AdaptedModel, state: dict[str, torch.Tensor]) -> None:
    """Load adapter weights saved by :func:`adapter_state_dict` into ``model``.

    Raises
    ------
    ValueError
        If a key is missing or unexpected, naming it.
    """
    # The prior is optional on both sides: the saved one (or its absence) replaces ours.
    prior = {"memory.log_prior"} if model.memory is not None else set()
    own = {k for k in model.state_dict() if _is_adapter_key(k)} - prior
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own - prior)
    if missing or unexpected:
        raise ValueError(f"adapter state does not fit this model: missing {missing}, "
                         f"unexpected {unexpected}")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    wrong = sorted(k for k in own if state[k].shape != shapes[k])
    if wrong:
        raise ValueError(f"adapter state does not fit this model: shapes differ for {wrong}")
    if prior:
        model.memory.set_prior(state.get("memory.log_prior"))
    model.load_state_dict(state, strict=False)


def save_adapter(model: AdaptedModel, path, overwrite: bool = False) -> None:
    """Write the adapter state to ``path`` in safetensors format (atomically; an
    existing file only with ``overwrite``)."""
    write_safetensors(path, adapter_state_dict(model), overwrite=overwrite)


def load_adapter(model: AdaptedModel, path) -> None:
    """Load an adapter state written by :func:`save_adapter` into ``model``."""
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    load_adapter_state_dict(model, load_file(str(path), device=str(device)))


def _lora_layers(model: AdaptedModel) -> list[LoraLinear]:
    if model.method != "lora":
        raise TypeError(
            "Queryable LoRA cannot be merged into the base weights: its update "
            "B S_b(h) A depends on the input through the routing")
    return model.adapted_layers


def merge(model: AdaptedModel) -> AdaptedModel:
    """Fold plain-LoRA updates into the base weights (outputs stay the same)."""
    for layer in _lora_layers(model):
        layer.merge()
    return model


def unmerge(model: AdaptedModel) -> AdaptedModel:
    """Undo :func:`merge`."""
    for layer in _lora_layers(model):
        layer.unmerge()
    return model


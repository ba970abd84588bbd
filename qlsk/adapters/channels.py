"""Where a task's description enters a shared-memory model: its description channels.

The method's own channel is the **prior**: the description's embedding ``e(c)`` becomes
a log-prior over atoms added to every block's routing logits (:class:`~.prior_map.PriorMap`).
A prior only reweighs ``M`` atoms, the same for every row of the task. The other
channels let the description say more, each a zero-initialised linear map of the
unit-normalised embedding ``e = e(c) / |e(c)|``, so that training starts exactly where
the prior alone would:

``"query"``
    The description rescales every block's query, ``q_b = (1 + G e) * W_q [n(z_b); s_b]
    + e_b``: it changes *how the rows' low-rank state chooses atoms*, not only which
    atoms the task prefers. (An added term ``W e`` would only be another per-task
    bias on the logits, which the learned prior already is.)
``"shift"``
    The first adapted layer's output is shifted, ``h_1 = W_1 x + b_1 + s B_1 S A_1 x +
    V e``: the description enters as an input does (what
    :class:`~.conditioning.DescriptionInput` does without a memory).
``"scale"``
    The same output is rescaled, ``h_1 * (1 + U e)`` (with ``"shift"``, a FiLM layer:
    Perez et al. 2018).

A row whose embedding is all zeros (no description) goes through every channel
unchanged, as it routes without a prior.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = ("prior", "query", "shift", "scale")


def parse_channels(spec: str) -> tuple[str, ...]:
    """The channels named by ``spec``, e.g. ``"prior+shift"``, in :data:`CHANNELS` order.

    Raises
    ------
    ValueError
        For an empty spec, an unknown name or a repeated one, listing the valid names.
    """
    if not isinstance(spec, str):
        raise TypeError(f"channels must be a string such as 'prior+shift', got "
                        f"{type(spec).__name__}")
    names = [name.strip() for name in spec.split("+")]
    unknown = [name for name in names if name not in CHANNELS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"channels={spec!r}: give one or more of {list(CHANNELS)} joined by "
                         "'+', each once (e.g. 'prior+shift')")
    return tuple(name for name in CHANNELS if name in names)


def modulate(output: torch.Tensor, scale: torch.Tensor | None,
             shift: torch.Tensor | None) -> torch.Tensor:
    """``output * scale + shift``, each part skipped when ``None``."""
    if scale is not None:
        output = output * scale
    if shift is not None:
        output = output + shift
    return output


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out, bias=False)
    nn.init.zeros_(layer.weight)
    return layer


class DescriptionChannels(nn.Module):
    """The description's maps into the router and the first adapted layer.

    Parameters
    ----------
    channels : str
        ``"+"``-joined names from :data:`CHANNELS` (see the module's docstring).
    embedding_dim : int
        Length of the description embeddings.
    key_dim : int
        ``d_k`` of the memory's queries (read by ``"query"``).
    width : int
        Output width of the first adapted layer (read by ``"shift"`` and ``"scale"``).

    Attributes
    ----------
    names : tuple of str
        The parsed channels.
    query, shift, scale : torch.nn.Linear
        ``G``, ``V``, ``U`` (zero-initialised), present when their channel is.
    """

    def __init__(self, channels: str, embedding_dim: int, key_dim: int, width: int):
        super().__init__()
        self.names = parse_channels(channels)
        for name, n_out in (("query", key_dim), ("shift", width), ("scale", width)):
            if name in self.names:
                setattr(self, name, _zero_linear(embedding_dim, n_out))
        self._scale = self._shift = None

    @property
    def prior(self) -> bool:
        """Whether the description also enters as the prior over atoms."""
        return "prior" in self.names

    def attach(self, adapted: nn.Module) -> None:
        """Hook the first adapted layer of ``adapted`` (an :class:`~.inject.AdaptedModel`).

        Raises
        ------
        ValueError
            If the layer's output width is not the one these channels were built for.
        """
        first = adapted.adapted_layers[0]
        for name in ("shift", "scale"):
            layer = getattr(self, name, None)
            if layer is not None and layer.out_features != first.base.out_features:
                raise ValueError(f"the {name} channel was built for a first layer of width "
                                 f"{layer.out_features}, not {first.base.out_features}")
        if "shift" in self.names or "scale" in self.names:
            first.register_forward_hook(self._modulate)

    def set(self, memory: nn.Module, embedding: torch.Tensor | None) -> None:
        """Condition the next pass on ``embedding`` (one task's, shape ``(d,)``);
        ``None``: as if there were no description."""
        if embedding is None:
            return self.clear(memory)
        e = F.normalize(embedding, dim=-1)
        if "query" in self.names:
            memory.query_scale = 1 + self.query(e)
        self._shift = self.shift(e) if "shift" in self.names else None
        self._scale = 1 + self.scale(e) if "scale" in self.names else None

    def clear(self, memory: nn.Module) -> None:
        """Drop what :meth:`set` set: the graph must not stay in the modules' state,
        which is copied and pickled between passes."""
        memory.query_scale = None
        self._scale = self._shift = None

    def _modulate(self, layer, inputs, output):
        return modulate(output, self._scale, self._shift)

    def extra_repr(self) -> str:
        return f"channels={'+'.join(self.names)!r}"

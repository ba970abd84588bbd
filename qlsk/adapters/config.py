"""The options of each adapter method: one frozen dataclass per method.

Each config class owns, for every option, its default, its documentation (the
``"type"`` and ``"doc"`` of the field's metadata) and its validation; everything else
reads it: :func:`qlsk.adapters.inject` takes its defaults and the names it accepts from
here, and the estimators (:class:`qlsk.LoraRegressor`, :class:`qlsk.QueryableLoraRegressor`,
:class:`qlsk.SharedMemoryRegressor`) pass every option they take as a parameter of the
same name and render its documentation with :func:`parameter_docs`. A new option is
one field here plus one constructor argument (and one parameter constraint) there.

Examples
--------
>>> from qlsk.adapters.config import QueryableLoraConfig
>>> config = QueryableLoraConfig(rank=4, n_atoms=8)
>>> config.top_k, config.to_dict()["n_atoms"]
(2, 8)
>>> QueryableLoraConfig(n_atoms=2, top_k=3)
Traceback (most recent call last):
...
ValueError: top_k=3 exceeds n_atoms=2: routing combines at most n_atoms atoms
"""

from __future__ import annotations

import numbers
import textwrap
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from .ablations import QUERIES

QUERY_CHOICES = tuple(QUERIES)
TEXT_ENCODERS = ("lexical", "semantic")  # the names of qlsk.text.ENCODERS


def _option(default, type_: str, doc: str):
    """A dataclass field with its numpydoc type and description in the metadata."""
    return field(default=default, metadata={"type": type_, "doc": doc})


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_whole(value) -> bool:
    """An integer, or a float with an integral value (as the memory has accepted)."""
    return _is_real(value) and float(value).is_integer()


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """Options of plain LoRA (``inject(model, "lora", ...)``): ``y = W h + b + s B A h``.

    Every field has a default and is documented in its metadata (``"type"``,
    ``"doc"``); construction validates the values (:meth:`validate`).

    Raises
    ------
    ValueError
        For an invalid value, naming the option.
    TypeError
        For an unknown option name.
    """

    method: ClassVar[str] = "lora"

    rank: int = _option(8, "int", "Rank of every update (the atoms of Queryable LoRA are "
                        "``rank x rank``).")
    alpha: float = _option(16.0, "float", "The update is scaled by ``alpha / rank``; must be "
                           "> 0 (0 would leave the adapter inert).")
    dropout: float = _option(0.0, "float", "Dropout, in [0, 1), on the layer input of the "
                             "low-rank branch while training.")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every option.

        Raises
        ------
        ValueError
            Naming the first invalid option and its value.
        """
        rank, alpha, dropout = self.rank, self.alpha, self.dropout
        if not isinstance(rank, numbers.Integral) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not _is_real(alpha) or not alpha > 0:
            raise ValueError(f"alpha must be a number > 0 (0 leaves the adapter inert), "
                             f"got {alpha!r}")
        if not _is_real(dropout) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options' names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option's default value."""
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def from_options(cls, **options):
        """The config of ``options`` (the defaults for the others).

        Raises
        ------
        TypeError
            For option names this method does not have, naming them.
        ValueError
            For an invalid value, naming the option.
        """
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise TypeError(f"unknown option(s) for method={cls.method!r}: {unknown}; "
                            f"its options are {list(cls.option_names())}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """Every option and its value (the values themselves, not copies)."""
        return {name: getattr(self, name) for name in self.option_names()}


@dataclass(frozen=True, kw_only=True)
class QueryableLoraConfig(LoraConfig):
    """Options of Queryable LoRA (``inject(model, "queryable", ...)``).

    The LoRA options (:class:`LoraConfig`) plus the shared memory of routed atoms,
    its routing, the instruction prior and two ablation switches whose defaults are
    the method (:func:`qlsk.adapters.ablations.build_memory`).

    Raises
    ------
    ValueError
        For an invalid value, naming the option (e.g. ``top_k > n_atoms``).
    TypeError
        For an unknown option name.
    """

    method: ClassVar[str] = "queryable"

    n_atoms: int = _option(16, "int", "Atoms in the shared memory.")
    top_k: int = _option(2, "int", "Atoms combined per row and block; at most ``n_atoms``.")
    block_size: int = _option(2, "int", "Consecutive adapted layers that share one routing "
                              "decision.")
    temperature: float = _option(1.0, "float", "Softmax temperature over the kept routing "
                                 "logits.")
    routing_noise: float = _option(
        0.0, "float", "Standard deviation of Gaussian noise added to the routing logits "
        "while training (noisy top-k gating); a routing regulariser, off by default "
        "(``docs/method.md``, \"Ablations\").")
    key_dim: int | None = _option(None, "int or None", "Dimension of the memory's keys and "
                                  "queries; ``None``: ``max(rank, 8)``.")
    prior_strength: float = _option(1.0, "float", "Weight ``lambda`` of the instruction prior; "
                                    "0 ignores the description.")
    prior_temperature: float = _option(0.5, "float", "Temperature ``tau_pi`` of the "
                                       "instruction prior; smaller is more peaked.")
    task_description: Any = _option(
        None, "str, array-like or None", "Plain-English description of the target task (or "
        "a precomputed embedding); it sets a prior over atoms. ``None``: no prior.")
    text_encoder: Any = _option(
        "lexical", '{"lexical", "semantic"} or callable',
        "How the description is embedded (see :mod:`qlsk.text`).")
    query: str = _option(
        "state+depth", '{"state+depth", "state", "detached", "constant", "random"}',
        "Where the routing query comes from (ablations, ``docs/method.md``): the block's "
        "low-rank state plus the depth summary of earlier blocks (the method); the state "
        "alone; the method's query with no gradient into ``A`` through it; a learned "
        "constant per block (the same route for every row); a fixed random projection of "
        "the input (routing never trains).")
    freeze_atoms: bool = _option(False, "bool", "Fix every atom at the identity: the update "
                                 "is then plain LoRA whatever the routing (an ablation).")

    def validate(self) -> None:
        """Check every option, the LoRA ones first.

        Raises
        ------
        ValueError
            Naming the first invalid option and its value.
        """
        super().validate()
        for name in ("n_atoms", "top_k", "block_size"):
            value = getattr(self, name)
            if not _is_whole(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.top_k > self.n_atoms:
            raise ValueError(f"top_k={self.top_k} exceeds n_atoms={self.n_atoms}: routing "
                             "combines at most n_atoms atoms")
        for name, low, strict in (("temperature", 0, True), ("routing_noise", 0, False),
                                  ("prior_strength", 0, False),
                                  ("prior_temperature", 0, True)):
            value = getattr(self, name)
            if not _is_real(value) or not (value > low if strict else value >= low):
                raise ValueError(f"{name} must be a number {'>' if strict else '>='} {low}, "
                                 f"got {value!r}")
        if self.key_dim is not None and (not _is_whole(self.key_dim) or self.key_dim < 1):
            raise ValueError(f"key_dim must be None (max(rank, 8)) or a positive integer, "
                             f"got {self.key_dim!r}")
        encoder = self.text_encoder
        if not callable(encoder) and not (isinstance(encoder, str) and encoder in TEXT_ENCODERS):
            raise ValueError(f"unknown text_encoder {encoder!r}: use one of "
                             f"{list(TEXT_ENCODERS)} or a callable")
        if not (isinstance(self.query, str) and self.query in QUERY_CHOICES):
            raise ValueError(f"query must be one of {list(QUERY_CHOICES)}, got {self.query!r}")
        if not isinstance(self.freeze_atoms, bool):
            raise ValueError(f"freeze_atoms must be True or False, got {self.freeze_atoms!r}")


METHOD_CONFIGS: dict[str, type[LoraConfig]] = {
    QueryableLoraConfig.method: QueryableLoraConfig, LoraConfig.method: LoraConfig}


def config_class(method: str) -> type[LoraConfig]:
    """The config class of ``method`` ("queryable" or "lora").

    Raises
    ------
    ValueError
        For an unknown method.
    """
    try:
        return METHOD_CONFIGS[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {method!r}: use one of {tuple(METHOD_CONFIGS)}"
                         ) from None


def _show(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def parameter_docs(config: type[LoraConfig], names=None, defaults=None,
                   indent: int = 4) -> str:
    """The numpydoc ``Parameters`` entries of options of ``config``.

    Parameters
    ----------
    config : type
        A config class, e.g. :class:`QueryableLoraConfig`.
    names : iterable of str or None
        The options to document, in the config's order; ``None``: all of them.
    defaults : dict or None
        Defaults to show instead of the config's (an estimator's own).
    indent : int
        Spaces before each entry's name; its description gets four more.

    Returns
    -------
    str
        One entry per option (``name : type, default=...`` and the wrapped doc),
        each line ending with a newline.
    """
    pad, defaults = " " * indent, defaults or {}
    chosen = None if names is None else set(names)
    lines = []
    for f in fields(config):
        if chosen is not None and f.name not in chosen:
            continue
        default = defaults.get(f.name, f.default)
        assert default is not MISSING, f.name
        lines.append(f"{pad}{f.name} : {f.metadata['type']}, default={_show(default)}")
        lines.extend(textwrap.wrap(f.metadata["doc"], width=88, initial_indent=pad + "    ",
                                   subsequent_indent=pad + "    "))
    return "".join(line + "\n" for line in lines)

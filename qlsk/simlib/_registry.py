"""The test-function object and the registry that names them."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

_REGISTRY: dict[str, _Entry] = {}


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., TestFunction]
    tags: tuple[str, ...]
    default_dim: int


@dataclass(frozen=True, eq=False)
class TestFunction:
    """A deterministic simulator ``f: R^dim -> R`` on a box.

    Parameters
    ----------
    name : str
        The function's page name in the Virtual Library of Simulation
        Experiments (``https://www.sfu.ca/~ssurjano/<name>.html``).
    bounds : array-like of shape (dim, 2)
        Lower and upper bound of every input, in the library's units and order.
    input_names : tuple of str
        One name per input column.
    description : str
        One plain-English sentence of what the function models and how it behaves.
    formula : callable
        Maps a validated ``(n, dim)`` float array to ``(n,)`` outputs.
    params : dict
        The parameter values this instance was built with.

    Examples
    --------
    >>> from qlsk.simlib import get_function
    >>> f = get_function("branin")
    >>> X = f.sample(5, random_state=0)
    >>> f(X).shape
    (5,)
    """

    __test__ = False  # not a pytest test class despite its name

    name: str
    bounds: np.ndarray
    input_names: tuple[str, ...]
    description: str
    formula: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    params: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Number of inputs."""
        return self.bounds.shape[0]

    @property
    def url(self) -> str:
        """The function's page in the library."""
        return f"https://www.sfu.ca/~ssurjano/{self.name}.html"

    def __call__(self, X) -> np.ndarray:
        """Evaluate the function on the rows of ``X`` of shape ``(n, dim)``."""
        X = self.check_input(X)
        return np.asarray(self.formula(X), dtype=float).reshape(X.shape[0])

    def check_input(self, X) -> np.ndarray:
        """Return ``X`` as a float array, or raise ``ValueError`` naming the problem."""
        try:
            X = np.asarray(X, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: input is not numeric ({exc})") from None
        if X.ndim == 1 and self.dim == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(
                f"{self.name}: expected an array of shape (n, {self.dim}), got {X.shape}"
            )
        finite = np.isfinite(X)
        if not finite.all():
            col = int(np.where(~finite.all(axis=0))[0][0])
            raise ValueError(
                f"{self.name}: non-finite value in column {col} ({self.input_names[col]})"
            )
        # A tiny tolerance keeps points produced by rescaling round-off inside.
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        tol = 1e-12 * np.maximum(1.0, np.abs(self.bounds).max(axis=1))
        outside = (X < lo - tol) | (X > hi + tol)
        if outside.any():
            col = int(np.where(outside.any(axis=0))[0][0])
            raise ValueError(
                f"{self.name}: column {col} ({self.input_names[col]}) has values outside "
                f"its domain [{lo[col]:g}, {hi[col]:g}]"
            )
        return X

    def sample(self, n: int, random_state=None) -> np.ndarray:
        """Draw ``n`` inputs uniformly within ``bounds``.

        Parameters
        ----------
        n : int
            Number of rows.
        random_state : int, numpy.random.Generator or None
            Seed or generator; the same seed gives the same rows.

        Returns
        -------
        ndarray of shape (n, dim)

        Raises
        ------
        ValueError
            If ``n`` is not a non-negative integer.
        """
        n = check_count(n, "n")
        rng = np.random.default_rng(random_state)
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        return lo + rng.random((n, self.dim)) * (hi - lo)


def check_count(n, label: str) -> int:
    """Return the row count ``n`` as an int, or raise ``ValueError`` naming ``label``."""
    # bool is an Integral, but sample(True) is a mistake, not a request for one row.
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"{label} must be a non-negative integer, got {n!r}")
    return int(n)


def unknown_name(kind: str, name, known: Iterable[str], listing: str) -> KeyError:
    """The ``KeyError`` for an unknown ``name``, suggesting the closest ``known`` names."""
    close = difflib.get_close_matches(str(name), list(known))
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return KeyError(f"unknown {kind} {name!r}{hint}; see qlsk.simlib.{listing}()")


def register(name: str, *, tags: tuple[str, ...], dim: int):
    """Register a factory ``(**params) -> TestFunction`` under ``name``."""

    def decorator(factory):
        _REGISTRY[name] = _Entry(factory=factory, tags=tags, default_dim=dim)
        return factory

    return decorator


def make(name, bounds, description, formula, input_names=None, **params) -> TestFunction:
    """Build a ``TestFunction``, naming inputs ``x1..xd`` unless told otherwise."""
    bounds = np.asarray(bounds, dtype=float).reshape(-1, 2)
    if input_names is None:
        input_names = tuple(f"x{i + 1}" for i in range(bounds.shape[0]))
    return TestFunction(
        name=name,
        bounds=bounds,
        input_names=tuple(input_names),
        description=description,
        formula=formula,
        params=params,
    )


def get_function(name: str, **params) -> TestFunction:
    """Return the library function ``name``, built with ``params``.

    Parameters
    ----------
    name : str
        A page name from :func:`list_functions`, such as ``"borehole"``.
    **params
        Parameters of parameterised functions, for example ``a`` and ``b`` of
        ``ishigami`` or ``dim`` of the variable-dimension functions.

    Returns
    -------
    TestFunction

    Raises
    ------
    KeyError
        If ``name`` is not registered; the message suggests the closest names.
    """
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise unknown_name("function", name, _REGISTRY, "list_functions") from None
    return entry.factory(**params)


def list_functions():
    """List every registered function.

    Returns
    -------
    pandas.DataFrame
        One row per function with columns ``name``, ``dim`` (at default
        parameters), ``tags`` and ``description``.
    """
    import pandas as pd

    rows = []
    for name in sorted(_REGISTRY):
        entry = _REGISTRY[name]
        f = entry.factory()
        rows.append(
            {"name": name, "dim": f.dim, "tags": ",".join(entry.tags),
             "description": f.description}
        )
    return pd.DataFrame(rows)

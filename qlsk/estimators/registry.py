"""The estimator classes :func:`qlsk.save` writes and :func:`qlsk.load` builds, by name.

A class enters with the :func:`storable` decorator where it is defined, so
:mod:`qlsk.estimators.persistence` never imports the estimators (no import circle) and
``load`` builds only what was registered: nothing else is ever constructed from a file.

Two kinds of entry:

- a *network* (no ``dump``): a qlsk MLP, adapted or not, stored whole as weights plus
  the metadata persistence writes for every network;
- a class with its own ``dump(estimator) -> (json, tensors)`` and
  ``restore(estimator, json, tensors, device=...)``: persistence stores the constructor
  parameters, the base and the fitted state these give, under ``key``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Storable:
    """One registered class and how its fitted state is kept."""

    cls: type
    dump: Callable | None = None
    restore: Callable | None = None
    key: str | None = None
    nested: tuple[str, ...] = ()

    @property
    def network(self) -> bool:
        return self.dump is None


_REGISTRY: dict[str, Storable] = {}


def storable(cls=None, *, dump=None, restore=None, key=None, nested=()):
    """Class decorator: let :func:`qlsk.save` / :func:`qlsk.load` keep ``cls``.

    Parameters
    ----------
    cls : type
        The estimator class; registered under its ``__name__``.
    dump, restore : callable or None
        For a class that is not a network: ``dump(estimator)`` returns the fitted
        state as JSON-serialisable metadata and a dict of tensors, and
        ``restore(estimator, meta, tensors, device=...)`` sets it on a freshly
        constructed one (on the device ``load`` was given).
    key : str or None
        The metadata key the fitted state is stored under (default: the class name).
    nested : tuple of str
        Parameters that hold a fitted, storable qlsk estimator (e.g. the shared model a
        few-shot model starts from): each is stored whole inside the file and comes
        back as that parameter.
    """
    if (dump is None) != (restore is None):
        raise TypeError("pass both dump and restore, or neither")

    def register(klass):
        name = klass.__name__
        if name in _REGISTRY and _REGISTRY[name].cls is not klass:
            raise ValueError(f"another class is already registered as {name!r}")
        _REGISTRY[name] = Storable(klass, dump, restore, key or name, tuple(nested))
        return klass

    return register if cls is None else register(cls)


def entry_for(estimator) -> Storable | None:
    """The registry entry of ``estimator``'s exact class (a subclass is not covered)."""
    entry = _REGISTRY.get(type(estimator).__name__)
    return entry if entry is not None and entry.cls is type(estimator) else None


def entry_named(name) -> Storable | None:
    return _REGISTRY.get(name) if isinstance(name, str) else None


def names() -> list[str]:
    """The registered class names, in registration order."""
    return list(_REGISTRY)

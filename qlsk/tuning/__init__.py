"""Optuna searches over rank, atom count, top-k, prior strength and learning rate."""

from .search import default_search_space, make_storage, tune

__all__ = ["default_search_space", "make_storage", "tune"]

"""Optuna searches over rank, atom count, top-k, prior strength and learning rate."""

from .search import check_study, default_search_space, make_storage, refit_best, tune

__all__ = ["check_study", "default_search_space", "make_storage", "refit_best",
           "tune"]

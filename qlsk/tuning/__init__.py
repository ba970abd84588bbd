"""Optuna searches over rank, atom count, top-k, prior strength and learning rate."""

from .search import (
    NoCompletedTrialError,
    check_study,
    default_search_space,
    make_storage,
    refit_best,
    tune,
)

__all__ = ["NoCompletedTrialError", "check_study", "default_search_space", "make_storage",
           "refit_best", "tune"]

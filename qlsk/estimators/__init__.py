"""scikit-learn regressors built on skorch: pretrain an MLP, then adapt it."""

from ._net import MLP, TrainingDivergedError
from .persistence import load, save
from .regressors import (
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
)

__all__ = ["MLP", "FineTuneRegressor", "LoraRegressor", "MLPRegressor",
           "QueryableLoraRegressor", "TrainingDivergedError", "load", "save"]

"""scikit-learn regressors built on skorch: pretrain an MLP, then adapt it."""

from ._net import MLP, TrainingDivergedError
from .multitask import FewShotRegressor, SharedMemoryRegressor
from .persistence import load, save
from .regressors import (
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
)

__all__ = ["MLP", "FewShotRegressor", "FineTuneRegressor", "LoraRegressor", "MLPRegressor",
           "QueryableLoraRegressor", "SharedMemoryRegressor", "TrainingDivergedError",
           "load", "save"]

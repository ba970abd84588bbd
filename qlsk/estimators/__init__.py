"""scikit-learn regressors built on skorch: pretrain an MLP, then adapt it."""

from ._net import MLP, TrainingDivergedError
from .callbacks import GradientDiagnostics
from .discrepancy import GPDiscrepancyRegressor
from .multitask import FewShotRegressor, SharedMemoryRegressor
from .persistence import load, save
from .regressors import (
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
)

__all__ = [
    "MLP", "FewShotRegressor", "FineTuneRegressor", "GPDiscrepancyRegressor",
    "GradientDiagnostics", "LoraRegressor", "MLPRegressor", "QueryableLoraRegressor",
    "SharedMemoryRegressor", "TrainingDivergedError", "load", "save"
]

"""scikit-learn regressors built on skorch: pretrain an MLP, then adapt it."""

from ..nn import MLP
from . import multitask
from .callbacks import GradientDiagnostics, TrainingDivergedError
from .conditioned import ConditionedLoraRegressor
from .discrepancy import GPDiscrepancyRegressor
from .fewshot import FewShotRegressor
from .multifidelity import MultiFidelityGPRegressor
from .multitask import SharedMemoryRegressor
from .persistence import load, save
from .regressors import (
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
)
from .transfer import TransferRegressor

__all__ = [
    "MLP", "ConditionedLoraRegressor", "FewShotRegressor", "FineTuneRegressor",
    "GPDiscrepancyRegressor",
    "GradientDiagnostics", "LoraRegressor", "MLPRegressor", "MultiFidelityGPRegressor",
    "QueryableLoraRegressor",
    "SharedMemoryRegressor", "TrainingDivergedError", "TransferRegressor", "load", "save"
]

# FewShotRegressor lived in multitask.py, and pickles written then look for it there;
# fewshot.py imports multitask.py, so the name is set here rather than imported back.
multitask.FewShotRegressor = FewShotRegressor

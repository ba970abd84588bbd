"""qlsk: Queryable LoRA for adapting neural surrogates, as scikit-learn estimators."""

from .estimators import (
    ConditionedLoraRegressor,
    FewShotRegressor,
    FineTuneRegressor,
    GPDiscrepancyRegressor,
    GradientDiagnostics,
    LoraRegressor,
    MLPRegressor,
    MultiFidelityGPRegressor,
    QueryableLoraRegressor,
    SharedMemoryRegressor,
    TrainingDivergedError,
    TransferRegressor,
    load,
    save,
)
from .text import UnfamiliarDescriptionWarning

__version__ = "0.1.0"

__all__ = [
    "ConditionedLoraRegressor",
    "FewShotRegressor", "FineTuneRegressor", "GPDiscrepancyRegressor", "GradientDiagnostics",
    "LoraRegressor", "MLPRegressor", "MultiFidelityGPRegressor",
    "QueryableLoraRegressor", "SharedMemoryRegressor",
    "TrainingDivergedError", "TransferRegressor", "UnfamiliarDescriptionWarning",
    "__version__", "load", "save"
]

"""qlsk: Queryable LoRA for adapting neural surrogates, as scikit-learn estimators."""

from .estimators import (
    FewShotRegressor,
    FineTuneRegressor,
    GPDiscrepancyRegressor,
    GradientDiagnostics,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
    SharedMemoryRegressor,
    TrainingDivergedError,
    load,
    save,
)

__version__ = "0.1.0"

__all__ = [
    "FewShotRegressor", "FineTuneRegressor", "GPDiscrepancyRegressor", "GradientDiagnostics",
    "LoraRegressor", "MLPRegressor", "QueryableLoraRegressor", "SharedMemoryRegressor",
    "TrainingDivergedError", "__version__", "load", "save"
]

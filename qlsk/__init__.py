"""qlsk: Queryable LoRA for adapting neural surrogates, as scikit-learn estimators."""

from .estimators import (
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
    TrainingDivergedError,
    load,
    save,
)

__version__ = "0.1.0"

__all__ = ["FineTuneRegressor", "LoraRegressor", "MLPRegressor", "QueryableLoraRegressor",
           "TrainingDivergedError", "__version__", "load", "save"]

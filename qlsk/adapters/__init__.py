"""LoRA and Queryable LoRA as pure torch modules that attach to any network.

This package depends on torch alone (and :mod:`qlsk.text` for the task prior); the
estimators are one of its clients.
"""

from .ablations import QUERIES, build_memory
from .calibration import OutputCalibration, least_squares_calibration, uncalibrated
from .config import LoraConfig, QueryableLoraConfig
from .diagnostics import (
    adapter_grad_norms,
    atom_usage,
    gradient_concentration,
    routing_weights,
    usage_entropy,
)
from .inject import (
    LORA_OPTIONS,
    QUERYABLE_OPTIONS,
    AdaptedModel,
    adapter_state_dict,
    count_trainable_parameters,
    inject,
    load_adapter,
    load_adapter_state_dict,
    merge,
    save_adapter,
    unmerge,
)
from .lora import LoraLinear
from .prior_map import PriorMap, SharedMemoryModel
from .queryable import AtomMemory, QueryableLoraLinear, instruction_prior

__all__ = [
    "LORA_OPTIONS", "QUERIES", "QUERYABLE_OPTIONS", "AdaptedModel", "AtomMemory", "LoraConfig",
    "LoraLinear", "OutputCalibration", "PriorMap", "QueryableLoraConfig", "QueryableLoraLinear",
    "SharedMemoryModel",
    "adapter_grad_norms", "adapter_state_dict", "atom_usage", "build_memory",
    "count_trainable_parameters", "gradient_concentration", "inject", "instruction_prior",
    "least_squares_calibration", "load_adapter", "load_adapter_state_dict", "merge",
    "routing_weights", "save_adapter", "uncalibrated", "unmerge", "usage_entropy"
]

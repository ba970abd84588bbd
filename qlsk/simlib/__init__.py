"""The Virtual Library of Simulation Experiments as vectorised numpy functions.

Functions are registered under the library's page names
(``https://www.sfu.ca/~ssurjano/<name>.html``); transfer tasks pair a cheap source
with a target for adaptation experiments; task families group many described targets
for one shared adapter.
"""

from . import functions as _functions  # noqa: F401  (registers every function)
from ._registry import TestFunction, get_function, list_functions
from .families import DEVELOPMENT_FAMILIES, REPORT_FAMILIES, list_families, load_family
from .tasks import list_tasks, load_task

__all__ = ["DEVELOPMENT_FAMILIES", "REPORT_FAMILIES", "TestFunction", "get_function",
           "list_families", "list_functions", "list_tasks", "load_family", "load_task"]

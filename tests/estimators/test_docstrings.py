"""The estimators' docstrings are plain literals; these tests keep their copies in step.

Entries that several estimators share (the training settings, the adapter options that
:func:`qlsk.adapters.config.parameter_docs` renders from the configs, ...) are written out
in every class docstring, so that numpydoc and IDEs see them. Here each copy is checked
against the signature, against the config that is the one source of the adapter options'
text, and against the other classes' copies.
"""

import ast
import inspect
import itertools
import re
import textwrap

import pytest
from sklearn.base import BaseEstimator

import qlsk
from qlsk import (
    FewShotRegressor,
    FineTuneRegressor,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
    SharedMemoryRegressor,
)
from qlsk.adapters.config import LoraConfig, QueryableLoraConfig, parameter_docs
from qlsk.estimators.multitask import _SHARED_DEFAULTS, _SHARED_OPTIONS

ESTIMATORS = [obj for obj in (getattr(qlsk, name) for name in qlsk.__all__)
              if inspect.isclass(obj) and issubclass(obj, BaseEstimator)]

_HEADER = re.compile(r"(?P<name>[A-Za-z_]\w*) : (?P<type>\S.*)")
_DEFAULT = re.compile(r", default=(?P<value>.+)$")


def _entries(lines, strict=True):
    """``{name: [header, *description]}`` of numpydoc entries at indentation 0, in order.

    ``strict``: every header is ``name : type`` (a Parameters section); otherwise a
    header without a type (``a_, b_``) is kept under its whole text.
    """
    entries = {}
    current = None
    for line in lines:
        if not line.strip():
            continue  # blank lines carry no text of an entry
        if not line.startswith(" "):
            match = _HEADER.fullmatch(line)
            assert match or not strict, f"not a 'name : type' line: {line!r}"
            name = match["name"] if match else line
            assert name not in entries, f"{name} documented twice"
            current = entries[name] = [line]
        else:
            assert current is not None, f"description before any entry: {line!r}"
            assert line.startswith("    "), f"description not indented by 4: {line!r}"
            current.append(line)
    return entries


def _section(cls, title, strict=True):
    """The entries of ``cls``'s numpydoc section ``title`` (``{}`` when it has none)."""
    lines = inspect.getdoc(cls).splitlines()
    heads = [i for i in range(len(lines) - 1)
             if lines[i] and not lines[i].startswith(" ") and set(lines[i + 1]) == {"-"}
             and len(lines[i + 1]) == len(lines[i])]
    titles = [lines[i] for i in heads]
    assert len(set(titles)) == len(titles), f"{cls.__name__}: a section twice: {titles}"
    if title not in titles:
        return {}
    k = titles.index(title)
    end = heads[k + 1] if k + 1 < len(heads) else len(lines)
    return _entries(lines[heads[k] + 2:end], strict)


def _signature(cls):
    return inspect.signature(cls).parameters


def _without_default(entry):
    return [_DEFAULT.sub("", entry[0]), *entry[1:]]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_parameters_match_signature(cls):
    documented = list(_section(cls, "Parameters"))
    params = list(_signature(cls))
    assert not set(params) - set(documented), "undocumented parameters"
    assert not set(documented) - set(params), "documented parameters it does not take"
    assert documented == params, "Parameters not in signature order"


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_documented_defaults_match_signature(cls):
    params = _signature(cls)
    for name, entry in _section(cls, "Parameters").items():
        match = _DEFAULT.search(entry[0])
        if match:
            assert ast.literal_eval(match["value"]) == params[name].default, entry[0]


# Adapter options whose entries are the config's text: (class, config, options, defaults).
ADAPTER_OPTIONS = [
    (LoraRegressor, LoraConfig, LoraConfig.option_names(), None),
    (QueryableLoraRegressor, QueryableLoraConfig, QueryableLoraConfig.option_names(), None),
    (SharedMemoryRegressor, QueryableLoraConfig, _SHARED_OPTIONS, _SHARED_DEFAULTS),
]


@pytest.mark.parametrize("cls, config, names, defaults", ADAPTER_OPTIONS,
                         ids=[cls.__name__ for cls, *_ in ADAPTER_OPTIONS])
def test_adapter_options_are_the_configs_text(cls, config, names, defaults):
    # parameter_docs wraps at its own indentation (4 here, as in the class body)
    rendered = _entries(textwrap.dedent(parameter_docs(config, names, defaults)).splitlines())
    assert list(rendered) == [n for n in config.option_names() if n in set(names)]
    documented = _section(cls, "Parameters")
    for name, entry in rendered.items():
        assert documented.get(name) == entry, f"{cls.__name__}.{name}"


TRAINING = ("weight_decay", "max_epochs", "batch_size", "early_stopping",
            "validation_fraction", "patience", "device", "random_state", "verbose",
            "callbacks")
_SIX = (MLPRegressor, FineTuneRegressor, LoraRegressor, QueryableLoraRegressor,
        SharedMemoryRegressor, FewShotRegressor)
_ADAPTING = (FineTuneRegressor, LoraRegressor, QueryableLoraRegressor, SharedMemoryRegressor)
_REGULARIZED = (FineTuneRegressor, LoraRegressor, QueryableLoraRegressor)

# Entries meant to read the same in every class listed (ConditionedLoraRegressor documents
# its training settings in its own words and is not listed).
SHARED_PARAMETERS = [
    *[(name, _SIX) for name in TRAINING],
    *[(name, _ADAPTING) for name in ("base", "hidden_layer_sizes")],
    *[(name, _REGULARIZED) for name in ("output_calibration", "calibration_shrinkage",
                                        "regularization", "lr", "l2_strengths",
                                        "max_steps", "tol", "optimizer")],
]
SHARED_ATTRIBUTES = [
    *[(name, _SIX) for name in ("net_", "history_", "n_trainable_params_",
                                "n_features_in_", "feature_names_in_", "n_outputs_")],
    *[(name, _REGULARIZED) for name in ("regularization_path_", "l2_strength_",
                                        "noise_std_")],
]


@pytest.mark.parametrize("name, classes", SHARED_PARAMETERS, ids=[n for n, _ in SHARED_PARAMETERS])
def test_shared_parameters_read_the_same(name, classes):
    for a, b in itertools.combinations(classes, 2):
        entry_a, entry_b = _section(a, "Parameters")[name], _section(b, "Parameters")[name]
        if _signature(a)[name].default == _signature(b)[name].default:
            assert entry_a == entry_b, f"{a.__name__} and {b.__name__} differ on {name}"
        else:  # only the default shown may differ
            assert _without_default(entry_a) == _without_default(entry_b), (
                f"{a.__name__} and {b.__name__} differ on {name}")


@pytest.mark.parametrize("name, classes", SHARED_ATTRIBUTES, ids=[n for n, _ in SHARED_ATTRIBUTES])
def test_shared_attributes_read_the_same(name, classes):
    for a, b in itertools.combinations(classes, 2):
        assert (_section(a, "Attributes", strict=False)[name]
                == _section(b, "Attributes", strict=False)[name]), (
            f"{a.__name__} and {b.__name__} differ on {name}")

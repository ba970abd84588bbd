"""One frozen config per adapter method: its defaults, validation and docs reach
``inject`` and every estimator (``qlsk.adapters.config``)."""

import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

import qlsk.text
from qlsk import LoraRegressor, MLPRegressor, QueryableLoraRegressor
from qlsk.adapters import (
    LORA_OPTIONS,
    QUERIES,
    QUERYABLE_OPTIONS,
    LoraConfig,
    QueryableLoraConfig,
    inject,
    instruction_prior,
)
from qlsk.adapters.ablations import ConstantQuery, StateQuery
from qlsk.adapters.calibration import uncalibrated
from qlsk.adapters.config import QUERY_CHOICES, TEXT_ENCODERS, parameter_docs
from qlsk.adapters.prior_map import _memory_config
from qlsk.estimators.multitask import _SHARED_DEFAULTS, SharedMemoryRegressor
from qlsk.text import embed
from tests.helpers import mlp

QUERYABLE_ESTIMATORS = (QueryableLoraRegressor, SharedMemoryRegressor)
# The options SharedMemoryRegressor does not take: each row's description sets its
# prior (through the prior map), and dropout and key_dim were never offered there.
NOT_SHARED = {"task_description", "dropout", "key_dim"}


def encoder(text):
    """A text encoder that is not the default (a callable, for the test below)."""
    return np.arange(1.0, 7.0) + len(text)


# A value other than the default for every Queryable LoRA option; a new field fails
# test_the_non_default_values_cover_every_option until it is added here.
NON_DEFAULT = {
    "rank": 3, "alpha": 6.0, "dropout": 0.25, "n_atoms": 5, "top_k": 3, "block_size": 3,
    "temperature": 0.8, "routing_noise": 0.2, "key_dim": 6, "prior_strength": 0.5,
    "prior_temperature": 0.7, "task_description": "a smooth response with a sharp ridge",
    "text_encoder": encoder, "query": "state", "freeze_atoms": True,
}

# One invalid value per option; the config and the estimators both refuse each.
INVALID = {
    "rank": 0, "alpha": 0.0, "dropout": 1.0, "n_atoms": 0, "top_k": 0, "block_size": 0,
    "temperature": 0.0, "routing_noise": -0.1, "key_dim": 0, "prior_strength": -1.0,
    "prior_temperature": 0.0, "text_encoder": "bert", "query": "depth",
    "freeze_atoms": "yes",
}


def constructor_defaults(cls) -> dict:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_inject_uses_the_config_defaults():
    for method, config in (("lora", LoraConfig), ("queryable", QueryableLoraConfig)):
        adapted = inject(mlp(), method)
        assert adapted.config == config().to_dict() == config.defaults()
    assert dict(QUERYABLE_OPTIONS) == QueryableLoraConfig.defaults()
    assert dict(LORA_OPTIONS) == LoraConfig.defaults()
    memory = inject(mlp(), "queryable").memory
    defaults = QueryableLoraConfig()
    assert (memory.rank, memory.n_atoms, memory.top_k) == (
        defaults.rank, defaults.n_atoms, defaults.top_k)
    assert memory.prior_strength == defaults.prior_strength


def test_the_options_are_read_only():
    config = QueryableLoraConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rank = 4
    with pytest.raises(TypeError):
        QUERYABLE_OPTIONS["rank"] = 4
    with pytest.raises(ValueError, match="top_k=3 exceeds n_atoms=2"):
        dataclasses.replace(config, n_atoms=2, top_k=3)  # a changed copy is validated


def test_inject_takes_a_config_object():
    by_object = inject(mlp(), QueryableLoraConfig(rank=4, n_atoms=6, query="constant"))
    by_keywords = inject(mlp(), "queryable", rank=4, n_atoms=6, query="constant")
    assert by_object.method == "queryable" and by_object.config == by_keywords.config
    assert isinstance(by_object.memory, ConstantQuery)
    assert inject(mlp(), LoraConfig(rank=2)).method == "lora"
    with pytest.raises(TypeError, match="not both"):
        inject(mlp(), LoraConfig(), rank=2)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_an_invalid_option_is_refused_by_name(name):
    with pytest.raises(ValueError, match=name):
        QueryableLoraConfig(**{name: INVALID[name]})
    net = mlp()
    with pytest.raises(ValueError, match=name):
        inject(net, "queryable", **{name: INVALID[name]})
    assert all(p.requires_grad for p in net.parameters())  # refused before any change


@pytest.mark.parametrize("name", sorted(INVALID))
def test_the_estimators_refuse_what_the_config_refuses(name):
    for cls in (LoraRegressor, *QUERYABLE_ESTIMATORS):
        if name not in cls._get_param_names():
            continue
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
            cls(**{name: INVALID[name]})._validate_params()


def test_unknown_options_are_named():
    with pytest.raises(TypeError, match=r"unknown option.*'n_atoms'"):
        inject(mlp(), "lora", n_atoms=4)
    with pytest.raises(TypeError, match="rnak"):
        QueryableLoraConfig.from_options(rnak=4)
    with pytest.raises(ValueError, match="unknown method"):
        inject(mlp(), "dora")


def test_top_k_above_n_atoms_is_refused_before_pretraining():
    X = np.random.default_rng(0).random((20, 2))
    model = QueryableLoraRegressor(n_atoms=3, top_k=4, max_epochs=10_000)
    with pytest.raises(ValueError, match="top_k=4 exceeds n_atoms=3"):
        model.fit(X, X.sum(axis=1))
    assert not hasattr(model, "base_")


def test_every_option_is_a_constructor_parameter():
    assert set(LoraConfig.option_names()) <= set(LoraRegressor._get_param_names())
    assert set(QueryableLoraConfig.option_names()) <= set(
        QueryableLoraRegressor._get_param_names())
    shared = set(QueryableLoraConfig.option_names()) - set(
        SharedMemoryRegressor._get_param_names())
    assert shared == NOT_SHARED


def test_every_option_has_a_parameter_constraint():
    for cls, config in ((LoraRegressor, LoraConfig),
                        (QueryableLoraRegressor, QueryableLoraConfig),
                        (SharedMemoryRegressor, QueryableLoraConfig)):
        taken = set(config.option_names()) & set(cls._get_param_names())
        assert taken <= set(cls._parameter_constraints), cls.__name__


def test_estimator_defaults_are_the_config_defaults():
    for cls, config, own in ((LoraRegressor, LoraConfig, {}),
                             (QueryableLoraRegressor, QueryableLoraConfig, {}),
                             (SharedMemoryRegressor, QueryableLoraConfig, _SHARED_DEFAULTS)):
        signature = constructor_defaults(cls)
        for name, default in config.defaults().items():
            if name in signature:
                assert signature[name] == own.get(name, default), (cls.__name__, name)
    # and what a default estimator passes to inject is the config's default
    assert QueryableLoraRegressor()._adapter_config() == QueryableLoraConfig.defaults()
    assert LoraRegressor()._adapter_config() == LoraConfig.defaults()
    shared = SharedMemoryRegressor()._adapter_config()
    assert shared == {k: v for k, v in {**QueryableLoraConfig.defaults(),
                                        **_SHARED_DEFAULTS}.items() if k not in NOT_SHARED}


def test_the_non_default_values_cover_every_option():
    defaults = QueryableLoraConfig.defaults()
    assert set(NON_DEFAULT) == set(defaults)
    assert all(NON_DEFAULT[k] != defaults[k] for k in NON_DEFAULT)
    QueryableLoraConfig(**NON_DEFAULT)  # and they are valid together
    assert set(INVALID) == set(defaults) - {"task_description"}  # any value is a text


def test_every_option_reaches_the_adapter():
    rng = np.random.default_rng(0)
    X = rng.random((24, 2))
    y = X @ [1.0, -2.0]
    base = MLPRegressor((8, 8), max_epochs=1, random_state=0).fit(X, y)
    model = QueryableLoraRegressor(
        base=base, regularization="fixed", max_epochs=1, output_calibration=False,
        random_state=0, **NON_DEFAULT).fit(X, y)
    adapted = uncalibrated(model.net_.module_)
    assert adapted.config == NON_DEFAULT
    memory, layers = adapted.memory, adapted.adapted_layers
    assert (memory.rank, memory.n_atoms, memory.top_k, memory.key_dim) == (3, 5, 3, 6)
    assert (memory.temperature, memory.routing_noise, memory.prior_strength) == (
        0.8, 0.2, 0.5)
    assert memory.n_blocks == math.ceil(len(layers) / 3) == 1  # block_size=3, 3 layers
    assert type(memory) is StateQuery  # query="state"
    assert not isinstance(memory.atom_deltas, nn.Parameter)  # freeze_atoms
    assert not memory.atom_deltas.any()
    for layer in layers:
        assert layer.rank == 3 and layer.scale == pytest.approx(6.0 / 3)
        assert layer.dropout.p == 0.25
    expected = instruction_prior(embed(NON_DEFAULT["task_description"], encoder), 5, 0.7)
    torch.testing.assert_close(memory.log_prior, expected)


def test_shared_memory_takes_the_ablation_switches(fam, fam_base):
    switches = {"query": "constant", "freeze_atoms": True, "routing_noise": 0.3}
    model = SharedMemoryRegressor(base=fam_base, max_epochs=1, batch_size=32,
                                  random_state=0, warm_start=True, **switches)
    model.fit(fam.X_train, fam.y_train)
    memory = model.shared_model_.memory
    assert type(memory) is ConstantQuery and memory.routing_noise == 0.3
    assert not isinstance(memory.atom_deltas, nn.Parameter)
    assert {k: model.shared_model_.adapted.config[k] for k in switches} == switches
    # a grown memory keeps its atoms fixed at the identity
    model.set_params(grow_atoms=2).fit(fam.X_train, fam.y_train)
    memory = model.shared_model_.memory
    assert memory.n_atoms == 10 and memory.atom_deltas.shape[0] == 10
    assert not isinstance(memory.atom_deltas, nn.Parameter) and not memory.atom_deltas.any()
    assert "atom_deltas" not in memory.state_dict()


def test_the_docs_come_from_the_config():
    for name in QueryableLoraConfig.option_names():
        assert f"    {name} : " in QueryableLoraRegressor.__doc__, name
    for name in LoraConfig.option_names():
        assert f"    {name} : " in LoraRegressor.__doc__, name
    assert "    rank : int, default=4\n" in SharedMemoryRegressor.__doc__
    assert "    query : " in SharedMemoryRegressor.__doc__
    for f in dataclasses.fields(QueryableLoraConfig):
        assert f.metadata["doc"] and f.metadata["type"], f.name
    assert parameter_docs(LoraConfig, ["alpha"]).startswith("    alpha : float, default=16.0\n")


def test_the_config_names_what_the_library_knows():
    assert set(QUERY_CHOICES) == set(QUERIES)
    assert set(TEXT_ENCODERS) == set(qlsk.text.ENCODERS)
    # a saved memory's configuration uses the options' names where it records one
    shared = SharedMemoryRegressor(rank=2, n_atoms=4)
    adapted = inject(mlp(), "queryable", **shared._adapter_config())
    from qlsk.adapters import PriorMap, SharedMemoryModel

    saved = _memory_config(SharedMemoryModel(adapted, PriorMap(6, 4)))
    shape_only = {"n_blocks", "embedding_dim", "memory_class", "learned"}
    assert set(saved) - shape_only <= set(QueryableLoraConfig.option_names())

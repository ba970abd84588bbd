"""GradientDiagnostics: per-epoch gradient norms and concentration in ``history_``."""

import json
import math

import numpy as np
import pytest
import torch

from qlsk import (
    FineTuneRegressor,
    GradientDiagnostics,
    LoraRegressor,
    MLPRegressor,
    QueryableLoraRegressor,
    load,
    save,
)
from qlsk.adapters import AdaptedModel
from qlsk.estimators.callbacks import layer_grad_norms

EPOCHS = 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.random((40, 3))
    y = np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2]
    base = MLPRegressor(hidden_layer_sizes=(16, 16, 16), max_epochs=30,
                        random_state=0).fit(X, y)
    return X, y + 0.3 * X[:, 0], base


@pytest.mark.parametrize("cls, kwargs", [
    (LoraRegressor, {"rank": 2}),
    (QueryableLoraRegressor, {"rank": 2, "n_atoms": 4}),
    (FineTuneRegressor, {}),
])
def test_records_one_finite_norm_per_layer_every_epoch(data, cls, kwargs):
    X, y, base = data
    model = cls(base=base, max_epochs=EPOCHS, batch_size=16, random_state=0,
                regularization="fixed", callbacks=[GradientDiagnostics()], **kwargs).fit(X, y)
    assert len(model.history_) == EPOCHS
    for row in model.history_:
        norms = row["grad_norms"]
        assert len(norms) == 4  # three hidden layers and the output: four linear layers
        assert all(isinstance(v, float) and math.isfinite(v) for v in norms)
        assert any(v > 0 for v in norms)
        assert row["grad_concentration"] == pytest.approx(max(norms) / np.mean(norms))
        assert 1.0 <= row["grad_concentration"] <= len(norms)
    json.dumps(model.history_)  # plain Python, serialisable


def test_norms_are_the_adapter_gradients_for_adapters_and_weights_for_finetuning(data):
    X, y, base = data
    lora = LoraRegressor(base=base, rank=2, max_epochs=1, regularization="fixed",
                         random_state=0).fit(X, y)
    module = lora.module_
    loss = module(torch.as_tensor(X, dtype=torch.float32)).pow(2).mean()
    module.zero_grad()
    loss.backward()
    norms = layer_grad_norms(module)
    adapted = next(m for m in module.modules() if isinstance(m, AdaptedModel))
    first = adapted.adapted_layers[0]
    expected = torch.sqrt(first.lora_A.grad.pow(2).sum() + first.lora_B.grad.pow(2).sum())
    assert norms[0] == pytest.approx(float(expected))

    tuned = FineTuneRegressor(base=base, max_epochs=1, regularization="fixed",
                              random_state=0).fit(X, y).module_
    tuned.zero_grad()
    tuned(torch.as_tensor(X, dtype=torch.float32)).pow(2).mean().backward()
    linears = [m for m in tuned.modules() if isinstance(m, torch.nn.Linear)]
    assert layer_grad_norms(tuned).tolist() == pytest.approx(
        [float(m.weight.grad.norm()) for m in linears])


def test_off_by_default_and_history_survives_save_and_load(data, tmp_path):
    X, y, base = data
    plain = LoraRegressor(base=base, rank=2, max_epochs=2, regularization="fixed",
                          random_state=0).fit(X, y)
    assert set(plain.history_[0]) == {"epoch", "train_loss", "dur"}
    model = LoraRegressor(base=base, rank=2, max_epochs=2, random_state=0,
                          regularization="fixed", callbacks=[GradientDiagnostics()]).fit(X, y)
    np.testing.assert_allclose(model.predict(X), plain.predict(X), rtol=1e-6)
    save(model, tmp_path / "model")
    assert load(tmp_path / "model").history_ == model.history_


def test_nothing_to_measure_is_refused():
    with pytest.raises(TypeError, match="nothing to take gradient norms of"):
        layer_grad_norms(torch.nn.Linear(2, 2).requires_grad_(False))


def test_one_norm_per_adapted_layer_when_only_some_are_adapted(data):
    X, y, base = data
    model = QueryableLoraRegressor(base=base, rank=2, n_atoms=4, block_size=1,
                                   target_modules=r"layers\.(0|4)", max_epochs=2,
                                   random_state=0, regularization="fixed",
                                   callbacks=[GradientDiagnostics()]).fit(X, y)
    assert [len(row["grad_norms"]) for row in model.history_] == [2, 2]

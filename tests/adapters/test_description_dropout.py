"""Description dropout in a shared-memory model: some training passes run undescribed."""

import numpy as np
import pytest
import torch

from qlsk import SharedMemoryRegressor
from qlsk.adapters import inject
from qlsk.adapters.channels import DescriptionChannels
from qlsk.adapters.prior_map import PriorMap, SharedMemoryModel
from tests.helpers import mlp

EMBEDDING = 6
X = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
E = torch.randn(EMBEDDING, generator=torch.Generator().manual_seed(1))


def _model(dropout):
    torch.manual_seed(0)
    adapted = inject(mlp(n_in=3, width=8, depth=3, seed=0), "queryable", rank=2, n_atoms=4,
                     top_k=2, block_size=1, prior_strength=1.0)
    with torch.no_grad():  # a trained-looking adapter, so the description matters
        for layer in adapted.adapted_layers:
            layer.lora_B.normal_()
    channels = DescriptionChannels("prior+shift", EMBEDDING, adapted.memory.key_dim,
                                   adapted.adapted_layers[0].out_features)
    with torch.no_grad():
        for p in channels.parameters():
            p.normal_(std=0.5)
    return SharedMemoryModel(adapted, PriorMap(EMBEDDING, 4), channels,
                             description_dropout=dropout)


def _run(model, e):
    with torch.no_grad():
        return model(X, e.expand(len(X), -1), torch.zeros(len(X), dtype=torch.long))


def test_training_passes_drop_the_description_at_the_given_rate():
    model = _model(0.5)
    model.eval()
    described, undescribed = _run(model, E), _run(model, torch.zeros(EMBEDDING))
    assert not torch.allclose(described, undescribed)
    model.train()  # no dropout of rows here (LoRA dropout is 0): passes are exact
    torch.manual_seed(3)
    outs = [_run(model, E) for _ in range(200)]
    dropped = sum(torch.allclose(o, undescribed) for o in outs)
    kept = sum(torch.allclose(o, described) for o in outs)
    assert dropped + kept == 200 and 70 <= dropped <= 130


def test_evaluation_and_zero_dropout_never_drop():
    model = _model(0.9)
    model.eval()
    assert all(torch.equal(_run(model, E), _run(model, E)) for _ in range(20))
    plain = _model(0.0)
    for _ in range(20):
        trained = _run(plain.train(), E)
        assert torch.allclose(trained, _run(plain.eval(), E))


@pytest.mark.parametrize("rate", [1.0, -0.1])
def test_rates_outside_zero_to_one_are_refused(rate):
    with pytest.raises(ValueError, match="description_dropout"):
        _model(rate)


@pytest.fixture(scope="module")
def base(fam_base):
    return fam_base


def test_the_estimator_is_reproducible_and_changes_with_dropout(fam, base):
    common = dict(base=base, max_epochs=3, random_state=0)
    one, two = (SharedMemoryRegressor(**common, description_dropout=0.5).fit(
        fam.X_train, fam.y_train) for _ in range(2))
    np.testing.assert_array_equal(one.predict(fam.X_heldout), two.predict(fam.X_heldout))
    none = SharedMemoryRegressor(**common).fit(fam.X_train, fam.y_train)
    assert not np.allclose(one.predict(fam.X_heldout), none.predict(fam.X_heldout))
    with pytest.raises(ValueError, match="description_dropout"):
        SharedMemoryRegressor(base=base, description_dropout=1.0).fit(fam.X_train,
                                                                      fam.y_train)

"""The anchor of a continual stage (qlsk.adapters.anchor) and its use by the memory."""

import pickle

import numpy as np
import pytest
import torch
from torch import nn

import qlsk
from qlsk import SharedMemoryRegressor
from qlsk.adapters.anchor import StageAnchor

TINY = {"max_epochs": 3, "batch_size": 16, "random_state": 0}


def test_the_penalty_is_the_scaled_squared_move_of_the_anchored_predictions():
    torch.manual_seed(0)
    layer = nn.Linear(3, 1)
    X = torch.randn(20, 3)
    anchor = StageAnchor(layer, X, torch.tensor([2.0]), strength=0.5, weight=3.0)
    torch.testing.assert_close(anchor.targets, layer(X).detach())
    assert anchor.penalty().item() == 0.0  # at the anchored weights
    with torch.no_grad():
        layer.bias += 1.0  # every prediction moves by 1, i.e. 1/2 in units of s
    assert anchor.penalty().item() == pytest.approx(0.5 * 3.0 * 0.25, rel=1e-6)
    anchor.penalty().backward()  # a training term: it has a gradient
    assert layer.bias.grad.item() == pytest.approx(0.5 * 3.0 * 2 * 0.5 / 2, rel=1e-6)


def test_bad_settings_are_refused():
    layer = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="non-negative"):
        StageAnchor(layer, torch.randn(4, 3), torch.ones(1), -1.0)
    with pytest.raises(ValueError, match="at least one row"):
        StageAnchor(layer, torch.randn(0, 3), torch.ones(1), 1.0)


def _stages(fam):
    first, second = fam.train_members[:4], fam.train_members[4:]
    return [np.isin(fam.groups_train, members) for members in (first, second)]


def _two_stages(fam, base, anchor):
    model = SharedMemoryRegressor(base=base, warm_start=True, stage_anchor=anchor, **TINY)
    first, second = _stages(fam)
    model.fit(fam.X_train[first], fam.y_train[first])
    after_first = model.predict(fam.X_train[first])
    model.fit(fam.X_train[second], fam.y_train[second])
    return model, after_first


def test_an_anchored_stage_moves_the_earlier_tasks_less(fam_base, fam, tmp_path):
    first, _ = _stages(fam)
    moved = {}
    for anchor in (0.0, 100.0):
        model, after_first = _two_stages(fam, fam_base, anchor)
        moved[anchor] = np.abs(model.predict(fam.X_train[first]) - after_first).mean()
        assert model.shared_model_.penalty is None  # a stage's term, not kept after it
    assert moved[100.0] < 0.5 * moved[0.0]
    # the first stage has nothing to anchor to: it fits as without the parameter
    alone = SharedMemoryRegressor(base=fam_base, warm_start=True, **TINY).fit(
        fam.X_train[first], fam.y_train[first])
    np.testing.assert_array_equal(after_first, alone.predict(fam.X_train[first]))
    # the anchored model saves, loads and pickles like any other
    qlsk.save(model, tmp_path / "m.qlsk")
    loaded = qlsk.load(tmp_path / "m.qlsk")
    assert loaded.stage_anchor == 100.0
    np.testing.assert_allclose(loaded.predict(fam.X_heldout[:5]),
                               model.predict(fam.X_heldout[:5]), rtol=1e-6)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(
        fam.X_heldout[:5]), model.predict(fam.X_heldout[:5]))


def test_a_stage_that_trains_the_same_tasks_again_is_not_anchored(fam_base, fam):
    first, _ = _stages(fam)
    predictions = []
    for anchor in (0.0, 100.0):
        model = SharedMemoryRegressor(base=fam_base, warm_start=True, stage_anchor=anchor,
                                      **TINY)
        for _ in range(2):  # more epochs on the same tasks: nothing earlier to keep
            model.fit(fam.X_train[first], fam.y_train[first])
        predictions.append(model.predict(fam.X_heldout[:5]))
    np.testing.assert_array_equal(*predictions)
    assert SharedMemoryRegressor().stage_anchor == 3.0  # warm stages anchor by default


def test_the_anchor_trains_beside_load_balancing(fam_base, fam):
    first, second = _stages(fam)
    model = SharedMemoryRegressor(base=fam_base, warm_start=True, load_balance=0.1,
                                  stage_anchor=10.0, **TINY)
    model.fit(fam.X_train[first], fam.y_train[first])
    model.fit(fam.X_train[second], fam.y_train[second])  # both terms, every step
    assert np.isfinite(model.predict(fam.X_heldout[:5])).all()
    usage = model.shared_model_.balance.usage
    assert not torch.allclose(usage, torch.full_like(usage, 1 / usage.shape[-1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_an_anchored_stage_trains_on_cuda(fam_base, fam):
    first, second = _stages(fam)
    model = SharedMemoryRegressor(base=fam_base, warm_start=True, device="cuda", **TINY)
    model.fit(fam.X_train[first], fam.y_train[first])
    model.fit(fam.X_train[second], fam.y_train[second])  # the anchor follows the module
    assert np.isfinite(model.predict(fam.X_heldout[:5])).all()


def test_a_negative_anchor_is_refused_before_training(fam, fam_base):
    with pytest.raises(ValueError, match="stage_anchor"):
        SharedMemoryRegressor(base=fam_base, stage_anchor=-1.0).fit(fam.X_train,
                                                                     fam.y_train)

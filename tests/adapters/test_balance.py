"""Load balancing across tasks in a shared memory (qlsk.adapters.balance)."""

import copy
import pickle

import numpy as np
import pytest
import torch

import qlsk
from qlsk import FewShotRegressor, SharedMemoryRegressor
from qlsk.adapters import inject
from qlsk.adapters.balance import RoutingBalance
from qlsk.adapters.prior_map import PriorMap, SharedMemoryModel
from tests.helpers import mlp

EMBEDDING = 6


def _model(strength=1.0, n_atoms=4):
    torch.manual_seed(0)
    adapted = inject(mlp(n_in=3, width=8, depth=3, seed=0), "queryable", rank=2,
                     n_atoms=n_atoms, top_k=2, block_size=1, prior_strength=1.0)
    balance = RoutingBalance(strength, adapted.memory.n_blocks, n_atoms)
    return SharedMemoryModel(adapted, PriorMap(EMBEDDING, n_atoms), balance=balance)


def _pass(model, seed=0):
    X = torch.randn(16, 3, generator=torch.Generator().manual_seed(seed))
    e = torch.randn(EMBEDDING, generator=torch.Generator().manual_seed(seed + 100))
    return model(X, e.expand(len(X), -1), torch.zeros(len(X), dtype=torch.long))


def test_even_usage_gives_the_strength_and_no_gradient_toward_any_atom():
    balance = RoutingBalance(0.5, n_blocks=2, n_atoms=4)
    logits = torch.randn(2, 10, 4, requires_grad=True)
    balance.observe(logits.softmax(-1))
    loss = balance.penalty()
    assert loss.item() == pytest.approx(0.5)  # u = 1/M: strength * M * sum(p)/M
    loss.backward()
    # the softmax's rows sum to one: a constant weight on them has no gradient
    assert logits.grad.abs().max() < 1e-7


def test_the_term_pushes_routing_away_from_overused_atoms_and_updates_the_usage():
    balance = RoutingBalance(1.0, n_blocks=1, n_atoms=3, momentum=0.5)
    balance.usage.copy_(torch.tensor([[0.8, 0.1, 0.1]]))
    logits = torch.zeros(1, 5, 3, requires_grad=True)
    balance.observe(logits.softmax(-1))
    balance.penalty().backward()
    grad = logits.grad.mean(dim=(0, 1))
    assert grad[0] > 0 and grad[1] < 0 and grad[2] < 0  # descent lowers atom 0's logit
    assert torch.allclose(balance.usage, torch.tensor([[0.4 + 1 / 6, 0.05 + 1 / 6,
                                                        0.05 + 1 / 6]]))
    assert balance.penalty().item() == 0.0  # nothing observed since


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="strength must be > 0"):
        RoutingBalance(0.0, 1, 2)
    with pytest.raises(ValueError, match="momentum"):
        RoutingBalance(1.0, 1, 2, momentum=0.0)


def test_only_training_passes_are_observed_and_copies_carry_no_graph():
    model = _model()
    model.eval()
    _pass(model)
    assert model.penalty().item() == 0.0
    model.train()
    _pass(model)
    assert model.balance._batch and model.balance._batch[0].requires_grad
    copied = copy.deepcopy(model)  # would fail on a tensor that carries a graph
    pickle.loads(pickle.dumps(model))
    assert copied.balance._batch == []
    loss = model.penalty()
    assert loss.requires_grad and loss.item() > 0
    loss.backward()
    assert model.memory.keys.grad is not None  # it trains the router


def test_a_model_without_the_term_has_no_penalty():
    torch.manual_seed(0)
    adapted = inject(mlp(n_in=3, width=8, depth=3, seed=0), "queryable", rank=2, n_atoms=4)
    model = SharedMemoryModel(adapted, PriorMap(EMBEDDING, 4))
    assert model.penalty is None and not model.memory.keep_probs


@pytest.fixture(scope="module")
def base(fam_base):
    return fam_base


def _usage_perplexity(model, fam):
    usage = np.stack([model.atom_usage(fam.X_train[fam.groups_train == g]).mean(axis=1)
                      for g in np.unique(fam.groups_train)])  # (tasks, blocks, M)
    mean = usage.mean(axis=0)
    return float(np.exp(-(mean * np.log(np.clip(mean, 1e-12, None))).sum(-1)).mean())


def test_load_balance_spreads_the_tasks_over_more_atoms(fam, base):
    common = dict(base=base, max_epochs=15, random_state=0, channels="prior")
    plain = SharedMemoryRegressor(**common).fit(fam.X_train, fam.y_train)
    balanced = SharedMemoryRegressor(**common, load_balance=0.5).fit(
        fam.X_train, fam.y_train)
    assert _usage_perplexity(balanced, fam) > _usage_perplexity(plain, fam) + 0.5
    assert np.isfinite(balanced.predict(fam.X_heldout)).all()


def test_load_balance_is_validated_saved_and_loaded(fam, base, tmp_path):
    with pytest.raises(ValueError, match="load_balance"):
        SharedMemoryRegressor(base=base, load_balance=-1.0).fit(fam.X_train, fam.y_train)
    model = SharedMemoryRegressor(base=base, max_epochs=2, random_state=0,
                                  load_balance=0.1).fit(fam.X_train, fam.y_train)
    assert not torch.allclose(model.net_.module_.model.balance.usage, torch.tensor(1 / 8))
    qlsk.save(model, tmp_path / "m")
    loaded = qlsk.load(tmp_path / "m")
    assert loaded.load_balance == 0.1
    balance = loaded.net_.module_.model.balance
    assert balance.strength == 0.1 and torch.allclose(balance.usage, torch.tensor(1 / 8))


def test_few_shot_fits_leave_the_multi_task_terms_behind(fam, base, tmp_path):
    shared = SharedMemoryRegressor(base=base, max_epochs=2, random_state=0, load_balance=1.0,
                                   description_dropout=0.5).fit(fam.X_train, fam.y_train)
    qlsk.save(shared, tmp_path / "shared")
    rows, y = fam.X_heldout.iloc[:10], fam.y_heldout[:10]
    fits = [FewShotRegressor(s, freeze_memory=False, regularization="fixed", max_epochs=3,
                             random_state=0).fit(rows, y)
            for s in (shared, qlsk.load(tmp_path / "shared"))]
    for few in fits:
        model = few.net_.module_.model
        assert model.penalty is None and model.description_dropout == 0.0
    # the shared model's running usage (kept by a copy, not by a file) changes nothing
    np.testing.assert_allclose(fits[0].predict(fam.X_heldout), fits[1].predict(fam.X_heldout),
                               rtol=1e-5, atol=1e-6)


def test_each_warm_stage_takes_its_own_load_balance(fam, base):
    first = SharedMemoryRegressor(base=base, max_epochs=2, random_state=0, warm_start=True,
                                  load_balance=0.1, grow_atoms=2)
    first.fit(fam.X_train, fam.y_train)
    model = first.net_.module_.model
    assert model.balance.usage.shape == (model.memory.n_blocks, 8)
    first.set_params(load_balance=0.5).fit(fam.X_train, fam.y_train)  # grows to 10 atoms
    model = first.net_.module_.model
    assert model.balance.strength == 0.5 and model.balance.usage.shape[1] == 10
    first.set_params(load_balance=0.0, grow_atoms=0).fit(fam.X_train, fam.y_train)
    model = first.net_.module_.model
    assert model.penalty is None and not model.memory.keep_probs

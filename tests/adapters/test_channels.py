"""The description channels of a shared-memory model (qlsk.adapters.channels)."""

import copy
import pickle

import numpy as np
import pytest
import torch

import qlsk
from qlsk import FewShotRegressor, SharedMemoryRegressor
from qlsk.adapters import inject
from qlsk.adapters.channels import CHANNELS, DescriptionChannels, parse_channels
from qlsk.adapters.prior_map import PriorMap, SharedMemoryModel
from tests.helpers import mlp, without_param

EMBEDDING = 6


def _model(channels=None, query="state+depth", seed=0):
    torch.manual_seed(seed)
    adapted = inject(mlp(n_in=3, width=8, depth=3, seed=seed), "queryable", rank=2,
                     n_atoms=4, top_k=2, block_size=1, prior_strength=1.0, query=query)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # a trained-looking adapter: B and the atoms away from zero
        for layer in adapted.adapted_layers:
            layer.lora_B.normal_()
        adapted.memory.atom_deltas.normal_(std=0.3)
    built = None if channels is None else DescriptionChannels(
        channels, EMBEDDING, adapted.memory.key_dim, adapted.adapted_layers[0].out_features)
    return SharedMemoryModel(adapted, PriorMap(EMBEDDING, 4), built)


def _randomise(model, std=0.5):
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.channels.parameters():
            p.normal_(std=std)


def _run(model, X, e):
    return model(X, e.expand(len(X), -1), torch.zeros(len(X), dtype=torch.long))


X = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
E1 = torch.randn(EMBEDDING, generator=torch.Generator().manual_seed(1))
E2 = torch.randn(EMBEDDING, generator=torch.Generator().manual_seed(2))


def test_parse_channels_orders_and_refuses_unknown_or_repeated_names():
    assert parse_channels("shift+prior") == ("prior", "shift")
    assert parse_channels(" prior + query ") == ("prior", "query")
    assert parse_channels("+".join(CHANNELS)) == CHANNELS
    for bad in ("", "prior+", "film", "prior+prior"):
        with pytest.raises(ValueError, match="give one or more of"):
            parse_channels(bad)
    with pytest.raises(TypeError, match="string"):
        parse_channels(["prior"])


@pytest.mark.parametrize("channels", ["prior+query", "prior+shift", "prior+shift+scale",
                                      "prior+query+shift+scale"])
def test_added_channels_start_at_the_prior_alone(channels):
    plain, extended = _model(), _model(channels)
    extended.adapted.load_state_dict(plain.adapted.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(_run(extended, X, E1), _run(plain, X, E1), rtol=0, atol=0)
        torch.testing.assert_close(extended.routing, plain.routing, rtol=0, atol=0)


@pytest.mark.parametrize("channels", ["query", "shift", "scale"])
def test_each_channel_carries_the_description(channels):
    model = _model(channels)
    _randomise(model)
    with torch.no_grad():
        one = _run(model, X, E1)
        routing_one = model.routing.clone()
        two = _run(model, X, E2)
    assert not torch.allclose(one, two)
    if channels == "query":  # it acts through the routing alone
        assert not torch.allclose(routing_one, model.routing)
    # without "prior" the prior map is not used: it does not train
    assert not any(p.requires_grad for p in model.prior_map.parameters())


def test_shift_and_scale_act_on_the_first_layers_output():
    model = _model("shift+scale")
    _randomise(model)
    first = model.adapted.adapted_layers[0]
    seen = {}
    hook = model.adapted.adapted_layers[1].register_forward_pre_hook(
        lambda layer, inputs: seen.update(h=inputs[0]))
    with torch.no_grad():
        _run(model, X, E1)
        e = torch.nn.functional.normalize(E1, dim=-1)
        expected = torch.nn.functional.silu(
            first(X) * (1 + model.channels.scale(e)) + model.channels.shift(e))
    hook.remove()
    torch.testing.assert_close(seen["h"], expected)


def test_no_description_goes_through_every_channel_unchanged():
    model = _model("prior+query+shift+scale")
    _randomise(model)
    plain = _model()
    plain.adapted.load_state_dict(model.adapted.state_dict())
    zero = torch.zeros(EMBEDDING)
    with torch.no_grad():
        torch.testing.assert_close(_run(model, X, zero), _run(plain, X, zero), rtol=0, atol=0)


def test_a_pass_leaves_no_tensor_behind_and_the_model_copies():
    model = _model("prior+query+shift+scale")
    _randomise(model)
    out = _run(model, X, E1)
    out.sum().backward()  # every map gets a gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.channels.parameters())
    assert model.memory.query_scale is None
    assert model.channels._shift is None and model.channels._scale is None
    clone = pickle.loads(pickle.dumps(copy.deepcopy(model)))
    with torch.no_grad():
        torch.testing.assert_close(_run(clone, X, E1), _run(model, X, E1))
    # the copy's hook modulates the copy's layer with the copy's maps
    with torch.no_grad():
        clone.channels.shift.weight.zero_()
        clone.channels.scale.weight.zero_()
        assert not torch.allclose(_run(clone, X, E1), _run(model, X, E1))


def test_freeze_memory_freezes_the_channels_too():
    model = _model("prior+query+shift")
    model.freeze_memory()
    frozen = [*model.memory.parameters(), *model.prior_map.parameters(),
              *model.channels.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(layer.lora_A.requires_grad for layer in model.adapted.adapted_layers)


def test_query_channel_needs_a_query_and_widths_must_fit():
    with pytest.raises(ValueError, match="query channel.*has none"):
        _model("prior+query", query="constant")
    adapted = _model().adapted
    with pytest.raises(ValueError, match="width 5, not 8"):
        DescriptionChannels("shift", EMBEDDING, 8, 5).attach(adapted)


# ---- through SharedMemoryRegressor --------------------------------------------------

def test_estimator_with_channels_fits_saves_loads_and_adapts(fam, fam_base, tmp_path):
    model = SharedMemoryRegressor(base=fam_base, channels="prior+shift+scale", max_epochs=3,
                                  random_state=0).fit(fam.X_train, fam.y_train)
    plain = SharedMemoryRegressor(base=fam_base, channels="prior", max_epochs=3,
                                  random_state=0).fit(
        fam.X_train, fam.y_train)
    width = fam_base.module_.layers[0].out_features
    assert (model.n_trainable_params_ - plain.n_trainable_params_
            == 2 * width * model.embedding_dim_)
    pred = model.predict(fam.X_heldout)
    assert not np.allclose(pred, plain.predict(fam.X_heldout))
    qlsk.save(model, tmp_path / "m.qlsk")
    np.testing.assert_array_equal(qlsk.load(tmp_path / "m.qlsk").predict(fam.X_heldout), pred)
    few = FewShotRegressor(model, max_epochs=1, random_state=0).fit(
        fam.X_heldout[:8], fam.y_heldout[:8])
    lora = sum(layer.lora_A.numel() + layer.lora_B.numel()
               for layer in few.shared_model_.adapted.adapted_layers)
    assert few.n_trainable_params_ == lora  # the channels stay as the memory learned them


def test_estimator_refuses_bad_channels_before_pretraining(fam):
    with pytest.raises(ValueError, match="channels='prior\\+film'"):
        SharedMemoryRegressor(channels="prior+film").fit(fam.X_train, fam.y_train)
    with pytest.raises(ValueError, match="query='constant' has none"):
        SharedMemoryRegressor(channels="prior+query", query="constant").fit(
            fam.X_train, fam.y_train)


def test_older_models_load_and_unpickle_as_the_prior_alone(fam, fam_base, tmp_path):
    old = SharedMemoryRegressor(base=fam_base, channels="prior", max_epochs=1,
                                random_state=0).fit(fam.X_train, fam.y_train)
    qlsk.save(old, tmp_path / "m.qlsk")
    loaded = qlsk.load(without_param(tmp_path / "m.qlsk", "channels", tmp_path / "old.qlsk"))
    assert loaded.channels == "prior"
    np.testing.assert_array_equal(loaded.predict(fam.X_heldout), old.predict(fam.X_heldout))
    pickled = pickle.loads(pickle.dumps(old))
    for name in ("channels", "replay_rows", "stage_anchor", "kept_rows"):
        del pickled.__dict__[name]  # as pickled before these parameters existed
    assert pickled.get_params()["channels"] == "prior"
    assert pickled.get_params()["replay_rows"] == 0
    # an old model's next stage anchors and keeps rows as a new model's would
    assert pickled.get_params()["stage_anchor"] == 3.0
    assert pickled.get_params()["kept_rows"] == 100
    for name in ("stage_anchor", "kept_rows"):
        assert qlsk.load(without_param(tmp_path / "m.qlsk", name, tmp_path / f"{name}.qlsk")
                         ).get_params()[name] == SharedMemoryRegressor().get_params()[name]


def test_freeze_memory_keeps_the_memory_and_trains_new_channels(fam, fam_base, tmp_path):
    shared = SharedMemoryRegressor(base=fam_base, max_epochs=1, random_state=0).fit(
        fam.X_train, fam.y_train)
    shared.save_memory(tmp_path / "mem")
    reused = SharedMemoryRegressor(base=fam_base, memory=str(tmp_path / "mem"),
                                   freeze_memory=True, max_epochs=1, random_state=0).fit(
        fam.X_train, fam.y_train)
    model = reused.shared_model_
    assert not any(p.requires_grad for p in model.memory.parameters())
    assert all(p.requires_grad for p in model.channels.parameters())  # not in the file
    assert model.channels.shift.weight.abs().sum() > 0
    qlsk.save(reused, tmp_path / "reused.qlsk")  # loaded, what was frozen stays frozen
    loaded = qlsk.load(tmp_path / "reused.qlsk").shared_model_
    assert not any(p.requires_grad for p in loaded.memory.parameters())
    assert all(p.requires_grad for p in loaded.channels.parameters())

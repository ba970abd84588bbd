"""The ablation switches of Queryable LoRA: each does what it claims, and no more."""

import copy

import pytest
import torch
from torch import nn

from qlsk.adapters import (
    QUERIES,
    QUERYABLE_OPTIONS,
    adapter_state_dict,
    count_trainable_parameters,
    inject,
    load_adapter_state_dict,
    routing_weights,
)
from tests.helpers import mlp

ROUTER = {"memory.keys", "memory.query_proj.weight", "memory.block_embed",
          "memory.depth_queries"}



def train(model, x, steps=5, lr=1e-2):
    """Adam on a random target; returns the names of the parameters that got a gradient."""
    target = torch.randn(*model(x).shape)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam(params.values(), lr=lr)
    learned = set()
    for _ in range(steps):
        opt.zero_grad()
        (model(x) - target).pow(2).mean().backward()
        learned |= {n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0}
        opt.step()
    return learned


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_defaults_are_the_method():
    assert QUERYABLE_OPTIONS["query"] == "state+depth"
    assert QUERYABLE_OPTIONS["freeze_atoms"] is False
    assert list(QUERIES) == ["state+depth", "state", "detached", "constant", "random"]
    x = torch.randn(8, 4)
    torch.manual_seed(3)
    plain = inject(mlp(), "queryable", rank=4, n_atoms=6)
    torch.manual_seed(3)
    explicit = inject(mlp(), "queryable", rank=4, n_atoms=6, query="state+depth",
                      freeze_atoms=False)
    for model in (plain, explicit):
        for layer in model.adapted_layers:
            torch.nn.init.normal_(layer.lora_B, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain(x), explicit(x), rtol=0, atol=0)


@pytest.mark.parametrize("freeze_atoms", [False, True])
@pytest.mark.parametrize("query", list(QUERIES))
@pytest.mark.parametrize("depth, block_size, top_k", [(4, 2, 1), (5, 1, 2), (2, 3, 4)])
def test_every_trainable_parameter_learns_and_router_is_what_the_query_needs(
        query, freeze_atoms, depth, block_size, top_k):
    model = inject(mlp(depth=depth, width=8), "queryable", rank=3, n_atoms=4, top_k=top_k,
                   block_size=block_size, query=query, freeze_atoms=freeze_atoms,
                   task_description="a bump")
    n_blocks = -(-depth // block_size)
    router = {"state+depth": ROUTER, "detached": ROUTER,
              "state": ROUTER - {"memory.depth_queries"},
              "constant": {"memory.keys", "memory.block_embed"}, "random": set()}[query]
    if n_blocks == 1:
        router = router - {"memory.depth_queries"}
    memory_params = {n for n, _ in model.named_parameters() if n.startswith("memory.")}
    assert memory_params == router | ({"memory.atom_deltas"} if not freeze_atoms else set())
    expected = {n for n in memory_params if not freeze_atoms}
    assert {n for n in trainable(model) if n.startswith("memory.")} == expected
    assert train(model, torch.randn(32, 4), steps=4) == trainable(model)


def routing_only_grad_of_first_A(query, block_size):
    """The gradient of the first layer's A when only the routing can carry it.

    With ``B_1 = 0`` the first layer's update is zero and the second layer's input does
    not depend on ``A_1``: ``A_1`` reaches the output only through the routing of the
    second layer (same block) or through the depth summary (next block).
    """
    torch.manual_seed(0)
    model = inject(mlp(depth=2), "queryable", rank=4, n_atoms=6, top_k=2,
                   block_size=block_size, query=query)
    with torch.no_grad():
        model.memory.atom_deltas.normal_(0, 0.3)
        model.adapted_layers[1].lora_B.normal_()
    model(torch.randn(16, 4)).pow(2).sum().backward()
    return model.adapted_layers[0].lora_A.grad, model


@pytest.mark.parametrize("query, same_block, next_block", [
    ("state+depth", True, True), ("state", True, False), ("detached", False, False),
    ("constant", False, False), ("random", False, False)])
def test_which_queries_send_gradient_through_the_routing_into_A(query, same_block,
                                                                  next_block):
    for block_size, expected in ((2, same_block), (1, next_block)):
        grad, model = routing_only_grad_of_first_A(query, block_size)
        assert (grad.abs().sum() > 0) == expected, (block_size, grad.abs().sum())
        for name in trainable(model) & ROUTER:  # the router itself still learns
            assert model.get_parameter(name).grad.abs().sum() > 0, name


@pytest.mark.parametrize("query", ["state", "state+depth"])
def test_only_the_depth_summary_lets_earlier_blocks_steer_routing(query):
    x = torch.randn(16, 4)
    model = inject(mlp(depth=4), "queryable", rank=4, n_atoms=6, block_size=2, query=query)
    width = {"state": 4, "state+depth": 8}[query]
    assert model.memory.query_proj.weight.shape == (8, width)  # (d_k, r or 2r)
    with torch.no_grad():
        model(x)
        before = routing_weights(model)[1]
        # a new A_1 changes block 1's state but, with B = 0, not block 2's
        model.adapted_layers[0].lora_A.normal_()
        model(x)
    assert torch.equal(routing_weights(model)[1], before) == (query == "state")


def test_constant_query_routes_every_row_alike_and_learns():
    model = inject(mlp(depth=6), "queryable", rank=4, n_atoms=8, top_k=2, block_size=2,
                   query="constant")
    x = torch.randn(64, 4) * 3
    before_training = model.memory.block_embed.detach().clone()
    train(model, x)
    with torch.no_grad():
        model(x)
    alpha = routing_weights(model)
    assert (alpha == alpha[:, :1]).all()  # identical across rows
    assert not torch.equal(alpha[0], alpha[1]) or not torch.equal(alpha[1], alpha[2])
    assert not torch.equal(model.memory.block_embed, before_training)


def test_random_routing_is_fixed_through_training_and_saved():
    x = torch.randn(64, 4) * 2
    model = inject(mlp(), "queryable", rank=4, n_atoms=8, top_k=2, query="random")
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n.startswith("memory.") and n != "memory.atom_deltas")
    with torch.no_grad():
        model(x)
    before = routing_weights(model).clone()
    atoms = model.memory.atoms.detach().clone()
    train(model, x, steps=10)
    with torch.no_grad():
        model(x)
    assert torch.equal(routing_weights(model), before)
    assert not torch.equal(model.memory.atoms, atoms)  # the atoms still learn
    assert len(set(before[0].argmax(-1).tolist())) > 1  # input-dependent
    assert not torch.equal(before[0], before[1])  # and different per block
    state = adapter_state_dict(model)
    assert "memory.projection" in state
    fresh = inject(mlp(), "queryable", rank=4, n_atoms=8, top_k=2, query="random")
    load_adapter_state_dict(fresh, state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
    torch.testing.assert_close(routing_weights(fresh), before, rtol=0, atol=0)


def test_random_routing_pools_tokens_of_sequence_inputs():
    net = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 1))
    model = inject(net, "queryable", rank=2, n_atoms=4, top_k=1, block_size=1,
                   query="random")
    x = torch.randn(5, 7, 3)
    assert model(x).shape == (5, 7, 1)
    assert routing_weights(model).shape == (2, 5, 4)


@pytest.mark.parametrize("query", ["state+depth", "random"])
def test_frozen_atoms_stay_identity_and_give_plain_lora(query):
    base = mlp()
    lora = inject(copy.deepcopy(base), "lora", rank=4)
    model = inject(copy.deepcopy(base), "queryable", rank=4, n_atoms=6, query=query,
                   freeze_atoms=True)
    assert "memory.atom_deltas" not in dict(model.named_parameters())
    assert count_trainable_parameters(model) == count_trainable_parameters(lora)
    assert "memory.atom_deltas" not in adapter_state_dict(model)
    train(model, torch.randn(32, 4))
    assert torch.equal(model.memory.atoms, torch.eye(4).expand(6, 4, 4))
    for a, b in zip(lora.adapted_layers, model.adapted_layers):
        a.lora_A.data.copy_(b.lora_A.data)
        a.lora_B.data.copy_(b.lora_B.data)
    x = torch.randn(16, 4)
    torch.testing.assert_close(model(x), lora(x))


def test_bad_ablation_options():
    with pytest.raises(ValueError, match="query must be one of"):
        inject(mlp(), "queryable", query="depth")
    with pytest.raises(ValueError, match="freeze_atoms must be True or False"):
        inject(mlp(), "queryable", freeze_atoms="yes")
    with pytest.raises(TypeError, match="unknown option"):
        inject(mlp(), "lora", query="state")


def routes(model, x):
    model(x)
    return routing_weights(model)


def test_routing_noise_perturbs_training_routes_only_and_is_seeded():
    x = torch.randn(64, 4)
    quiet = inject(mlp(), "queryable", rank=4, n_atoms=8, top_k=2)
    noisy = inject(mlp(), "queryable", rank=4, n_atoms=8, top_k=2, routing_noise=2.0)
    noisy.load_state_dict(quiet.state_dict())
    # evaluation: exactly the noiseless routing
    quiet.eval(), noisy.eval()
    torch.testing.assert_close(noisy(x), quiet(x))
    torch.testing.assert_close(routes(noisy, x), routes(quiet, x))
    # training: other atoms are chosen for some rows, from one seeded generator
    noisy.train()
    torch.manual_seed(0)
    first = routes(noisy, x)
    torch.manual_seed(0)
    torch.testing.assert_close(routes(noisy, x), first)
    assert not torch.equal(first, routes(noisy, x))
    assert ((first > 0).sum(-1) == 2).all()  # still exactly top_k atoms per row
    with pytest.raises(ValueError, match="routing_noise"):
        inject(mlp(), "queryable", routing_noise=-1.0)


def test_routing_noise_on_the_estimator(capsys):
    from qlsk import QueryableLoraRegressor
    from qlsk.simlib import load_task

    task = load_task("forrester-lf-to-hf", n_source=100, n_train=30, random_state=0)
    kw = {"hidden_layer_sizes": (16, 16), "rank": 2, "n_atoms": 4, "max_epochs": 3,
          "max_steps": 30, "random_state": 0}
    base = QueryableLoraRegressor(**kw).fit(task.X_source, task.y_source).base_
    fits = [QueryableLoraRegressor(base=base, routing_noise=1.0, **kw).fit(
        task.X_train, task.y_train).predict(task.X_test) for _ in range(2)]
    plain = QueryableLoraRegressor(base=base, **kw).fit(task.X_train, task.y_train)
    assert (fits[0] == fits[1]).all() and not (fits[0] == plain.predict(task.X_test)).all()
    with pytest.raises(ValueError, match="routing_noise"):
        QueryableLoraRegressor(base=base, routing_noise=-0.1, **kw).fit(task.X_train,
                                                                        task.y_train)

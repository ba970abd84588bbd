"""LoRA and Queryable LoRA as torch modules: the properties in docs/method.md."""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qlsk.adapters import (
    AdaptedModel,
    AtomMemory,
    adapter_grad_norms,
    adapter_state_dict,
    atom_usage,
    count_trainable_parameters,
    gradient_concentration,
    inject,
    load_adapter,
    merge,
    routing_weights,
    save_adapter,
    unmerge,
    usage_entropy,
)
from qlsk.text import embed
from tests.helpers import mlp


class TinyAttention(nn.Module):
    """One self-attention layer with linear q, k, v and out projections, and a head."""

    def __init__(self, d=16):
        super().__init__()
        self.embed = nn.Linear(3, d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.head = nn.Linear(d, 1)

    def forward(self, x):  # (n, tokens, 3)
        h = self.embed(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        att = torch.softmax(q @ k.transpose(1, 2) / 4, dim=-1)
        return self.head(self.out(att @ v).mean(dim=1))


def trained_steps(model, x, steps=3, lr=1e-2):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    opt.zero_grad()
    model(x).pow(2).mean().backward()


@pytest.mark.parametrize("method", ["lora", "queryable"])
def test_output_equals_base_at_init_and_base_never_changes(method):
    base = mlp()
    extra = {} if method == "lora" else {"n_atoms": 6, "block_size": 1,
                                         "task_description": "a smooth surface"}
    model = inject(copy.deepcopy(base), method, rank=4, **extra)
    x = torch.randn(32, 4)
    torch.testing.assert_close(model(x), base(x), rtol=0, atol=0)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    trained_steps(model, x, steps=5)
    for name, p in model.named_parameters():
        if ".base." in name:
            assert not p.requires_grad and p.grad is None
    adapted_base = {k.replace("base_model.", "").replace(".base", ""): v
                    for k, v in model.state_dict().items() if ".base." in k}
    for k, v in frozen.items():
        torch.testing.assert_close(adapted_base[k], v, rtol=0, atol=0)


def assert_every_trainable_parameter_learns(model, x, steps=3):
    """A few Adam steps on a random target (B starts at zero), then every trainable
    parameter must have had a non-zero gradient."""
    target = torch.randn(*model(x).shape)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam(params.values(), lr=1e-2)
    moved = set()
    for _ in range(steps + 1):
        opt.zero_grad()
        (model(x) - target).pow(2).mean().backward()
        moved |= {n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0}
        opt.step()
    assert moved == set(params), sorted(set(params) - moved)


@pytest.mark.parametrize("block_size", [1, 2, 3])
@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6])  # 1 to 5 hidden layers
def test_every_trainable_parameter_learns_in_every_configuration(depth, block_size):
    x = torch.randn(32, 4)
    n_atoms = 4
    for top_k in range(1, n_atoms + 1):
        for description in (None, "a steep ridge"):
            torch.manual_seed(top_k)
            model = inject(mlp(depth=depth, width=8), "queryable", rank=3, n_atoms=n_atoms,
                           top_k=top_k, block_size=block_size,
                           task_description=description)
            n_blocks = -(-depth // block_size)
            if n_blocks > 1:
                assert model.memory.depth_queries.shape == (n_blocks - 1, 3)
            assert_every_trainable_parameter_learns(model, x)


def test_top1_routing_trains_the_router_and_stays_one_hot():
    model = inject(mlp(depth=4), "queryable", rank=4, n_atoms=6, top_k=1)  # two blocks
    trained_steps(model, torch.randn(64, 4))
    for name in ("keys", "query_proj.weight", "block_embed", "depth_queries",
                 "atom_deltas"):
        assert model.memory.get_parameter(name).grad.abs().sum() > 0, name
    alpha = routing_weights(model)  # recorded by the forward pass that had a gradient
    assert ((alpha == 0) | (alpha == 1)).all() and (alpha.sum(-1) == 1).all()


@pytest.mark.parametrize("top_k", [1, 2, 5, 6])
def test_straight_through_routing_is_exact_forward_and_dense_backward(top_k):
    memory = AtomMemory(rank=2, n_atoms=6, n_blocks=1, top_k=top_k, temperature=0.7)
    logits = torch.randn(10, 6, requires_grad=True)
    alpha = memory.route(logits)
    exact = memory.route(logits.detach())  # no gradient: the plain top-k softmax
    assert torch.equal(alpha.detach(), exact)
    assert ((exact > 0).sum(-1) == top_k).all() and (exact >= 0).all()
    torch.testing.assert_close(exact.sum(-1), torch.ones(10))
    top, index = logits.detach().topk(top_k, dim=-1)
    torch.testing.assert_close(exact.gather(-1, index), (top / 0.7).softmax(-1))
    weights = torch.randn(10, 6)
    (alpha * weights).sum().backward()
    dense = logits.detach().requires_grad_()
    ((dense / 0.7).softmax(-1) * weights).sum().backward()
    torch.testing.assert_close(logits.grad, dense.grad)
    assert (logits.grad != 0).all()  # every logit learns, the left-out ones and k = 1 too


@settings(max_examples=25, deadline=None)
@given(n_atoms=st.integers(1, 12), k_frac=st.floats(0, 1), rank=st.integers(1, 6),
       block_size=st.integers(1, 3), temperature=st.floats(0.1, 5), seed=st.integers(0, 99),
       rows=st.integers(1, 20))
def test_routing_is_sparse_and_convex_and_bounded(n_atoms, k_frac, rank, block_size,
                                                 temperature, seed, rows):
    top_k = 1 + int(k_frac * (n_atoms - 1))
    torch.manual_seed(seed)
    model = inject(mlp(depth=4, seed=seed), "queryable", rank=rank, n_atoms=n_atoms,
                   top_k=top_k, block_size=block_size, temperature=temperature)
    with torch.no_grad():
        model.memory.atom_deltas.normal_(0, 0.5)
        model(torch.randn(rows, 4) * 3)
    alpha = routing_weights(model)
    assert alpha.shape == (-(-4 // block_size), rows, n_atoms)
    assert (alpha >= 0).all()
    torch.testing.assert_close(alpha.sum(-1), torch.ones(alpha.shape[:2]))
    assert ((alpha > 0).sum(-1) == top_k).all()
    atoms = model.memory.atoms.detach()
    S = torch.einsum("brm,mij->brij", alpha, atoms)
    norms = torch.linalg.matrix_norm(S, ord=2)
    assert (norms <= torch.linalg.matrix_norm(atoms, ord=2).max() + 1e-5).all()


def test_reduces_to_lora_with_one_identity_atom():
    base = mlp()
    lora = inject(copy.deepcopy(base), "lora", rank=3)
    ql = inject(copy.deepcopy(base), "queryable", rank=3, n_atoms=1, top_k=1)
    ql.memory.atom_deltas.data.zero_()
    ql.memory.atom_deltas.requires_grad_(False)
    # routing over one atom is always 1: the router cannot learn and is frozen
    assert not any(p.requires_grad for p in ql.memory.parameters())
    for a, b in zip(lora.adapted_layers, ql.adapted_layers):
        b.lora_A.data.copy_(a.lora_A.data)
        a.lora_B.data.normal_()
        b.lora_B.data.copy_(a.lora_B.data)
    x = torch.randn(16, 4)
    torch.testing.assert_close(ql(x), lora(x))
    assert not torch.allclose(lora(x), base(x))


def test_prior_strength_steers_routing_and_zero_ignores_it():
    x = torch.randn(200, 4)
    models = {}
    for strength in (0.0, 1e4):
        models[strength] = inject(mlp(), "queryable", rank=4, n_atoms=8, top_k=2,
                                  task_description="oscillating target with a shift",
                                  prior_strength=strength)
        with torch.no_grad():
            models[strength](x)
    prior = models[1e4].memory.prior
    assert prior is not None and torch.isclose(prior.sum(), torch.tensor(1.0))
    favourite = prior.topk(2).indices.tolist()
    for block in routing_weights(models[1e4]):
        for row in block:  # the second weight may underflow to zero at this strength
            assert set(row.nonzero().ravel().tolist()) <= set(favourite)
            assert row.argmax().item() == favourite[0]
    torch.manual_seed(0)
    plain = inject(mlp(), "queryable", rank=4, n_atoms=8, top_k=2, prior_strength=0.0)
    torch.manual_seed(0)
    described = inject(mlp(), "queryable", rank=4, n_atoms=8, top_k=2, prior_strength=0.0,
                       task_description="oscillating target with a shift")
    with torch.no_grad():
        plain(x), described(x)
    torch.testing.assert_close(routing_weights(plain), routing_weights(described))


def test_routing_depends_on_input_and_block():
    model = inject(mlp(depth=4), "queryable", rank=4, n_atoms=8, top_k=2, block_size=1)
    with torch.no_grad():
        model(torch.randn(100, 4) * 2)
    alpha = routing_weights(model)
    chosen = alpha.argmax(-1)
    assert any(len(set(chosen[b].tolist())) > 1 for b in range(alpha.shape[0]))  # rows
    assert not torch.allclose(alpha[0], alpha[1])  # blocks
    usage = atom_usage(alpha)
    assert usage.shape == (4, 8)
    torch.testing.assert_close(usage.sum(-1), torch.ones(4))
    entropy = usage_entropy(usage)
    assert ((entropy >= 0) & (entropy <= np.log(8) + 1e-6)).all()


def test_attention_model_with_token_pooling():
    base = TinyAttention()
    names = ["q", "k", "v", "out"]
    model = inject(copy.deepcopy(base), "queryable", target_modules=names, rank=4,
                   n_atoms=4, top_k=2, block_size=2)
    assert [type(getattr(base, n)) for n in names] == [nn.Linear] * 4
    x = torch.randn(5, 7, 3)
    torch.testing.assert_close(model(x), base(x))
    trained_steps(model, x)
    assert routing_weights(model).shape == (2, 5, 4)
    assert not isinstance(model.base_model.embed, type(model.adapted_layers[0]))
    lora = inject(copy.deepcopy(base), "lora", target_modules=r"q|k|v|out", rank=2)
    assert len(lora.adapted_layers) == 4


def test_layers_out_of_forward_order_raise():
    model = inject(TinyAttention(), "queryable", target_modules=["out", "q", "k", "v"],
                   rank=2, n_atoms=2, top_k=1)
    with pytest.raises(RuntimeError, match="forward order"):
        model(torch.randn(2, 3, 3))


def test_module_apply_reaches_the_atom_memory():
    """``nn.Module.apply(fn)`` (e.g. a custom initialisation) works on an adapted model."""
    model = inject(mlp(), "queryable", rank=4, n_atoms=6)
    seen = []
    model.apply(seen.append)
    assert model.memory in seen
    x = torch.randn(5, 4)
    assert model(x).shape == (5, 1)


def test_adapter_state_round_trip(tmp_path):
    model = inject(mlp(), "queryable", rank=4, n_atoms=6, task_description="shifted peak")
    x = torch.randn(20, 4)
    trained_steps(model, x)
    state = adapter_state_dict(model)
    assert state and all(".base." not in k for k in state)
    save_adapter(model, tmp_path / "adapter.safetensors")
    with pytest.raises(FileExistsError):
        save_adapter(model, tmp_path / "adapter.safetensors")
    fresh = inject(mlp(), "queryable", rank=4, n_atoms=6)
    load_adapter(fresh, tmp_path / "adapter.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
    with pytest.raises(ValueError, match="shapes differ"):
        load_adapter(inject(mlp(), "queryable", rank=4, n_atoms=7),
                     tmp_path / "adapter.safetensors")
    with pytest.raises(ValueError, match="missing"):
        load_adapter(inject(mlp(depth=5), "queryable", rank=4, n_atoms=6),
                     tmp_path / "adapter.safetensors")


def test_lora_merge_gives_same_outputs_and_queryable_refuses():
    model = inject(mlp(), "lora", rank=4)
    for layer in model.adapted_layers:
        layer.lora_B.data.normal_()
    x = torch.randn(10, 4)
    before = model(x).detach()
    merge(model)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    unmerge(model)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="depends on the input"):
        merge(inject(mlp(), "queryable"))


def test_deterministic_under_seed_and_float64():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = inject(mlp(seed=1), "queryable", rank=4, n_atoms=6)
        trained_steps(model, torch.ones(8, 4))
        outs.append(model(torch.ones(3, 4)).detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    model = inject(mlp().double(), "queryable", rank=4, n_atoms=6, task_description="x y z")
    assert model.memory.keys.dtype == torch.float64
    trained_steps(model, torch.randn(8, 4, dtype=torch.float64))
    assert model(torch.randn(8, 4, dtype=torch.float64)).dtype == torch.float64


def test_diagnostics_and_parameter_counts():
    lora = inject(mlp(width=32), "lora", rank=8)
    ql = inject(mlp(width=32), "queryable", rank=8, n_atoms=16, top_k=2)
    assert isinstance(ql, AdaptedModel)
    n_lora, n_ql = count_trainable_parameters(lora), count_trainable_parameters(ql)
    assert n_lora == 8 * ((4 + 32) + 2 * (32 + 32) + (32 + 1))
    extra = 16 * 64 + 16 * 8 + 2 * 8 * 8 + 2 * (8 + 8) - 8  # one block has no depth query
    assert n_ql - n_lora == extra
    trained_steps(ql, torch.randn(16, 4))
    norms = adapter_grad_norms(ql)
    assert norms.shape == (4,) and (norms > 0).all()
    assert gradient_concentration(norms) == pytest.approx(float(norms.max() / norms.mean()))


def test_bad_options():
    with pytest.raises(ValueError, match="unknown method"):
        inject(mlp(), "dora")
    with pytest.raises(TypeError, match="unknown option"):
        inject(mlp(), "lora", n_atoms=4)
    with pytest.raises(ValueError, match="top_k=5 exceeds n_atoms=4"):
        inject(mlp(), "queryable", n_atoms=4, top_k=5)
    with pytest.raises(ValueError, match="no nn.Linear"):
        inject(mlp(), "lora", target_modules="nothing")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda():
    model = inject(mlp(), "queryable", rank=4, n_atoms=6, task_description="abc").cuda()
    trained_steps(model, torch.randn(32, 4, device="cuda"))
    assert routing_weights(model).device.type == "cuda"


def test_lexical_encoder_is_identical_across_processes():
    text = "Borehole water flow with a wide conductivity range"
    code = ("import sys; from qlsk.text import embed; "
            f"sys.stdout.write(embed({text!r}).tobytes().hex())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
            for seed in ("1", "2")}
    assert len(outs) == 1
    assert bytes.fromhex(outs.pop()) == embed(text).tobytes()
    assert embed(text) @ embed(text.lower()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        embed("   ")


def test_semantic_encoder_places_paraphrases_closer_than_unrelated_text():
    a = embed("The target oscillates twice as fast as the source.", "semantic")
    b = embed("Compared with the source, the target's oscillation has double the "
              "frequency.", "semantic")
    c = embed("Water flows through a borehole between two aquifers.", "semantic")
    assert a.shape == (384,)
    assert a @ b > a @ c + 0.2 and a @ b > b @ c + 0.2


@pytest.mark.parametrize("encoder", ["lexical", "semantic"])
def test_unfamiliar_descriptions_are_those_outside_the_seen_spread(encoder):
    from qlsk.simlib import load_family
    from qlsk.text import unfamiliar_descriptions

    fam = load_family("piston-cycle", n_per_member=2, n_test=2, n_source=4, random_state=0)
    seen = sorted(set(fam.X_train["description"]))
    heldout = sorted(set(fam.X_heldout["description"]))  # new combinations of seen phrases
    assert unfamiliar_descriptions(heldout + seen, seen, encoder) == []
    french = "Un piston dont le cycle dure deux fois plus longtemps, sous une charge lourde."
    found = unfamiliar_descriptions([french, seen[0]], seen, encoder)
    assert [f[0] for f in found] == [french]
    text, nearest, similarity, floor = found[0]
    assert nearest in seen and similarity < floor <= 1.0
    assert unfamiliar_descriptions([french], seen[:1], encoder) == []  # no spread to compare

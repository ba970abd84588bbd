"""Time per training step and peak memory: frozen base, plain LoRA, Queryable LoRA.

Run ``python -m benchmarks.adapter_speed`` (``--device cuda`` on a GPU). Prints the
median forward+backward time per batch over repeated runs, timed in turns so that the
machine's noise hits every method alike (``--with-step`` adds the AdamW step), the ratio
to plain LoRA, memory (peak on CUDA; on a CPU the tensors saved for backward), and
trainable parameters, for a small MLP (8 inputs,
3 x 128 hidden, batch 256) and a larger one (4 x 512 hidden, batch 4096) at r = 8,
M = 16, k = 2.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from qlsk.adapters import count_trainable_parameters, inject

CASES = {"small": ((128,) * 3, 256), "large": ((512,) * 4, 4096)}


def mlp(hidden, n_features=8):
    widths = (n_features, *hidden, 1)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def build(method, hidden, rank, n_atoms, top_k, block_size):
    model = mlp(hidden)
    if method == "base":
        return model.requires_grad_(False)  # step_time trains only the last bias
    return inject(model, method, rank=rank,
                  **({"n_atoms": n_atoms, "top_k": top_k, "block_size": block_size}
                     if method == "queryable" else {}))


def make_step(model, X, y, with_step):
    """One training step of ``model`` as a closure (forward, backward, optional AdamW)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:  # the frozen base: train its last bias so backward has work to do
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.bias.requires_grad_(True)
        params = [last.bias]
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        (model(X) - y).pow(2).mean().backward()
        if with_step:
            opt.step()

    return step


def interleaved_times(steps_by_method, n_steps, repeats, device):
    """Median seconds per step of every method, timed in turns so noise hits all alike."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for step in steps_by_method.values():  # warm-up
        for _ in range(10):
            step()
    times = {name: [] for name in steps_by_method}
    for _ in range(repeats):
        for name, step in steps_by_method.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(n_steps):
                step()
            sync()
            times[name].append((time.perf_counter() - t0) / n_steps)
    return {name: statistics.median(t) for name, t in times.items()}


def memory_mib(model, X, y, device):
    """Peak GPU memory of one step on CUDA; on a CPU, the bytes autograd saves for backward.

    A process-wide peak (max RSS) cannot tell methods apart in one process, while the
    tensors saved for backward are what an adapter adds per batch.
    """
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        (model(X) - y).pow(2).mean().backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    seen = {}

    def pack(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        (model(X) - y).pow(2).mean()
    return sum(seen.values()) / 2**20


def format_row(case, method, seconds, lora_seconds, memory, n_trainable, params_vs_lora):
    """One line of the table; a cell whose value is None does not apply and shows "–"."""

    def cell(value, spec, width):
        return f"{'–' if value is None else format(value, spec):>{width}}"

    return (f"{case:6} {method:10} {1e3 * seconds:9.3f} {seconds / lora_seconds:8.2f} "
            f"{cell(memory, '.1f', 9)} {cell(n_trainable, 'd', 10)} "
            f"{cell(params_vs_lora, '.2f', 8)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--n-atoms", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--with-step", action="store_true",
                        help="include the AdamW step in the timed step")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {args.device}, threads "
          f"{torch.get_num_threads()}, r={args.rank} M={args.n_atoms} k={args.top_k} "
          f"block_size={args.block_size}; median of {args.repeats} runs")
    header = (f"{'case':6} {'method':10} {'ms/step':>9} {'vs LoRA':>8} {'mem MiB':>9} "
              f"{'trainable':>10} {'vs LoRA':>8}")
    print(header)
    print("-" * len(header))
    for case in args.cases:
        hidden, batch = CASES[case]
        X = torch.randn(batch, 8, device=args.device)
        y = torch.randn(batch, 1, device=args.device)
        n_steps = 50 if case == "small" else 10
        models = {}
        for method in ("base", "lora", "queryable"):
            torch.manual_seed(0)
            models[method] = build(method, hidden, args.rank, args.n_atoms, args.top_k,
                                   args.block_size).to(args.device)
        times = interleaved_times(
            {m: make_step(model, X, y, args.with_step) for m, model in models.items()},
            n_steps, args.repeats, args.device)
        # The frozen base only times a forward and backward pass (it trains one bias):
        # memory and trainable parameters do not apply to it.
        print(format_row(case, "base", times["base"], times["lora"], None, None, None))
        lora_params = count_trainable_parameters(models["lora"])
        for method in ("lora", "queryable"):
            n = count_trainable_parameters(models[method])
            print(format_row(case, method, times[method], times["lora"],
                             memory_mib(models[method], X, y, args.device), n,
                             n / lora_params))


if __name__ == "__main__":
    main()

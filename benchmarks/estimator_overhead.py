"""Wall time of an estimator's ``fit`` against a minimal hand-written torch loop.

Run ``python -m benchmarks.estimator_overhead``. Both train the same adapted module
(a copy of one pretrained base) on the same data with the same batch size, epochs,
optimizer and loss; the ratio is the cost of the scikit-learn and skorch layers
(validation, seeding, callbacks, history). Prints medians over repeats and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from qlsk import LoraRegressor, MLPRegressor, QueryableLoraRegressor
from qlsk.nn import ScaledMSELoss
from qlsk.simlib import load_task


def hand_loop(module, X, y, scale, lr, epochs, batch_size, seed):
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    loss_fn = ScaledMSELoss(scale)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator)
        for start in range(0, len(X), batch_size):
            index = order[start:start + batch_size]
            opt.zero_grad()
            loss = loss_fn(module(X[index]), y[index])
            loss.backward()
            opt.step()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    task = load_task("park91a-lf-to-hf", n_train=args.n_train, random_state=0)
    X = task.X_train.astype(np.float32)
    y = task.y_train.astype(np.float32).reshape(-1, 1)
    base = MLPRegressor(max_epochs=20, random_state=0).fit(task.X_source, task.y_source)
    print(f"{args.n_train} rows, batch {args.batch_size}, {args.epochs} epochs, "
          f"torch threads {torch.get_num_threads()}; median of {args.repeats} runs")
    print(f"{'estimator':24} {'fit s':>8} {'loop s':>8} {'ratio':>6}")
    for cls, extra in ((LoraRegressor, {"rank": 4}),
                       (QueryableLoraRegressor, {"rank": 4, "n_atoms": 8})):
        kw = dict(base=base, max_epochs=args.epochs, batch_size=args.batch_size,
                  regularization="fixed",
                  random_state=0, **extra)
        fit_times, loop_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model = cls(**kw).fit(X, y)
            fit_times.append(time.perf_counter() - t0)
            # the same adapted module, freshly initialised, trained by hand
            module = copy.deepcopy(model.net_.module_)
            for layer in module.adapted_layers:
                torch.nn.init.zeros_(layer.lora_B)
            scale = module.base_model.y_scale.clone()
            t0 = time.perf_counter()
            hand_loop(module, X, y, scale, 1e-3, args.epochs, args.batch_size, 0)
            loop_times.append(time.perf_counter() - t0)
        fit_t, loop_t = statistics.median(fit_times), statistics.median(loop_times)
        print(f"{cls.__name__:24} {fit_t:8.3f} {loop_t:8.3f} {fit_t / loop_t:6.2f}")


if __name__ == "__main__":
    main()

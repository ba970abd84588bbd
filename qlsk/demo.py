"""A two-minute tour: load a transfer task, pretrain on the source, adapt, compare.

Run ``python -m qlsk.demo [TASK]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from qlsk import FineTuneRegressor, LoraRegressor, MLPRegressor, QueryableLoraRegressor
from qlsk.simlib import list_tasks, load_task


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else "park91a-lf-to-hf"
    task = load_task(name, random_state=0)
    print(f"task {name}: {task.source} -> {task.target}")
    print(f"  source data {task.X_source.shape}, target train {task.X_train.shape} "
          f"(noise sd {task.noise_std:.3g}), clean test {task.X_test.shape}")
    print(f"  description: {task.description}")
    print(f"  ({len(list_tasks())} tasks available: qlsk.simlib.list_tasks())\n")

    def score(model):
        rmse = np.sqrt(np.mean((model.predict(task.X_test) - task.y_test) ** 2))
        return rmse / task.y_test.std()

    t0 = time.perf_counter()
    base = MLPRegressor(max_epochs=100, random_state=0).fit(task.X_source, task.y_source)
    print(f"{'method':28} {'test RMSE/sd':>12} {'trainable':>10} {'fit s':>7}")
    print(f"{'base (source only)':28} {score(base):12.4f} {'-':>10} "
          f"{time.perf_counter() - t0:7.1f}")
    methods = {
        "MLP on the target alone": MLPRegressor(random_state=0),
        "full fine-tuning": FineTuneRegressor(base=base, random_state=0),
        "LoRA": LoraRegressor(base=base, rank=4, random_state=0),
        "Queryable LoRA + prior": QueryableLoraRegressor(
            base=base, rank=4, n_atoms=8, task_description=task.description,
            random_state=0),
    }
    for label, model in methods.items():
        t0 = time.perf_counter()
        model.fit(task.X_train, task.y_train)
        print(f"{label:28} {score(model):12.4f} {model.n_trainable_params_:10d} "
              f"{time.perf_counter() - t0:7.1f}")


if __name__ == "__main__":
    main()

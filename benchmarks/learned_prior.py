"""``python -m benchmarks.learned_prior [EPOCHS]``: the learned against the fixed prior map.

Zero-shot and seen-member error on the ishigami-ab family with the right, a shuffled and
no description, seeds 0 and 1, for the learned map (semantic and lexical encoders) and
the fixed seeded projection, beside task-blind references (the base alone, one LoRA and
one Queryable LoRA on the pooled rows). The protocol and its figures are in
``docs/multitask.md``; one JSON line per result is printed.
"""

import argparse
import json
import time

import numpy as np
import torch

from qlsk import LoraRegressor, MLPRegressor, QueryableLoraRegressor
from qlsk.estimators.multitask import SharedMemoryRegressor
from qlsk.simlib import load_family

CONFIGS = [("semantic", "learned"), ("lexical", "learned"), ("semantic", "fixed")]


def gmean_rmse(model, fam, members, mapping=None, none=False):
    tf = fam.test_frame
    errs = []
    for m in members:
        rows = tf[tf.member == m]
        X = rows[[*fam.feature_names, "description"]]
        if mapping is not None:
            X = X.assign(description=mapping[m])
        p = model.predict(X, use_description=not none)
        sd = fam.members.set_index("member").target_std[m]
        errs.append(np.sqrt(np.mean((p - rows.y.to_numpy()) ** 2)) / sd)
    return float(np.exp(np.mean(np.log(errs))))


def shifted(fam, members):
    d = fam.members.set_index("member").description
    return {m: d[members[(i + 1) % len(members)]] for i, m in enumerate(members)}


def _seed(seed: int, epochs: int) -> None:
    fam = load_family("ishigami-ab", n_per_member=100, n_test=1000, n_source=2000,
                      noise=0.1, random_state=seed)
    t = time.time()
    base = MLPRegressor((64, 64, 64), max_epochs=150, batch_size=64, random_state=seed).fit(
        fam.X_source, fam.y_source)
    print(f"seed {seed} base {time.time() - t:.0f}s", flush=True)
    tr, ho = fam.train_members, fam.heldout_members
    for encoder, prior_map in CONFIGS:
        t = time.time()
        model = SharedMemoryRegressor(base=base, text_encoder=encoder, prior_map=prior_map,
                                      channels="prior",  # the prior map alone
                                      max_epochs=epochs, random_state=seed).fit(
            fam.X_train, fam.y_train)
        row = {"seed": seed, "encoder": encoder, "prior_map": prior_map,
               "seen_right": gmean_rmse(model, fam, tr),
               "seen_shuffled": gmean_rmse(model, fam, tr, shifted(fam, tr)),
               "heldout_right": gmean_rmse(model, fam, ho),
               "heldout_shuffled": gmean_rmse(model, fam, ho, shifted(fam, ho)),
               "heldout_none": gmean_rmse(model, fam, ho, none=True),
               "seconds": round(time.time() - t)}
        print(json.dumps(row), flush=True)
    # task-blind references: the base alone, and one adapter on all rows pooled (the
    # adapters as they were measured: without output calibration)
    Xn = fam.X_train[fam.feature_names].to_numpy()
    plain = {"max_epochs": epochs, "random_state": seed, "output_calibration": False,
             "regularization": "fixed"}
    blind = {"base": base,
             "lora": LoraRegressor(base=base, rank=4, **plain).fit(Xn, fam.y_train),
             "qlora": QueryableLoraRegressor(base=base, rank=4, n_atoms=8, top_k=2,
                                             block_size=1, **plain).fit(Xn, fam.y_train)}
    sds = fam.members.set_index("member").target_std
    tf = fam.test_frame
    for name, est in blind.items():
        row = {"seed": seed, "task_blind": name}
        for part, members in (("seen", tr), ("heldout", ho)):
            errs = []
            for m in members:
                rows = tf[tf.member == m]
                p = est.predict(rows[fam.feature_names].to_numpy())
                errs.append(np.sqrt(np.mean((p - rows.y) ** 2)) / sds[m])
            row[part] = float(np.exp(np.mean(np.log(errs))))
        print(json.dumps(row), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learned_prior",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("epochs", nargs="?", type=int, default=150,
                        help="epochs of every fit (default 150)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for seed in (0, 1):
        _seed(seed, args.epochs)


if __name__ == "__main__":
    main()

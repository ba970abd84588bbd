"""Replay of kept rows in continual stages (qlsk.estimators.replay)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

import qlsk
from qlsk import SharedMemoryRegressor
from qlsk.adapters.prior_map import SharedMemoryModel
from qlsk.estimators.replay import keep_rows, with_replay

TINY = {"max_epochs": 1, "random_state": 0}


def _frame(n_tasks=3, n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.normal(size=n_tasks * n),
                      "description": np.repeat([f"task {i}" for i in range(n_tasks)], n)},
                     index=rng.permutation(1000)[:n_tasks * n])  # not 0..n-1
    return X, rng.normal(size=len(X))


def test_each_stage_keeps_rows_with_their_targets():
    X, y = _frame()
    kept, kept_y = keep_rows(X, y, "description", 32)
    assert len(kept) == 3 * 32 and kept_y.shape == (3 * 32, 1)
    assert len(keep_rows(X, y, "description", 100)[0]) == len(X)  # 40 rows per task: all
    rows = X.reset_index(drop=True)
    for position, (_, row) in zip(kept.index, kept.iterrows()):
        assert row.x == rows.x[position]
    np.testing.assert_array_equal(kept_y[:, 0], y[kept.index])


def test_replay_appends_n_rows_per_earlier_task():
    X1, y1 = _frame(seed=1)
    X2, y2 = _frame(n_tasks=2, n=10, seed=2)
    kept, kept_y = keep_rows(X1, y1, "description", 32)
    stage = {"probe": kept, "probe_y": kept_y}
    X_all, y_all = with_replay(X2, y2, [stage], "description", 5)
    assert len(X_all) == len(X2) + 3 * 5 and y_all.shape == (len(X_all),)
    np.testing.assert_array_equal(y_all[:len(X2)], y2)
    replayed = X_all.iloc[len(X2):]
    assert (replayed.groupby("description").size() == 5).all()
    for (_, row), target in zip(replayed.iterrows(), y_all[len(X2):]):  # rows keep targets
        match = (X1.x == row.x).to_numpy()
        assert y1[match][0] == target
    with pytest.raises(ValueError, match="kept no targets"):
        with_replay(X2, y2, [{"probe": kept, "probe_y": None}], "description", 5)
    with pytest.raises(ValueError, match="output"):
        with_replay(X2, np.c_[y2, y2], [stage], "description", 5)


def test_a_replayed_stage_trains_on_the_earlier_rows_and_is_saved(fam, fam_base, tmp_path):
    first = np.isin(fam.groups_train, fam.train_members[:4])
    fits = {}
    for replay in (0, 16):
        model = SharedMemoryRegressor(base=fam_base, warm_start=True, **TINY)
        model.fit(fam.X_train[first], fam.y_train[first])
        model.set_params(replay_rows=replay)
        model.fit(fam.X_train[~first], fam.y_train[~first])
        fits[replay] = model
    # the same first stage; the second differs only by the replayed rows
    assert not np.allclose(fits[0].predict(fam.X_train[first]),
                           fits[16].predict(fam.X_train[first]))
    kept = fits[16].stages_[0]
    np.testing.assert_array_equal(kept["probe_y"][:, 0], fam.y_train[first][
        kept["probe"].index.to_numpy()])
    qlsk.save(fits[16], tmp_path / "m.qlsk")
    loaded = qlsk.load(tmp_path / "m.qlsk")
    np.testing.assert_array_equal(loaded.stages_[0]["probe_y"], kept["probe_y"])
    loaded.set_params(base=fam_base)
    loaded.fit(fam.X_train[first], fam.y_train[first])  # a third stage, replaying both
    assert len(loaded.stages_) == 3


def test_replay_rows_is_bounded_by_the_kept_rows(fam, fam_base):
    model = SharedMemoryRegressor(base=fam_base, **TINY).fit(fam.X_train, fam.y_train)
    with pytest.raises(ValueError, match="replay_rows=101 is more than the kept_rows=100"):
        model.set_params(replay_rows=101).fit(fam.X_train, fam.y_train)
    with pytest.raises(NotFittedError):  # a refused refit leaves no earlier fit behind
        model.predict(fam.X_train)
    with pytest.raises(ValueError, match="replay_rows=6 is more than the kept_rows=5"):
        SharedMemoryRegressor(base=fam_base, replay_rows=6, kept_rows=5).fit(
            fam.X_train, fam.y_train)
    with pytest.raises(ValueError, match="kept_rows"):
        SharedMemoryRegressor(base=fam_base, kept_rows=0).fit(fam.X_train, fam.y_train)


def test_kept_rows_is_what_every_stage_keeps_and_what_the_anchor_holds(
        fam, fam_base, tmp_path, monkeypatch):
    first = np.isin(fam.groups_train, fam.train_members[:4])
    anchored = []
    set_anchor = SharedMemoryModel.set_anchor

    def record(self, anchor):  # the real method, with the anchor's row count noted
        if anchor is not None:
            anchored.append(len(anchor.rows))
        return set_anchor(self, anchor)

    monkeypatch.setattr(SharedMemoryModel, "set_anchor", record)
    model = SharedMemoryRegressor(base=fam_base, warm_start=True, kept_rows=5, **TINY)
    model.fit(fam.X_train[first], fam.y_train[first])
    probe = model.stages_[0]["probe"]
    assert (probe.groupby("description").size() == 5).all() and len(probe) == 4 * 5
    model.fit(fam.X_train[~first], fam.y_train[~first])
    assert anchored == [4 * 5]  # the four earlier tasks, on their five kept rows each
    qlsk.save(model, tmp_path / "m.qlsk")
    loaded = qlsk.load(tmp_path / "m.qlsk")
    assert loaded.kept_rows == 5
    pd.testing.assert_frame_equal(loaded.stages_[0]["probe"].reset_index(drop=True),
                                  probe.reset_index(drop=True), check_dtype=False)
    X, y = _frame(n_tasks=2, n=120)  # more rows per task than the default keeps
    default = SharedMemoryRegressor(hidden_layer_sizes=(8,), **TINY).fit(X, y)
    assert (default.stages_[0]["probe"].groupby("description").size() == 100).all()

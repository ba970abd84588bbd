"""Replay for continual stages: a few kept rows of every earlier task train again.

Every stage of a :class:`~qlsk.SharedMemoryRegressor` keeps the first ``kept_rows`` rows
of each task with their targets (its ``probe``, which :meth:`route_drift` rescores and
the stage anchor holds). With
``replay_rows=n`` a warm-started stage trains on its own rows plus the first ``n`` kept
rows of every task of the earlier stages: experience replay (e.g. Rolnick et al. 2019),
the plainest guard against forgetting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def keep_rows(X: pd.DataFrame, y, column: str, n_rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The first ``n_rows`` rows of every task of ``X`` (by ``column``) and their
    targets, as a 2-D float array."""
    X = X.reset_index(drop=True)
    kept = X.groupby(column, sort=True).head(n_rows)
    y = np.asarray(y, dtype=np.float64)
    return kept, y.reshape(len(y), -1)[kept.index.to_numpy()]


def with_replay(X: pd.DataFrame, y, stages: list[dict], column: str, n_rows: int):
    """``X, y`` followed by the first ``n_rows`` kept rows per task of every stage.

    Raises
    ------
    ValueError
        If a stage kept no targets (a model saved before replay existed), or ``y``'s
        outputs differ from the kept targets'.
    """
    parts_X, parts_y = [X.reset_index(drop=True)], []
    y = np.asarray(y, dtype=np.float64)
    for index, stage in enumerate(stages):
        if stage.get("probe_y") is None:
            raise ValueError(f"stage {index} kept no targets (it was saved before replay "
                             "existed): set replay_rows=0")
        probe = stage["probe"].reset_index(drop=True)
        chosen = probe.groupby(column, sort=True).head(n_rows).index.to_numpy()
        parts_X.append(probe.iloc[chosen])
        parts_y.append(np.asarray(stage["probe_y"])[chosen])
    width = y.reshape(len(y), -1).shape[1]
    if any(part.shape[1] != width for part in parts_y):
        raise ValueError(f"y has {width} output(s), the earlier stages' kept targets "
                         f"{parts_y[0].shape[1]}")
    replayed = np.concatenate(parts_y) if parts_y else np.empty((0, width))
    y_all = np.concatenate([y.reshape(len(y), -1), replayed])
    return (pd.concat(parts_X, ignore_index=True),
            y_all.ravel() if y.ndim == 1 else y_all)

"""The one runner of every benchmark study: cells, resume, and where they run.

A study is a list of *cells* (e.g. a task and a seed) and a function that computes one
cell's result. :func:`run_cells` writes each finished cell as one JSON line of
``output/cells.jsonl`` (flushed and synced at once), so an interrupted run resumes
where it stopped: finished cells are read back, not recomputed, and a line cut short is
skipped. A folder holding a run of another configuration is refused, never mixed.
:func:`executor` runs callables one after another in this process, in a pool of local
processes, or on a Dask cluster; the grid runner, every serial study, the multi-task
benchmark and the tuning workers all go through it.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed


def cell_key(*parts) -> str:
    """The key of a cell in ``cells.jsonl``: its parts joined by ``|``."""
    return "|".join(map(str, parts))


def read_records(path: str) -> dict[str, dict]:
    """Finished cells' records from ``cells.jsonl`` by key, in file order; a line cut
    short by an interruption is skipped."""
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[record["key"]] = record
    return done


def read_done(path: str) -> dict[str, list[dict]]:
    """The rows of every finished cell of ``cells.jsonl``, by key."""
    return {key: record["rows"] for key, record in read_records(path).items()}


def check_output(config: dict, output: str, same: Callable | None = None) -> None:
    """Refuse ``output`` if it holds a run that may not continue under ``config``
    (``same(previous, config)``, default equality); a folder without a run passes."""
    config_path = os.path.join(output, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            previous = json.load(f)
        if not (same or (lambda a, b: a == b))(previous, config):
            raise SystemExit(f"{output} holds a run with another configuration; "
                             "use a new --output to keep it")


def open_output(config: dict, output: str, same: Callable | None = None) -> str:
    """Prepare ``output`` for ``config``; return the path of its ``cells.jsonl``.

    ``same(previous, config)`` says whether a run already in the folder may continue
    under ``config`` (default: the two are equal); the folder's ``config.json`` is then
    rewritten with ``config``. Otherwise the run is refused with a message.
    """
    os.makedirs(output, exist_ok=True)
    check_output(config, output, same)
    config_path = os.path.join(output, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=1)
    return os.path.join(output, "cells.jsonl")


def _end_last_line(path: str) -> None:
    """Make the file end with a line break, so that the next record appended starts on
    a line of its own: a last line that an interruption cut short is removed, and one
    that is a whole record missing only its line break gets it."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        last = data[data.rfind(b"\n") + 1:]
        try:
            json.loads(last)
        except ValueError:
            f.truncate(len(data) - len(last))
        else:
            f.write(b"\n")


class _Later:
    """A serial "future": the call runs when its result is first asked for."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        if not hasattr(self, "_value"):
            self._value = self.fn(*self.args)
        return self._value


@contextlib.contextmanager
def executor(jobs: int = 1, dask_scheduler: str | None = None):
    """Where calls run: yields ``(submit, completed)``.

    ``submit(fn, *args)`` returns a future; ``completed(futures)`` yields them as they
    finish. ``dask_scheduler`` (``tcp://HOST:PORT``): on that Dask cluster; else
    ``jobs > 1``: a pool of that many local processes (spawned: no forked torch state);
    else one after another in this process, each when ``completed`` reaches it.
    """
    if dask_scheduler:
        from distributed import Client
        from distributed import as_completed as dask_completed

        with Client(dask_scheduler) as client:
            yield (lambda fn, *args: client.submit(fn, *args, pure=False)), dask_completed
    elif jobs > 1:
        pool = ProcessPoolExecutor(max_workers=jobs,
                                   mp_context=multiprocessing.get_context("spawn"))
        try:
            yield pool.submit, as_completed
        finally:
            pool.shutdown(cancel_futures=True)
    else:
        yield (lambda fn, *args: _Later(fn, args)), iter


def run_cells(run_cell: Callable, config: dict, cells: Iterable[tuple], output: str, *,
              jobs: int = 1, dask_scheduler: str | None = None, same: Callable | None = None,
              limit_s: float | None = None, progress: str = "lines") -> dict[str, dict]:
    """Compute the cells of ``config`` not finished in ``output``; return every record.

    Parameters
    ----------
    run_cell : callable
        ``run_cell(config, *cell)`` returns the cell's rows (a list), or a dict with
        ``"rows"`` and anything else to keep in the record.
    cells : iterable of tuple
        Every cell of the study, in the order they should run.
    jobs, dask_scheduler
        Where the cells run (:func:`executor`).
    same : callable or None
        How a run already in ``output`` is compared with ``config`` (:func:`open_output`).
    limit_s : float or None
        Serial runs only: start no new cell after this many seconds (a rerun resumes).
    progress : {"lines", "bar", "none"}
        A line per finished cell, a tqdm bar over cells, or nothing.

    Returns
    -------
    dict
        Every finished cell of ``cells`` (earlier runs' included): key to record
        (``{"key": ..., "rows": [...], ...}``), in the order of ``cells``.
    """
    cells = list(cells)
    cells_path = open_output(config, output, same)
    _end_last_line(cells_path)
    done = read_records(cells_path)
    todo = [c for c in cells if cell_key(*c) not in done]
    if done and todo and progress != "none":
        print(f"resuming: {len(cells) - len(todo)} of {len(cells)} cells already done")
    bar = None
    if progress == "bar" and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="cells", unit="cell")
    if limit_s is not None and (jobs > 1 or dask_scheduler):
        raise ValueError("limit_s needs a serial run (jobs=1, no Dask scheduler)")
    if not todo:
        return {cell_key(*c): done[cell_key(*c)] for c in cells}
    t0 = time.perf_counter()
    try:
        with executor(jobs, dask_scheduler) as (submit, completed), \
                open(cells_path, "a") as out:
            futures = {submit(run_cell, config, *cell): cell for cell in todo}
            for i, future in enumerate(completed(futures)):
                if limit_s is not None and time.perf_counter() - t0 > limit_s:
                    print(f"time limit reached after {i} of {len(todo)} cells; rerun to "
                          "resume")
                    break
                started = time.perf_counter()
                cell = futures[future]
                result = future.result()
                record = {"key": cell_key(*cell),
                          **(result if isinstance(result, dict) else {"rows": result})}
                out.write(json.dumps(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
                done[record["key"]] = record
                if bar is not None:
                    bar.update(1)
                elif progress == "lines":
                    print(f"cell {i + 1}/{len(todo)} {record['key']}: "
                          f"{time.perf_counter() - started:.0f} s", flush=True)
    finally:
        if bar is not None:
            bar.close()
    return {cell_key(*c): done[cell_key(*c)] for c in cells if cell_key(*c) in done}


def write_rows(records: dict[str, dict], output: str, summary: Callable) -> None:
    """Every finished cell's rows to ``output/results.csv``, and ``summary(frame)`` (a
    markdown string) to ``output/summary.md`` and the terminal."""
    import pandas as pd

    rows = [row for record in records.values() for row in record["rows"]]
    if not rows:
        print("no cell finished")
        return
    frame = pd.DataFrame(rows)
    frame.to_csv(os.path.join(output, "results.csv"), index=False)
    text = summary(frame)
    with open(os.path.join(output, "summary.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\n{len(records)} cells; summary.md and results.csv in {output}")

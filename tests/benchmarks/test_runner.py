"""The one runner of the benchmark studies: resume, refusal of another configuration,
records with extra fields, the time limit and the serial executor."""

import json

import pytest

from benchmarks.runner import cell_key, executor, read_done, read_records, run_cells

calls = []


def square(config, name, seed):
    calls.append((name, seed))
    return [{"cell": name, "seed": seed, "value": config["scale"] * seed ** 2}]


def test_cells_run_once_resume_after_a_cut_line_and_keep_their_order(tmp_path):
    config, cells = {"scale": 2}, [("a", 1), ("b", 2), ("c", 3)]
    calls.clear()
    first = run_cells(square, config, cells, str(tmp_path))
    assert calls == cells and list(first) == ["a|1", "b|2", "c|3"]
    assert first["c|3"]["rows"] == [{"cell": "c", "seed": 3, "value": 18}]
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    (tmp_path / "cells.jsonl").write_text(lines[0] + "\n" + lines[2] + "\n" + lines[1][:20])
    calls.clear()
    again = run_cells(square, config, cells, str(tmp_path))
    assert calls == [("b", 2)] and again == first
    assert read_done(str(tmp_path / "cells.jsonl"))["b|2"] == first["b|2"]["rows"]
    with pytest.raises(SystemExit, match="another configuration"):
        run_cells(square, {"scale": 3}, cells, str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text()) == config


def test_a_run_may_grow_where_same_allows_and_records_keep_extra_fields(tmp_path):
    def cell(config, name):
        return {"rows": [name], "seconds": 1.5}

    def grows(previous, config):
        return previous["fixed"] == config["fixed"]

    run_cells(cell, {"fixed": 1, "names": ["a"]}, [("a",)], str(tmp_path), same=grows)
    records = run_cells(cell, {"fixed": 1, "names": ["a", "b"]}, [("a",), ("b",)],
                        str(tmp_path), same=grows)
    assert records["b"] == {"key": "b", "rows": ["b"], "seconds": 1.5}
    assert json.loads((tmp_path / "config.json").read_text())["names"] == ["a", "b"]
    assert list(read_records(str(tmp_path / "cells.jsonl"))) == ["a", "b"]


def test_time_limit_starts_no_new_cell_and_a_rerun_finishes(tmp_path, capsys):
    config, cells = {"scale": 1}, [("a", 1), ("b", 2)]
    calls.clear()
    assert run_cells(square, config, cells, str(tmp_path), limit_s=0.0) == {}
    assert calls == [] and "time limit reached" in capsys.readouterr().out
    assert len(run_cells(square, config, cells, str(tmp_path))) == 2


def test_the_serial_executor_runs_each_call_when_its_result_is_asked_for():
    calls.clear()
    with executor() as (submit, completed):
        futures = [submit(square, {"scale": 1}, "x", i) for i in range(3)]
        assert calls == []
        assert [f.result()[0]["value"] for f in completed(futures)] == [0, 1, 4]
    assert cell_key("t", 0) == "t|0"


def test_a_whole_last_record_missing_its_line_break_is_kept(tmp_path):
    config, cells = {"scale": 1}, [("a", 1), ("b", 2), ("c", 3)]
    run_cells(square, config, cells[:2], str(tmp_path))
    path = tmp_path / "cells.jsonl"
    path.write_text(path.read_text().rstrip("\n"))  # killed before the line break
    calls.clear()
    records = run_cells(square, config, cells, str(tmp_path))
    assert calls == [("c", 3)] and list(records) == ["a|1", "b|2", "c|3"]
    assert list(read_records(str(path))) == ["a|1", "b|2", "c|3"]


def test_a_report_of_another_configuration_is_refused(tmp_path):
    from benchmarks.run import run_serially

    config = {"tasks": ["t"], "seeds": [0], "scale": 1}
    run_cells(lambda c, t, s: [{"task": t}], config, [("t", 0)], str(tmp_path))
    assert run_serially(None, config, str(tmp_path), report_only=True) == [{"task": "t"}]
    with pytest.raises(SystemExit, match="another configuration"):
        run_serially(None, {**config, "scale": 2}, str(tmp_path), report_only=True)
    with pytest.raises(ValueError, match="serial"):
        run_cells(square, config, [("t", 0)], str(tmp_path), jobs=2, limit_s=1.0)


def test_python_m_benchmarks_runs_the_grid_or_the_named_study(capsys):
    import importlib
    import pkgutil

    import benchmarks
    from benchmarks.__main__ import STUDIES, main

    with_main = {m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                 if m.name not in ("__main__", "run")
                 and hasattr(importlib.import_module(f"benchmarks.{m.name}"), "main")}
    assert set(STUDIES) == with_main  # every study is reachable by name
    with pytest.raises(SystemExit) as done:
        main(["gp_kinds", "--help"])
    assert done.value.code == 0 and "python -m benchmarks.gp_kinds" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--dask-scheduler" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown study 'gp_kind'"):
        main(["gp_kind"])
    with pytest.raises(SystemExit) as done:  # the multi-task study's name before its rename
        main(["multitask", "--help"])
    out = capsys.readouterr()
    assert done.value.code == 0 and "python -m benchmarks.described_tasks" in out.out
    assert "now 'described_tasks'" in out.err

"""The ``qlsk`` command line: help, arguments refused before any pretraining,
progress, reproducible runs, studies of another method, and reports."""

import contextlib
import io
import json
import subprocess
import sys
import warnings

import optuna
import pytest

from qlsk import __version__
from qlsk.cli import _print_trial, main
from qlsk.tuning import make_storage

TINY = ["--task", "park91a-lf-to-hf", "--n-source", "200", "--base-epochs", "5",
        "--n-train", "40", "--cv", "2", "--max-epochs", "3", "--max-steps", "30",
        "--method", "lora",
        "--n-trials", "2"]
# Pretraining this base would take hours: a command with it must be refused at once.
HUGE = ["--n-source", "1000000", "--base-epochs", "100000"]


def run(*args):
    """Run ``qlsk`` in this process; return its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def run_process(*args):
    """Run ``qlsk`` in a new process, which fails the test if it hangs in pretraining."""
    return subprocess.run([sys.executable, "-m", "qlsk.cli", *args], capture_output=True,
                          text=True, timeout=120)


def trials(journal, study="s"):
    return optuna.load_study(study_name=study, storage=make_storage(journal)).trials


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two identical runs of a small study, each in its own journal file."""
    folder = tmp_path_factory.mktemp("runs")
    runs = []
    for name in ("a", "b"):
        journal = str(folder / f"{name}.log")
        code, out, err = run("tune", *TINY, "--storage", journal, "--study", "s")
        assert code == 0, err
        runs.append((journal, out, err))
    return runs


def test_help_describes_the_commands_options_and_defaults():
    code, out, _ = run("--help")
    assert code == 0 and "Tune Queryable LoRA" in out and "examples:" in out
    assert run("--version")[1] == f"qlsk {__version__}\n"
    code, out, _ = run("tune", "--help")
    assert code == 0 and "Run trials of an Optuna study" in out
    for text in ("rows of source data the base is pretrained on (default: 2000)",
                 "cross-validation folds of every trial (default: 3)",
                 "(default: 20)", "(default: queryable)"):
        assert text in " ".join(out.split())


REFUSED = [
    (["--n-trials", "0"], "argument --n-trials: must be at least 1, got 0"),
    (["--cv", "1"], "argument --cv: must be at least 2, got 1"),
    (["--storage", "foo://bar"], "qlsk: error: unsupported storage URL scheme 'foo'"),
    (["--storage", "{missing}"], "qlsk: error: storage directory"),
    (["--task", "park91a-lf-to-hff"],
     "qlsk: error: unknown task 'park91a-lf-to-hff'; did you mean 'park91a-lf-to-hf'"),
    (["--method", "dora"], "argument --method: invalid choice: 'dora'"),
    (["--n-train", "3", "--cv", "2"],
     "qlsk: error: --n-train 3 is too small for --cv 2: every fold needs at least 2"),
]
# Runs each command line in one child process (one import of torch for all of them) and
# prints each one's exit status and stderr as JSON.
_CHILD = """
import contextlib, io, json, sys
from qlsk.cli import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_bad_arguments_are_refused_before_pretraining(tmp_path):
    missing = tmp_path / "missing"
    commands = [["tune", *HUGE, *[a.format(missing=missing / "s.log") for a in args]]
                for args, _ in REFUSED]
    # in a child process with a timeout, which fails the test if one hangs in pretraining
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(commands)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for (args, message), (code, err) in zip(REFUSED, json.loads(proc.stdout), strict=True):
        assert code not in (0, None) and message in err, (args, err)
        assert '"' not in err, err
    assert not missing.exists()


def test_a_run_shows_each_trial_and_its_seed_repeats_it(two_runs):
    (journal, out, err), (journal_b, _, _) = two_runs
    assert [line.split(":")[0] for line in err.splitlines() if line.startswith("trial")] == [
        "trial 0 complete", "trial 1 complete"]
    assert out.startswith("study s: 2 trials, best CV R^2")
    a, b = trials(journal), trials(journal_b)
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.value for t in a] == [t.value for t in b]


def test_joining_a_study_with_another_method_is_refused_before_pretraining(two_runs):
    journal = two_runs[0][0]
    proc = run_process("tune", *HUGE, "--method", "queryable", "--storage", journal,
                       "--study", "s")
    assert proc.returncode == 1
    assert proc.stderr.startswith("qlsk: error: study 's' was made with LoraRegressor")
    assert len(trials(journal)) == 2


def test_report_on_a_missing_study_says_so_and_creates_nothing(two_runs, tmp_path):
    missing = tmp_path / "none.log"
    assert run("tune", "--report", "--storage", str(missing), "--study", "s") == (
        1, "", f"qlsk: error: storage {missing} does not exist\n")
    assert not missing.exists()
    other = tmp_path / "notes.txt"
    for text in ("hello\n", "hello"):  # lines that do not parse, or no complete line
        other.write_text(text)
        assert run("tune", "--report", "--storage", str(other), "--study", "s") == (
            1, "", f"qlsk: error: storage {other} is not an Optuna journal file (one that "
                   "qlsk tune --storage writes)\n")
    code, _, err = run("tune", "--report", "--storage", two_runs[0][0], "--study", "t")
    assert code == 1
    assert err == "qlsk: error: study 't' does not exist in this storage; it holds 's'\n"


def test_report_writes_plots_and_summary_without_optuna_warnings(two_runs, tmp_path):
    report = tmp_path / "report"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, _ = run("tune", "--report", "--storage", two_runs[0][0], "--study", "s",
                           "--output", str(report))
    assert code == 0 and out.startswith("report written")
    assert not [w for w in caught if w.category is optuna.exceptions.ExperimentalWarning]
    assert {p.name for p in report.iterdir()} == {"summary.md", "history.png",
                                                 "importances.png"}
    assert "Trials: 2 (2 complete)" in (report / "summary.md").read_text()


def test_the_multifidelity_gp_is_tuned_over_its_kind(tmp_path):
    journal = str(tmp_path / "gp.log")
    args = [a if a != "lora" else "gp" for a in TINY]
    code, out, err = run("tune", *args, "--storage", journal, "--study", "gp")
    assert code == 0, err
    assert {"kind"} == set(trials(journal, "gp")[0].params)
    assert out.startswith("study gp: 2 trials, best CV R^2")


def test_a_repeated_trial_says_whose_value_it_took(capsys):
    rank = optuna.distributions.IntDistribution(1, 4)
    study = optuna.create_study(direction="maximize")
    for attrs in ({}, {"repeat_of": 0}):
        study.add_trial(optuna.trial.create_trial(params={"rank": 2}, distributions={
            "rank": rank}, value=0.5, user_attrs=attrs))
    _print_trial(study, study.trials[1])
    assert capsys.readouterr().err.rstrip().endswith(
        "with rank=2 (as trial 0: its value, not fitted again)")

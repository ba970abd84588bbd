"""Shared fixtures: a real, throwaway PostgreSQL server on loopback; a small task family
and its pretrained base; one BLAS thread.

Markers (registered in pyproject.toml) are set here from what a test uses, so that no
test can forget one: ``postgres`` (the server fixture), ``dask`` (a Dask cluster, by the
test's name), ``slow`` (every test under ``tests/benchmarks/``: the benchmark studies run
end to end). ``pytest`` runs them all; ``pytest -m "not slow"`` is the quick loop while
editing.
"""

import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest
from threadpoolctl import threadpool_limits

BENCHMARK_TESTS = pathlib.Path(__file__).resolve().parent / "benchmarks"


def pytest_collection_modifyitems(items):
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if "dask" in item.name:
            item.add_marker(pytest.mark.dask)
        if BENCHMARK_TESTS in item.path.resolve().parents:
            item.add_marker(pytest.mark.slow)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """Start a PostgreSQL cluster in a temporary folder; yield its URL; stop it."""
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    bindir = bindirs[-1] if bindirs else os.path.dirname(shutil.which("pg_ctl") or "")
    if not bindir or not os.path.exists(os.path.join(bindir, "postgres")):
        pytest.fail("PostgreSQL server binaries not found: install the 'postgresql' "
                    "package (.ci/run does)")
    root = tempfile.mkdtemp(prefix="qlsk-pg-")
    prefix = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), _free_port()

    def run(*cmd):
        subprocess.run([*prefix, os.path.join(bindir, cmd[0]), *cmd[1:]], check=True,
                       capture_output=True, cwd=root)

    run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    run("pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "start", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "qlsk")
        yield f"postgresql://postgres@127.0.0.1:{port}/qlsk"
    finally:
        run("pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def fam():
    """A small task family (ishigami-ab): 16 rows per member, a source for the base."""
    from qlsk.simlib import load_family

    return load_family("ishigami-ab", n_per_member=16, n_test=8, n_source=200,
                       random_state=0)


@pytest.fixture(scope="session")
def fam_base(fam):
    """A small MLP pretrained on the family's source rows (shared: never refit it)."""
    from qlsk import MLPRegressor

    return MLPRegressor((16, 16), max_epochs=3, batch_size=64, random_state=0).fit(
        fam.X_source, fam.y_source)


@pytest.fixture(scope="module")
def one_blas_thread():
    """One BLAS thread for a module of GP fits: they factorise small matrices, which a
    threaded BLAS on 2 busy cores ran 40x slower."""
    with threadpool_limits(1):
        yield

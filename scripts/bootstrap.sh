#!/usr/bin/env bash
# Creates .venv and installs qlsk with its test, text and bench extras. Takes the CPU build of
# torch where the environment has none (an unpinned torch would pull a CUDA build of
# several GB); set QLSK_TORCH to install another torch requirement instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "${QLSK_TORCH:-torch==2.13.0}"
fi
"$VENV/bin/python" -m pip install -q -e ".[test,text,bench]"
touch "$VENV/.installed"

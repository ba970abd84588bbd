# Two commands for a fresh clone: `make benchmark` (the main job) and `make test`.
# Each sets itself up first: .venv with the CPU build of torch and qlsk's extras.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: benchmark test lint setup

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	VENV=$(VENV) bash scripts/bootstrap.sh

setup: $(VENV)/.installed

benchmark: $(VENV)/.installed
	$(PY) -m benchmarks --quick

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto  # one pytest-xdist worker per core, one thread each

# `make demo` and `make test` work on a fresh machine: each creates .venv if missing and
# installs the project with the versions pinned in constraints.txt (with the [hf] extra, so
# the VideoMAE / V-JEPA 2 parity tests run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint format bench clean slurm-up slurm-down test-slurm

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,hf]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/aqa demo --out demo_out

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check aqa_pipeline tests benchmarks
	$(VENV)/bin/ruff format --check aqa_pipeline tests benchmarks

format: setup
	$(VENV)/bin/ruff format aqa_pipeline tests benchmarks
	$(VENV)/bin/ruff check --fix aqa_pipeline tests benchmarks

bench: setup
	$(PY) benchmarks/extract_throughput.py
	$(PY) benchmarks/extract_memory.py

clean:
	rm -rf demo_out .pytest_cache

slurm-up:  ## a one-node Slurm cluster on localhost (needs root; Debian/Ubuntu)
	bash scripts/slurm/start-local-cluster.sh

slurm-down:
	bash scripts/slurm/stop-local-cluster.sh

test-slurm: setup
	$(PY) -m pytest -q tests/test_slurm.py tests/test_launch_local.py

# Two commands on a fresh Debian/Ubuntu machine with Python 3.11+:
#   make demo   - everything set up, a real Airflow 3 runs pg_backup_daily, the result is printed
#   make test   - the whole test suite (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
# Tests mostly wait on servers and subprocesses: 3 workers halve the wall time on 2 cores.
TEST_WORKERS ?= 3
STAMP := $(VENV)/.installed

.PHONY: demo demo-stop test lint bench setup mutants

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m devtools.system_packages
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m devtools.demo run $(DEMO_ARGS)

demo-stop:
	$(PYTHON) -m devtools.demo stop

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

# Break one safety promise at a time in a private copy of the tree; fails if any mutation survives.
mutants: $(STAMP)
	$(VENV)/bin/python -m devtools.mutants $(MUTANTS_ARGS)

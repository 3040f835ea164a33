# medimg — every target sets itself up on a fresh machine (Python 3.10+ with venv).
# torch is installed first with an exact pin, so a CPU machine takes the local CPU
# build instead of several GB of CUDA packages; on a GPU machine the same pin gives CUDA.

VENV    ?= .venv
PYTHON  ?= python3
TORCH   ?= torch==2.13.0
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.medimg-installed
SRC     := medimg tests benchmarks

.PHONY: setup demo test lint typecheck unit site bench docs lock clean help

help:
	@echo "make demo   set up, then run the quickstart workflows (segmentation + classification)"
	@echo "make test   set up, then lint, type-check and run the whole test suite"
	@echo "make bench  set up, then run the benchmarks (prints ratios, writes benchmarks/results)"
	@echo "make docs   regenerate docs/workflow-reference.md and docs/cli.md, build the site into site/"
	@echo "make lock   refresh requirements/constraints.txt (pinned versions) from .venv"

LOCK    := requirements/constraints.txt

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

# Refresh the pinned versions (used by setup, CI and the Docker image) from the current .venv.
lock: setup
	$(PY) -m pip install --quiet -e ".[dev]"
	@echo "# Pinned versions of every package medimg and its [dev] extra install; CI, make test and" > $(LOCK)
	@echo "# the Docker image install with -c. Refresh with: make lock (torch's local +cpu tag dropped)." >> $(LOCK)
	$(PY) -m pip freeze --exclude-editable | grep -v '^medimg' | sed -e 's/+cpu$$//' >> $(LOCK)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/medimg run workflows/quickstart_seg.yaml
	$(VENV)/bin/medimg run workflows/quickstart_cls.yaml
	@echo ""
	@echo "MLflow store:  sqlite:///$(CURDIR)/runs/mlflow.db  (artifacts in runs/mlartifacts)"
	@echo "Outputs:       runs/quickstart_seg  runs/quickstart_cls"
	@echo "Open the UI:   $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db --host 127.0.0.1"

lint: setup
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest

# The documentation site, built strictly (a broken link or docstring warning fails), into a temp folder.
site: setup
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $$(mktemp -d)

test: lint typecheck site unit

bench: setup
	$(PY) -m benchmarks

docs: setup
	$(PY) -m medimg.config.reference > docs/workflow-reference.md
	$(PY) -m medimg.cli.reference > docs/cli.md
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf runs site .pytest_cache .mypy_cache .ruff_cache

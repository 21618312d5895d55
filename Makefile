# Everything goes through .venv, made from nothing but python3 (3.11+) and pip reaching PyPI.
# uv is installed into .venv by pip and syncs the locked dependencies (uv.lock) from there.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SYNCED := $(VENV)/.synced

.DEFAULT_GOAL := help
.PHONY: help setup run services test lint fmt schemas bench

help:
	@echo "make run       start everything on this machine (local services as needed) and a demo tenant"
	@echo "make test      ruff, format check, mypy and pytest against real services (.ci/run calls this)"
	@echo "make services  only PostgreSQL/Redis/NATS: print their URLs, keep them up until Ctrl-C"
	@echo "make lint      ruff check + format check + mypy"
	@echo "make fmt       ruff format + ruff check --fix"
	@echo "make schemas   regenerate schemas/: the OpenAPI file and the snapshot/event JSON Schemas"
	@echo "make bench     the routing-engine and call-lifecycle benchmarks"

$(BIN)/uv:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; $(PYTHON) is " + sys.version.split()[0])'
	@# Debian ships venv's pip bootstrap separately (python3-venv): without it, make the venv bare
	@# and let the system pip install into it.
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV); }
	if [ -x $(BIN)/pip ]; then $(BIN)/pip install --quiet uv; \
	else $(PYTHON) -m pip --python $(BIN)/python install --quiet uv; fi

# Re-sync whenever the lock or the project metadata changes. --inexact keeps uv itself in .venv.
$(SYNCED): $(BIN)/uv pyproject.toml uv.lock
	$(BIN)/uv sync --frozen --inexact
	@touch $@

setup: $(SYNCED)

run: setup
	$(BIN)/vlb run

services: setup
	$(BIN)/vlb services

test: setup
	$(BIN)/python -m launcher.testrun $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: setup
	$(BIN)/python -m control_plane.openapi_export
	$(BIN)/python -m shared.schema_export

bench: setup
	$(BIN)/python -m loadtests.bench_engine
	$(BIN)/python -m loadtests.bench_lifecycle

# Two set-up commands on a fresh machine: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# No telemetry from anything the project starts.
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: venv test lint format bench demo

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; torch==2.13.0 comes from the local CPU wheel.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: venv lint
	$(VENV)/bin/pytest

bench: venv
	$(PY) -m benchmarks

demo: venv
	$(VENV)/bin/charflow train ../shared/corpora/tinyshakespeare/input.txt --corpus tinyshakespeare --preset cpu-small --max-seconds 60
	@echo "MLflow UI: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000"

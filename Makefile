# Two set-up commands on a fresh machine: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# No telemetry from anything the project starts.
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: venv test lint format bench demo services deploy down

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

# The main job on a local stack: Prefect server + process worker + MLflow UI on loopback,
# state under $(CHARFLOW_HOME)/.run/ (docs/flows.md). `make demo` probes every source first
# (a few seconds): where the network does not answer it reads ../shared/corpora, served over
# loopback HTTP; `MIRROR=DIR make demo` always reads DIR. kubernetes-go reads GO_TREE.
# CHARFLOW_HOME (default: this checkout) holds data/, checkpoints/, mlruns/ and .run/ for
# make, the charflow command and the flows alike.
CHARFLOW_HOME ?= $(CURDIR)
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
MIRROR_PORT ?= 8765
GO_TREE ?= /usr/share/gocode/src/k8s.io/utils
STACK := CHARFLOW_HOME=$(abspath $(CHARFLOW_HOME)) CHARFLOW_PROJECT_DIR=$(CURDIR) \
	PREFECT_HOME=$(abspath $(CHARFLOW_HOME))/.run/prefect \
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
	PREFECT_PORT=$(PREFECT_PORT) MLFLOW_PORT=$(MLFLOW_PORT) MIRROR_PORT=$(MIRROR_PORT) \
	GO_TREE=$(GO_TREE)

CHARFLOW := $(STACK) $(VENV)/bin/charflow

services: venv
	$(CHARFLOW) services up $(if $(MIRROR),--mirror $(MIRROR))

# The `charflow` work pool, per-host rate limits and the deployments of every registered
# corpus (generated from the registry: flows/deployments.py).
deploy: services
	$(CHARFLOW) services deploy

# Sources -> stack -> deployments -> `prefect deployment run 'pipeline/demo' --watch` -> the
# per-corpus table and the MLflow link (all in `charflow demo`).
demo: venv
	@$(CHARFLOW) demo $(if $(MIRROR),--mirror $(MIRROR))

# Stops exactly the processes `make services` started (pid files under .run/).
down:
	@if test -x $(VENV)/bin/charflow; then $(CHARFLOW) services down; fi

# Browse the stack's MLflow store (the one the worker writes) in the foreground (Ctrl-C
# stops it); `make services` runs the same UI in the background, so use one or the other
# on a port (docs/tracking.md).
.PHONY: mlflow-ui
mlflow-ui: venv
	$(CHARFLOW) services ui

# MLflow and Prefect servers on PostgreSQL (docs/scaling.md). `make pg-up` starts a
# throwaway cluster on loopback (data in PG_DIR) and prints its URLs; `make mlflow-server` and
# `make prefect-server-pg` run each server on it in the foreground (Ctrl-C stops); clients
# need only MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) or PREFECT_API_URL.
# MLFLOW_ARTIFACTS=s3://bucket/path (+ MLFLOW_S3_ENDPOINT_URL for MinIO) keeps artifacts in S3.
PG_DIR ?= $(CURDIR)/.run/postgres
PG_PORT ?= 5433
MLFLOW_ARTIFACTS ?= $(CURDIR)/.run/mlflow-artifacts
PG := PG_DIR=$(PG_DIR) PG_PORT=$(PG_PORT) PYTHON=$(CURDIR)/$(PY) bash scripts/postgres.sh

.PHONY: pg-up pg-down mlflow-server prefect-server-pg

pg-up:
	@$(PG) up

pg-down:
	@$(PG) down

mlflow-server: venv pg-up
	MLFLOW_PORT=$(MLFLOW_PORT) MLFLOW_ARTIFACTS=$(MLFLOW_ARTIFACTS) $(PG) mlflow-server

prefect-server-pg: venv pg-up
	PREFECT_PORT=$(PREFECT_PORT) PREFECT_HOME=$(CURDIR)/.run/prefect-pg $(PG) prefect-server

"""One data root: every default path (corpora, checkpoints, MLflow store, Prefect home)."""

from __future__ import annotations

import os
from pathlib import Path


def charflow_home() -> Path:
    """Where data/, checkpoints/ and mlruns/ live: $CHARFLOW_HOME, else the working directory."""
    return Path(os.environ.get("CHARFLOW_HOME") or Path.cwd()).resolve()


def data_dir() -> Path:
    """Corpora: data/<name>/ (and the encoded cache under data/.cache/)."""
    return charflow_home() / "data"


def checkpoints_dir() -> Path:
    return charflow_home() / "checkpoints"


def mlruns_dir() -> Path:
    """The local MLflow store: mlflow.db and artifacts/."""
    return charflow_home() / "mlruns"


def run_dir() -> Path:
    """State of the local services (`charflow services`, `make demo`): pids, logs, Prefect home."""
    return charflow_home() / ".run"


def prefect_home() -> Path:
    return run_dir() / "prefect"

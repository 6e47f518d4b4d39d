"""Shared test setup for every test module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Session fixtures shared across test modules.
pytest_plugins = [
    "tests.prefect_fixtures",
    "tests.pg_fixtures",
    "tests.trainer_fixtures",
    "tests.mirror_fixtures",
]

# Nothing the tests start phones home.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CORPORA = SHARED / "corpora"


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    """The real pages and texts in ../shared/corpora (read-only; never copied into the repo)."""
    assert CORPORA.is_dir(), f"missing test corpora at {CORPORA}"
    return CORPORA

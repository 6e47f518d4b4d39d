"""Which code produced a corpus or a model: recorded in manifests and MLflow params."""

from __future__ import annotations

import subprocess
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(CHECKOUT), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> str:
    """Git short sha of the checkout, "-dirty" when tracked files are modified; outside a
    checkout the installed package version; "unknown" if neither. Never raises."""
    sha = _git("rev-parse", "--short", "HEAD")
    if sha:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return f"{sha}-dirty" if dirty else sha
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("charflow")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    """The full sha of the checkout's HEAD (MLflow's `mlflow.source.git.commit`), if any."""
    return _git("rev-parse", "HEAD")

import os
from pathlib import Path


def charflow_home() -> Path:
    """Where data/, checkpoints/ and mlruns/ live: $CHARFLOW_HOME, else the working directory."""
    return Path(os.environ.get("CHARFLOW_HOME") or Path.cwd()).resolve()

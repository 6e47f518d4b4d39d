"""Helpers to start several real Python processes at one instant (a start time they all
sleep until, after their imports), so that races happen rather than being hoped for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.servers import QUIET_ENV

REPO = Path(__file__).resolve().parent.parent.parent

# Imports first (seconds on a busy machine), then sleep until the shared start time.
PRELUDE = """
import os, sys, time
sys.path.insert(0, {repo!r})
import mlflow, torch  # noqa: F401  (the slow part, before the start line)
from training.tracking import RunTracker  # noqa: F401
from training import registry  # noqa: F401
time.sleep(max(0.0, float(os.environ["START_AT"]) - time.time()))
"""


def start_together(
    scripts: list[str], env: dict[str, str], cwd: Path, lead_s: float = 12.0
) -> list[subprocess.Popen]:
    """Start one process per script; each runs PRELUDE, then its script at one instant."""
    start_at = time.time() + lead_s
    full_env = {**os.environ, **QUIET_ENV, **env, "START_AT": repr(start_at)}
    procs = []
    for script in scripts:
        code = PRELUDE.format(repo=str(REPO)) + script
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code], env=full_env, cwd=cwd, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    return procs


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of each; kills all and fails past the deadline."""
    end = time.monotonic() + timeout_s
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, end - time.monotonic()))
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results

"""Helpers to start several real Python processes at one instant (a barrier they all pass
after their imports), so that races happen rather than being hoped for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.servers import QUIET_ENV

REPO = Path(__file__).resolve().parent.parent.parent

# Imports first (seconds on a busy machine), then a barrier: each process says it is ready
# and waits until all are, so the script after it starts at one instant in every process.
# `barrier(name, extra)` is there for later rounds; `extra` counts other members (the test
# itself, releasing a round with `release`).
PRELUDE = """
import os, sys, time
sys.path.insert(0, {repo!r})
import mlflow, torch  # noqa: F401  (the slow part, before the start line)
from training.tracking import RunTracker  # noqa: F401
from training import registration  # noqa: F401

def barrier(name, extra=0):
    folder = os.path.join(os.environ["BARRIER_DIR"], name)
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, f"ready-{{os.getpid()}}"), "w").close()
    deadline = time.monotonic() + 600
    while len(os.listdir(folder)) < int(os.environ["BARRIER_N"]) + extra:
        assert time.monotonic() < deadline, "the other processes never got ready"
        time.sleep(0.02)

barrier("start")
"""


def start_together(scripts: list[str], env: dict[str, str], cwd: Path) -> list[subprocess.Popen]:
    """Start one process per script; each runs PRELUDE, then its script at one instant.
    Barriers live in `<cwd>/barriers`."""
    barrier = cwd / "barriers"
    barrier.mkdir()
    full_env = {**os.environ, **QUIET_ENV, **env}
    full_env |= {"BARRIER_DIR": str(barrier), "BARRIER_N": str(len(scripts))}
    procs = []
    for script in scripts:
        code = PRELUDE.format(repo=str(REPO)) + script
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=full_env,
                cwd=cwd,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
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


def release(cwd: Path, name: str) -> None:
    """The test's own arrival at barrier `name` (scripts call barrier(name, extra=1))."""
    folder = cwd / "barriers" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ready-test").touch()

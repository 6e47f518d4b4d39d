"""Invariants: every run ends in a final state, and what a run logged before it was killed
reaches the store with no step missing or repeated (issue 15, defect 6).

Real processes logging through RunTracker into a SQLite store, killed with real signals:
- SIGKILL: the run is left RUNNING; `charflow sync RUN_DIR` sends every metric the process
  logged (they were in the run folder's journal) and ends the run KILLED.
- SIGKILL, then a resume in the folder: the journal is sent first, the re-run steps after
  the last checkpoint are not logged twice, the run notes that its last segment was killed.
- SIGINT (Ctrl-C): the run ends KILLED, not FAILED.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import CORPORA
from tests.faults.procs import REPO
from tests.faults.servers import QUIET_ENV

CHARFLOW = Path(sys.executable).with_name("charflow")

# A training stand-in: logs a metric per step (flushing every 5 steps, as the trainer does
# before each checkpoint) and says which step it has logged, until it is killed.
LOGGER = """
import sys, time
sys.path.insert(0, {repo!r})
from training.tracking import RunTracker
run_id = sys.argv[2] if len(sys.argv) > 2 else None
first = int(sys.argv[3]) if len(sys.argv) > 3 else 1
with RunTracker("killed", run_id=run_id, journal_dir=sys.argv[1]) as run:
    run.log_params({{"max_steps": 1000 if run_id is None else 2000}})
    print("run", run.run_id, flush=True)
    for step in range(first, first + {steps}):
        run.log_metrics({{"train_loss": 1.0 / step}}, step)
        if step % 5 == 0:
            run.flush()
        print("logged", step, flush=True)
        time.sleep({pause})
"""


def start_logger(tmp_path: Path, run_dir: Path, *args: str, steps=1000, pause=0.02):
    script = tmp_path / f"logger-{steps}.py"
    script.write_text(LOGGER.format(repo=str(REPO), steps=steps, pause=pause))
    env = {**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": store_uri(tmp_path)}
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def read_until(proc: subprocess.Popen, last_step: int) -> tuple[str, int]:
    """(run id, last step logged) once the process has logged `last_step`."""
    run_id, step = "", 0
    deadline = time.monotonic() + 180
    while step < last_step:
        assert time.monotonic() < deadline, "the logger is too slow"
        line = proc.stdout.readline()
        assert line, f"the logger ended early:\n{proc.stderr.read()[-3000:]}"
        kind, value = line.split()
        if kind == "run":
            run_id = value
        else:
            step = int(value)
    return run_id, step


def kill_after(proc: subprocess.Popen, last_step: int) -> tuple[str, int]:
    run_id, _ = read_until(proc, last_step)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # Lines already printed are steps logged before the kill.
    rest = proc.stdout.read().split()
    steps = [int(v) for k, v in zip(rest[::2], rest[1::2], strict=True) if k == "logged"]
    return run_id, max([last_step, *steps])


def steps_of(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))


@pytest.mark.timeout(300)
def test_a_killed_run_is_synced_and_ends_killed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_logger(tmp_path, run_dir)
    run_id, last = kill_after(proc, 42)  # 42: two steps after the last flush
    client = MlflowClient(store_uri(tmp_path), store_uri(tmp_path))
    assert client.get_run(run_id).info.status == "RUNNING"  # what SIGKILL leaves

    done = subprocess.run(
        [CHARFLOW, "sync", run_dir],
        env={**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"run {run_id} was left RUNNING by a dead process: now KILLED" in done.stdout
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "died" in run.data.tags["charflow.killed"]
    assert steps_of(client, run_id) == list(range(1, last + 1))


@pytest.mark.timeout(300)
def test_sync_refuses_a_folder_a_live_process_writes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_logger(tmp_path, run_dir, pause=0.2)
    try:
        read_until(proc, 2)
        done = subprocess.run(
            [CHARFLOW, "sync", run_dir],
            env={**os.environ, **QUIET_ENV},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f"charflow: error: the MLflow journal in {run_dir} is in use by process {proc.pid} "
            "(it sends its own records)"
        ]
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.timeout(300)
def test_a_resume_after_sigkill_has_every_step_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_id, last = kill_after(start_logger(tmp_path, run_dir), 37)
    # The resumed segment restarts from a checkpoint a few steps back: those steps come
    # again, as a resumed training re-runs them.
    restart = last - 4
    resumed = start_logger(tmp_path, run_dir, run_id, str(restart), steps=20, pause=0)
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err[-3000:]

    client = MlflowClient(store_uri(tmp_path), store_uri(tmp_path))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert steps_of(client, run_id) == list(range(1, restart + 20))  # none missing, none twice
    assert run.data.params["max_steps"] == "1000"
    assert run.data.params["resume.1.max_steps"] == "2000"
    assert "previous segment died" in run.data.tags["charflow.resume.1"]
    assert not (run_dir / "mlflow-pending.jsonl").exists()  # everything was sent


@pytest.mark.timeout(300)
def test_ctrl_c_ends_the_run_killed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_logger(tmp_path, run_dir)
    run_id, _ = read_until(proc, 10)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "KeyboardInterrupt" in err
    run = MlflowClient(store_uri(tmp_path), store_uri(tmp_path)).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["charflow.killed"] == "interrupted (Ctrl-C / SIGINT or SIGTERM)"
    assert "failure" not in run.data.tags


# -- the real trainer ----------------------------------------------------------------------


def start_training(tmp_path: Path, out: Path) -> subprocess.Popen:
    text = tmp_path / "shakespeare.txt"
    text.write_bytes((CORPORA / "tinyshakespeare" / "input.txt").read_bytes()[:200_000])
    env = {**os.environ, **QUIET_ENV, "MLFLOW_TRACKING_URI": store_uri(tmp_path)}
    env |= {"CHARFLOW_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    argv = [
        CHARFLOW, "train", text, "--corpus", "trainer", "--preset", "tiny",
        "--max-steps", "1000000", "--max-seconds", "120", "--out", out,
    ]  # fmt: skip
    return subprocess.Popen(
        argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def wait_for_line(proc: subprocess.Popen, prefix: str) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, "training ended early"
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r} in 180 s")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; kill, a cancel
def test_ctrl_c_in_charflow_train_ends_the_run_killed_and_registers_nothing(tmp_path, sig):
    proc = start_training(tmp_path, tmp_path / "run")
    try:
        run_id = wait_for_line(proc, "MLflow run ").split()[2].rstrip(":")
        wait_for_line(proc, "step ")  # an evaluation: there is a checkpoint to resume from
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "interrupted at step" in err  # a checkpoint to resume from was saved
    client = MlflowClient(store_uri(tmp_path), store_uri(tmp_path))
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "model_version" not in run.data.tags
    assert not client.search_model_versions("name = 'charflow-trainer'")


@pytest.mark.timeout(300)
def test_charflow_train_killed_before_its_first_checkpoint_is_ended_by_sync(tmp_path):
    out = tmp_path / "run"
    proc = start_training(tmp_path, out)
    try:
        run_id = wait_for_line(proc, "MLflow run ").split()[2].rstrip(":")
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    client = MlflowClient(store_uri(tmp_path), store_uri(tmp_path))
    assert client.get_run(run_id).info.status == "RUNNING"
    done = subprocess.run(
        [CHARFLOW, "sync", out], env={**os.environ, **QUIET_ENV},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert client.get_run(run_id).info.status == "KILLED"

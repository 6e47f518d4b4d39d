"""Invariant: processes that start together against a new SQLite store all get a working
store — its schema is created (or upgraded) once, under a file lock beside the database
(issue 15, defect 0)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.faults.procs import start_together, wait_all

PROCESSES = 4

CREATE_RUN = """
with RunTracker(sys.argv[1] if len(sys.argv) > 1 else "race-{i}") as run:
    run.log_params({{"process": {i}}})
    run.log_metrics({{"train_loss": 1.0 + {i}}}, 1)
print(run.run_id)
"""


@pytest.mark.timeout(300)
def test_processes_starting_together_on_a_new_store_all_succeed(tmp_path: Path) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "CHARFLOW_HOME": str(tmp_path)}
    scripts = [CREATE_RUN.format(i=i) for i in range(PROCESSES)]
    results = wait_all(start_together(scripts, env, tmp_path), timeout_s=240)

    failures = [err[-1500:] for code, _, err in results if code != 0]
    assert not failures, f"{len(failures)} of {PROCESSES} failed:\n" + "\n---\n".join(failures)
    run_ids = [out.strip().splitlines()[-1] for _, out, _ in results]
    client = MlflowClient(f"sqlite:///{db}")
    for i, run_id in enumerate(run_ids):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params == {"process": str(i)}
        assert run.data.metrics == {"train_loss": 1.0 + i}
    assert db.with_name("mlflow.db.lock").exists()  # the lock file lives beside the store

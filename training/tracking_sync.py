"""`charflow sync RUN_DIR`: send what a run folder's journal holds and settle its run.

A training that ended or died while the store was away leaves its records in the run
folder's journal (training/tracking_journal.py); this sends them with the same batching as
the live sender (training/tracking_sender.py) and ends a run no process writes any more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.errors import TrainingError
from training.mlflow_setup import check_tracking_store, configure_mlflow
from training.tracking_journal import Journal, is_transient, reason
from training.tracking_sender import (
    apply_records,
    next_batch,
    print_notice,
    settle_run,
    store_label,
)


@dataclass
class SyncResult:
    folder: Path
    run_id: str | None
    tracking_uri: str | None
    sent: int  # records sent now
    found: str | None  # the run's status before: RUNNING with no live process -> now KILLED

    def describe(self) -> str:
        if self.run_id is None and not self.sent:
            return f"{self.folder}: nothing waits to be sent to MLflow"
        parts = [f"{self.folder}: sent {self.sent} waiting records to {self.tracking_uri}"]
        if self.found == "RUNNING":
            parts.append(f"run {self.run_id} was left RUNNING by a dead process: now KILLED")
        elif self.run_id:
            parts.append(f"run {self.run_id} is {self.found}")
        return "; ".join(parts)


def sync_run_dir(folder: Path | str, notify: Callable[[str], None] | None = None) -> SyncResult:
    """Send what a run folder's journal holds (a training ended or died while the store was
    away), and end its run KILLED if no process is running it any more (the journal's lock
    is free) and the store still has it RUNNING."""
    from mlflow import MlflowClient

    folder = Path(folder)
    notify = notify or print_notice
    if not folder.is_dir():
        raise TrainingError(f"no such run folder: {folder}")
    journal = Journal(folder).open()  # a live training holds it: one line naming it
    try:
        info = journal.read_run()
        if info is None and not journal.pending():
            return SyncResult(folder, None, None, 0, None)
        if info is None:
            raise TrainingError(f"{folder} holds MLflow records but no {folder}/mlflow-run.json")
        uri, registry_uri = info["tracking_uri"], info.get("registry_uri") or info["tracking_uri"]
        check_tracking_store(uri)
        configure_mlflow(uri, registry_uri)  # a deferred registration logs its model there
        client = MlflowClient(uri, registry_uri)
        sent, single = 0, False
        while pending := journal.pending():
            batch = pending[:1] if single else next_batch(pending)
            try:
                apply_records(client, batch, journal.files_dir)
            except Exception as err:
                if is_transient(err):
                    raise TrainingError(
                        f"{store_label(uri)} failed after {sent} records ({reason(err)}); "
                        f"{len(pending)} still wait in {journal.path}: run `charflow sync` again"
                    ) from None
                if len(batch) > 1:  # one by one: only the refused record is dropped
                    single = True
                    continue
                notify(
                    f"warning: {store_label(uri)} refused a tracking record ({batch[0]['op']}): "
                    f"{reason(err)}; dropped"
                )
            single = False
            journal.ack(batch[-1]["seq"])
            sent += len(batch)
        found = settle_run(client, info["run_id"], "its training process died without ending it")
        journal.forget_run()
        return SyncResult(folder, info["run_id"], uri, sent, found)
    finally:
        journal.close()

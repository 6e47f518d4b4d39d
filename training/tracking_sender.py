"""Sending a run's journaled records to the MLflow store: batching, applying, settling.

`Sender` is the background thread of a live `training.tracking.RunTracker`: it sends the
journal's records (training/tracking_journal.py) in order, at most every FLUSH_SECONDS, and
waits out a store that is away. `next_batch`, `apply_records` and `settle_run` are shared
with `charflow sync` (training/tracking_sync.py), which sends what a dead run left.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from training.mlflow_setup import is_http, tracking_server_problem
from training.tracking_journal import Journal, is_transient, reason

log = logging.getLogger(__name__)

# The sender sends at most this often (and at once on flush()), so a training step never
# waits on the store (one SQLite transaction costs tens of milliseconds here).
FLUSH_SECONDS = 5.0
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
RETRY_SECONDS = 2.0  # while the store is away, it is tried again this often
BEHIND_SECONDS = 30.0  # one warning once the oldest unsent record is this old


def store_label(uri: str) -> str:
    return f"MLflow tracking server {uri}" if is_http(uri) else f"MLflow store {uri}"


def print_notice(message: str) -> None:
    print(f"charflow: {message}", file=sys.stderr, flush=True)


def next_batch(pending: list[dict]) -> list[dict]:
    """The records to send next: consecutive metrics of one run go in one request (up to
    MLflow's limit); any other record alone."""
    if not pending:
        return []
    first = pending[0]
    if first["op"] != "metrics":
        return [first]
    batch, count = [first], len(first["metrics"])
    for record in pending[1:]:
        if record["op"] != "metrics" or record["run_id"] != first["run_id"]:
            break
        if count + len(record["metrics"]) > MAX_METRICS_PER_BATCH:
            break
        batch.append(record)
        count += len(record["metrics"])
    return batch


def apply_records(client, batch: list[dict], files_dir: Path) -> None:
    """Send one batch from `next_batch` to the store behind `client`."""
    first = batch[0]
    op, run_id = first["op"], first["run_id"]
    if op == "metrics":
        metrics = [
            Metric(key, float(value), int(ts), int(step))
            for record in batch
            for key, value, ts, step in record["metrics"]
        ]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    elif op == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in first["params"].items()])
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in first["tags"].items()])
    elif op == "dataset":
        context = InputTag(MLFLOW_DATASET_CONTEXT, first["context"])
        dataset = DatasetInput(Dataset(**first["dataset"]), tags=[context])
        client.log_inputs(run_id, datasets=[dataset])
    elif op == "text":
        client.log_text(run_id, first["text"], first["artifact_file"])
    elif op == "file":
        client.log_artifact(run_id, str(files_dir / first["file"]), first.get("artifact_path"))
    elif op == "end":
        client.set_terminated(run_id, first["status"], end_time=first["end_time"])
    elif op == "settle":
        settle_run(client, run_id, first["why"])
    elif op == "register":
        from training.registry import register_journaled  # the registry, only when needed

        register_journaled(client, first, files_dir / first["file"])
    else:
        raise ValueError(f"unknown tracking record {op!r}")


def settle_run(client, run_id: str, why: str) -> str:
    """End a run left RUNNING by a process that died (no live process writes it): KILLED,
    with tag `charflow.killed` saying why. Returns the status it was found in."""
    try:
        found = client.get_run(run_id).info.status
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return "missing"
        raise
    if found == "RUNNING":
        client.set_tag(run_id, "charflow.killed", why)
        client.set_terminated(run_id, "KILLED")
    return found


class _QuietRetries(logging.Filter):
    """urllib3 logs a warning for each retry of a request; while the tracking server is away
    charflow says so once, in its own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "/api/2.0/mlflow" not in record.getMessage()


_QUIET = _QuietRetries()


class Sender:
    """The background thread that sends the journal's records in order, and waits out a
    store that is away (probing a server every RETRY_SECONDS)."""

    def __init__(self, client, journal: Journal, uri: str, notify: Callable[[str], None]):
        self.client, self.journal, self.uri, self.notify = client, journal, uri, notify
        self.label = store_label(uri)
        self.away_since: float | None = None
        self.warned = False
        self._single = False  # after a refused batch: one record at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="charflow-mlflow", daemon=True)
        pool_log = logging.getLogger("urllib3.connectionpool")
        if _QUIET not in pool_log.filters:
            pool_log.addFilter(_QUIET)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop after the call in flight (not waited for past `timeout`: a hung server)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def check_behind(self) -> None:
        """From the training thread: one warning when records wait too long (a slow server)."""
        if not self.warned and self.journal.oldest_age() > BEHIND_SECONDS:
            self.warned = True
            self.notify(
                f"warning: MLflow tracking is {self.journal.oldest_age():.0f} s behind "
                f"({self.label} is slow to answer); training goes on, {self._where()}"
            )

    def _where(self) -> str:
        if self.journal.path is None:
            return "tracking records wait in memory"
        return f"tracking records wait in {self.journal.path}"

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            try:
                self._send_pending()
            except Exception as err:  # a bug here must not end tracking silently
                log.exception("charflow tracking thread: %s", err)
                self._stop.wait(RETRY_SECONDS)

    def _send_pending(self) -> None:
        while not self._stop.is_set():
            pending = self.journal.pending()
            batch = pending[:1] if self._single else next_batch(pending)
            if not batch:
                return
            try:
                apply_records(self.client, batch, self.journal.files_dir)
            except Exception as err:
                if is_transient(err):
                    self._went_away(err)
                    if not self._wait_for_store():
                        return
                    continue
                if len(batch) > 1:  # find the one record refused, send the others
                    self._single = True
                    continue
                self.notify(
                    f"warning: {self.label} refused a tracking record ({batch[0]['op']} of "
                    f"run {batch[0]['run_id']}): {reason(err)}; dropped"
                )
            self._single = False
            self.journal.ack(batch[-1]["seq"])
            if self.away_since is not None:
                self.away_since = None
            if self.warned and not self.journal.pending():
                self.warned = False
                self.notify(f"{self.label} answers again; tracking caught up")

    def _went_away(self, err: BaseException) -> None:
        if self.away_since is None:
            self.away_since = time.monotonic()
        if not self.warned:
            self.warned = True
            self.notify(
                f"warning: {self.label} is not answering ({reason(err)}); training goes on, "
                f"{self._where()}"
            )

    def _wait_for_store(self) -> bool:
        """Until the store answers again (True) or the sender is stopped (False)."""
        while not self._stop.wait(RETRY_SECONDS):
            if not is_http(self.uri) or tracking_server_problem(self.uri, 3.0) is None:
                return True
        return False

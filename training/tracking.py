"""The MLflow run of one training: lifecycle, params, dataset input, metrics, samples, plots.

Every run uses the same param and metric names (`training.mlflow_setup.METRICS`), so the
MLflow UI can compare any two runs of a corpus side by side. The trained model is logged
and registered by `training.registry.register_model(tracker, ...)`.

Tracking is best effort and never stops training. The store is checked once, when the
tracker is made (a dead server is a one-line error within seconds). After that nothing the
training thread calls waits on the store: each record (metrics, params, tags, the dataset,
artifacts, the run's end) is appended to the run folder's journal
(training/tracking_journal.py) and a background thread sends it. When the store goes away,
training and checkpointing go on, one warning line says so, the records wait in the journal
and are sent when the store answers again — or later by `charflow sync RUN_DIR`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from training.errors import TrainingError
from training.mlflow_setup import (
    check_tracking_store,
    configure_mlflow,
    experiment_id,
    experiment_name,
    is_http,
    mlflow_client,
    tracking_server_problem,
    ui_run_url,
)
from training.tracking_journal import Journal, is_transient, reason

log = logging.getLogger(__name__)

# The sender sends at most this often (and at once on flush()), so a training step never
# waits on the store (one SQLite transaction costs tens of milliseconds here).
FLUSH_SECONDS = 5.0
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
MAX_PARAMS_PER_BATCH = 100
RETRY_SECONDS = 2.0  # while the store is away, it is tried again this often
BEHIND_SECONDS = 30.0  # one warning once the oldest unsent record is this old
END_WAIT_SECONDS = 120.0  # when a run ends: how long to wait for the store to take the rest
AWAY_GRACE_SECONDS = 10.0  # ... and how long once the store is known to be away
FLUSH_WAIT_SECONDS = 60.0  # flush() without a journal: how long it waits for the store


class CorpusDataset(MetaDataset):
    """A corpus as an MLflow dataset: name, source and digest, plus its size as the profile."""

    def __init__(self, *, source, name: str, digest: str, profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _dataset_source(source: str):
    if is_http(source):
        return HTTPDatasetSource(url=source)
    uri = str(Path(source).resolve()) if Path(source).exists() else source
    # Built straight from its JSON form: MLflow's resolver warns that a local path is ambiguous.
    return get_dataset_source_from_json(json.dumps({"uri": uri}), source_type="local")


def store_label(uri: str) -> str:
    return f"MLflow tracking server {uri}" if is_http(uri) else f"MLflow store {uri}"


def _print_notice(message: str) -> None:
    print(f"charflow: {message}", file=sys.stderr, flush=True)


class RunTracker:
    """One MLflow run for one training, as a context manager.

    Leaving the `with` block normally ends the run FINISHED; KeyboardInterrupt (Ctrl-C)
    ends it KILLED; any other exception FAILED, with tag `failure` (and re-raises). Pass
    `run_id` to continue an existing run (training resumed from a checkpoint).

    `journal_dir` is the run's checkpoint folder: records wait there (mlflow-pending.jsonl)
    until the store has them, so neither a store that is away nor a killed process loses
    them. Without it records wait in memory only. `notify` hears the few lines a person
    should see (the store went away, came back); default: stderr.
    """

    def __init__(
        self,
        corpus: str,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        *,
        run_id: str | None = None,
        journal_dir: Path | str | None = None,
        notify: Callable[[str], None] | None = None,
    ):
        if not corpus:
            raise TrainingError("corpus name for MLflow tracking is empty")
        self.corpus = corpus
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.client = mlflow_client()
        self.tracking_uri = self.client.tracking_uri
        self.registry_uri = getattr(self.client, "_registry_uri", None) or self.tracking_uri
        self.label = store_label(self.tracking_uri)
        check_tracking_store(self.tracking_uri)  # one short probe: a dead server fails here
        self.experiment_id = self._at_start(
            "finding the experiment",
            lambda: experiment_id(self.client, corpus, self.tracking_uri),
        )
        self.run_id: str = run_id or ""
        self._resumed = run_id is not None
        self.segment = 0  # 0 for a new run; n for its n-th resume
        self.journal = Journal(Path(journal_dir) if journal_dir is not None else None)
        self._notify = notify or _print_notice
        self._logged: set[tuple[str, int]] = set()  # (metric, step) already logged
        self._params: dict[str, str] = {}  # param values the run had before this segment
        self._sender: _Sender | None = None

    def _at_start(self, what: str, call: Callable[[], Any]) -> Any:
        """A store call the run cannot start without: a store that stops answering here
        is one line, not a traceback."""
        try:
            return call()
        except Exception as err:
            if not is_transient(err):
                raise
            raise TrainingError(f"{self.label} failed while {what} ({reason(err)})") from None

    # lifecycle

    def __enter__(self) -> RunTracker:
        self.journal.open()  # a live writer of this folder: one-line error
        try:
            previous = self.journal.read_run()
            if previous and previous.get("tracking_uri") != self.tracking_uri:
                if self.journal.pending():
                    raise TrainingError(
                        f"{self.journal.folder} holds MLflow records for "
                        f"{previous.get('tracking_uri')}; send them first with "
                        f"`charflow sync {self.journal.folder}`"
                    )
                previous = None
            tags = resolve_tags({"corpus": self.corpus, **self.tags})
            tags["mlflow.source.name"] = "charflow"
            if self._resumed:
                run = self._at_start("resuming the run", lambda: self._resume(tags))
            else:
                run = self._at_start(
                    "creating the run",
                    lambda: self.client.create_run(
                        self.experiment_id, run_name=self.run_name, tags=tags
                    ),
                )
                self.run_id = run.info.run_id
            self.run_name = run.info.run_name
            if previous and previous.get("run_id") != self.run_id:
                # A run whose process died in this folder before it could end it.
                self.journal.append(
                    {
                        "run_id": previous["run_id"],
                        "op": "settle",
                        "why": "its training process died; a new run took over the folder",
                    }
                )
            self.journal.write_run(
                {
                    "run_id": self.run_id,
                    "tracking_uri": self.tracking_uri,
                    "registry_uri": self.registry_uri,
                    "experiment_id": self.experiment_id,
                    "corpus": self.corpus,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                }
            )
            self._sender = _Sender(self.client, self.journal, self.tracking_uri, self._notify)
            self._sender.start()
        except BaseException:
            self.journal.close()
            raise
        return self

    def _resume(self, tags: dict[str, str]):
        try:
            run = self.client.get_run(self.run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise TrainingError(
                f"MLflow run {self.run_id} to resume is not in {self.tracking_uri}"
            ) from None
        if run.info.experiment_id != self.experiment_id:
            raise TrainingError(
                f"MLflow run {self.run_id} belongs to another experiment, "
                f"not {experiment_name(self.corpus)!r}"
            )
        self.segment = int(run.data.tags.get("charflow.resumes", "0") or 0) + 1
        self._params = dict(run.data.params)
        found = run.info.status
        note = f"resumed; the run was {found}"
        if found == "RUNNING":
            note += ": the process of the previous segment died without ending it (KILLED)"
        tags = {
            **tags,
            "charflow.resumes": str(self.segment),
            f"charflow.resume.{self.segment}": note,
        }
        self.client.update_run(self.run_id, status="RUNNING")
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        # Steps already in the store (or on their way) are not logged again: a segment that
        # re-runs steps after its last checkpoint keeps one value per step.
        for key in run.data.metrics:
            for m in self.client.get_metric_history(self.run_id, key):
                self._logged.add((key, int(m.step)))
        for record in self.journal.pending():
            if record.get("op") == "metrics" and record.get("run_id") == self.run_id:
                self._logged.update((k, int(step)) for k, _, _, step in record["metrics"])
        return run

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            status, tags = "FINISHED", {}
        elif isinstance(exc, KeyboardInterrupt):
            status, tags = "KILLED", {"charflow.killed": "interrupted (Ctrl-C / SIGINT)"}
        else:  # the training error is what the caller sees; the run records its first line
            status = "FAILED"
            tags = {"failure": f"{exc_type.__name__}: {exc}".splitlines()[0][:1000]}
        sent = False
        try:
            if tags:
                self._append({"op": "tags", "tags": tags})
            self._append({"op": "end", "status": status, "end_time": int(time.time() * 1000)})
            self.journal.sync()
            sent = self.drain(END_WAIT_SECONDS)
        finally:
            if self._sender is not None:
                self._sender.stop()
            if sent:
                self.journal.forget_run()
            else:
                self._report_unsent()
            self.journal.close()
        return False

    def _report_unsent(self) -> None:
        n = len(self.journal.pending())
        if not n:
            return
        if self.journal.folder is None:
            where = "they are lost when this process ends (no run folder to keep them in)"
        else:
            where = (
                f"they wait in {self.journal.path}; `charflow sync {self.journal.folder}` "
                "sends them"
            )
        self._notify(
            f"warning: {self.label} has not taken {n} tracking records of run "
            f"{self.run_id} (its end among them); {where}"
        )

    def run_url(self) -> str:
        return ui_run_url(self.experiment_id, self.run_id, self.tracking_uri)

    # sending

    def flush(self) -> None:
        """Make everything logged so far durable and start sending it now.

        With a run folder: the journal is fsynced (records are already written to it as they
        are logged, so a killed process loses none) — this returns without waiting for the
        store. Without one: waits until the store has the records (at most
        FLUSH_WAIT_SECONDS). Call it before each checkpoint is written, so a run resumed from
        that checkpoint has every metric up to it."""
        if self.journal.folder is not None:
            self.journal.sync()
            if self._sender is not None:
                self._sender.wake()
        else:
            self.drain(FLUSH_WAIT_SECONDS)

    def drain(self, timeout: float) -> bool:
        """Wait until the store has every record logged so far; False when `timeout` passes
        or the store has been away for AWAY_GRACE_SECONDS (records then stay pending)."""
        start = time.monotonic()
        while self.journal.pending():
            sender = self._sender
            if sender is None or not sender.alive():
                return False
            now = time.monotonic()
            away = sender.away_since
            if away is not None and now - max(away, start) > AWAY_GRACE_SECONDS:
                return False
            if now - start > timeout:
                return False
            sender.wake()
            time.sleep(0.05)
        return True

    @property
    def healthy(self) -> bool:
        """The store is answering (as far as the last send knows)."""
        return self._sender is not None and self._sender.away_since is None

    def _append(self, record: dict) -> None:
        self.journal.append({"run_id": self.run_id, **record})
        if self._sender is not None:
            self._sender.check_behind()

    # logging

    def log_params(self, params: dict) -> None:
        """Params are write-once in MLflow. A resumed run logs new keys under their names and
        values that differ from the run's first ones as `resume.<n>.<key>` (segment n): the
        value in effect in segment n is `resume.<n>.<key>` when present, else `<key>`."""
        items = {k: str(v) for k, v in params.items()}
        fresh = {k: v for k, v in items.items() if k not in self._params}
        # In a run's first segment a changed value goes as it is: MLflow refuses it (one
        # warning line), as it refuses any rewrite of a param.
        prefix = f"resume.{self.segment}." if self.segment else ""
        changed = {
            prefix + k: v for k, v in items.items() if k in self._params and self._params[k] != v
        }
        self._params.update(fresh)
        pairs = list({**fresh, **changed}.items())
        for i in range(0, len(pairs), MAX_PARAMS_PER_BATCH):
            self._append({"op": "params", "params": dict(pairs[i : i + MAX_PARAMS_PER_BATCH])})

    def log_dataset(
        self,
        *,
        name: str,
        digest: str,
        source: str,
        num_chars: int,
        vocab_size: int,
        num_documents: int | None,
    ) -> None:
        """The corpus as the run's training input; digest = sha256 of the corpus text.

        MLflow keeps dataset digests to 36 characters, so the input carries the first 16 hex
        digits (as `git` abbreviates) and the profile the full digest.
        """
        profile = {
            "sha256": digest,
            "num_chars": num_chars,
            "vocab_size": vocab_size,
            "num_documents": num_documents,
        }
        dataset = CorpusDataset(
            source=_dataset_source(str(source)), name=name, digest=digest[:16], profile=profile
        )
        entity = dataset._to_mlflow_entity().to_dictionary()
        self._append({"op": "dataset", "dataset": entity, "context": "train"})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """One value per metric and step: a (metric, step) the run already has is skipped,
        so a resumed run that re-runs steps has no repeated step in its history."""
        now, step = int(time.time() * 1000), int(step)
        rows = [
            [key, float(value), now, step]
            for key, value in metrics.items()
            if value is not None and (key, step) not in self._logged
        ]
        if rows:
            self._logged.update((key, step) for key, *_ in rows)
            self._append({"op": "metrics", "metrics": rows})

    def log_sample(self, step: int, text: str) -> None:
        self.log_text(text, f"samples/step_{step:06d}.txt")

    def log_text(self, text: str, artifact_path: str) -> None:
        """A text artifact (sample, HTML page) at `artifact_path` in the run."""
        self._append({"op": "text", "text": text, "artifact_file": artifact_path})

    def log_loss_curve(self, history: list[dict]) -> None:
        """plots/loss_curve.png: train and val loss (nats/char) by step, bits/char on the right."""
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

        fig = Figure(figsize=(8, 4.5), dpi=100)
        ax = fig.add_subplot()
        for key, style in (("train_loss", dict(lw=1, alpha=0.7)), ("val_loss", dict(marker="o"))):
            points = [(r["step"], r[key]) for r in history if r.get(key) is not None]
            if points:
                steps, losses = zip(*points, strict=True)
                ax.plot(steps, losses, label=key, **style)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/char)")
        ax.secondary_yaxis(
            "right", functions=(lambda x: x / math.log(2), lambda b: b * math.log(2))
        ).set_ylabel("bits/char")
        ax.set_title(f"{self.corpus} · {self.run_name}")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        path, rel = self.journal.new_file_slot("loss_curve.png")
        fig.savefig(path)
        self._append({"op": "file", "file": rel, "artifact_path": "plots"})

    def defer_registration(
        self, checkpoint_path: Path, *, val_loss: float, corpus_digest: str
    ) -> None:
        """Journal the registration of `checkpoint_path` (copied: a resumed run may overwrite
        it) for when the store answers again (training.registry.register_model decides)."""
        path, rel = self.journal.new_file_slot(Path(checkpoint_path).name)
        shutil.copyfile(checkpoint_path, path)
        self._append(
            {
                "op": "register",
                "file": rel,
                "val_loss": float(val_loss),
                "corpus_digest": corpus_digest,
                "corpus": self.corpus,
                "experiment_id": self.experiment_id,
                "registration": uuid.uuid4().hex,
            }
        )
        self.journal.sync()
        if self._sender is not None:
            self._sender.wake()


# -- sending records -----------------------------------------------------------------------


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


class _Sender:
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


# -- charflow sync ------------------------------------------------------------------------


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
    notify = notify or _print_notice
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


def __getattr__(name: str):
    """Models logged before the pyfunc class moved to training.pyfunc are pickled as
    training.tracking.CharflowModel; this keeps them loadable (resolved only on request)."""
    if name == "CharflowModel":
        from training.pyfunc import CharflowModel

        return CharflowModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

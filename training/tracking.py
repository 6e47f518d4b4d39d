"""The MLflow run of one training: lifecycle, params, dataset input, metrics, samples, plots.

Every run uses the same param and metric names (`training.mlflow_names.METRICS`), so the
MLflow UI can compare any two runs of a corpus side by side. The trained model is logged
and registered by `training.registration.register_model(tracker, ...)`.

Tracking is best effort and never stops training. The store is checked once, when the
tracker is made (a dead server is a one-line error within seconds). After that nothing the
training thread calls waits on the store: each record (metrics, params, tags, the dataset,
artifacts, the run's end) is appended to the run folder's journal
(training/tracking_journal.py) and a background thread sends it. When the store goes away,
training and checkpointing go on, one warning line says so, the records wait in the journal
and are sent when the store answers again — or later by `charflow sync RUN_DIR`
(training/tracking_sync.py). The background sender is training/tracking_sender.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking.context.registry import resolve_tags

from training.errors import TrainingError
from training.mlflow_setup import (
    check_tracking_store,
    experiment_id,
    mlflow_client,
    ui_run_url,
)
from training.tracking_journal import Journal, is_transient, reason
from training.tracking_records import dataset_entity, save_loss_curve
from training.tracking_resume import resume_run
from training.tracking_sender import Sender, print_notice, store_label

MAX_PARAMS_PER_BATCH = 100
END_WAIT_SECONDS = 120.0  # when a run ends: how long to wait for the store to take the rest
AWAY_GRACE_SECONDS = 10.0  # ... and how long once the store is known to be away
FLUSH_WAIT_SECONDS = 60.0  # flush() without a journal: how long it waits for the store


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
        self._notify = notify or print_notice
        self._logged: set[tuple[str, int]] = set()  # (metric, step) already logged
        self._params: dict[str, str] = {}  # param values the run had before this segment
        self._sender: Sender | None = None

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
            self._sender = Sender(self.client, self.journal, self.tracking_uri, self._notify)
            self._sender.start()
        except BaseException:
            self.journal.close()
            raise
        return self

    def _resume(self, tags: dict[str, str]):
        resumed = resume_run(
            self.client,
            self.run_id,
            experiment_id=self.experiment_id,
            corpus=self.corpus,
            tracking_uri=self.tracking_uri,
            tags=tags,
            journal=self.journal,
        )
        self.segment, self._params = resumed.segment, resumed.params
        self._logged.update(resumed.logged)
        return resumed.run

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            status, tags = "FINISHED", {}
        elif isinstance(exc, KeyboardInterrupt):
            status, tags = "KILLED", {"charflow.killed": "interrupted (Ctrl-C / SIGINT or SIGTERM)"}
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
        """The corpus as the run's training input (training.tracking_records.dataset_entity)."""
        entity = dataset_entity(
            name=name,
            digest=digest,
            source=source,
            num_chars=num_chars,
            vocab_size=vocab_size,
            num_documents=num_documents,
        )
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
        path, rel = self.journal.new_file_slot("loss_curve.png")
        save_loss_curve(history, f"{self.corpus} · {self.run_name}", path)
        self._append({"op": "file", "file": rel, "artifact_path": "plots"})

    def defer_registration(
        self, checkpoint_path: Path, *, val_loss: float, corpus_digest: str
    ) -> None:
        """Journal the registration of `checkpoint_path` (copied: a resumed run may overwrite
        it) for when the store answers again (training.registration.register_model decides)."""
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


def __getattr__(name: str):
    """Models logged before the pyfunc class moved to training.pyfunc are pickled as
    training.tracking.CharflowModel; this keeps them loadable (resolved only on request)."""
    if name == "CharflowModel":
        from training.pyfunc import CharflowModel

        return CharflowModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

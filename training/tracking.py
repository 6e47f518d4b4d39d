"""The MLflow run of one training: lifecycle, params, dataset input, metrics, samples, plots.

Every run uses the same param and metric names (`training.mlflow_setup.METRICS`), so the
MLflow UI can compare any two runs of a corpus side by side. The trained model is logged
and registered by `training.registry.register_model(tracker, ...)`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from training.errors import TrainingError
from training.mlflow_setup import (
    experiment_id,
    experiment_name,
    is_http,
    mlflow_client,
    ui_run_url,
)

log = logging.getLogger(__name__)

# Metrics are buffered and sent in one batch at most this often, so a training step never
# waits on the store (one SQLite transaction costs tens of milliseconds here).
FLUSH_SECONDS = 5.0
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
MAX_PARAMS_PER_BATCH = 100


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


class RunTracker:
    """One MLflow run for one training, as a context manager.

    An exception inside the `with` block marks the run FAILED (and re-raises); otherwise
    the run ends FINISHED. Pass `run_id` to continue logging into an existing run
    (e.g. when training resumes from a checkpoint).
    """

    def __init__(
        self,
        corpus: str,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        *,
        run_id: str | None = None,
    ):
        if not corpus:
            raise TrainingError("corpus name for MLflow tracking is empty")
        self.corpus = corpus
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.client = mlflow_client()
        self.tracking_uri = self.client.tracking_uri
        self.experiment_id = experiment_id(self.client, corpus, self.tracking_uri)
        self.run_id: str = run_id or ""
        self._resumed = run_id is not None
        self._metrics: list[Metric] = []
        self._last_flush = time.monotonic()

    # lifecycle

    def __enter__(self) -> RunTracker:
        tags = resolve_tags({"corpus": self.corpus, **self.tags})
        tags["mlflow.source.name"] = "charflow"
        if self._resumed:
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
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        else:
            run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
            self.run_id = run.info.run_id
        self.run_name = run.info.run_name
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            try:
                self.flush()
            except Exception:
                self.client.set_terminated(self.run_id, "FAILED")
                raise
            self.client.set_terminated(self.run_id, "FINISHED")
            return False
        try:  # the training error is what the caller must see, not a tracking error after it
            self.flush()
            message = f"{exc_type.__name__}: {exc}".splitlines()[0][:1000]
            self.client.set_tag(self.run_id, "failure", message)
            self.client.set_terminated(self.run_id, "FAILED")
        except Exception as err:
            log.warning("could not mark MLflow run %s FAILED: %s", self.run_id, err)
        return False

    def run_url(self) -> str:
        return ui_run_url(self.experiment_id, self.run_id, self.tracking_uri)

    # logging

    def log_params(self, params: dict) -> None:
        items = {k: str(v) for k, v in params.items()}
        if self._resumed:  # MLflow params are write-once: keep the first value of each
            logged = self.client.get_run(self.run_id).data.params
            changed = sorted(k for k in items if k in logged and logged[k] != items[k])
            if changed:
                log.warning("resumed run keeps its first value of: %s", ", ".join(changed))
            items = {k: v for k, v in items.items() if k not in logged}
        pairs = [Param(k, v) for k, v in items.items()]
        for i in range(0, len(pairs), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=pairs[i : i + MAX_PARAMS_PER_BATCH])

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
        context = InputTag(MLFLOW_DATASET_CONTEXT, "train")
        self.client.log_inputs(
            self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[context])]
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if value is not None:
                self._metrics.append(Metric(key, float(value), now, int(step)))
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send buffered metrics to the store now (done on exit and before registering a model)."""
        pending, self._metrics = self._metrics, []
        for i in range(0, len(pending), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i : i + MAX_METRICS_PER_BATCH])
        self._last_flush = time.monotonic()

    def log_sample(self, step: int, text: str) -> None:
        self.log_text(text, f"samples/step_{step:06d}.txt")

    def log_text(self, text: str, artifact_path: str) -> None:
        """A text artifact (sample, HTML page) at `artifact_path` in the run."""
        self.client.log_text(self.run_id, text, artifact_path)

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
        self.client.log_figure(self.run_id, fig, "plots/loss_curve.png")


def __getattr__(name: str):
    """Models logged before the pyfunc class moved to training.pyfunc are pickled as
    training.tracking.CharflowModel; this keeps them loadable (resolved only on request)."""
    if name == "CharflowModel":
        from training.pyfunc import CharflowModel

        return CharflowModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

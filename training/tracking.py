"""MLflow tracking: one experiment per corpus, one run per training, one registered model.

The store defaults to SQLite in `mlruns/` (MLflow >= 3.7 gates the plain file store) with
artifacts beside it in `mlruns/artifacts/`; `MLFLOW_TRACKING_URI` points everything at a
server instead (then the server decides where artifacts go). Every run uses the same param
and metric names, so the MLflow UI can compare any two runs of a corpus side by side.

The registered model `charflow-<corpus>` carries the alias `champion`, which moves to a
new version only when that version's val loss is strictly lower than the champion's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# mlflow decides at import time whether to send usage telemetry; GitPython (used for the
# run's source commit) complains at import when no git executable is found.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# Checkpoints are small: no progress bars when MLflow copies them around.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import (
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.store.artifact.artifact_repository_registry import (
    get_artifact_repository,
)
from mlflow.tracking.context.registry import resolve_tags
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from charflow.paths import charflow_home
from training.errors import TrainingError

log = logging.getLogger(__name__)

# Loss in nats/char; bpc (bits/char) = loss / ln 2.
METRICS = (
    "train_loss",
    "train_bpc",
    "val_loss",
    "val_bpc",
    "test_loss",
    "test_bpc",
    "lr",
    "grad_norm",
    "chars_per_sec",
)
EXPERIMENT_PREFIX = "charflow/"
MODEL_PREFIX = "charflow-"
CHAMPION_ALIAS = "champion"
MODEL_NAME = "model"  # the logged model's name in its run: runs:/<run_id>/model
CHECKPOINT_ARTIFACT = "checkpoint"  # key of the checkpoint file among the pyfunc artifacts

# Metrics are buffered and sent in one batch at most this often, so a training step never
# waits on the store (one SQLite transaction costs tens of milliseconds here).
FLUSH_SECONDS = 5.0
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
MAX_PARAMS_PER_BATCH = 100

# MLflow's first use of a SQLite file runs migrations and says so at INFO level.
for _name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def default_tracking_uri() -> str:
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{charflow_home() / 'mlruns' / 'mlflow.db'}"
    )


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve()


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def configure_mlflow() -> str:
    """Point MLflow's tracking and model registry at the charflow store; return the URI."""
    uri = default_tracking_uri()
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    # MLflow also exports both URIs as environment variables. Keep the environment as the
    # user set it, so the next call still follows a changed CHARFLOW_HOME or URI.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"] or uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return uri


def _client() -> MlflowClient:
    configure_mlflow()
    return MlflowClient(mlflow.get_tracking_uri(), mlflow.get_registry_uri())


def ui_run_url(experiment_id: str, run_id: str, tracking_uri: str | None = None) -> str:
    """MLflow UI page of a run: under $MLFLOW_UI_URL, else the tracking server, else the
    local UI address that `make mlflow-ui` serves."""
    uri = tracking_uri or default_tracking_uri()
    base = os.environ.get("MLFLOW_UI_URL") or (uri if _is_http(uri) else "http://127.0.0.1:5000")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def experiment_name(corpus: str) -> str:
    return EXPERIMENT_PREFIX + corpus


def registered_model_name(corpus: str) -> str:
    return MODEL_PREFIX + corpus


def _artifact_location(uri: str, corpus: str) -> str | None:
    """Artifacts of a SQLite store live beside the database; a server chooses its own."""
    db = _sqlite_path(uri)
    if db is None:
        return None
    safe = re.sub(r"[^\w.-]+", "_", corpus)
    return (db.parent / "artifacts" / safe).as_uri()


def _experiment_id(client: MlflowClient, corpus: str, uri: str) -> str:
    name = experiment_name(corpus)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=_artifact_location(uri, corpus), tags={"corpus": corpus}
            )
        except MlflowException as e:  # another process created it first
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        raise TrainingError(
            f"MLflow experiment {name!r} is deleted; restore it in the UI "
            f"or remove it for good with `mlflow gc --backend-store-uri {uri}`"
        )
    return exp.experiment_id


@dataclass
class Champion:
    version: str
    run_id: str
    val_loss: float
    corpus_digest: str


@dataclass
class ModelResult:
    version: str
    is_champion: bool
    reason: str
    model_uri: str = ""  # models:/charflow-<corpus>/<version>


def _champion(client: MlflowClient, corpus: str) -> Champion | None:
    try:
        mv = client.get_model_version_by_alias(registered_model_name(corpus), CHAMPION_ALIAS)
    except MlflowException as e:
        # No such registered model, or (INVALID_PARAMETER_VALUE) it has no such alias.
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    try:
        val_loss = float(mv.tags.get("val_loss", "nan"))
    except ValueError:
        val_loss = math.nan
    return Champion(
        version=str(mv.version),
        run_id=mv.run_id or "",
        val_loss=val_loss,
        corpus_digest=mv.tags.get("corpus_digest", ""),
    )


def get_champion(corpus: str) -> Champion | None:
    """The version behind `models:/charflow-<corpus>@champion`, or None if there is none."""
    return _champion(_client(), corpus)


def versions_trained_on(corpus: str, digest: str) -> list[str]:
    """Registered versions of charflow-<corpus> whose corpus_digest tag is `digest`."""
    client = _client()
    try:
        found = client.search_model_versions(f"name = '{registered_model_name(corpus)}'")
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return sorted(
        (str(mv.version) for mv in found if mv.tags.get("corpus_digest") == digest), key=int
    )


def _champion_decision(val_loss: float, current: Champion | None) -> tuple[bool, str]:
    if not math.isfinite(val_loss):
        return False, f"val_loss {val_loss} is not finite"
    if current is None:
        return True, f"first champion: val_loss {val_loss:.4f}"
    if not math.isfinite(current.val_loss):
        return True, f"champion v{current.version} has no val_loss; replaced ({val_loss:.4f})"
    if val_loss < current.val_loss:
        return True, (
            f"val_loss {val_loss:.4f} beats champion v{current.version} ({current.val_loss:.4f})"
        )
    return False, (
        f"val_loss {val_loss:.4f} does not beat champion v{current.version} "
        f"({current.val_loss:.4f})"
    )


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
    if _is_http(source):
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
        self.client = _client()
        self.tracking_uri = self.client.tracking_uri
        self.experiment_id = _experiment_id(self.client, corpus, self.tracking_uri)
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
        """Send buffered metrics to the store now (done on exit and before logging the model)."""
        pending, self._metrics = self._metrics, []
        for i in range(0, len(pending), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i : i + MAX_METRICS_PER_BATCH])
        self._last_flush = time.monotonic()

    def log_sample(self, step: int, text: str) -> None:
        self.client.log_text(self.run_id, text, f"samples/step_{step:06d}.txt")

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

    def log_model(
        self, checkpoint_path: Path, *, val_loss: float, corpus_digest: str
    ) -> ModelResult:
        """Log the checkpoint as a pyfunc model, register it, and crown it if it is better."""
        checkpoint_path = Path(checkpoint_path)
        if not checkpoint_path.is_file():
            raise TrainingError(f"checkpoint not found: {checkpoint_path}")
        self.flush()
        logged = self.client.create_logged_model(
            self.experiment_id,
            name=MODEL_NAME,
            source_run_id=self.run_id,
            tags={"corpus": self.corpus, "corpus_digest": corpus_digest},
            model_type="charflow",
        )
        with _quiet_model_logging():
            mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=CharflowModel(),
                artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_path.resolve())},
                signature=SIGNATURE,
                pip_requirements=_requirements(),  # explicit: inferring them runs the model
                model_id=logged.model_id,
            )
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=0)])

        name = registered_model_name(self.corpus)
        current = _champion(self.client, self.corpus)
        try:
            self.client.create_registered_model(
                name, description=f"charflow character-level models of the {self.corpus} corpus"
            )
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(
            name,
            source=f"models:/{logged.model_id}",
            run_id=self.run_id,
            tags={"val_loss": repr(float(val_loss)), "corpus_digest": corpus_digest},
            model_id=logged.model_id,
        ).version
        is_champion, reason = _champion_decision(float(val_loss), current)
        if is_champion:
            self.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        self.client.set_tag(self.run_id, "champion_decision", reason)
        self.client.set_tag(self.run_id, "model_version", str(version))
        return ModelResult(str(version), is_champion, reason, f"models:/{name}/{version}")


# The model as MLflow sees it: prime strings in, sampled strings out.

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string)]),  # one prime text per row
    outputs=Schema([ColSpec(DataType.string)]),
    params=ParamSchema(
        [
            ParamSpec("length", DataType.long, 200),
            ParamSpec("temperature", DataType.double, 1.0),
            ParamSpec("top_k", DataType.long, 0),  # 0: sample from the whole vocabulary
            ParamSpec("seed", DataType.long, -1),  # -1: a fresh random seed
            ParamSpec("device", DataType.string, "cpu"),
        ]
    ),
)


@contextmanager
def _quiet_model_logging():
    """Hide MLflow's advice that does not apply: no input example (it would run the model
    at logging time) and pickling the small CharflowModel instance (it is imported by name)."""
    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _requirements() -> list[str]:
    import torch

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__}", "numpy"]


class CharflowModel(mlflow.pyfunc.PythonModel):
    """A charflow checkpoint as an MLflow pyfunc.

    `mlflow.pyfunc.load_model("models:/charflow-<corpus>@champion").predict(["ROMEO:"],
    params={"length": 300, "temperature": 0.8, "seed": 1})` returns one sampled text per
    prime. Needs the charflow package installed where the model is loaded.
    """

    def load_context(self, context) -> None:
        self.checkpoint = Path(context.artifacts[CHECKPOINT_ARTIFACT])

    # The DataFrame hint keeps MLflow to the explicit SIGNATURE (its params included); MLflow
    # turns a str, a list of str or a one-column DataFrame into this DataFrame.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        from training.sample import sample_texts  # lazy: torch loads only when sampling

        primes = [str(p) for p in model_input.iloc[:, 0]]
        opts = {**{p.name: p.default for p in SIGNATURE.params.params}, **(params or {})}
        return sample_texts(
            self.checkpoint,
            primes,
            length=int(opts["length"]),
            temperature=float(opts["temperature"]),
            top_k=int(opts["top_k"]) or None,
            seed=None if int(opts["seed"]) < 0 else int(opts["seed"]),
            device=str(opts["device"]),
        )


def download_checkpoint(model_uri: str, dst_dir: Path | None = None) -> Path:
    """Local path of the checkpoint inside an MLflow model.

    Accepts models:/charflow-<corpus>@champion, models:/charflow-<corpus>/3,
    runs:/<run_id>/model or models:/<model_id>. Downloads into `dst_dir` (default: a new
    temporary folder).
    """
    configure_mlflow()
    dst = Path(dst_dir) if dst_dir else Path(tempfile.mkdtemp(prefix="charflow-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    try:
        repo = get_artifact_repository(model_uri)
        mlmodel = Path(repo.download_artifacts("MLmodel", dst_path=str(dst)))
        flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
        entry = flavor.get("artifacts", {}).get(CHECKPOINT_ARTIFACT)
        if entry is None:
            raise TrainingError(f"{model_uri} is not a charflow model (no checkpoint artifact)")
        return Path(repo.download_artifacts(entry["path"], dst_path=str(dst)))
    except MlflowException as e:
        first_line = str(e.message).strip().splitlines()[0] if str(e.message).strip() else e
        raise TrainingError(f"cannot load MLflow model {model_uri}: {first_line}") from e

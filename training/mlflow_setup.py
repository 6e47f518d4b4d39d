"""Where charflow's MLflow store is and what things in it are called.

The store defaults to SQLite in `mlruns/` (MLflow >= 3.7 gates the plain file store) with
artifacts beside it in `mlruns/artifacts/`; `MLFLOW_TRACKING_URI` points everything at a
server instead (then the server decides where artifacts go). One experiment per corpus
(`charflow/<corpus>`), one registered model per corpus (`charflow-<corpus>`).

Importing this module does not import mlflow, so the CLI can set the environment MLflow
reads at its own import (see `set_mlflow_env_defaults`) before anything imports it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from charflow.paths import charflow_home
from training.errors import TrainingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Loss in nats/char; bpc (bits/char) = loss / ln 2. The same names in every run, so the
# MLflow UI can compare any two runs of a corpus side by side.
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

ENV_DEFAULTS = {
    # mlflow decides at `import mlflow` whether to send usage telemetry.
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # GitPython (used for the run's source commit) complains when no git executable is found.
    "GIT_PYTHON_REFRESH": "quiet",
    # Checkpoints are small: no progress bars when MLflow copies them around.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# MLflow's first use of a SQLite file runs migrations and says so at INFO level.
QUIET_LOGGERS = ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")


def set_mlflow_env_defaults() -> None:
    """Quiet MLflow: no telemetry, no GitPython warning, no progress bars, no migration
    chatter. Only fills in what the user has not set. Entry points call this before
    anything imports mlflow; `configure_mlflow` calls it too, for library use."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def default_tracking_uri() -> str:
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{charflow_home() / 'mlruns' / 'mlflow.db'}"
    )


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, or None for any other store."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve()


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def configure_mlflow() -> str:
    """Point MLflow's tracking and model registry at the charflow store; return the URI."""
    set_mlflow_env_defaults()
    import mlflow

    _drop_telemetry_if_disabled()
    uri = default_tracking_uri()
    db = sqlite_path(uri)
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


def _telemetry_off() -> bool:
    flag = os.environ.get("MLFLOW_DISABLE_TELEMETRY", "").lower() in ("true", "1")
    return flag or os.environ.get("DO_NOT_TRACK", "").lower() == "true"


def _drop_telemetry_if_disabled() -> None:
    """mlflow made its telemetry client at import, perhaps before the defaults above were
    set (a notebook that imported training.tracking first). The client sends nothing until
    used, so dropping it now, with the environment set, still keeps the process quiet."""
    from mlflow.telemetry import get_telemetry_client, set_telemetry_client

    if _telemetry_off() and get_telemetry_client() is not None:
        set_telemetry_client()  # re-reads the environment: no client when telemetry is off


def mlflow_client() -> MlflowClient:
    """A client on the charflow store (tracking and registry)."""
    configure_mlflow()  # first: it sets the environment mlflow reads at import
    import mlflow

    return mlflow.MlflowClient(mlflow.get_tracking_uri(), mlflow.get_registry_uri())


def ui_run_url(experiment_id: str, run_id: str, tracking_uri: str | None = None) -> str:
    """MLflow UI page of a run: under $MLFLOW_UI_URL, else the tracking server, else the
    local UI address that `make mlflow-ui` serves."""
    uri = tracking_uri or default_tracking_uri()
    base = os.environ.get("MLFLOW_UI_URL") or (uri if is_http(uri) else "http://127.0.0.1:5000")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def experiment_name(corpus: str) -> str:
    return EXPERIMENT_PREFIX + corpus


def registered_model_name(corpus: str) -> str:
    return MODEL_PREFIX + corpus


def artifact_location(uri: str, corpus: str) -> str | None:
    """Artifacts of a SQLite store live beside the database; a server chooses its own."""
    db = sqlite_path(uri)
    if db is None:
        return None
    safe = re.sub(r"[^\w.-]+", "_", corpus)
    return (db.parent / "artifacts" / safe).as_uri()


def experiment_id(client: MlflowClient, corpus: str, uri: str) -> str:
    """The id of experiment `charflow/<corpus>`, created (tagged with its corpus) if new."""
    from mlflow.exceptions import MlflowException

    name = experiment_name(corpus)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location(uri, corpus), tags={"corpus": corpus}
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

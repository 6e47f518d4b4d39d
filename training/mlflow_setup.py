"""Where charflow's MLflow store is, how to reach it, and where its UI shows a run.

The store defaults to SQLite in `mlruns/` (MLflow >= 3.7 gates the plain file store) with
artifacts beside it in `mlruns/artifacts/`; `MLFLOW_TRACKING_URI` points everything at a
server instead (then the server decides where artifacts go). One experiment per corpus
(`charflow/<corpus>`), one registered model per corpus (`charflow-<corpus>`); what things
are called is training/mlflow_names.py.

Importing this module does not import mlflow, so the CLI can set the environment MLflow
reads at its own import (see `set_mlflow_env_defaults`) before anything imports it.

A SQLite store is created or upgraded once, under a file lock beside the database
(`ensure_store`), so trainings that start together never race on its schema; a server is
probed once, briefly, before a run starts (`check_tracking_store`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from charflow.paths import charflow_home
from training.errors import TrainingError
from training.mlflow_names import experiment_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

ENV_DEFAULTS = {
    # mlflow decides at `import mlflow` whether to send usage telemetry.
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # GitPython (used for the run's source commit) complains when no git executable is found.
    "GIT_PYTHON_REFRESH": "quiet",
    # Checkpoints are small: no progress bars when MLflow copies them around.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# MLflow's first use of a SQLite file runs migrations and says so at INFO level; registering
# a version on a server says that it waits for it.
QUIET_LOGGERS = (
    "mlflow.store.db.utils",
    "alembic",
    "alembic.runtime.migration",
    "mlflow.store.model_registry.abstract_store",
)
# MLflow's own HTTP retries (7, with backoff: minutes) would hold a training hostage to a dead
# server. charflow retries in the background itself (training/tracking_sender.py), so each request
# gives up after a few tries; a value the user has set wins.
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # charflow prints the run's URL itself; MLflow's own print costs a request at the run's
    # end, to a server that may be away.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# The one check of a tracking server before a run starts: at most about this long.
PROBE_SECONDS = 5.0


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


# -- the store: created once under a lock, a server checked once ------------------------


@contextmanager
def store_lock(uri: str, purpose: str = "") -> Iterator[None]:
    """Hold an inter-process lock on a SQLite store for the block: `fcntl.flock` on
    `<db>.lock` (`<db>.<purpose>.lock`) beside the database, made if missing; released when
    the block ends or the process dies. Other stores need none (a server serialises its
    own writes) and get a no-op."""
    db = sqlite_path(uri)
    if db is None:
        with nullcontext():
            yield
        return
    name = f"{db.name}.{purpose}.lock" if purpose else f"{db.name}.lock"
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.with_name(name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


_READY_STORES: dict[Path, tuple[int, int]] = {}  # database -> (device, inode) once checked


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def ensure_store(uri: str) -> None:
    """Create or upgrade a SQLite store's schema once, under `store_lock`, before any run uses
    it: MLflow creates tables on first open without a lock, and processes that open a new
    store together die in its migrations. Checked once per process and database file; other
    stores are left to their server."""
    db = sqlite_path(uri)
    if db is None:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    known = _file_id(db)
    if known is not None and _READY_STORES.get(db) == known:
        return
    with store_lock(uri):
        _create_or_upgrade(uri, db)
    _READY_STORES[db] = _file_id(db)


def _create_or_upgrade(uri: str, db: Path) -> None:
    """Under the store lock: a new database gets MLflow's tables, an old one is upgraded
    (after a copy to `<db>.before-<revision>`), a current one is left alone."""
    set_mlflow_env_defaults()  # quiet migrations
    from mlflow.store.db import utils as db_utils

    engine = db_utils.create_sqlalchemy_engine_with_retry(uri)
    try:
        current = db_utils._get_schema_version(engine)
        head = db_utils._get_latest_schema_revision()
        complete = db_utils._all_tables_exist(engine)
        if current == head and complete:
            return
        if current is None:  # a new store
            db_utils._initialize_tables(engine)
            return
        if not _known_revision(current):
            raise TrainingError(
                f"MLflow store {db} has schema revision {current}, newer than this MLflow "
                f"knows ({head}); upgrade mlflow or use another store"
            )
        shutil.copy2(db, db.with_name(f"{db.name}.before-{head}"))
        if complete:
            db_utils._upgrade_db(engine)
        else:  # tables added since this store was made: MLflow's own path creates them
            db_utils._initialize_tables(engine)
    finally:
        engine.dispose()


def _known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    scripts = ScriptDirectory.from_config(_get_alembic_config(""))
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for unknown ids
        return False


def tracking_server_problem(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why the tracking server at `uri` cannot be used right now (a few words), or None when
    it answers. One GET of `/health`, bounded by `timeout` seconds; any answer below 500
    counts (a server behind an auth proxy may refuse /health yet be alive)."""
    import requests

    url = f"{uri.rstrip('/')}/health"
    try:
        resp = requests.get(url, timeout=(min(timeout, 3.0), timeout))
    except requests.Timeout:
        return f"no answer in {timeout:g} s"
    except requests.RequestException as err:
        return error_reason(err)
    if resp.status_code >= 500:
        return f"HTTP {resp.status_code} from {url}"
    return None


def error_reason(err: BaseException) -> str:
    """`Connection refused`, `Name or service not known`, ...: the OS's words inside the
    layers of requests/urllib3 exceptions, else the exception's first line."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(err))
    if found:
        return found.group(1).strip().rstrip(".").lower()
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return first[:160]


def check_tracking_store(uri: str | None = None) -> str:
    """Fail fast, in one line, when the tracking store cannot be used; returns its URI.
    A server gets one probe of at most about PROBE_SECONDS (no MLflow retries: a dead
    server costs seconds, not minutes); a SQLite store is created or upgraded under its lock.
    Call it before a training starts (RunTracker does)."""
    uri = uri or configure_mlflow()
    if is_http(uri):
        for key, value in HTTP_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        problem = tracking_server_problem(uri)
        if problem:
            raise TrainingError(f"MLflow tracking server {uri} is not reachable ({problem})")
    else:
        ensure_store(uri)
    return uri


def configure_mlflow(uri: str | None = None, registry_uri: str | None = None) -> str:
    """Point MLflow's tracking and model registry at the charflow store (or at `uri` and
    `registry_uri`: `charflow sync` sends a run to the store it was started on); return the
    tracking URI."""
    set_mlflow_env_defaults()
    import mlflow

    _drop_telemetry_if_disabled()
    uri = uri or default_tracking_uri()
    if is_http(uri):
        for key, value in HTTP_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
    ensure_store(uri)  # SQLite: the schema exists and is current before anything opens it
    # MLflow also exports both URIs as environment variables. Keep the environment as the
    # user set it, so the next call still follows a changed CHARFLOW_HOME or URI.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry_uri or saved["MLFLOW_REGISTRY_URI"] or uri)
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


# The MLflow UI opens an experiment in its GenAI view unless told otherwise; charflow's runs
# are model trainings, so every link asks for the model-training view.
UI_VIEW = "workflowType=machine_learning"


def ui_base_url(tracking_uri: str | None = None) -> str:
    """The MLflow UI: $MLFLOW_UI_URL, else the tracking server, else the local UI address
    that `make mlflow-ui` serves."""
    uri = tracking_uri or default_tracking_uri()
    base = os.environ.get("MLFLOW_UI_URL") or (uri if is_http(uri) else "http://127.0.0.1:5000")
    return base.rstrip("/")


def ui_run_url(experiment_id: str, run_id: str, tracking_uri: str | None = None) -> str:
    """MLflow UI page of a run, in the model-training view."""
    return f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?{UI_VIEW}"


def ui_compare_url(
    experiment_ids: Iterable[str], run_ids: Iterable[str], tracking_uri: str | None = None
) -> str:
    """The MLflow UI's compare-runs page for these runs (its route takes JSON lists)."""
    runs = quote(json.dumps(list(run_ids), separators=(",", ":")), safe="")
    experiments = quote(json.dumps(sorted(set(experiment_ids)), separators=(",", ":")), safe="")
    query = f"runs={runs}&experiments={experiments}&{UI_VIEW}"
    return f"{ui_base_url(tracking_uri)}/#/compare-runs?{query}"


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

"""An Optuna search's study: where it lives, opening it, and counting its trials.

The study lives in a database (Optuna's RDBStorage): by default sqlite optuna.db beside
MLflow's mlflow.db; with PostgreSQL, the tracking database itself (schema `optuna`), so
trials on several machines share one study.

`Search` is a started search as plain values (training/search_start.py begins one).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.search_space import SearchSpace, space_from_doc

STORAGE_ENV = "CHARFLOW_OPTUNA_STORAGE"  # the study's database URL (else beside MLflow's)
SCHEMA = "optuna"  # in a PostgreSQL tracking database: beside MLflow's tables, not among them
TRIAL_TAG = "charflow.trial"  # the trial's number, on its child run
STUDY_TAG = "charflow.study"  # the study's name, on the parent and every child
PRUNED_TAG = "charflow.pruned"  # why the trial was pruned (the child run ends KILLED)
INTERRUPTED_TAG = "charflow.interrupted"  # a trial whose process died; the search re-ran it
# A trial whose process stops sending heartbeats for GRACE_SECONDS (a machine lost) is
# failed by the next trial that starts anywhere, and run again.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60


@dataclass
class Search:
    """A started search: what a trial needs, as plain values (it travels to worker
    processes and flow runs, see to_dict)."""

    study_name: str
    storage: str  # the study's database URL
    space: SearchSpace
    trials: int  # finished trials wanted in the study
    base: TrainConfig  # every trial's settings before the searched ones

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "space": self.space.doc(),
            "trials": self.trials,
            "base": dataclasses.asdict(self.base),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Search:
        return cls(
            doc["study_name"],
            doc["storage"],
            space_from_doc(doc["space"]),
            int(doc["trials"]),
            TrainConfig(**doc["base"]),
        )


def study_storage_url(explicit: str | None = None, tracking_uri: str | None = None) -> str:
    """Where the study lives: `explicit`, else $CHARFLOW_OPTUNA_STORAGE, else the tracking
    database when it is PostgreSQL or MySQL, else sqlite optuna.db beside mlflow.db (for a
    tracking server: in this machine's mlruns/)."""
    from charflow.paths import mlruns_dir
    from training.mlflow_setup import default_tracking_uri, sqlite_path

    url = explicit or os.environ.get(STORAGE_ENV)
    if url:
        return url
    tracking = tracking_uri or default_tracking_uri()
    if tracking.startswith(("postgresql", "mysql")):
        return tracking
    db = sqlite_path(tracking)
    folder = db.parent if db else mlruns_dir()
    return f"sqlite:///{folder / 'optuna.db'}"


def shown_url(url: str) -> str:
    """The URL with its password hidden, to print or log."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable storage URL)"


def _storage(url: str):
    """Optuna's RDBStorage on `url`, with heartbeats (a trial of a lost machine is failed);
    PostgreSQL in its own schema, since Optuna and MLflow both keep an alembic_version."""
    import optuna
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    engine_kwargs: dict[str, Any] = {}
    if parsed.drivername.startswith("sqlite"):
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # trials in parallel processes wait
    elif parsed.drivername.startswith("postgresql"):
        parsed = _in_own_schema(parsed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in (1, 2):
            try:
                return optuna.storages.RDBStorage(
                    parsed.render_as_string(hide_password=False),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                )
            except Exception as err:  # another process made the tables at the same moment
                if attempt == 2 or "already exists" not in str(err):
                    raise
    raise AssertionError("unreachable")


def _in_own_schema(url):
    """The PostgreSQL URL with search_path=optuna (schema created if new), unless the URL
    chooses its own options. psycopg2 unless a driver is named (charflow installs it)."""
    from sqlalchemy import create_engine, text

    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    if "options" in url.query:
        return url
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    finally:
        engine.dispose()
    return url.update_query_dict({"options": f"-csearch_path={SCHEMA}"})


def open_study(search: Search, seed_offset: int = 0):
    """The study (created if new): TPE (constant liar, for trials running side by side)
    and the median pruner. Each opener samples with its own seed, base seed + offset: two
    processes seeded alike would propose the same first trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # charflow prints each trial itself
    sampler_opts, pruner_opts = search.space.optuna["sampler"], search.space.optuna["pruner"]
    seed = sampler_opts.get("seed")
    seed = (search.base.seed if seed is None else seed) + seed_offset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=sampler_opts["n_startup_trials"], seed=seed, constant_liar=True
        )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=pruner_opts["n_startup_trials"],
        n_warmup_steps=pruner_opts["n_warmup_steps"],
    )
    return optuna.create_study(
        storage=_storage(search.storage),
        study_name=search.study_name,
        direction="minimize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def existing_study(name: str, storage: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=_storage(storage))
    except KeyError:
        return None


def counted(trial) -> bool:
    """A trial that counts toward the search: complete, pruned, or failed by its training
    (a trial whose process died failed without a reason, and is run again)."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "failure" in trial.user_attrs
    )


def trials_left(search: Search, study) -> tuple[int, int, int]:
    """(counted, running elsewhere, still to start)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(counted(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return done, running, max(0, search.trials - done - running)

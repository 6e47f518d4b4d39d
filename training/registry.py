"""The champion registry: one registered model `charflow-<corpus>` per corpus, one version
per training run, and the alias `champion` on the best of them.

The champion is always the best finished version: the READY version with the lowest finite
val loss (the earlier version on a tie, so a version takes the alias only by being strictly
better; a non-finite val loss never takes it). Promotion is a compare-and-set that re-reads:
after a version is created, the promoter reads every version, moves the alias to the best
one if it is elsewhere, and reads again until the alias stays on the best — so two runs that
finish together cannot leave the worse one as champion. On a SQLite store promoters also
take a file lock beside the database (`<db>.registry.lock`), so one pass settles it; on a
server, each promoter re-reads after its write and puts right what a concurrent promoter
wrote from a stale read (the last writer always verifies).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException

from training.errors import TrainingError
from training.mlflow_names import CHAMPION_ALIAS, MODEL_NAME, registered_model_name
from training.mlflow_setup import mlflow_client, store_lock
from training.pyfunc import (
    CHECKPOINT_ARTIFACT,
    SIGNATURE,
    CharflowModel,
    pip_requirements,
    quiet_model_logging,
)

PROMOTION_ROUNDS = 50  # compare-and-set rounds before giving up (concurrent promoters)
REGISTRATION_TAG = "charflow.registration"  # a version's registration id: replays add none


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
    deferred: bool = False  # the store was away: registered when it answers (or charflow sync)


def _val_loss(mv) -> float:
    try:
        return float(mv.tags.get("val_loss", "nan"))
    except ValueError:
        return math.nan


def _as_champion(mv) -> Champion:
    return Champion(
        version=str(mv.version),
        run_id=mv.run_id or "",
        val_loss=_val_loss(mv),
        corpus_digest=mv.tags.get("corpus_digest", ""),
    )


def _champion(client: MlflowClient, corpus: str) -> Champion | None:
    try:
        mv = client.get_model_version_by_alias(registered_model_name(corpus), CHAMPION_ALIAS)
    except MlflowException as e:
        # No such registered model, or (INVALID_PARAMETER_VALUE) it has no such alias.
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return _as_champion(mv)


def _all_versions(client: MlflowClient, name: str) -> list:
    found, token = [], None
    while True:
        try:
            page = client.search_model_versions(f"name = '{name}'", page_token=token)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        found.extend(page)
        token = page.token
        if not token:
            return found


def best_version(client: MlflowClient, corpus: str) -> Champion | None:
    """The best finished version of charflow-<corpus>: READY, with the lowest finite
    val_loss tag (the lower version number on a tie); None when there is none."""
    ranked = [
        (_val_loss(mv), int(mv.version), mv)
        for mv in _all_versions(client, registered_model_name(corpus))
        if mv.status == "READY" and math.isfinite(_val_loss(mv))
    ]
    return _as_champion(min(ranked, key=lambda r: r[:2])[2]) if ranked else None


def promote_champion(client: MlflowClient, corpus: str) -> Champion | None:
    """Compare-and-set: put the alias on the best finished version, then read again, until
    a read finds it there (another promoter may have written from a stale read meanwhile).
    Returns the champion as last read. Callers on a SQLite store hold `registry_lock`."""
    name = registered_model_name(corpus)
    for round_ in range(PROMOTION_ROUNDS):
        best = best_version(client, corpus)
        current = _champion(client, corpus)
        if best is None or (current is not None and current.version == best.version):
            return current
        client.set_registered_model_alias(name, CHAMPION_ALIAS, best.version)
        if round_:  # promoters racing: let the others finish their writes
            time.sleep(random.uniform(0.05, 0.2) * round_)
    raise TrainingError(
        f"the champion alias of {name} kept moving for {PROMOTION_ROUNDS} rounds "
        "(concurrent registrations); the next registration sets it right"
    )


def registry_lock(client: MlflowClient):
    """For a SQLite registry: an inter-process lock beside the database; else a no-op."""
    uri = getattr(client, "_registry_uri", None) or client.tracking_uri
    return store_lock(uri, "registry")


def get_champion(corpus: str) -> Champion | None:
    """The version behind `models:/charflow-<corpus>@champion`, or None if there is none."""
    return _champion(mlflow_client(), corpus)


def versions_trained_on(corpus: str, digest: str) -> list[str]:
    """Registered versions of charflow-<corpus> whose corpus_digest tag is `digest`."""
    client = mlflow_client()
    try:
        found = client.search_model_versions(f"name = '{registered_model_name(corpus)}'")
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return sorted(
        (str(mv.version) for mv in found if mv.tags.get("corpus_digest") == digest), key=int
    )


def champion_decision(val_loss: float, current: Champion | None) -> tuple[bool, str]:
    """Whether a version with `val_loss` takes the alias from `current`, and why."""
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


def register_journaled(client: MlflowClient, record: dict, checkpoint_path: Path) -> None:
    """A registration deferred by `training.registration.register_model`, sent from the
    journal (at most one version per registration id, however often it is replayed)."""
    register_version(
        client,
        corpus=record["corpus"],
        experiment_id=record["experiment_id"],
        run_id=record["run_id"],
        checkpoint_path=checkpoint_path,
        val_loss=record["val_loss"],
        corpus_digest=record["corpus_digest"],
        registration=record["registration"],
    )


def register_version(
    client: MlflowClient,
    *,
    corpus: str,
    experiment_id: str,
    run_id: str,
    checkpoint_path: Path,
    val_loss: float,
    corpus_digest: str,
    registration: str,
) -> ModelResult:
    """Log, register and promote; a registration id already registered is only promoted."""
    name = registered_model_name(corpus)
    version = _registered(client, name, run_id, registration)
    if version is None:
        logged = client.create_logged_model(
            experiment_id,
            name=MODEL_NAME,
            source_run_id=run_id,
            tags={"corpus": corpus, "corpus_digest": corpus_digest},
            model_type="charflow",
        )
        with quiet_model_logging():
            mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=CharflowModel(),
                artifacts={CHECKPOINT_ARTIFACT: str(Path(checkpoint_path).resolve())},
                signature=SIGNATURE,
                pip_requirements=pip_requirements(),
                model_id=logged.model_id,
            )
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        try:
            client.create_registered_model(
                name, description=f"charflow character-level models of the {corpus} corpus"
            )
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    with registry_lock(client):
        before = _champion(client, corpus)
        if version is None:
            version = client.create_model_version(
                name,
                source=f"models:/{logged.model_id}",
                run_id=run_id,
                tags={
                    "val_loss": repr(float(val_loss)),
                    "corpus_digest": corpus_digest,
                    REGISTRATION_TAG: registration,
                },
                model_id=logged.model_id,
            ).version
        version = str(version)
        after = promote_champion(client, corpus)
    is_champion = after is not None and after.version == version
    if is_champion:
        was = before if before is not None and before.version != version else None
        why = champion_decision(float(val_loss), was)[1]
    else:
        why = champion_decision(float(val_loss), after)[1]
    client.set_tag(run_id, "champion_decision", why)
    client.set_tag(run_id, "model_version", version)
    return ModelResult(version, is_champion, why, f"models:/{name}/{version}")


def _registered(client: MlflowClient, name: str, run_id: str, registration: str) -> str | None:
    """The version a registration id already made, if any."""
    for mv in _all_versions(client, name):
        if mv.run_id == run_id and mv.tags.get(REGISTRATION_TAG) == registration:
            return str(mv.version)
    return None

"""The champion registry: one registered model `charflow-<corpus>` per corpus, one version
per training run, and the alias `champion` on the best of them.

The alias moves to a new version only when that version's val loss is strictly lower than
the champion's; a non-finite val loss never takes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException

from training.errors import TrainingError
from training.mlflow_setup import (
    CHAMPION_ALIAS,
    MODEL_NAME,
    mlflow_client,
    registered_model_name,
)
from training.pyfunc import (
    CHECKPOINT_ARTIFACT,
    SIGNATURE,
    CharflowModel,
    pip_requirements,
    quiet_model_logging,
)

if TYPE_CHECKING:
    from training.tracking import RunTracker


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


def register_model(
    tracker: RunTracker, checkpoint_path: Path, *, val_loss: float, corpus_digest: str
) -> ModelResult:
    """Log the checkpoint as the pyfunc model of the tracker's run, register it as a new
    version of charflow-<corpus>, and crown it if it is better than the champion."""
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise TrainingError(f"checkpoint not found: {checkpoint_path}")
    client, corpus, run_id = tracker.client, tracker.corpus, tracker.run_id
    tracker.flush()  # the run's metrics are complete before its model appears
    logged = client.create_logged_model(
        tracker.experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        tags={"corpus": corpus, "corpus_digest": corpus_digest},
        model_type="charflow",
    )
    with quiet_model_logging():
        mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=CharflowModel(),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_path.resolve())},
            signature=SIGNATURE,
            pip_requirements=pip_requirements(),
            model_id=logged.model_id,
        )
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])

    name = registered_model_name(corpus)
    current = _champion(client, corpus)
    try:
        client.create_registered_model(
            name, description=f"charflow character-level models of the {corpus} corpus"
        )
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name,
        source=f"models:/{logged.model_id}",
        run_id=run_id,
        tags={"val_loss": repr(float(val_loss)), "corpus_digest": corpus_digest},
        model_id=logged.model_id,
    ).version
    is_champion, reason = champion_decision(float(val_loss), current)
    if is_champion:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    client.set_tag(run_id, "champion_decision", reason)
    client.set_tag(run_id, "model_version", str(version))
    return ModelResult(str(version), is_champion, reason, f"models:/{name}/{version}")

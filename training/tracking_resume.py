"""Continuing an existing MLflow run (training resumed from a checkpoint): check it is the
corpus's run, mark it RUNNING again as its next segment, and find the steps it already has."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow.entities import Run, RunTag
from mlflow.exceptions import MlflowException

from training.errors import TrainingError
from training.mlflow_setup import experiment_name
from training.tracking_journal import Journal


@dataclass
class Resumed:
    run: Run
    segment: int  # n for the run's n-th resume
    params: dict[str, str]  # param values the run had before this segment
    logged: set[tuple[str, int]] = field(default_factory=set)  # (metric, step) it has


def resume_run(
    client,
    run_id: str,
    *,
    experiment_id: str,
    corpus: str,
    tracking_uri: str,
    tags: dict[str, str],
    journal: Journal,
) -> Resumed:
    """Resume run `run_id` of experiment `experiment_id` with `tags` added (resolved run tags)."""
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise TrainingError(f"MLflow run {run_id} to resume is not in {tracking_uri}") from None
    if run.info.experiment_id != experiment_id:
        raise TrainingError(
            f"MLflow run {run_id} belongs to another experiment, not {experiment_name(corpus)!r}"
        )
    segment = int(run.data.tags.get("charflow.resumes", "0") or 0) + 1
    params = dict(run.data.params)
    found = run.info.status
    note = f"resumed; the run was {found}"
    if found == "RUNNING":
        note += ": the process of the previous segment died without ending it (KILLED)"
    tags = {
        **tags,
        "charflow.resumes": str(segment),
        f"charflow.resume.{segment}": note,
    }
    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    logged: set[tuple[str, int]] = set()
    # Steps already in the store (or on their way) are not logged again: a segment that
    # re-runs steps after its last checkpoint keeps one value per step.
    for key in run.data.metrics:
        for m in client.get_metric_history(run_id, key):
            logged.add((key, int(m.step)))
    for record in journal.pending():
        if record.get("op") == "metrics" and record.get("run_id") == run_id:
            logged.update((k, int(step)) for k, _, _, step in record["metrics"])
    return Resumed(run, segment, params, logged)

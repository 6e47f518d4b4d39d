"""MLflow writes for a sweep's runs outside a training, each best effort (a sweep goes on
without them): a FAILED child run for a configuration that failed before or while training,
the parent run ended after an interruption, a worker's train.log attached to its child.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from training.config import TrainConfig
from training.errors import TrainingError
from training.mlflow_names import CHILD_TAG

log = logging.getLogger(__name__)


def _record_failure(
    experiment_id: str, corpus: str, cfg: TrainConfig, name: str, tags: dict, reason: str
):
    """The failed child's run id in the sweep's experiment: the run train() had begun
    (already FAILED, with its `failure` tag), else a FAILED run made now (train() fails some
    checks before it starts one). Best effort: the sweep goes on without it."""
    from mlflow.entities import Param

    from training.mlflow_setup import mlflow_client

    try:
        client = mlflow_client()
        found = client.search_runs(
            [experiment_id], f"tags.`{CHILD_TAG}` = '{tags[CHILD_TAG]}'", max_results=1
        )
        if found:
            return found[0].info.run_id
        run_tags = {**tags, "corpus": corpus, "failure": reason}
        run_tags["mlflow.source.name"] = "charflow"
        run_id = client.create_run(experiment_id, run_name=name, tags=run_tags).info.run_id
        logged = {**cfg.to_params(), "corpus": corpus, "device": _device_name(cfg)}
        params = [Param(k, str(v)) for k, v in logged.items()]
        client.log_batch(run_id, params=params)
        client.set_terminated(run_id, "FAILED")
        return run_id
    except Exception as err:
        log.warning("could not record the failed child %s in MLflow: %s", name, err)
        return None


def _device_name(cfg: TrainConfig) -> str:
    """The device as a finished run logs it ("cpu", not "auto"), so it does not look varied."""
    from training.device import resolve_device

    try:
        return str(resolve_device(cfg.device))
    except TrainingError:
        return cfg.device


def _end_parent(parent_run_id: str, status: str) -> None:
    from training.mlflow_setup import mlflow_client

    with contextlib.suppress(Exception):
        mlflow_client().set_terminated(parent_run_id, status)


def _attach_log(run_id: str, log_path: Path) -> None:
    from training.mlflow_setup import mlflow_client

    try:
        mlflow_client().log_artifact(run_id, str(log_path))
    except Exception as err:
        log.warning("could not attach %s to run %s: %s", log_path, run_id, err)

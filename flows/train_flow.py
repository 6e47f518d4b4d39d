"""The `train` flow: one corpus, a preset and overrides -> an MLflow run (maybe a champion).

Scheduled retraining: the weekly `train/<corpus>` deployments run this flow with
force=false, so it trains only when the corpus digest differs from the one the current
champion was trained on. The trainer moves the `champion` alias only when val loss
improves. Either way the reason goes to the flow log and to a markdown artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import deployment, flow_run

from flows.corpus_settings import corpus_defaults
from flows.tasks import (
    corpus_on_disk,
    data_root,
    encode_corpus,
    report_training,
    retrain_decision,
    train_model,
)
from scrapers.errors import IngestError
from training.config import build_config


@flow(name="train", flow_run_name="train-{corpus}-{preset}", validate_parameters=True)
def train_flow(
    corpus: str,
    preset: str = "cpu-small",
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Train a model on data/<corpus>/ unless nothing changed since the champion.

    corpus: a corpus already ingested (flow `ingest`).
    preset: a training preset (cpu-small, tiny, gpu).
    overrides: TrainConfig fields, e.g. {"max_steps": 500, "model": "gru"}.
    force: train even when the corpus is unchanged since the champion was trained.
    data_dir: where corpora live (default: $CHARFLOW_HOME/data).
    """
    from training.registry import get_champion, versions_trained_on

    logger = get_run_logger()
    corpus_dir = data_root(data_dir) / corpus
    manifest = corpus_on_disk(corpus_dir)
    if manifest is None:
        raise IngestError(f"no corpus at {corpus_dir}; run the ingest/{corpus} deployment first")
    digest = manifest["corpus_sha256"]
    champion = get_champion(corpus)
    tried = versions_trained_on(corpus, digest) if champion else []
    should_train, reason = retrain_decision(digest, champion, force, tried)
    logger.info("%s: %s", "training" if should_train else "not training", reason)
    if not should_train:
        report_training(corpus, reason)
        return {"corpus": corpus, "trained": False, "reason": reason}

    cfg = build_config(preset, corpus_defaults(corpus), **(overrides or {}))
    encoded = encode_corpus(corpus, str(corpus_dir), digest, cfg.val_fraction, cfg.test_fraction)
    tags = {
        "prefect_flow_run": str(flow_run.name),
        "prefect_flow_run_id": str(flow_run.id),
        "prefect_deployment": str(deployment.name or ""),
        "retrain_reason": reason,
    }
    result = train_model(corpus, str(corpus_dir), cfg, tags)
    logger.info(
        "%s: val loss %.4f after %d steps (%s); champion: %s",
        corpus,
        result.best_val_loss,
        result.steps,
        result.stopped_because,
        result.champion_reason,
    )
    report_training(corpus, reason, result, encoded)
    return {
        "corpus": corpus,
        "trained": True,
        "reason": reason,
        "run_id": result.run_id,
        "val_loss": result.best_val_loss,
        "model_version": result.model_version,
        "is_champion": result.is_champion,
        "champion_reason": result.champion_reason,
    }

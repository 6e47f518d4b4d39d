"""The `train` flow: one corpus, a preset and overrides -> an MLflow run (maybe a champion).

Scheduled retraining: the weekly `train/<corpus>` deployments run this flow with
force=false, so it trains only when the corpus digest differs from the one the current
champion was trained on. The trainer moves the `champion` alias only when val loss
improves. Either way the reason goes to the flow log and to a markdown artifact.

With `torch_threads` the training runs in a process of its own on that many torch threads
(the demo runs two at a time on one thread each); without, in the flow's process.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import deployment, flow_run

from flows.corpus_settings import corpus_defaults
from flows.tasks import (
    corpus_on_disk,
    data_root,
    encode_corpus,
    mlflow_client,
    report_training,
    retrain_decision,
    train_model,
)
from scrapers.errors import IngestError
from training.config import TrainConfig, build_config, demo_settings
from training.errors import TrainingError
from training.units import bits

# The summary shows this much of the run's final sample.
SAMPLE_CHARS = 150


@task(
    name="train-model",
    task_run_name="train {corpus} ({cfg.model}, {torch_threads} torch threads)",
)
def train_model_process(
    corpus: str, corpus_dir: str, cfg: TrainConfig, run_tags: dict[str, str], torch_threads: int
):
    """One training in a spawned process on `torch_threads` threads: runs side by side do not
    share one interpreter or one torch thread pool. Same result as `train_model`."""
    import torch

    from training.train import train

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        1, mp_context=context, initializer=torch.set_num_threads, initargs=(torch_threads,)
    ) as pool:
        job = pool.submit(train, cfg, corpus_dir, corpus=corpus, run_tags=run_tags, progress=False)
        return job.result()


def training_config(
    corpus: str, preset: str, overrides: dict[str, Any], vocab_size: int | None
) -> TrainConfig:
    """Preset < corpus defaults < the demo's per-corpus settings (preset demo) < overrides."""
    measured = demo_settings(corpus, vocab_size) if preset == "demo" else {}
    try:
        return build_config(preset, corpus_defaults(corpus), **{**measured, **overrides})
    except TrainingError as err:
        raise TrainingError(f"{corpus}: {err}") from None


def final_sample(client, run_id: str, chars: int = SAMPLE_CHARS) -> str:
    """The start of the run's final sample at temperature 0.8 (else the last one logged)."""
    names = sorted(a.path for a in client.list_artifacts(run_id, "samples"))
    preferred = [n for n in names if n.endswith("final_T0.8.txt")] or names[-1:]
    if not preferred:
        return ""
    text = Path(client.download_artifacts(run_id, preferred[0])).read_text(encoding="utf-8")
    return text[:chars]


@flow(name="train", flow_run_name="train-{corpus}-{preset}", validate_parameters=True)
def train_flow(
    corpus: str,
    preset: str = "cpu-small",
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    data_dir: str | None = None,
    torch_threads: int | None = None,
) -> dict[str, Any]:
    """Train a model on data/<corpus>/ unless nothing changed since the champion.

    corpus: a corpus already ingested (flow `ingest`).
    preset: a training preset (cpu-small, demo, tiny, gpu); demo adds the corpus's measured
        demo settings.
    overrides: TrainConfig fields, e.g. {"max_steps": 500, "model": "gru"}.
    force: train even when the corpus is unchanged since the champion was trained.
    data_dir: where corpora live (default: $CHARFLOW_HOME/data).
    torch_threads: train in a process of its own on this many torch threads (default: in
        this process, on torch's default threads).
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
        return {
            "corpus": corpus,
            "trained": False,
            "reason": reason,
            "champion_version": champion.version if champion else None,
            "champion_val_loss": champion.val_loss if champion else None,
        }

    cfg = training_config(corpus, preset, overrides or {}, manifest.get("vocab_size"))
    encoded = encode_corpus(corpus, str(corpus_dir), digest, cfg.val_fraction, cfg.test_fraction)
    tags = {
        "prefect_flow_run": str(flow_run.name),
        "prefect_flow_run_id": str(flow_run.id),
        "prefect_deployment": str(deployment.name or ""),
        "retrain_reason": reason,
    }
    if torch_threads:
        result = train_model_process(corpus, str(corpus_dir), cfg, tags, torch_threads)
    else:
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
    champion = get_champion(corpus)
    summary: dict[str, Any] = {
        "corpus": corpus,
        "trained": True,
        "reason": reason,
        "run_id": result.run_id,
        "val_loss": result.best_val_loss,
        "val_bpc": bits(result.best_val_loss),
        "test_loss": result.test_loss,
        "steps": result.steps,
        "stopped_because": result.stopped_because,
        "chars_per_sec": result.chars_per_sec,
        "model": f"{cfg.model}{cfg.num_layers}x{cfg.hidden_size}",  # lstm1x256
        "max_seconds": cfg.max_seconds,
        "model_version": result.model_version,
        "is_champion": result.is_champion,
        "champion_reason": result.champion_reason,
        "champion_version": champion.version if champion else None,
        "champion_val_loss": champion.val_loss if champion else None,
    }
    if result.run_id:
        client = mlflow_client()
        summary["experiment_id"] = client.get_run(result.run_id).info.experiment_id
        summary["sample"] = final_sample(client, result.run_id)
    return summary

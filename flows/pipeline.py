"""The `pipeline` flow: ingest then train, for a list of corpora (the `pipeline/demo` job).

Every corpus is ingested at once, one task each, on the flow's task runner: threads here;
CHARFLOW_TASK_RUNNER=dask or ray spreads the ingests over a cluster (configuration, not
code; see docs/flows.md). Training then runs corpus after corpus on this machine.
One corpus failing does not stop the others; the pipeline fails at the end, naming every
corpus that failed and why.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows.ingest_flow import ingest_flow
from flows.train_flow import train_flow
from scrapers.errors import IngestError
from scrapers.registry import get_corpus, list_corpora


def task_runner_from_env():
    """CHARFLOW_TASK_RUNNER: threads (default) | dask | ray; DASK_ADDRESS / RAY_ADDRESS
    name a running cluster (unset: a local one)."""
    kind = os.environ.get("CHARFLOW_TASK_RUNNER", "threads")
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=4)
    try:
        if kind == "dask":
            from prefect_dask import DaskTaskRunner

            return DaskTaskRunner(address=os.environ.get("DASK_ADDRESS"))
        if kind == "ray":
            from prefect_ray import RayTaskRunner

            return RayTaskRunner(address=os.environ.get("RAY_ADDRESS"))
    except ImportError:
        raise ImportError(
            f"CHARFLOW_TASK_RUNNER={kind} needs the prefect-{kind} package: "
            f"pip install prefect-{kind}"
        ) from None
    raise ValueError(f"CHARFLOW_TASK_RUNNER={kind!r}: choose threads, dask or ray")


def corpus_source(corpus: str, mirror: str | None, sources: dict[str, str]) -> str | None:
    """Where to read `corpus`: an explicit source, else its path inside the mirror, else the
    corpus's own default (None)."""
    if corpus in sources:
        return sources[corpus]
    if mirror is None:
        return None
    spec = get_corpus(corpus)
    if spec.mirror_path is None:
        raise IngestError(
            f"corpus {corpus} has no mirror_path; give its source in sources={{{corpus!r}: ...}}"
        )
    return mirror.rstrip("/") + "/" + spec.mirror_path.lstrip("/")


@task(name="ingest-corpus", task_run_name="ingest {corpus}")
def ingest_corpus(corpus: str, source: str | None, limit: int | None, data_dir: str | None):
    """One corpus's `ingest` flow, as a task so the task runner can run many at once."""
    return ingest_flow(corpus, source=source, limit=limit, data_dir=data_dir)


@flow(name="pipeline", flow_run_name="pipeline-{preset}", task_runner=task_runner_from_env())
def pipeline_flow(
    corpora: list[str] | None = None,
    limit: int | None = 20,
    preset: str = "cpu-small",
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    mirror: str | None = None,
    sources: dict[str, str] | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Ingest every corpus, then train on each.

    corpora: corpus names (default: every registered corpus).
    limit: at most this many documents per corpus.
    preset, overrides: training settings (see the `train` flow).
    force: train even when a corpus is unchanged since its champion was trained.
    mirror: base URL of an offline mirror laid out like ../shared/corpora; each corpus
        reads <mirror>/<its mirror_path>.
    sources: per-corpus source overrides, e.g. {"kubernetes-go": "/path/to/go/tree"}.
    """
    logger = get_run_logger()
    corpora = corpora or [spec.name for spec in list_corpora()]
    for corpus in corpora:
        get_corpus(corpus)  # unknown names fail here, before anything runs
    failures: dict[str, str] = {}

    def failed(corpus: str, why: str) -> None:
        failures[corpus] = why
        logger.error("%s: %s", corpus, why)

    ingests = {}
    for corpus in corpora:
        try:
            source = corpus_source(corpus, mirror, sources or {})
        except IngestError as err:
            failed(corpus, str(err))
            continue
        ingests[corpus] = ingest_corpus.submit(corpus, source, limit, data_dir)

    results: dict[str, Any] = {}
    for corpus, future in ingests.items():
        future.wait()
        if future.state.is_failed():
            failed(corpus, f"ingest failed: {future.state.message}")
            continue
        trained = train_flow(corpus, preset=preset, overrides=overrides, force=force,
                             data_dir=data_dir, return_state=True)  # fmt: skip
        if trained.is_failed():
            failed(corpus, f"train failed: {trained.message}")
            continue
        results[corpus] = {"ingest": future.result(), "train": trained.result()}
    if failures:
        summary = "; ".join(f"{name}: {why}" for name, why in failures.items())
        raise RuntimeError(f"{len(failures)} of {len(corpora)} corpora failed: {summary}")
    return results

"""The `pipeline` flow: ingest then train, for a list of corpora (the `pipeline/demo` job).

Each corpus runs as two subflows, `ingest` then `train`. One corpus failing does not stop
the others; the pipeline fails at the end, naming every corpus that failed and why.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.ingest_flow import ingest_flow
from flows.train_flow import train_flow
from scrapers.errors import IngestError
from scrapers.registry import get_corpus, list_corpora


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


@flow(name="pipeline", flow_run_name="pipeline-{preset}", validate_parameters=True)
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
    """Ingest then train each corpus.

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
    sources = sources or {}
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for corpus in corpora:
        try:
            source = corpus_source(corpus, mirror, sources)
        except IngestError as err:
            failures[corpus] = str(err)
            logger.error("%s: %s", corpus, err)
            continue
        ingested = ingest_flow(corpus, source=source, limit=limit, data_dir=data_dir,
                               return_state=True)  # fmt: skip
        if ingested.is_failed():
            failures[corpus] = f"ingest failed: {ingested.message}"
            logger.error("%s: %s", corpus, failures[corpus])
            continue
        trained = train_flow(corpus, preset=preset, overrides=overrides, force=force,
                             data_dir=data_dir, return_state=True)  # fmt: skip
        if trained.is_failed():
            failures[corpus] = f"train failed: {trained.message}"
            logger.error("%s: %s", corpus, failures[corpus])
            continue
        results[corpus] = {"ingest": ingested.result(), "train": trained.result()}
    if failures:
        summary = "; ".join(f"{name}: {why}" for name, why in failures.items())
        raise RuntimeError(f"{len(failures)} of {len(corpora)} corpora failed: {summary}")
    return results

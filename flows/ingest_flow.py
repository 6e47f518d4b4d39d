"""The `ingest` flow: one corpus from its source (or a mirror) into data/<corpus>/.

fetch (retried, rate-limited per host) -> clean + write (cached on raw bytes and code)
-> a table artifact of corpus statistics. A failure anywhere leaves the previous corpus
on disk as it was (the library writes atomically).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.tasks import (
    build_corpus,
    code_fingerprint,
    corpus_on_disk,
    data_root,
    fetch_raw,
    report_corpus,
)
from scrapers.registry import get_corpus


@flow(name="ingest", flow_run_name="ingest-{corpus}", validate_parameters=True)
def ingest_flow(
    corpus: str,
    source: str | None = None,
    limit: int | None = None,
    options: dict[str, Any] | None = None,
    data_dir: str | None = None,
    retries: int = 2,
) -> dict[str, Any]:
    """Fetch and clean one corpus.

    corpus: a registered corpus name (`charflow corpora`).
    source: URL or path to read instead of the corpus's default (e.g. a mirror).
    limit: at most this many documents (None: all).
    options: corpus options, e.g. {"to_simplified": true} for sanguo.
    data_dir: where corpora live (default: $CHARFLOW_HOME/data).
    retries: how often a failed fetch is retried as a whole.
    """
    logger = get_run_logger()
    spec = get_corpus(corpus)
    source = source or spec.default_source
    options = options or {}
    root = data_root(data_dir)
    corpus_dir = root / corpus

    snapshot = fetch_raw.with_options(retries=retries)(corpus, source, limit, options, root)
    build_args = dict(
        corpus=corpus,
        source=source,
        limit=limit,
        options=options,
        data_dir=str(root),
        raw_fingerprint=snapshot.fingerprint,
        code=code_fingerprint(),
        snapshot=snapshot,
    )
    state = build_corpus(**build_args, return_state=True)
    manifest = state.result()
    rebuilt = state.name != "Cached"
    on_disk = corpus_on_disk(corpus_dir)
    if on_disk is None or on_disk["corpus_sha256"] != manifest["corpus_sha256"]:
        # The cache remembers a corpus that is no longer on disk (deleted, or replaced by a
        # manual `charflow ingest`): build it again.
        logger.info("cached corpus does not match %s on disk; cleaning again", corpus_dir)
        manifest = build_corpus.with_options(refresh_cache=True)(**build_args)
        rebuilt = True
    elif not rebuilt:
        logger.info("raw bytes and cleaning code unchanged: reusing %s as it is", corpus_dir)

    report_corpus(corpus, manifest, snapshot, rebuilt)
    logger.info(
        "corpus %s: %d documents, %d chars, vocab %d, sha256 %s",
        corpus,
        manifest["documents"],
        manifest["chars"],
        manifest["vocab_size"],
        manifest["corpus_sha256"][:12],
    )
    return {
        "corpus": corpus,
        "path": str(corpus_dir),
        "digest": manifest["corpus_sha256"],
        "documents": manifest["documents"],
        "chars": manifest["chars"],
        "cleaned": rebuilt,
    }

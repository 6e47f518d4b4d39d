"""Ingest a registered corpus into data/<name>/, in three blocks that every caller composes:

    gather_raw    source -> raw items (RawItem: bytes on disk, or Skipped), lazily
    clean_item    one raw item -> documents (and skips), by the corpus's cleaner
    write_corpus  raw items -> cleaned, written and committed corpus folder (atomic)

`ingest()` streams them in one process (`charflow ingest`): pages are fetched while the
corpus is written, and a document limit stops the fetching. The Prefect flows run the
gathering as one task (retried on its own) and the writing as another (cached).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from charflow import paths
from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.registry import CorpusSpec, Document, GatherContext, RawItem, Skipped, get_corpus
from scrapers.store import RAW_DIR, CorpusWriter

logger = logging.getLogger("charflow.ingest")

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


@dataclass
class IngestResult:
    name: str
    path: Path
    manifest: dict
    unchanged: bool = False  # the run produced exactly the corpus already on disk


def _coerce(key: str, value, default):
    """Turn a --option string into the type of the option's default."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            word = value.strip().lower()
            if word not in TRUE_WORDS | FALSE_WORDS:
                raise ValueError(value)
            return word in TRUE_WORDS
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        kind = type(default).__name__
        raise IngestError(f"option {key}={value!r}: expected a {kind}") from None
    return value


def resolve_options(spec: CorpusSpec, options: dict | None) -> dict:
    """The spec's option defaults overridden by `options` (unknown keys are an error)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        known = ", ".join(f"{k} (default {v!r})" for k, v in spec.options.items()) or "none"
        raise IngestError(f"unknown option(s) {unknown} for corpus {spec.name}; known: {known}")
    return {k: _coerce(k, options.get(k, v), v) for k, v in spec.options.items()}


class IngestProgress:
    """A tqdm bar on a terminal, a log line every ~10% otherwise. Counts documents out of
    the limit when there is one, else raw items (fetched or skipped) out of what the
    gatherer announced."""

    def __init__(self, name: str, enabled: bool | None, limit: int | None = None):
        self.name = name
        self.limit = limit
        self.unit = "documents" if limit else "items"
        self.total: int | None = limit
        self.position = 0
        self.items = 0
        self.bar = None
        if sys.stderr.isatty() if enabled is None else enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                desc=f"ingest {name}", total=limit, unit=self.unit[:-1], file=sys.stderr
            )
        self._logged_at = time.monotonic()

    def set_total(self, total: int) -> None:
        if self.limit:
            return
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            logger.info(text)

    def step(self, documents: int) -> None:
        self.items += 1
        before, self.position = self.position, documents if self.limit else self.items
        if self.bar is not None:
            self.bar.set_postfix(documents=documents, refresh=False)
            self.bar.update(self.position - before)
            return
        every = max(1, (self.total or 500) // 10)
        now = time.monotonic()
        if self.position // every > before // every or now - self._logged_at > 30:
            self._logged_at = now
            of = f"/{self.total}" if self.total else ""
            logger.info(
                "ingest %s: %d%s %s (%d items, %d documents)",
                self.name, self.position, of, self.unit, self.items, documents,
            )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _ignore(_: int) -> None:
    return None


def _nothing_from(what: str, source: str, corpus: str, skipped: list[Skipped]) -> IngestError:
    """The error "<what> from <source> for corpus <name> (N skipped, e.g. <three>)"."""
    reasons = "; ".join(f"{s.source}: {s.reason}" for s in skipped[:3])
    return IngestError(
        f"{what} from {source} for corpus {corpus}"
        + (f" ({len(skipped)} skipped, e.g. {reasons})" if reasons else "")
    )


# -- (a) gather ---------------------------------------------------------------------------


def gather_raw(
    spec: CorpusSpec,
    source: str,
    raw_dir: Path,
    fetcher: Fetcher,
    options: dict,
    *,
    limit: int | None = None,
    max_raw: int | None = None,
    log: Callable[[str], None] = logger.info,
    set_total: Callable[[int], None] = _ignore,
) -> Iterator[RawItem | Skipped]:
    """The corpus's raw items from `source`, fetched into raw_dir as they are asked for.

    `limit` (documents) is checked now and handed to the gatherer as a hint; `max_raw`
    stops after that many raw items, for a caller that gathers before it cleans and so
    cannot count documents yet. Stopping, or closing the iterator, closes the gatherer: it
    fetches nothing more. Skips are logged; IngestError when the gatherer ran out without
    one raw item."""
    if limit is not None and limit < 1:
        raise IngestError(f"limit must be >= 1, got {limit}")
    ctx = GatherContext(
        name=spec.name,
        source=source,
        limit=limit,
        raw_dir=raw_dir,
        fetcher=fetcher,
        options=options,
        log=log,
        set_total=set_total,
    )
    return _gathered(spec.gather(ctx), ctx, max_raw)


def _gathered(
    items: Iterator[RawItem | Skipped], ctx: GatherContext, max_raw: int | None
) -> Iterator[RawItem | Skipped]:
    raw, skipped = 0, []
    try:
        for item in items:
            if isinstance(item, Skipped):
                skipped.append(item)
                ctx.log(f"skipped {item.source}: {item.reason}")
            else:
                raw += 1
            yield item
            if max_raw is not None and raw >= max_raw:
                return
    finally:
        getattr(items, "close", lambda: None)()  # a generator stopped early fetches no more
    if not raw:
        raise _nothing_from("nothing fetched", ctx.source, ctx.name, skipped)


# -- (b) clean ----------------------------------------------------------------------------


def clean_item(
    spec: CorpusSpec, item: RawItem, options: dict, log: Callable[[str], None] = logger.info
) -> Iterator[Document | Skipped]:
    """One raw item's documents (and skips), by the corpus's cleaner."""
    try:
        for out in spec.clean(item, options):
            if not isinstance(out, Document | Skipped):
                raise TypeError(f"cleaner returned {type(out).__name__}, not Document/Skipped")
            yield out
    except (ValueError, UnicodeError, LookupError) as err:
        # A page the cleaner cannot read is recorded, not fatal; bugs (other errors) raise.
        log(f"skipped {item.source}: cleaner failed: {err}")
        yield Skipped(item.source, f"cleaner failed: {type(err).__name__}: {err}")


# -- (c) write ----------------------------------------------------------------------------


def write_corpus(
    spec: CorpusSpec,
    corpus_dir: Path,
    items: Iterable[RawItem | Skipped],
    options: dict,
    *,
    source: str,
    limit: int | None = None,
    fetch_stats: Callable[[], Mapping[str, int]] = dict,
    log: Callable[[str], None] = logger.info,
    progress: Callable[[int], None] = _ignore,
) -> IngestResult:
    """Clean each raw item (clean_item) into corpus_dir, atomically: on any error the
    previous corpus stays as it was. Stops after `limit` documents, closing `items` (a lazy
    gatherer then fetches no more). `fetch_stats` is read at the commit, once the items are
    used up, for the manifest; `progress` hears the document count after every item.
    IngestError when no document came out."""
    fetched = 0
    cap = math.inf if limit is None else limit
    # Kept only for a spec whose manifest fields need every written document.
    written: list[Document] | None = [] if spec.manifest_fields else None
    with CorpusWriter(corpus_dir) as writer:
        try:
            for item in items:
                if isinstance(item, Skipped):
                    outputs: Iterable[Document | Skipped] = [item]
                else:
                    fetched += 1
                    outputs = clean_item(spec, item, options, log)
                for out in outputs:
                    if isinstance(out, Skipped):
                        writer.skip(out.source, out.reason)
                    elif writer.add(out) is not None and written is not None:
                        written.append(out)
                    if writer.num_documents >= cap:
                        break
                progress(writer.num_documents)
                if writer.num_documents >= cap:
                    break
        finally:
            getattr(items, "close", lambda: None)()  # a generator stopped early fetches no more
        if writer.num_documents == 0:
            skipped = [Skipped(s["source"], s["reason"]) for s in writer.skipped]
            raise _nothing_from("no documents", source, spec.name, skipped)
        extra = spec.manifest_fields(options, written) if spec.manifest_fields else {}
        manifest = writer.commit(
            name=spec.name,
            source=source,
            fetched=fetched,
            options=options,
            limit=limit,
            fetch={k: v for k, v in sorted(fetch_stats().items()) if v},
            **extra,
        )
    log(
        f"corpus {spec.name} {'unchanged' if writer.unchanged else 'written'}: "
        f"{manifest['documents']} documents, {manifest['chars']} chars, "
        f"{len(manifest['skipped'])} skipped -> {corpus_dir}"
    )
    return IngestResult(spec.name, Path(corpus_dir), manifest, writer.unchanged)


# -- the three in one process --------------------------------------------------------------


def ingest(
    name: str,
    source: str | None = None,
    *,
    limit: int | None = None,
    data_dir: Path | None = None,
    options: dict | None = None,
    fetcher: Fetcher | None = None,
    progress: bool | None = None,
) -> IngestResult:
    """Build <data_dir>/<name>/ (default data_dir: charflow.paths.data_dir()) from source
    (default: the spec's), fetching while writing. `limit` caps the number of documents.
    Atomic: on any error the previous corpus stays as it was."""
    spec = get_corpus(name)
    opts = resolve_options(spec, options)
    source = source or spec.default_source
    corpus_dir = Path(data_dir or paths.data_dir()) / spec.name
    own_fetcher = fetcher is None
    fetcher = fetcher or Fetcher()
    before = dict(fetcher.stats)  # a fetcher passed in may have fetched for someone else

    def fetch_stats() -> dict[str, int]:
        return {k: v - before.get(k, 0) for k, v in fetcher.stats.items()}

    bar = IngestProgress(spec.name, progress, limit)
    try:
        items = gather_raw(
            spec, source, corpus_dir / RAW_DIR, fetcher, opts,
            limit=limit, log=bar.message, set_total=bar.set_total,
        )  # fmt: skip
        return write_corpus(
            spec, corpus_dir, items, opts, source=source, limit=limit,
            fetch_stats=fetch_stats, log=bar.message, progress=bar.step,
        )  # fmt: skip
    finally:
        bar.close()
        if own_fetcher:
            fetcher.close()

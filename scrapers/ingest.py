"""ingest(): gather raw items for a registered corpus, clean them, write data/<name>/."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.registry import CorpusSpec, Document, GatherContext, RawItem, Skipped, get_corpus
from scrapers.store import RAW_DIR, CorpusWriter

log = logging.getLogger("charflow.ingest")

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


class Progress:
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
            log.info(text)

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
            log.info(
                "ingest %s: %d%s %s (%d items, %d documents)",
                self.name, self.position, of, self.unit, self.items, documents,
            )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def ingest(
    name: str,
    source: str | None = None,
    *,
    limit: int | None = None,
    data_dir: Path = Path("data"),
    options: dict | None = None,
    fetcher: Fetcher | None = None,
    progress: bool | None = None,
    raw_items: Iterable[RawItem | Skipped] | None = None,
) -> IngestResult:
    """Build data_dir/name/ from source (default: the spec's). Atomic: on any error the
    previous corpus stays as it was. `limit` caps the number of documents. `raw_items`,
    if given, replaces the spec's gather step (items a caller already fetched, e.g. in a
    Prefect task that retries the network part on its own)."""
    spec = get_corpus(name)
    opts = resolve_options(spec, options)
    source = source or spec.default_source
    if limit is not None and limit < 1:
        raise IngestError(f"limit must be >= 1, got {limit}")
    corpus_dir = Path(data_dir) / spec.name
    own_fetcher = fetcher is None
    fetcher = fetcher or Fetcher()
    stats_before = dict(fetcher.stats)
    bar = Progress(spec.name, progress, limit)
    ctx = GatherContext(
        name=spec.name,
        source=source,
        limit=limit,
        raw_dir=corpus_dir / RAW_DIR,
        fetcher=fetcher,
        options=opts,
        log=bar.message,
        set_total=bar.set_total,
    )
    fetched = 0
    try:
        with CorpusWriter(corpus_dir) as writer:
            items = spec.gather(ctx) if raw_items is None else iter(raw_items)
            try:
                for item in items:
                    if isinstance(item, Skipped):
                        writer.skip(item.source, item.reason)
                        bar.message(f"skipped {item.source}: {item.reason}")
                    else:
                        fetched += 1
                        _clean_into(spec, item, opts, writer, bar, limit)
                    bar.step(writer.num_documents)
                    if limit is not None and writer.num_documents >= limit:
                        break
            finally:
                getattr(items, "close", lambda: None)()  # stop a generator early (limit)
            if writer.num_documents == 0:
                reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in writer.skipped[:3])
                raise IngestError(
                    f"no documents from {source} for corpus {spec.name}"
                    + (f" ({len(writer.skipped)} skipped, e.g. {reasons})" if reasons else "")
                )
            fetch_stats = {k: v - stats_before.get(k, 0) for k, v in fetcher.stats.items()}
            manifest = writer.commit(
                name=spec.name,
                source=source,
                fetched=fetched,
                options=opts,
                limit=limit,
                fetch={k: v for k, v in sorted(fetch_stats.items()) if v},
            )
    finally:
        bar.close()
        if own_fetcher:
            fetcher.close()
    state = "unchanged" if writer.unchanged else "written"
    log.info(
        "corpus %s %s: %d documents, %d chars, %d skipped -> %s",
        spec.name,
        state,
        manifest["documents"],
        manifest["chars"],
        len(manifest["skipped"]),
        corpus_dir,
    )
    return IngestResult(spec.name, corpus_dir, manifest, writer.unchanged)


def _clean_into(spec, item: RawItem, opts, writer: CorpusWriter, bar, limit) -> None:
    try:
        for out in spec.clean(item, opts):
            if isinstance(out, Skipped):
                writer.skip(out.source, out.reason)
            elif isinstance(out, Document):
                writer.add(out)
                if limit is not None and writer.num_documents >= limit:
                    return
            else:
                raise TypeError(f"cleaner returned {type(out).__name__}, not Document/Skipped")
    except (ValueError, UnicodeError, LookupError) as err:
        # A page the cleaner cannot read is recorded, not fatal; bugs (other errors) raise.
        writer.skip(item.source, f"cleaner failed: {type(err).__name__}: {err}")
        bar.message(f"skipped {item.source}: cleaner failed: {err}")

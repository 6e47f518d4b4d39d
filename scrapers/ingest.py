"""Ingest a registered corpus into data/<name>/, in three blocks that every caller composes:

    gather_raw    source -> raw items (RawItem: bytes on disk, or Skipped), lazily
    clean_item    one raw item -> documents (and skips), by the corpus's cleaner
    write_corpus  raw items -> cleaned, written and committed corpus folder (atomic)

`ingest()` streams them in one process (`charflow ingest`): pages are fetched while the
corpus is written, and a document limit stops the fetching. The Prefect flows run the
gathering as one task (retried on its own) and the writing as another (cached).

Whatever the corpus, write_corpus also records what cleaning removed (the cleaners'
CleaningStats added up by rule, skips counted by reason) and the near-duplicate documents
(MinHash LSH, scrapers.near_duplicates) in the manifest's `cleaning` block; the
ingest-level options `dedup=near` (drop them) and `near_dup_threshold=0.8` work for every
corpus.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasketch import MinHash

from charflow import paths
from cleaners.removed import EXAMPLES
from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.near_duplicates import DEFAULT_THRESHOLD, NearDuplicateFinder
from scrapers.registry import (
    CleaningStats,
    CorpusSpec,
    Document,
    GatherContext,
    RawItem,
    Skipped,
    get_corpus,
)
from scrapers.store import RAW_DIR, CorpusWriter, normalize_text

logger = logging.getLogger("charflow.ingest")

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
# Options of the ingest itself, for every corpus (a corpus's own option of the same name
# wins): what to do with near-duplicate documents, and how similar they must be (estimated
# Jaccard similarity of character 5-gram sets; 0 = do not look for them).
INGEST_OPTIONS = {"dedup": "none", "near_dup_threshold": DEFAULT_THRESHOLD}
DEDUP_MODES = ("none", "near")
NEAR_DUPLICATE = "near-duplicate of "  # how a dropped near-duplicate's skip reason starts
MAX_PAIRS_LISTED = 1000  # near-duplicate pairs listed in the manifest (all are counted)


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
    """The spec's option defaults overridden by `options` (unknown keys are an error), then
    the ingest options (INGEST_OPTIONS) that `options` gives, checked."""
    options = dict(options or {})
    ingest_level = {
        k: options.pop(k) for k in INGEST_OPTIONS if k in options and k not in spec.options
    }
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        known = ", ".join(f"{k} (default {v!r})" for k, v in spec.options.items()) or "none"
        every = ", ".join(f"{k} (default {v!r})" for k, v in INGEST_OPTIONS.items())
        raise IngestError(
            f"unknown option(s) {unknown} for corpus {spec.name}; known: {known}; "
            f"for every corpus: {every}"
        )
    resolved = {k: _coerce(k, options.get(k, v), v) for k, v in spec.options.items()}
    for key, value in ingest_level.items():
        resolved[key] = _ingest_option(key, value)
    return resolved


def _ingest_option(key: str, value):
    value = _coerce(key, value, INGEST_OPTIONS[key])
    if key == "dedup":
        value = str(value).strip().lower()
        if value not in DEDUP_MODES:
            raise IngestError(f"option dedup={value!r}: expected one of {', '.join(DEDUP_MODES)}")
    elif not 0.0 <= value <= 1.0:
        raise IngestError(f"option near_dup_threshold={value!r}: expected 0 (off) to 1")
    return value


def near_duplicate_settings(options: Mapping) -> tuple[float, bool]:
    """(threshold, drop) from resolved options; a threshold of 0 looks for none."""
    threshold = float(options.get("near_dup_threshold", INGEST_OPTIONS["near_dup_threshold"]))
    drop = options.get("dedup", INGEST_OPTIONS["dedup"]) == "near"
    if drop and not threshold:
        raise IngestError("option dedup=near needs near_dup_threshold > 0")
    return threshold, drop


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
) -> Iterator[Document | Skipped | CleaningStats]:
    """One raw item's documents (and skips, and what cleaning removed), by the corpus's
    cleaner."""
    try:
        for out in spec.clean(item, options):
            if not isinstance(out, Document | Skipped | CleaningStats):
                kind = type(out).__name__
                raise TypeError(f"cleaner returned {kind}, not Document/Skipped/CleaningStats")
            yield out
    except (ValueError, UnicodeError, LookupError) as err:
        # A page the cleaner cannot read is recorded, not fatal; bugs (other errors) raise.
        log(f"skipped {item.source}: cleaner failed: {err}")
        yield Skipped(item.source, f"cleaner failed: {type(err).__name__}: {err}")


# -- what cleaning removed ------------------------------------------------------------------


class CleaningTally:
    """The cleaners' CleaningStats added up by rule: lines, chars, items (raw items the rule
    removed something from) and up to EXAMPLES examples, from different items first."""

    def __init__(self) -> None:
        self.rules: dict[str, dict] = {}
        self._more: dict[str, list[dict]] = {}  # further examples, if few items have any

    def add(self, stats: CleaningStats) -> None:
        for rule, count in stats.rules.items():
            if not (count.lines or count.chars):
                continue
            row = self.rules.setdefault(rule, {"lines": 0, "chars": 0, "items": 0, "examples": []})
            row["lines"] += count.lines
            row["chars"] += count.chars
            row["items"] += 1
            shown = [e["text"] for e in row["examples"]]
            fresh = [text for text in count.examples if text not in shown]
            if fresh and len(row["examples"]) < EXAMPLES:
                row["examples"].append({"source": stats.source, "text": fresh[0]})
            more = self._more.setdefault(rule, [])
            for text in fresh[1:]:
                if len(more) < EXAMPLES:
                    more.append({"source": stats.source, "text": text})

    def manifest(self) -> dict[str, dict]:
        """rule -> {lines, chars, items, examples: [{source, text}]}, by rule name."""
        out = {}
        for rule in sorted(self.rules):
            row = self.rules[rule]
            examples = list(row["examples"])
            for extra in self._more.get(rule, []):
                if len(examples) < EXAMPLES and extra["text"] not in {e["text"] for e in examples}:
                    examples.append(extra)
            out[rule] = {**row, "examples": examples}
        return out


_REASON_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s;,)]+")
_REASON_PATH = re.compile(r"[A-Za-z0-9._~-]*/[A-Za-z0-9._~/-]+")
_REASON_HOST = re.compile(r"\((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\)")
_REASON_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def reason_kind(reason: str) -> str:
    """A skip's reason without its particulars (URLs, paths, hosts, numbers), so that
    skips for the same cause count together: "file not found: /x/a.html" -> "file not
    found: …", "chapter 35 appears again …" -> "chapter N appears again …"."""
    if reason.startswith(NEAR_DUPLICATE):
        return "near-duplicate"
    reason = _REASON_URL.sub("…", reason)
    reason = _REASON_HOST.sub("(…)", _REASON_PATH.sub("…", reason))
    return _REASON_NUMBER.sub("N", reason)


def skipped_by_reason(skipped: Iterable[Mapping]) -> dict[str, int]:
    """reason kind -> how many skips, most first."""
    counts = Counter(reason_kind(s["reason"]) for s in skipped)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# -- near-duplicates -------------------------------------------------------------------------

_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
_MIX = (np.uint64(30), np.uint64(0xBF58476D1CE4E5B9), np.uint64(27), np.uint64(0x94D049BB133111EB))
_LOW32, _SHIFT32 = np.uint64(0xFFFFFFFF), np.uint64(32)
_ROTATE = np.uint64(0x9E3779B1)  # an odd constant: a borrowed value never equals a bin's own


class ShingleArrayFinder(NearDuplicateFinder):
    """NearDuplicateFinder over the same shingles (scrapers.near_duplicates.shingles: the
    text NFC, case folded, whitespace runs as one space, every `shingle_size` characters),
    sketched in a few numpy passes over the whole text instead of one SHA-1 per shingle
    and `num_perm` hash functions per shingle (the library's MinHash): about 10-20 times
    faster, so the search stays a small part of an ingest.

    The sketch is one permutation hashing (Li, Owen & Zhang, 2012): each shingle's 64-bit
    hash picks one of `num_perm` bins by its top bits and ranks within it by the rest; a
    bin keeps its lowest rank, and an empty bin (a text of fewer shingles than bins)
    borrows the next non-empty bin's, shifted by the distance (rotation densification,
    Shrivastava & Li, 2014). The share of equal bins estimates the Jaccard similarity as
    a MinHash does, with the same accuracy on texts of a few hundred characters or more;
    the sketches are datasketch MinHash objects, so MinHashLSH and the threshold work
    unchanged. They are not comparable with the library's own MinHashes (never mixed)."""

    def minhash(self, text: str) -> MinHash | None:
        text = " ".join(unicodedata.normalize("NFC", text).casefold().split())
        if not text:
            return None
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        size = min(self.shingle_size, len(codes))  # a shorter text is one shingle
        count = len(codes) - size + 1
        h = np.full(count, _FNV_OFFSET, dtype=np.uint64)
        for i in range(size):  # FNV-1a over each window's code points, all windows at once
            h = (h ^ codes[i : i + count]) * _FNV_PRIME
        shift1, mul1, shift2, mul2 = _MIX  # splitmix64's finaliser: every bit counts
        h ^= h >> shift1
        h *= mul1
        h ^= h >> shift2
        h *= mul2
        h ^= h >> shift1
        h.sort()
        # (top 32 bits) * bins = bin * 2^32 + rank: both grow with h, so in sorted order a
        # bin's first shingle has its lowest rank.
        scaled = (h >> _SHIFT32) * np.uint64(self.num_perm)
        bins, ranks = scaled >> _SHIFT32, (scaled & _LOW32).astype(np.uint32)
        wanted = np.arange(self.num_perm, dtype=np.uint64)
        first = np.searchsorted(bins, wanted)
        filled = first < len(bins)
        filled[filled] = bins[first[filled]] == wanted[filled]
        values = np.zeros(self.num_perm, dtype=np.uint32)
        values[filled] = ranks[first[filled]]
        if not filled.all():
            full = np.flatnonzero(filled)
            at = np.searchsorted(full, np.arange(self.num_perm)) % len(full)
            donor = full[at]  # the next filled bin, circularly
            distance = ((donor - np.arange(self.num_perm)) % self.num_perm).astype(np.uint64)
            shifted = (values[donor].astype(np.uint64) + distance * _ROTATE) & _LOW32
            values = shifted.astype(np.uint32)
        return MinHash(
            num_perm=self.num_perm,
            seed=self.seed,
            hashvalues=values,
            permutations=self._permutations,
            scheme=self._scheme,
        )


class NearDuplicates:
    """Near-duplicate documents among those written, in order: each is compared with the
    documents kept before it (see NearDuplicateFinder); pairs found are recorded, and the
    later document of a pair is dropped when `drop`."""

    def __init__(self, threshold: float, drop: bool):
        self.threshold, self.drop = threshold, drop
        self.finder = ShingleArrayFinder(threshold) if threshold else None
        self.kept: dict[str, dict] = {}  # finder key -> {id, title, source} of a kept document
        self.pairs: list[dict] = []
        self.found = 0
        self.seconds = 0.0  # spent hashing and searching
        self._key = 0

    def check(self, text: str) -> tuple[dict, float] | None:
        """(the kept document `text` duplicates, similarity), or None: the caller then
        writes the document and calls keep(row)."""
        if self.finder is None:
            return None
        started = time.perf_counter()
        self._pending = str(self._key)
        self._key += 1
        found = self.finder.add(self._pending, text)
        self.seconds += time.perf_counter() - started
        return None if found is None else (self.kept[found[0]], found[1])

    def keep(self, row: dict) -> None:
        """The document last checked was written as `row` (documents.jsonl)."""
        if self.finder is not None:
            self.kept[self._pending] = {k: row[k] for k in ("id", "title", "source")}

    @staticmethod
    def reason(of: dict, similarity: float) -> str:
        title = f" “{of['title']}”" if of["title"] else ""
        return f"{NEAR_DUPLICATE}document {of['id']}{title} (similarity {similarity:.2f})"

    def record(self, doc: Document, row_id: int | None, of: dict, similarity: float) -> None:
        self.found += 1
        if len(self.pairs) < MAX_PAIRS_LISTED:
            pair = {"id": row_id, "title": doc.title, "source": doc.source}
            pair |= {f"of_{k}": v for k, v in of.items()} | {"similarity": similarity}
            self.pairs.append(pair)

    def manifest(self) -> dict:
        return {
            "threshold": self.threshold,
            "action": "off" if self.finder is None else "dropped" if self.drop else "reported",
            "found": self.found,
            "pairs": self.pairs,
        }


def describe_rule(row: Mapping) -> str:
    """'412 lines, 12,345 chars in 190 items' for a row of cleaning.rules ('12,345 chars
    within lines' for a rule that drops no line whole)."""
    items = row.get("items", 0)
    if row["lines"]:
        what = f"{row['lines']:,} lines, {row['chars']:,} chars"
    else:
        what = f"{row['chars']:,} chars within lines"
    return f"{what} in {items:,} item{'s' * (items != 1)}"


def cleaning_rows(manifest: Mapping) -> list[tuple[str, str]]:
    """(statistic, value) rows of a manifest's `cleaning` block, for a table: skips by
    reason, each rule (most characters first) with its examples, near-duplicates."""
    cleaning = manifest.get("cleaning")
    if not cleaning:
        return [("what cleaning removed", "not recorded (ingested before it was)")]
    rows = [(f"skipped: {reason}", f"{n:,}") for reason, n in cleaning["skipped"].items()]
    for rule, row in sorted(cleaning["rules"].items(), key=lambda kv: (-kv[1]["chars"], kv[0])):
        examples = "; ".join(repr(e["text"]) for e in row["examples"])
        rows.append(
            (f"removed: {rule}", describe_rule(row) + (f"; e.g. {examples}" if examples else ""))
        )
    near = cleaning["near_duplicates"]
    if near["action"] == "off":
        rows.append(("near-duplicates", "not looked for (near_dup_threshold=0)"))
    else:
        pairs = "; ".join(
            f"{p['source']} ~ {p['of_source']} ({p['similarity']:.2f})" for p in near["pairs"][:5]
        )
        value = f"{near['found']} {near['action']} (similarity >= {near['threshold']})"
        rows.append(("near-duplicates", value + (f": {pairs}" if pairs else "")))
    return rows


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
    tally = CleaningTally()
    near = NearDuplicates(*near_duplicate_settings(options))
    with CorpusWriter(corpus_dir) as writer:
        try:
            for item in items:
                if isinstance(item, Skipped):
                    outputs: Iterable[Document | Skipped | CleaningStats] = [item]
                else:
                    fetched += 1
                    outputs = clean_item(spec, item, options, log)
                for out in outputs:
                    if isinstance(out, CleaningStats):
                        tally.add(out)
                    elif isinstance(out, Skipped):
                        writer.skip(out.source, out.reason)
                    else:
                        _write_document(writer, out, near, written)
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
        cleaning = {
            "rules": tally.manifest(),
            "skipped": skipped_by_reason(writer.skipped),
            "near_duplicates": near.manifest(),
        }
        manifest = writer.commit(
            name=spec.name,
            source=source,
            fetched=fetched,
            options=options,
            limit=limit,
            fetch={k: v for k, v in sorted(fetch_stats().items()) if v},
            cleaning=cleaning,
            **extra,
        )
    if near.finder is not None:
        what = "dropped" if near.drop else "kept (dedup=near drops them)"
        log(
            f"near-duplicates (similarity >= {near.threshold}): {near.found} found, {what}; "
            f"MinHash LSH took {near.seconds:.2f} s"
        )
    log(
        f"corpus {spec.name} {'unchanged' if writer.unchanged else 'written'}: "
        f"{manifest['documents']} documents, {manifest['chars']} chars, "
        f"{len(manifest['skipped'])} skipped -> {corpus_dir}"
    )
    return IngestResult(spec.name, Path(corpus_dir), manifest, writer.unchanged)


def _write_document(
    writer: CorpusWriter, doc: Document, near: NearDuplicates, written: list[Document] | None
) -> None:
    """Write one document, unless it is a near-duplicate to drop (then a recorded skip)."""
    text = normalize_text(doc.text)
    match = near.check(text) if text and not text.isspace() else None  # empty: the writer skips
    if match is not None and near.drop:
        of, similarity = match
        writer.skip(doc.source, near.reason(of, similarity))
        near.record(doc, None, of, similarity)
        return
    row = writer.add(doc)
    if row is None:
        return
    if match is None:
        near.keep(row)
    else:
        near.record(doc, row["id"], *match)
    if written is not None:
        written.append(doc)


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

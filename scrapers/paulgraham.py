"""Paul Graham's essays: start at the essay index, one document per essay, in its order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from cleaners.essay_html import index_links, parse_essay
from scrapers.fetch import is_url
from scrapers.index_pages import fetch_pages, read_index
from scrapers.registry import (
    CleaningStats,
    CorpusSpec,
    Document,
    GatherContext,
    RawItem,
    Skipped,
    register,
)

# Pages the index links to that are not essays: the home page (logo), the feed, itself.
NOT_ESSAYS = frozenset({"index.html", "rss.html", "articles.html", ""})


def is_essay(url: str) -> bool:
    """An essay page: an .html file on the index's host that is not one of NOT_ESSAYS."""
    parts = urlsplit(url)
    name = parts.path.rsplit("/", 1)[-1]
    return name.endswith(".html") and name not in NOT_ESSAYS and not parts.query


def gather(ctx: GatherContext) -> Iterator[RawItem | Skipped]:
    url = ctx.source if is_url(ctx.source) else Path(ctx.source).resolve().as_uri()
    index = read_index(ctx, url, "essay index", lambda body: ((h, None) for h in index_links(body)))
    essays = [page for page in index.pages if is_essay(page)]
    ctx.log(f"essay index: {len(essays)} essays, {len(index.offsite)} off-site links left out")
    ctx.set_total(len(index.offsite) + len(essays))
    yield from index.offsite
    yield from fetch_pages(ctx, {essay: {} for essay in essays})


def clean(item: RawItem, options: dict) -> Iterator[Document | CleaningStats]:
    essay = parse_essay(item.path.read_bytes())
    slug = urlsplit(item.source).path.rsplit("/", 1)[-1].removesuffix(".html")
    yield CleaningStats(item.source, essay.removed)
    yield Document(essay.text, item.source, essay.title, essay.date, meta={"slug": slug})


SPEC = register(
    CorpusSpec(
        name="paulgraham",
        description="Paul Graham's essays (paulgraham.com), one document per essay",
        default_source="http://paulgraham.com/articles.html",
        gather=gather,
        clean=clean,
        mirror_path="paulgraham/articles.html",
        training_defaults={"seq_len": 256},
    )
)

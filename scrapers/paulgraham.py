"""Paul Graham's essays: start at the essay index, one document per essay, in its order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from cleaners.essay_html import index_links, parse_essay
from scrapers.errors import IngestError
from scrapers.fetch import is_url, normalize_url, same_host
from scrapers.registry import CorpusSpec, Document, GatherContext, RawItem, Skipped, register

# Pages the index links to that are not essays: the home page (logo), the feed, itself.
NOT_ESSAYS = frozenset({"index.html", "rss.html", "articles.html", ""})


def essay_urls(index_url: str, hrefs: list[str]) -> tuple[list[str], list[Skipped]]:
    """Essay URLs in index order (same host, .html, no query, de-duplicated) and the
    off-site links that were left out."""
    urls: dict[str, None] = {}
    offsite: dict[str, Skipped] = {}
    for href in hrefs:
        url = normalize_url(urljoin(index_url, href))
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "file"):
            continue
        if not same_host(url, index_url):
            offsite.setdefault(url, Skipped(url, f"off-site link ({parts.netloc})"))
            continue
        name = parts.path.rsplit("/", 1)[-1]
        if name in NOT_ESSAYS or parts.query or not name.endswith(".html"):
            continue
        urls.setdefault(url, None)
    return list(urls), list(offsite.values())


def gather(ctx: GatherContext) -> Iterator[RawItem | Skipped]:
    index_url = ctx.source if is_url(ctx.source) else Path(ctx.source).resolve().as_uri()
    index = ctx.fetcher.get(index_url, ctx.raw_dir)
    if not index.ok:
        raise IngestError(f"cannot read the essay index {index_url}: {index.reason}")
    urls, offsite = essay_urls(index.url, index_links(index.read_bytes()))
    ctx.log(f"essay index: {len(urls)} essays, {len(offsite)} off-site links left out")
    ctx.set_total(len(offsite) + len(urls))
    yield from offsite
    for url in urls:
        page = ctx.fetcher.get(url, ctx.raw_dir)
        if page.ok:
            yield RawItem(url, page.path, {"from_cache": page.from_cache})
        else:
            yield Skipped(url, page.reason or "not fetched")


def clean(item: RawItem, options: dict) -> Iterator[Document]:
    essay = parse_essay(item.path.read_bytes())
    slug = urlsplit(item.source).path.rsplit("/", 1)[-1].removesuffix(".html")
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

"""Sites read through one index page (the essay list, the episode list): fetch the index,
keep the links that stay on its host, fetch each page.

    index = read_index(ctx, url, "essay index", lambda body: ((h, None) for h in hrefs(body)))
    yield from fetch_pages(ctx, {url: {} for url in index.pages})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from scrapers.errors import IngestError
from scrapers.fetch import normalize_url, same_host
from scrapers.registry import GatherContext, RawItem, Skipped

# Link schemes that name a page; mailto:, javascript: and the like are not pages.
PAGE_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class SiteIndex:
    url: str  # where the index was read (after same-host redirects): links resolve against it
    pages: dict[str, str | None]  # same-host page URL -> its label on the index, index order
    offsite: list[Skipped]  # links to other hosts, left out (a scraper never leaves the host)


def read_index(
    ctx: GatherContext,
    url: str,
    what: str,
    links: Callable[[bytes], Iterable[tuple[str, str | None]]],
) -> SiteIndex:
    """Fetch the index page at `url` and sort the (href, label) pairs `links` finds in it:
    resolved, normalised and de-duplicated (the first label wins), same-host pages apart
    from off-site links. IngestError naming `what` when the index cannot be read."""
    index = ctx.fetcher.get(url, ctx.raw_dir)
    if not index.ok:
        raise IngestError(f"cannot read the {what} {url}: {index.reason}")
    pages: dict[str, str | None] = {}
    offsite: dict[str, Skipped] = {}
    for href, label in links(index.read_bytes()):
        if not href or href.startswith("#"):  # the index itself
            continue
        page = normalize_url(urljoin(index.url, href))
        parts = urlsplit(page)
        if parts.scheme not in PAGE_SCHEMES:
            continue
        if same_host(page, index.url):
            pages.setdefault(page, label)
        else:
            why = "outside the source folder" if parts.scheme == "file" else "off-site link"
            offsite.setdefault(page, Skipped(page, f"{why} ({parts.netloc or parts.path})"))
    return SiteIndex(index.url, pages, list(offsite.values()))


def fetch_pages(ctx: GatherContext, pages: Mapping[str, dict]) -> Iterator[RawItem | Skipped]:
    """Each page URL fetched in order: a RawItem carrying its meta, or why there is none."""
    for url, meta in pages.items():
        page = ctx.fetcher.get(url, ctx.raw_dir)
        if page.ok:
            yield RawItem(url, page.path, meta)
        else:
            yield Skipped(url, page.reason or "not fetched")

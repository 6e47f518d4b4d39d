"""friends: the Friends transcripts (fangj/friends), one document per episode, in order.

The source is the folder holding `index.html` (which links `season/SSEE.html` pages) or
that index itself: a URL (default: the repository's raw files at a pinned commit) or a
local clone. Episodes the index links to but the source lacks are skipped with the reason.

    charflow ingest friends
    charflow ingest friends --source ~/src/friends            # a local clone
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from cleaners.friends_html import clean_episode, index_entries
from scrapers.errors import IngestError
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

REPOSITORY = "https://raw.githubusercontent.com/fangj/friends"
COMMIT = "0e0e7b0f08c0ccb4a80b4f3beab22fbaa1ccca91"  # 2016-10-02, the last one
DEFAULT_SOURCE = f"{REPOSITORY}/{COMMIT}/index.html"


def index_url(source: str) -> str:
    """The index page for a source naming the folder or the page, as a URL."""
    if not is_url(source):
        path = Path(source).expanduser().resolve()
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            raise IngestError(f"no Friends index at {path}")
        return path.as_uri()
    return source if urlsplit(source).path.endswith(".html") else source.rstrip("/") + "/index.html"


def episode_of(url: str) -> tuple[str, int | None]:
    """'…/season/0615-0616.html' -> ('0615-0616', 6); '07outtakes' -> ('07outtakes', 7)."""
    stem = urlsplit(url).path.rsplit("/", 1)[-1].removesuffix(".html")
    return stem, int(stem[:2]) if stem[:2].isdigit() else None


def episode_meta(url: str, index_title: str | None) -> dict:
    episode, season = episode_of(url)
    return {"episode": episode, "season": season, "index_title": index_title}


def gather(ctx: GatherContext) -> Iterator[RawItem | Skipped]:
    url = index_url(ctx.source)
    index = read_index(
        ctx, url, "Friends index", lambda body: ((e.href, e.title) for e in index_entries(body))
    )
    episodes = {
        page: title for page, title in index.pages.items() if urlsplit(page).path.endswith(".html")
    }
    if not episodes:
        raise IngestError(f"the Friends index {url} links to no episode pages")
    ctx.log(f"Friends index: {len(episodes)} episodes")
    ctx.set_total(len(episodes) if ctx.limit is None else min(len(episodes), ctx.limit))
    yield from fetch_pages(ctx, {page: episode_meta(page, t) for page, t in episodes.items()})


def clean(item: RawItem, options: dict) -> Iterator[Document | Skipped | CleaningStats]:
    episode = clean_episode(item.path.read_bytes())
    yield CleaningStats(item.source, episode.removed)
    if not episode.lines:
        yield Skipped(item.source, "no script lines found on the page")
        return
    title = episode.title or item.meta.get("index_title")
    episode.title = title
    credits = [{"role": role, "name": name} for role, name in episode.credits]
    meta = {**item.meta, "credits": credits}
    if episode.aired:
        meta["aired"] = episode.aired
    yield Document(episode.text, item.source, title, meta=meta)


SPEC = register(
    CorpusSpec(
        name="friends",
        description="Friends TV transcripts (fangj/friends), one script per episode",
        default_source=DEFAULT_SOURCE,
        gather=gather,
        clean=clean,
        mirror_path="friends/index.html",
        training_defaults={"seq_len": 256},
    )
)

"""Any Chinese novel in plain text, one document per chapter: the gatherer and cleaner
behind `sanguo`, reusable under another corpus name with `chinese_novel_spec(...)`.

The source is one text file (a URL or a local path) or several chapter files (URLs or
paths separated by commas or whitespace, in reading order). A file whose bytes repeat an
earlier one is skipped. The cleaning is cleaners.chinese: encoding detected and verified,
hard wrapping undone, ads and trailers dropped, a repeated chapter kept once.

    # scrapers/hongloumeng.py: a second novel is three lines
    from scrapers.chinese_novel import chinese_novel_spec
    from scrapers.registry import register
    SPEC = register(chinese_novel_spec("hongloumeng", "红楼梦 (Dream of the Red Chamber)",
                                       "https://example.org/hongloumeng.txt"))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from charflow.files import file_sha256
from cleaners.chinese import decode_chinese, split_novel, to_simplified
from scrapers.errors import IngestError
from scrapers.fetch import is_url
from scrapers.registry import CorpusSpec, Document, GatherContext, RawItem, Skipped

OPTIONS = {"to_simplified": False}  # convert Traditional characters to Simplified (OpenCC)
TRAINING_DEFAULTS = {"emb_size": 128}  # thousands of distinct characters


def source_urls(source: str) -> list[str]:
    """One URL per file: a URL, a local path, or several separated by commas/whitespace."""
    urls = []
    for part in re.split(r"[\s,]+", source.strip()):
        if not part:
            continue
        if is_url(part):
            urls.append(part)
            continue
        path = Path(part).expanduser().resolve()
        if not path.is_file():
            raise IngestError(f"no such file: {path}")
        urls.append(path.as_uri())
    if not urls:
        raise IngestError("empty source: give a URL or path of the novel's text")
    return urls


def gather(ctx: GatherContext) -> Iterator[RawItem | Skipped]:
    urls = source_urls(ctx.source)
    ctx.set_total(len(urls))
    seen: dict[str, str] = {}  # sha256 of the bytes -> the first URL that had them
    for part, url in enumerate(urls, 1):
        result = ctx.fetcher.get(url, ctx.raw_dir)
        if not result.ok:
            yield Skipped(url, result.reason or "not fetched")
            continue
        digest = file_sha256(result.path)
        if digest in seen:
            yield Skipped(url, f"same bytes as {seen[digest]}; kept once")
            continue
        seen[digest] = url
        yield RawItem(url, result.path, {"part": part, "parts": len(urls)})


def clean(item: RawItem, options: dict) -> Iterator[Document | Skipped]:
    decoded = decode_chinese(item.path.read_bytes())  # EncodingError: the item is skipped
    one_chapter_files = item.meta.get("parts", 1) > 1
    novel = split_novel(decoded.text, item.meta.get("part") if one_chapter_files else None)
    for what, why in novel.dropped:
        yield Skipped(f"{item.source} ({what})", why)
    if not novel.chapters:
        yield Skipped(item.source, "no chapter headings (第N回/第N章) found")
    convert = to_simplified if options.get("to_simplified") else (lambda text: text)
    for chapter in novel.chapters:
        meta = {
            "chapter": chapter.number,
            "chapter_title": convert(chapter.title),
            "encoding": decoded.encoding,
            "pua_chars": chapter.pua_chars,
        }
        yield Document(convert(chapter.text), item.source, convert(chapter.heading), meta=meta)


def chinese_novel_spec(
    name: str,
    description: str,
    default_source: str,
    *,
    mirror_path: str | None = None,
    training_defaults: dict | None = None,
) -> CorpusSpec:
    """A corpus spec for a Chinese novel; register() it from a module in scrapers/."""
    return CorpusSpec(
        name=name,
        description=description,
        default_source=default_source,
        gather=gather,
        clean=clean,
        mirror_path=mirror_path,
        training_defaults=dict(
            TRAINING_DEFAULTS if training_defaults is None else training_defaults
        ),
        options=dict(OPTIONS),
    )

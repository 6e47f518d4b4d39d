"""Any Chinese novel in plain text, one document per chapter: the gatherer and cleaner
behind `novel` (any book) and `sanguo` (its preset), reusable under another corpus name
with `chinese_novel_spec(...)`.

The source is one text file (a URL or a local path) or several chapter files (URLs or
paths separated by commas or whitespace, in reading order). A file whose bytes repeat an
earlier one is skipped. The cleaning is cleaners.chinese: encoding detected and verified,
site notices, title page and table of contents dropped, hard wrapping undone, a repeated
chapter kept once. Every part of the file is accounted for: a chapter is a document
(meta `section`: chapter, prologue, epilogue …); a part left out (a preface, the table of
contents, a site notice, a repeated chapter) is a skipped entry with the reason.

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
from urllib.parse import unquote, urlsplit

from charflow.files import file_sha256
from cleaners.chinese import EncodingError, decode_chinese, split_novel, to_simplified
from scrapers.errors import IngestError
from scrapers.fetch import is_url
from scrapers.registry import CleaningStats, CorpusSpec, Document, GatherContext, RawItem, Skipped

OPTIONS = {
    "to_simplified": False,  # convert Traditional characters to Simplified (OpenCC)
    "title": "",  # the book's title; default: the file's title page, else the file name
    "keep_extras": False,  # prefaces, appendices and afterwords become documents too
}
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


def title_from_source(source: str) -> str | None:
    """'…/%E8%A5%BF%E6%B8%B8%E8%AE%B0.txt' -> '西游记': the file name without extension."""
    name = unquote(urlsplit(source).path).rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem.strip() or None


def clean(item: RawItem, options: dict) -> Iterator[Document | Skipped | CleaningStats]:
    try:
        decoded = decode_chinese(item.path.read_bytes())
    except EncodingError as err:
        yield Skipped(item.source, str(err))
        return
    one_chapter_files = item.meta.get("parts", 1) > 1
    novel = split_novel(
        decoded.text,
        item.meta.get("part") if one_chapter_files else None,
        keep_extras=bool(options.get("keep_extras")),
    )
    yield CleaningStats(item.source, novel.removed)
    for section in novel.sections:
        if not section.kept:
            yield Skipped(f"{item.source} ({section.what})", section.reason)
    if not novel.chapters:
        yield Skipped(item.source, "no chapter headings (第N回/第N章/卷N) found")
    convert = to_simplified if options.get("to_simplified") else (lambda text: text)
    book = options.get("title") or novel.title or title_from_source(item.source)
    for chapter in novel.chapters:
        meta = {
            "chapter": chapter.number,
            "chapter_title": convert(chapter.title),
            "section": chapter.kind,
            "book": convert(book) if book else None,
            "encoding": decoded.encoding,
            "pua_chars": chapter.pua_chars,
        }
        if novel.author:
            meta["author"] = convert(novel.author)
        if chapter.volume:
            meta["volume"] = convert(chapter.volume)
        title = convert(chapter.heading) or meta["book"]
        yield Document(convert(chapter.text), item.source, title, meta=meta)


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

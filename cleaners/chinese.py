"""Chinese novels in plain text (GBK, GB18030, Big5, UTF-8, UTF-16) -> clean chapters.

Web copies of classical novels share a layout: hard-wrapped lines, paragraphs indented with
ASCII spaces or U+3000, verse indented deeper, `第N回` chapter headings with Chinese
numerals, and a distributor's trailer or ads. This module decodes the bytes (detected, then
verified by a strict decode), undoes the wrapping and splits the text into chapters:

    第一回　宴桃园豪杰三结义　斩黄巾英雄首立功      heading line, kept as is
    滚滚长江东逝水，浪花淘尽英雄。是非成败转头空。  verse: one line per verse line
    话说天下大势，分久必合，合久必分。……          prose: one line per paragraph
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import charset_normalizer

# The codecs a Chinese text file comes in, in the order ties are broken.
CANDIDATE_ENCODINGS = ("utf_8", "gbk", "gb18030", "big5", "utf_16")
_BOMS = (
    (codecs.BOM_UTF8, "utf_8_sig"),
    (codecs.BOM_UTF16_LE, "utf_16"),
    (codecs.BOM_UTF16_BE, "utf_16"),
)

_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4}
_DIGITS |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_UNITS = {"十": 10, "百": 100, "千": 1000}
_NUMERALS = "〇零一二三四五六七八九十百千两0-9０-９"
_HEADING = re.compile(rf"^第(?P<num>[{_NUMERALS}]+)(?P<unit>[回章])(?:\s+(?P<title>.*))?$")
_MAX_HEADING_CHARS = 60

# Lines that are a distributor's mark, a link or an ad rather than the novel.
_RULE_LINE = re.compile(r"^[-=*_~#·.。—－＝＊]{3,}$")
_URL = re.compile(
    r"(?:https?://|www\.)[\w./?&=%#:~+-]+|[\w-]+\.(?:com|net|org|cn|cc)\b[\w./?&=%#-]*"
)
_AD_WORDS = re.compile(
    r"整理校对|电子书|下载|txt|TXT|小说网|书库|免费阅读|手机阅读|最新章节|本书由|更多精彩|请记住|"
    r"本站|书友|收藏本站"
)
_MAX_AD_CHARS = 80
_CLOSING = tuple("。！？；：”’」』）》…!?;")
_SPACE_RUN = re.compile(r"[ \t\u3000\xa0]+")
_PRIVATE_USE = re.compile("[\ue000-\uf8ff\U000f0000-\U0010fffd]")  # BMP, planes 15-16


class EncodingError(ValueError):
    """The bytes are not cleanly any of the candidate encodings."""


@dataclass
class Decoded:
    text: str
    encoding: str
    pua_chars: int  # characters the codec mapped into a Private Use Area


@dataclass
class Chapter:
    number: int
    heading: str  # the heading line as printed, e.g. "第一回　宴桃园豪杰三结义　斩黄巾英雄首立功"
    title: str  # the part after the number
    text: str  # heading line, then one line per paragraph or verse line
    pua_chars: int = 0


@dataclass
class Novel:
    chapters: list[Chapter]
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)


def count_pua(text: str) -> int:
    return len(_PRIVATE_USE.findall(text))


def _strict(data: bytes, encoding: str) -> str | None:
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    return None if "\ufffd" in text else text


def decode_chinese(data: bytes) -> Decoded:
    """Detect the encoding (charset-normalizer among CANDIDATE_ENCODINGS), then verify it.

    A decode counts only if it is strict and yields no U+FFFD; GB18030 guesses try the
    narrower GBK first. Raises EncodingError naming what was tried.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = _strict(data, encoding)
            if text is None:
                raise EncodingError(f"has a {encoding} byte-order mark but does not decode as it")
            return Decoded(text.lstrip("\ufeff"), encoding.removesuffix("_sig"), count_pua(text))
    tried: list[str] = []
    best = charset_normalizer.from_bytes(data, cp_isolation=list(CANDIDATE_ENCODINGS)).best()
    guess = best.encoding if best is not None else None
    if guess in {"gb18030", "gb2312", "hz"}:
        guess = "gbk"  # GBK is the common case and a subset: try it first, then GB18030
    order = ["utf_8"] + ([guess] if guess else []) + list(CANDIDATE_ENCODINGS)
    for encoding in dict.fromkeys(order):
        if encoding == "utf_16":
            continue  # without a BOM, UTF-16 decodes nearly anything: not verifiable
        tried.append(encoding)
        text = _strict(data, encoding)
        if text is not None:
            return Decoded(text, encoding, count_pua(text))
    guessed = guess or "nothing"
    raise EncodingError(f"not cleanly decodable as {', '.join(tried)} (detector guessed {guessed})")


def chinese_number(numeral: str) -> int:
    """'一' -> 1, '十' -> 10, '三十五' -> 35, '一百零五' -> 105, '一二〇' -> 120, '12' -> 12."""
    numeral = unicodedata.normalize("NFKC", numeral)
    if numeral.isdigit():
        return int(numeral)
    if not any(c in _UNITS for c in numeral):  # digit by digit: 一二〇
        return int("".join(str(_DIGITS[c]) for c in numeral))
    total, digit = 0, None
    for c in numeral:
        if c in _DIGITS:
            digit = _DIGITS[c]
        elif c in _UNITS:
            total += (1 if digit is None else digit) * _UNITS[c]
            digit = None
        else:
            raise ValueError(f"not a Chinese numeral: {numeral!r}")
    return total + (digit or 0)


@functools.cache
def _char_width(c: str) -> int:
    # Full-width and ambiguous characters take two columns in a Chinese text file.
    return 2 if unicodedata.east_asian_width(c) in "WFA" else 1


def _width(text: str) -> int:
    return len(text) if text.isascii() else sum(map(_char_width, text))


def _indent(line: str) -> tuple[int, str]:
    body = line.lstrip(" \t\u3000\xa0")
    return _width(line[: len(line) - len(body)]), body


def is_noise(line: str) -> bool:
    """A rule of dashes, or a short line carrying a URL or a download site's ad."""
    text = line.strip(" \t\u3000\xa0")
    if _RULE_LINE.match(text):
        return True
    return len(text) <= _MAX_AD_CHARS and bool(_URL.search(text) or _AD_WORDS.search(text))


def heading_of(line: str) -> tuple[int, str] | None:
    """(number, title) if `line` is a chapter heading such as '第三十五回　…'."""
    text = line.strip(" \t\u3000\xa0")
    m = _HEADING.match(text)
    if not m or len(text) > _MAX_HEADING_CHARS:
        return None
    try:
        return chinese_number(m["num"]), _SPACE_RUN.sub("\u3000", m["title"] or "").strip()
    except (KeyError, ValueError):
        return None


def _layout(lines: list[tuple[int, str, int]]) -> tuple[int | None, int]:
    """(wrap width or None if not hard-wrapped, usual paragraph indentation width), from
    the (indent, body, width) of each line."""
    widths = Counter(width for _, body, width in lines if body and width >= 40)
    indents = Counter(indent for indent, body, _ in lines if body and indent)
    nonblank = sum(1 for _, body, _ in lines if body)
    normal_indent = indents.most_common(1)[0][0] if indents else 0
    if not widths:
        return None, normal_indent
    mode = widths.most_common(1)[0][0]
    near = sum(n for w, n in widths.items() if abs(w - mode) <= 4)
    return (mode if near >= 0.3 * nonblank else None), normal_indent


def _collapse_spaces(text: str) -> str:
    return _SPACE_RUN.sub(lambda m: "\u3000" if "\u3000" in m[0] else " ", text).strip()


def _join(left: str, right: str) -> str:
    # Chinese joins without a space; only two Latin words broken by the wrap need one.
    if left[-1:].isascii() and left[-1:].isalnum() and right[:1].isascii() and right[:1].isalnum():
        return f"{left} {right}"
    return left + right


def _verse_lines(block: list[str]) -> list[str]:
    """Indented verse: rejoin lines wrapped mid-verse, then one line per verse line."""
    joined: list[str] = []
    for line in block:
        if joined and not joined[-1].endswith(_CLOSING) and not line.startswith("——"):
            joined[-1] += line
        else:
            joined.append(line)
    out = []
    for text in joined:
        out.extend(part for part in re.split(r"\u3000{2,}|\s{2,}", text) if part.strip())
    return [_collapse_spaces(v) for v in out]


def _prose_lines(block: list[tuple[int, str, int]], wrap: int | None) -> list[str]:
    """Rejoin one run of consecutive prose lines, given as (indent, body, width).

    A line continues the one before when the file is hard-wrapped and the line before
    was full: within a few columns of the run's typical width (the median, without the
    last line), since quoted documents are wrapped narrower than the rest. Where the run
    mixes indented and flush lines, an indented line always starts a new paragraph and a
    flush line continues an unfinished sentence.
    """
    widths = sorted(width for _, _, width in block[:-1]) or [0]
    full = widths[len(widths) // 2] - 6
    uniform = len({indent for indent, _, _ in block}) == 1
    out: list[str] = []
    prev_width = 0
    for indent, body, width in block:
        if uniform:
            joins = prev_width >= full
        else:  # a flush line after an unfinished sentence was wrapped early, by hand
            joins = indent == 0 and (prev_width >= full or not out[-1].endswith(_CLOSING))
        if out and wrap and joins:
            out[-1] = _join(out[-1], _collapse_spaces(body))
        else:
            out.append(_collapse_spaces(body))
        prev_width = width
    return out


def paragraphs(text: str) -> list[str]:
    """Lines -> one line per heading, paragraph or verse line; noise lines dropped."""
    stripped = (line.rstrip() for line in text.split("\n"))
    lines = [(*_indent(line), _width(line)) for line in stripped if not is_noise(line)]
    wrap, normal_indent = _layout(lines)
    out: list[str] = []
    run: list[tuple[int, str, int]] = []  # consecutive prose lines
    verse: list[str] = []  # consecutive verse lines

    def flush() -> None:
        if run:
            out.extend(_prose_lines(run, wrap))
            run.clear()
        if verse:
            out.extend(_verse_lines(verse))
            verse.clear()

    for indent, body, width in lines:
        if not body:
            flush()
        elif heading_of(body):
            flush()
            out.append(_collapse_spaces(body))
        elif indent > normal_indent:  # verse is indented deeper than paragraphs
            if run:
                flush()
            # keep the inner U+3000 runs: they separate verse lines
            verse.append(_SPACE_RUN.sub(lambda m: m[0] if "\u3000" in m[0] else " ", body))
        else:
            if verse:
                flush()
            run.append((indent, body, width))
    flush()
    return out


def split_novel(text: str, untitled_number: int | None = None) -> Novel:
    """Clean text -> chapters in order; a repeated chapter number is kept once.

    Text with no chapter heading at all (one chapter per file) becomes chapter
    `untitled_number` when that is given, titled by its first line if that is short.
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = paragraphs(text)
    if untitled_number is not None and lines and not any(heading_of(x) for x in lines):
        first = lines[0] if len(lines) > 1 and len(lines[0]) <= _MAX_HEADING_CHARS else ""
        body = "\n".join(lines)
        return Novel([Chapter(untitled_number, first, first, body, count_pua(body))])
    chapters: list[Chapter] = []
    dropped: list[tuple[str, str]] = []
    seen: dict[int, Chapter] = {}
    current: list[str] | None = None
    front: list[str] = []

    def close(body: list[str]) -> None:
        number, title = heading_of(body[0])
        chapter = Chapter(number, body[0], title, "\n".join(body), count_pua("\n".join(body)))
        if number in seen:
            same = "identical" if seen[number].text == chapter.text else "different"
            dropped.append((body[0], f"chapter {number} appears again ({same} text); kept once"))
            return
        seen[number] = chapter
        chapters.append(chapter)

    for line in lines:
        if heading_of(line):
            if current:
                close(current)
            current = [line]
        elif current is None:
            front.append(line)
        else:
            current.append(line)
    if current:
        close(current)
    if front:
        dropped.append(("text before the first chapter", f"{sum(map(len, front))} chars dropped"))
    return Novel(chapters, dropped)


@functools.cache
def _opencc(config: str):
    import opencc  # only for the optional conversion

    return opencc.OpenCC(config)


def to_simplified(text: str) -> str:
    """Traditional -> Simplified Chinese with OpenCC (phrase-aware, not char by char)."""
    return _opencc("t2s").convert(text)

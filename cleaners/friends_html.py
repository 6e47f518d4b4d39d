"""Friends transcript pages (the fangj/friends layout) -> one clean script per episode.

The pages were written by many fan transcribers over ten years, by hand and with FrontPage,
so the same script line comes in many markups: `<b>Monica:</b> text`, `<b>Monica</b>: text`,
`<strong>`, bold tags misnested across `<p>`, upper-case names with no tags at all, and
utterances separated only by `<br>`. This module reads the page as a flat stream of text
blocks (never as a tree, so misnesting cannot move text) and rebuilds each line by what the
text says, not by its markup.

Output format of `Episode.text`, one item per line:

    <episode title>
    [Scene: <where and who>]
    <Speaker>: <utterance, stage directions in parentheses kept>
    (<stage direction on its own>)
    <other lines: notes, song lyrics, "Commercial Break", "End">

Writer, transcriber and similar credits are taken out of the text into `Episode.credits`.
What the cleaning took out (credits, markup, scripts, references decoded, ...) is counted
by rule in `Episode.removed`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field

from cleaners.encoding import decode_bytes
from cleaners.removed import Removed, RuleCount

# Tags that end a line of text. `<br>` is "soft": a lone one inside a paragraph is often
# a hard wrap, so a soft-broken line may continue the utterance before it.
_BLOCK_TAGS = frozenset(
    {"p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ul", "ol", "dl", "dt"}
    | {"dd", "tr", "td", "th", "table", "blockquote", "pre", "center", "body", "html", "head"}
    | {"title", "address", "form"}
)
# A tag (quoted attributes may hold ">"), a comment, a doctype; the rest is text.
_MARKUP = re.compile(
    r"<!--.*?(?:-->|$)|<[!?][^>]*>"
    r"|</?(?P<tag>[a-zA-Z][\w:-]*)(?:\s(?:[^>\"']|\"[^\"]*\"|'[^']*')*)?/?>",
    re.DOTALL,
)
_BOLD = frozenset({"b", "strong"})
_SENTENCE_END = tuple(".!?)]\"'…’”-")
# A bold speaker label: "Joey:" inside the bold, or the colon right after it.
_BOLD_SPEAKER = re.compile(r"\s*[A-Z][\w.'’ ]{0,40}?\s*(?:</(?:b|strong)>\s*)?:", re.IGNORECASE)
_HIDDEN = re.compile(r"<(script|style|noscript|title)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_LINK = re.compile(
    r"<a\s[^>]*?\bhref\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))[^>]*>(?P<label>.*?)</a\s*>",
    re.DOTALL | re.IGNORECASE,
)
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.DOTALL | re.IGNORECASE)
_REFERENCE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?")

_SPACE = re.compile(r"\s+")  # \s includes NBSP, U+3000 and other Unicode spaces
# Soft hyphen, zero-width characters, and control characters that are not whitespace
# (whitespace ones, \x1c-\x1f included, become a space): a stray byte or a reference such
# as &#1; carries no text.
_INVISIBLE = dict.fromkeys(
    [*map(ord, "\u00ad\u200b\ufeff"), *range(0x00, 0x09), *range(0x0E, 0x1C), 0x7F]
    + [*range(0x80, 0x85), *range(0x86, 0xA0)]
)
# "&amp;ndash;", "&amp;amp;#146;": a page escaped twice (or more) by its editor; the text
# meant the entity, so the extra "&amp;"s go before unescaping.
_ESCAPED_AGAIN = re.compile(
    r"&amp;(?:amp;)*(?=(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});)",
    re.IGNORECASE,
)

_SCENE = re.compile(r"^[\[(]\s*scene\b\s*[:;,]?\s*(?P<body>.*?)\s*[\])]?$", re.IGNORECASE)
_SPEAKER = re.compile(
    r"^(?P<name>[^\W\d_][\w.'’&,/#\- ]{0,48}?)\s*"
    r"(?P<aside>[\[(][^\[\]()]{1,120}[\])])?\s*:[\s:]*(?P<text>.*)$"
)
# Where a credit's role can end: "Written by", "With Help From", "Teleplay", "Aired".
_CREDIT_END = re.compile(r"\b(?:by|from)\b|\b(?:teleplay|story|aired)\b(?!\s+by\b)", re.I)
_CREDIT_ROLE = re.compile(r"[\w'’&.,/ -]{1,80}")  # words only: no colon, no sentence
_CREDIT_WORDS = re.compile(
    r"writ|transcri|trascri|teleplay|story|direct|produc|html|adjust|addition|check|help|"
    r"correct|compil|host|aired|edit|proofread|spell|format|typed|script",
    re.IGNORECASE,
)
# At the head of a script only: a role noun and a colon ("Teleplay:", "Transcriber:"),
# and dedications ("Dedicated to the great work of ...").
_HEAD_ROLE = re.compile(
    r"^(?P<role>(?:[\w'’&]+\s+){0,3}(?:writers?|transcri\w*|directors?|producers?|teleplay|"
    r"story|script|credits?|editors?|proofread\w*|html\w*|thanks))\s*:\s*(?P<who>.+)$",
    re.IGNORECASE,
)
# Right after another credit at the head: "<several words>: <names>", such as "Russian to
# Roman alphabet: Gabriela Horber" (a speaker's name is one or two capitalised words).
_NEXT_CREDIT = re.compile(
    r"^(?P<role>(?=[^:]*\b[a-z]{3,}\b)[\w'’&.,/ -]{3,60}?)\s*:\s*"
    r"(?P<who>[A-Z][\w.'’-]*(?:(?:\s+|\s*(?:,|&|\band\b)\s*)[A-Z][\w.'’-]*)*\.?)$"
)
_DEDICATION = re.compile(
    r"^(?P<role>dedicated\s+to|in\s+(?:loving\s+)?memory\s+of|"
    r"(?:special\s+|many\s+)?thanks\s+(?:go(?:es)?\s+)?to)\b\s*:?\s*(?P<who>.+)$",
    re.IGNORECASE,
)
# Labels shaped like a speaker that are not one.
_NOT_SPEAKERS = re.compile(r"(^|\s)(note|notes|aired)$|\bby$", re.IGNORECASE)
_EPISODE_NUMBER = re.compile(r"^\d{3,4}(?:\s*-\s*\d{3,4})?(?:\s*[-–:]\s*|\s+)")
# A few transcribers (season 2) use four-letter codes for the six friends.
_ABBREVIATIONS = {"RACH": "Rachel", "MNCA": "Monica", "CHAN": "Chandler", "PHOE": "Phoebe"}
# "...Fun Bobby (FBOB) enters": an episode defining its own speaker code, after a name.
_CODE = re.compile(r"\s\(([A-Z]{3,5})\)")
_CODE_NAME = re.compile(
    r"(?:(?:Mr|Mrs|Ms|Dr)\.?\s+)?(?:[A-Z][\w'’-]*\s+)?[A-Z][\w'’-]*?(?=(?:'s|’s)?$)"
)
_INDEX_LABEL = re.compile(r"^(?P<number>\d{3,4}(?:-\d{3,4})?)\s*(?P<title>.*)$")
_SMALL_WORDS = frozenset(
    {"and", "or", "of", "the", "in", "on", "at", "to", "with", "a", "an", "for"}
)


@dataclass
class Episode:
    title: str | None
    lines: list[str]
    credits: list[tuple[str, str]] = field(default_factory=list)  # (role, who)
    aired: str | None = None
    removed: Removed = field(default_factory=Removed)  # rule -> what it took out

    @property
    def text(self) -> str:
        head = [self.title] if self.title else []
        return "\n".join(head + self.lines)


@dataclass
class _Block:
    text: str
    soft: bool  # separated from the previous block by one <br> only


def _second_speaker(page: str, pos: int, before: list[str]) -> bool:
    """Whether the bold text at pos names a speaker after a finished sentence:
    "Maybe. <b>Joey:</b> Wait." is two utterances in one paragraph, while
    "<b>Chandler and </b><b>Joey:</b>" is one name in two tags."""
    if not _BOLD_SPEAKER.match(page, pos):
        return False
    return unescape("".join(before)).rstrip().endswith(_SENTENCE_END)


def _read_blocks(page: str, removed: Removed | None = None) -> tuple[list[_Block], str]:
    """Flatten a page into text blocks, and its <title>, without building a tree; what
    is not text (scripts, markup, references, invisible characters) counted in `removed`."""
    removed = Removed() if removed is None else removed
    title = _TITLE.search(page)
    for hidden in _HIDDEN.finditer(page):
        removed.add("script, style or page title", hidden[0])
    page = _HIDDEN.sub(" ", page)
    blocks: list[_Block] = []
    buf: list[str] = []
    gap: list[str] = []  # block tags seen since the last non-empty block
    tags = tag_chars = 0  # counted here, added to `removed` once
    tag_names: list[str] = []

    def flush() -> None:
        raw = "".join(buf)
        text = unescape(raw)
        if "&" in raw:
            _count_references(raw, text, removed)
        visible = text.translate(_INVISIBLE)
        if len(visible) < len(text):
            first = next(c for c in text if ord(c) in _INVISIBLE)
            chars = len(text) - len(visible)
            shown = f"U+{ord(first):04X}"
            removed.add("invisible or control character", shown, lines=0, chars=chars)
        text = _collapse_space(visible)
        buf.clear()
        if text:
            blocks.append(_Block(text, gap == ["br"]))
            gap.clear()

    pos = 0
    for m in _MARKUP.finditer(page):
        start = m.start()
        buf.append(page[pos:start])
        pos = m.end()
        tag = (m["tag"] or "").lower()
        if page.startswith("<!--", start):
            removed.add("HTML comment", m[0])
        else:
            tags, tag_chars = tags + 1, tag_chars + pos - start
            if len(tag_names) < 3 and tag and f"<{tag}>" not in tag_names:
                tag_names.append(f"<{tag}>")
        opens_speaker = tag in _BOLD and m[0][1] != "/" and _second_speaker(page, pos, buf)
        if tag in _BLOCK_TAGS or opens_speaker:
            flush()
            gap.append(tag)
    buf.append(page[pos:])
    flush()
    if tags:
        rule = removed.setdefault("markup tag", RuleCount())
        rule.chars += tag_chars  # within lines: no line is dropped
        rule.examples.extend(tag_names[: 3 - len(rule.examples)])
    return blocks, normalise_space(unescape(title[1])) if title else ""


def _count_references(raw: str, text: str, removed: Removed) -> None:
    """Character references decoded in one block (`raw` -> `text`), and those escaped
    twice or more ("&amp;ndash;") told apart: the extra "amp;"s are what was fixed."""
    for m in _ESCAPED_AGAIN.finditer(raw):
        shown = raw[m.start() : raw.index(";", m.end()) + 1]  # the lookahead saw the ";"
        rule = "reference escaped twice or more (fixed)"
        removed.add(rule, shown, lines=0, chars=len(m[0]) - 1)
    once = _ESCAPED_AGAIN.sub("&", raw)
    found = _REFERENCE.findall(once)
    if found:
        rule = removed.setdefault("character reference decoded", RuleCount())
        rule.chars += len(once) - len(text)
        for ref in found:
            if len(rule.examples) >= 3:
                break
            shown = f"{ref} -> {html.unescape(ref)}"
            if shown not in rule.examples:
                rule.examples.append(shown)


def unescape(text: str) -> str:
    """Character references -> characters, whether escaped once or more than once."""
    if "&" not in text:
        return text
    return html.unescape(_ESCAPED_AGAIN.sub("&", text))


def normalise_space(text: str) -> str:
    """NBSP, tabs, newlines (CRLF too) and runs of spaces -> one space; invisible chars gone."""
    return _collapse_space(text.translate(_INVISIBLE))


def _collapse_space(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def speaker_name(name: str, codes: dict[str, str] | None = None) -> str:
    """'MONICA' -> 'Monica', 'MRS. GELLER' -> 'Mrs. Geller', 'MNCA' -> 'Monica'.

    Names already in mixed case are kept as written.
    """
    name = normalise_space(name)
    words = re.findall(r"[^\W\d_]+", name)
    if not all(w.isupper() or w in _SMALL_WORDS for w in words):
        return name[0].upper() + name[1:]
    codes = {**_ABBREVIATIONS, **(codes or {})}
    words = re.split(r"([\s/,&-]+|\.(?=\w))", name)
    out = []
    for i, word in enumerate(words):
        if word in codes:
            out.append(codes[word])
        elif i and word.lower() in _SMALL_WORDS:
            out.append(word.lower())
        else:
            out.append(word[:1].upper() + word[1:].lower())
    return "".join(out)


def _as_speaker_line(text: str, codes: dict[str, str]) -> str | None:
    """'Joey (looks at the box): text' -> 'Joey: (looks at the box) text'; None if no speaker."""
    m = _SPEAKER.match(text)
    if not m:
        return None
    name = m["name"].strip()
    if len(name.split()) > 8 or _NOT_SPEAKERS.search(name):
        return None
    aside = m["aside"]
    if aside:  # asides in square brackets become stage directions, like the rest
        aside = "(" + aside[1:-1].strip() + ")"
    said = " ".join(part for part in (aside, m["text"].strip()) if part)
    return f"{speaker_name(name, codes)}: {said}".rstrip()


def _as_credit(text: str, head: bool = False, after: bool = False) -> tuple[str, str] | None:
    """(role, who) if `text` credits someone: "Written by: A & B", "With Scenes Taken From
    Episodes Transcribed by: C" (the role is the shortest one that names a credit). At
    the `head` of a script, before its first line, any "<words> by: who", "<role noun>:
    who" and dedications count too, whatever their wording, and `after` another credit
    there, "<words>: <names>"."""
    if text[:1] in "[({":
        return None
    for m in _CREDIT_END.finditer(text, 0, 120):
        role = text[: m.end()]
        if not _CREDIT_ROLE.fullmatch(role) or len(role.split()) > 9:
            break
        rest = text[m.end() :]
        colon = rest.lstrip().startswith(":")
        if _CREDIT_WORDS.search(role) or (head and colon and m[0].lower() == "by"):
            return normalise_space(role), rest.strip().removeprefix(":").strip()
    if head:
        m = _HEAD_ROLE.match(text) or _DEDICATION.match(text)
        if m is None and after:
            m = _NEXT_CREDIT.match(text)
            m = m if m and len(m["role"].split()) >= 2 else None
        if m:
            return normalise_space(m["role"]), m["who"].strip()
    return None


def _scene_line(text: str) -> str | None:
    m = _SCENE.match(text)
    if not m or not text.rstrip().endswith(("]", ")")):
        return None
    return f"[Scene: {m['body']}]"


def _marker_line(text: str) -> str:
    """'COMMERCIAL BREAK' -> 'Commercial Break'; anything else unchanged."""
    if len(text.split()) <= 4 and text.isupper():
        return speaker_name(text)
    return text


def _episode_codes(blocks: list[_Block]) -> dict[str, str]:
    """Codes an episode defines for itself: "Fun Bobby (FBOB) enters" -> FBOB: Fun Bobby."""
    codes = {}
    for block in blocks:
        for m in _CODE.finditer(block.text):
            name = _CODE_NAME.search(block.text[max(0, m.start() - 40) : m.start()])
            if name:
                codes[m[1]] = name[0]
    return codes


def parse_episode(page: str) -> Episode:
    """Parse one episode page (already decoded to str) into title, script lines and credits."""
    removed = Removed()
    blocks, page_title = _read_blocks(page, removed)
    codes = _episode_codes(blocks)

    title: str | None = None
    aired: str | None = None
    credits: list[tuple[str, str]] = []
    lines: list[str] = []
    in_header = True  # before the first scene, stage direction or utterance
    last_was_utterance = False
    after_credit = False  # the block before was a credit
    taken: set[int] = set()  # blocks already used as the name in a credit
    for i, block in enumerate(blocks):
        if i in taken:
            continue
        # The story behind each line: angle-bracketed asides (from &lt; &gt;) are directions.
        text = re.sub(r"<\s*([^<>]*?)\s*>", r"(\1)", block.text)
        credit = _as_credit(text, in_header, after_credit)
        after_credit = credit is not None
        if credit:
            role, who = credit
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            shown, used = block.text, 1  # the text taken out, in how many blocks
            if not who and nxt is not None and nxt.soft and not _as_credit(nxt.text, in_header):
                who = nxt.text  # "Final check by<br>Kim"
                taken.add(i + 1)
                shown, used = f"{shown} {who}", 2
            if role.lower().startswith("aired"):
                aired = who
                removed.add("air date line (kept as metadata)", shown, lines=used)
            else:
                credits.append((role, who))
                removed.add("credit line (kept as metadata)", shown, lines=used)
            last_was_utterance = False
            continue
        if in_header:
            if text.lower() == "friends":
                removed.add("show name line", text)
                continue
            if title is None and _scene_line(text) is None and text[:1] not in "[({":
                title = _EPISODE_NUMBER.sub("", text).strip() or text
                if len(title) < len(text):
                    number = text[: len(text) - len(title)]
                    removed.add("episode number before the title", number.strip(), lines=0)
                continue
        scene = _scene_line(text)
        speaker = None if scene else _as_speaker_line(text, codes)
        if scene:
            lines.append(scene)
            last_was_utterance = False
        elif speaker:
            lines.append(speaker)
            last_was_utterance = True
        elif last_was_utterance and block.soft and not text.startswith("["):
            lines[-1] = f"{lines[-1]} {text}"  # a hard-wrapped utterance
        else:
            lines.append(_marker_line(text))
            last_was_utterance = False
        if scene or speaker or text[:1] in "[(":
            in_header = False

    if title is None:
        title = _EPISODE_NUMBER.sub("", page_title).strip() or None
    return Episode(title=title, lines=lines, credits=credits, aired=aired, removed=removed)


def clean_episode(data: bytes) -> Episode:
    """An episode page's bytes -> Episode. The bytes are decoded as UTF-8 where they are
    UTF-8 and as windows-1252 elsewhere, whatever the page declares (see cleaners.encoding);
    numeric references such as &#146; are read as windows-1252 too, as browsers do."""
    return parse_episode(decode_bytes(data))


@dataclass
class IndexEntry:
    href: str
    number: str | None  # "101", "212-213"
    title: str  # the index's name for the episode


def index_entries(data: bytes) -> list[IndexEntry]:
    """The episode links of the transcripts' index.html, in its order (the episode order)."""
    entries = []
    for m in _LINK.finditer(decode_bytes(data)):
        href = unescape(next(g for g in m.group(1, 2, 3) if g is not None)).strip()
        label = normalise_space(unescape(_MARKUP.sub("", m["label"])))
        numbered = _INDEX_LABEL.match(label)
        number, title = numbered.group("number", "title") if numbered else (None, label)
        entries.append(IndexEntry(href, number, title))
    return entries

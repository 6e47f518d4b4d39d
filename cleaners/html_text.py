"""Render an HTML element as plain text with the paragraph structure a reader sees.

- whitespace collapses as in a browser; <br> is a line break, two or more <br> (or any
  block element: <p>, <div>, <blockquote>, <center>, <hr>, headings) a paragraph break;
- <pre> keeps its text verbatim (indentation and line breaks), and so does <xmp> once
  `escape_raw_text` has turned it into <pre> (html.parser does not know xmp is raw text);
- list items become lines starting "- " or "1. "; table rows become lines with cells
  separated by a tab;
- scripts, styles, forms, images and comments contribute nothing.

Works on the tree html.parser builds from sloppy HTML: unclosed <li>, <td> and <font> nest
instead of closing, so the structure is read from element starts, in document order, with
an explicit stack (deep nesting cannot overflow recursion).
"""

from __future__ import annotations

import html
import re
import unicodedata

from bs4 import NavigableString, Tag
from bs4.element import PreformattedString

from cleaners.removed import Removed

BLOCK_TAGS = frozenset(
    "address article aside blockquote center dd div dl dt figcaption figure footer h1 h2 h3"  # noqa: SIM905
    " h4 h5 h6 header hr main nav ol p section table ul".split()
)
SKIP_TAGS = frozenset(
    "script style noscript head title iframe object embed map area form input select"  # noqa: SIM905
    " button textarea svg template img".split()
)
VERBATIM_TAGS = frozenset({"pre", "listing", "plaintext"})
WHITESPACE = re.compile(r"[ \t\r\n\f\u00a0]+")
# Soft hyphen, zero width space, BOM, and the control characters other than the
# whitespace ones (those collapse to spaces, or stay in <pre>): a stray control byte or a
# reference such as &#1; carries no text, and U+001E is the corpus's document separator.
INVISIBLE = dict.fromkeys(
    [*map(ord, "\u00ad\u200b\ufeff"), *range(0x00, 0x09), 0x0B, *range(0x0E, 0x20)]
    + [*range(0x7F, 0xA0)]
)
XMP = re.compile(r"<xmp\b[^>]*>(.*?)</xmp\s*>", re.IGNORECASE | re.DOTALL)


def escape_raw_text(markup: str) -> str:
    """<xmp> holds raw text (a '<' in code is a character, not a tag): make it a <pre>."""
    return XMP.sub(lambda m: "<pre>" + html.escape(m.group(1), quote=False) + "</pre>", markup)


class TextBuilder:
    """Accumulates text and pending line breaks; breaks merge, never pile up past one
    blank line, and never lead or trail."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.newlines = 0  # pending line breaks before the next text
        self.space = False  # pending inter-word space
        self.invisible = 0  # INVISIBLE characters dropped
        self.first_invisible = ""

    def visible(self, s: str) -> str:
        """s without INVISIBLE characters, counted."""
        t = s.translate(INVISIBLE)
        if len(t) < len(s):
            self.invisible += len(s) - len(t)
            self.first_invisible = self.first_invisible or next(c for c in s if ord(c) in INVISIBLE)
        return t

    def _at_line_start(self) -> bool:
        return not self.parts or self.parts[-1].endswith("\n")

    def _flush(self) -> None:
        if self.parts and self.newlines:
            if not self._at_line_start():
                self.parts[-1] = self.parts[-1].rstrip(" ")
            self.parts.append("\n" * self.newlines)
            self.space = False
        self.newlines = 0

    def text(self, s: str) -> None:
        s = WHITESPACE.sub(" ", self.visible(s))
        if not s.strip():
            self.space = self.space or bool(s)
            return
        lead = s[0] == " "
        self._flush()
        if (self.space or lead) and self.parts and not self.parts[-1].endswith((" ", "\t", "\n")):
            self.parts.append(" ")
        stripped = s.strip(" ")
        self.parts.append(stripped)
        self.space = s[-1] == " "

    def raw(self, s: str) -> None:
        """Text exactly as given (a cell separator, a list marker, preformatted lines)."""
        self._flush()
        self.parts.append(s)
        self.space = False

    def line(self) -> None:
        self.newlines = max(self.newlines, 1)

    def br(self) -> None:
        self.newlines = min(self.newlines + 1, 2)

    def block(self) -> None:
        self.newlines = 2

    def result(self) -> str:
        lines = "".join(self.parts).split("\n")
        text = "\n".join(line.rstrip(" ") for line in lines).strip("\n")
        # References (e&#769;) can spell a character decomposed: the text is NFC anyway.
        return text if text.isascii() else unicodedata.normalize("NFC", text)


def _verbatim(tag: Tag, out: TextBuilder) -> str:
    text = out.visible(tag.get_text()).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\f", "\n")  # a page break in a listing
    text = text.removeprefix("\n")  # HTML drops one newline right after <pre>
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


def html_to_text(root: Tag, removed: Removed | None = None) -> str:
    """Plain text of `root` (see the module doc); the invisible characters it dropped are
    counted in `removed` when given."""
    out = TextBuilder()
    lists: list[list] = []  # [tag name, items so far] of enclosing ul/ol
    rows: list[int] = []  # cells so far in each enclosing tr
    stack: list = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):  # ("end", tag): leaving an element
            _end(node[1], out, lists, rows)
            continue
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctype, CDATA
                out.text(str(node))
            continue
        if not isinstance(node, Tag) or node.name in SKIP_TAGS:
            continue
        name = node.name
        if name in VERBATIM_TAGS:
            out.block()
            out.raw(_verbatim(node, out))
            out.block()
            continue
        if name == "br":
            out.br()
            continue
        _start(node, out, lists, rows)
        stack.append(("end", node))
        stack.extend(reversed(node.contents))
    if out.invisible and removed is not None:
        shown = f"U+{ord(out.first_invisible):04X}"
        removed.add("invisible or control character", shown, lines=0, chars=out.invisible)
    return out.result()


def _start(tag: Tag, out: TextBuilder, lists: list, rows: list) -> None:
    name = tag.name
    if name in ("ul", "ol"):
        lists.append([name, 0])
    if name == "tr":
        rows.append(0)
        out.line()
    elif name in ("td", "th") and rows:
        rows[-1] += 1
        if rows[-1] > 1:
            out.raw("\t")
    elif name == "li":
        out.line()
        kind = lists[-1] if lists else ["ul", 0]
        kind[1] += 1
        out.raw(f"{kind[1]}. " if kind[0] == "ol" else "- ")
    elif name == "sup":
        out.raw("^")
    elif name in BLOCK_TAGS:
        out.block()


def _end(tag: Tag, out: TextBuilder, lists: list, rows: list) -> None:
    name = tag.name
    if name in ("ul", "ol") and lists:
        lists.pop()
    if name == "tr" and rows:
        rows.pop()
        out.line()
    elif name == "li":
        out.line()
    if name in BLOCK_TAGS:
        out.block()

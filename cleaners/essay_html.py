"""Paul Graham's essay pages (paulgraham.com) -> title, date and body text.

Every page uses one template: a navigation image map, the title as an image (with alt
text) in a content cell, and the essay in the first <font face="verdana"> directly inside
that cell; below it come tables of translation and related links, then the store's
scripts after </html>. Older essays open with a coloured banner box ("Want to start a
startup? Get funded by Y Combinator.") inside the essay font; it is site furniture.
What is left out is counted by rule in `Essay.removed`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, Tag

from cleaners.encoding import decode_bytes
from cleaners.html_text import INVISIBLE, WHITESPACE, escape_raw_text, html_to_text
from cleaners.removed import Removed

MONTHS = (  # noqa: SIM905
    "January February March April May June July August September October November December"
).split()
# "February 2009", "April 2001, rev. April 2003", "Summer 2005" never occurs; some give a year.
DATE_LINE = re.compile(rf"^(?:(?:{'|'.join(MONTHS)})\s+)?(?:19|20)\d\d\b")
DATE_SEARCH_LINES = 8  # the date is the first line, after at most a short note
# Last paragraphs that head or point to the link tables below the essay, not essay text.
FURNITURE = re.compile(r"(?:Related:|More Info:|Comment on this essay\.|\w+ Translation)")


@dataclass
class Essay:
    title: str | None
    date: str | None
    text: str
    removed: Removed = field(default_factory=Removed)  # rule -> what it left out


def _soup(data: bytes | str) -> BeautifulSoup:
    markup = decode_bytes(data) if isinstance(data, bytes) else data
    return BeautifulSoup(escape_raw_text(markup), "html.parser")


def _is_banner(table: Tag) -> bool:
    """The coloured promo boxes: a cell with a background colour and a spacer image."""
    spacer = table.find("img", src=lambda s: bool(s) and "spacer.gif" in s)
    return spacer is not None and table.find("td", bgcolor=True) is not None


def essay_body(soup: BeautifulSoup) -> Tag:
    """The element holding the essay: the first verdana <font> directly inside a cell."""
    for font in soup.find_all("font", face="verdana"):
        if font.parent is not None and font.parent.name == "td":
            return font
    return soup.body or soup


def essay_date(text: str) -> str | None:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    for line in lines[:DATE_SEARCH_LINES]:
        match = DATE_LINE.match(line)
        if match and len(line) < 80:
            return match.group(0)
    return None


def parse_essay(data: bytes | str) -> Essay:
    soup = _soup(data)
    body = essay_body(soup)
    removed = Removed()
    for table in body.find_all("table"):
        if _is_banner(table):
            _count_lines(removed, "promo banner in the essay", html_to_text(table))
            table.decompose()
    paragraphs = html_to_text(body, removed).split("\n\n")
    while paragraphs and FURNITURE.fullmatch(paragraphs[-1].strip()):
        _count_lines(removed, "link-table heading after the essay", paragraphs.pop())
    text = "\n\n".join(paragraphs)
    title = _one_line(soup.title.get_text()) if soup.title else ""
    if not title and body.parent is not None:
        image = body.parent.find("img", alt=True)  # the title image in the same cell
        title = _one_line(image["alt"]) if image else ""
    if body is not soup:  # what the page shows around the essay: navigation, link tables
        body.extract()
        _count_lines(removed, "navigation and links outside the essay", html_to_text(soup))
    return Essay(title=title or None, date=essay_date(text), text=text, removed=removed)


def _count_lines(removed: Removed, rule: str, text: str) -> None:
    for line in text.split("\n"):
        if line.strip():
            removed.add(rule, line.strip())


def _one_line(text: str) -> str:
    text = WHITESPACE.sub(" ", str(text).translate(INVISIBLE)).strip()
    return unicodedata.normalize("NFC", text)


def index_links(data: bytes | str) -> list[str]:
    """hrefs of the essay index (articles.html) in the order of its list.

    The list has one link per table cell; links in cells with several (the "if you're not
    sure which to read" sentence) come after, so duplicates keep the list's position.
    """
    anchors = _soup(data).find_all("a", href=True)

    def in_list(a: Tag) -> bool:
        cell = a.find_parent("td")
        return cell is not None and len(cell.find_all("a", href=True)) == 1

    ordered = [a for a in anchors if in_list(a)] + [a for a in anchors if not in_list(a)]
    return [a["href"].strip() for a in ordered]

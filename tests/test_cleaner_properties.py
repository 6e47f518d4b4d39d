"""Properties every cleaner keeps, for any input: arbitrary bytes and text, and the real
fixtures damaged at random (cut short, a wrong byte, an extra tag, CRLF line ends).

- it returns documents or recorded skips with a reason, never raises;
- a document's text is NFC and holds no control character but the newline (the tab too
  where it is structure: Go code, and the cell separator of html_text's tables), so the
  corpus separator "\\n\\x1e\\n" never occurs inside a document;
- the same input gives the same output.

Each cleaner is run the way the pipeline runs it, through its corpus's clean() on a raw
item on disk, and its pure functions directly. Bounded: the default profile runs all
of this in well under a minute; CHARFLOW_HYPOTHESIS=thorough runs many more examples.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleaners.chinese import EncodingError, decode_chinese, paragraphs, split_novel
from cleaners.encoding import decode_bytes
from cleaners.essay_html import parse_essay
from cleaners.friends_html import parse_episode
from cleaners.html_text import html_to_text
from cleaners.shuttleset import ShuttleSetError, parse_matches, parse_set, rally_text
from scrapers import chinese_novel, friends, kubernetes_go, paulgraham
from scrapers.registry import CleaningStats, Document, RawItem, Skipped
from scrapers.store import SEPARATOR
from tests.mirror_fixtures import CORPORA

settings.register_profile(
    "cleaners",
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples every run: CI stays reproducible
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", parent=settings.get_profile("cleaners"), max_examples=500, derandomize=False
)
PROFILE = settings.get_profile(os.environ.get("CHARFLOW_HYPOTHESIS", "cleaners"))
MORE = settings(PROFILE, max_examples=PROFILE.max_examples * 4)  # for the cheap ones

CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # \x0a (newline) allowed below
GO_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # tab, LF, CR allowed
TABLE_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab allowed (cells, <pre>)


def assert_clean_text(text: str, control: re.Pattern = CONTROL) -> None:
    assert isinstance(text, str)
    assert unicodedata.is_normalized("NFC", text), ascii(text[:200])
    bad = control.search(text.replace("\n", " ") if control is CONTROL else text)
    assert bad is None, f"control character {bad[0]!r} in {ascii(text[:200])}"
    assert SEPARATOR not in text and "\x1e" not in text


def outputs_of(
    clean, data: bytes, meta: dict | None = None, options: dict | None = None, removed=False
):
    """What a corpus's clean() makes of `data` as a raw item, as comparable tuples (what
    cleaning removed, CleaningStats, checked, and among them when `removed`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "item"
        path.write_bytes(data)
        item = RawItem("test://item", path, dict(meta or {}))
        out = list(clean(item, dict(options or {})))
    assert any(not isinstance(x, CleaningStats) for x in out), "neither a document nor a skip"
    result = []
    for x in out:
        assert isinstance(x, Document | Skipped | CleaningStats), type(x)
        if isinstance(x, CleaningStats):  # what cleaning removed: well-formed counts
            for rule, count in x.rules.items():
                assert rule and count.lines >= 0 and count.chars >= 0, (rule, count)
                assert len(count.examples) <= 3 and all("\n" not in e for e in count.examples)
            if removed:
                result.append(("removed", x.source, repr(dict(x.rules))))
        elif isinstance(x, Skipped):
            assert isinstance(x.reason, str) and x.reason.strip()
            result.append(("skip", x.source, x.reason))
        else:
            result.append(("doc", x.text, x.title, repr(sorted(x.meta.items()))))
    return result


def check_clean(clean, data: bytes, control=CONTROL, **kw) -> None:
    first = outputs_of(clean, data, removed=True, **kw)
    for kind, text, *_ in first:
        if kind == "doc":
            assert_clean_text(text, control)
    assert outputs_of(clean, data, removed=True, **kw) == first  # deterministic


# ---------------------------------------------------------------- inputs


def damage(data: bytes, draw) -> bytes:
    """1-3 kinds of damage a download or an editor does to a file."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "byte", "tag", "crlf", "nul"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "byte":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif kind == "tag":
            tag = draw(st.sampled_from([b"<b>", b"</p>", b"<script>", b"<!--", b"<pre>", b"<"]))
            data = data[:at] + tag + data[at:]
        elif kind == "crlf":
            data = data.replace(b"\n", b"\r\n")
        else:
            data = data[:at] + b"\x00\x1e\x0b" + data[at:]
    return data


def fixture_bytes(paths: list[Path], head: int | None = None):
    """A real fixture (or its first `head` bytes) with random damage."""
    blobs = [p.read_bytes()[:head] for p in paths if p.is_file()]

    @st.composite
    def damaged(draw) -> bytes:
        return damage(draw(st.sampled_from(blobs)), draw)

    return damaged()


def sample(folder: Path, pattern: str, n: int) -> list[Path]:
    paths = sorted(folder.glob(pattern))
    return paths[:: max(1, len(paths) // n)][:n]


ESSAYS = sample(CORPORA / "paulgraham", "*.html", 8)
EPISODES = sample(CORPORA / "friends" / "season", "*.html", 8)
NOVELS = [CORPORA / "sanguo" / "三国演义.txt", CORPORA / "xiyouji" / "西游记.txt"]
GOCODE = Path("/usr/share/gocode/src/k8s.io/utils")  # where .ci/run installs it
GO_FILES = sample(GOCODE, "**/*.go", 6) if GOCODE.is_dir() else []

HTML_BITS = st.sampled_from(
    ["<p>", "</p>", "<b>", "</b>", "<br>", "<pre>", "</pre>", "<xmp>", "<table><tr><td>", "<td>"]
    + ["<li>", "<!--", "-->", "<title>", "&amp;", "&amp;ndash;", "&#146;", "&#0;", "&#x1e;"]
    + ["e&#769;", "<b>Ross:</b>", "RACHEL:", "[Scene: X]", "Written by: A", "(laughs)", "\r\n"]
    + ['<font face="verdana">', "<td bgcolor=red>", "</td>", "\x1e", "\x00", "\u0301", "é"]
)
HTML_TEXT = st.lists(st.one_of(HTML_BITS, st.text(max_size=12)), max_size=40).map("".join)
NOVEL_BITS = st.sampled_from(
    ["第一回　宴桃园豪杰三结义　斩黄巾英雄首立功", "第001回", "第一百二十回", "第1章 风起", "卷一"]
    + ["　　话说天下大势，分久必合，合久必分。", "他走进", "城里。", "------", "- 12 -", "\f"]
    + ["本书来自www.example.com", "更多精彩请访问 http://x.cn", "目录", "序", "附录", "后记"]
    + ["吴承恩--西游记--第二回　悟彻菩提", "楔子", "　　　　春眠不觉晓", "\x1e", "\t", "\u3000"]
    + ["灵根育孕源流出　心性修持大道生", "第二回", "e\u0301", "\ue000", "\r", "\x00"]
)
NOVEL_TEXT = st.lists(st.one_of(NOVEL_BITS, st.text(max_size=10)), max_size=40).map("\n".join)


# ---------------------------------------------------------------- chinese


@PROFILE
@given(st.one_of(st.binary(max_size=400), NOVEL_TEXT.map(lambda t: t.encode("utf-8"))))
def test_chinese_any_bytes(data):
    check_clean(chinese_novel.clean, data)


@PROFILE
@given(fixture_bytes(NOVELS, head=30_000), st.booleans(), st.booleans())
def test_chinese_damaged_novels(data, keep_extras, simplified):
    options = {"keep_extras": keep_extras, "to_simplified": simplified, "title": ""}
    check_clean(chinese_novel.clean, data, options=options)


@MORE
@given(NOVEL_TEXT, st.sampled_from([None, 3]), st.booleans())
def test_chinese_split_novel_any_text(text, untitled, keep_extras):
    novel = split_novel(text, untitled, keep_extras=keep_extras)
    for chapter in novel.chapters:
        assert_clean_text(chapter.text)
        assert chapter.text.strip()
    for section in novel.sections:
        assert section.kept or section.reason
        assert section.first_line <= section.last_line
    assert sum(s.kept for s in novel.sections) == len(novel.chapters)  # each part accounted for
    again = split_novel(text, untitled, keep_extras=keep_extras)
    assert [c.text for c in again.chapters] == [c.text for c in novel.chapters]
    for line in paragraphs(text):
        assert_clean_text(line)


@MORE
@given(st.binary(max_size=300))
def test_chinese_decoding_refuses_or_decodes(data):
    try:
        decoded = decode_chinese(data)
    except EncodingError as err:
        assert str(err)
    else:
        assert isinstance(decoded.text, str) and decoded.encoding


# ---------------------------------------------------------------- friends


FRIENDS_META = {"episode": "0101", "season": 1, "index_title": "The One"}


@PROFILE
@given(st.one_of(st.binary(max_size=400), HTML_TEXT.map(lambda t: t.encode("utf-8"))))
def test_friends_any_bytes(data):
    check_clean(friends.clean, data, meta=FRIENDS_META)


@PROFILE
@given(fixture_bytes(EPISODES))
def test_friends_damaged_episodes(data):
    check_clean(friends.clean, data, meta=FRIENDS_META)


@MORE
@given(HTML_TEXT)
def test_friends_parse_any_text(page):
    episode = parse_episode(page)
    assert_clean_text(episode.text)
    assert parse_episode(page) == episode


# ---------------------------------------------------------------- essays, html_text


@PROFILE
@given(st.one_of(st.binary(max_size=400), HTML_TEXT.map(lambda t: t.encode("utf-8"))))
def test_essay_any_bytes(data):
    check_clean(paulgraham.clean, data, control=TABLE_CONTROL)


@PROFILE
@given(fixture_bytes(ESSAYS))
def test_essay_damaged_pages(data):
    check_clean(paulgraham.clean, data, control=TABLE_CONTROL)


@MORE
@given(HTML_TEXT)
def test_html_text_any_markup(markup):
    soup = BeautifulSoup(markup, "html.parser")
    text = html_to_text(soup)
    assert_clean_text(text, TABLE_CONTROL)
    assert html_to_text(BeautifulSoup(markup, "html.parser")) == text
    essay = parse_essay(markup)
    assert_clean_text(essay.text, TABLE_CONTROL)
    assert essay.title is None or not CONTROL.search(essay.title)


# ---------------------------------------------------------------- encoding


@MORE
@given(st.binary(max_size=400))
def test_decode_bytes_any_bytes(data):
    text = decode_bytes(data)
    assert unicodedata.is_normalized("NFC", text)
    assert not re.search("[\x80-\x9f]", text)
    if not data.startswith((b"\xff\xfe", b"\xfe\xff")):  # else UTF-16 may spell U+FFFD
        assert text.count("\ufffd") == data.count("\ufffd".encode())  # none made up
    assert decode_bytes(data) == text


@MORE
@given(st.text(max_size=200))
def test_decode_bytes_reads_utf8_as_utf8(text):
    c1 = re.compile("[\x80-\x9f\ufeff]")  # C1 controls are taken for double-encoded cp1252
    if not c1.search(text):
        assert decode_bytes(text.encode("utf-8")) == unicodedata.normalize("NFC", text)


# ---------------------------------------------------------------- go


GO_META = {"path": "pkg/demo/demo.go"}
GO_SOURCE = b'package demo\n\n// F says hi.\nfunc F() string {\n\treturn "hi\\t\xc3\xa9"\n}\n'


@PROFILE
@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)))
def test_go_any_bytes(data):
    check_clean(
        kubernetes_go.clean, data, control=GO_CONTROL, meta=GO_META, options=kubernetes_go.OPTIONS
    )


@PROFILE
@given(st.data())
def test_go_damaged_files(data):
    blobs = [GO_SOURCE] + [p.read_bytes() for p in GO_FILES]
    source = damage(data.draw(st.sampled_from(blobs)), data.draw)
    check_clean(
        kubernetes_go.clean, source, control=GO_CONTROL, meta=GO_META, options=kubernetes_go.OPTIONS
    )


def test_fixtures_are_there():
    """The damaged-fixture properties above need their fixtures (../shared/corpora)."""
    assert len(ESSAYS) == 8 and len(EPISODES) == 8 and all(p.is_file() for p in NOVELS)


@pytest.mark.parametrize("separator", [SEPARATOR, "\x1e"])
def test_the_separator_never_survives_a_cleaner(separator):
    """A hand-made case of the property, for the reader: the separator in every input."""
    page = f"<h1>T</h1><p>[Scene: X]</p><p><b>Joey:</b> a{separator}b</p>".encode()
    check_clean(friends.clean, page, meta=FRIENDS_META)
    check_clean(paulgraham.clean, page, control=TABLE_CONTROL)
    novel = f"第一回　甲\n　　话说{separator}天下。\n".encode()
    check_clean(chinese_novel.clean, novel)


def test_go_file_with_a_control_character_is_a_recorded_skip():
    """Go allows them in strings and comments; the corpus does not: left out, not edited."""
    source = GO_SOURCE.replace(b"says hi", b"says\x0chi")
    ((kind, _, reason),) = outputs_of(
        kubernetes_go.clean, source, meta=GO_META, options=kubernetes_go.OPTIONS
    )
    assert (kind, reason) == (
        "skip",
        "control character in the text (U+000C at offset 23); not taken",
    )


# ---------------------------------------------------------------- shuttleset

SET_FILES = sample(CORPORA / "shuttleset" / "set", "*/set1.csv", 4)
MATCH_TABLE = CORPORA / "shuttleset" / "set" / "match.csv"


@PROFILE
@given(st.one_of(st.binary(max_size=300), fixture_bytes(SET_FILES)), st.booleans())
def test_shuttleset_sets_parse_or_are_refused_with_a_reason(data, areas):
    """Its corpus stops on bad data by design; the cleaner's part is to say why
    (ShuttleSetError), never to fail otherwise, and to write clean symbols."""
    try:
        rallies = parse_set(data, "set1.csv", areas=areas)
    except ShuttleSetError as err:
        assert str(err).startswith("set1.csv")
        return
    for rally in rallies:
        assert_clean_text(rally_text(rally, detail="shot+area" if areas else "shot"))


@PROFILE
@given(st.one_of(st.binary(max_size=300), fixture_bytes([MATCH_TABLE])))
def test_shuttleset_match_table_parses_or_is_refused_with_a_reason(data):
    try:
        matches = parse_matches(data, "match.csv")
    except ShuttleSetError as err:
        assert str(err).startswith("match.csv")
        return
    assert isinstance(matches, list)

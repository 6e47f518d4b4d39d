"""novel: any 章回体 novel, whatever the site or typist did to it.

First the real second novel (西游记: GB18030, a site notice at both ends, a title page,
a table of contents with an appendix entry, each heading printed twice, once behind a
running header), then one synthetic book rendered in each variant a download site,
a typist or a scanner produces: the chapters that come out must be the same.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import opencc
import pytest

from cleaners.chinese import decode_chinese, is_noise, parse_heading, split_novel
from scrapers.chinese_novel import title_from_source
from scrapers.fetch import Fetcher
from scrapers.ingest import ingest
from scrapers.registry import get_corpus
from scrapers.store import CORPUS_FILE, DOCUMENTS_FILE
from tests.mirror_fixtures import CORPORA, start_mirror

XIYOUJI = CORPORA / "xiyouji" / "西游记.txt"
HAN = r"\u3400-\u4dbf\u4e00-\u9fff"


def run(name: str, source: str, data: Path, **options) -> tuple[dict, list[dict], list[str]]:
    with Fetcher(rate_limit=None) as fetcher:
        result = ingest(
            name, source, data_dir=data, options=options, fetcher=fetcher, progress=False
        )
    corpus = (result.path / CORPUS_FILE).read_text(encoding="utf-8")
    docs = [json.loads(x) for x in (result.path / DOCUMENTS_FILE).read_text("utf-8").splitlines()]
    return result.manifest, docs, [corpus[d["char_start"] : d["char_end"]] for d in docs]


@pytest.fixture(scope="module")
def xiyouji(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("data")
    with start_mirror(CORPORA) as mirror:
        manifest, docs, texts = run("novel", mirror.url(get_corpus("novel").mirror_path), data)
    return {"manifest": manifest, "docs": docs, "texts": texts}


def test_xiyouji_has_its_100_chapters_in_order(xiyouji):
    docs = xiyouji["docs"]
    assert [d["chapter"] for d in docs] == list(range(1, 101))
    assert {d["section"] for d in docs} == {"chapter"}
    assert docs[0]["title"] == "第一回　灵根育孕源流出　心性修持大道生"
    assert docs[8]["title"] == "第九回　袁守诚妙算无私曲　老龙王拙计犯天条"
    assert docs[99]["title"] == "第一百回　径回东土　五圣成真"
    assert docs[0]["chapter_title"] == "灵根育孕源流出　心性修持大道生"
    for doc in docs:  # from the title page, not from per-book code
        assert (doc["book"], doc["author"], doc["encoding"]) == ("西游记", "吴承恩", "gb18030")
    assert sum(d["pua_chars"] for d in docs) == 3  # of 5 in the file; 2 in the contents


def test_xiyouji_documents_hold_no_heading_or_boilerplate(xiyouji):
    for doc, text in zip(xiyouji["docs"], xiyouji["texts"], strict=True):
        first, *lines = text.split("\n")
        assert first == doc["title"]
        for line in lines:
            assert parse_heading(line) is None and not is_noise(line), line
            assert line == line.strip(" \u3000\t") and line
        for gone in ("吴承恩--", "rain8", "oldbook", "转载", "www.", "-----", "附录"):
            assert gone not in text, gone
        assert not re.search(f"[{HAN}] +[{HAN}]", text)
    assert xiyouji["texts"][-1].endswith("《西游记》至此终。")
    # one paragraph per line in the source: every paragraph kept as it was
    assert xiyouji["texts"][0].split("\n")[1:6] == [
        "诗曰：",
        "混沌未分天地乱，茫茫渺渺无人见。",
        "自从盘古破鸿蒙，开辟从兹清浊辨。",
        "覆载群生仰至仁，发明万物皆成善。",
        "欲知造化会元功，须看西游释厄传。",
    ]


def test_xiyouji_dropped_parts_are_recorded(xiyouji):
    reasons = [s["reason"] for s in xiyouji["manifest"]["skipped"]]
    assert reasons[0].startswith("download-site notice before the first chapter: 7 lines")
    assert reasons[1].startswith("title page and untitled text before the first heading")
    assert reasons[2] == "table of contents: 101 entries dropped"
    assert reasons[3].startswith("appendix: ")
    assert "附录　陈光蕊赴任逢灾　江流僧复仇报本" in xiyouji["manifest"]["skipped"][3]["source"]
    assert reasons[4].startswith("download-site notice after the last chapter: 7 lines")
    assert len(reasons) == 5


def test_the_sanguo_preset_reads_any_novel_too(tmp_path):
    """The reported failure: `charflow ingest sanguo --source …/西游记.txt`."""
    _, docs, _ = run("sanguo", str(XIYOUJI), tmp_path)
    assert len(docs) == 100 and docs[0]["book"] == "西游记"


def test_title_option_and_extras_kept(tmp_path):
    _, docs, texts = run("novel", str(XIYOUJI), tmp_path, title="Journey", keep_extras="true")
    assert {d["book"] for d in docs} == {"Journey"}
    sections = [d["section"] for d in docs]
    assert sections.count("chapter") == 100
    assert sections[0] == "front matter" and texts[0].startswith("西游记(吴承恩)")
    appendix = sections.index("appendix")
    assert sections[appendix - 1 : appendix + 2] == ["chapter", "appendix", "chapter"]
    assert docs[appendix - 1]["chapter"] == 8 and docs[appendix + 1]["chapter"] == 9
    assert texts[appendix].startswith("附录　陈光蕊赴任逢灾　江流僧复仇报本\n话表陕西大国长安城")


def test_title_from_source():
    assert title_from_source("https://x.org/a/%E8%A5%BF%E6%B8%B8%E8%AE%B0.txt") == "西游记"
    assert title_from_source("file:///home/me/红楼梦") == "红楼梦"


# ---------------------------------------------------------------- synthetic variants

TITLES = [
    ("宴桃园豪杰三结义", "斩黄巾英雄首立功"),
    ("张翼德怒鞭督邮", "何国舅谋诛宦竖"),
    ("议温明董卓叱丁原", "馈金珠李肃说吕布"),
]
PARAGRAPHS = [
    [
        "话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。及秦灭之后，楚、汉分争，"
        "又并入于汉。汉朝自高祖斩白蛇而起义，一统天下，后来光武中兴，传至献帝，遂分为三国。",
        "建宁二年四月望日，帝御温德殿。方升座，殿角狂风骤起。只见一条大青蛇，从梁上飞将下来，"
        "蟠于椅上。帝惊倒，左右急救入宫，百官俱奔避。",
        "时巨鹿郡有兄弟三人，一名张角，一名张宝，一名张梁。",
    ],
    [
        "且说董卓字仲颖，陇西临洮人也，官拜河东太守，自来骄傲。当日怠慢了玄德，张飞性发，"
        "便欲杀之。玄德与关公急止之曰：“他是朝廷命官，岂可擅杀？”",
        "飞曰：“若不杀这厮，反要在他部下听令，其实不甘！二兄要便住在此，我自投别处去也！”",
        "玄德曰：“我三人义同生死，岂可相离？不若都投别处去便了。”飞曰：“若如此，稍解吾恨。”",
    ],
    [
        "且说曹操当日对何进曰：“宦官之祸，古今皆有；但世主不当假之权宠，使至于此。"
        "若欲治罪，当除元恶，但付一狱吏足矣，何必纷纷召外兵乎？”",
        "何进怒曰：“孟德亦怀私意耶？”操退曰：“乱天下者，必进也。”",
        "进乃暗差使命，赍密诏星夜往各镇去。",
    ],
]
NUMERALS = "零一二三四五六七八九"


def cn(n: int) -> str:
    """1 -> 一, 10 -> 十, 35 -> 三十五, 120 -> 一百二十, 105 -> 一百零五."""
    hundreds, tens, ones = n // 100, n // 10 % 10, n % 10
    out = f"{NUMERALS[hundreds]}百" if hundreds else ""
    if tens:
        out += ("" if tens == 1 and not hundreds else NUMERALS[tens]) + "十"
    elif hundreds and ones:
        out += "零"
    return out + (NUMERALS[ones] if ones else "")


def wrap(text: str, width: int = 20, first: str = "    ") -> list[str]:
    """Hard-wrap at `width` characters (40 columns), the first line after `first`."""
    lines, head = [], width - len(first) // 2
    lines.append(first + text[:head])
    rest = text[head:]
    while rest:
        lines.append(rest[:width])
        rest = rest[width:]
    return lines


@dataclass
class Book:
    """How one synthetic book is laid out; render() writes the file's text."""

    numbers: list[int] = field(default_factory=lambda: [1, 2, 3])
    heading: object = lambda n, a, b: [f"第{cn(n)}回　{a}　{b}"]
    paragraph: object = lambda p: ["　　" + p]
    between: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    after_second: list[str] = field(default_factory=list)
    split_with: list[str] | None = None  # lines cutting the first paragraph mid-sentence
    titled: bool = True
    newline: str = "\n"
    page_lines: int = 0  # printed pages: a page number and a running header every N lines
    page_marker: str = "- {n} -"
    page_header: str | None = "某书　罗贯中"

    def render(self) -> str:
        out = list(self.head)
        for k, (n, (a, b), paras) in enumerate(zip(self.numbers, TITLES, PARAGRAPHS, strict=True)):
            if k:
                out += self.between
            out += self.heading(n, a, b)
            for j, p in enumerate(paras):
                if self.split_with is not None and j == 0:
                    cut = p.index("七国") if "七国" in p else len(p) // 2  # mid-sentence
                    left, right = self.paragraph(p[:cut]), self.paragraph(p[cut:])
                    out += left + self.split_with + [x.lstrip(" \u3000") for x in right]
                else:
                    out += self.paragraph(p)
            if k == 1:
                out += self.after_second
        if self.page_lines:
            pages = [out[i : i + self.page_lines] for i in range(0, len(out), self.page_lines)]
            out = [
                x
                for n, page in enumerate(pages, 1)
                for x in [*page, "", self.page_marker.format(n=n), "", self.page_header or ""]
            ]
        return self.newline.join(out + self.tail) + self.newline


def pdf_lines(paragraph: str) -> list[str]:
    """As a PDF converter writes a page: lines of 34 characters, each ending in a space,
    and a space put before a line that opens with a quotation mark."""
    lines = wrap(paragraph, 34)
    return [(" " + x if k and x[0] in "“‘" else x) + " " for k, x in enumerate(lines)]


def expected(book: Book) -> list[tuple[int, str, list[str]]]:
    titles = [f"{a}\u3000{b}" if book.titled else "" for a, b in TITLES]
    return list(zip(book.numbers, titles, PARAGRAPHS, strict=True))


def chapters_of(novel) -> list[tuple[int, str, list[str]]]:
    return [(c.number, c.title, c.text.split("\n")[1:]) for c in novel.chapters]


NOTICE_HEAD = [
    "本书来自www.txt-books.com 免费TXT小说下载站",
    "更多精彩好书，请访问 http://www.example.cn",
    "--------------------",
]
NOTICE_TAIL = [
    "--------------------",
    "更多TXT电子书下载,请访问某某书屋:http://www.example.net",
    "版权声明：本站所有电子书均由网友提供，",
    "仅供读者学习交流，不得用作商业用途。",
]
HEADINGS = {
    "第一回 plain": dict(),
    "第001回 zero-padded": dict(heading=lambda n, a, b: [f"第{n:03d}回　{a}　{b}"]),
    "第一百二十回": dict(numbers=[118, 119, 120]),
    "第1章 digits": dict(heading=lambda n, a, b: [f"第{n}章 {a}　{b}"]),
    "卷一 volumes only": dict(heading=lambda n, a, b: [f"卷{cn(n)}　{a}　{b}"]),
    "bare, couplet on the next line": dict(heading=lambda n, a, b: [f"第{cn(n)}回", f"{a}　{b}"]),
    "no title": dict(heading=lambda n, a, b: [f"第{cn(n)}回"], titled=False),
    "centred with U+3000": dict(heading=lambda n, a, b: ["\u3000" * 10 + f"第{cn(n)}回　{a}　{b}"]),
    "repeated on the next line": dict(
        heading=lambda n, a, b: [f"第{cn(n)}回　{a}　{b}", f"第{cn(n)}回　{a}　{b}"]
    ),
    "repeated after a running header": dict(
        heading=lambda n, a, b: [
            f"\t\t罗贯中--某书--第{cn(n)}回　{a}　{b}",
            "",
            f"第{cn(n)}回　{a}　{b}",
        ]
    ),
    "in brackets, colon": dict(heading=lambda n, a, b: [f"【第{cn(n)}回】：{a}　{b}"]),
    "ASCII spaces, 正文 before it": dict(heading=lambda n, a, b: [f"正文 第{cn(n)}回  {a}  {b}"]),
}


@pytest.mark.parametrize("variant", HEADINGS)
def test_heading_forms(variant):
    book = Book(**HEADINGS[variant])
    assert chapters_of(split_novel(book.render())) == expected(book)


LAYOUTS = {
    "one paragraph per line, indented": dict(),
    "one per line, blank lines, flush": dict(paragraph=lambda p: [p, ""]),
    "hard-wrapped, indented (CRLF)": dict(paragraph=wrap, newline="\r\n"),
    "hard-wrapped, flush, blank lines": dict(paragraph=lambda p: [*wrap(p, first=""), ""]),
    "hard-wrapped with stray spaces": dict(
        paragraph=lambda p: [f"{x[:3]} {x[3:]}  " for x in wrap(p, first="\u3000\u3000")]
    ),
    "separators between chapters": dict(
        between=["", "------------------", "＊＊＊＊＊", "", "====="]
    ),
    "page numbers between chapters": dict(between=["- 12 -", "", "第13页", "* * *", "————"]),
    "site and author notes at chapter ends": dict(
        between=["（本章完）", "", "（PS：新书上传，求收藏求推荐！）", "未完待续"]
    ),
    "a rule cuts a sentence (one per line)": dict(split_with=["", "------------", ""]),
    "a page number cuts a sentence (wrapped)": dict(paragraph=wrap, split_with=["", "- 7 -", ""]),
    "an ad line cuts a sentence": dict(split_with=["本章节由小说网www.xs.cc首发"]),
    "printed pages: numbers, running header (wrapped)": dict(paragraph=wrap, page_lines=5),
    "printed pages: numbers, running header (one per line)": dict(page_lines=3),
    "PDF conversion: page markers, trailing spaces, a space before “": dict(
        paragraph=pdf_lines,
        page_lines=4,
        page_marker="----------------------- Page {n}-----------------------",
        page_header=None,
        heading=lambda n, a, b: [" " * 15 + f"第{cn(n)}回  {a} {b} ", ""],
    ),
}


@pytest.mark.parametrize("variant", LAYOUTS)
def test_layouts(variant):
    book = Book(**LAYOUTS[variant])
    novel = split_novel(book.render())
    assert chapters_of(novel) == expected(book)
    for chapter in novel.chapters:
        assert not re.search(f"[{HAN}] +[{HAN}]", chapter.text)


CONTENTS = ["目录", *(f"第{cn(n)}回　{a}　{b}……{n * 7}" for n, (a, b) in enumerate(TITLES, 1))]
EXTRAS = {
    "site notices at both ends": (
        dict(head=NOTICE_HEAD, tail=NOTICE_TAIL),
        ["site notice", "site notice"],
    ),
    "title and author on one line, a notice under it": (
        dict(head=["《某书》作者；某人", *NOTICE_HEAD]),
        ["front matter", "site notice"],
    ),
    "title page and table of contents": (
        dict(head=["《某书》", "作者：某人", "", *CONTENTS, ""]),
        ["front matter", "contents"],
    ),
    "contents without 目录, zero-padded, entries then text": (
        dict(
            head=[
                *(f"第{n:03d}回　{a}　{b}" for n, (a, b) in enumerate(TITLES, 1)),
                "此书所记，皆汉末之事。",
            ]
        ),
        ["contents", "front matter"],  # the text after the list is not chapter 3's
    ),
    "preface, appendix, afterword": (
        dict(
            head=["序", "此书为某人所作，流传甚广。今重为校订，以飨读者。", ""],
            after_second=["附　录　某人传", "某人，字某，某地人也。少好读书，及长，游于四方。"],
            tail=["后记", "校毕此书，略记数语。"],
        ),
        ["preface", "appendix", "afterword"],
    ),
    "everything at once": (
        dict(
            head=[*NOTICE_HEAD, "《某书》", "作者：某人", *CONTENTS, "前言", "前言的话。"],
            between=["------", "输入：某某", "转载请保留"],
            tail=["后记", "校毕此书，略记数语。", *NOTICE_TAIL],
        ),
        ["site notice", "front matter", "contents", "preface", "afterword", "site notice"],
    ),
}


@pytest.mark.parametrize("variant", EXTRAS)
def test_site_notices_contents_prefaces_and_appendices(variant):
    options, dropped = EXTRAS[variant]
    book = Book(**options)
    novel = split_novel(book.render())
    assert chapters_of(novel) == expected(book)
    assert [s.kind for s in novel.sections if not s.kept] == dropped
    assert all(s.reason for s in novel.sections if not s.kept)
    assert [s.kind for s in novel.sections if s.kept] == ["chapter"] * 3
    if any(x.startswith("《某书》") for x in options.get("head", [])):
        assert (novel.title, novel.author) == ("某书", "某人")
    # kept as documents on request, in their place
    extras = split_novel(book.render(), keep_extras=True)
    kinds = [c.kind for c in extras.chapters]
    assert kinds.count("chapter") == 3
    for kind in {"preface", "appendix", "afterword", "front matter"} & set(dropped):
        assert kind in kinds


def test_repeated_chapter_and_volumes_restarting_the_numbers():
    book = Book(heading=lambda n, a, b: [f"第{cn(n)}章　{a}"])
    text = book.render()
    novel = split_novel("第一卷　上\n" + text + "第二卷　下\n" + text)
    assert [(c.number, c.volume) for c in novel.chapters] == [
        (1, "第一卷　上"),
        (2, "第一卷　上"),
        (3, "第一卷　上"),
        (1, "第二卷　下"),
        (2, "第二卷　下"),
        (3, "第二卷　下"),
    ]
    novel = split_novel(text + text.split("第三章")[0])  # chapters 1-2 pasted again
    assert [c.number for c in novel.chapters] == [1, 2, 3]
    assert [s.reason for s in novel.sections if not s.kept] == [
        "chapter 1 appears again (identical text); kept once",
        "chapter 2 appears again (identical text); kept once",
    ]


def test_sections_of_chapters_stay_in_their_chapter():
    """节 under 章: parts of a chapter, not chapters."""
    text = "第一章　甲\n第一节\n　　甲甲。\n第二节\n　　乙乙。\n第二章　乙\n　　丙丙。\n"
    novel = split_novel(text)
    assert [c.text for c in novel.chapters] == [
        "第一章　甲\n第一节\n甲甲。\n第二节\n乙乙。",
        "第二章　乙\n丙丙。",
    ]


def traditional(text: str) -> str:
    converted = opencc.OpenCC("s2tw").convert(text)  # Taiwan forms: the ones Big5 has
    return "".join(c for c in converted if c in "\n " or c.encode("big5", errors="ignore"))


ENCODINGS = {
    "utf-8": ("utf-8", "utf_8"),
    "utf-8 with BOM": ("utf-8-sig", "utf_8"),
    "utf-16 with BOM": ("utf-16", "utf_16"),
    "utf-16-le without BOM": ("utf-16-le", "utf_16"),
    "utf-16-be without BOM": ("utf-16-be", "utf_16"),
    "gbk": ("gbk", "gbk"),
    "gb18030 where gbk fails": ("gb18030", "gb18030"),
    "big5": ("big5", "big5"),
}


@pytest.mark.parametrize("variant", ENCODINGS)
def test_encodings(variant):
    codec, name = ENCODINGS[variant]
    text = Book(head=NOTICE_HEAD).render()
    if codec == "gb18030":
        text = text.replace("张梁", "张䶮")  # U+4DAE: in GB18030, not in GBK
        with pytest.raises(UnicodeEncodeError):
            text.encode("gbk")
    if codec == "big5":
        text = traditional(text)
    decoded = decode_chinese(text.encode(codec))
    assert (decoded.encoding, decoded.text) == (name, text)
    assert [c.number for c in split_novel(decoded.text).chapters] == [1, 2, 3]


def test_traditional_big5_file_to_simplified(tmp_path):
    path = tmp_path / "某書.txt"
    path.write_bytes(traditional(Book(head=["《某書》"]).render()).encode("big5"))
    _, docs, texts = run("novel", str(path), tmp_path / "t")
    assert docs[0]["title"] == "第一回　宴桃園豪傑三結義　斬黃巾英雄首立功"
    assert docs[0]["encoding"] == "big5" and docs[0]["book"] == "某書"
    _, docs, texts = run("novel", str(path), tmp_path / "s", to_simplified="true")
    assert docs[0]["title"] == "第一回　宴桃园豪杰三结义　斩黄巾英雄首立功"
    assert docs[0]["book"] == "某书"
    assert texts[0].split("\n")[1] == PARAGRAPHS[0][0]
    assert all(unicodedata.is_normalized("NFC", t) for t in texts)


def test_not_chinese_text_is_a_recorded_skip(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Café crème, à la française, très bien.\n".encode("latin-1") * 50)
    with pytest.raises(Exception, match="not cleanly decodable"):
        run("novel", str(path), tmp_path / "d")
    assert not (tmp_path / "d" / "novel").exists()

"""sanguo and any Chinese novel: the GBK fixture over loopback HTTP and as a local file,
re-encodings detected, wrapping undone, ads dropped, a repeated chapter kept once."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import opencc
import pytest

from cleaners.chinese import (
    EncodingError,
    chinese_number,
    decode_chinese,
    paragraphs,
    split_novel,
)
from scrapers import registry
from scrapers.chinese_novel import chinese_novel_spec
from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.ingest import ingest
from scrapers.registry import get_corpus, register
from scrapers.store import CORPUS_FILE, DOCUMENTS_FILE
from tests.mirror_fixtures import CORPORA, start_mirror

NOVEL = CORPORA / "sanguo" / "三国演义.txt"
HEADING = re.compile(r"^第[一二三四五六七八九十百]+回　.*$", re.MULTILINE)


def run(name: str, source: str, data: Path, **options) -> tuple[dict, list[dict], str]:
    with Fetcher(rate_limit=None) as fetcher:
        result = ingest(
            name, source, data_dir=data, options=options, fetcher=fetcher, progress=False
        )
    corpus = (result.path / CORPUS_FILE).read_text(encoding="utf-8")
    docs = [json.loads(x) for x in (result.path / DOCUMENTS_FILE).read_text("utf-8").splitlines()]
    return result.manifest, docs, corpus


@pytest.fixture(scope="module")
def sanguo(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("data")
    with start_mirror(CORPORA) as mirror:
        manifest, docs, corpus = run("sanguo", mirror.url(get_corpus("sanguo").mirror_path), data)
    chapters = [corpus[d["char_start"] : d["char_end"]] for d in docs]
    return {"manifest": manifest, "docs": docs, "corpus": corpus, "chapters": chapters}


def test_120_chapters_each_once_in_order_with_their_titles(sanguo):
    raw = NOVEL.read_bytes().decode("gbk")
    headings = HEADING.findall(raw)
    assert len(headings) == 121  # the fixture repeats 第三十五回
    # runs of U+3000 inside a heading become one (第八十一回 has two)
    unique = list(dict.fromkeys(re.sub("\u3000+", "\u3000", h.strip()) for h in headings))
    docs = sanguo["docs"]
    assert [d["chapter"] for d in docs] == list(range(1, 121))
    assert [d["title"] for d in docs] == unique
    assert docs[0]["title"] == "第一回　宴桃园豪杰三结义　斩黄巾英雄首立功"
    assert docs[0]["chapter_title"] == "宴桃园豪杰三结义　斩黄巾英雄首立功"
    assert docs[34]["title"] == "第三十五回　玄德南漳逢隐沧　单福新野遇英主"
    assert docs[119]["chapter"] == 120 and docs[119]["title"].startswith("第一百二十回　")
    for doc, text in zip(docs, sanguo["chapters"], strict=True):
        assert text.split("\n", 1)[0] == doc["title"]
        assert doc["encoding"] == "gbk" and doc["pua_chars"] == 0


def test_the_repeated_chapter_is_kept_once(sanguo):
    corpus = sanguo["corpus"]
    assert corpus.count("第三十五回　玄德南漳逢隐沧") == 1
    dup, notice = sanguo["manifest"]["skipped"]  # in the order of the file
    assert "第三十五回" in dup["source"]
    assert dup["reason"] == "chapter 35 appears again (identical text); kept once"
    # the distributor's trailer is recorded too, not dropped silently
    assert notice["reason"] == (
        "download-site notice after the last chapter: 1 lines, 22 chars dropped"
    )


def test_paragraphs_are_joined_and_verse_kept_as_lines(sanguo):
    first = sanguo["chapters"][0].split("\n")
    assert first[1:5] == [
        "滚滚长江东逝水，浪花淘尽英雄。是非成败转头空。",
        "青山依旧在，几度夕阳红。",
        "白发渔樵江渚上，惯看秋月春风。一壶浊酒喜相逢。古今多少事，都付笑谈中。",
        "——调寄《临江仙》",
    ]
    # The source wraps "…楚、汉" / "分争，…" across lines; the paragraph is one line.
    assert first[5].startswith("话说天下大势，分久必合，合久必分。")
    assert "及秦灭之后，楚、汉分争，又并入于汉。" in first[5]
    assert first[5].endswith("中涓自此愈横。")
    lines = [x for text in sanguo["chapters"] for x in text.split("\n")[1:]]
    raw_lines = [x for x in NOVEL.read_bytes().decode("gbk").splitlines() if x.strip()]
    assert len(lines) < len(raw_lines) / 4
    ends = sum(x.endswith(("。", "！", "？", "”", "：", "》", "…")) for x in lines)
    assert ends > 0.99 * len(lines)
    assert all(x == x.strip(" \u3000") for x in lines)  # indentation gone


def test_clean_text_no_replacement_chars_no_trailer(sanguo):
    corpus = sanguo["corpus"]
    assert "\ufffd" not in corpus
    assert unicodedata.normalize("NFC", corpus) == corpus
    for gone in ("rain8", "雨枫轩", "www.", "------", "整理校对"):
        assert gone not in corpus
    assert sanguo["chapters"][-1].endswith("鼎足三分已成梦，后人凭吊空牢骚。")


def test_local_file_gives_the_same_corpus(sanguo, tmp_path):
    manifest, _, _ = run("sanguo", str(NOVEL), tmp_path)
    assert manifest["corpus_sha256"] == sanguo["manifest"]["corpus_sha256"]


def traditional_slice() -> str:
    """The first chapters, in Traditional characters that Big5 can hold."""
    simplified = NOVEL.read_bytes().decode("gbk")[:8000]
    text = opencc.OpenCC("s2t").convert(simplified)
    return "".join(c for c in text if c in "\n " or c.encode("big5", errors="ignore"))


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("big5", "big5"), ("utf-16", "utf_16"), ("utf-8", "utf_8"), ("utf-8-sig", "utf_8")],
)
def test_re_encodings_are_detected(encoding, expected):
    text = traditional_slice()
    decoded = decode_chinese(text.encode(encoding))
    assert decoded.encoding == expected
    assert decoded.text == text


def test_gb18030_private_use_area_is_counted():
    text = NOVEL.read_bytes().decode("gbk")[:3000] + "\ue000\ue5e5"
    decoded = decode_chinese(text.encode("gb18030"))
    assert (decoded.encoding, decoded.pua_chars, decoded.text) == ("gb18030", 2, text)


def test_unclean_bytes_are_refused():
    gbk = NOVEL.read_bytes()[:6000]
    with pytest.raises(EncodingError, match="not cleanly decodable"):
        decode_chinese(gbk[:3001] + b"\xff\xfe\xff" + gbk[3001:])
    with pytest.raises(EncodingError, match="byte-order mark"):
        decode_chinese(b"\xff\xfe" + b"\x00\xd8")  # a lone UTF-16 surrogate


def test_big5_file_to_simplified_over_http(tmp_path, mirror_factory):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "trad.txt").write_bytes(traditional_slice().encode("big5"))
    mirror = mirror_factory(tmp_path / "web")
    _, docs, corpus = run("sanguo", mirror.url("trad.txt"), tmp_path / "t")
    assert docs[0]["encoding"] == "big5"
    assert docs[0]["title"] == "第一回　宴桃園豪傑三結義　斬黃巾英雄首立功"
    _, docs, simplified = run(
        "sanguo", mirror.url("trad.txt"), tmp_path / "s", to_simplified="true"
    )
    assert docs[0]["title"] == "第一回　宴桃园豪杰三结义　斩黄巾英雄首立功"
    assert docs[0]["chapter_title"] == "宴桃园豪杰三结义　斩黄巾英雄首立功"
    assert "話說天下大勢" in corpus and "话说天下大势" in simplified


def test_any_novel_under_another_name(tmp_path, mirror_factory, monkeypatch):
    """A second novel reuses the gatherer: chapter files over HTTP, 第N章 headings, UTF-8
    without hard wrapping, U+3000 indentation, an ad line, one file listed twice."""
    web = tmp_path / "web"
    web.mkdir()
    chapters = {
        "1.txt": "第一章　风起\n　　他走进城里。\n　　天色已晚，\n"
        "本书由小说网整理 www.example.com\n",
        "2.txt": "第二章　雨落\n　　雨下了一夜。\n\n\n　　　　春眠不觉晓，处处闻啼鸟。\n",
        "3.txt": "　　没有标题的一章。\n　　第二段。\n",
    }
    for name, text in chapters.items():
        (web / name).write_text(text, encoding="utf-8")
    monkeypatch.setitem(registry._REGISTRY, "testnovel", None)  # removed again afterwards
    register(chinese_novel_spec("testnovel", "a test novel", "unused"))
    mirror = mirror_factory(web)
    urls = [mirror.url(n) for n in ("1.txt", "2.txt", "1.txt", "3.txt", "4.txt")]
    manifest, docs, corpus = run("testnovel", ", ".join(urls), tmp_path / "d")
    assert [d["chapter"] for d in docs] == [1, 2, 4]  # the untitled file: its place in the list
    texts = [corpus[d["char_start"] : d["char_end"]] for d in docs]
    assert texts[0] == "第一章　风起\n他走进城里。\n天色已晚，"
    assert texts[1] == "第二章　雨落\n雨下了一夜。\n春眠不觉晓，处处闻啼鸟。"
    assert texts[2] == "没有标题的一章。\n第二段。"
    reasons = {s["source"].rsplit("/", 1)[-1]: s["reason"] for s in manifest["skipped"]}
    assert reasons["1.txt"] == "same bytes as " + urls[0] + "; kept once"
    assert reasons["4.txt"] == "HTTP 404 Not Found"


def test_bad_sources(tmp_path):
    with pytest.raises(IngestError, match="no such file"):
        run("sanguo", str(tmp_path / "missing.txt"), tmp_path / "d")
    junk = tmp_path / "junk.txt"
    junk.write_bytes(NOVEL.read_bytes()[:4000] + b"\xff\xff")
    with pytest.raises(IngestError, match="not cleanly decodable"):
        run("sanguo", str(junk), tmp_path / "d")
    assert not (tmp_path / "d" / "sanguo").exists()


def test_unwrapped_text_keeps_its_paragraphs():
    text = "第一回　甲\n" + "".join(
        f"　　第{i}段，长短不一{'的话' * (i * 7 % 13)}。\n" for i in range(30)
    )
    lines = paragraphs(text)
    assert len(lines) == 31 and lines[1] == "第0段，长短不一。"
    novel = split_novel("前言\n写在前面的话。\n" + text)
    assert [c.number for c in novel.chapters] == [1]
    assert novel.dropped == [("前言", "preface: 7 chars dropped")]
    novel = split_novel("某书\n" + text)
    assert novel.title == "某书"
    assert novel.dropped == [
        (
            "front matter, lines 1-1",
            "title page and untitled text before the first heading: 2 chars dropped",
        )
    ]


@pytest.mark.parametrize(
    ("numeral", "value"),
    [("一", 1), ("十", 10), ("十一", 11), ("二十", 20), ("三十五", 35), ("九十九", 99)]
    + [("一百", 100), ("一百零五", 105), ("一百十", 110), ("一百二十", 120), ("两百", 200)]
    + [("一二〇", 120), ("12", 12), ("１２", 12), ("一千零一", 1001)],
)
def test_chinese_numbers(numeral, value):
    assert chinese_number(numeral) == value


def test_cli_to_simplified_flag(tmp_path):
    """`charflow ingest sanguo --to-simplified` converts; a corpus without the option refuses."""
    import subprocess
    import sys

    trad = tmp_path / "trad.txt"
    trad.write_bytes(traditional_slice().encode("big5"))
    cli = [sys.executable, "-m", "flows.cli", "ingest"]
    done = subprocess.run(
        [*cli, "sanguo", "--source", str(trad), "--data-dir", str(tmp_path), "--to-simplified"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    corpus = (tmp_path / "sanguo" / CORPUS_FILE).read_text(encoding="utf-8")
    assert "话说天下大势" in corpus and "話說" not in corpus
    refused = subprocess.run(
        [
            *cli,
            "paulgraham",
            "--source",
            str(trad),
            "--data-dir",
            str(tmp_path / "pg"),
            "--to-simplified",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "to_simplified" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

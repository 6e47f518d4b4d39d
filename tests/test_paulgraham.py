"""Paul Graham's essays: a real ingest of ../shared/corpora/paulgraham over loopback HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cleaners.essay_html import parse_essay
from scrapers.fetch import Fetcher
from scrapers.ingest import ingest
from scrapers.store import SEPARATOR, STAGING_PREFIX
from tests.mirror_fixtures import CORPORA, start_mirror

REPO = Path(__file__).resolve().parent.parent
PG = CORPORA / "paulgraham"
INDEX = "paulgraham/articles.html"
NOT_ESSAYS = {"index.html", "rss.html", "articles.html"}


def fetcher() -> Fetcher:
    return Fetcher(rate_limit=None, backoff=0.01)


def expected_essays() -> tuple[list[str], list[str]]:
    """(essay files present, essay files missing) in index order, worked out from the raw
    index with a regex rather than the cleaner: local .html links, minus the home page and
    the feed, each at its last occurrence (the "try these" sentence at the top repeats a few
    essays that the list shows further down)."""
    html = (PG / "articles.html").read_text(encoding="latin-1")
    last_seen = {}
    for position, href in enumerate(re.findall(r'<a href="([^"]+)"', html)):
        if "://" not in href and href.endswith(".html") and href not in NOT_ESSAYS:
            last_seen[href] = position
    ordered = sorted(last_seen, key=last_seen.get)
    present = [h for h in ordered if (PG / h).is_file()]
    return present, [h for h in ordered if h not in present]


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """One full ingest, shared by the read-only checks below."""
    data = tmp_path_factory.mktemp("data")
    with start_mirror() as server:
        result = ingest("paulgraham", server.url(INDEX), data_dir=data, fetcher=fetcher())
        rows = [json.loads(line) for line in (result.path / "documents.jsonl").open()]
        text = (result.path / "corpus.txt").read_text(encoding="utf-8")
        yield {"server": server, "result": result, "rows": rows, "text": text, "data": data}


def essay(pg, slug: str) -> str:
    row = next(r for r in pg["rows"] if r["slug"] == slug)
    return pg["text"][row["char_start"] : row["char_end"]]


def result_slugs(result) -> list[str]:
    return [json.loads(line)["slug"] for line in (result.path / "documents.jsonl").open()]


def host_of(server) -> str:
    return server.base_url.split("/")[2]


def test_one_document_per_reachable_essay_in_index_order(pg):
    present, missing = expected_essays()
    # README: 213 essay pages are in the mirror; 15 linked essays were held back.
    assert (len(present), len(missing)) == (213, 15)
    assert [r["source"] for r in pg["rows"]] == [
        pg["server"].url(f"paulgraham/{h}") for h in present
    ]
    assert pg["result"].manifest["documents"] == 213 == pg["result"].manifest["fetched"]
    # the newest essay in the list, field.html, is one of those held back
    assert pg["rows"][0]["slug"] == "goodwriting" and pg["rows"][-1]["slug"] == "prop62"


def test_missing_and_offsite_pages_are_skipped_with_reasons(pg):
    _, missing = expected_essays()
    skipped = pg["result"].manifest["skipped"]
    not_found = {s["source"] for s in skipped if s["reason"].startswith("HTTP 404")}
    assert not_found == {pg["server"].url(f"paulgraham/{h}") for h in missing}
    offsite = [s for s in skipped if s["reason"].startswith("off-site")]
    assert len(offsite) == 2 and all(".txt?" in s["source"] for s in offsite)
    assert len(skipped) == len(missing) + 2


@pytest.mark.parametrize(
    ("slug", "title", "date"),
    [
        ("avg", "Beating the Averages", "April 2001"),
        ("greatwork", "How to Do Great Work", "July 2023"),
        ("identity", "Keep Your Identity Small", "February 2009"),
        ("polls", "Bradley's Ghost", "November 2004"),
        ("distraction", "Disconnecting Distraction", "May 2008"),  # a note comes first
        ("fix", "What Languages Fix", None),  # the page gives no date
    ],
)
def test_titles_and_dates(pg, slug, title, date):
    row = next(r for r in pg["rows"] if r["slug"] == slug)
    assert (row["title"], row["date"]) == (title, date)


def test_paragraphs_blockquotes_and_footnotes(pg):
    avg = essay(pg, "avg")
    assert avg.startswith("April 2001, rev. April 2003\n\n(This article is derived from a talk")
    assert "\n\nIn the summer of 1995, my friend Robert Morris and I started a startup" in avg
    assert "\n\nThe Secret Weapon\n\n" in avg  # a section heading is its own paragraph
    assert "\n\nLisp is worth learning for the profound enlightenment experience" in avg
    assert "research labs. [1]\n\n" in avg  # footnote marker kept
    assert "\n\nNotes\n\n[1] Viaweb at first had two parts" in avg  # and the note itself
    assert "Want to start a startup?" not in pg["text"]  # the promo banner is not the essay


def test_code_keeps_its_indentation(pg):
    spam = essay(pg, "spam")  # from <xmp>, where '<' is a character
    assert (
        "\n\n(let ((g (* 2 (or (gethash word good) 0)))\n"
        "      (b (or (gethash word bad) 0)))\n"
        "   (unless (< (+ g b) 5)\n"
    ) in spam
    better = essay(pg, "better")  # from <pre>
    assert "\n\nSubject*FREE      0.9999\nfree!!            0.9999\n" in better


def test_lists_and_tables_become_lines(pg):
    assert "\n\n1. Case is preserved.\n\n2. Exclamation points" in essay(pg, "better")
    assert "\n\nweekly\tyearly\n1%\t1.7x\n2%\t2.8x\n" in essay(pg, "growth")


def test_cp1252_bytes_and_non_ascii_names(pg):
    assert "privilege makes you blind — that you can't see" in essay(pg, "orth")  # 0x97
    assert "Brigham and Women’s Hospital" in essay(pg, "nft")  # 0x92
    assert "Gödel and Dirac" in essay(pg, "think")  # 0xF6
    assert "intolerably déclassé" in essay(pg, "startupideas")  # 0xE9
    for bad in ("â€", "Ã©", "Ã¶", "\ufffd", "\r"):
        assert bad not in pg["text"]


def test_no_markup_scripts_or_comments_in_corpus(pg):
    text = pg["text"]
    for leftover in (
        "<a ", "<br", "</", "<img", "<font", "<table", "<script", "<!--", "-->",
        "HTTrack", "Mirrored from", "csell", "YStore", "turbify", "lumsb.com",
        "&amp;", "&nbsp;", "&mdash;", "&#", "Japanese Translation", "Comment on this essay",
    ):  # fmt: skip
        assert leftover not in text, leftover
    # the separator occurs exactly between documents
    assert text.count(SEPARATOR) == len(pg["rows"]) - 1


def test_second_run_makes_only_conditional_requests_and_rewrites_nothing(pg):
    corpus_dir = pg["result"].path
    files = sorted(p for p in corpus_dir.rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    server = pg["server"]
    server.clear_log()
    again = ingest("paulgraham", server.url(INDEX), data_dir=pg["data"], fetcher=fetcher())
    assert again.unchanged and again.manifest == pg["result"].manifest
    log = server.requests()
    cached = [r for r in log if r.status != 404]  # robots.txt and held-back pages are 404
    assert len(cached) == 1 + 213  # the index and every essay
    assert all(r.conditional and r.status == 304 for r in cached)
    assert not any(r.status == 200 for r in log)
    assert sorted(p for p in corpus_dir.rglob("*") if p.is_file()) == files
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before


def test_requests_never_leave_the_source_host(pg, mirror_factory, tmp_path):
    assert {r.headers["host"] for r in pg["server"].requests()} == {host_of(pg["server"])}
    # An index linking to another host (another port) and to an essay on its own host:
    other = mirror_factory()
    site = tmp_path / "site"
    site.mkdir()
    (site / "avg.html").symlink_to(PG / "avg.html")
    (site / "articles.html").write_text(
        f'<table><tr><td><a href="{other.url("paulgraham/spam.html")}">Spam</a></td></tr>'
        '<tr><td><a href="avg.html">Beating the Averages</a></td></tr></table>'
    )
    server = mirror_factory(site)
    result = ingest("paulgraham", server.url("articles.html"), data_dir=tmp_path, fetcher=fetcher())
    assert result.manifest["documents"] == 1
    assert result.manifest["skipped"] == [
        {"source": other.url("paulgraham/spam.html"), "reason": f"off-site link ({host_of(other)})"}
    ]
    assert other.requests() == []


def test_500_twice_then_success_is_retried_during_ingest(mirror, tmp_path):
    mirror.fail("paulgraham/do.html", status=500, times=2)  # the second essay present
    result = ingest("paulgraham", mirror.url(INDEX), data_dir=tmp_path, limit=3, fetcher=fetcher())
    assert [r.status for r in mirror.log_for("paulgraham/do.html")] == [500, 500, 200]
    assert result_slugs(result) == ["goodwriting", "do", "writes"]
    assert all("do.html" not in s["source"] for s in result.manifest["skipped"])


def test_local_path_source_reads_the_tree_directly(tmp_path):
    result = ingest("paulgraham", str(PG / "articles.html"), data_dir=tmp_path, limit=2)
    rows = [json.loads(line) for line in (result.path / "documents.jsonl").open()]
    assert [r["source"] for r in rows] == [
        (PG.resolve() / f"{s}.html").as_uri() for s in ("goodwriting", "do")
    ]
    assert not (result.path / "raw").exists()  # nothing was downloaded


def test_cli_ingest_shows_progress_lines(mirror, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "ingest", "paulgraham", "--source", mirror.url(INDEX),
         "--data-dir", str(tmp_path), "--rate-limit", "0", "--limit", "10"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "essay index: 228 essays" in out.stderr
    assert re.search(r"ingest paulgraham: 5/10 documents \(\d+ items, 5 documents\)", out.stderr)
    assert "10 documents" in out.stdout and str(tmp_path / "paulgraham") in out.stdout


def test_sigkill_mid_ingest_leaves_previous_corpus_intact(mirror, tmp_path):
    data = tmp_path / "data"
    ingest("paulgraham", mirror.url(INDEX), data_dir=data, limit=3, fetcher=fetcher())
    corpus_dir = data / "paulgraham"
    corpus_files = [corpus_dir / n for n in ("corpus.txt", "documents.jsonl", "manifest.json")]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in corpus_files}

    mirror.delay = 0.1  # a slow site, so the kill lands in the middle
    mirror.clear_log()
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "ingest", "paulgraham", "--source", mirror.url(INDEX),
         "--data-dir", str(data), "--rate-limit", "0", "--no-progress"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(mirror.requests()) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert len(mirror.requests()) >= 15
    assert list(data.glob(f"{STAGING_PREFIX}paulgraham-*")), "the kill should land mid-write"
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in corpus_files} == before

    # The next run cleans up, and the pages the killed run downloaded are cached.
    mirror.delay = 0
    mirror.clear_log()
    result = ingest("paulgraham", mirror.url(INDEX), data_dir=data, limit=8, fetcher=fetcher())
    assert result.manifest["documents"] == 8
    assert not list(data.glob(f"{STAGING_PREFIX}*"))
    eighth = mirror.log_for("paulgraham/" + result_slugs(result)[7] + ".html")
    assert eighth and eighth[0].conditional


def test_title_falls_back_to_the_title_image():
    page = (
        b'<html><body><table><tr><td><img src="t.gif" alt="An Essay Without a Title Tag">'
        b'<br><br><font size="2" face="verdana">1993<br><br>Body text.</font>'
        b"</td></tr></table></body></html>"
    )
    essay = parse_essay(page)
    assert (essay.title, essay.date) == ("An Essay Without a Title Tag", "1993")
    assert essay.text == "1993\n\nBody text."


def test_html_to_text_on_sloppy_markup():
    from bs4 import BeautifulSoup

    from cleaners.html_text import escape_raw_text, html_to_text

    page = escape_raw_text(
        "<div>Intro <!-- hidden --> text<script>var x = '<b>no</b>';</script>"
        "<style>p {}</style><br>line two<br><br><br><br>para"
        "<ol><li>one<li>two</ol><ul><li>dot</ul>"
        "<table><tr><td>a<td>b<tr><td>c<td>d</table>"
        "<xmp>\n  if (a < b) <i>raw</i>\n    x\n</xmp>"
        "e<sup>i*pi</sup> &amp; caf&eacute;&nbsp;ok</div>"
    )
    assert html_to_text(BeautifulSoup(page, "html.parser")) == (
        "Intro text\nline two\n\npara\n\n1. one\n2. two\n\n- dot\n\na\tb\nc\td\n\n"
        "  if (a < b) <i>raw</i>\n    x\n\ne^i*pi & café ok"
    )

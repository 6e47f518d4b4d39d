"""Near-duplicate documents (MinHash LSH): real essays and chapters, lightly edited copies
of them found, unrelated texts never grouped, groups anchored on the first document; in
the ingest of any corpus, reported in the manifest or dropped with dedup=near."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import pytest

from cleaners.chinese import decode_chinese, split_novel
from cleaners.essay_html import parse_essay
from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.ingest import (
    ShingleArrayFinder,
    ingest,
    near_duplicate_settings,
    resolve_options,
)
from scrapers.near_duplicates import NearDuplicateFinder, near_duplicate_groups, shingles
from scrapers.registry import get_corpus
from tests.mirror_fixtures import CORPORA


@pytest.fixture(scope="module")
def essays() -> dict[str, str]:
    pages = sorted((CORPORA / "paulgraham").glob("*.html"))
    texts = {p.stem: parse_essay(p.read_bytes()).text for p in pages}
    return {k: v for k, v in texts.items() if len(v) > 3000}


def edit_words(text: str, share: float, seed: int) -> str:
    """Replace about `share` of the words with another word (typos, a reworded copy)."""
    rng = random.Random(seed)
    words = text.split(" ")
    for i in rng.sample(range(len(words)), int(len(words) * share)):
        words[i] = rng.choice(["the", "very", "quite", "zzz", "thing"])
    return " ".join(words)


def copies(text: str) -> dict[str, str]:
    paragraphs = text.split("\n\n")
    return {
        "reworded 2%": edit_words(text, 0.02, seed=1),
        "a paragraph dropped": "\n\n".join(paragraphs[:3] + paragraphs[4:]),
        "rewrapped, upper case": re.sub(r"\s+", "\n", text).upper(),
        "cut at 90%": text[: int(len(text) * 0.9)],
        "same text": text,
    }


def test_edited_copies_of_real_essays_are_found(essays):
    names = sorted(essays)[:40]
    originals = [(name, essays[name]) for name in names]
    edited = [
        (f"{name} ({how})", copy)
        for name in names[:5]
        for how, copy in copies(essays[name]).items()
    ]
    groups = near_duplicate_groups(originals + edited, threshold=0.8)
    assert [g.keep for g in groups] == names[:5]  # only the edited ones, each once
    for group in groups:
        found = [doc_id for doc_id, _ in group.duplicates]
        assert found == [f"{group.keep} ({how})" for how in copies("a\n\nb")], found
        similarities = dict(group.duplicates)
        assert similarities[f"{group.keep} (same text)"] == 1.0
        assert all(0.8 <= s <= 1.0 for s in similarities.values())


def test_the_threshold_decides(essays):
    name = sorted(essays)[0]
    docs = [(name, essays[name]), ("reworded 8%", edit_words(essays[name], 0.08, seed=2))]
    assert near_duplicate_groups(docs, threshold=0.5)[0].duplicates[0][0] == "reworded 8%"
    assert near_duplicate_groups(docs, threshold=0.95) == []


def test_chapters_of_a_novel_are_not_near_duplicates_but_a_retyped_one_is():
    text = decode_chinese((CORPORA / "sanguo" / "三国演义.txt").read_bytes()).text
    chapters = [c.text for c in split_novel(text).chapters[:30]]
    docs = [(f"ch{i + 1}", t) for i, t in enumerate(chapters)]
    retyped = chapters[4].replace("玄德", "刘备").replace("曰", "道")  # another edition's words
    groups = near_duplicate_groups([*docs, ("ch5 again", retyped)], threshold=0.7)
    assert [(g.keep, [d for d, _ in g.duplicates]) for g in groups] == [("ch5", ["ch5 again"])]


def test_groups_hang_on_their_first_document_not_on_chains():
    """A ~ B and B ~ C, but A !~ C: C is kept, not pulled into A's group through B."""
    rng = random.Random(0)  # distinct random words: shingles shared only by shared words
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8)) for _ in range(200)
    ]
    # exact Jaccard: a-b 0.82, b-c 0.82, a-c 0.67
    a, b, c = (" ".join(words[s : s + 100]) for s in (0, 10, 20))
    finder = NearDuplicateFinder(0.75, num_perm=256)
    assert finder.add("a", a) is None
    kept, similarity = finder.add("b", b)
    assert kept == "a" and 0.75 <= similarity < 0.95
    assert finder.add("c", c) is None  # 0.67 to a; b is not a representative
    groups = near_duplicate_groups([("c", c), ("b", b), ("a", a)], 0.75, num_perm=256)
    assert [(g.keep, [d for d, _ in g.duplicates]) for g in groups] == [("c", ["b"])]


def test_deterministic_and_the_best_match_wins(essays):
    first, second = sorted(essays)[:2]
    docs = [
        (first, essays[first]),
        (second, essays[second]),
        ("copy of second", edit_words(essays[second], 0.01, seed=3)),
    ]
    groups = near_duplicate_groups(docs)
    assert groups == near_duplicate_groups(docs)
    assert [(g.keep, [d for d, _ in g.duplicates]) for g in groups] == [
        (second, ["copy of second"])
    ]


def test_empty_and_short_documents():
    assert shingles("") == set() and shingles(" \n ") == set()
    assert shingles("Hi") == {"hi"}
    assert shingles("A  b\nC") == shingles("a b c")
    # empty documents have nothing to compare: never grouped; short ones only if equal
    docs = [("e1", ""), ("e2", "  "), ("s1", "ok"), ("s2", "OK"), ("s3", "no")]
    assert [(g.keep, g.duplicates) for g in near_duplicate_groups(docs)] == [("s1", [("s2", 1.0)])]


def test_bad_parameters():
    for threshold in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            NearDuplicateFinder(threshold)
    with pytest.raises(ValueError, match="num_perm"):
        NearDuplicateFinder(0.8, num_perm=4)
    with pytest.raises(ValueError, match="shingle_size"):
        NearDuplicateFinder(0.8, shingle_size=0)
    finder = NearDuplicateFinder()
    finder.add("x", "text")
    with pytest.raises(ValueError, match="added twice"):
        finder.add("x", "text")


# -- in the ingest: every corpus, reported or dropped (dedup=near) ------------------------------

ESSAY_INDEX = """<html><body><table>
<tr><td><font face="verdana"><a href="avg.html">Beating the Averages</a></font></td></tr>
<tr><td><font face="verdana"><a href="hwh.html">How to Work Hard</a></font></td></tr>
<tr><td><font face="verdana"><a href="avg-again.html">Beating the Averages</a></font></td></tr>
</table></body></html>
"""
SIMILARITY = r"(?:0\.9\d|1\.00)"  # a few words in 40,000 characters: estimated 0.97-1


@pytest.fixture
def reposted_essay(tmp_path) -> Path:
    """A Paul Graham-style mirror folder: an index page and three essays, the third a
    copy of the first with a few words changed (another site's repost of it)."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "articles.html").write_text(ESSAY_INDEX, encoding="utf-8")
    for page in ("avg.html", "hwh.html"):
        (folder / page).write_bytes((CORPORA / "paulgraham" / page).read_bytes())
    avg = (CORPORA / "paulgraham" / "avg.html").read_bytes()
    edited = avg.replace(b"Viaweb", b"our startup", 2).replace(b" Lisp ", b" a Lisp ", 2)
    assert edited != avg
    (folder / "avg-again.html").write_bytes(edited)
    return folder / "articles.html"


def ingest_essays(index: Path, data: Path, **options) -> dict:
    with Fetcher(rate_limit=None) as fetcher:
        return ingest(
            "paulgraham", str(index), data_dir=data, options=options, fetcher=fetcher
        ).manifest


def test_a_near_duplicate_is_reported_and_kept_by_default(reposted_essay, tmp_path):
    m = ingest_essays(reposted_essay, tmp_path / "data")
    assert m["documents"] == 3 and m["skipped"] == [] and m["options"] == {}
    near = m["cleaning"]["near_duplicates"]
    assert (near["threshold"], near["action"], near["found"]) == (0.8, "reported", 1)
    (pair,) = near["pairs"]
    assert pair["source"].endswith("/avg-again.html") and pair["id"] == 2
    assert pair["of_source"].endswith("/avg.html") and pair["of_id"] == 0
    assert pair["title"] == pair["of_title"] == "Beating the Averages"
    assert 0.9 <= pair["similarity"] <= 1.0
    rows = (tmp_path / "data" / "paulgraham" / "documents.jsonl").read_text().splitlines()
    digests = [json.loads(row)["sha256"] for row in rows]
    assert len(set(digests)) == 3  # near, not exact, duplicates


def test_dedup_near_drops_it_as_a_recorded_skip(reposted_essay, tmp_path):
    m = ingest_essays(reposted_essay, tmp_path / "data", dedup="near")
    assert m["documents"] == 2 and m["options"] == {"dedup": "near"}
    (skip,) = m["skipped"]
    assert skip["source"].endswith("/avg-again.html")
    assert re.fullmatch(
        rf"near-duplicate of document 0 “Beating the Averages” \(similarity {SIMILARITY}\)",
        skip["reason"],
    ), skip["reason"]
    cleaning = m["cleaning"]
    assert cleaning["skipped"] == {"near-duplicate": 1}
    assert cleaning["near_duplicates"]["action"] == "dropped"
    assert cleaning["near_duplicates"]["pairs"][0]["id"] is None  # never written
    rows = (tmp_path / "data" / "paulgraham" / "documents.jsonl").read_text().splitlines()
    assert [json.loads(row)["slug"] for row in rows] == ["avg", "hwh"]


def test_the_threshold_and_off(reposted_essay, tmp_path):
    m = ingest_essays(reposted_essay, tmp_path / "data", near_dup_threshold="0")
    assert m["cleaning"]["near_duplicates"] == {
        "threshold": 0.0, "action": "off", "found": 0, "pairs": []
    }  # fmt: skip
    assert m["options"] == {"near_dup_threshold": 0.0}


def test_dedup_from_the_command_line_and_in_the_stats(reposted_essay, tmp_path, charflow):
    data = tmp_path / "data"
    code, _, err = charflow(
        "ingest", "paulgraham", "--source", reposted_essay, "--data-dir", data,
        "--option", "dedup=near", "--option", "near_dup_threshold=0.85", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = charflow("corpora", "--stats", "paulgraham", "--data-dir", data)
    assert code == 0, err
    lines = out.splitlines()
    assert "  options     dedup=near, near_dup_threshold=0.85" in lines
    assert "       1  near-duplicate" in lines
    at = lines.index("near-duplicates (similarity >= 0.85): 1, dropped")
    assert re.fullmatch(
        rf"  {SIMILARITY}  dropped Beating the Averages \(.*/avg-again\.html\)"
        r"  ~  document 0 Beating the Averages \(.*/avg\.html\)",
        lines[at + 1],
    ), lines[at + 1]


def test_ingest_options_are_checked_for_every_corpus():
    essays, novel = get_corpus("paulgraham"), get_corpus("novel")
    assert resolve_options(essays, {}) == {}
    assert resolve_options(essays, {"dedup": "NEAR", "near_dup_threshold": "0.9"}) == {
        "dedup": "near",
        "near_dup_threshold": 0.9,
    }
    assert resolve_options(novel, {"dedup": "near"}) == {**novel.options, "dedup": "near"}
    with pytest.raises(IngestError, match="dedup='maybe': expected one of none, near"):
        resolve_options(essays, {"dedup": "maybe"})
    with pytest.raises(IngestError, match="near_dup_threshold=1.5: expected 0"):
        resolve_options(essays, {"near_dup_threshold": "1.5"})
    with pytest.raises(IngestError, match="near_dup_threshold='high': expected a float"):
        resolve_options(essays, {"near_dup_threshold": "high"})
    with pytest.raises(IngestError, match=r"unknown option\(s\) \['dedupe'\].*every corpus: dedup"):
        resolve_options(essays, {"dedupe": "near"})
    with pytest.raises(IngestError, match="dedup=near needs near_dup_threshold > 0"):
        near_duplicate_settings(resolve_options(essays, {"dedup": "near", "near_dup_threshold": 0}))


def test_the_ingest_minhash_estimates_like_the_library(essays):
    """ShingleArrayFinder (numpy, whole text at once) and the library's per-shingle
    MinHash estimate the same Jaccard similarity of the same shingle sets."""
    names = sorted(essays)[:12]
    texts = [essays[n] for n in names] + [edit_words(essays[names[0]], 0.03, seed=4)]
    fast, slow = ShingleArrayFinder(0.8), NearDuplicateFinder(0.8)
    fast_hashes = [fast.minhash(t) for t in texts]
    slow_hashes = [slow.minhash(t) for t in texts]
    sets = [shingles(t) for t in texts]
    for i, j in itertools.combinations(range(len(texts)), 2):
        exact = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
        assert abs(fast_hashes[i].jaccard(fast_hashes[j]) - exact) < 0.12, (i, j, exact)
        assert abs(slow_hashes[i].jaccard(slow_hashes[j]) - exact) < 0.12, (i, j, exact)
    assert fast.minhash("A  b\nC").jaccard(fast.minhash("a b c")) == 1.0  # same shingles
    assert fast.minhash(" \n ") is None and fast.minhash("Hi").jaccard(fast.minhash("HI")) == 1.0


def test_the_ingest_finder_finds_the_same_groups(essays):
    names = sorted(essays)[:30]
    docs = [(n, essays[n]) for n in names] + [
        (f"{n} ({how})", copy) for n in names[:3] for how, copy in copies(essays[n]).items()
    ]
    fast = ShingleArrayFinder(0.8)
    found = {doc_id: fast.add(doc_id, text) for doc_id, text in docs}
    groups = near_duplicate_groups(docs, threshold=0.8)
    assert {d: m[0] for d, m in found.items() if m} == {
        d: g.keep for g in groups for d, _ in g.duplicates
    }

"""Near-duplicate documents (MinHash LSH): real essays and chapters, lightly edited copies
of them found, unrelated texts never grouped, groups anchored on the first document."""

from __future__ import annotations

import random
import re

import pytest

from cleaners.chinese import decode_chinese, split_novel
from cleaners.essay_html import parse_essay
from scrapers.near_duplicates import NearDuplicateFinder, near_duplicate_groups, shingles
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

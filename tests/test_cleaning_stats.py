"""What cleaning removed, in the manifest (`cleaning`) and in `charflow corpora --stats`:
real ingests of the shared Friends set, 西游记 and the Paul Graham mirror, and a small Go
tree, checked against what the cleaners left in (and out of) the corpus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scrapers.fetch import Fetcher
from scrapers.ingest import cleaning_rows, describe_rule, ingest, reason_kind
from scrapers.store import CORPUS_FILE, DOCUMENTS_FILE, MANIFEST_FILE
from tests.mirror_fixtures import CORPORA

SOURCES = {
    "friends": CORPORA / "friends",
    "novel": CORPORA / "xiyouji" / "西游记.txt",
    "paulgraham": CORPORA / "paulgraham" / "articles.html",
}
CREDITS = "credit line (kept as metadata)"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A CHARFLOW_HOME whose data/ holds the three corpora, ingested once for the module."""
    home = tmp_path_factory.mktemp("home")
    with Fetcher(rate_limit=None) as fetcher:
        for name, source in SOURCES.items():
            ingest(name, str(source), data_dir=home / "data", fetcher=fetcher, progress=False)
    return home


def manifest(home: Path, name: str) -> dict:
    return json.loads((home / "data" / name / MANIFEST_FILE).read_text(encoding="utf-8"))


def documents(home: Path, name: str) -> list[dict]:
    rows = (home / "data" / name / DOCUMENTS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(row) for row in rows]


def corpus_text(home: Path, name: str) -> str:
    return (home / "data" / name / CORPUS_FILE).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_manifest_records_cleaning_by_rule_and_skips_by_reason(home, name):
    m = manifest(home, name)
    cleaning = m["cleaning"]
    assert list(m)[-1] == "cleaning"  # the long part last
    assert set(cleaning) == {"rules", "skipped", "near_duplicates"}
    assert cleaning["rules"], "nothing counted"
    for rule, row in cleaning["rules"].items():
        assert set(row) == {"lines", "chars", "items", "examples"}, rule
        assert row["chars"] > 0 and row["lines"] >= 0 and 1 <= row["items"] <= m["fetched"]
        assert 1 <= len(row["examples"]) <= 3 or row["lines"] == 0
        for example in row["examples"]:
            assert set(example) == {"source", "text"} and "\n" not in example["text"]
    assert sum(cleaning["skipped"].values()) == len(m["skipped"])
    assert set(cleaning["skipped"]) == {reason_kind(s["reason"]) for s in m["skipped"]}
    near = cleaning["near_duplicates"]
    assert near == {"threshold": 0.8, "action": "reported", "found": 0, "pairs": []}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_what_a_rule_removed_whole_is_not_in_the_corpus(home, name):
    """The examples of every rule that drops lines whole are lines no document kept."""
    kept = set(corpus_text(home, name).split("\n"))
    for rule, row in manifest(home, name)["cleaning"]["rules"].items():
        if not row["lines"]:
            continue
        for example in row["examples"]:
            if not example["text"].endswith("…"):  # cut short: not a whole line
                assert example["text"] not in kept, (rule, example)


def test_friends_credits_are_counted_where_they_were_taken_out(home):
    rows = documents(home, "friends")
    by_source = {row["source"]: row for row in rows}
    rules = manifest(home, "friends")["cleaning"]["rules"]
    credits = rules[CREDITS]
    # Every credit the cleaner moved into the metadata is a line the text lost.
    assert credits["items"] == sum(1 for row in rows if row["credits"])
    assert credits["lines"] >= sum(len(row["credits"]) for row in rows) > 200
    text = corpus_text(home, "friends")
    for example in credits["examples"]:
        names = [c["name"] for c in by_source[example["source"]]["credits"]]
        assert any(name and name in example["text"] for name in names), (example, names)
        assert example["text"] not in text
    assert rules["markup tag"]["lines"] == 0 < rules["markup tag"]["chars"]
    references = rules["character reference decoded"]
    assert references["lines"] == 0 and references["items"] > 100
    assert "&#146;" not in text and "&amp;" not in text


def test_xiyouji_table_of_contents_notices_and_appendix_are_counted(home):
    m = manifest(home, "novel")
    rules = m["cleaning"]["rules"]
    reasons = [s["reason"] for s in m["skipped"]]
    (entries,) = [int(n) for r in reasons for n in re.findall(r"contents: (\d+) entries", r)]
    assert rules["table of contents"]["lines"] == entries == 101
    assert (
        rules["table of contents"]["examples"][0]["text"] == "第001回 灵根育孕源流出 心性修持大道生"
    )
    text = corpus_text(home, "novel")
    assert "第001回" not in text
    notice = rules["site notice or ad"]
    assert notice["lines"] >= 14  # the notice blocks before and after the novel
    assert "rain8.com" in notice["examples"][0]["text"] and "rain8.com" not in text
    appendix = rules["appendix (--option keep_extras=true keeps it)"]
    assert appendix["examples"][0]["text"].startswith("附录") and "陈光蕊赴任逢灾" not in text
    assert rules["repeated heading"]["lines"] == 101  # "吴承恩--西游记--第一回 …" breadcrumbs
    assert "吴承恩--西游记" not in text


def test_paul_graham_banners_and_link_tables_are_counted(home):
    rules = manifest(home, "paulgraham")["cleaning"]["rules"]
    text = corpus_text(home, "paulgraham")
    banner = rules["promo banner in the essay"]
    assert banner["items"] > 10
    assert any("Y Combinator" in e["text"] for e in banner["examples"])
    assert "Get funded by Y Combinator." not in text
    outside = rules["navigation and links outside the essay"]
    assert outside["lines"] > outside["items"] > 50
    assert any(e["text"].endswith("Translation") for e in outside["examples"])


def test_go_files_left_out_are_counted_with_their_lines(tmp_path):
    tree = tmp_path / "tree"
    files = {
        "pkg/a.go": "package pkg\n\nfunc A() int { return 1 }\n",
        "pkg/zz_types.go": "// Code generated by deepcopy-gen. DO NOT EDIT.\n\npackage pkg\n\n"
        + "".join(f"var V{i} = {i}\n" for i in range(40)),
        "pkg/runes.go": 'package pkg\n\nconst E = "e\u0301"\n',  # decomposed: not NFC
        "vendor/x/x.go": "package x\n",
    }
    for rel, content in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(content, encoding="utf-8")
    with Fetcher(rate_limit=None) as fetcher:
        result = ingest("kubernetes-go", str(tree), data_dir=tmp_path / "data", fetcher=fetcher)
    cleaning = result.manifest["cleaning"]
    generated = cleaning["rules"]["generated file (Code generated header)"]
    assert generated == {
        "lines": 44,
        "chars": len(files["pkg/zz_types.go"]),
        "items": 1,
        "examples": [{"source": str(tree / "pkg/zz_types.go"), "text": "pkg/zz_types.go"}],
    }
    assert cleaning["rules"]["file not NFC"]["lines"] == 3
    assert cleaning["skipped"] == {
        "excluded folder (--option include_vendor=true takes it)": 1,
        "generated (Code generated ... DO NOT EDIT. header)": 1,
        "not NFC (Unicode normalization would change its code); not taken": 1,
    }


def test_skip_reasons_group_without_their_particulars():
    assert reason_kind("file not found: /work/x/field.html") == "file not found: …"
    assert reason_kind("HTTP 404 Not Found") == "HTTP N Not Found"
    assert reason_kind("off-site link (sep.turbifycdn.com)") == "off-site link (…)"
    assert (
        reason_kind("same bytes as https://x.org/a.txt; kept once") == "same bytes as …; kept once"
    )
    assert reason_kind("chapter 35 appears again (identical text); kept once") == (
        "chapter N appears again (identical text); kept once"
    )
    assert reason_kind("near-duplicate of document 3 “Avg” (similarity 0.93)") == "near-duplicate"


# -- charflow corpora --stats -----------------------------------------------------------------


def test_corpora_stats_prints_the_manifest(home, charflow, monkeypatch):
    monkeypatch.setenv("CHARFLOW_HOME", str(home))
    code, out, err = charflow("corpora", "--stats", "friends")
    assert code == 0, err
    m = manifest(home, "friends")
    lines = out.splitlines()
    assert lines[0].startswith(f"friends: {home / 'data' / 'friends'} (built ")
    assert f"  documents   {m['documents']:,} (from {m['fetched']} raw items)" in lines
    assert f"  characters  {m['chars']:,} ({m['bytes']:,} bytes)" in lines
    assert f"  vocabulary  {m['vocab_size']:,} code points" in lines
    assert f"skipped: {len(m['skipped'])}" in lines
    assert f"      {len(m['skipped'])}  file not found: …" in lines
    credits = m["cleaning"]["rules"][CREDITS]
    at = lines.index(f"  {CREDITS}: {describe_rule(credits)}")
    first = credits["examples"][0]
    assert lines[at + 1] == f"      e.g. {first['text']!r}  ({first['source']})"
    rules = [line for line in lines if line.startswith("  ") and not line.startswith("   ")]
    assert len([r for r in rules if ": " in r and " chars" in r]) == len(m["cleaning"]["rules"])
    assert (
        lines[-1] == "near-duplicates (similarity >= 0.8): 0, kept (--option dedup=near drops them)"
    )


def test_corpora_stats_for_a_novel_shows_the_table_of_contents(home, charflow, monkeypatch):
    monkeypatch.setenv("CHARFLOW_HOME", str(home))
    code, out, _ = charflow("corpora", "--stats", "novel")
    assert code == 0
    assert "  table of contents: 101 lines, 2,302 chars in 1 item" in out.splitlines()
    assert "e.g. '第001回 灵根育孕源流出 心性修持大道生'" in out


def test_corpora_stats_of_an_unknown_or_missing_corpus_is_a_one_line_error(
    home, charflow, monkeypatch
):
    monkeypatch.setenv("CHARFLOW_HOME", str(home))
    code, out, err = charflow("corpora", "--stats", "nosuchcorpus")
    assert (code, out) == (1, "")
    assert err.startswith("charflow: error: unknown corpus 'nosuchcorpus'; known corpora: ")
    assert len(err.splitlines()) == 1
    code, out, err = charflow("corpora", "--stats", "sanguo")  # known, never ingested here
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"charflow: error: corpus sanguo is not ingested yet "
        f"(no {home / 'data' / 'sanguo' / MANIFEST_FILE}); run: charflow ingest sanguo"
    ]


def test_corpora_stats_of_a_corpus_ingested_before_cleaning_was_recorded(
    home, charflow, monkeypatch, tmp_path
):
    old = tmp_path / "data" / "paulgraham"
    old.mkdir(parents=True)
    m = manifest(home, "paulgraham")
    del m["cleaning"]
    (old / MANIFEST_FILE).write_text(json.dumps(m), encoding="utf-8")
    monkeypatch.setenv("CHARFLOW_HOME", str(tmp_path))
    code, out, _ = charflow("corpora", "--stats", "paulgraham")
    assert code == 0
    assert out.splitlines()[-1] == (
        "what cleaning removed: not recorded (ingested before it was; ingest again)"
    )
    assert cleaning_rows(m) == [("what cleaning removed", "not recorded (ingested before it was)")]


def test_the_corpus_table_rows_hold_each_rule(home):
    """The rows report_corpus adds to the Prefect table artifact."""
    m = manifest(home, "friends")
    rows = dict(cleaning_rows(m))
    assert rows["skipped: file not found: …"] == str(len(m["skipped"]))
    credits = m["cleaning"]["rules"][CREDITS]
    assert rows[f"removed: {CREDITS}"].startswith(describe_rule(credits) + "; e.g. ")
    assert repr(credits["examples"][0]["text"]) in rows[f"removed: {CREDITS}"]
    assert rows["near-duplicates"] == "0 reported (similarity >= 0.8)"
    assert len([k for k in rows if k.startswith("removed: ")]) == len(m["cleaning"]["rules"])


def test_the_prefect_corpus_artifact_has_a_row_per_rule(flow_home, mirror):
    from flows.ingest_flow import ingest_flow
    from tests.test_flows import latest_artifact

    ingest_flow("paulgraham", source=mirror.url("paulgraham/articles.html"), limit=14)
    m = json.loads((flow_home / "data" / "paulgraham" / MANIFEST_FILE).read_text("utf-8"))
    assert m["cleaning"]["rules"]
    rows = {
        row["statistic"]: row["value"] for row in json.loads(latest_artifact("corpus-paulgraham"))
    }
    for rule, row in m["cleaning"]["rules"].items():
        assert rows[f"removed: {rule}"].startswith(describe_rule(row)), rule
    assert rows["near-duplicates"] == "0 reported (similarity >= 0.8)"

"""shuttleset: ../shared/corpora/shuttleset as rallies of shot symbols, over loopback HTTP
and from the local tree; options, the split by match, the layouts of other releases, and
each kind of bad input (one line naming the file and the value, nothing written).

The expectations are read from the CSV files with the csv module, not with the code under
test, so a parsing mistake in the corpus cannot agree with itself.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cleaners.shuttleset import (
    END,
    SHOTS,
    ShuttleSetError,
    alphabet,
    parse_int,
    parse_set,
    player_key,
    rally_text,
)
from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.ingest import ingest
from scrapers.registry import Document, get_corpus
from scrapers.shuttleset import match_table_candidates, set_file_url
from scrapers.store import CORPUS_FILE, DOCUMENTS_FILE, MANIFEST_FILE, SEPARATOR
from tests.mirror_fixtures import CORPORA, start_mirror
from training.data import document_split, prepare_dataset
from training.errors import TrainingError

SHUTTLESET = CORPORA / "shuttleset"
SET_DIR = SHUTTLESET / "set"
RALLIES, STROKES = 3683, 36484  # ShuttleSet as copied (its README's 3,685/36,492 differ)
ALIASES = {"過度切球": "過渡切球"}  # the data's spelling of the README's passive drop
REPO = Path(__file__).resolve().parent.parent


# -- an oracle: the CSV files read with the csv module -------------------------------------


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def matches() -> list[dict]:
    return read_rows(SET_DIR / "match.csv")


def set_files() -> list[tuple[str, int, Path]]:
    return [
        (m["video"], n, SET_DIR / m["video"] / f"set{n}.csv")
        for m in matches()
        for n in range(1, int(m["set"]) + 1)
    ]


def rallies_of(path: Path) -> dict[int, list[dict]]:
    """rally number -> its rows in file order."""
    out: dict[int, list[dict]] = {}
    for row in read_rows(path):
        out.setdefault(int(float(row["rally"])), []).append(row)
    return out


def readme_shot_table() -> dict[str, str]:
    """zh -> en from the dataset README's 'Shot type translation' table."""
    text = (SHUTTLESET / "README.md").read_text(encoding="utf-8")
    table = text.split("### Shot type translation", 1)[1].split("##", 1)[0]
    rows = re.findall(r"^\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|$", table, re.MULTILINE)
    return {zh: en for en, zh in rows if en not in ("English",) and not set(en) <= {"-"}}


# -- running ingest ------------------------------------------------------------------------


def run(source, data: Path, **options):
    with Fetcher(rate_limit=None) as fetcher:
        return ingest(
            "shuttleset", str(source), data_dir=data, options=options, fetcher=fetcher,
            progress=False,
        )  # fmt: skip


def read_corpus(path: Path) -> tuple[str, list[dict], list[str]]:
    corpus = (path / CORPUS_FILE).read_text(encoding="utf-8")
    docs = [json.loads(x) for x in (path / DOCUMENTS_FILE).read_text("utf-8").splitlines()]
    texts = [corpus[d["char_start"] : d["char_end"]] for d in docs]
    return corpus, docs, texts


def manifest_alphabet(result, docs, texts) -> dict:
    """The manifest's alphabet; until ingest passes CorpusSpec.manifest_fields to the
    writer, the same function applied to the documents read back from disk."""
    if "alphabet" in result.manifest:
        return result.manifest["alphabet"]
    spec = get_corpus("shuttleset")
    documents = [Document(t, d["source"], meta=d) for d, t in zip(docs, texts, strict=True)]
    return spec.manifest_fields(result.manifest["options"], documents)["alphabet"]


@pytest.fixture(scope="module")
def over_http(tmp_path_factory) -> dict:
    """The whole dataset, ingested once through a loopback mirror of ../shared/corpora."""
    data = tmp_path_factory.mktemp("data")
    with start_mirror(CORPORA) as mirror:
        result = run(mirror.url(get_corpus("shuttleset").mirror_path), data)
        requested = [r.path for r in mirror.requests()]
    corpus, docs, texts = read_corpus(result.path)
    return {
        "result": result,
        "corpus": corpus,
        "docs": docs,
        "texts": texts,
        "requested": requested,
        "alphabet": manifest_alphabet(result, docs, texts),
    }


# -- the corpus ----------------------------------------------------------------------------


def test_one_document_per_rally_and_every_stroke_accounted_for(over_http):
    docs, texts, manifest = over_http["docs"], over_http["texts"], over_http["result"].manifest
    expected = {
        (video, n, rally): len(rows)
        for video, n, path in set_files()
        for rally, rows in rallies_of(path).items()
    }
    assert len(expected) == RALLIES and sum(expected.values()) == STROKES
    got = {(d["match"], d["set"], d["rally"]): d["strokes"] for d in docs}
    assert got == expected
    assert manifest["documents"] == RALLIES and manifest["skipped"] == []
    assert [len(t) - 1 for t in texts] == [d["strokes"] for d in docs]  # a symbol each + END
    assert all(t.endswith(END) and END not in t[:-1] for t in texts)
    assert over_http["corpus"] == SEPARATOR.join(texts)


def test_round_trip_rebuilds_every_rallys_shot_names(over_http):
    """corpus.txt + the alphabet -> each rally's shot names, as the CSV writes them."""
    names = {s: e["zh"] for s, e in over_http["alphabet"].items()}
    rebuilt = {
        (d["match"], d["set"], d["rally"]): [names[s] for s in t[:-1]]
        for d, t in zip(over_http["docs"], over_http["texts"], strict=True)
    }
    for video, number, path in set_files():
        for rally, rows in rallies_of(path).items():
            shots = [ALIASES.get(r["type"], r["type"]) for r in rows]
            assert rebuilt[(video, number, rally)] == shots, (video, number, rally)


def test_alphabet_names_counts_and_the_one_passive_drop(over_http):
    alpha = over_http["alphabet"]
    readme = readme_shot_table()
    assert len(readme) == 18
    shots = {s: e for s, e in alpha.items() if e["kind"] == "shot"}
    assert {e["zh"]: e["en"] for e in shots.values()} == readme | {"未知球種": "unknown"}
    assert all(len(s) == 1 and s.isprintable() and not s.isspace() for s in alpha)
    assert END not in shots
    assert alpha[END] == {"zh": "回合結束", "en": "rally end", "count": RALLIES, "kind": "end"}
    data = Counter(r["type"] for _, _, p in set_files() for r in read_rows(p))
    by_zh = {e["zh"]: e["count"] for e in shots.values()}
    assert by_zh["過渡切球"] == data["過度切球"] + data["過渡切球"] > 0  # one shot, one symbol
    assert by_zh["未知球種"] == data["未知球種"] > 0  # unknown keeps its own symbol
    assert sum(by_zh.values()) == STROKES
    assert set(alpha) >= set("".join(over_http["texts"]))


def test_manifest_carries_the_alphabet(over_http):
    manifest = over_http["result"].manifest
    if "alphabet" not in manifest:
        pytest.xfail("scrapers/ingest.py does not pass CorpusSpec.manifest_fields yet")
    assert manifest["alphabet"] == over_http["alphabet"]
    assert manifest["end_symbol"] == END and manifest["strokes"] == STROKES
    on_disk = json.loads((over_http["result"].path / MANIFEST_FILE).read_text("utf-8"))
    assert on_disk["alphabet"] == manifest["alphabet"]


def test_document_metadata_players_score_winner_and_why(over_http):
    meta = {(d["match"], d["set"], d["rally"]): d for d in over_http["docs"]}
    first = meta[("Kento_MOMOTA_CHOU_Tien_Chen_Fuzhou_Open_2019_Finals", 1, 1)]
    assert first["players"] == {"A": "Kento MOMOTA", "B": "CHOU Tien Chen"}
    assert first["date"] == "2019-11-10" and first["tournament"] == "Fuzhou Open 2019"
    assert first["split_group"] == first["match"]
    rows = rallies_of(SET_DIR / first["match"] / "set1.csv")[1]
    last = rows[-1]
    assert first["score"] == {"A": int(last["roundscore_A"]), "B": int(last["roundscore_B"])}
    assert (first["winner"], first["winner_from"]) == (last["getpoint_player"], "getpoint_player")
    assert first["winner_name"] == first["players"][last["getpoint_player"]]
    assert (first["lose_reason"], first["win_reason"]) == (last["lose_reason"], last["win_reason"])


def test_a_rally_filed_at_the_end_of_its_set_is_put_back_in_order(over_http):
    """Antonsen v Axelsen, set 1: rally 8 (two unknown strokes, no getpoint_player) is the
    file's last rows; it goes between 7 and 9, and the score (4-3 -> 5-3) says A won it."""
    match = "Anders_Antonsen_Viktor_Axelsen_HSBC_BWF_WORLD_TOUR_FINALS_2020_Finals"
    docs = [d for d in over_http["docs"] if d["match"] == match and d["set"] == 1]
    assert [d["rally"] for d in docs] == sorted(rallies_of(SET_DIR / match / "set1.csv"))
    eighth = next(d for d in docs if d["rally"] == 8)
    assert eighth["strokes"] == 2 and eighth["score"] == {"A": 5, "B": 3}
    assert (eighth["winner"], eighth["winner_from"], eighth["lose_reason"]) == ("A", "score", None)


def test_http_reads_match_csv_then_each_set_file_and_matches_the_local_tree(over_http, tmp_path):
    pages = [p for p in over_http["requested"] if p != "/robots.txt"]
    expected = ["/shuttleset/set/match.csv"] + [
        "/shuttleset/set/" + v.replace(" ", "%20") + f"/set{n}.csv" for v, n, _ in set_files()
    ]
    assert pages == expected
    assert any("%20" in p for p in pages)  # folder names with spaces, quoted
    local = run(SHUTTLESET, tmp_path)
    assert local.manifest["corpus_sha256"] == over_http["result"].manifest["corpus_sha256"]
    _, docs, _ = read_corpus(local.path)
    assert docs[0]["source"].startswith((SET_DIR.resolve()).as_uri())


def test_split_by_match_keeps_held_out_matches_out_of_training(over_http, tmp_path):
    ds = prepare_dataset(
        over_http["result"].path, cache_dir=tmp_path, val_fraction=0.1, test_fraction=0.1
    )
    docs = over_http["docs"]

    def matches_in(split: str) -> set[str]:
        return {
            d["match"] for d in docs if any(a <= d["char_start"] < b for a, b in ds.splits[split])
        }

    train, val, test = (matches_in(s) for s in ("train", "val", "test"))
    assert val and test and not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == {m["video"] for m in matches()}
    # whole matches: every rally of a held-out match lies in its split
    held_out = [d for d in docs if d["match"] in val]
    assert all(any(a <= d["char_start"] < b for a, b in ds.splits["val"]) for d in held_out)


def test_document_split_keeps_each_group_in_one_split():
    rng = np.random.default_rng(4)
    sizes = rng.integers(5, 40, size=300)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    ids = [str(i) for i in range(300)]
    groups = [f"match {i // 7}" for i in range(300)]  # 43 groups of up to 7 documents
    splits = document_split(int(sizes.sum()), starts, ids, 0.1, 0.1, groups)
    owner = {
        i: split
        for split, ranges in splits.items()
        for i, a in enumerate(starts)
        if any(lo <= a < hi for lo, hi in ranges)
    }
    by_group: dict[str, set[str]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, set()).add(owner[i])
    assert all(len(s) == 1 for s in by_group.values())
    assert {"train", "val", "test"} == {s for v in by_group.values() for s in v}
    # without groups (or with none named) the split is the one of whole documents
    plain = document_split(int(sizes.sum()), starts, ids, 0.1, 0.1)
    assert document_split(int(sizes.sum()), starts, ids, 0.1, 0.1, [None] * 300) == plain
    assert plain != splits


def test_too_few_groups_is_an_error_not_a_character_split(tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    docs = ["ABC.", "BCA.", "CAB.", "ABA."]
    rows, at = [], 0
    for i, text in enumerate(docs):
        rows.append({"id": i, "char_start": at, "split_group": "one" if i < 2 else "two"})
        at += len(text) + len(SEPARATOR)
    (folder / CORPUS_FILE).write_text(SEPARATOR.join(docs), encoding="utf-8")
    (folder / DOCUMENTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    with pytest.raises(TrainingError, match=r"2 split groups .* too few for val_fraction 0.1"):
        prepare_dataset(folder, cache_dir=tmp_path / "cache", val_fraction=0.1, test_fraction=0.1)


# -- options -------------------------------------------------------------------------------


def test_player_option_upper_cases_one_players_strokes(tmp_path):
    result = run(SHUTTLESET, tmp_path, player="viktor  axelsen")
    corpus, docs, texts = read_corpus(result.path)
    assert result.manifest["options"] == {"player": "viktor  axelsen", "detail": "shot"}
    his = [m for m in matches() if "axelsen" in (m["winner"] + m["loser"]).casefold()]
    assert {d["match"] for d in docs} == {m["video"] for m in his}
    skipped = result.manifest["skipped"]
    assert len(skipped) == len(matches()) - len(his)
    assert all("does not play in this match" in s["reason"] for s in skipped)
    for d, text in zip(docs, texts, strict=True):
        assert d["player"] == d["players"][d["player_side"]] == "Viktor AXELSEN"
        rows = rallies_of(SET_DIR / d["match"] / f"set{d['set']}.csv")[d["rally"]]
        assert [s.isupper() for s in text[:-1]] == [r["player"] == d["player_side"] for r in rows]
    alpha = manifest_alphabet(result, docs, texts)
    assert len(alpha) == 2 * len(SHOTS) + 1
    assert alpha["S"]["player"] == "Viktor AXELSEN" and alpha["s"]["player"] == "opponent"
    assert alpha["S"]["zh"] == alpha["s"]["zh"] == "殺球"
    assert sum(e["count"] for s, e in alpha.items() if s.isupper()) == sum(
        sum(c.isupper() for c in t) for t in texts
    )


def test_detail_shot_area_gives_two_symbols_per_stroke(tmp_path):
    result = run(SHUTTLESET, tmp_path, detail="shot+area")
    _, docs, texts = read_corpus(result.path)
    assert result.manifest["options"]["detail"] == "shot+area"
    areas = Counter()
    for d, text in zip(docs, texts, strict=True):
        assert len(text) == 2 * d["strokes"] + 1
        rows = rallies_of(SET_DIR / d["match"] / f"set{d['set']}.csv")[d["rally"]]
        expected = [int(float(r["landing_area"])) if r["landing_area"] else 0 for r in rows]
        got = [ord(c) - ord("0") for c in text[1:-1:2]]
        assert got == expected
        areas.update(got)
    assert areas[0] > 0 and max(areas) == 16  # empty landing areas and the far zones occur
    alpha = manifest_alphabet(result, docs, texts)
    assert alpha["0"]["en"] == "no landing area" and alpha["="]["en"] == "landing area 13"
    assert alpha["="]["count"] == areas[13]


def test_unknown_player_and_bad_detail_are_one_line_errors(tmp_path):
    with pytest.raises(IngestError, match=r"player 'Lin Dan' plays in no match .*Viktor AXELSEN"):
        run(SHUTTLESET, tmp_path, player="Lin Dan")
    with pytest.raises(IngestError, match=r"option detail 'area' is not one of shot, shot\+area"):
        run(SHUTTLESET, tmp_path, detail="area")
    assert not (tmp_path / "shuttleset" / CORPUS_FILE).exists()


# -- other releases' layouts ---------------------------------------------------------------

TWO = [
    "Kento_MOMOTA_CHOU_Tien_Chen_Fuzhou_Open_2019_Finals",  # three sets
    "Anthony_Sinisuka_GINTING_Viktor_AXELSEN _Indonesia_Masters_2020_SemiFinals",  # a space
]


def small_tree(root: Path, rename=None, rewrite=None) -> Path:
    """A copy of two matches of the dataset under root/set, optionally changed."""
    rows = [m for m in matches() if m["video"] in TWO]
    (root / "set").mkdir(parents=True)
    for m in rows:
        folder = root / "set" / (rename(m["video"]) if rename else m["video"])
        folder.mkdir()
        for n in range(1, int(m["set"]) + 1):
            data = (SET_DIR / m["video"] / f"set{n}.csv").read_text(encoding="utf-8")
            (folder / f"set{n}.csv").write_text(rewrite(data) if rewrite else data, "utf-8")
        if rename:
            m["video"] = rename(m["video"])
    with open(root / "set" / "match.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def reshape_csv(text: str) -> str:
    """The same strokes as another release might write them: columns in another order and
    letter case, an extra column, integers without '.0', trailing empty fields left off,
    CRLF line endings and a byte-order mark."""
    rows = list(csv.reader(text.splitlines()))
    header, body = rows[0], rows[1:]
    order = list(reversed(range(len(header))))
    out = [[header[i].upper() if header[i] == "type" else header[i] for i in order] + ["note"]]
    for row in body:
        cells = [re.sub(r"^(\d+)\.0$", r"\1", row[i]) for i in order] + [""]
        while cells and cells[-1] == "":
            cells.pop()  # a short row: its empty trailing fields are not written at all
        out.append(cells)
    return "\ufeff" + "\r\n".join(",".join(c) for c in out) + "\r\n"


def test_other_layouts_give_the_same_rallies(tmp_path):
    plain = run(small_tree(tmp_path / "plain"), tmp_path / "a")
    spaced = small_tree(tmp_path / "other release", lambda v: v.replace("_", " ", 2), reshape_csv)
    other = run(spaced / "set", tmp_path / "b", detail="shot")  # the set/ folder as source
    assert plain.manifest["documents"] == other.manifest["documents"] > 0
    assert plain.manifest["corpus_sha256"] == other.manifest["corpus_sha256"]
    _, docs, _ = read_corpus(other.path)
    assert docs[0]["match"].startswith("Kento MOMOTA CHOU")
    with start_mirror(tmp_path) as mirror:  # spaces in the URL of the folder over HTTP
        http = run(mirror.url("other release/set/match.csv"), tmp_path / "c")
    assert http.manifest["corpus_sha256"] == plain.manifest["corpus_sha256"]


def test_a_set_file_missing_from_the_source_is_skipped_with_the_reason(tmp_path):
    tree = small_tree(tmp_path / "tree")
    (tree / "set" / TWO[0] / "set3.csv").unlink()
    result = run(tree, tmp_path / "data")
    [skip] = result.manifest["skipped"]
    assert skip["source"].endswith("/set3.csv") and "not found" in skip["reason"]
    _, docs, _ = read_corpus(result.path)
    assert {(d["match"], d["set"]) for d in docs if d["match"] == TWO[0]} == {
        (TWO[0], 1),
        (TWO[0], 2),
    }


# -- bad input: one line naming the file and the value, nothing written --------------------


def _drop_column(name):
    def rewrite(text: str) -> str:
        rows = list(csv.reader(text.splitlines()))
        i = rows[0].index(name)
        return "\n".join(",".join(r[:i] + r[i + 1 :]) for r in rows) + "\n"

    return rewrite


def _set_cell(column, value, row=1):
    def rewrite(text: str) -> str:
        rows = list(csv.reader(text.splitlines()))
        rows[row][rows[0].index(column)] = value
        return "\n".join(",".join(r) for r in rows) + "\n"

    return rewrite


@pytest.mark.parametrize(
    ("rewrite", "options", "message"),
    [
        (_drop_column("type"), {}, r"set1\.csv: missing column 'type'"),
        (_drop_column("rally"), {}, r"set1\.csv: missing column 'rally'"),
        (_drop_column("landing_area"), {"detail": "shot+area"}, r"missing column 'landing_area'"),
        (_set_cell("type", "跳殺", 3), {}, r"set1\.csv: shot type '跳殺' in row 3 is not in"),
        (_set_cell("rally", "1.5"), {}, r"set1\.csv: rally '1\.5' in row 1 is not a whole"),
        (_set_cell("player", "C", 2), {}, r"set1\.csv: player 'C' in row 2 is not A or B"),
        (
            _set_cell("landing_area", "17.0", 4),
            {"detail": "shot+area"},
            r"set1\.csv: landing_area '17\.0' in row 4 is not in 1-16",
        ),
    ],
    ids=["no-type", "no-rally", "no-area", "shot", "rally", "player", "area"],
)
def test_bad_set_file_fails_naming_file_and_value_and_keeps_the_old_corpus(
    tmp_path, rewrite, options, message
):
    data = tmp_path / "data"
    before = run(small_tree(tmp_path / "good"), data, **options)
    old = {p.name: p.read_bytes() for p in before.path.iterdir() if p.is_file()}
    bad = small_tree(tmp_path / "bad", rewrite=rewrite)
    with pytest.raises(IngestError, match=message) as caught:
        run(bad, data, **options)
    assert "\n" not in str(caught.value)
    assert str(bad / "set" / TWO[0] / "set1.csv") in str(caught.value)  # the file, by path
    assert {p.name: p.read_bytes() for p in before.path.iterdir() if p.is_file()} == old
    assert not [p for p in data.iterdir() if p.name.startswith(".staging")]


def test_bad_match_table_fails_naming_it(tmp_path):
    with pytest.raises(IngestError, match=r"no ShuttleSet match table at .*expected set/match"):
        run(tmp_path, tmp_path / "data")
    tree = small_tree(tmp_path / "tree")
    table = tree / "set" / "match.csv"
    table.write_text(_drop_column("video")(table.read_text("utf-8")), "utf-8")
    with pytest.raises(IngestError, match=re.escape(f"{table}: missing column 'video'")):
        run(tree, tmp_path / "data")
    tree = small_tree(tmp_path / "twice")
    table = tree / "set" / "match.csv"
    lines = table.read_text("utf-8").splitlines(keepends=True)
    table.write_text("".join(lines + lines[1:2]), "utf-8")
    with pytest.raises(IngestError, match=r"match\.csv: video '.*' is listed twice \(row 3\)"):
        run(tree, tmp_path / "data")
    assert not (tmp_path / "data" / "shuttleset" / CORPUS_FILE).exists()


def test_cli_ingest_and_its_one_line_error(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "flows.cli", "ingest", "shuttleset", "--source", str(SHUTTLESET),
         "--data-dir", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert f"{RALLIES} documents" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "flows.cli", "ingest", "shuttleset", "--source", str(SHUTTLESET),
         "--data-dir", str(tmp_path), "--option", "detail=everything"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "detail 'everything'" in bad.stderr


# -- the pure parts ------------------------------------------------------------------------


def test_numbers_written_either_way_and_rejected_otherwise():
    assert [parse_int(v, "f", "rally", 1) for v in ("7", "7.0", " 7 ", "7.")] == [7] * 4
    for bad in ("", "x", "7.5", "nan", "inf"):
        with pytest.raises(ShuttleSetError, match=f"f: rally {bad!r} in row 1"):
            parse_int(bad, "f", "rally", 1)


def test_symbols_of_a_rally_with_and_without_options():
    data = (
        "rally,player,type,roundscore_A,roundscore_B,getpoint_player,lose_reason,win_reason,"
        "landing_area\n"
        "1,A,發短球,0,0,,,,7\n"
        "1,B,過度切球,0,0,,,,\n"
        "1,A,殺球,1,0,A,出界,對手出界,13\n"
    ).encode()
    [rally] = parse_set(data, "x.csv", areas=True)
    assert rally_text(rally) == "TQS."
    assert rally_text(rally, player_side="B") == "tQs."
    assert rally_text(rally, detail="shot+area") == "T7Q0S=."
    assert (rally.winner, rally.lose_reason, rally.score) == ("A", "出界", (1, 0))
    with pytest.raises(ShuttleSetError, match=r"symbols \['s', 't'\] are not in the alphabet"):
        alphabet(["tQs."])  # lower case only exists with a player
    assert player_key(" Viktor_AXELSEN ") == player_key("viktor axelsen")


def test_a_release_without_the_rally_outcome_columns_still_gives_symbols():
    data = (
        "Type,Player,Rally,roundscore_A,roundscore_B\n"
        "發短球,A,1,1,0\n推球,B,1,1,0\n"
        "發長球,A,2,1,1\n"
        "殺球,B,4,2,2\n"  # rally 3 is missing: who won 4 cannot be read from the score
    ).encode()
    rallies = parse_set(data, "x.csv")
    assert [rally_text(r) for r in rallies] == ["TU.", "G.", "S."]
    assert [(r.winner, r.winner_from) for r in rallies] == [
        ("A", "score"),
        ("B", "score"),
        (None, None),
    ]
    assert rallies[0].lose_reason is None


def test_set_file_urls_from_match_table_and_folder_sources():
    table = "http://h/data/set/match.csv"
    assert set_file_url(table, "A B_C", 2) == "http://h/data/set/A%20B_C/set2.csv"
    assert match_table_candidates("http://h/data") == [
        "http://h/data/set/match.csv",
        "http://h/data/match.csv",
    ]
    assert match_table_candidates(table) == [table]
    assert match_table_candidates(str(SET_DIR)) == [(SET_DIR / "match.csv").resolve().as_uri()]

"""scrapers/store.py: the on-disk corpus contract, streamed and committed atomically."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import unicodedata
from pathlib import Path

import pytest

from scrapers import store
from scrapers.registry import Document
from scrapers.store import (
    CORPUS_FILE,
    DOCUMENTS_FILE,
    MANIFEST_FILE,
    SEPARATOR,
    STAGING_PREFIX,
    CorpusWriter,
    normalize_text,
)

DOCS = [
    Document("First essay.\n\nSecond paragraph.", "http://x/a.html", "A", "May 2001"),
    Document("Cafe\u0301 and 三国\r\nwindows line", "http://x/b.html", meta={"slug": "b"}),
    Document("  \n\n", "http://x/empty.html"),  # nothing left: recorded as skipped
    Document("last", "http://x/c.html"),
]


def write(corpus_dir, docs=DOCS, **fields):
    with CorpusWriter(corpus_dir) as writer:
        for doc in docs:
            writer.add(doc)
        writer.skip("http://x/missing.html", "HTTP 404 Not Found")
        return writer.commit(name=corpus_dir.name, source="http://x/", **fields), writer


def snapshot(corpus_dir):
    files = [p for p in corpus_dir.iterdir() if p.is_file()]
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def test_files_offsets_and_manifest(tmp_path):
    corpus_dir = tmp_path / "toy"
    manifest, _ = write(corpus_dir)
    raw = (corpus_dir / CORPUS_FILE).read_bytes()
    text = raw.decode("utf-8")
    rows = [json.loads(line) for line in (corpus_dir / DOCUMENTS_FILE).read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2]
    assert [r["source"] for r in rows] == ["http://x/a.html", "http://x/b.html", "http://x/c.html"]
    for row in rows:
        piece = text[row["char_start"] : row["char_end"]]
        assert raw[row["byte_start"] : row["byte_end"]].decode("utf-8") == piece
        assert row["chars"] == len(piece)
        assert row["sha256"] == hashlib.sha256(piece.encode()).hexdigest()
    # documents are joined by exactly the separator, NFC with Unix newlines
    assert text == SEPARATOR.join(text[r["char_start"] : r["char_end"]] for r in rows)
    assert "Café and 三国\nwindows line" in text and "\r" not in text
    assert rows[1]["slug"] == "b" and rows[0]["title"] == "A" and rows[0]["date"] == "May 2001"
    assert manifest == json.loads((corpus_dir / MANIFEST_FILE).read_text())
    assert manifest["documents"] == 3 and manifest["chars"] == len(text)
    assert manifest["bytes"] == len(raw)
    assert manifest["corpus_sha256"] == hashlib.sha256(raw).hexdigest()
    assert manifest["vocab_size"] == len(set(text))
    assert manifest["separator"] == SEPARATOR
    assert manifest["skipped"] == [
        {"source": "http://x/empty.html", "reason": "empty after cleaning"},
        {"source": "http://x/missing.html", "reason": "HTTP 404 Not Found"},
    ]
    assert {"code_version", "created_at", "name", "source"} <= set(manifest)
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_separator_character_is_removed_from_documents(tmp_path):
    write(tmp_path / "toy", [Document("a\x1eb", "s1"), Document("c", "s2")])
    assert (tmp_path / "toy" / CORPUS_FILE).read_text() == "ab" + SEPARATOR + "c"


def test_failure_mid_write_leaves_previous_corpus_untouched(tmp_path):
    corpus_dir = tmp_path / "toy"
    write(corpus_dir)
    (corpus_dir / "raw").mkdir()
    (corpus_dir / "raw" / "cached.body").write_bytes(b"cache")
    before = snapshot(corpus_dir)
    with pytest.raises(RuntimeError), CorpusWriter(corpus_dir) as writer:
        writer.add(Document("new text that must not appear", "s"))
        raise RuntimeError("network died")
    assert snapshot(corpus_dir) == before
    assert (corpus_dir / "raw" / "cached.body").read_bytes() == b"cache"
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_new_corpus_replaces_old_and_keeps_raw_cache(tmp_path):
    corpus_dir = tmp_path / "toy"
    write(corpus_dir)
    (corpus_dir / "raw").mkdir()
    (corpus_dir / "raw" / "cached.body").write_bytes(b"cache")
    manifest, writer = write(corpus_dir, [Document("only one now", "s")])
    assert not writer.unchanged
    assert (corpus_dir / CORPUS_FILE).read_text() == "only one now"
    assert manifest["documents"] == 1
    assert (corpus_dir / "raw" / "cached.body").read_bytes() == b"cache"
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_identical_rerun_rewrites_nothing(tmp_path):
    corpus_dir = tmp_path / "toy"
    first, _ = write(corpus_dir)
    before = snapshot(corpus_dir)
    second, writer = write(corpus_dir)
    assert writer.unchanged and second == first
    assert snapshot(corpus_dir) == before


def test_changed_options_rewrite(tmp_path):
    corpus_dir = tmp_path / "toy"
    write(corpus_dir, options={"x": 1})
    manifest, writer = write(corpus_dir, options={"x": 2})
    assert not writer.unchanged and manifest["options"] == {"x": 2}


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_staging_left_by_a_killed_run_is_cleaned_and_its_raw_cache_recovered(tmp_path):
    corpus_dir = tmp_path / "toy"
    write(corpus_dir)
    # A run killed after moving raw/ into its staging folder, before the swap.
    stale = tmp_path / f"{STAGING_PREFIX}toy-{dead_pid()}-{'a' * 32}"
    (stale / "raw").mkdir(parents=True)
    (stale / "raw" / "cached.body").write_bytes(b"cache")
    (stale / CORPUS_FILE).write_text("half written")
    # A live run of the same corpus, and a run of another corpus whose name starts alike.
    with subprocess.Popen(["sleep", "60"]) as live:
        running = tmp_path / f"{STAGING_PREFIX}toy-{live.pid}-{'b' * 32}"
        other = tmp_path / f"{STAGING_PREFIX}toy-extra-{dead_pid()}-{'c' * 32}"
        running.mkdir()
        other.mkdir()
        write(corpus_dir)
        live.kill()
    assert (corpus_dir / "raw" / "cached.body").read_bytes() == b"cache"
    assert not stale.exists()
    assert running.is_dir() and other.is_dir()


def test_meta_may_not_override_core_fields(tmp_path):
    with pytest.raises(ValueError, match="sha256"), CorpusWriter(tmp_path / "toy") as writer:
        writer.add(Document("x", "s", meta={"sha256": "forged"}))
    assert not (tmp_path / "toy" / CORPUS_FILE).exists()


def test_vocabulary_is_every_character_of_the_corpus(tmp_path):
    docs = [
        Document("plain ascii", "s0"),
        Document("ascii again\twith a tab and a form feed\x0c", "s1"),  # new ASCII, late
        Document("三国演义 and café", "s2"),
        Document("cafe\u0301: nothing new once NFC", "s3"),  # no U+0301 in the corpus
        Document("\u00a0nbsp, 🙂 emoji, \x7f DEL", "s4"),
    ]
    manifest, _ = write(tmp_path / "toy", docs)
    text = (tmp_path / "toy" / CORPUS_FILE).read_text(encoding="utf-8")
    assert "\u0301" not in text
    assert manifest["vocab_size"] == len(set(text))
    # One document whose only newlines are the trailing ones the store strips.
    manifest, _ = write(tmp_path / "one", [Document("abc\n\n", "s")])
    assert (tmp_path / "one" / CORPUS_FILE).read_text() == "abc"
    assert manifest["vocab_size"] == 3


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "plain",
        "a\r\nb\rc\x1e\n",
        "cafe\u0301\r\n",
        "\n三国\n",
        "\x1e\n\x1e",
        "e\r\u0301",
    ],
)
def test_normalize_text_is_its_definition(text):
    unix = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x1e", "")
    assert normalize_text(text) == unicodedata.normalize("NFC", unix).strip("\n")


def test_early_writeback_leaves_the_corpus_as_it_was(tmp_path, monkeypatch):
    reference, _ = write(tmp_path / "reference")
    calls, start_writeback = [], store.start_writeback
    monkeypatch.setattr(store, "WRITEBACK_BYTES", 1)  # after every write
    monkeypatch.setattr(store, "start_writeback", lambda f: calls.append(start_writeback(f)))
    manifest, _ = write(tmp_path / "toy")
    assert len(calls) > len(DOCS)
    raw = (tmp_path / "toy" / CORPUS_FILE).read_bytes()
    assert raw == (tmp_path / "reference" / CORPUS_FILE).read_bytes()
    assert (
        manifest["corpus_sha256"] == reference["corpus_sha256"] == hashlib.sha256(raw).hexdigest()
    )


# -- publishing is durable (issue 15, defect 12) --------------------------------------------


@pytest.fixture
def disk_events(monkeypatch):
    """What reaches the disk, in order: ("fsync", path) for every os.fsync (the real fsync
    still runs: the wrapper only reads which file an fd is, from /proc) and ("rename", src,
    dst) for the renames that publish. A power cut cannot be staged in a test; the order
    of these calls on a real file system is what makes one harmless (see store.commit)."""
    events: list[tuple] = []
    fsync, rename, replace, exchange = os.fsync, os.rename, os.replace, store._rename_exchange

    def record_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recorder(name, real):
        def record(src, dst, *args, **kwargs):
            result = real(src, dst, *args, **kwargs)
            if result is not False:  # an exchange the file system refused did nothing
                events.append((name, str(src), str(dst)))
            return result

        return record

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "rename", recorder("rename", rename))
    monkeypatch.setattr(os, "replace", recorder("rename", replace))
    monkeypatch.setattr(store, "_rename_exchange", recorder("rename", exchange))
    return events


def assert_durable_publish(events, files, staging, target):
    """Each file fsynced, then the staging folder, then the rename of staging onto target,
    then target's parent: in that order."""
    fsyncs = [e[1] for e in events if e[0] == "fsync"]
    order = [e for e in events if e[0] == "fsync" or e[1:] == (str(staging), str(target))]
    publish = order.index(("rename", str(staging), str(target)))
    before = [e[1] for e in order[:publish]]
    assert {str(staging / name) for name in files} <= set(before)
    assert before[-1] == str(staging), "the staging folder is fsynced last, after its files"
    assert order[publish + 1 :] == [("fsync", str(target.parent))]
    assert fsyncs.count(str(target.parent)) == 1


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_commit_fsyncs_files_staging_and_parent_around_the_swap(
    tmp_path, monkeypatch, disk_events, exchange
):
    corpus_dir = tmp_path / "toy"
    write(corpus_dir)  # first publish: a plain rename
    files = (CORPUS_FILE, DOCUMENTS_FILE, MANIFEST_FILE)
    first = next(e for e in disk_events if e[0] == "rename" and e[2] == str(corpus_dir))
    assert_durable_publish(disk_events, files, Path(first[1]), corpus_dir)

    (corpus_dir / "raw").mkdir()
    (corpus_dir / "raw" / "cached.body").write_bytes(b"cache")
    if not exchange:
        monkeypatch.setattr(store, "_libc_function", lambda name: None)  # no renameat2
    disk_events.clear()
    write(corpus_dir, [Document("a new corpus", "s")])  # second publish: over the first
    swap = next(e for e in disk_events if e[0] == "rename" and e[2] == str(corpus_dir))
    staging = Path(swap[1])
    assert_durable_publish(disk_events, files, staging, corpus_dir)
    # raw/ moved into the staging folder before that folder was fsynced
    moved = disk_events.index(("rename", str(corpus_dir / "raw"), str(staging / "raw")))
    assert moved < disk_events.index(("fsync", str(staging)))
    assert (corpus_dir / CORPUS_FILE).read_text() == "a new corpus"
    assert (corpus_dir / "raw" / "cached.body").read_bytes() == b"cache"


def test_save_checkpoint_fsyncs_the_file_then_renames_then_fsyncs_the_folder(tmp_path, disk_events):
    from training.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "run" / "last.pt"
    for step in (1, 2):  # a new name, then over an existing checkpoint
        disk_events.clear()
        save_checkpoint(path, {"step": step})
        (rename,) = [e for e in disk_events if e[0] == "rename"]
        tmp, dst = rename[1:]
        assert dst == str(path) and Path(tmp).parent == path.parent
        assert disk_events == [("fsync", tmp), rename, ("fsync", str(path.parent))]
        assert load_checkpoint(path)["step"] == step
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]

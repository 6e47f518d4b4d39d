"""training/data.py: vocabulary, streamed encoding, cache, splits."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from training import data as data_mod
from training.data import document_split, encode_text, prepare_dataset
from training.errors import TrainingError


def test_encodes_shakespeare_with_sorted_code_point_vocab(
    trainer_home, write_text, shakespeare_text
):
    text = shakespeare_text[:20000]
    path = write_text("shk.txt", text)
    ds = prepare_dataset(path)
    assert ds.vocab == sorted(set(text))
    assert ds.ids.dtype == np.uint16
    assert ds.decode(ds.ids) == text
    assert encode_text({c: i for i, c in enumerate(ds.vocab)}, "First") == [
        ds.vocab.index(c) for c in "First"
    ]
    assert ds.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.name == "shk"


def test_chinese_and_characters_outside_the_bmp(trainer_home, write_text, sanguo_text):
    text = sanguo_text[:30000] + "😀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𠀁 " * 3
    ds = prepare_dataset(write_text("mixed.txt", text))
    assert len(ds.vocab) > 1500
    assert {"😀", "𝔘", "𠀁", "曹"} <= set(ds.vocab)
    assert ds.decode(ds.ids) == text
    assert ds.ids.dtype == np.uint16


def test_vocabulary_beyond_uint16_uses_uint32(trainer_home, write_text):
    # 70,000 distinct code points: all of CJK Ext. B plus the BMP's CJK block and more.
    points = [cp for cp in range(0x4E00, 0x9FFF)] + list(range(0x20000, 0x2A6DF))
    points += list(range(0x30000, 0x30000 + 70000 - len(points)))
    text = "".join(map(chr, points))
    ds = prepare_dataset(write_text("huge_vocab.txt", text))
    assert len(ds.vocab) == 70000
    assert ds.ids.dtype == np.uint32
    assert ds.decode(ds.ids[-5:]) == text[-5:]
    assert int(ds.ids.max()) == 69999


def test_characters_split_across_chunks_decode_intact(trainer_home, write_text, monkeypatch):
    monkeypatch.setattr(data_mod, "CHUNK_BYTES", 7)  # every multi-byte char straddles some chunk
    text = "aé€😀曹" * 50 + "end"
    ds = prepare_dataset(write_text("straddle.txt", text))
    assert ds.decode(ds.ids) == text


@pytest.mark.parametrize("chunk", [5, 1 << 20])
def test_invalid_utf8_names_file_and_byte_offset(trainer_home, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(data_mod, "CHUNK_BYTES", chunk)
    raw = "héllo wörld €".encode() + b"\xe2\x82" + b"x tail"  # truncated euro sign
    path = tmp_path / "bad.txt"
    path.write_bytes(raw)
    expected = len("héllo wörld €".encode())
    with pytest.raises(TrainingError) as err:
        prepare_dataset(path)
    assert f"{path} is not valid UTF-8" in str(err.value)
    assert f"offset {expected}" in str(err.value)
    assert not list((trainer_home / "data" / ".cache" / "encoded").glob("*"))  # nothing cached


def test_cache_is_reused_by_digest(trainer_home, write_text, shakespeare_text):
    path = write_text("shk.txt", shakespeare_text[:5000])
    messages = []
    first = prepare_dataset(path, progress=messages.append)
    meta = trainer_home / "data" / ".cache" / "encoded" / first.digest / "meta.json"
    assert json.loads(meta.read_text())["num_chars"] == 5000
    assert len(messages) == 1
    second = prepare_dataset(path, progress=messages.append)
    assert len(messages) == 1  # no second encoding
    assert np.array_equal(first.ids, second.ids)
    path.write_text(shakespeare_text[:5001], encoding="utf-8")
    third = prepare_dataset(path, progress=messages.append)
    assert third.digest != first.digest and len(messages) == 2


def test_damaged_cache_is_reported(trainer_home, write_text):
    path = write_text("t.txt", "hello world\n" * 50)
    ds = prepare_dataset(path)
    ids_file = trainer_home / "data" / ".cache" / "encoded" / ds.digest / "ids.bin"
    ids_file.write_bytes(ids_file.read_bytes()[:-10])
    with pytest.raises(TrainingError, match="damaged"):
        prepare_dataset(path)


def test_tail_split_fractions(trainer_home, write_text):
    path = write_text("t.txt", "abcdefghij" * 1000)
    ds = prepare_dataset(path)
    assert ds.splits == {"train": [(0, 9000)], "val": [(9000, 9500)], "test": [(9500, 10000)]}
    ds = prepare_dataset(path, val_fraction=0.1, test_fraction=0.0)
    assert ds.splits == {"train": [(0, 9000)], "val": [(9000, 10000)], "test": []}
    with pytest.raises(TrainingError, match="val_fraction"):
        prepare_dataset(path, val_fraction=0.6, test_fraction=0.5)


def write_corpus_folder(folder, docs: list[str], sep: str = "\n\x1e\n"):
    folder.mkdir()
    rows, pos = [], 0
    for i, doc in enumerate(docs):
        if i:
            pos += len(sep)
        rows.append({"id": i, "source": f"doc{i}", "char_start": pos, "char_end": pos + len(doc)})
        pos += len(doc)
    (folder / "corpus.txt").write_text(sep.join(docs), encoding="utf-8")
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / "documents.jsonl").write_text(lines, encoding="utf-8")
    return rows


def test_corpus_folder_splits_by_whole_documents(trainer_home, tmp_path):
    docs = [f"document {i} " + "word " * (20 + i % 7) for i in range(60)]
    rows = write_corpus_folder(tmp_path / "essays", docs)
    ds = prepare_dataset(tmp_path / "essays", val_fraction=0.1, test_fraction=0.1)
    assert ds.name == "essays" and ds.num_documents == 60
    covered = sorted(r for ranges in ds.splits.values() for r in ranges)
    assert covered[0][0] == 0 and covered[-1][1] == ds.num_chars
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))  # no gap/overlap
    starts = {r["char_start"] for r in rows}
    for split in ("val", "test"):
        assert all(a in starts for a, _ in ds.splits[split])  # each begins at a document
        assert 0.1 <= ds.split_size(split) / ds.num_chars < 0.15
    again = prepare_dataset(tmp_path / "essays", val_fraction=0.1, test_fraction=0.1)
    assert again.splits == ds.splits
    # val holds whole documents, each with the separator that follows it
    val_text = ds.decode(ds.split_ids("val"))
    assert val_text.count("document ") == val_text.count("\x1e") + (val_text[-1] != "\n")


def test_too_few_documents_fall_back_to_the_tail(trainer_home, tmp_path):
    write_corpus_folder(tmp_path / "one", ["a single long document " * 40])
    ds = prepare_dataset(tmp_path / "one")
    n = ds.num_chars
    assert ds.splits["test"] == [(n - round(n * 0.05), n)]


def test_document_split_every_split_gets_a_document():
    splits = document_split(300, [0, 100, 200], ["a", "b", "c"], 0.01, 0.01)
    assert sorted(len(v) for v in splits.values()) == [1, 1, 1]
    assert document_split(300, [0, 150], ["a", "b"], 0.01, 0.01) is None


def test_folder_without_corpus_txt(trainer_home, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="without corpus.txt"):
        prepare_dataset(tmp_path / "empty")


ENCODE_IN_SUBPROCESS = textwrap.dedent(
    """
    import sys, tracemalloc
    from training.data import prepare_dataset
    tracemalloc.start()  # numpy reports its buffers to tracemalloc too
    ds = prepare_dataset(sys.argv[1], cache_dir=sys.argv[2])
    print(tracemalloc.get_traced_memory()[1], len(ds.ids), len(ds.vocab))
    """
)


def test_encoding_memory_stays_bounded(tmp_path, shakespeare_text, sanguo_text):
    """A ~48 MB corpus encodes with a peak allocation far below its size (chunked streaming)."""
    block = (shakespeare_text[:900_000] + sanguo_text[:100_000]).encode("utf-8")
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        for _ in range(48 * 2**20 // len(block)):
            f.write(block)
    size = big.stat().st_size
    out = subprocess.run(
        [sys.executable, "-c", ENCODE_IN_SUBPROCESS, str(big), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    peak, num_chars, vocab = map(int, out)
    assert num_chars > 40_000_000 and vocab > 1000
    assert peak < size / 6, f"peak allocation {peak / 2**20:.1f} MiB for {size / 2**20:.0f} MiB"

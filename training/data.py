"""Corpus -> vocabulary + encoded ids (memmap) + train/val/test ranges.

Encoding streams the file in fixed-size chunks, three passes at most: sha256 of the bytes
(the cache key), the set of code points (the vocabulary), then the ids. Memory stays
bounded by the chunk size whatever the corpus size; nothing holds the corpus as one string.

On-disk format, one folder per corpus digest, `<cache_dir>/<sha256>/`:
    ids.bin    the corpus as little-endian uint16 ids (uint32 when the vocabulary has more
               than 65535 symbols), one per code point, in file order
    meta.json  {"format": "charflow-encoded", "version": 1, "digest", "dtype", "num_chars",
                "vocab": [code points, ascending]}
The folder is built under a temporary name and renamed into place, so a crash never leaves
a half-written cache behind.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charflow.files import file_sha256
from charflow.paths import charflow_home
from training.errors import TrainingError

CHUNK_BYTES = 1 << 19  # bounds memory: a chunk makes at most ~4 MB of transient arrays
FORMAT = "charflow-encoded"
VERSION = 1
SPLITS = ("train", "val", "test")
Ranges = list[tuple[int, int]]


@dataclass
class Dataset:
    name: str
    source: Path
    digest: str
    vocab: list[str]
    ids: np.ndarray
    splits: dict[str, Ranges]
    num_documents: int | None

    @property
    def num_chars(self) -> int:
        return len(self.ids)

    def split_ids(self, split: str) -> np.ndarray:
        """The split's ids in corpus order: a memmap view for one range, else a copy."""
        parts = [self.ids[a:b] for a, b in self.splits[split]]
        if not parts:
            return self.ids[:0]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def split_size(self, split: str) -> int:
        return sum(b - a for a, b in self.splits[split])

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def encode_text(index: dict[str, int], text: str) -> list[int]:
    """ids of `text`; TrainingError listing every character the vocabulary lacks."""
    unknown = sorted({ch for ch in text if ch not in index})
    if unknown:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        raise TrainingError(f"characters not in the vocabulary: {shown}{more}")
    return [index[ch] for ch in text]


def corpus_name(source: str | Path) -> str:
    """A corpus folder's name, or a plain file's stem."""
    source = Path(source)
    return source.name if source.is_dir() else source.stem


def corpus_manifest(source: str | Path) -> dict | None:
    """A corpus folder's manifest.json (what the corpus declares about itself, such as a
    symbol alphabet), or None for a plain text file or a folder without one.

    A manifest that is there but unreadable is an error rather than None: silently
    treating a symbol corpus as plain text would drop its metrics without a word.
    """
    path = Path(source) / "manifest.json"
    if not Path(source).is_dir() or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainingError(f"{path} is not readable JSON ({type(err).__name__})") from None
    if not isinstance(manifest, dict):
        raise TrainingError(f"{path} is not a JSON object")
    return manifest


def default_cache_dir() -> Path:
    return charflow_home() / "data" / ".cache" / "encoded"


def prepare_dataset(
    source: str | Path,
    cache_dir: str | Path | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    *,
    progress=None,
) -> Dataset:
    """Encode `source` (a corpus folder or a UTF-8 text file), reusing the cache by digest.

    `progress`, if given, is told when a corpus was encoded (not before: bad input gets
    one line, the error).
    """
    source = Path(source)
    text_path, docs_path = _locate(source)
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise TrainingError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) "
            "and leave room for training data"
        )
    digest = file_sha256(text_path)
    folder = Path(cache_dir or default_cache_dir()) / digest
    if not (folder / "meta.json").exists():
        started = time.perf_counter()
        _encode_to_cache(text_path, digest, folder)
        if progress:
            seconds = time.perf_counter() - started
            progress(f"encoded {text_path} in {seconds:.1f} s; cached under {folder}")
    ids, vocab = _open_cache(folder, digest)
    splits, num_docs = _split(len(ids), docs_path, val_fraction, test_fraction)
    return Dataset(corpus_name(source), source, digest, vocab, ids, splits, num_docs)


def _locate(source: Path) -> tuple[Path, Path | None]:
    if source.is_dir():
        text_path = source / "corpus.txt"
        if not text_path.is_file():
            raise TrainingError(f"{source} is a folder without corpus.txt (not a corpus folder)")
        docs = source / "documents.jsonl"
        return text_path, docs if docs.is_file() else None
    if not source.exists():
        raise TrainingError(f"no such file or corpus folder: {source}")
    if source.stat().st_size == 0:
        raise TrainingError(f"{source} is empty")
    return source, None


def _decoded_chunks(path: Path):
    """Yield the file as str chunks; invalid UTF-8 -> TrainingError with the byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes fed to the decoder so far
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])  # bytes of a split character from last chunk
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                at = offset - pending + err.start
                raise TrainingError(
                    f"{path} is not valid UTF-8: byte 0x{err.object[err.start]:02x} "
                    f"at offset {at} ({err.reason})"
                ) from None
            offset += len(data)
            if text:
                yield text
            if not data:
                return


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _encode_to_cache(text_path: Path, digest: str, folder: Path) -> None:
    seen: set[str] = set()
    num_chars = 0
    for text in _decoded_chunks(text_path):
        seen.update(text)
        num_chars += len(text)
    if num_chars == 0:
        raise TrainingError(f"{text_path} is empty")
    vocab_cp = np.array(sorted(ord(ch) for ch in seen), dtype=np.uint32)
    dtype = np.uint16 if len(vocab_cp) <= 65535 else np.uint32
    # code point -> id table: at most 0x110000 entries (4.4 MB), one gather per chunk
    lookup = np.zeros(int(vocab_cp[-1]) + 1, dtype=dtype)
    lookup[vocab_cp] = np.arange(len(vocab_cp), dtype=dtype)

    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with open(staging / "ids.bin", "wb") as out:
            for text in _decoded_chunks(text_path):
                lookup[_code_points(text)].tofile(out)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "digest": digest,
            "dtype": np.dtype(dtype).name,
            "num_chars": num_chars,
            "vocab": vocab_cp.tolist(),
        }
        (staging / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(staging, folder)
        except OSError:  # another process cached the same digest first
            if not (folder / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _open_cache(folder: Path, digest: str) -> tuple[np.ndarray, list[str]]:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if (meta["format"], meta["version"], meta["digest"]) != (FORMAT, VERSION, digest):
            raise ValueError("foreign format or digest")
        ids = np.memmap(folder / "ids.bin", dtype=meta["dtype"], mode="r")
        if len(ids) != meta["num_chars"]:
            raise ValueError("length differs from its metadata")
    except (OSError, ValueError, KeyError) as err:
        raise TrainingError(
            f"encoded cache {folder} is damaged ({type(err).__name__}); delete it to rebuild"
        ) from None
    return ids, [chr(cp) for cp in meta["vocab"]]


def _split(
    num_chars: int, docs_path: Path | None, val_fraction: float, test_fraction: float
) -> tuple[dict[str, Ranges], int | None]:
    if docs_path is None:
        return tail_split(num_chars, val_fraction, test_fraction), None
    starts, ids, groups = _document_starts(docs_path)
    grouped = any(g is not None for g in groups)
    splits = document_split(
        num_chars, starts, ids, val_fraction, test_fraction, groups if grouped else None
    )
    if splits is None and grouped:
        # A character split would cut through a group: part of it trained on, part held out.
        raise TrainingError(
            f"{docs_path}: {len(set(groups) - {None}) + groups.count(None)} split groups "
            f"(documents without one count alone) are too few for val_fraction "
            f"{val_fraction} and test_fraction {test_fraction}"
        )
    # Too few documents to give every wanted split one: fall back to the contiguous tail.
    return splits or tail_split(num_chars, val_fraction, test_fraction), len(starts)


def tail_split(num_chars: int, val_fraction: float, test_fraction: float) -> dict[str, Ranges]:
    n_test = round(num_chars * test_fraction)
    n_val = round(num_chars * val_fraction)
    train_end, val_end = num_chars - n_test - n_val, num_chars - n_test
    return {
        "train": [(0, train_end)],
        "val": [(train_end, val_end)] if n_val else [],
        "test": [(val_end, num_chars)] if n_test else [],
    }


def _document_starts(docs_path: Path) -> tuple[list[int], list[str], list[str | None]]:
    starts, ids, groups = [], [], []
    with open(docs_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                starts.append(int(doc["char_start"]))
                ids.append(str(doc.get("id", n)))
                group = doc.get("split_group")
                groups.append(None if group is None else str(group))
            except (ValueError, KeyError, TypeError):
                raise TrainingError(f"{docs_path}:{n}: not a document record") from None
    return starts, ids, groups


def document_split(
    num_chars: int,
    starts: list[int],
    doc_ids: list[str],
    val_fraction: float,
    test_fraction: float,
    groups: list[str | None] | None = None,
) -> dict[str, Ranges] | None:
    """Whole documents to val and test, picked in a fixed pseudo-random order (hash of id).

    A document's range runs to the next document's start, so the separator after it stays
    with it and the model learns where documents end. `groups` (documents.jsonl's
    `split_group`; None: a document of its own) keeps a group's documents in one split,
    picked by the hash of the group's name: rallies of one match are not independent, so
    none of a held-out match may be trained on. Returns None when there are too few
    documents (groups) to give each wanted split at least one and leave some for training.
    """
    n = len(starts)
    by_start = sorted(range(n), key=lambda i: starts[i])
    span = {}
    for k, i in enumerate(by_start):
        begin = 0 if k == 0 else starts[i]  # any text before the first document goes with it
        end = starts[by_start[k + 1]] if k + 1 < n else num_chars
        span[i] = (begin, end)
    owner = dict.fromkeys(range(n), "train")
    units: dict[tuple[str, str | int], list[int]] = {}  # what goes to a split as one
    for i in range(n):
        group = groups[i] if groups else None
        units.setdefault(("doc", i) if group is None else ("group", group), []).append(i)

    def shuffle_key(unit: tuple[str, str | int]) -> bytes:  # hash of the group or doc id
        kind, value = unit
        return hashlib.sha256((doc_ids[value] if kind == "doc" else value).encode()).digest()

    shuffled = iter(sorted(units, key=shuffle_key))
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        got = 0
        while got < fraction * num_chars:
            unit = next(shuffled, None)
            if unit is None:
                return None
            for i in units[unit]:
                owner[i] = split
                got += span[i][1] - span[i][0]
    if "train" not in owner.values():
        return None
    splits: dict[str, Ranges] = {s: [] for s in SPLITS}
    for i in by_start:
        ranges = splits[owner[i]]
        if ranges and ranges[-1][1] == span[i][0]:
            ranges[-1] = (ranges[-1][0], span[i][1])  # merge neighbours of the same split
        else:
            ranges.append(span[i])
    return splits

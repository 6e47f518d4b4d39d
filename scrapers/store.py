"""The corpus on disk: data/<name>/{corpus.txt, documents.jsonl, manifest.json, raw/}.

CorpusWriter streams documents into a staging folder next to the corpus (so a corpus of
hundreds of MB never sits in memory) and commits by swapping that folder into place. The
raw fetch cache (raw/) is carried over into the new folder. Until the swap the previous
corpus is untouched; a failed or killed run only leaves a staging folder, which the next
run removes (after taking back any raw cache it holds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
import os
import re
import shutil
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path

from charflow.processes import pid_alive
from charflow.version import code_version
from scrapers.registry import Document

# Documents are joined by a newline, U+001E RECORD SEPARATOR, newline: one character the
# model can learn as "end of document", and one no cleaned text contains (it is removed
# from documents). The trainer splits by the char offsets in documents.jsonl, not by this.
SEPARATOR = "\n\x1e\n"
SEPARATOR_BYTES = SEPARATOR.encode("utf-8")
CORPUS_FILE = "corpus.txt"
DOCUMENTS_FILE = "documents.jsonl"
MANIFEST_FILE = "manifest.json"
RAW_DIR = "raw"
STAGING_PREFIX = ".staging-"
# .staging-<corpus>-<pid>-<random>: the pid tells a killed run's folder from a live one's.
STAGING_NAME = re.compile(r"\.staging-(?P<name>.+)-(?P<pid>\d+)-[0-9a-f]{32}")
CORE_FIELDS = (
    "id",
    "source",
    "title",
    "date",
    "byte_start",
    "byte_end",
    "char_start",
    "char_end",
    "chars",
    "sha256",
)
# json.dumps(row, ensure_ascii=False), with the encoder built once rather than per row.
_JSON_ROW = json.JSONEncoder(ensure_ascii=False)
# Written corpus bytes between two calls to start_writeback().
WRITEBACK_BYTES = 8 << 20
# Manifest fields that differ between two runs even when they produced the same corpus.
VOLATILE_FIELDS = ("created_at", "code_version", "fetch")


def normalize_text(text: str) -> str:
    """NFC, Unix newlines, no separator characters, no leading/trailing blank lines.

    Text already in that form comes back unchanged; checking costs one scan per rule, and
    nothing for NFC on ASCII text (str.isascii() reads a flag)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x1e" in text:
        text = text.replace("\x1e", "")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)  # returns text itself when already NFC
    return text.strip("\n")


@functools.cache
def _libc_function(name: str):
    """A C library function Python does not wrap (Linux), through ctypes; None if absent."""
    libc_name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc_name, use_errno=True), name, None) if libc_name else None


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False if unsupported."""
    renameat2 = _libc_function("renameat2")
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL/ENOSYS/EOPNOTSUPP: the filesystem cannot do it
            return False
        raise OSError(errno, os.strerror(errno), str(a))
    return True


def start_writeback(f) -> None:
    """Have the kernel start writing a file's dirty pages to disk now, without waiting
    (Linux sync_file_range): the fsync before the commit then finds little left to do."""
    f.flush()
    sync_file_range = _libc_function("sync_file_range")
    if sync_file_range is not None:
        everything, write = ctypes.c_longlong(0), 2  # offset 0, length 0: to the end
        sync_file_range(f.fileno(), everything, everything, write)


def swap_into_place(staging: Path, target: Path) -> None:
    """Make `staging` be `target`; the old target ends up at `staging` (for removal).

    Durable when it returns: the parent folder is fsynced after the rename(s). The caller
    fsyncs what `staging` holds, and `staging` itself, before (CorpusWriter.commit)."""
    if not target.exists():
        os.rename(staging, target)
    elif not _rename_exchange(staging, target):
        # Fallback (no renameat2): two renames; the old corpus is only ever moved, never lost.
        aside = staging.with_name(staging.name + "-old")
        os.rename(target, aside)
        os.rename(staging, target)
        os.rename(aside, staging)
    fsync_dir(target.parent)


def fsync_dir(folder: Path) -> None:
    """fsync a folder: the names created, renamed or removed in it reach the disk (a rename
    is only durable once the folder holding the name is; POSIX leaves it to the caller)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _staging_owner(folder: Path, target: Path) -> int | None:
    """The pid that made a staging folder of `target` (None: not one of target's)."""
    match = STAGING_NAME.fullmatch(folder.name)
    if match is None or match["name"] != target.name:
        return None
    return int(match["pid"])


def recover_staging(target: Path) -> None:
    """Remove staging folders of killed runs, taking back a raw cache one of them holds.
    Folders of runs still alive (a concurrent ingest of the same corpus) are left alone."""
    for stale in sorted(target.parent.glob(f"{STAGING_PREFIX}*")):
        pid = _staging_owner(stale, target)
        if pid is None or (pid != os.getpid() and pid_alive(pid)):
            continue
        raw = stale / RAW_DIR
        if raw.is_dir() and not (target / RAW_DIR).exists():
            target.mkdir(parents=True, exist_ok=True)
            os.rename(raw, target / RAW_DIR)
        shutil.rmtree(stale, ignore_errors=True)


def read_manifest(corpus_dir: Path) -> dict | None:
    path = Path(corpus_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


class CorpusWriter:
    """Stream documents to data/<name>/ atomically.

    with CorpusWriter(Path("data/paulgraham")) as writer:
        writer.add(Document(...)); writer.skip(Skipped(...))
        manifest = writer.commit(name=..., source=..., options=...)

    Leaving the block without commit() (an exception) discards the staging folder.
    """

    def __init__(self, corpus_dir: Path):
        self.target = Path(corpus_dir)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        recover_staging(self.target)
        unique = f"{self.target.name}-{os.getpid()}-{uuid.uuid4().hex}"
        self.staging = self.target.parent / f"{STAGING_PREFIX}{unique}"
        self.staging.mkdir()
        # Open for the writer's lifetime; commit() or abort() closes them. Binary: each
        # document is encoded once, and those bytes are written and hashed.
        self._corpus = self._open(CORPUS_FILE)
        self._documents = self._open(DOCUMENTS_FILE)
        self._digest = hashlib.sha256()
        self._docs_digest = hashlib.sha256()
        self._vocab: set[str] = set()
        self._seen_ascii = b""  # the ASCII characters in _vocab, as bytes.translate deletes
        self.num_documents = 0
        self.chars = 0
        self.bytes = 0
        self._unsynced = 0  # bytes written since the last start_writeback()
        self.skipped: list[dict] = []
        self.committed = False
        self.unchanged = False

    def _open(self, name: str):
        return open(self.staging / name, "wb", buffering=1 << 20)  # noqa: SIM115

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.abort()

    def _write(self, data: bytes, chars: int) -> None:
        self._corpus.write(data)
        self._digest.update(data)
        self.bytes += len(data)
        self.chars += chars
        self._unsynced += len(data)
        if self._unsynced >= WRITEBACK_BYTES:
            start_writeback(self._corpus)
            self._unsynced = 0

    def _add_vocab(self, data: bytes) -> None:
        # Nearly every byte of most text is an ASCII character seen before: translate()
        # drops those in C, and only what is left (new or non-ASCII characters, still valid
        # UTF-8 since multi-byte sequences hold no ASCII byte) becomes a set of characters.
        rest = data.translate(None, self._seen_ascii)
        if rest:
            new = set(rest.decode("utf-8")) - self._vocab
            if new:
                self._vocab |= new
                self._seen_ascii += "".join(c for c in new if c.isascii()).encode("ascii")

    def add(self, doc: Document) -> dict | None:
        """Append one document; returns its documents.jsonl row (None if empty, then skipped)."""
        text = normalize_text(doc.text)
        if not text or text.isspace():
            self.skip(doc.source, "empty after cleaning")
            return None
        clash = set(doc.meta).intersection(CORE_FIELDS)
        if clash:
            raise ValueError(f"document meta may not override {sorted(clash)} ({doc.source})")
        data = text.encode("utf-8")
        if self.num_documents:
            self._write(SEPARATOR_BYTES, len(SEPARATOR))
        byte_start, char_start = self.bytes, self.chars
        self._write(data, len(text))
        row = {
            "id": self.num_documents,
            "source": doc.source,
            "title": doc.title,
            "date": doc.date,
            "byte_start": byte_start,
            "byte_end": self.bytes,
            "char_start": char_start,
            "char_end": self.chars,
            "chars": self.chars - char_start,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        row.update(doc.meta)
        line = (_JSON_ROW.encode(row) + "\n").encode("utf-8")
        self._documents.write(line)
        self._docs_digest.update(line)
        self._add_vocab(data)
        self.num_documents += 1
        return row

    def skip(self, source: str, reason: str) -> None:
        self.skipped.append({"source": source, "reason": reason})

    def commit(self, **fields) -> dict:
        """Finish the files, write manifest.json and swap the folder into place.

        If the new corpus is identical to the one on disk (same text, documents, skips and
        options), nothing is rewritten and the existing manifest is returned.
        """
        self._corpus.close()
        self._documents.close()
        if self.num_documents > 1:
            self._vocab.update(SEPARATOR)
        manifest = {
            **fields,
            "documents": self.num_documents,
            "skipped": self.skipped,
            "chars": self.chars,
            "bytes": self.bytes,
            "vocab_size": len(self._vocab),
            "separator": SEPARATOR,
            "corpus_sha256": self._digest.hexdigest(),
            "documents_sha256": self._docs_digest.hexdigest(),
            "code_version": code_version(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if "cleaning" in manifest:  # what cleaning removed (scrapers/ingest.py): long, last
            manifest["cleaning"] = manifest.pop("cleaning")
        previous = read_manifest(self.target)
        if previous is not None and _same_corpus(previous, manifest, self.target):
            self.abort()
            self.committed = self.unchanged = True
            return previous
        tmp = self.staging / (MANIFEST_FILE + ".tmp")
        tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.staging / MANIFEST_FILE)
        # Publishing is durable, in this order. (1) The files' data is on disk before the
        # rename that makes them the corpus: otherwise a power cut could keep the rename and
        # lose the data (xfs, btrfs and ext4 without data=ordered may), leaving an empty or
        # torn corpus.txt under the published name. (2) The staging folder's entries (the
        # files' names, raw/ moved in) before it is renamed. (3) The parent after the swap
        # (in swap_into_place): the new name is on disk before commit() returns and the
        # manifest is reported. A crash anywhere before (3) leaves the previous corpus whole
        # (the swap is one atomic rename); after it, the new one. tests/test_store.py checks
        # the order of these calls on a real file system; a power cut itself cannot be
        # staged in a test.
        _fsync_dir_files(self.staging)
        raw = self.target / RAW_DIR
        if raw.is_dir():
            os.rename(raw, self.staging / RAW_DIR)  # the cache moves with the swap, not copied
        fsync_dir(self.staging)
        swap_into_place(self.staging, self.target)
        shutil.rmtree(self.staging, ignore_errors=True)  # now holds the previous corpus
        self.committed = True
        return manifest

    def abort(self) -> None:
        for f in (self._corpus, self._documents):
            f.close()
        raw = self.staging / RAW_DIR
        if raw.is_dir() and not (self.target / RAW_DIR).exists():
            os.rename(raw, self.target / RAW_DIR)
        shutil.rmtree(self.staging, ignore_errors=True)


def _same_corpus(previous: dict, new: dict, target: Path) -> bool:
    strip = lambda m: {k: v for k, v in m.items() if k not in VOLATILE_FIELDS}  # noqa: E731
    if strip(previous) != strip(new):
        return False
    return all((target / name).is_file() for name in (CORPUS_FILE, DOCUMENTS_FILE))


def _fsync_dir_files(folder: Path) -> None:
    # The data must be on disk before the rename makes it the corpus.
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())

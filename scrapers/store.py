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
import hashlib
import json
import os
import re
import shutil
import subprocess
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path

from scrapers.registry import Document

# Documents are joined by a newline, U+001E RECORD SEPARATOR, newline: one character the
# model can learn as "end of document", and one no cleaned text contains (it is removed
# from documents). The trainer splits by the char offsets in documents.jsonl, not by this.
SEPARATOR = "\n\x1e\n"
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
# Manifest fields that differ between two runs even when they produced the same corpus.
VOLATILE_FIELDS = ("created_at", "code_version", "fetch")


def code_version() -> str:
    """Git short sha of the checkout (with "-dirty" if modified), else the package version."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if sha:
            return sha
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("charflow")
    except PackageNotFoundError:
        return "unknown"


def normalize_text(text: str) -> str:
    """NFC, Unix newlines, no separator characters, no leading/trailing blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x1e", "")
    return unicodedata.normalize("NFC", text).strip("\n")


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
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


def swap_into_place(staging: Path, target: Path) -> None:
    """Make `staging` be `target`; the old target ends up at `staging` (for removal)."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _rename_exchange(staging, target):
        return
    # Fallback (no renameat2): two renames; the old corpus is only ever moved, never lost.
    aside = staging.with_name(staging.name + "-old")
    os.rename(target, aside)
    os.rename(staging, target)
    os.rename(aside, staging)


def _staging_owner(folder: Path, target: Path) -> int | None:
    """The pid that made a staging folder of `target` (None: not one of target's)."""
    match = STAGING_NAME.fullmatch(folder.name)
    if match is None or match["name"] != target.name:
        return None
    return int(match["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_staging(target: Path) -> None:
    """Remove staging folders of killed runs, taking back a raw cache one of them holds.
    Folders of runs still alive (a concurrent ingest of the same corpus) are left alone."""
    for stale in sorted(target.parent.glob(f"{STAGING_PREFIX}*")):
        pid = _staging_owner(stale, target)
        if pid is None or (pid != os.getpid() and _alive(pid)):
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        # Open for the writer's lifetime; commit() or abort() closes them.
        self._corpus = self._open(CORPUS_FILE)
        self._documents = self._open(DOCUMENTS_FILE)
        self._digest = hashlib.sha256()
        self._docs_digest = hashlib.sha256()
        self._vocab: set[str] = set()
        self.num_documents = 0
        self.chars = 0
        self.bytes = 0
        self.skipped: list[dict] = []
        self.committed = False
        self.unchanged = False

    def _open(self, name: str):
        return open(self.staging / name, "w", encoding="utf-8", newline="\n")  # noqa: SIM115

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.abort()

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        self._corpus.write(text)
        self._digest.update(data)
        self.bytes += len(data)
        self.chars += len(text)

    def add(self, doc: Document) -> dict | None:
        """Append one document; returns its documents.jsonl row (None if empty, then skipped)."""
        text = normalize_text(doc.text)
        if not text.strip():
            self.skip(doc.source, "empty after cleaning")
            return None
        if self.num_documents:
            self._write(SEPARATOR)
        byte_start, char_start = self.bytes, self.chars
        self._write(text)
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
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        }
        clash = set(doc.meta) & set(CORE_FIELDS)
        if clash:
            raise ValueError(f"document meta may not override {sorted(clash)} ({doc.source})")
        row.update(doc.meta)
        line = json.dumps(row, ensure_ascii=False) + "\n"
        self._documents.write(line)
        self._docs_digest.update(line.encode("utf-8"))
        self._vocab.update(text)
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
        previous = read_manifest(self.target)
        if previous is not None and _same_corpus(previous, manifest, self.target):
            self.abort()
            self.committed = self.unchanged = True
            return previous
        tmp = self.staging / (MANIFEST_FILE + ".tmp")
        tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.staging / MANIFEST_FILE)
        _fsync_dir_files(self.staging)
        raw = self.target / RAW_DIR
        if raw.is_dir():
            os.rename(raw, self.staging / RAW_DIR)  # the cache moves with the swap, not copied
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

"""kubernetes-go: the Go sources of a code base, one document per file.

Source: a git URL, cloned shallowly at a pinned ref into data/<name>/raw/git/ (kept as the
cache for the next run), or a local directory. The tree is walked in sorted order without
ever reading more than one file at a time, and without following symlinks: a link's target
is either outside the tree (never read) or inside it (taken where it lies, once).

    charflow ingest kubernetes-go                                   # kubernetes @ DEFAULT_REF
    charflow ingest kubernetes-go --option ref=v1.30.0 --option tests=false
    charflow ingest kubernetes-go --source /usr/share/gocode/src/k8s.io/utils
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from cleaners.gosource import (
    EXCLUDED_DIRS,
    control_character,
    document_text,
    generated_by_header,
    generated_by_name,
    go_text,
    hidden,
    is_binary,
    is_nfc,
)
from cleaners.removed import Removed
from scrapers.errors import IngestError
from scrapers.registry import (
    CleaningStats,
    CorpusSpec,
    Document,
    GatherContext,
    RawItem,
    Skipped,
    register,
)

DEFAULT_REPO = "https://github.com/kubernetes/kubernetes"
DEFAULT_REF = "v1.31.0"  # a release tag: the same tree on every run
OPTIONS = {
    "ref": DEFAULT_REF,  # branch, tag or full commit sha (git sources only)
    "tests": True,  # take *_test.go files
    "include_generated": False,
    "include_vendor": False,
    "include_third_party": False,
    "include_testdata": False,
    "include_hidden": False,
}
_GIT_SCHEMES = {"http", "https", "git", "ssh", "file"}
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")  # git@github.com:owner/repo
_SHA = re.compile(r"^[0-9a-f]{40}$")
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
# The corpus is NFC, and normalizing a Go file would change its code (string literals, a
# table of runes): such a file is left out whole rather than taken changed.
NOT_NFC = "not NFC (Unicode normalization would change its code); not taken"


def is_git_url(source: str) -> bool:
    return urlsplit(source).scheme in _GIT_SCHEMES or bool(_SCP_LIKE.match(source))


# -- git ----------------------------------------------------------------------------------


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, **_GIT_ENV},
            check=False,
        )
    except FileNotFoundError:
        raise IngestError("git is not installed; it is needed to clone a git source") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise IngestError(f"git {args[0]} failed: {why}")
    return done.stdout.strip()


def _remote_shas(url: str, ref: str) -> set[str] | None:
    """Commits `ref` names on the remote (tag objects peeled); None if unreachable."""
    try:
        out = _git("ls-remote", url, ref, f"{ref}^{{}}")
    except IngestError:
        return None
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def clone(url: str, ref: str, cache_dir: Path, log=print) -> tuple[Path, str]:
    """Shallow checkout of url at ref under cache_dir; reused while ref still names it.

    Returns (checkout folder, commit sha). The clone goes to a temporary folder first and
    is renamed into place, so an interrupted clone never passes for a finished one.
    """
    key = hashlib.sha256(f"{url}\n{ref}".encode()).hexdigest()[:16]
    checkout, record = cache_dir / key, cache_dir / f"{key}.json"
    if checkout.is_dir() and record.is_file():
        cached = json.loads(record.read_text(encoding="utf-8"))
        remote = {ref} if _SHA.match(ref) else _remote_shas(url, ref)
        if remote is None or cached["commit"] in remote:
            log(f"using the clone of {url} at {ref} in {checkout}")
            return checkout, cached["commit"]
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(".clone-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = cache_dir / f".clone-{uuid.uuid4().hex}"
    log(f"cloning {url} at {ref} (shallow) into {checkout}")
    try:
        if _SHA.match(ref):  # a commit is fetched by id; --branch takes only names
            _git("init", "--quiet", str(tmp))
            _git("fetch", "--quiet", "--depth", "1", url, ref, cwd=tmp)
            _git("-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD", cwd=tmp)
        else:
            shallow = ("--quiet", "--depth", "1", "--single-branch", "--branch", ref)
            _git("clone", *shallow, url, str(tmp))
        commit = _git("rev-parse", "HEAD", cwd=tmp)
        if checkout.exists():
            shutil.rmtree(checkout)
        os.rename(tmp, checkout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record.write_text(json.dumps({"url": url, "ref": ref, "commit": commit}) + "\n", "utf-8")
    return checkout, commit


# -- the walk -----------------------------------------------------------------------------


def _symlink_reason(link: Path, root: Path) -> str:
    target = Path(os.path.realpath(link))
    if not target.is_relative_to(root):
        return f"symlink out of the tree (to {target}); not followed"
    if link.parent.resolve().is_relative_to(target):
        return "symlink loop (points at an enclosing folder); not followed"
    return f"symlink to {target.relative_to(root).as_posix()} in the tree; taken there, not here"


def _excluded(name: str, options: dict) -> str | None:
    """Why a folder is left out (None: walk it)."""
    flag = EXCLUDED_DIRS.get(name)
    if flag and not options[flag]:
        return f"excluded folder (--option {flag}=true takes it)"
    if hidden(name) and not options["include_hidden"]:
        return "hidden folder (--option include_hidden=true takes it)"
    return None


def walk_go_files(root: Path, options: dict) -> Iterator[tuple[str, Path] | Skipped]:
    """(relative path, file) for each *.go file to take, in sorted path order, or Skipped.

    Streams: holds only the entries of the folders on the current path, never file data.
    """
    root = Path(os.path.realpath(root))
    if not root.is_dir():
        raise IngestError(f"not a directory: {root}")
    opts = {**OPTIONS, **options}
    stack = [_listing(root, "")]  # one iterator of sorted entries per open folder
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif isinstance(entry, Skipped):
            yield entry
        else:
            rel = entry.prefix + entry.name
            why = _why_not(entry, root, opts)
            if why:
                yield Skipped(rel + ("/" if entry.is_folder and not entry.is_link else ""), why)
            elif why is None and entry.is_folder:
                stack.append(_listing(entry.folder / entry.name, rel + "/"))
            elif why is None:
                yield rel, entry.folder / entry.name  # cheaper than Path(DirEntry.path)


class _Entry(NamedTuple):
    folder: Path
    prefix: str
    name: str
    is_link: bool
    is_folder: bool  # for a link: whether it points at a folder
    is_go: bool


def _listing(folder: Path, prefix: str) -> Iterator[_Entry | Skipped]:
    """The folder's entries that matter (folders, links, .go files), sorted by name."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        yield Skipped(prefix or "./", f"cannot list folder: {err.strerror}")
        return
    for e in entries:
        is_link, is_folder = e.is_symlink(), e.is_dir()
        is_go = e.name.endswith(".go") and (is_link or e.is_file())  # never a pipe or device
        if is_go or is_link or is_folder:
            yield _Entry(folder, prefix, e.name, is_link, is_folder, is_go)


def _why_not(entry: _Entry, root: Path, opts: dict) -> str | None:
    """Why an entry is not taken or walked: None takes it, "" drops it without a word
    (not Go, or a test file when asked for none), anything else is the recorded reason."""
    if entry.is_link:
        if entry.is_go or entry.is_folder:
            return _symlink_reason(entry.folder / entry.name, root)
        return ""
    if entry.is_folder:
        return _excluded(entry.name, opts)
    if not entry.is_go:
        return ""
    if hidden(entry.name) and not opts["include_hidden"]:
        return "hidden file (--option include_hidden=true takes it)"
    if entry.name.endswith("_test.go") and not opts["tests"]:
        return ""
    if generated_by_name(entry.name) and not opts["include_generated"]:
        return "generated (by its name); --option include_generated=true takes it"
    return None


# -- the corpus ---------------------------------------------------------------------------


def _source_prefix(base: str, ref: str | None) -> str:
    """What a file's path in the tree is appended to for its source: GitHub's blob URL
    when the repository is there."""
    if ref is None:
        return f"{base.rstrip('/')}/"
    if urlsplit(base).netloc == "github.com":
        return f"{base.removesuffix('.git').rstrip('/')}/blob/{ref}/"
    return f"{base}@{ref}:"


def gather(ctx: GatherContext) -> Iterator[RawItem | Skipped]:
    source = ctx.source
    commit = None
    if is_git_url(source):
        root, commit = clone(source, ctx.options["ref"], ctx.raw_dir / "git", ctx.log)
        ref = ctx.options["ref"]
    else:
        root = Path(source).expanduser()
        if not root.is_dir():
            raise IngestError(f"kubernetes-go source must be a git URL or a directory: {source}")
        ref = None
        source = str(root.resolve())
    prefix = _source_prefix(source, ref)
    meta = {"commit": commit} if commit else {}
    for found in walk_go_files(root, ctx.options):
        if isinstance(found, Skipped):
            yield Skipped(prefix + found.source, found.reason)
        else:
            rel, path = found
            yield RawItem(prefix + rel, path, {"path": rel, **meta})


def read_file(path: Path) -> bytes:
    """The file's bytes: one open, fstat and read, and never through a symlink (the walk
    skipped links; one swapped in since then fails with ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)  # one byte more than the file: tells it did not grow
        if len(data) == size:
            return data
        chunks = [data]  # it changed since fstat, or is over what one read returns (2 GB)
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_left_out(item: RawItem, rule: str, data: bytes, text: str | None) -> CleaningStats:
    """A whole file left out, as cleaning stats: its lines and characters (bytes for a
    binary file), its path as the example. (Files the walk leaves out, in excluded folders
    or generated by their name, are never read: they are counted only as skips.)"""
    removed = Removed()
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    chars = len(data) if text is None else len(text)
    removed.add(rule, item.meta.get("path", item.source), lines=lines, chars=chars)
    return CleaningStats(item.source, removed)


def clean(item: RawItem, options: dict) -> Iterator[Document | Skipped | CleaningStats]:
    try:
        data = read_file(item.path)
    except OSError as err:  # gone or replaced since the walk
        yield Skipped(item.source, f"cannot read: {err.strerror}")
        return
    if is_binary(data):
        yield _file_left_out(item, "binary file (bytes)", data, None)
        yield Skipped(item.source, "binary file (NUL bytes)")
        return
    if not options.get("include_generated") and generated_by_header(data):
        text = data.decode("utf-8", errors="replace")
        yield _file_left_out(item, "generated file (Code generated header)", data, text)
        yield Skipped(item.source, "generated (Code generated ... DO NOT EDIT. header)")
        return
    try:
        text = go_text(data)
    except UnicodeDecodeError as err:
        shown = data.decode("utf-8", errors="replace")
        yield _file_left_out(item, "file not UTF-8", data, shown)
        yield Skipped(item.source, f"not UTF-8 (invalid byte at offset {err.start})")
        return
    if not is_nfc(text):
        yield _file_left_out(item, "file not NFC", data, text)
        yield Skipped(item.source, NOT_NFC)
        return
    if (where := control_character(text)) is not None:  # would corrupt the corpus text
        yield _file_left_out(item, "file with a control character", data, text)
        yield Skipped(item.source, f"control character in the text ({where}); not taken")
        return
    path = item.meta["path"]
    yield Document(
        text=document_text(path, text), source=item.source, title=path, meta=dict(item.meta)
    )


SPEC = register(
    CorpusSpec(
        name="kubernetes-go",
        description="Go sources of Kubernetes (or any Go tree), one document per .go file",
        default_source=DEFAULT_REPO,
        gather=gather,
        clean=clean,
        training_defaults={"seq_len": 256},
        options=OPTIONS,
    )
)

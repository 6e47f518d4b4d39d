"""The registry of corpora: what each corpus is called, where it comes from, how it is cleaned.

A corpus is one module in `scrapers/` that calls `register(CorpusSpec(...))` at import time,
or an installed package exposing an entry point in the group "charflow.corpora" whose value
is a CorpusSpec, a module that registers one, or a callable returning one.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from cleaners.removed import RuleCount
from scrapers.errors import IngestError

if TYPE_CHECKING:
    from scrapers.fetch import Fetcher

ENTRY_POINT_GROUP = "charflow.corpora"
# Modules of the framework itself; every other module in scrapers/ is a corpus.
FRAMEWORK_MODULES = {
    "registry", "fetch", "index_pages", "store", "ingest", "mirror", "errors", "__main__",
    "near_duplicates",
}  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawItem:
    """Raw bytes on disk (the fetch cache under data/<name>/raw/ or a file in a local tree)."""

    source: str
    path: Path
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """Something the gatherer or cleaner did not turn into documents, and why."""

    source: str
    reason: str


@dataclass
class Document:
    text: str
    source: str
    title: str | None = None
    date: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CleaningStats:
    """What the cleaner left out of one raw item, by rule: a cleaner's `clean()` may yield
    one besides its Documents and Skipped. The ingest adds them up for the manifest
    (`cleaning.rules`): rule -> lines, chars, items, examples."""

    source: str
    rules: Mapping[str, RuleCount]


def _ignore(_: int) -> None:
    return None


@dataclass
class GatherContext:
    name: str
    source: str
    limit: int | None
    raw_dir: Path
    fetcher: Fetcher
    options: dict
    log: Callable[[str], None]
    # Tell the progress bar how many raw items to expect, once the gatherer knows.
    set_total: Callable[[int], None] = _ignore


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    description: str
    default_source: str  # URL (http/https/git) or local path
    gather: Callable[[GatherContext], Iterator[RawItem | Skipped]]  # network/filesystem
    # pure: bytes -> documents (and skips, and what cleaning left out: CleaningStats)
    clean: Callable[[RawItem, dict], Iterable[Document | Skipped | CleaningStats]]
    mirror_path: str | None = None  # source inside a mirror laid out like ../shared/corpora
    training_defaults: dict = field(default_factory=dict)  # TrainConfig overrides
    options: dict = field(default_factory=dict)  # corpus options and their defaults
    # Extra manifest.json fields that depend on the whole corpus (a symbol alphabet with its
    # counts): called once the documents are written, with the resolved options and the
    # Documents written, in order; what it returns goes to CorpusWriter.commit(**fields).
    manifest_fields: Callable[[dict, list[Document]], dict] | None = None


_REGISTRY: dict[str, CorpusSpec] = {}
_discovered = False
_discover_lock = threading.RLock()


def register(spec: CorpusSpec) -> CorpusSpec:
    """Add a corpus; re-registering the same name replaces it (module reloads in notebooks)."""
    if not spec.name or not spec.name.replace("-", "").replace("_", "").isalnum():
        raise IngestError(f"corpus name {spec.name!r} must be letters, digits, '-' or '_'")
    _REGISTRY[spec.name] = spec
    return spec


def _import_builtin() -> None:
    package = importlib.import_module("scrapers")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in FRAMEWORK_MODULES and not module.name.startswith("_"):
            importlib.import_module(f"scrapers.{module.name}")


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, CorpusSpec):
                obj = obj()
            if isinstance(obj, CorpusSpec):
                register(obj)
        except Exception as err:  # one broken plug-in must not hide every other corpus
            log.warning("corpus entry point %s = %s failed to load: %s", ep.name, ep.value, err)


def discover() -> None:
    """Import built-in corpus modules and entry points once per process."""
    global _discovered
    with _discover_lock:  # tasks on a thread pool may look corpora up concurrently
        if not _discovered:
            _import_builtin()
            _load_entry_points()
            _discovered = True


def list_corpora() -> list[CorpusSpec]:
    discover()
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def get_corpus(name: str) -> CorpusSpec:
    discover()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise IngestError(f"unknown corpus {name!r}; known corpora: {known}")
    return _REGISTRY[name]

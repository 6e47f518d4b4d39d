"""Prefect tasks around the library functions: the units of retry, caching and concurrency.

- `fetch_raw` is the network part of an ingest: retried as a whole, and every request it
  makes takes a slot of the global rate limit `host:<hostname>` (see flows/host_limits.py).
- `build_corpus` cleans the fetched bytes into data/<corpus>/. It is pure, so it is cached
  on its inputs (raw fingerprint, options, limit), the library code that cleans and the
  task's own source: an unchanged corpus is not cleaned again.
- `encode_corpus` is cached the same way on the corpus digest: not encoded again.
- `train_model` runs the trainer; `report_*` write the Prefect artifacts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.concurrency.sync import rate_limit

from charflow import paths
from charflow.files import file_sha256
from flows.host_limits import host_limit_name
from scrapers.errors import IngestError
from scrapers.fetch import Fetcher
from scrapers.ingest import cleaning_rows, gather_raw, resolve_options, write_corpus
from scrapers.registry import RawItem, Skipped, get_corpus
from scrapers.store import RAW_DIR, read_manifest
from training.config import TrainConfig
from training.units import bits

# The code that turns raw bytes into a corpus: part of build_corpus's cache key.
CORPUS_CODE = ("scrapers", "cleaners")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def data_root(data_dir: str | None = None) -> Path:
    return Path(data_dir).resolve() if data_dir else paths.data_dir()


@cache
def code_fingerprint(packages: tuple[str, ...] = CORPUS_CODE) -> str:
    """sha256 of the Python sources of `packages`: a changed cleaner invalidates the cache.
    The packages are found where Python imports them from, a checkout or site-packages."""
    digest = hashlib.sha256()
    for package in packages:
        (root,) = importlib.util.find_spec(package).submodule_search_locations
        for path in sorted(Path(root).rglob("*.py")):
            name = Path(package) / path.relative_to(root)
            digest.update(str(name).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    raw = "-".join(parts).lower()
    return "".join(c if c.isalnum() and c.isascii() else "-" for c in raw)


# -- fetching ------------------------------------------------------------------------------


class SharedHostLimit:
    """A Fetcher `before_request` hook: a slot of Prefect's global rate limit
    `host:<hostname>` before every request (retries and robots.txt included), shared by all
    flow runs on all workers. Hosts without such a limit keep only the fetcher's own pace."""

    def __init__(self) -> None:
        self._limited: dict[str, bool] = {}

    def __call__(self, host: str) -> None:
        name = host_limit_name(host)
        if name and self._has_limit(name):
            rate_limit(name)

    def _has_limit(self, name: str) -> bool:
        if name not in self._limited:
            from prefect.client.orchestration import get_client
            from prefect.exceptions import ObjectNotFound

            with get_client(sync_client=True) as client:
                try:
                    self._limited[name] = client.read_global_concurrency_limit_by_name(name).active
                except ObjectNotFound:
                    self._limited[name] = False
        return self._limited[name]


@dataclass
class RawSnapshot:
    """What one fetch gathered: raw items on disk (or skips) and a digest of all of it."""

    items: list[RawItem | Skipped]
    fingerprint: str
    fetch_stats: dict[str, int]

    @property
    def num_raw(self) -> int:
        return sum(isinstance(item, RawItem) for item in self.items)


# RawItem metadata that says how a fetch went, not what was fetched.
VOLATILE_META = frozenset({"from_cache", "fetched_at"})


def raw_fingerprint(items: list[RawItem | Skipped]) -> str:
    """sha256 over every item's source, bytes and metadata, and every skip's reason."""
    rows = [
        {
            "source": i.source,
            "sha256": file_sha256(i.path),
            "meta": {k: v for k, v in i.meta.items() if k not in VOLATILE_META},
        }
        if isinstance(i, RawItem)
        else {"skipped": i.source, "reason": i.reason}
        for i in items
    ]
    blob = json.dumps(rows, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@task(
    name="fetch-raw",
    task_run_name="fetch {corpus} from {source}",
    retries=2,
    retry_delay_seconds=[10, 60],
    cache_policy=NO_CACHE,  # the network is what changes
)
def fetch_raw(
    corpus: str, source: str, limit: int | None, options: dict, data_dir: Path
) -> RawSnapshot:
    """Gather up to `limit` raw items into data/<corpus>/raw/ (conditional requests, so an
    unchanged page costs a 304). Raises IngestError when nothing could be fetched."""
    logger = get_run_logger()
    spec = get_corpus(corpus)
    # Our own loopback mirror needs no pacing beyond its shared limit.
    loopback = urlsplit(source).hostname in LOOPBACK
    fetcher = Fetcher(rate_limit=None if loopback else 1.0, before_request=SharedHostLimit())
    with fetcher:
        gathered = gather_raw(
            spec, source, data_dir / corpus / RAW_DIR, fetcher, resolve_options(spec, options),
            limit=limit, max_raw=limit, log=logger.info,
        )  # fmt: skip
        items = list(gathered)
    snapshot = RawSnapshot(items, raw_fingerprint(items), dict(fetcher.stats))
    logger.info(
        "fetched %d raw items (%d skipped) from %s; requests: %s",
        snapshot.num_raw,
        len(items) - snapshot.num_raw,
        source,
        snapshot.fetch_stats or "none",
    )
    return snapshot


# -- cleaning (cached) -----------------------------------------------------------------------


@task(
    name="build-corpus",
    task_run_name="clean {corpus} into {data_dir}",
    # Keyed on everything that shapes the corpus except the item objects themselves
    # (their content is in raw_fingerprint); TASK_SOURCE covers this function's code.
    cache_policy=(INPUTS - "snapshot") + TASK_SOURCE,
    persist_result=True,
)
def build_corpus(
    corpus: str,
    source: str,
    limit: int | None,
    options: dict,
    data_dir: str,
    raw_fingerprint: str,
    code: str,
    snapshot: RawSnapshot,
) -> dict:
    """Clean the fetched items into data/<corpus>/ (atomic); returns the manifest."""
    spec = get_corpus(corpus)
    result = write_corpus(
        spec, Path(data_dir) / corpus, snapshot.items, resolve_options(spec, options),
        source=source, limit=limit, fetch_stats=lambda: snapshot.fetch_stats,
        log=get_run_logger().info,
    )  # fmt: skip
    return result.manifest


def corpus_on_disk(corpus_dir: Path) -> dict | None:
    """The manifest of an intact corpus folder, else None."""
    manifest = read_manifest(corpus_dir)
    if manifest is None or not (corpus_dir / "corpus.txt").is_file():
        return None
    return manifest


@task(name="report-corpus", task_run_name="report {corpus} statistics")
def report_corpus(corpus: str, manifest: dict, snapshot: RawSnapshot, rebuilt: bool) -> None:
    """A table artifact of corpus statistics, one per ingest."""
    fetch = snapshot.fetch_stats
    rows = [
        ("documents", manifest["documents"]),
        ("characters", manifest["chars"]),
        ("bytes", manifest.get("bytes")),
        ("vocabulary (code points)", manifest["vocab_size"]),
        ("raw items fetched", snapshot.num_raw),
        ("skipped", len(manifest["skipped"])),
        ("downloaded / not modified (304)", f"{fetch.get('downloaded', 0)} / "
                                            f"{fetch.get('not_modified', 0)}"),
        ("retries", fetch.get("retries", 0)),
        ("corpus sha256", manifest["corpus_sha256"][:16]),
        ("cleaned this run", "yes" if rebuilt else "no (cached: raw bytes and code unchanged)"),
        ("source", manifest["source"]),
        *cleaning_rows(manifest),  # skips by reason, what each cleaning rule removed
    ]  # fmt: skip
    create_table_artifact(
        key=artifact_key("corpus", corpus),
        table=[{"statistic": k, "value": v} for k, v in rows],
        description=f"Corpus {corpus}: {manifest['documents']} documents, "
        f"{manifest['chars']:,} chars, built {manifest.get('created_at', '?')}",
    )


# -- training --------------------------------------------------------------------------------


def retrain_decision(
    digest: str, champion, force: bool, tried: list[str] | None = None
) -> tuple[bool, str]:
    """Whether a (scheduled) retrain should train, and why, as one sentence.

    `tried`: versions already trained on this digest. A model that lost to the champion on
    this corpus would lose again every week, so the corpus must change (or force=true)."""
    if force:
        return True, "forced (force=true)"
    if champion is None:
        return True, "no champion yet"
    if champion.corpus_digest != digest and tried:
        return False, (
            f"corpus already trained on by v{tried[-1]}, which did not beat champion "
            f"v{champion.version}; waiting for the corpus to change (or force=true)"
        )
    if champion.corpus_digest != digest:
        return True, (
            f"corpus changed: champion v{champion.version} was trained on "
            f"{champion.corpus_digest[:12] or 'an unknown corpus'}, the corpus is now {digest[:12]}"
        )
    return False, (
        f"corpus unchanged since champion v{champion.version} was trained "
        f"(digest {digest[:12]}, val_loss {champion.val_loss:.4f}); pass force=true to retrain"
    )


@task(
    name="encode-corpus",
    task_run_name="encode {corpus} ({digest:.12})",
    cache_policy=INPUTS + TASK_SOURCE,
    persist_result=True,
)
def encode_corpus(
    corpus: str, corpus_dir: str, digest: str, val_fraction: float, test_fraction: float
) -> dict:
    """Encode the corpus into the memmap cache (keyed by digest); returns its statistics."""
    from training.data import prepare_dataset

    ds = prepare_dataset(corpus_dir, val_fraction=val_fraction, test_fraction=test_fraction)
    if ds.digest != digest:  # the folder changed between reading its manifest and now
        raise IngestError(f"corpus {corpus} changed while training was starting; run again")
    return {
        "vocab_size": len(ds.vocab),
        "chars": ds.num_chars,
        "documents": ds.num_documents,
        **{f"{split}_chars": ds.split_size(split) for split in ("train", "val", "test")},
    }


@task(name="train-model", task_run_name="train {corpus} ({cfg.model}, {cfg.max_steps} steps)")
def train_model(corpus: str, corpus_dir: str, cfg: TrainConfig, run_tags: dict[str, str]):
    """One training run, tracked in MLflow; the trainer moves `champion` on improvement."""
    from training.train import train

    return train(cfg, corpus_dir, corpus=corpus, run_tags=run_tags)  # a checkpoint folder per run


def mlflow_client():
    from training.mlflow_setup import mlflow_client as charflow_client

    return charflow_client()


def run_link(client, run_id: str) -> str:
    """The MLflow UI page of a run (the form RunTracker.run_url gives)."""
    from training.mlflow_setup import ui_run_url

    return ui_run_url(client.get_run(run_id).info.experiment_id, run_id, client.tracking_uri)


def last_sample(client, run_id: str) -> str:
    """The text of the run's last logged sample (samples/step_NNNNNN.txt), or ''."""
    samples = sorted(a.path for a in client.list_artifacts(run_id, "samples"))
    if not samples:
        return ""
    local = client.download_artifacts(run_id, samples[-1])
    return Path(local).read_text(encoding="utf-8")


@task(name="report-training", task_run_name="report {corpus} training")
def report_training(corpus: str, decision: str, result=None, encoded: dict | None = None) -> str:
    """A markdown artifact per training decision: why, metrics, a sample, the MLflow link."""
    lines = [f"# {corpus}: {'trained' if result else 'not trained'}", "", f"**Why:** {decision}"]
    if result is not None:
        client = mlflow_client()
        metrics = client.get_run(result.run_id).data.metrics if result.run_id else {}
        bpc = {k: bits(v) for k, v in metrics.items() if k.endswith("_loss")}
        lines += [
            "",
            f"**Champion:** {'yes' if result.is_champion else 'no'} "
            f"(model version {result.model_version}): {result.champion_reason}",
            "",
            "| metric | value |",
            "| --- | --- |",
            f"| steps | {result.steps} ({result.stopped_because}) |",
            f"| best val loss (nats/char) | {result.best_val_loss:.4f} |",
            f"| best val bpc | {bits(result.best_val_loss):.4f} |",
            f"| test loss (nats/char) | {result.test_loss:.4f} |",
            f"| test bpc | {bits(result.test_loss):.4f} |",
        ]
        for key in ("train_loss", "chars_per_sec"):
            if key in metrics:
                lines.append(f"| last {key} | {metrics[key]:.4g} |")
        if "train_loss" in bpc:
            lines.append(f"| last train bpc | {bpc['train_loss']:.4f} |")
        if encoded:
            lines.append(f"| vocabulary | {encoded['vocab_size']} |")
            lines.append(f"| corpus chars | {encoded['chars']:,} |")
        if result.run_id:
            sample = last_sample(client, result.run_id)
            lines += ["", "## Sample", "", "```text", sample.replace("```", "'''"), "```"]
            lines += ["", f"[MLflow run {result.run_id}]({run_link(client, result.run_id)})"]
    markdown = "\n".join(lines) + "\n"
    create_markdown_artifact(
        markdown=markdown,
        key=artifact_key("train", corpus),
        description=f"{corpus}: {decision}",
    )
    return markdown

"""`charflow corpora` and `charflow ingest`: the corpus commands."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import typer

from scrapers.errors import IngestError


def corpus_stats_lines(name: str, data_dir: Path | None = None) -> list[str]:
    """`charflow corpora --stats NAME`: the corpus's manifest.json in words."""
    from charflow import paths
    from scrapers.ingest import describe_rule
    from scrapers.registry import get_corpus
    from scrapers.store import MANIFEST_FILE, read_manifest

    spec = get_corpus(name)  # an unknown name: IngestError naming the known ones
    folder = Path(data_dir or paths.data_dir()) / spec.name
    m = read_manifest(folder)
    if m is None:
        raise IngestError(
            f"corpus {spec.name} is not ingested yet (no {folder / MANIFEST_FILE}); "
            f"run: charflow ingest {spec.name}"
        )
    options = ", ".join(f"{k}={v}" for k, v in (m.get("options") or {}).items()) or "none"
    out = [
        f"{spec.name}: {folder} (built {m.get('created_at', '?')}, code {m.get('code_version')})",
        f"  source      {m.get('source')}",
        f"  documents   {m['documents']:,} (from {m.get('fetched', '?')} raw items)",
        f"  characters  {m['chars']:,} ({m.get('bytes', 0):,} bytes)",
        f"  vocabulary  {m['vocab_size']:,} code points",
        f"  options     {options}",
        f"skipped: {len(m['skipped'])}",
    ]
    cleaning = m.get("cleaning")
    if cleaning is None:
        out.append("what cleaning removed: not recorded (ingested before it was; ingest again)")
        return out
    out += [f"  {count:6,}  {reason}" for reason, count in cleaning["skipped"].items()]
    rules = sorted(cleaning["rules"].items(), key=lambda kv: (-kv[1]["chars"], kv[0]))
    out.append(f"what cleaning removed: {len(rules)} rules" + ("" if rules else " (nothing)"))
    for rule, row in rules:
        out.append(f"  {rule}: {describe_rule(row)}")
        out += [f"      e.g. {e['text']!r}  ({e['source']})" for e in row["examples"]]
    near = cleaning["near_duplicates"]
    if near["action"] == "off":
        out.append("near-duplicates: not looked for (near_dup_threshold=0)")
        return out
    what = "dropped" if near["action"] == "dropped" else "kept (--option dedup=near drops them)"
    out.append(f"near-duplicates (similarity >= {near['threshold']}): {near['found']}, {what}")
    for p in near["pairs"]:
        doc = f"document {p['id']}" if p["id"] is not None else "dropped"
        out.append(
            f"  {p['similarity']:.2f}  {doc} {p['title'] or ''} ({p['source']})"
            f"  ~  document {p['of_id']} {p['of_title'] or ''} ({p['of_source']})"
        )
    if near["found"] > len(near["pairs"]):
        out.append(f"  ... {near['found'] - len(near['pairs'])} more in {folder / MANIFEST_FILE}")
    return out


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise IngestError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


def corpora(
    stats: str | None = typer.Option(
        None, "--stats", metavar="NAME", help="print an ingested corpus's statistics instead"
    ),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="with --stats: corpora live in DIR/NAME (default: $CHARFLOW_HOME/data)",
    ),
) -> None:
    """List the registered corpora with their default sources (--stats NAME: what an
    ingested corpus holds, what was skipped and what cleaning removed)."""
    from scrapers.registry import list_corpora

    if stats is not None:
        for line in corpus_stats_lines(stats, data_dir):
            typer.echo(line)
        return
    specs = list_corpora()
    if not specs:
        typer.echo("no corpora registered")
        return
    width = max(len(s.name) for s in specs)
    for spec in specs:
        typer.echo(f"{spec.name.ljust(width)}  {spec.default_source}")
        typer.echo(f"{' ' * width}  {spec.description}")
        if spec.mirror_path:
            typer.echo(f"{' ' * width}  mirror path: {spec.mirror_path}")
        if spec.options:
            shown = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
            typer.echo(f"{' ' * width}  options: {shown}")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def is_local(source: str) -> bool:
    """A source on this machine (a path, a file: URL, a loopback server): nothing to be
    polite to, so no rate limit."""
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        return parts.hostname in LOOPBACK
    return parts.scheme in ("", "file")


def mirror_source(name: str, mirror: str) -> str:
    """The corpus's copy inside a mirror: <mirror>/<its mirror_path>."""
    from scrapers.registry import get_corpus

    spec = get_corpus(name)
    if not spec.mirror_path:
        raise IngestError(f"corpus {name} has no copy in a mirror (no mirror_path); use --source")
    if urlsplit(mirror).scheme in ("http", "https", "file"):
        return mirror.rstrip("/") + "/" + spec.mirror_path.lstrip("/")
    path = Path(mirror) / spec.mirror_path
    if not Path(mirror).is_dir():
        raise IngestError(f"mirror folder {mirror} does not exist")
    return str(path)


def ingest(
    name: str = typer.Argument(..., help="corpus name (see `charflow corpora`)"),
    source: str | None = typer.Option(None, "--source", help="URL or local path to read from"),
    mirror: str | None = typer.Option(
        None,
        "--mirror",
        metavar="URL_OR_DIR",
        help="a mirror laid out like ../shared/corpora (a folder or its loopback URL): "
        "reads the corpus's mirror path inside it",
    ),
    limit: int | None = typer.Option(None, "--limit", help="stop after N documents"),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="corpora live in DIR/NAME (default: $CHARFLOW_HOME/data)"
    ),
    rate_limit: float | None = typer.Option(
        None,
        "--rate-limit",
        help="requests per second per host; 0 = no limit (default: 1 for web sites, "
        "none for loopback, file: and local sources)",
    ),
    option: list[str] = typer.Option([], "--option", help="corpus option KEY=VALUE (repeat)"),
    to_simplified: bool = typer.Option(
        False, "--to-simplified", help="Chinese corpora: Traditional -> Simplified (OpenCC)"
    ),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="progress bar (default: on a terminal)"
    ),
) -> None:
    """Fetch, clean and write a corpus to DATA_DIR/NAME (atomically)."""
    from scrapers.fetch import Fetcher
    from scrapers.ingest import ingest as run_ingest
    from scrapers.registry import get_corpus

    if rate_limit is not None and rate_limit < 0:
        raise IngestError(f"--rate-limit must be >= 0, got {rate_limit}")
    if mirror is not None:
        if source is not None:
            raise IngestError("give --source or --mirror, not both")
        source = mirror_source(name, mirror)
    if rate_limit is None:
        rate_limit = 0 if is_local(source or get_corpus(name).default_source) else 1.0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with Fetcher(rate_limit=rate_limit or None) as fetcher:
        result = run_ingest(
            name,
            source,
            limit=limit,
            data_dir=data_dir,
            options=_parse_options(option) | ({"to_simplified": "true"} if to_simplified else {}),
            fetcher=fetcher,
            progress=progress,
        )
    m = result.manifest
    state = "unchanged" if result.unchanged else "written"
    typer.echo(
        f"{result.path}: {state}; {m['documents']} documents, {m['chars']:,} chars, "
        f"vocab {m['vocab_size']}, {len(m['skipped'])} skipped, sha256 {m['corpus_sha256'][:12]}"
    )


def register(app: typer.Typer) -> None:
    app.command("corpora")(corpora)
    app.command("ingest")(ingest)

"""`charflow corpora` and `charflow ingest`: the corpus commands."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from scrapers.errors import IngestError


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise IngestError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


def corpora() -> None:
    """List the registered corpora with their default sources."""
    from scrapers.registry import list_corpora

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


def ingest(
    name: str = typer.Argument(..., help="corpus name (see `charflow corpora`)"),
    source: str | None = typer.Option(None, "--source", help="URL or local path to read from"),
    limit: int | None = typer.Option(None, "--limit", help="stop after N documents"),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="corpora live in DIR/NAME (default: $CHARFLOW_HOME/data)"
    ),
    rate_limit: float = typer.Option(
        1.0, "--rate-limit", help="requests per second per host; 0 = no limit (mirrors)"
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

    if rate_limit < 0:
        raise IngestError(f"--rate-limit must be >= 0, got {rate_limit}")
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

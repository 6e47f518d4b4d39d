"""`charflow sync RUN_DIR`: send what a run folder's MLflow journal still holds (the tracking
store was away while it trained, or its process was killed) and end a run that no process
runs any more."""

from __future__ import annotations

from pathlib import Path

import typer


def sync(
    run_dir: Path = typer.Argument(..., help="a run's checkpoint folder (where last.pt is)"),
) -> None:
    """Send a run folder's waiting MLflow records; a run left RUNNING by a dead process ends
    KILLED."""
    from training.tracking_sync import sync_run_dir  # MLflow loads only when asked for

    typer.echo(sync_run_dir(run_dir).describe())


def register(app: typer.Typer) -> None:
    app.command()(sync)

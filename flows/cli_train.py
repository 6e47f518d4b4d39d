"""Commands registered on the charflow app (filled in by the issue that owns them)."""

import typer


def register(app: typer.Typer) -> None:
    pass

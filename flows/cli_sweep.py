"""`charflow sweep` and `charflow compare`: thin commands over training/sweep*.py and
training/comparison*.py (torch and MLflow load lazily)."""

from __future__ import annotations

from pathlib import Path

import typer

from training.errors import TrainingError


def sweep(
    corpus: str = typer.Argument(..., help="corpus name (data under data/CORPUS) or a path"),
    source: Path | None = typer.Option(None, help="corpus folder or text file to train on"),
    grid: str = typer.Option(
        "architectures", help="architectures, or a YAML file: setting -> values, or a list"
    ),
    max_seconds: float | None = typer.Option(None, help="training seconds per run"),
    max_chars: int | None = typer.Option(None, help="characters read per run"),
    hidden: int | None = typer.Option(None, help="hidden size of every run"),
    preset: str = typer.Option("cpu-small", help="cpu-small, tiny or gpu"),
    parallel: int | None = typer.Option(
        None, help="runs at once (default: what the machine holds; one per GPU)"
    ),
    run_name: str | None = typer.Option(None, help="the sweep's name (default CORPUS-GRID-TIME)"),
    tags: list[str] | None = typer.Option(
        None, "--tag", metavar="KEY=VALUE", help="MLflow tag on every run (repeatable)"
    ),
    settings: list[str] | None = typer.Option(
        None, "--set", metavar="KEY=VALUE", help="training setting for every run (repeatable)"
    ),
    search: str | None = typer.Option(
        None, help="optuna: search the ranges of the --grid YAML file (TPE, median pruner)"
    ),
    trials: int | None = typer.Option(
        None, help="with --search: trials in the study (the same --run-name continues it)"
    ),
    study_storage: str | None = typer.Option(
        None,
        envvar="CHARFLOW_OPTUNA_STORAGE",
        help="with --search: the study's database URL (default: optuna.db beside MLflow's)",
    ),
) -> None:
    """Train every configuration of a grid as child runs of one MLflow run, then compare."""
    from training.comparison_report import text_table
    from training.mlflow_names import user_tags
    from training.sweep_workers import run_sweep

    name, path = resolve_corpus(corpus, source)
    budget = dict(max_seconds=max_seconds, max_chars=max_chars, hidden_size=hidden)
    if search is not None or trials is not None:
        from training.search import run_search

        base, space = search_space(name, search, grid, preset, budget, settings or [])
        comparison = run_search(
            name,
            path,
            base,
            space,
            trials=20 if trials is None else trials,
            name=run_name,
            tags=user_tags(tags or []),
            grid=f"optuna:{Path(grid).name}",
            parallel=parallel,
            storage=study_storage,
        )
        typer.echo(text_table(comparison))
        typer.echo(f"compare in MLflow: {comparison.url}")
        return
    configs = sweep_configs(name, grid, preset, budget, settings or [])
    comparison = run_sweep(
        name,
        path,
        configs,
        name=run_name,
        tags=user_tags(tags or []),
        grid=grid,
        parallel=parallel,
    )
    typer.echo(text_table(comparison))
    typer.echo(f"compare in MLflow: {comparison.url}")


def resolve_corpus(corpus: str, source: Path | None) -> tuple[str, Path]:
    """(name, path): --source names the path; else data/CORPUS; else CORPUS is a path."""
    from charflow.paths import data_dir
    from training.data import corpus_name

    if source is not None:
        return corpus, source
    if (data_dir() / corpus).is_dir():
        return corpus, data_dir() / corpus
    if Path(corpus).exists():
        return corpus_name(corpus), Path(corpus)
    raise TrainingError(
        f"no corpus {corpus!r}: neither {data_dir() / corpus} nor a file or folder; "
        f"build it with `charflow ingest {corpus}` or pass --source PATH"
    )


def sweep_configs(name: str, grid: str, preset: str, flags: dict, settings: list[str]) -> list:
    """Every configuration, checked: the preset and the corpus's defaults, then the grid,
    with the flags and --set values fixed for every run."""
    from training.sweep_grid import build_configs, load_grid

    base, fixed = base_config(name, preset, flags, settings)
    return build_configs(base, load_grid(grid), fixed)


def search_space(
    name: str, search: str | None, grid: str, preset: str, flags: dict, settings: list[str]
) -> tuple:
    """(every trial's settings before the searched ones, the checked search space)."""
    from training.search_space import load_space
    from training.sweep_grid import BUILTIN_GRIDS, build_configs

    if search is None:
        raise TrainingError("--trials counts the trials of a search: add --search optuna")
    if search != "optuna":
        raise TrainingError(f"--search {search}: the one search is optuna (--search optuna)")
    if grid in BUILTIN_GRIDS:
        raise TrainingError("--search optuna takes its ranges from a YAML file: --grid FILE.yaml")
    base, fixed = base_config(name, preset, flags, settings)
    (base,) = build_configs(base, [{}], fixed)
    return base, load_space(grid, base, fixed)


def base_config(name: str, preset: str, flags: dict, settings: list[str]) -> tuple:
    """(the preset and the corpus's defaults, the settings fixed for every run: flags and
    --set values)."""
    from flows.corpus_settings import corpus_defaults
    from training.config import TrainConfig, build_config, parse_assignments

    fixed = {k: v for k, v in flags.items() if v is not None}
    if fixed.get("max_seconds") is not None and fixed.get("max_chars") is not None:
        raise TrainingError("give --max-seconds or --max-chars, not both: one budget to compare")
    set_values = TrainConfig.parse_overrides(parse_assignments(settings))
    twice = sorted(set(fixed) & set(set_values))
    if twice:
        raise TrainingError(f"{twice[0]} given both as a flag and with --set; give it once")
    return build_config(preset, corpus_defaults(name)), fixed | set_values


def compare(
    refs: list[str] = typer.Argument(
        ..., metavar="SWEEP_NAME_OR_RUN_ID...", help="what to compare"
    ),
) -> None:
    """The comparison table of sweeps (their children) and runs, as a sweep logs it."""
    from training.comparison import compare_runs, find_runs
    from training.comparison_report import text_table
    from training.mlflow_setup import mlflow_client

    client = mlflow_client()
    comparison = compare_runs(client, find_runs(client, refs))
    typer.echo(text_table(comparison))
    typer.echo(f"compare in MLflow: {comparison.url}")


def register(app: typer.Typer) -> None:
    app.command()(sweep)
    app.command()(compare)

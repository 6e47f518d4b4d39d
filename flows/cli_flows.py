"""`charflow services ...`: the local Prefect + MLflow stack behind `make demo`.

charflow services up [--mirror ../shared/corpora]   # server, worker, MLflow UI (reused)
charflow services deploy                            # work pool, host rate limits, prefect.yaml
charflow services status
charflow services down                              # stops exactly what `up` started
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from flows import services as stack_services


def _fail(err: Exception) -> None:
    print(f"charflow: error: {err}", file=sys.stderr)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        no_args_is_help=True,
        help="Local Prefect server + process worker + MLflow UI on 127.0.0.1 (state in .run/).",
    )

    @group.command()
    def up(
        mirror: Path | None = typer.Option(
            None, help="also serve this folder (laid out like ../shared/corpora) over HTTP"
        ),
        mlflow: bool = typer.Option(True, help="start the MLflow UI too"),
    ) -> None:
        """Start the stack (or reuse what runs) and print its addresses."""
        stack = stack_services.Stack.from_env()
        if mirror:
            stack.mirror = mirror.resolve()
        try:
            for what, url in stack_services.up(stack, with_mlflow=mlflow).items():
                print(f"{what}: {url}")
        except stack_services.ServiceError as err:
            _fail(err)

    @group.command()
    def deploy() -> None:
        """Create the `charflow` work pool and host rate limits, then deploy prefect.yaml."""
        from flows.deploy import deploy as deploy_stack

        deploy_stack(stack_services.Stack.from_env())

    @group.command()
    def status() -> None:
        """Which services run, with their pids and addresses."""
        stack = stack_services.Stack.from_env()
        for name, record in stack_services.status(stack).items():
            print(f"{name}: " + (f"running (pid {record['pid']})" if record else "stopped"))
        for what, url in stack_services.addresses(stack).items():
            print(f"{what}: {url}")

    @group.command()
    def down() -> None:
        """Stop the services `up` started (by recorded pid, only if it still runs that command)."""
        stack_services.down(stack_services.Stack.from_env())

    app.add_typer(group, name="services")

"""`charflow demo`, `charflow deploy` and `charflow services ...`: the local Prefect + MLflow
stack behind `make demo`.

charflow demo [--mirror DIR] [--budget S]   # make demo: sources, stack, deployments, run, table
charflow deploy [--write FILE]              # deployments generated from the corpus registry
charflow services up [--mirror ../shared/corpora]   # server, worker, MLflow UI (reused)
charflow services deploy                    # the same as `charflow deploy`
charflow services status | env | ui | down
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import typer

from flows import services as stack_services

GO_TREE = Path("/usr/share/gocode/src/k8s.io/utils")  # Debian golang-k8s-utils-dev


def _fail(err: Exception) -> None:
    print(f"charflow: error: {err}", file=sys.stderr)
    raise typer.Exit(1)


def _stack() -> stack_services.Stack:
    return stack_services.Stack.from_env()


def deploy_stack(
    stack: stack_services.Stack, quiet: bool = False, work_pool: str = stack_services.WORK_POOL
) -> list[str]:
    """Work pool, host rate limits and every generated deployment; one line if the server
    does not answer."""
    from flows.deploy import deploy

    try:
        return deploy(stack, log=(lambda _: None) if quiet else print, work_pool=work_pool)
    except stack_services.ServiceError as err:
        _fail(err)
        raise  # unreachable: _fail exits


def deploy(
    write: Path | None = typer.Option(
        None, "--write", metavar="FILE", help="write the deployments as a prefect.yaml instead"
    ),
    work_pool: str = typer.Option(
        stack_services.WORK_POOL, help="the work pool they run on (another one must exist)"
    ),
) -> None:
    """Create or update the Prefect deployments of every registered corpus (ingest, weekly
    retrain, sweep) and pipeline/demo, on the stack's server (PREFECT_PORT)."""
    if write is not None:
        from flows.deployments import generate, render_yaml

        found = generate()
        write.write_text(render_yaml(found, work_pool), encoding="utf-8")
        print(f"{write}: {len(found)} deployments")
        return
    names = deploy_stack(_stack(), work_pool=work_pool)
    print(f"{len(names)} deployments on {_stack().api_url}")


def demo(
    mirror: Path | None = typer.Option(
        None,
        help="read every source from this folder (default: $MIRROR; else live sites, "
        "or ../shared/corpora when they do not answer)",
    ),
    go_tree: Path = typer.Option(
        Path(os.environ.get("GO_TREE") or GO_TREE),
        help="the Go tree kubernetes-go reads ($GO_TREE)",
    ),
    budget: float | None = typer.Option(
        None, help="training seconds of the whole run (default: the deployment's)"
    ),
) -> None:
    """The main job: check the sources, start the stack, deploy, run pipeline/demo and watch
    it, then print the per-corpus table and the MLflow link."""
    stack = _stack()
    try:
        plan = stack_services.plan_sources(
            mirror.resolve() if mirror else stack.mirror, {"kubernetes-go": go_tree}
        )
    except stack_services.ServiceError as err:
        _fail(err)
    print(plan.note, flush=True)
    for corpus, why in plan.left_out.items():
        print(f"{corpus}: left out of the demo ({why})")
    stack.mirror = plan.mirror
    try:
        for what, url in stack_services.up(stack).items():
            print(f"{what}: {url}", flush=True)
    except stack_services.ServiceError as err:
        _fail(err)
    names = deploy_stack(stack, quiet=True)
    print(f"{len(names)} deployments ({', '.join(sorted({n.split('/')[0] for n in names}))})")
    params: dict = {"sources": plan.sources}
    if plan.mirror:
        params["mirror"] = stack.mirror_url
    if plan.left_out:
        params["corpora"] = plan.corpora
    if budget is not None:
        params["budget_seconds"] = budget
    log = stack.run_dir / "prefect-worker.log"
    print(f"Follow it in the Prefect UI ({stack.prefect_ui_url}) or: tail -f {log}", flush=True)
    started = time.time()
    watch = [
        sys.executable, "-m", "prefect", "deployment", "run", "pipeline/demo", "--watch",
        "--params", json.dumps(params),
    ]  # fmt: skip
    code = subprocess.run(watch, env={**os.environ, **stack.client_env()}).returncode
    summary = latest_summary(stack, since=started)
    print()
    print(summary or "(no summary: see the flow run's log above)")
    print()
    for what, url in stack_services.addresses(stack).items():
        print(f"{what}: {url}")
    print("Stop the stack with `make down`.")
    raise typer.Exit(code)


def latest_summary(stack: stack_services.Stack, since: float) -> str | None:
    """The summary table the last pipeline run left as an artifact, if it was made after
    `since` (seconds since the epoch)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.pipeline import SUMMARY_ARTIFACT

    with SyncPrefectClient(stack.api_url) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    if not found or found[0].created.timestamp() < since:
        return None
    lines = str(found[0].data).splitlines()
    return "\n".join(line for line in lines if not line.startswith("```"))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("deploy")(deploy)
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
        stack = _stack()
        if mirror:
            stack.mirror = mirror.resolve()
        try:
            for what, url in stack_services.up(stack, with_mlflow=mlflow).items():
                print(f"{what}: {url}")
        except stack_services.ServiceError as err:
            _fail(err)

    @group.command("deploy")
    def deploy_services() -> None:
        """Create the `charflow` work pool, host rate limits and every deployment."""
        names = deploy_stack(_stack())
        print(f"{len(names)} deployments")

    @group.command()
    def status() -> None:
        """Which services run, with their pids and addresses."""
        stack = _stack()
        for name, record in stack_services.status(stack).items():
            print(f"{name}: " + (f"running (pid {record['pid']})" if record else "stopped"))
        for what, url in stack_services.addresses(stack).items():
            print(f"{what}: {url}")

    @group.command()
    def env() -> None:
        """Shell lines that point `prefect` and charflow at the stack:
        eval "$(charflow services env)"."""
        for key, value in stack_services.shell_env(_stack()).items():
            print(f"export {key}={_quote(value)}")

    @group.command()
    def ui() -> None:
        """The MLflow UI over the stack's store, in the foreground (make mlflow-ui)."""
        service = stack_services.mlflow_ui(_stack())
        _stack().mlruns.mkdir(parents=True, exist_ok=True)
        print(f"MLflow UI on {_stack().mlflow_ui_url} over {_stack().tracking_uri}", flush=True)
        os.execvpe(service.argv[0], service.argv, {**os.environ, **service.env})

    @group.command()
    def down() -> None:
        """Stop the services `up` started (by recorded pid, only if it still runs that command)."""
        stack_services.down(_stack())

    app.add_typer(group, name="services")


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)

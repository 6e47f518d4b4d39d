"""The `sweep` flow (flows/sweep_flow.py) on a real Prefect server (tests/prefect_fixtures.py):

- children on a work pool: two more process workers (`--limit 1` each, so both take
  children) run the configurations as flow runs of `sweep-child/<corpus>`, subflow runs
  of the sweep; the parent MLflow run holds the comparison;
- the same for an Optuna search with the study in PostgreSQL (schema `optuna` of the
  tracking database) and MLflow served from PostgreSQL: the set-up for several machines;
- the `sweep/<corpus>` deployment on the stack's own worker, children as task runs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flows.services import Service, start, stop

SWEEP_POOL = "sweep-test"
WORKERS = ("sweep-worker-a", "sweep-worker-b")
GRID = "- {model: rnn}\n- {model: gru}\n"
TINY = {"max_steps": 20, "eval_every": 5, "sample_chars": 40}


def _worker_online(api_url: str, name: str):
    def check() -> bool:
        try:
            resp = requests.post(f"{api_url}/work_pools/{SWEEP_POOL}/workers/filter", json={})
        except requests.RequestException:
            return False
        return resp.ok and any(w["name"] == name and w["status"] == "ONLINE" for w in resp.json())

    return check


@pytest.fixture(scope="module")
def two_workers(prefect_stack) -> Iterator[list[str]]:
    """Pool `sweep-test` with two process workers of one run each, and the children's
    deployment `sweep-child/shakes` on it (as flows/deployments.py makes them)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    from flows.deployments import SWEEP_CHILD, Deployment, apply

    stack = prefect_stack
    with SyncPrefectClient(stack.api_url) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name=SWEEP_POOL,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            ),
            overwrite=True,
        )
    child = Deployment("sweep-child", "shakes", SWEEP_CHILD, "children of the test sweeps")
    apply([child], stack.api_url, work_pool=SWEEP_POOL, log=lambda _: None)
    env = {
        **stack.client_env(),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
    }
    started = []
    try:
        for name in WORKERS:
            argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", SWEEP_POOL,
                    "--type", "process", "--name", name, "--limit", "1"]  # fmt: skip
            start(Service(name, argv, env, _worker_online(stack.api_url, name)), stack.run_dir,
                  log=lambda _: None)  # fmt: skip
            started.append(name)
        yield list(WORKERS)
    finally:
        for name in started:
            stop(stack.run_dir, name, log=lambda _: None)


def child_flow_runs(api_url: str, parent_flow_run_id) -> list:
    """The flow runs of sweep-child started by this sweep flow run (its subflow runs)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    with SyncPrefectClient(api_url) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["sweep-child"])),
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_flow_run_id])
            ),
        )


def worker_of(stack, flow_run_id) -> list[str]:
    """Which of the two workers ran this flow run, by their logs: both may try to submit
    it, the server lets one of them (the other's attempt is aborted)."""
    found = []
    for name in WORKERS:
        log = (stack.run_dir / f"{name}.log").read_text()
        tried = f"submitting flow run '{flow_run_id}'" in log
        if tried and f"Aborted submission of flow run '{flow_run_id}'" not in log:
            found.append(name)
    return found


def comparison_rows(client, run_id: str) -> list[dict]:
    table = json.loads(Path(client.download_artifacts(run_id, "comparison.json")).read_text())
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def run_sweep_flow(**parameters):
    """The sweep flow in this process; (its return value, its flow run id)."""
    from flows.sweep_flow import sweep_flow

    state = sweep_flow(**parameters, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id


def test_sweep_children_are_flow_runs_on_the_pool_shared_by_two_workers(
    flow_home, two_workers, write_text, shakespeare_text, prefect_env
):
    text = write_text("shakes.txt", shakespeare_text[:30_000])
    grid = write_text("grid.yaml", GRID)
    result, flow_run_id = run_sweep_flow(
        corpus="shakes", source=str(text), grid=str(grid), preset="tiny", settings=TINY,
        fan_out="pool", torch_threads=1, run_name="pool1",
    )  # fmt: skip
    assert [row["status"] for row in result["rows"]] == ["FINISHED", "FINISHED"]

    children = child_flow_runs(prefect_env.api_url, flow_run_id)
    assert sorted(c.name for c in children) == ["shakes-gru1x32", "shakes-rnn1x32"]
    assert {c.state.type.value for c in children} == {"COMPLETED"}
    assert all(c.parent_task_run_id for c in children)  # shown under the sweep's task runs
    workers = [worker_of(prefect_env, c.id) for c in children]
    assert sorted(w for found in workers for w in found) == sorted(WORKERS)  # one each

    from training.mlflow_setup import mlflow_client

    client = mlflow_client()
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["charflow.sweep"] == "pool1"
    rows = comparison_rows(client, parent.info.run_id)
    assert [(r["run"], r["status"]) for r in rows] == [
        ("shakes-rnn1x32", "FINISHED"),
        ("shakes-gru1x32", "FINISHED"),
    ]
    for row in rows:  # logged by the workers, into the sweep's store, under its parent
        child = client.get_run(row["run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    # checkpoints stay on the machine that trained them: the workers' CHARFLOW_HOME
    folder = prefect_env.home / "checkpoints" / "shakes" / "sweeps" / "pool1"
    assert sorted(p.name for p in folder.iterdir()) == ["00-rnn1x32", "01-gru1x32"]


def test_a_search_on_the_pool_shares_its_study_in_postgresql(
    flow_home, two_workers, postgres, mlflow_pg_server, write_text, shakespeare_text,
    prefect_env, monkeypatch,
):  # fmt: skip
    """The set-up for several machines: MLflow served from PostgreSQL, the study in the
    same database (schema optuna), trials as flow runs that two workers share."""
    import optuna

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_pg_server.url)
    database = postgres.urls["MLFLOW_BACKEND_STORE_URI"]  # .../mlflow: the tracking database
    text = write_text("shakes.txt", shakespeare_text[:30_000])
    space = write_text("space.yaml", "lr: {low: 1e-3, high: 1e-2, log: true}\n")
    result, flow_run_id = run_sweep_flow(
        corpus="shakes", source=str(text), grid=str(space), search="optuna", trials=3,
        preset="tiny", settings=TINY, fan_out="pool", parallel=2, torch_threads=1,
        run_name="pg1", study_storage=database,
    )  # fmt: skip
    assert len(result["rows"]) == 3

    children = child_flow_runs(prefect_env.api_url, flow_run_id)
    assert sorted(c.name for c in children) == ["pg1-trial-0", "pg1-trial-1", "pg1-trial-2"]
    assert {c.state.type.value for c in children} == {"COMPLETED"}
    used = {w for c in children for w in worker_of(prefect_env, c.id)}
    assert used == set(WORKERS)

    # the study: in the tracking database, its own schema beside MLflow's tables
    studies = postgres.query("mlflow", "SELECT study_name FROM optuna.studies")
    assert studies == [("pg1",)]
    states = postgres.query("mlflow", "SELECT state FROM optuna.trials ORDER BY number")
    assert len(states) == 3 and {s for (s,) in states} <= {"COMPLETE", "PRUNED"}
    assert postgres.query("mlflow", "SELECT count(*) FROM public.runs")[0][0] >= 4
    schema = f"{database}?options=-csearch_path%3Doptuna"
    study = optuna.load_study(study_name="pg1", storage=schema)
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(pids) == 3  # each trial in the process of its own flow run

    from training.mlflow_setup import mlflow_client

    client = mlflow_client()
    assert client.tracking_uri == mlflow_pg_server.url
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["search"] == "optuna"
    rows = comparison_rows(client, parent.info.run_id)
    assert sorted(r["run_id"] for r in rows) == sorted(
        t.user_attrs["mlflow_run_id"] for t in study.trials
    )


def test_the_sweep_deployment_runs_children_as_task_runs(
    prefect_deployed, prefect_env, write_text, shakespeare_text
):
    """`sweep/<corpus>` from the generated deployments, run by the stack's worker."""
    from mlflow import MlflowClient
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    text = write_text("pg.txt", shakespeare_text[:30_000])
    grid = write_text("grid.yaml", GRID)
    parameters = {
        "source": str(text), "grid": str(grid), "preset": "tiny", "settings": TINY,
        "parallel": 2, "run_name": "deployed1",
    }  # fmt: skip
    run = run_deployment("sweep/paulgraham", parameters=parameters, timeout=600)
    assert run.state.is_completed(), run.state.message

    with SyncPrefectClient(prefect_env.api_url) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    trainings = sorted(t.name for t in tasks if t.task_key.startswith("train_configuration"))
    assert trainings == ["paulgraham-gru1x32", "paulgraham-rnn1x32"]
    assert {t.state.type.value for t in tasks} == {"COMPLETED"}

    client = MlflowClient(prefect_env.tracking_uri, prefect_env.tracking_uri)  # the worker's store
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("charflow/paulgraham").experiment_id],
        "tags.`charflow.sweep` = 'deployed1' and tags.`charflow.role` = 'sweep'",
    )
    assert parent.info.status == "FINISHED"
    rows = comparison_rows(client, parent.info.run_id)
    assert [(r["run"], r["status"]) for r in rows] == [
        ("paulgraham-rnn1x32", "FINISHED"),
        ("paulgraham-gru1x32", "FINISHED"),
    ]
    report = Path(client.download_artifacts(parent.info.run_id, "report.html")).read_text()
    assert re.search(r"paulgraham-gru1x32", report)

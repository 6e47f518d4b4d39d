"""The main job end to end, the way `make demo` runs it: prefect.yaml deployed on a real
Prefect server, `prefect deployment run 'pipeline/demo'` picked up by the process worker,
every source read from ../shared/corpora over loopback HTTP (kubernetes-go from the Debian
Go tree of k8s.io/utils). Then a scheduled retrain through `train/paulgraham`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.services import REPO
from scrapers.mirror import serve_mirror

CORPORA = ("paulgraham", "friends", "sanguo", "kubernetes-go")
GO_TREE = Path("/usr/share/gocode/src/k8s.io/utils")  # Debian golang-k8s-utils-dev (.ci/run)
# Small enough for two shared cores: two documents a corpus, six steps of the tiny model.
DEMO_PARAMS = {
    "limit": 2,
    "preset": "tiny",
    "overrides": {"max_steps": 6, "eval_every": 3, "sample_chars": 60},
    "sources": {"kubernetes-go": str(GO_TREE)},
}


def prefect_cli(stack, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env={**os.environ, **stack.client_env()},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def worker_log(stack) -> str:
    return (stack.run_dir / "prefect-worker.log").read_text(errors="replace")[-6000:]


@pytest.fixture(scope="module")
def demo_run(prefect_deployed, corpora_dir):
    """Run pipeline/demo once against the mirror; yields (stack, flow run id)."""
    assert GO_TREE.is_dir(), f"{GO_TREE} missing: install golang-k8s-utils-dev (.ci/run)"
    stack = prefect_deployed
    with serve_mirror(corpora_dir) as base:
        params = {**DEMO_PARAMS, "mirror": base}
        done = prefect_cli(
            stack, "deployment", "run", "pipeline/demo", "--params", json.dumps(params),
            "--watch", "--watch-timeout", "480", timeout=540,
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output}\n--- worker log ---\n{worker_log(stack)}"
    assert "Completed" in output
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", output).group(1)
    return stack, flow_run_id


def sync_client(stack):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(stack.api_url)


def subflow_runs(stack, parent_id: str) -> dict[str, object]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with sync_client(stack) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
            )
        )
    return {run.name: run for run in runs}


def test_demo_deployment_writes_every_corpus(demo_run):
    stack, _ = demo_run
    for corpus in CORPORA:
        corpus_dir = stack.home / "data" / corpus
        manifest = json.loads((corpus_dir / "manifest.json").read_text())
        assert 1 <= manifest["documents"] <= DEMO_PARAMS["limit"], corpus
        assert (corpus_dir / "corpus.txt").stat().st_size > 0
        if corpus == "kubernetes-go":
            assert manifest["source"] == str(GO_TREE)
        else:
            assert manifest["source"].startswith("http://127.0.0.1:"), corpus


def test_demo_deployment_tracks_a_run_per_corpus_in_mlflow(demo_run):
    from mlflow import MlflowClient

    stack, _ = demo_run
    client = MlflowClient(stack.tracking_uri)
    for corpus in CORPORA:
        experiment = client.get_experiment_by_name(f"charflow/{corpus}")
        assert experiment is not None, corpus
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        params = run.data.params
        manifest = json.loads((stack.home / "data" / corpus / "manifest.json").read_text())
        assert params["corpus_digest"] == manifest["corpus_sha256"]
        assert params["max_steps"] == "6" and params["hidden_size"] == "32"
        val = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in val] == [3, 6], corpus
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 2
        samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
        assert samples, f"{corpus}: no sample artifacts"
        text = Path(client.download_artifacts(run.info.run_id, samples[-1])).read_text()
        assert text.strip(), f"{corpus}: empty sample"
        assert run.data.tags["prefect_flow_run"] == f"train-{corpus}-tiny"


def test_demo_deployment_leaves_prefect_artifacts(demo_run):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    stack, flow_run_id = demo_run
    runs = subflow_runs(stack, flow_run_id)
    expected = {f"{flow}-{corpus}" for corpus in CORPORA for flow in ("ingest", "train")}
    assert {name.removesuffix("-tiny") for name in runs} == expected
    assert all(run.state.is_completed() for run in runs.values())
    with sync_client(stack) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs.values()])
            )
        )
    by_key = {a.key: a for a in artifacts}
    for corpus in CORPORA:
        table = by_key[f"corpus-{corpus}"]
        assert table.type == "table" and table.flow_run_id == runs[f"ingest-{corpus}"].id
        rows = {row["statistic"]: row["value"] for row in json.loads(table.data)}
        assert 1 <= rows["documents"] <= DEMO_PARAMS["limit"]
        report = by_key[f"train-{corpus}"]
        assert report.type == "markdown"
        assert "| best val loss (nats/char) |" in report.data
        assert "## Sample" in report.data and "[MLflow run " in report.data


def test_train_deployments_carry_weekly_cron_schedules(prefect_deployed):
    declared = {
        (d["entrypoint"].rsplit(":", 1)[1], d["name"]): [s["cron"] for s in d.get("schedules", [])]
        for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    }
    with sync_client(prefect_deployed) as client:
        for corpus in CORPORA:
            train = client.read_deployment_by_name(f"train/{corpus}")
            crons = [s.schedule.cron for s in train.schedules if s.active]
            assert crons == declared[("train_flow", corpus)] and len(crons) == 1
            assert train.work_pool_name == "charflow"
        nightly = client.read_deployment_by_name("ingest/paulgraham")
        assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]


def test_deploy_creates_a_rate_limit_per_scraped_host(prefect_deployed):
    from flows.deploy import host_limits

    with sync_client(prefect_deployed) as client:
        for name, rate in host_limits().items():
            limit = client.read_global_concurrency_limit_by_name(name)
            assert limit.active and limit.slot_decay_per_second == rate
    assert "host:paulgraham.com" in host_limits() and "host:127.0.0.1" in host_limits()


def test_scheduled_retrain_of_an_unchanged_corpus_is_skipped(demo_run, prefect_env):
    from prefect.deployments import run_deployment

    stack, _ = demo_run
    # Exactly what the weekly schedule creates: a run of train/paulgraham with its defaults.
    run = run_deployment("train/paulgraham", timeout=300)
    assert run.state.is_completed(), f"{run.state}\n--- worker log ---\n{worker_log(stack)}"
    with sync_client(stack) as client:
        report = client.read_latest_artifacts()
    (skip,) = [a for a in report if a.key == "train-paulgraham"]
    assert skip.flow_run_id == run.id
    assert "not trained" in skip.data and "corpus unchanged since champion v1" in skip.data

    from mlflow import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name("charflow/paulgraham")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # nothing new trained

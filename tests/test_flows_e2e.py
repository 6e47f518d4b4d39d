"""The main job end to end, the way `make demo` runs it: the deployments generated from
the registry on a real Prefect server, `prefect deployment run 'pipeline/demo' --watch`
picked up by the process worker, every source read from ../shared/corpora over loopback
HTTP (kubernetes-go from the Debian Go tree of k8s.io/utils), trainings two at a time in
processes of their own. One corpus's source is missing, so its failure and its reason show
in the watch output while the others finish. Then an unchanged corpus is skipped with its
reason, and a scheduled retrain through `train/paulgraham`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.pipeline import SUMMARY_ARTIFACT
from flows.services import REPO
from scrapers.mirror import serve_mirror

GO_TREE = Path("/usr/share/gocode/src/k8s.io/utils")  # Debian golang-k8s-utils-dev (.ci/run)
BROKEN = "shuttleset"  # its source is missing in this run: a failed ingest, with its reason
# Small enough for two shared cores: two documents a corpus, six steps of the tiny model,
# two trainings at a time on one torch thread each.
DEMO_PARAMS = {
    "limit": 2,
    "preset": "tiny",
    "overrides": {"max_steps": 6, "eval_every": 3, "sample_chars": 60},
    "sources": {"kubernetes-go": str(GO_TREE), BROKEN: "/nonexistent/match.csv"},
    "parallel": 2,
    "torch_threads": 1,
    "retries": 0,
}


def registered() -> list[str]:
    from scrapers.registry import list_corpora

    return [s.name for s in list_corpora()]


CORPORA = [c for c in registered() if c != BROKEN]


def prefect_cli(stack, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env={**os.environ, **stack.client_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def worker_log(stack) -> str:
    return (stack.run_dir / "prefect-worker.log").read_text(errors="replace")[-6000:]


def run_demo(stack, params: dict, timeout: float = 480) -> tuple[subprocess.CompletedProcess, str]:
    done = prefect_cli(
        stack, "deployment", "run", "pipeline/demo", "--params", json.dumps(params),
        "--watch", "--watch-timeout", str(int(timeout)), timeout=timeout + 60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    return done, output


@pytest.fixture(scope="module")
def demo_run(prefect_deployed, corpora_dir):
    """Run pipeline/demo once against the mirror; yields (stack, flow run id, watch output)."""
    assert GO_TREE.is_dir(), f"{GO_TREE} missing: install golang-k8s-utils-dev (.ci/run)"
    stack = prefect_deployed
    with serve_mirror(corpora_dir) as base:
        done, output = run_demo(stack, {**DEMO_PARAMS, "mirror": base})
    (stack.run_dir / "demo-watch.log").write_text(output)  # to read when a test fails
    # Every corpus but the broken one finishes; the run fails and says which and why.
    assert done.returncode == 1, f"{output}\n--- worker log ---\n{worker_log(stack)}"
    assert "Flow run finished in state 'Failed'" in output
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", output).group(1)
    return stack, flow_run_id, output


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
    stack, _, _ = demo_run
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

    stack, _, _ = demo_run
    client = MlflowClient(stack.tracking_uri, stack.tracking_uri)
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

    stack, flow_run_id, _ = demo_run
    runs = subflow_runs(stack, flow_run_id)
    expected = {f"{flow}-{corpus}" for corpus in CORPORA for flow in ("ingest", "train")}
    assert {name.removesuffix("-tiny") for name in runs} == expected | {f"ingest-{BROKEN}"}
    assert runs[f"ingest-{BROKEN}"].state.is_failed()
    assert all(run.state.is_completed() for name, run in runs.items() if BROKEN not in name)
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


def test_deploy_creates_a_rate_limit_per_scraped_host_and_none_for_loopback(prefect_deployed):
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.deploy import ensure_host_limits, host_limits

    with sync_client(prefect_deployed) as client:
        for name, rate in host_limits().items():
            limit = client.read_global_concurrency_limit_by_name(name)
            assert limit.active and limit.slot_decay_per_second == rate
        # What an older charflow made: a limit on the loopback mirror. Deploying again
        # switches it off.
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name="host:127.0.0.1", limit=50, slot_decay_per_second=50.0, active=True
            )
        )
        ensure_host_limits(prefect_deployed)
        assert not client.read_global_concurrency_limit_by_name("host:127.0.0.1").active
    assert "host:paulgraham.com" in host_limits()
    assert not any(name.startswith("host:127.") for name in host_limits())


def test_scheduled_retrain_of_an_unchanged_corpus_is_skipped(demo_run, prefect_env):
    from prefect.deployments import run_deployment

    stack, _, _ = demo_run
    # Exactly what the weekly schedule creates: a run of train/paulgraham with its defaults.
    run = run_deployment("train/paulgraham", timeout=300)
    assert run.state.is_completed(), f"{run.state}\n--- worker log ---\n{worker_log(stack)}"
    with sync_client(stack) as client:
        report = client.read_latest_artifacts()
    (skip,) = [a for a in report if a.key == "train-paulgraham"]
    assert skip.flow_run_id == run.id
    assert "not trained" in skip.data and "corpus unchanged since champion v1" in skip.data

    from mlflow import MlflowClient

    client = MlflowClient(stack.tracking_uri, stack.tracking_uri)
    experiment = client.get_experiment_by_name("charflow/paulgraham")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # nothing new trained


def test_watch_shows_why_a_corpus_failed(demo_run):
    _, _, output = demo_run
    # The pipeline's own log line (watch prints "▪ <time> <run id> <message>").
    said = re.compile(rf"▪ .*[0-9a-f]{{12}} {BROKEN}: ingest failed: ")
    lines = [line for line in output.splitlines() if said.search(line)]
    assert len(lines) == 1, output[-4000:]
    (line,) = lines
    assert "/nonexistent/match.csv" in line  # the fetcher's own reason, not just "Failed"
    assert f"1 of {len(CORPORA) + 1} corpora failed: {BROKEN}: ingest failed" in output


def test_trainings_run_two_at_a_time_in_processes_of_their_own(demo_run):
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    stack, flow_run_id, _ = demo_run
    trains = [r for name, r in subflow_runs(stack, flow_run_id).items() if name.startswith("train")]
    spans = sorted((r.start_time, r.end_time) for r in trains)
    for start, _ in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 2, f"{running} trainings at once"
    with sync_client(stack) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in trains])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="train %")),
        )
    assert len(tasks) == len(CORPORA)
    assert all(t.name.endswith("(lstm, 1 torch threads)") for t in tasks), [t.name for t in tasks]


def test_demo_ends_on_a_table_and_one_mlflow_link(demo_run):
    from mlflow import MlflowClient
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    stack, flow_run_id, output = demo_run
    with sync_client(stack) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT]),
            )
        )
    text = artifact.data
    mlflow = MlflowClient(stack.tracking_uri, stack.tracking_uri)
    run_ids = []
    table = text.split("\n\n")[0].splitlines()  # the table, then samples, then the link
    for corpus in CORPORA:
        (row,) = [line for line in table if line.startswith(f"{corpus} ")]
        assert row.endswith("v1 (this run)") and "lstm1x32" in row
        experiment = mlflow.get_experiment_by_name(f"charflow/{corpus}")
        (run,) = mlflow.search_runs([experiment.experiment_id])
        assert f"{run.data.metrics['val_bpc']:.3f}" in row
        assert f"{corpus} writes (temperature 0.8):" in text
        run_ids.append(run.info.run_id)
    (link,) = [line for line in text.splitlines() if "in MLflow:" in line]
    assert link.startswith(f"Compare these {len(CORPORA)} runs in MLflow: {stack.mlflow_ui_url}/")
    assert all(run_id in link for run_id in run_ids) and "workflowType=machine_learning" in link
    assert "FAILED: ingest failed" in text
    # The flow logged it, so --watch shows it too (folded at the terminal's width).
    assert link.split(": ", 1)[1] in "".join(output.split())


def test_an_unchanged_corpus_is_skipped_with_its_reason(demo_run, corpora_dir):
    stack, _, _ = demo_run
    with serve_mirror(corpora_dir) as base:
        params = {**DEMO_PARAMS, "mirror": base, "corpora": ["sanguo"], "force": False}
        done, output = run_demo(stack, params, timeout=300)
    assert done.returncode == 0, output
    assert "sanguo: not trained: corpus unchanged since champion v1" in output

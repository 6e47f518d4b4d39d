"""What `make demo` and the tour rest on, outside Prefect: one data root (`charflow ingest`
and `make mlflow-ui` follow CHARFLOW_HOME to the store the flows write), `charflow ingest
--mirror` without a rate limit on loopback, links that point at a running MLflow UI or
say how to start one, where the demo reads its sources from (probes within seconds), the
demo's budget split and its summary table. Real processes, real HTTP over loopback, a real
MLflow store and UI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
import requests

from flows.pipeline import split_budget, summarize, summary_table
from flows.services import REPO, ServiceError, Stack, plan_sources, probe, probe_all
from tests.prefect_fixtures import free_port

BIN = Path(sys.executable).parent
GO_TREE = Path("/usr/share/gocode/src/k8s.io/utils")


def charflow(*args: str, env: dict | None = None, cwd: Path = REPO):
    return subprocess.run(
        [str(BIN / "charflow"), *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- one data root ---------------------------------------------------------------------------


def test_ingest_honours_charflow_home_and_reads_a_mirror_folder(tmp_path, corpora_dir):
    home = tmp_path / "home"
    out = charflow(
        "ingest", "sanguo", "--mirror", str(corpora_dir), "--no-progress",
        env={"CHARFLOW_HOME": str(home)}, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    manifest = json.loads((home / "data" / "sanguo" / "manifest.json").read_text())
    assert manifest["source"] == str(corpora_dir / "sanguo" / "三国演义.txt")
    assert manifest["documents"] == 120
    assert not (tmp_path / "data").exists()  # not the working directory's data/


def test_ingest_mirror_mistakes_are_one_line(tmp_path, corpora_dir):
    both = charflow(
        "ingest", "sanguo", "--mirror", str(corpora_dir), "--source", "x.txt",
        env={"CHARFLOW_HOME": str(tmp_path)},
    )  # fmt: skip
    assert both.returncode == 1
    assert both.stderr.strip() == "charflow: error: give --source or --mirror, not both"
    no_copy = charflow(
        "ingest",
        "kubernetes-go",
        "--mirror",
        str(corpora_dir),
        env={"CHARFLOW_HOME": str(tmp_path)},
    )
    assert no_copy.returncode == 1 and len(no_copy.stderr.strip().splitlines()) == 1
    assert "kubernetes-go has no copy in a mirror" in no_copy.stderr
    assert not (tmp_path / "data").exists()


def request_gaps(mirror) -> list[float]:
    pages = [r.at for r in mirror.requests() if r.path.startswith("/paulgraham/")]
    return [b - a for a, b in pairwise(pages)]


def test_ingest_from_a_loopback_mirror_is_not_rate_limited(tmp_path, mirror):
    env = {"CHARFLOW_HOME": str(tmp_path)}
    out = charflow(
        "ingest", "paulgraham", "--mirror", mirror.base_url, "--limit", "6", "--no-progress",
        env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    gaps = request_gaps(mirror)
    assert len(gaps) >= 5
    assert min(gaps) < 0.5, gaps  # 1 request/s would space every request by >= 1 s

    # Not vacuous: the same ingest with a limit asked for is paced.
    mirror.clear_log()
    out = charflow(
        "ingest", "paulgraham", "--mirror", mirror.base_url, "--limit", "4", "--no-progress",
        "--rate-limit", "2", "--data-dir", str(tmp_path / "paced"), env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert min(request_gaps(mirror)) >= 0.45


def test_mlflow_ui_serves_the_store_flows_write(tmp_path, monkeypatch):
    """`make mlflow-ui` with CHARFLOW_HOME: the UI answers for a run written to the store
    every flow of that home writes (today's complaint: links said "Run not found")."""
    from training.mlflow_setup import mlflow_client

    home = tmp_path / "home"
    monkeypatch.setenv("CHARFLOW_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = mlflow_client()  # what the trainer uses under this CHARFLOW_HOME
    assert client.tracking_uri == Stack(home=home).tracking_uri  # what the worker is given
    experiment = client.create_experiment("charflow/probe")
    run = client.create_run(experiment, run_name="written-by-a-flow")
    client.set_terminated(run.info.run_id)

    port = free_port()
    ui = subprocess.Popen(
        ["make", "-s", "-o", ".venv/.installed", "mlflow-ui",
         f"CHARFLOW_HOME={home}", f"MLFLOW_PORT={port}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert ui.poll() is None, ui.stdout.read()
            assert time.monotonic() < deadline, "the MLflow UI did not start"
            time.sleep(1)
        got = requests.get(
            f"{base}/ajax-api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id}, timeout=10
        )
        assert got.status_code == 200, got.text
        assert got.json()["run"]["info"]["run_name"] == "written-by-a-flow"

        from flows.pipeline import mlflow_ui_problem

        monkeypatch.setenv("MLFLOW_UI_URL", base)
        assert mlflow_ui_problem() is None
        monkeypatch.setenv("MLFLOW_UI_URL", f"http://127.0.0.1:{free_port()}")
        assert "start one with `make mlflow-ui`" in mlflow_ui_problem()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()


# -- where the demo reads its sources --------------------------------------------------------


def test_probe_tells_a_listening_port_from_a_closed_one(tmp_path):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        closed = free_port()
        found = probe_all(
            {
                "up": f"http://127.0.0.1:{port}/x",
                "down": f"http://127.0.0.1:{closed}/x",
                "here": str(tmp_path),
                "gone": str(tmp_path / "nope"),
            },
            timeout=3,
        )
    assert found["up"] is None and found["here"] is None
    assert found["down"] == "127.0.0.1: Connection refused"
    assert found["gone"] == f"{tmp_path / 'nope'} does not exist"
    assert probe("git://127.0.0.1:1/repo", timeout=1) == "127.0.0.1: Connection refused"


def test_demo_plan_with_a_mirror_reads_every_corpus_from_it(corpora_dir, tmp_path):
    started = time.monotonic()
    plan = plan_sources(corpora_dir, {"kubernetes-go": GO_TREE})
    assert time.monotonic() - started < 2  # MIRROR= probes nothing
    assert plan.mirror == corpora_dir.resolve()
    assert plan.sources == {"kubernetes-go": str(GO_TREE)}
    assert {"paulgraham", "friends", "sanguo", "novel", "shuttleset", "kubernetes-go"} <= set(
        plan.corpora
    )
    assert plan.left_out == {} and plan.note.startswith("MIRROR; reading every source")
    assert "kubernetes-go from /usr/share/gocode" in plan.note

    # A mirror without a corpus's copy, and no Go tree: those two are left out, with why.
    partial = tmp_path / "mirror"
    (partial / "sanguo").mkdir(parents=True)
    (partial / "sanguo" / "三国演义.txt").write_bytes(b"")
    plan = plan_sources(partial, {"kubernetes-go": tmp_path / "no-go-tree"})
    assert plan.corpora == ["sanguo"]
    assert "paulgraham/articles.html is missing" in plan.left_out["paulgraham"]
    assert plan.left_out["kubernetes-go"].endswith(
        f"{tmp_path / 'no-go-tree'} does not exist either"
    )
    with pytest.raises(ServiceError, match="does not exist"):
        plan_sources(tmp_path / "nowhere")


def test_demo_plan_without_a_mirror_decides_within_seconds(corpora_dir, tmp_path):
    """The live sources are probed for real: on a machine without internet the plan falls
    back to the local mirror, or fails with one clear error when there is none; with
    internet it reads the live sites. Either way within 5 s."""
    live = {s: probe(s, timeout=4) for s in ("http://paulgraham.com/",)}
    started = time.monotonic()
    plan = plan_sources(None, {"kubernetes-go": GO_TREE}, default_mirror=corpora_dir)
    assert time.monotonic() - started <= 5
    if plan.mirror is None:
        assert live["http://paulgraham.com/"] is None
        assert plan.note.startswith("every source answers")
    else:
        assert plan.mirror == corpora_dir.resolve()
        assert plan.note.startswith("network unreachable: ")
        assert f"reading every source from the local mirror {corpora_dir}" in plan.note
        started = time.monotonic()
        with pytest.raises(ServiceError) as err:
            plan_sources(None, {}, default_mirror=tmp_path / "no-mirror")
        assert time.monotonic() - started <= 5
        assert "sources unreachable" in str(err.value) and "set MIRROR=DIR" in str(err.value)
        assert "\n" not in str(err.value)


# -- the budget and the summary ----------------------------------------------------------------


def test_budget_is_split_by_demo_share():
    seconds = split_budget(["paulgraham", "sanguo", "shuttleset"], 300, parallel=2)
    assert sum(seconds.values()) == pytest.approx(600, abs=0.5)  # two slots for 300 s
    assert seconds["sanguo"] > seconds["paulgraham"] > seconds["shuttleset"]
    assert split_budget(["a-plugin"], 60, parallel=1) == {"a-plugin": 60.0}


def trained(corpus: str, **extra) -> dict:
    row = {
        "trained": True, "reason": "forced (force=true)", "run_id": f"run-{corpus}",
        "experiment_id": "7", "val_loss": 1.5123, "val_bpc": 2.1818, "steps": 812,
        "model": "rnn1x256", "max_seconds": 80.0, "model_version": "3", "is_champion": True,
        "champion_version": "3", "sample": "The first line\nand the second",
    }  # fmt: skip
    return {"train": {**row, **extra}}


def test_summary_shows_figures_champions_samples_and_one_link(monkeypatch):
    monkeypatch.setenv("MLFLOW_UI_URL", f"http://127.0.0.1:{free_port()}")  # nothing there
    results = {
        "paulgraham": trained("paulgraham"),
        "friends": trained("friends", is_champion=False, model_version="5", champion_version="4"),
        "sanguo": {
            "train": {"trained": False, "reason": "corpus unchanged", "champion_version": "2"}
        },
    }
    failures = {"novel": "ingest failed: HTTP 404"}
    corpora = ["paulgraham", "friends", "sanguo", "novel"]
    table = summary_table(corpora, results, failures).splitlines()
    assert table[0].split() == ["corpus", "model", "seconds", "steps", "val", "loss", "bits/char",
                                "champion"]  # fmt: skip
    assert table[1].split() == ["paulgraham", "rnn1x256", "80", "812", "1.512", "2.182", "v3",
                                "(this", "run)"]  # fmt: skip
    assert table[2].endswith("v4 (this run: v5)")
    assert table[3].split(maxsplit=1)[1] == "not trained (corpus unchanged); champion v2"
    assert table[4].split(maxsplit=1)[1] == "FAILED: ingest failed: HTTP 404"
    text = summarize(corpora, results, failures)
    assert "paulgraham writes (temperature 0.8):\n    The first line\n    and the second" in text
    (link,) = [line for line in text.splitlines() if "MLflow:" in line]
    assert "Compare these 2 runs" in link and "/#/compare-runs?runs=" in link
    assert "run-paulgraham" in link and "workflowType=machine_learning" in link
    assert "start one with `make mlflow-ui`" in text  # the UI does not run: say how

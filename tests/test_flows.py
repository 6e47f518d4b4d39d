"""Flows against a real Prefect server (tests/prefect_fixtures.py), the loopback mirror of
../shared/corpora and a real MLflow store per test. The flows run in this process here;
tests/test_flows_e2e.py runs them through deployments on the worker."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from flows.services import REPO, Service, ServiceError, running, start, stop
from flows.tasks import RawItem, Skipped, artifact_key, raw_fingerprint, retrain_decision
from training.registry import Champion

PG_INDEX = "paulgraham/articles.html"
TINY = {"max_steps": 2, "eval_every": 2, "sample_chars": 40}


def corpus_files(corpus_dir: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(corpus_dir.iterdir())
        if p.is_file()
    }


def latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no artifact {key}"
    return found[0].data


# -- pure parts -------------------------------------------------------------------------------


def test_retrain_decision_names_its_reason():
    champion = Champion(version="3", run_id="r", val_loss=1.25, corpus_digest="a" * 64)
    assert retrain_decision("b" * 64, None, False) == (True, "no champion yet")
    trains, why = retrain_decision("b" * 64, champion, False)
    assert trains and "corpus changed" in why and "v3" in why
    trains, why = retrain_decision("a" * 64, champion, False)
    assert not trains and "unchanged" in why and "force=true" in why
    assert retrain_decision("a" * 64, champion, True) == (True, "forced (force=true)")
    trains, why = retrain_decision("b" * 64, champion, False, tried=["4", "5"])
    assert not trains and "v5" in why and "did not beat champion v3" in why
    assert retrain_decision("b" * 64, champion, True, tried=["5"])[0]


def test_raw_fingerprint_follows_bytes_not_fetch_state(tmp_path):
    page = tmp_path / "page.body"
    page.write_bytes(b"<p>essay</p>")
    first = raw_fingerprint([RawItem("u", page, {"from_cache": False}), Skipped("v", "404")])
    again = raw_fingerprint([RawItem("u", page, {"from_cache": True}), Skipped("v", "404")])
    assert first == again  # a 304 instead of a 200 is the same corpus
    page.write_bytes(b"<p>essay, edited</p>")
    assert raw_fingerprint([RawItem("u", page, {}), Skipped("v", "404")]) != first
    assert raw_fingerprint([RawItem("u", page, {}), Skipped("v", "410")]) != raw_fingerprint(
        [RawItem("u", page, {}), Skipped("v", "404")]
    )


def test_artifact_keys_are_valid():
    assert artifact_key("train", "kubernetes-go") == "train-kubernetes-go"
    assert artifact_key("corpus", "My_Corpus") == "corpus-my-corpus"


def test_prefect_yaml_is_the_generated_deployments_of_the_builtin_corpora():
    """prefect.yaml is what `charflow deploy --write prefect.yaml` makes of the corpora in
    scrapers/: regenerate it when a built-in corpus or a schedule changes."""
    from flows.deployments import builtin_specs, generate, render_yaml

    assert (REPO / "prefect.yaml").read_text() == render_yaml(generate(builtin_specs()))


def test_deployments_give_every_corpus_ingest_and_a_weekly_retrain():
    from flows.deployments import SWEEP, builtin_specs, generate, has_flow

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    by_flow: dict[str, dict[str, dict]] = {}
    for dep in spec["deployments"]:
        flow = dep["entrypoint"].rsplit(":", 1)[1]
        by_flow.setdefault(flow, {})[dep["name"]] = dep
        assert dep["work_pool"]["name"] == "charflow"
    names = {s.name for s in builtin_specs()}
    assert {"paulgraham", "friends", "sanguo", "novel", "kubernetes-go", "shuttleset"} <= names
    assert set(by_flow["ingest_flow"]) == names
    assert set(by_flow["train_flow"]) == names
    hours = []
    for name, dep in by_flow["train_flow"].items():
        assert dep["parameters"]["corpus"] == name and dep["parameters"]["force"] is False
        (cron,) = [s["cron"] for s in dep["schedules"]]
        assert cron.split()[2:] == ["*", "*", "0"], f"train/{name} is not weekly: {cron}"
        hours.append(int(cron.split()[1]))
    assert len(set(hours)) == len(hours)  # one corpus an hour
    assert [s["cron"] for s in by_flow["ingest_flow"]["paulgraham"]["schedules"]] == ["0 2 * * *"]
    demo = by_flow["pipeline_flow"]["demo"]["parameters"]
    assert demo["corpora"] is None and demo["limit"] is None  # every corpus, whole
    assert demo["preset"] == "demo" and demo["parallel"] == 2 and demo["torch_threads"] == 1
    # A corpus the registry gains (a plug-in) gets the same deployments.
    plugin = replace(builtin_specs()[0], name="zz-plugin")
    extra = {d.full_name for d in generate([*builtin_specs(), plugin])} - {
        d.full_name for d in generate(builtin_specs())
    }
    sweeps = {"sweep/zz-plugin", "sweep-child/zz-plugin"} if has_flow(SWEEP) else set()
    assert extra == {"ingest/zz-plugin", "train/zz-plugin"} | sweeps


def test_pipeline_sources_come_from_mirror_or_overrides():
    from flows.pipeline import corpus_source
    from scrapers.errors import IngestError

    base = "http://127.0.0.1:9/"
    assert corpus_source("paulgraham", base, {}) == base + PG_INDEX
    assert corpus_source("paulgraham", None, {}) is None  # the corpus's own default
    assert corpus_source("kubernetes-go", base, {"kubernetes-go": "/go"}) == "/go"
    with pytest.raises(IngestError, match="kubernetes-go has no mirror_path"):
        corpus_source("kubernetes-go", base, {})


# -- background services (what `make down` relies on) ----------------------------------------


def http_service(tmp_path: Path, port: int) -> Service:
    from flows.services import _http_ok

    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    return Service("static", argv, {}, _http_ok(f"http://127.0.0.1:{port}/"), port, timeout=30)


def test_service_is_reused_then_stopped_by_its_pid(tmp_path):
    from tests.prefect_fixtures import free_port

    service = http_service(tmp_path, free_port())
    first = start(service, tmp_path, log=lambda _: None)
    try:
        assert start(service, tmp_path, log=lambda _: None)["pid"] == first["pid"]  # reused
        assert (tmp_path / "static.log").exists()
    finally:
        assert stop(tmp_path, "static", log=lambda _: None)
    assert running(tmp_path, "static") is None
    assert not (tmp_path / "static.pid").exists()
    assert not stop(tmp_path, "static", log=lambda _: None)  # nothing left to stop


def test_stop_leaves_a_process_that_reused_the_pid_alone(tmp_path):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A pid file from an earlier session whose pid now belongs to another program.
        (tmp_path / "prefect-server.pid").write_text(
            f'{{"pid": {stranger.pid}, "argv": ["python", "-m", "prefect", "server", "start"]}}'
        )
        assert not stop(tmp_path, "prefect-server", log=lambda _: None)
        time.sleep(0.2)
        assert stranger.poll() is None, "stop() killed a process it did not start"
        assert not (tmp_path / "prefect-server.pid").exists()  # the stale record is gone
    finally:
        stranger.kill()
        stranger.wait()


def test_start_refuses_a_port_someone_else_holds(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        service = http_service(tmp_path, sock.getsockname()[1])
        with pytest.raises(ServiceError, match="taken by another program"):
            start(service, tmp_path, log=lambda _: None)


# -- flows against the real server ----------------------------------------------------------


def test_fetch_takes_a_slot_of_the_shared_host_limit(prefect_env, mirror, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.tasks import SharedHostLimit
    from scrapers.fetch import Fetcher

    # Its own host name (the mirror, as "localhost"), so no other test shares this limit.
    name, per_second = "host:localhost", 4.0
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name=name, limit=1, slot_decay_per_second=per_second, active=True
            )
        )
    try:
        url = mirror.url("paulgraham/avg.html").replace("127.0.0.1", "localhost")
        with Fetcher(rate_limit=None, before_request=SharedHostLimit()) as fetcher:
            for _ in range(4):  # robots.txt, the page, then three conditional requests
                assert fetcher.get(url, tmp_path).ok
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)
    times = [r.at for r in mirror.requests()]
    assert len(times) == 5
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert min(gaps) >= 0.8 / per_second, gaps  # without the hook: milliseconds apart


def test_ingest_is_cached_until_corpus_or_bytes_change(flow_home, mirror):
    from flows.ingest_flow import ingest_flow

    source = mirror.url(PG_INDEX)
    first = ingest_flow("paulgraham", source=source, limit=2)
    assert first["cleaned"] and first["documents"] == 2
    corpus_dir = flow_home / "data" / "paulgraham"
    before = corpus_files(corpus_dir)

    mirror.clear_log()
    again = ingest_flow("paulgraham", source=source, limit=2)
    assert not again["cleaned"], "unchanged raw bytes were cleaned again"
    assert again["digest"] == first["digest"]
    assert corpus_files(corpus_dir) == before
    conditional = [r for r in mirror.requests() if r.conditional]
    assert conditional and all(r.status == 304 for r in conditional)

    (corpus_dir / "corpus.txt").unlink()  # the cache must not vouch for a missing corpus
    rebuilt = ingest_flow("paulgraham", source=source, limit=2)
    assert rebuilt["cleaned"] and rebuilt["digest"] == first["digest"]
    assert corpus_files(corpus_dir)["corpus.txt"] == before["corpus.txt"]

    table = latest_artifact("corpus-paulgraham")  # table artifacts keep their rows as JSON
    assert '"documents"' in table and first["digest"][:16] in table


def test_source_down_fails_the_flow_and_keeps_the_corpus(flow_home):
    from prefect.client.orchestration import get_client

    from flows.ingest_flow import ingest_flow
    from tests.mirror_fixtures import start_mirror

    with start_mirror() as mirror:
        source = mirror.url(PG_INDEX)
        ingest_flow("paulgraham", source=source, limit=2)
    corpus_dir = flow_home / "data" / "paulgraham"
    before = corpus_files(corpus_dir)

    # The mirror is gone: nothing listens on its port any more.
    state = ingest_flow("paulgraham", source=source, limit=3, retries=0, return_state=True)
    assert state.is_failed()
    assert "cannot read the essay index" in state.message
    assert "unreachable" in state.message or "Connection" in state.message
    with get_client(sync_client=True) as client:
        server_side = client.read_flow_run(state.state_details.flow_run_id).state
    assert server_side.is_failed() and "cannot read the essay index" in server_side.message
    assert corpus_files(corpus_dir) == before


def test_retrain_trains_on_change_and_moves_champion_only_on_improvement(flow_home, mirror):
    from flows.ingest_flow import ingest_flow
    from flows.train_flow import train_flow
    from training.registry import get_champion

    source = mirror.url(PG_INDEX)

    def retrain(limit: int, max_steps: int) -> dict:
        ingest_flow("paulgraham", source=source, limit=limit)
        overrides = {**TINY, "max_steps": max_steps, "eval_every": max_steps}
        return train_flow("paulgraham", preset="tiny", overrides=overrides)

    first = retrain(limit=2, max_steps=2)  # barely trained: easy to beat
    assert first["trained"] and first["reason"] == "no champion yet" and first["is_champion"]

    better = retrain(limit=3, max_steps=40)  # changed corpus, a real model
    assert better["trained"] and better["reason"].startswith("corpus changed")
    assert better["val_loss"] < first["val_loss"]
    assert better["is_champion"] and get_champion("paulgraham").version == better["model_version"]

    worse = retrain(limit=4, max_steps=1)  # changed corpus, a worse model
    assert worse["trained"] and worse["reason"].startswith("corpus changed")
    assert not worse["is_champion"] and "does not beat" in worse["champion_reason"]
    champion = get_champion("paulgraham")
    assert champion.version == better["model_version"]
    report = latest_artifact("train-paulgraham")
    assert "**Champion:** no" in report and worse["run_id"] in report

    # The same changed corpus again: the loser would lose again, so nothing is trained.
    again = train_flow("paulgraham", preset="tiny", overrides=TINY)
    assert not again["trained"]
    assert f"already trained on by v{worse['model_version']}" in again["reason"]

    # Back to the corpus the champion was trained on: a scheduled retrain has nothing to do.
    ingest_flow("paulgraham", source=source, limit=3)
    skipped = train_flow("paulgraham", preset="tiny", overrides=TINY)
    assert not skipped["trained"]
    assert f"unchanged since champion v{champion.version}" in skipped["reason"]
    assert "not trained" in latest_artifact("train-paulgraham")


def test_task_runner_is_configuration(monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.pipeline import task_runner_from_env

    monkeypatch.delenv("CHARFLOW_TASK_RUNNER", raising=False)
    assert isinstance(task_runner_from_env(), ThreadPoolTaskRunner)
    monkeypatch.setenv("CHARFLOW_TASK_RUNNER", "spark")
    with pytest.raises(ValueError, match="choose threads, dask or ray"):
        task_runner_from_env()
    monkeypatch.setenv("CHARFLOW_TASK_RUNNER", "dask")
    if importlib.util.find_spec("prefect_dask") is None:
        with pytest.raises(ImportError, match="pip install prefect-dask"):
            task_runner_from_env()
    else:
        assert type(task_runner_from_env()).__name__ == "DaskTaskRunner"

"""The add-a-corpus guide (docs/corpora.md, "Add a corpus") walked end to end.

The plug-in package the guide shows is written, file for file, from the page into a
temporary folder and installed with pip into this virtual environment; then the guide's
commands run through the real `charflow` and `prefect` entry points against the session's
Prefect server and process worker (tests/prefect_fixtures.py). The corpus gets its
deployments without any edit of charflow's prefect.yaml, and its `train/` deployment trains
a model on the worker. The package is uninstalled at the end, and the corpus is gone again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flows.deployments import RETRAIN_FIRST_HOUR
from flows.services import REPO

GUIDE = REPO / "docs" / "corpora.md"
BIN = Path(sys.executable).parent
PLUGIN = "tinyplays"


def guide_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block in the guide's "Add a corpus" section."""
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("### Add a corpus")
    section = text[start : text.index("\n### ", start + 1)]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def guide_files() -> dict[str, str]:
    """The files the guide shows: blocks whose first line is `# <path>`."""
    return {
        body.splitlines()[0][2:].strip(): body
        for lang, body in guide_blocks()
        if lang in ("toml", "python") and body.startswith(f"# {PLUGIN}/")
    }


def guide_commands() -> list[list[str]]:
    (commands,) = [body for lang, body in guide_blocks() if lang == "bash"]
    return [shlex.split(line, comments=True) for line in commands.splitlines() if line.strip()]


def run(argv: list[str], env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def as_run_here(argv: list[str], corpora_dir: Path) -> list[str]:
    """A guide command as this test runs it: the venv's entry points, pip offline."""
    argv = [str(corpora_dir) if a == "../shared/corpora" else a for a in argv]
    if argv[0] == "pip":
        return [sys.executable, "-m", "pip", *argv[1:2], "-q", "--no-deps",
                "--no-build-isolation", *argv[2:]]  # fmt: skip
    return [str(BIN / argv[0]), *argv[1:]]


def test_guide_shows_a_whole_plugin_and_its_commands():
    files = guide_files()
    assert set(files) == {f"{PLUGIN}/pyproject.toml", f"{PLUGIN}/{PLUGIN}.py"}
    assert '[project.entry-points."charflow.corpora"]' in files[f"{PLUGIN}/pyproject.toml"]
    firsts = [argv[:2] for argv in guide_commands()]
    assert firsts == [
        ["pip", "install"], ["charflow", "corpora"], ["charflow", "ingest"],
        ["charflow", "deploy"], ["prefect", "deployment"],
    ]  # fmt: skip


@pytest.fixture
def plugin_installed(tmp_path: Path):
    """The guide's package, written from the page; uninstalled whatever happens."""
    for name, text in guide_files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    try:
        yield tmp_path
    finally:
        subprocess.run(
            [sys.executable, "-m", "pip", "uninstall", "-q", "-y", PLUGIN], capture_output=True
        )


def test_plugin_corpus_gets_its_deployments_and_trains_on_the_worker(
    prefect_deployed, plugin_installed, corpora_dir
):
    from mlflow import MlflowClient
    from prefect.client.orchestration import SyncPrefectClient

    stack = prefect_deployed
    workdir = plugin_installed
    env = {
        **os.environ,
        **stack.client_env(),
        "PREFECT_PORT": str(stack.prefect_port),
        "MLFLOW_PORT": str(stack.mlflow_port),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    install, corpora, ingest, deploy, train = guide_commands()

    run(as_run_here(install, corpora_dir), env, workdir)
    listed = run(as_run_here(corpora, corpora_dir), env, workdir).stdout
    assert PLUGIN in listed and "one document per speech" in listed

    run(as_run_here(ingest, corpora_dir), env, workdir)
    manifest = json.loads((stack.home / "data" / PLUGIN / "manifest.json").read_text())
    assert manifest["documents"] > 1000
    assert manifest["source"] == str(corpora_dir / "tinyshakespeare" / "input.txt")

    deployed = run(as_run_here(deploy, corpora_dir), env, workdir).stdout
    assert f"on {stack.api_url}" in deployed
    names = sorted(
        json.loads(
            run([sys.executable, "-c", "from scrapers.registry import list_corpora; import json;"
                 "print(json.dumps([s.name for s in list_corpora()]))"], env, REPO).stdout
        )
    )  # fmt: skip
    hour = RETRAIN_FIRST_HOUR + names.index(PLUGIN)
    with SyncPrefectClient(stack.api_url) as client:
        ingest_dep = client.read_deployment_by_name(f"ingest/{PLUGIN}")
        train_dep = client.read_deployment_by_name(f"train/{PLUGIN}")
    assert ingest_dep.parameters == {"corpus": PLUGIN} and ingest_dep.work_pool_name == "charflow"
    assert train_dep.parameters["corpus"] == PLUGIN and train_dep.parameters["force"] is False
    assert [s.schedule.cron for s in train_dep.schedules] == [f"0 {hour} * * 0"]
    assert PLUGIN not in (REPO / "prefect.yaml").read_text()  # nothing of charflow's edited

    watched = run(as_run_here(train, corpora_dir), env, workdir, timeout=600)
    assert "Completed" in watched.stdout, watched.stdout[-3000:]
    client = MlflowClient(stack.tracking_uri, stack.tracking_uri)
    experiment = client.get_experiment_by_name(f"charflow/{PLUGIN}")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["val_fraction"] == "0.1"  # the spec's training_defaults
    versions = client.search_model_versions(f"name = 'charflow-{PLUGIN}'")
    assert [v.run_id for v in versions] == [mlflow_run.info.run_id], watched.stdout[-3000:]
    champion = client.get_model_version_by_alias(f"charflow-{PLUGIN}", "champion")
    assert champion.run_id == mlflow_run.info.run_id

    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-q", "-y", PLUGIN], capture_output=True
    )
    assert PLUGIN not in run([str(BIN / "charflow"), "corpora"], env, workdir).stdout

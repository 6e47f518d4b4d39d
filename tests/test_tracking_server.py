"""MLflow and Prefect servers on PostgreSQL (issue 7, "Tracking server").

A real PostgreSQL cluster on loopback (tests/pg_fixtures.py, via scripts/postgres.sh), a
real `mlflow server` on it with proxied artifacts, the real trainer pointed at it by
MLFLOW_TRACKING_URI alone, and everything read back over the server's REST API.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import requests
import torch
import yaml

from tests.conftest import CORPORA
from tests.pg_fixtures import PgCluster, PgServer

CORPUS_FILE = CORPORA / "tinyshakespeare" / "input.txt"
CORPUS = "pg-shakespeare"
CHARFLOW = Path(sys.executable).with_name("charflow")


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        argv, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv[:3]} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done


def _get(server: PgServer, endpoint: str, **params) -> dict:
    resp = requests.get(f"{server.url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    assert resp.ok, f"GET {endpoint} {params}: {resp.status_code} {resp.text[:500]}"
    return resp.json()


def _history(server: PgServer, run_id: str, key: str) -> dict[int, float]:
    found = _get(server, "metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
    return {m["step"]: m["value"] for m in found}


def _download(server: PgServer, artifact_uri: str, path: str) -> bytes:
    """One artifact through the server's proxy (mlflow-artifacts:/X -> /mlflow-artifacts/X)."""
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri
    where = artifact_uri.removeprefix("mlflow-artifacts:").strip("/")
    resp = requests.get(
        f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{where}/{path}", timeout=30
    )
    assert resp.ok, f"download {where}/{path}: {resp.status_code} {resp.text[:300]}"
    return resp.content


def test_trainer_logs_through_mlflow_server_on_postgres(
    mlflow_pg_server: PgServer, postgres: PgCluster, tmp_path: Path
) -> None:
    server = mlflow_pg_server
    env = {"MLFLOW_TRACKING_URI": server.url, "CHARFLOW_HOME": str(tmp_path)}
    _run(
        [
            str(CHARFLOW), "train", str(CORPUS_FILE), "--corpus", CORPUS, "--preset", "tiny",
            "--max-steps", "20", "--eval-every", "10", "--out", str(tmp_path / "ckpt"),
        ],
        env,
        tmp_path,
    )  # fmt: skip
    # Nothing fell back to a local store: the only store is the server.
    assert not (tmp_path / "mlruns").exists()

    # The run, found by experiment name as any client would.
    experiment = _get(server, "experiments/get-by-name", experiment_name=f"charflow/{CORPUS}")
    experiment = experiment["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:")
    found = requests.post(
        f"{server.url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment["experiment_id"]]},
        timeout=30,
    ).json()["runs"]
    assert len(found) == 1
    run_id = found[0]["info"]["run_id"]
    run = _get(server, "runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    digest = hashlib.sha256(CORPUS_FILE.read_bytes()).hexdigest()
    assert params["corpus"] == CORPUS
    assert params["corpus_digest"] == digest
    assert params["max_steps"] == "20"
    assert params["world_size"] == "1"

    # Metric history: one point per evaluation.
    val, bpc = _history(server, run_id, "val_loss"), _history(server, run_id, "val_bpc")
    for key, history in (("train_loss", _history(server, run_id, "train_loss")), ("val_loss", val)):
        assert sorted(history) == [10, 20], key
        assert all(0 < v < 10 for v in history.values()), history
    assert all(math.isclose(bpc[s], val[s] / math.log(2), rel_tol=1e-6) for s in val)

    # Samples: listed by the server, downloaded through its proxy, stored where it was told.
    listed = _get(server, "artifacts/list", run_id=run_id, path="samples")["files"]
    names = sorted(Path(f["path"]).name for f in listed if "step_" in f["path"])
    assert names == ["step_000010.txt", "step_000020.txt"]  # and the final samples
    vocab = set(CORPUS_FILE.read_text(encoding="utf-8"))
    artifact_uri = run["info"]["artifact_uri"]
    for name in names:
        text = _download(server, artifact_uri, f"samples/{name}").decode("utf-8")
        assert text and set(text) <= vocab, text
        where = artifact_uri.removeprefix("mlflow-artifacts:").strip("/")
        on_disk = server.artifacts / where / "samples" / name
        assert on_disk.read_text(encoding="utf-8") == text

    # The registered model and its champion alias point back at this run.
    name = f"charflow-{CORPUS}"
    model = _get(server, "registered-models/get", name=name)["registered_model"]
    assert model["name"] == name
    champion = _get(server, "registered-models/alias", name=name, alias="champion")
    champion = champion["model_version"]
    assert champion["version"] == "1" and champion["run_id"] == run_id
    tags = {t["key"]: t["value"] for t in champion["tags"]}
    assert tags["corpus_digest"] == digest
    assert math.isclose(float(tags["val_loss"]), min(val.values()), rel_tol=1e-6)

    # The model's checkpoint, through the proxy, loads without running pickled code.
    assert champion["source"].startswith("models:/")  # an MLflow 3 logged model
    model_id = champion["source"].removeprefix("models:/")
    logged = _get(server, f"logged-models/{model_id}")["model"]["info"]
    mlmodel = yaml.safe_load(_download(server, logged["artifact_uri"], "MLmodel"))
    checkpoint_path = mlmodel["flavors"]["python_function"]["artifacts"]["checkpoint"]["path"]
    checkpoint = tmp_path / "downloaded.pt"
    checkpoint.write_bytes(_download(server, logged["artifact_uri"], checkpoint_path))
    ckpt = torch.load(checkpoint, weights_only=True)
    assert ckpt["corpus_digest"] == digest and ckpt["step"] in (10, 20)

    # The runs really live in PostgreSQL.
    rows = postgres.query("mlflow", "SELECT status FROM runs WHERE run_uuid = %s", (run_id,))
    assert rows == [("FINISHED",)]

    # A client that knows only the server's URL samples from the champion.
    sampled = _run(
        [str(CHARFLOW), "sample", "--model-uri", f"models:/{name}@champion", "--length", "40",
         "--seed", "1"],
        env,
        tmp_path,
    ).stdout  # fmt: skip
    assert len(sampled.strip()) > 0 and set(sampled.strip()) <= vocab


FLOW = textwrap.dedent(
    """
    from prefect import flow, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(name="pg-smoke")
    def smoke(x: int) -> int:
        return double(x)

    print(smoke(21))
    """
)


def test_prefect_server_on_postgres_runs_a_flow(
    prefect_pg_server: PgServer, postgres: PgCluster, tmp_path: Path
) -> None:
    server = prefect_pg_server
    script = tmp_path / "smoke.py"
    script.write_text(FLOW)
    env = {"PREFECT_API_URL": f"{server.url}/api", "PREFECT_HOME": str(tmp_path / "prefect")}
    out = _run([sys.executable, str(script)], env, tmp_path).stdout
    assert out.strip().splitlines()[-1] == "42"

    resp = requests.post(
        f"{server.url}/api/flow_runs/filter",
        json={"flows": {"name": {"any_": ["pg-smoke"]}}},
        timeout=30,
    )
    assert resp.ok, resp.text
    runs = resp.json()
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    task_runs = requests.post(
        f"{server.url}/api/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [runs[0]["id"]]}}},
        timeout=30,
    ).json()
    assert [t["state_type"] for t in task_runs] == ["COMPLETED"]

    # The flow run is a row in PostgreSQL, not in a SQLite file under PREFECT_HOME.
    rows = postgres.query(
        "prefect", "SELECT state_type FROM flow_run WHERE id = %s", (runs[0]["id"],)
    )
    assert rows == [("COMPLETED",)]
    assert not list((server.run_dir / "prefect").glob("*.db"))

"""PostgreSQL-backed servers for the tracking-server tests.

`postgres` is a throwaway cluster made by scripts/postgres.sh (the script behind `make pg-up`)
on a free loopback port; `mlflow_pg_server` and `prefect_pg_server` run that script's
`mlflow-server` and `prefect-server` commands on it, as `make mlflow-server` and
`make prefect-server-pg` do. All are session-scoped and stopped at the end.

No PostgreSQL binaries is a failure, not a skip: `.ci/run` installs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import requests

from flows.services import Service, start, stop
from tests.prefect_fixtures import free_port

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "postgres.sh"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class PgCluster:
    folder: Path
    port: int
    urls: dict[str, str]  # PG_URL, MLFLOW_BACKEND_STORE_URI, PREFECT_SERVER_DATABASE_CONNECTION_URL

    def env(self) -> dict[str, str]:
        """What scripts/postgres.sh needs to find this cluster."""
        return {"PG_DIR": str(self.folder), "PG_PORT": str(self.port), "PYTHON": sys.executable}

    def query(self, database: str, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one statement run directly against `database` (not through a server)."""
        conn = psycopg2.connect(self.urls["PG_URL"], dbname=database)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()


@dataclass(frozen=True)
class PgServer:
    url: str  # http://127.0.0.1:PORT
    run_dir: Path  # the server's log: <run_dir>/<name>.log
    artifacts: Path | None = None  # MLflow's proxied artifact destination


def _script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _answers(url: str):
    def check() -> bool:
        try:
            return requests.get(url, timeout=2).ok
        except requests.RequestException:
            return False

    return check


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """A fresh cluster with databases `mlflow` and `prefect`, on a free loopback port."""
    # Not under pytest's tmp: it is private (0700), and as root the server runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="charflow-pg-"))
    folder.chmod(0o755)
    port = free_port()
    env = {"PG_DIR": str(folder), "PG_PORT": str(port)}
    try:
        done = _script("up", env)
        if done.returncode != 0:
            pytest.fail(f"scripts/postgres.sh up failed:\n{done.stderr}", pytrace=False)
        urls = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        yield PgCluster(folder, port, urls)
    finally:
        _script("down", env)
        shutil.rmtree(folder, ignore_errors=True)


def _serve(
    name: str, cluster: PgCluster, run_dir: Path, env: dict[str, str], health: str, port: int
) -> None:
    # `bash SCRIPT`, not SCRIPT: the argv must match /proc/<pid>/cmdline for `stop` to find it.
    service = Service(
        name, ["bash", str(SCRIPT), name], {**cluster.env(), **env}, _answers(health), port
    )
    start(service, run_dir, log=lambda _: None)


@pytest.fixture(scope="session")
def mlflow_pg_server(
    postgres: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgServer]:
    """`mlflow server` with its runs in PostgreSQL and artifacts proxied into a tmp folder."""
    run_dir = tmp_path_factory.mktemp("mlflow-pg")
    port = free_port()
    server = PgServer(f"http://{HOST}:{port}", run_dir, run_dir / "artifacts")
    env = {"MLFLOW_PORT": str(port), "MLFLOW_ARTIFACTS": str(server.artifacts)}
    try:
        _serve("mlflow-server", postgres, run_dir, env, f"{server.url}/health", port)
        yield server
    finally:
        stop(run_dir, "mlflow-server", log=lambda _: None)


@pytest.fixture(scope="session")
def prefect_pg_server(
    postgres: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgServer]:
    """`prefect server start` with its state in PostgreSQL; the API at `<url>/api`."""
    run_dir = tmp_path_factory.mktemp("prefect-pg")
    port = free_port()
    server = PgServer(f"http://{HOST}:{port}", run_dir)
    env = {
        "PREFECT_PORT": str(port),
        "PREFECT_HOME": str(run_dir / "prefect"),
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    try:
        _serve("prefect-server", postgres, run_dir, env, f"{server.url}/api/health", port)
        yield server
    finally:
        stop(run_dir, "prefect-server", log=lambda _: None)

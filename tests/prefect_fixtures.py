"""A real Prefect stack for the flow tests: one server on a free loopback port with its own
PREFECT_HOME and SQLite database under a temporary folder, plus a process worker on the
`charflow` work pool. Started once per session, shared by every flow test, stopped at
the end with `flows.services.down` (the same code `make down` runs)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from flows.services import Stack, down, up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Prefect server + worker; the worker's flow runs keep data/ and mlruns/ in a fresh
    CHARFLOW_HOME."""
    stack = Stack(
        home=tmp_path_factory.mktemp("charflow-home"),
        prefect_port=free_port(),
        mlflow_port=free_port(),  # nothing listens there; it only shapes MLflow run links
        worker_poll_seconds=1.0,
        extra_env={"PREFECT_SERVER_UI_ENABLED": "false"},
    )
    try:
        up(stack, with_mlflow=False)
        yield stack
    finally:
        drain_prefect_clients()
        down(stack)


def drain_prefect_clients() -> None:
    """Send this process's queued Prefect logs and events while the server still runs;
    at interpreter exit they would retry against a stopped server for a minute."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


@pytest.fixture(scope="session")
def prefect_deployed(prefect_stack: Stack) -> Stack:
    """The stack with the host rate limits and every deployment of prefect.yaml, as
    `make deploy` makes them."""
    from flows.deploy import deploy

    deploy(prefect_stack, log=lambda _: None)
    return prefect_stack


@pytest.fixture
def prefect_env(prefect_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """Point this test process at the stack (Prefect client, results, artifacts)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    for key, value in prefect_stack.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    updates = {PREFECT_API_URL: prefect_stack.api_url, PREFECT_HOME: prefect_stack.prefect_home}
    with temporary_settings(updates=updates):
        yield prefect_stack


@pytest.fixture
def flow_home(prefect_env: Stack, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Flows called in this test process keep data/, mlruns/ and checkpoints/ in tmp_path,
    so each test has its own corpora, MLflow store and champions."""
    monkeypatch.setenv("CHARFLOW_HOME", str(tmp_path))
    return tmp_path

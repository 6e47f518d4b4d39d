"""Fixtures of the fault suite: a real `mlflow server` on loopback per module (tests that
stop or pause a server start their own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.servers import MlflowServer


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server.start()
    finally:
        server.stop()

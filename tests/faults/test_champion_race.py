"""Invariant: the registry's champion is always the best finished version, even when runs
register at the same instant (issue 15, defect 2). Promotion is a compare-and-set that
re-reads: under a file lock for a SQLite store, verify-after-write against a server.

Registrars start at one instant (after their imports); against the server they talk
through a proxy that adds latency to each request, as a slow network does, so their
read-compare-write steps overlap instead of finishing one after another."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from tests.faults.procs import start_together, wait_all
from tests.faults.servers import LaggyProxy, MlflowServer
from training import registry
from training.tracking import RunTracker

REGISTRARS = 5
CORPUS = "race"
NAME = f"charflow-{CORPUS}"

REGISTER = """
ckpt = {ckpt!r}
torch.save({{"model": {{"w": torch.randn(3)}}, "vocab": ["a"]}}, ckpt)
with RunTracker({corpus!r}) as run:
    result = registry.register_model(run, ckpt, val_loss=float("{loss}"), corpus_digest="0" * 64)
print(result.version, result.is_champion, result.reason)
"""


def first_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    """A champion to beat (this also creates the store, so that only promotion races)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    ckpt = tmp_path / "best-first.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "vocab": ["a"]}, ckpt)
    with RunTracker(CORPUS) as run:
        assert registry.register_model(run, ckpt, val_loss=9.0, corpus_digest="0" * 64).version


def register_together(tmp_path: Path, env: dict[str, str], losses: list[float]) -> list[str]:
    scripts = [
        REGISTER.format(ckpt=str(tmp_path / f"best-{i}.pt"), corpus=CORPUS, loss=loss)
        for i, loss in enumerate(losses)
    ]
    results = wait_all(start_together(scripts, env, tmp_path), timeout_s=400)
    failures = [err[-2000:] for code, _, err in results if code != 0]
    assert not failures, "\n---\n".join(failures)
    return [out.strip() for _, out, _ in results]


def assert_champion_is_best(
    client: MlflowClient, reports: list[str], registered: int = 1 + REGISTRARS
) -> None:
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert len(versions) == registered
    finished = [
        (float(v.tags["val_loss"]), int(v.version))
        for v in versions
        if v.status == "READY" and math.isfinite(float(v.tags["val_loss"]))
    ]
    best_loss, best_version = min(finished)
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert int(champion.version) == best_version, (
        f"champion v{champion.version} (val_loss {champion.tags['val_loss']}) is not the best "
        f"finished version v{best_version} (val_loss {best_loss}); versions: {sorted(finished)}"
        f"; registrars said: {reports}"
    )


def losses(seed: int) -> list[float]:
    rng = random.Random(seed)
    values = [round(rng.uniform(1.0, 5.0), 4) for _ in range(REGISTRARS)]
    values[rng.randrange(REGISTRARS)] = math.nan  # a diverged run never takes the alias
    return values


@pytest.fixture
def laggy_server(shared_server: MlflowServer) -> Iterator[str]:
    proxy = LaggyProxy(shared_server.port, delay_s=0.3)
    try:
        yield proxy.url
    finally:
        proxy.close()


@pytest.mark.timeout(600)
def test_concurrent_registrations_on_a_server_crown_the_best(
    laggy_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_champion(tmp_path, monkeypatch, laggy_server)
    env = {"MLFLOW_TRACKING_URI": laggy_server, "CHARFLOW_HOME": str(tmp_path)}
    client = MlflowClient(laggy_server, laggy_server)
    # Two rounds: without the compare-and-set, the last writer of a round wins whatever its
    # loss, and is the best one about once in four.
    for round_ in range(2):
        folder = tmp_path / f"round{round_}"
        folder.mkdir()
        reports = register_together(folder, env, losses(seed=2 + round_))
        assert_champion_is_best(client, reports, registered=1 + REGISTRARS * (round_ + 1))


@pytest.mark.timeout(600)
def test_concurrent_registrations_on_sqlite_crown_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    first_champion(tmp_path, monkeypatch, uri)
    env = {"MLFLOW_TRACKING_URI": uri, "CHARFLOW_HOME": str(tmp_path)}
    reports = register_together(tmp_path, env, losses(seed=1))
    assert_champion_is_best(MlflowClient(uri, uri), reports)

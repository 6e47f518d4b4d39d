"""Invariant: the registry's champion is always the best finished version, even when runs
register at the same instant (issue 15, defect 2). Promotion is a compare-and-set that
re-reads: under a file lock for a SQLite store, verify-after-write against a server.

Registrars start at one instant (after their imports); against the server they talk
through a proxy that adds latency to each request, as a slow network does, so their
read-compare-write steps overlap instead of finishing one after another."""

from __future__ import annotations

import math
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from tests.faults.procs import release, start_together, wait_all
from tests.faults.servers import LaggyProxy, MlflowServer
from training import registration
from training.tracking import RunTracker

REGISTRARS = 5
CORPUS = "race"
NAME = f"charflow-{CORPUS}"

# One registration per round; rounds after the first start when the test has checked the
# last one and released the next (barrier "round<k>").
REGISTER = """
for round_, loss in enumerate({losses!r}):
    if round_:
        barrier(f"round{{round_}}", extra=1)
    ckpt = {ckpt!r} + f"-{{round_}}.pt"
    torch.save({{"model": {{"w": torch.randn(3)}}, "vocab": ["a"]}}, ckpt)
    with RunTracker({corpus!r}) as run:
        result = registration.register_model(
            run, ckpt, val_loss=float(loss), corpus_digest="0" * 64
        )
    print("round", round_, result.version, result.is_champion, result.reason, flush=True)
"""


def first_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    """A champion to beat (this also creates the store, so that only promotion races)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    ckpt = tmp_path / "best-first.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "vocab": ["a"]}, ckpt)
    with RunTracker(CORPUS) as run:
        assert registration.register_model(run, ckpt, val_loss=9.0, corpus_digest="0" * 64).version


def start_registrars(tmp_path: Path, env: dict[str, str], rounds: list[list[float]]):
    """REGISTRARS processes, process i registering rounds[k][i] in round k."""
    scripts = [
        REGISTER.format(
            losses=[str(r[i]) for r in rounds], ckpt=str(tmp_path / f"best-{i}"), corpus=CORPUS
        )
        for i in range(REGISTRARS)
    ]
    return start_together(scripts, env, tmp_path)


def wait_round(procs: list[subprocess.Popen], round_: int) -> list[str]:
    """Each registrar's report of round `round_` (a registrar that fails: its stderr)."""
    reports = []
    for proc in procs:
        while (line := proc.stdout.readline()) and not line.startswith(f"round {round_} "):
            pass  # anything else a registrar prints
        if not line:
            _, err = proc.communicate(timeout=60)
            raise AssertionError(f"a registrar failed in round {round_}:\n{err[-3000:]}")
        reports.append(line.strip())
    return reports


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


def race(tmp_path: Path, env: dict[str, str], client: MlflowClient, seeds: list[int]) -> None:
    procs = start_registrars(tmp_path, env, [losses(seed) for seed in seeds])
    try:
        for round_ in range(len(seeds)):
            if round_:
                release(tmp_path, f"round{round_}")
            reports = wait_round(procs, round_)
            assert_champion_is_best(client, reports, registered=1 + REGISTRARS * (round_ + 1))
        for code, _, err in wait_all(procs, timeout_s=120):
            assert code == 0, err[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture
def laggy_server(shared_server: MlflowServer) -> Iterator[str]:
    proxy = LaggyProxy(shared_server.port, delay_s=0.2)
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
    # Two rounds: without the compare-and-set, the last writer of a round wins whatever its
    # loss, and is the best one about once in four.
    race(tmp_path, env, MlflowClient(laggy_server, laggy_server), seeds=[2, 3])


@pytest.mark.timeout(600)
def test_concurrent_registrations_on_sqlite_crown_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    first_champion(tmp_path, monkeypatch, uri)
    env = {"MLFLOW_TRACKING_URI": uri, "CHARFLOW_HOME": str(tmp_path)}
    race(tmp_path, env, MlflowClient(uri, uri), seeds=[1])

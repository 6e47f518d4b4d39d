"""Invariant: trainings of one corpus that run at the same time keep out of each other's way:
each writes its own checkpoint folder, registers the weights of its own best checkpoint as
its own version, and the champion is the best of them (issue 15).

Four real `charflow train` runs of one ingested corpus under one CHARFLOW_HOME, on the
default store (a SQLite file there, created by whichever comes first), released at one
instant after their imports, with different seeds and learning rates so that their losses
differ. No --out: each run draws its folder checkpoints/<corpus>/<time>-<hex>, and the four
start within the same second.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from scrapers.registry import Document
from scrapers.store import CorpusWriter
from tests.conftest import CORPORA
from tests.faults.procs import start_together, wait_all
from training.pyfunc import download_checkpoint

CORPUS = "together"
NAME = f"charflow-{CORPUS}"
SETTINGS = [(1, 2e-3), (2, 8e-3), (3, 4e-4), (4, 4e-3)]  # (seed, lr) of each training

TRAIN = """
os.environ.pop("MLFLOW_TRACKING_URI", None)  # the default store: CHARFLOW_HOME/mlruns
os.environ.pop("MLFLOW_REGISTRY_URI", None)
sys.argv = [
    "charflow", "train", {source!r}, "--preset", "tiny", "--device", "cpu", "--no-progress",
    "--max-steps", "150", "--eval-every", "25", "--seed", "{seed}", "--lr", "{lr}",
]
from flows.cli import main
main()
"""


def ingest(home: Path) -> Path:
    """data/<CORPUS>: the first speeches of tiny-shakespeare as documents, as an ingest
    publishes them."""
    speeches = (CORPORA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    with CorpusWriter(home / "data" / CORPUS) as writer:
        chars = 0
        for i, speech in enumerate(speeches.split("\n\n")):
            writer.add(Document(text=speech, source=f"speech-{i}"))
            chars += len(speech)
            if chars > 150_000:
                break
        writer.commit(name=CORPUS, source="tinyshakespeare speeches")
    return home / "data" / CORPUS


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.timeout(600)
def test_four_concurrent_trainings_keep_their_own_folders_and_crown_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    source = ingest(home)
    scripts = [TRAIN.format(source=str(source), seed=seed, lr=lr) for seed, lr in SETTINGS]
    procs = start_together(scripts, {"CHARFLOW_HOME": str(home), "OMP_NUM_THREADS": "1"}, tmp_path)
    results = wait_all(procs, timeout_s=400)
    for code, _, err in results:
        assert code == 0, err[-3000:]

    # Four folders, one per training, each named in its training's report.
    folders = sorted(p for p in (home / "checkpoints" / CORPUS).iterdir() if p.is_dir())
    assert len(folders) == len(SETTINGS), folders
    reported = []
    for _, out, _ in results:
        best, last = re.search(r"^checkpoints: (\S+) (\S+)$", out, re.M).groups()
        assert Path(best).parent == Path(last).parent
        reported.append(Path(best).parent)
    assert sorted(reported) == folders

    uri = f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    client = MlflowClient(uri, uri)

    # Each folder is one run: its seed and lr, FINISHED, registered as one version of the
    # weights in its own best.pt, with its own best val loss.
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{NAME}'")}
    assert len(versions) == len(SETTINGS), sorted(versions)
    by_run = {v.run_id: v for v in versions.values()}
    losses = {}
    for folder in folders:
        best = torch.load(folder / "best.pt", weights_only=True)
        last = torch.load(folder / "last.pt", weights_only=True)
        assert last["step"] == 150 and best["run_id"] == last["run_id"]
        run = client.get_run(last["run_id"])
        assert run.info.status == "FINISHED"
        assert (run.data.params["seed"], float(run.data.params["lr"])) == (
            str(last["config"]["seed"]),
            last["config"]["lr"],
        )
        val = [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert min(val) == pytest.approx(best["best_val_loss"], rel=1e-9)
        version = by_run[run.info.run_id]
        assert run.data.tags["model_version"] == str(version.version)
        assert float(version.tags["val_loss"]) == best["best_val_loss"]
        registered = download_checkpoint(
            f"models:/{NAME}/{version.version}", tmp_path / folder.name
        )
        theirs, ours = weights(registered), weights(folder / "best.pt")
        assert theirs.keys() == ours.keys()
        assert all(torch.equal(theirs[k], ours[k]) for k in ours), folder
        losses[str(version.version)] = float(version.tags["val_loss"])
    assert len(set(by_run)) == len(SETTINGS)  # four runs, one version each
    assert len(set(losses.values())) == len(SETTINGS)  # the settings did make them differ

    best_version = min((loss, int(v)) for v, loss in losses.items() if math.isfinite(loss))[1]
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert int(champion.version) == best_version, losses

"""Multi-process training (DDP, gloo on CPU, 2 ranks) through the real `charflow train --nproc 2`.

Two ranks with batch B must train exactly like one process with batch 2B on the same
data (up to float summation order), log one MLflow run, and their checkpoints must resume
in one process and the other way round.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.checkpoint import load_checkpoint

CHARFLOW = Path(sys.executable).parent / "charflow"
RESUME = ["--resume", "--device", "cpu", "--no-progress"]
NEW = ["--preset", "tiny", "--eval-every", "10", "--seed", "7", "--device", "cpu", "--no-progress"]
MEASURED = ("step", "train_loss", "val_loss", "lr", "grad_norm")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def home(tmp_path_factory, shakespeare_text) -> Path:
    home = tmp_path_factory.mktemp("ddp")
    (home / "shk.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")
    return home


def ddp(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "CHARFLOW_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [str(CHARFLOW), "train", str(home / "shk.txt"), "--nproc", "2", *args]
    done = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def ddp_run(home) -> subprocess.CompletedProcess:
    """2 ranks x batch 4, 20 steps, tracked in MLflow."""
    return ddp(home, *NEW, "--batch-size", "4", "--max-steps", "20", "--out", "ddp")


def single(home: Path, *args: str) -> None:
    """`charflow train` in this process (one rank), untracked."""
    from flows.cli import main

    argv = ["charflow", "train", str(home / "shk.txt"), "--no-track", *args]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARFLOW_HOME", str(home))
        mp.chdir(home)  # --out folders are relative, as in the DDP runs
        mp.setattr(sys, "argv", argv)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            main()
        except SystemExit as exit_:
            assert exit_.code in (0, None), f"{argv} exited with {exit_.code}"
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_run(home) -> None:
    """1 process x batch 8, 20 steps."""
    single(home, *NEW, "--batch-size", "8", "--max-steps", "20", "--out", "one")


def rows(ckpt: dict) -> list[float]:
    return [r[k] for r in ckpt["history"] for k in MEASURED]


def assert_same_run(a: dict, b: dict) -> None:
    """Same steps, losses within 1e-4 relative, and close parameters."""
    assert [r["step"] for r in a["history"]] == [r["step"] for r in b["history"]]
    assert rows(a) == pytest.approx(rows(b), rel=1e-4)
    assert a["model"].keys() == b["model"].keys()
    for name, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][name], rtol=1e-4, atol=1e-5, msg=name)
    assert a["data_pos"] == b["data_pos"] and a["epoch"] == b["epoch"]
    for x, y in zip(a["state"], b["state"], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_two_ranks_match_one_process_with_twice_the_batch(home, ddp_run, one_run):
    two, one = load_checkpoint(home / "ddp/last.pt"), load_checkpoint(home / "one/last.pt")
    assert two["world_size"] == 2 and two["config"]["batch_size"] == 4
    assert two["state"][0].shape[1] == 8  # the carried state of all 8 streams
    assert_same_run(two, one)
    assert "step 20/20" in ddp_run.stderr
    assert ddp_run.stdout.count("best val loss") == 1  # rank 0 reports, once


def test_one_mlflow_run_with_world_size_and_global_batch(home, ddp_run):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # not a registry set by an earlier test
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["world_size"], params["global_batch_size"], params["batch_size"]) == (
        "2",
        "8",
        "4",
    )
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [10, 20]
    versions = client.search_model_versions("name='charflow-shk'")
    assert [v.run_id for v in versions] == [run.info.run_id]


def resume(home: Path, start: str, out: str, *, nproc: int) -> dict:
    """Copy checkpoint folder `start` to `out` and resume it there to step 30."""
    shutil.copytree(home / start, home / out)
    args = (*RESUME, "--max-steps", "30", "--no-track", "--out", out)
    if nproc == 2:
        ddp(home, *args)
    else:
        single(home, *args)
    return load_checkpoint(home / out / "last.pt")


def test_checkpoints_resume_across_world_sizes(home, ddp_run, one_run):
    """A DDP checkpoint resumed in one process continues like the one-process checkpoint of
    the same step resumed in one process; a one-process checkpoint resumed under DDP
    continues like it does in one process. (Each pair shares its schedule: the decay
    horizon moves to the new max_steps on resume.)"""
    from_ddp = resume(home, "ddp", "ddp-then-one", nproc=1)  # batch 8 from 2 x 4
    assert from_ddp["world_size"] == 1 and from_ddp["config"]["batch_size"] == 8
    assert_same_run(from_ddp, resume(home, "one", "one-then-one", nproc=1))

    single(home, *NEW, "--batch-size", "8", "--max-steps", "10", "--out", "ten")
    to_ddp = resume(home, "ten", "ten-then-ddp", nproc=2)  # batch 4 per rank from 8
    assert to_ddp["world_size"] == 2 and to_ddp["config"]["batch_size"] == 4
    assert_same_run(to_ddp, resume(home, "ten", "ten-then-one", nproc=1))
    assert [r["step"] for r in to_ddp["history"]] == [10, 20, 30]


def test_global_batch_must_split_over_the_processes(home):
    single(home, *NEW, "--batch-size", "3", "--max-steps", "10", "--out", "odd")
    env = {**os.environ, "CHARFLOW_HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [str(CHARFLOW), "train", str(home / "shk.txt"), "--nproc", "2", *RESUME]
    cmd += ["--max-steps", "20", "--no-track", "--out", "odd"]
    done = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "charflow: error: odd/last.pt has a global batch of 3 streams, "
        "which does not split over 2 processes"
    )

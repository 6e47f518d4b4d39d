"""A run's checkpoint folder: one per run, one writer, never silently replaced; a diverged
run keeps its last good checkpoint; an unwritable folder fails before training."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from training.checkpoint import load_checkpoint
from training.config import build_config
from training.errors import TrainingError
from training.run_dir import RunDirLock
from training.train import train

TINY = ("--preset", "tiny", "--no-track", "--device", "cpu", "--no-progress")


@pytest.fixture
def text(write_text, shakespeare_text):
    return write_text("shk.txt", shakespeare_text[:10_000])


def tiny(**overrides):
    return build_config("tiny", **{"max_steps": 10, "eval_every": 10, "device": "cpu", **overrides})


def test_every_run_gets_its_own_folder(trainer_home, text):
    folders = {train(tiny(), text, track=False).last_checkpoint.parent for _ in range(3)}
    assert len(folders) == 3
    assert {f.parent for f in folders} == {trainer_home / "checkpoints" / "shk"}


def test_resume_continues_the_latest_run(trainer_home, text, charflow):
    train(tiny(), text, track=False)
    latest = train(tiny(), text, track=False).last_checkpoint
    code, out, err = charflow("train", text, "--resume", "--max-steps", "20", *TINY[2:])
    assert code == 0, err
    assert load_checkpoint(latest)["step"] == 20


def test_a_folder_holding_a_run_is_not_replaced_silently(trainer_home, text, charflow):
    out = train(tiny(), text, track=False).last_checkpoint.parent
    before = (out / "best.pt").read_bytes()
    code, _, err = charflow("train", text, "--out", out, *TINY)
    assert code == 1 and "already holds a run" in err and "--overwrite" in err
    assert err.count("\n") == 1 and (out / "best.pt").read_bytes() == before
    code, _, err = charflow("train", text, "--out", out, "--overwrite", *TINY)
    assert code == 0, err
    assert (out / "best.pt").read_bytes() != before


def test_a_second_writer_is_refused_naming_the_holder(trainer_home, text, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    # The holder is another process: flock excludes per open file, across processes.
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from training.run_dir import RunDirLock
            with RunDirLock(Path({str(out)!r})):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parent.parent)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingError, match=rf"in use by pid {holder.pid} "):
            train(tiny(), text, out_dir=out, track=False)
        assert not (out / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    with RunDirLock(out):  # the kernel dropped the dead holder's lock
        pass


def test_divergence_keeps_the_last_good_checkpoint(trainer_home, text):
    out = trainer_home / "diverge"
    train(tiny(), text, out_dir=out, track=False)
    good = (out / "last.pt").read_bytes()
    with pytest.raises(TrainingError, match="diverged at step .*last good checkpoint"):
        train(tiny(max_steps=40, lr=1e12, warmup_steps=0, grad_clip=0.0), text, out_dir=out,
              overwrite=True, track=False)  # fmt: skip
    assert (out / "last.pt").read_bytes() == good


def test_infinite_settings_are_one_line_errors(trainer_home, text, charflow):
    code, _, err = charflow("train", text, "--lr", "inf", *TINY)
    assert code == 1 and err.strip() == "charflow: error: lr = inf is out of range"
    assert not (trainer_home / "checkpoints").exists()


def test_unwritable_out_is_refused_before_training(trainer_home, text, tmp_path, charflow):
    """A path under a regular file cannot be a folder, whoever runs it (root included)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = charflow("train", text, "--out", blocker / "run", *TINY)
    assert code == 1 and "cannot write checkpoints to" in err and err.count("\n") == 1
    assert "step" not in err  # refused before the first step

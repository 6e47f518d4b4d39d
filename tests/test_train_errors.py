"""Bad input through the real `charflow` CLI: one line on stderr, exit 1, nothing overwritten."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.config import build_config
from training.train import train


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charflow: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def run_dir(trainer_home, write_text, shakespeare_text) -> tuple[Path, Path]:
    """A finished small run: (its text file, its checkpoint folder with best.pt and last.pt)."""
    text = write_text("shk.txt", shakespeare_text[:10_000])
    cfg = build_config("tiny", max_steps=10, eval_every=10, device="cpu")
    return text, train(cfg, text, track=False).last_checkpoint.parent


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


TINY = ("--preset", "tiny", "--no-track", "--device", "cpu", "--no-progress")


@pytest.mark.parametrize(
    "make_source, args, fragments",
    [
        (lambda d: d / "missing.txt", (), ["no such file or corpus folder", "missing.txt"]),
        (lambda d: d / "empty.txt", (), ["empty.txt is empty"]),
        (lambda d: d / "latin1.txt", (), ["latin1.txt is not valid UTF-8", "0xe9 at offset 3"]),
        (lambda d: d / "shk.txt", ("--seq-len", "5000"), ["seq_len 5000", "lower --seq-len"]),
        (lambda d: d / "shk.txt", ("--model", "transformer"), ["unknown model type"]),
        (lambda d: d / "shk.txt", ("--preset", "huge"), ["unknown preset 'huge'"]),
        (lambda d: d / "shk.txt", ("--max-steps", "0"), ["max_steps must be at least 1"]),
        (lambda d: d / "shk.txt", ("--dropout", "1.5"), ["dropout"]),
        (lambda d: d / "shk.txt", ("--device", "tpu"), ["device 'tpu'"]),
        (lambda d: d / "shk.txt", ("--val-fraction", "0"), ["no val split"]),
    ],
    ids=[
        "missing",
        "empty",
        "not-utf8",
        "seq-len",
        "model",
        "preset",
        "max-steps",
        "dropout",
        "device",
        "no-val",
    ],
)
def test_bad_training_input(run_dir, charflow, make_source, args, fragments):
    text, out = run_dir
    (text.parent / "empty.txt").write_bytes(b"")
    (text.parent / "latin1.txt").write_bytes("Caf\u00e9 au lait".encode("latin-1"))
    before = snapshot(out)
    # same corpus name: a failure must not touch the finished run's checkpoints
    cli_args = TINY + args if "--preset" not in args else TINY[2:] + args
    code, _, err = charflow("train", make_source(text.parent), "--corpus", "shk", *cli_args)
    assert_one_line_error(code, err, *fragments)
    assert snapshot(out) == before


def test_resume_errors(run_dir, charflow, write_text, shakespeare_text, tmp_path):
    text, out = run_dir
    before = snapshot(out)
    code, _, err = charflow("train", text, "--resume", "--lr", "0.5", *TINY[2:])
    assert_one_line_error(code, err, "cannot change on resume: lr (0.002 -> 0.5)")
    code, _, err = charflow("train", text, "--resume", "--max-steps", "5", *TINY[2:])
    assert_one_line_error(code, err, "is at step 10; raise max_steps")
    other = write_text("other.txt", shakespeare_text[20_000:30_000])
    code, _, err = charflow(
        "train", other, "--corpus", "shk", "--resume", "--max-steps", "20", *TINY[2:]
    )
    assert_one_line_error(code, err, "trained on another corpus text")
    code, _, err = charflow("train", text, "--resume", *TINY)
    assert_one_line_error(code, err, "--preset does not combine with --resume")
    code, _, err = charflow("train", text, "--resume", "--out", tmp_path / "none", *TINY[2:])
    assert_one_line_error(code, err, "no such checkpoint")
    assert snapshot(out) == before


def test_bad_checkpoints_and_primes(run_dir, charflow, tmp_path):
    _, out = run_dir
    broken = tmp_path / "broken.pt"
    broken.write_bytes((out / "best.pt").read_bytes()[:3000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path, fragment in [
        (broken, "is not a readable checkpoint"),
        (foreign, "is not a charflow checkpoint"),
        (tmp_path / "nothing.pt", "no such checkpoint"),
    ]:
        code, stdout, err = charflow("sample", "--checkpoint", path, "--device", "cpu")
        assert_one_line_error(code, err, str(path), fragment)
        assert stdout == ""
    code, stdout, err = charflow("sample", "--checkpoint", out / "best.pt", "--prime", "Hi Ωж")
    assert_one_line_error(code, err, "not in the vocabulary", "'Ω' (U+03A9)", "'ж' (U+0436)")
    assert stdout == ""  # the prime is checked before anything is printed
    code, _, err = charflow("sample")
    assert_one_line_error(code, err, "exactly one of a checkpoint path or an MLflow model URI")
    code, _, err = charflow("sample", "--checkpoint", out / "best.pt", "--top-k", "0")
    assert_one_line_error(code, err, "top_k must be at least 1")


def test_console_script_reports_bad_utf8(tmp_path):
    """The installed `charflow` script itself: exit status 1 and one line naming file and offset."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"plain ascii, then \xff\xfe")
    charflow = Path(sys.executable).parent / "charflow"
    proc = subprocess.run(
        [charflow, "train", bad, "--no-track", "--preset", "tiny"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"CHARFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"charflow: error: {bad} is not valid UTF-8: byte 0xff at offset 18 (invalid start byte)"
    )
    assert not (tmp_path / "checkpoints").exists()

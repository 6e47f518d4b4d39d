"""`charflow train --set key=value`: every TrainConfig field settable as text, typed by the config.

Through the real CLI entry point: the values must reach the checkpoint, and bad keys or
values must end in one `charflow: error:` line with exit status 1 before anything is written.
"""

from __future__ import annotations

import dataclasses

import pytest

from training.checkpoint import load_checkpoint
from training.config import PRESETS, TrainConfig, parse_assignments
from training.errors import TrainingError

# One non-default value per field: (text on the command line, value the config must hold).
# Each differs from both the dataclass default and the `tiny` preset, so a setting that is
# dropped on the way to the trainer shows up as a mismatch.
EVERY_FIELD = {
    "model": ("gru", "gru"),
    "emb_size": ("12", 12),
    "hidden_size": ("24", 24),
    "num_layers": ("3", 3),
    "dropout": ("0.1", 0.1),
    "batch_size": ("4", 4),
    "seq_len": ("16", 16),
    "val_fraction": ("0.2", 0.2),
    "test_fraction": ("0.1", 0.1),
    "lr": ("5e-3", 5e-3),
    "weight_decay": ("0", 0.0),
    "warmup_steps": ("2", 2),
    "lr_decay": ("linear", "linear"),
    "lr_decay_steps": ("4", 4),
    "min_lr_ratio": ("0.2", 0.2),
    "grad_clip": ("0.5", 0.5),
    "max_steps": ("6", 6),
    "max_seconds": ("300", 300.0),
    "max_chars": ("1_000_000", 1_000_000),
    "eval_every": ("3", 3),
    "eval_chars": ("2000", 2000),
    "patience": ("0", 0),
    "sample_chars": ("10", 10),
    "seed": ("7", 7),
    "device": ("cpu", "cpu"),
    "bf16": ("off", False),
}


def set_args(settings: dict[str, str]) -> list[str]:
    return [arg for key, text in settings.items() for arg in ("--set", f"{key}={text}")]


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charflow: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def shk(write_text, shakespeare_text):
    return write_text("shk.txt", shakespeare_text[:10_000])


def test_every_field_has_a_case():
    assert set(EVERY_FIELD) == {f.name for f in dataclasses.fields(TrainConfig)}
    for name, (_, value) in EVERY_FIELD.items():
        assert value != getattr(TrainConfig(), name) and value != PRESETS["tiny"].get(name), name


def test_set_reaches_every_field(trainer_home, shk, charflow):
    raw = {key: text for key, (text, _) in EVERY_FIELD.items()}
    code, out, err = charflow("train", shk, "--preset", "tiny", "--no-track", "--no-progress",
                              *set_args(raw))  # fmt: skip
    assert code == 0, err
    assert "6 steps (max_steps)" in out
    [last] = (trainer_home / "checkpoints" / "shk").glob("*/last.pt")
    saved = load_checkpoint(last)["config"]
    assert saved == {key: value for key, (_, value) in EVERY_FIELD.items()}


def test_set_with_resume(trainer_home, shk, charflow):
    base = ("--preset", "tiny", "--no-track", "--no-progress", "--set", "device=cpu")
    code, _, err = charflow("train", shk, *base, "--set", "max_steps=4", "--set", "eval_every=2")
    assert code == 0, err
    [last] = (trainer_home / "checkpoints" / "shk").glob("*/last.pt")
    resume = ("--resume", "--no-track", "--no-progress")
    code, out, err = charflow("train", shk, *resume, "--set", "max_steps=6", "--set", "patience=9")
    assert code == 0, err
    assert "6 steps (max_steps)" in out
    assert load_checkpoint(last)["config"]["patience"] == 9
    # the math of a run is fixed at its start, however it is asked to change
    code, _, err = charflow("train", shk, *resume, "--set", "max_steps=8", "--set", "lr=0.5")
    assert_one_line_error(code, err, "cannot change on resume: lr")
    assert load_checkpoint(last)["step"] == 6


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "lrr=0.1"], ["unknown training setting 'lrr'", "did you mean lr"]),
        (["--set", "colour=red"], ["unknown training setting 'colour'", "choose from model, "]),
        (["--set", "num_layers=two"], ["num_layers: 'two' (expected an integer)"]),
        (["--set", "num_layers=2.5"], ["num_layers: '2.5' (expected an integer)"]),
        (["--set", "weight_decay=lots"], ["weight_decay: 'lots' (expected a number)"]),
        (["--set", "lr=nan"], ["lr: 'nan' (expected a number)"]),
        (["--set", "bf16=maybe"], ["bf16: 'maybe' (expected true or false)"]),
        (["--set", "grad_clip=none"], ["grad_clip: 'none' (expected a number)"]),
        (["--set", "lr_decay_steps=x"], ["lr_decay_steps: 'x' (expected an integer or none)"]),
        (["--set", "lr_decay="], ["lr_decay: '' (expected text)"]),
        (["--set", "lr"], ["setting 'lr' is not of the form key=value"]),
        (["--set", "lr=1e-3", "--set", "lr=2e-3"], ["setting lr is given twice"]),
        (["--lr", "1e-3", "--set", "lr=2e-3"], ["lr given both as a flag and with --set"]),
        (["--set", "lr_decay=step"], ["unknown lr_decay 'step'"]),
        (["--set", "min_lr_ratio=2"], ["min_lr_ratio = 2.0 is out of range"]),
    ],
    ids=[
        "close-key",
        "far-key",
        "int-word",
        "int-fraction",
        "float",
        "nan",
        "bool",
        "none-not-optional",
        "optional-int",
        "empty-text",
        "no-equals",
        "key-twice",
        "flag-and-set",
        "choice",
        "range",
    ],
)
def test_bad_set(trainer_home, shk, charflow, args, fragments):
    code, out, err = charflow("train", shk, "--preset", "tiny", "--no-track", *args)
    assert_one_line_error(code, err, *fragments)
    assert out == ""
    assert not (trainer_home / "checkpoints").exists()


@pytest.mark.parametrize(
    "word, value",
    [("true", True), ("Yes", True), ("on", True), ("1", True)]
    + [("false", False), ("NO", False), ("off", False), ("0", False)],
)
def test_bool_words(word, value):
    assert TrainConfig.parse_overrides({"bf16": word}) == {"bf16": value}


def test_types_follow_the_fields():
    parsed = TrainConfig.parse_overrides(
        {"max_steps": "1_000", "lr": "3e-3", "max_seconds": "None", "lr_decay_steps": "none"}
    )
    assert parsed == {"max_steps": 1000, "lr": 3e-3, "max_seconds": None, "lr_decay_steps": None}
    assert type(parsed["max_steps"]) is int
    assert type(TrainConfig.parse_overrides({"dropout": "0"})["dropout"]) is float


def test_assignments_keep_text_after_the_first_equals():
    assert parse_assignments([" device = cuda:0 ", "model=a=b"]) == {
        "device": "cuda:0",
        "model": "a=b",
    }
    with pytest.raises(TrainingError, match="not of the form key=value"):
        parse_assignments(["=3"])

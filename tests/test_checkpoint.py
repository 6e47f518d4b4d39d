"""Checkpoint format: weights_only loading, contents, atomic writes, RNG state, bad files."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import numpy as np
import pytest
import torch

from training.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    repair_best,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from training.config import build_config
from training.errors import TrainingError
from training.train import train


@pytest.fixture
def trained(trainer_home, write_text, shakespeare_text):
    cfg = build_config("tiny", max_steps=20, eval_every=10, device="cpu")
    return train(cfg, write_text("shk.txt", shakespeare_text[:10_000]), track=False)


def test_checkpoint_loads_with_weights_only_and_holds_the_run(trained):
    ckpt = torch.load(trained.last_checkpoint, weights_only=True)  # no pickled code runs
    assert ckpt["format"] == "charflow-checkpoint" and ckpt["version"] == 1
    assert ckpt["step"] == 20 and ckpt["corpus"] == "shk" and len(ckpt["corpus_digest"]) == 64
    assert ckpt["config"]["hidden_size"] == 32 and ckpt["config"]["model"] == "lstm"
    assert ckpt["vocab"] == sorted(ckpt["vocab"]) and all(len(c) == 1 for c in ckpt["vocab"])
    assert {"step", "exp_avg", "exp_avg_sq"} <= set(ckpt["optimizer"]["state"][0])
    h, c = ckpt["state"]  # carried LSTM state: (layers, batch, hidden)
    assert h.shape == c.shape == (1, 8, 32)
    assert ckpt["data_pos"] > 0 and ckpt["best_val_loss"] < 10
    assert ckpt["bad_evals"] == 0 and [r["step"] for r in ckpt["history"]] == [10, 20]
    assert {"torch", "cuda", "numpy", "python"} == set(ckpt["rng"])
    assert ckpt["param_count"] == sum(t.numel() for t in ckpt["model"].values())
    model = model_from_checkpoint(load_checkpoint(trained.best_checkpoint))
    assert model.head.out_features == len(ckpt["vocab"])


def test_rng_state_round_trip():
    saved = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_save_is_atomic(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for a lambda
        save_checkpoint(path, {"step": 2, "bad": lambda: None})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable checkpoint"),
        (b"\x00garbage" * 100, "not a readable checkpoint"),
        (pickle.dumps(Counter("abc"), protocol=2), "not a readable checkpoint"),  # code
    ],
    ids=["empty", "garbage", "pickled-object"],
)
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(TrainingError, match=message) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_truncated_and_foreign_checkpoints(trained, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained.best_checkpoint.read_bytes()[:5000])
    with pytest.raises(TrainingError, match="not a readable checkpoint"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, foreign)
    with pytest.raises(TrainingError, match="not a charflow checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(TrainingError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_best_checkpoint_left_behind_by_a_kill_is_repaired(trained):
    """last.pt is written first: a kill before best.pt leaves it missing or an evaluation
    behind while last.pt counts its own step as the best."""
    out = trained.last_checkpoint.parent
    last = load_checkpoint(out / "last.pt")
    assert last["best_step"] == last["step"] == 20
    (out / "best.pt").unlink()
    repair_best(out, last)
    assert load_checkpoint(out / "best.pt")["step"] == 20
    save_checkpoint(out / "best.pt", {**last, "step": 10})  # an evaluation behind
    repair_best(out, last)
    assert load_checkpoint(out / "best.pt")["step"] == 20
    save_checkpoint(out / "best.pt", {**last, "step": 10})
    repair_best(out, {**last, "best_step": 10})  # last.pt is not the best: best.pt stays
    assert load_checkpoint(out / "best.pt")["step"] == 10

"""The training loop on small real texts (CPU, 'tiny' preset)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from training.checkpoint import load_checkpoint
from training.config import build_config
from training.loop import learning_rate
from training.train import train


def unigram_entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log(c / len(text)) for c in counts.values())


def test_loss_falls_well_below_unigram_entropy(trainer_home, write_text, shakespeare_text):
    text = shakespeare_text[:100_000]
    cfg = build_config("tiny", max_steps=200, eval_every=50, lr=2e-2, device="cpu")
    result = train(cfg, write_text("shk.txt", text), track=False, progress=False)
    floor = unigram_entropy(text)  # ~3.3 nats/char: what a model without context can reach
    assert result.best_val_loss < floor - 0.8
    assert result.test_loss < floor - 0.8
    assert result.steps == 200 and result.stopped_because == "max_steps"
    assert [row["step"] for row in result.history] == [50, 100, 150, 200]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.chars_per_sec > 0
    assert result.best_checkpoint.is_file() and result.last_checkpoint.is_file()
    assert result.best_checkpoint.parent.parent == trainer_home / "checkpoints" / "shk"


def params(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_resume_continues_exactly(trainer_home, write_text, shakespeare_text):
    """N steps + resume to 2N == 2N steps straight: same parameters, losses and data position.

    The train split is short enough that the run wraps around it (fresh state) and dropout
    draws from the RNG, so data position, carried state and RNG must all be restored.
    """
    path = write_text("small.txt", shakespeare_text[:6_000])
    base = dict(max_steps=40, lr_decay_steps=40, eval_every=10, dropout=0.2, device="cpu")
    cfg = build_config("tiny", **base)
    straight = train(cfg, path, out_dir=trainer_home / "straight", track=False, progress=False)

    first = train(
        cfg.replace(max_steps=20),
        path,
        out_dir=trainer_home / "split",
        track=False,
        progress=False,
    )
    assert first.steps == 20
    resumed = train(
        cfg, path, out_dir=trainer_home / "split", resume=True, track=False, progress=False
    )
    assert resumed.steps == 40
    a, b = params(straight.last_checkpoint), params(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    measured = ("step", "train_loss", "val_loss", "lr", "grad_norm")  # all but chars/s
    assert [[r[k] for k in measured] for r in resumed.history] == [
        [r[k] for k in measured] for r in straight.history
    ]
    sa, sb = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert sa["epoch"] == sb["epoch"] > 0 and sa["data_pos"] == sb["data_pos"]
    assert all(torch.equal(x, y) for x, y in zip(sa["state"], sb["state"], strict=True))
    assert resumed.best_val_loss == straight.best_val_loss


def test_chinese_trains_and_samples_from_a_chinese_prime(
    trainer_home, write_text, sanguo_text, charflow
):
    text = sanguo_text[:60_000]
    cfg = build_config("tiny", max_steps=120, eval_every=40, lr=2e-2, device="cpu")
    result = train(cfg, write_text("sanguo.txt", text), track=False, progress=False)
    assert result.best_val_loss < unigram_entropy(text)
    code, out, err = charflow(
        "sample", "--checkpoint", result.best_checkpoint, "--prime", "曹操引兵",
        "--length", "40", "--seed", "3", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("曹操引兵") and len(out.rstrip("\n")) == 44
    vocab = set(load_checkpoint(result.best_checkpoint)["vocab"])
    assert set(out.rstrip("\n")) <= vocab
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in out[4:]) > 10  # it writes Chinese


def test_cli_trains_with_corpus_defaults(trainer_home, write_text, shakespeare_text, charflow):
    """`--corpus tinyshakespeare` applies that corpus's split: last 10% val, no test."""
    path = write_text("input.txt", shakespeare_text[:30_000])
    code, out, err = charflow(
        "train", path, "--corpus", "tinyshakespeare", "--preset", "tiny", "--max-steps", "20",
        "--no-track", "--device", "cpu", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "best val loss" in out and "20 steps (max_steps)" in out
    assert "train/val/test 27,000/3,000/0 chars" in err
    [best] = (trainer_home / "checkpoints" / "tinyshakespeare").glob("*/best.pt")
    ckpt = load_checkpoint(best)
    assert ckpt["config"]["val_fraction"] == 0.1 and ckpt["config"]["test_fraction"] == 0.0
    assert ckpt["corpus"] == "tinyshakespeare"


def test_early_stopping_when_val_stops_improving(trainer_home, write_text):
    # Train on strict alternation, validate on doubled letters: learning the one makes the
    # other less likely, so val loss rises after the first evaluations.
    text = "ab" * 3000 + "aabb" * 300
    cfg = build_config(
        "tiny", max_steps=400, eval_every=10, patience=2, lr=3e-2, warmup_steps=0, device="cpu"
    ).replace(val_fraction=1200 / 7200, test_fraction=0.0)
    result = train(cfg, write_text("ab.txt", text), track=False, progress=False)
    assert result.stopped_because == "early_stopping"
    assert result.steps < 400
    best = min(row["val_loss"] for row in result.history)
    assert result.best_val_loss == best
    assert [row["val_loss"] for row in result.history[-2:]] > [best, best]
    assert load_checkpoint(result.best_checkpoint)["step"] < result.steps


def test_max_seconds_stops_and_still_saves(trainer_home, write_text, shakespeare_text):
    cfg = build_config("tiny", max_steps=10**6, max_seconds=1.0, device="cpu")
    result = train(cfg, write_text("s.txt", shakespeare_text[:20_000]), track=False)
    assert result.stopped_because == "max_seconds"
    assert 0 < result.steps < 10**6
    assert load_checkpoint(result.last_checkpoint)["step"] == result.steps


def test_learning_rate_schedule():
    cfg = build_config("tiny", lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 0) == pytest.approx(1.0)
    assert learning_rate(cfg, 60, 0) == pytest.approx(0.55)  # half way down the cosine
    assert learning_rate(cfg, 110, 0) == pytest.approx(0.1)
    assert learning_rate(cfg.replace(lr_decay="linear"), 35, 0) == pytest.approx(0.775)
    assert learning_rate(cfg.replace(lr_decay="constant"), 100, 0) == pytest.approx(1.0)
    timed = cfg.replace(max_seconds=100.0)
    assert learning_rate(timed, 20, 100.0) == pytest.approx(0.1)  # time ran out first
    assert learning_rate(cfg.replace(lr_decay_steps=210), 110, 0) == pytest.approx(0.55)


def test_tracked_run_is_in_mlflow_and_samples_from_the_model_uri(
    trainer_home, write_text, shakespeare_text, charflow, monkeypatch
):
    from mlflow import MlflowClient

    from training import mlflow_setup

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{trainer_home / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    cfg = build_config("tiny", max_steps=40, eval_every=20, device="cpu")
    result = train(cfg, write_text("shk.txt", shakespeare_text[:20_000]), corpus="shk")
    client = MlflowClient(mlflow_setup.configure_mlflow())
    run = client.get_run(result.run_id)
    p = run.data.params
    assert p["hidden_size"] == "32" and p["corpus"] == "shk" and p["world_size"] == "1"
    assert p["bf16"] == "False" and p["max_seconds"] == "None"  # as used on a CPU
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    assert int(p["param_count"]) > 0 and len(p["corpus_digest"]) == 64
    assert {"val_loss", "val_bpc", "train_loss", "lr", "grad_norm", "chars_per_sec"} <= set(
        run.data.metrics
    )
    assert [m.step for m in client.get_metric_history(result.run_id, "val_loss")] == [20, 40]
    artifacts = {f.path for f in client.list_artifacts(result.run_id, "samples")}
    finals = {f"samples/final_T{t}.txt" for t in (0.5, 0.8, 1.0)}
    assert artifacts == {"samples/step_000020.txt", "samples/step_000040.txt"} | finals
    assert {"sample_copy_rate", "sample_bigram_loss", "val_bigram_loss"} <= set(
        client.get_run(result.run_id).data.metrics
    )
    assert [f.path for f in client.list_artifacts(result.run_id, "cells")] == ["cells/cells.html"]
    assert run.inputs.dataset_inputs[0].dataset.name == "shk"
    assert result.model_version == "1" and result.is_champion
    code, out, err = charflow(
        "sample", "--model-uri", "models:/charflow-shk@champion", "--length", "30",
        "--seed", "1", "--prime", "ROMEO:",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) == 36


def test_time_budget_schedules_at_least_twenty_evaluations(
    trainer_home, write_text, shakespeare_text
):
    """eval_every far beyond the run: the time budget alone schedules the evaluations."""
    cfg = build_config("tiny", max_steps=10**6, eval_every=10**6, max_seconds=2.0, device="cpu")
    result = train(cfg, write_text("s.txt", shakespeare_text[:20_000]), track=False)
    assert result.stopped_because == "max_seconds"
    assert len(result.history) >= 20
    seconds = [row["seconds"] for row in result.history]
    assert seconds == sorted(seconds) and seconds[-1] >= 2.0


def test_character_budget_stops_and_schedules_evaluations(
    trainer_home, write_text, shakespeare_text
):
    cfg = build_config("tiny", max_steps=10**6, eval_every=10**6, max_chars=40_000, device="cpu")
    result = train(cfg, write_text("s.txt", shakespeare_text[:20_000]), track=False)
    per_step = cfg.batch_size * cfg.seq_len
    assert result.stopped_because == "max_chars"
    assert result.steps == -(-40_000 // per_step)  # the step that reaches the budget is the last
    assert result.history[-1]["chars"] == result.steps * per_step
    assert len(result.history) >= 20


def test_eval_chars_evaluates_a_fixed_prefix_of_the_val_split(
    trainer_home, write_text, shakespeare_text
):
    path = write_text("s.txt", shakespeare_text[:40_000])
    cfg = build_config("tiny", max_steps=20, eval_every=10, device="cpu")
    whole = train(cfg, path, out_dir=trainer_home / "whole", track=False)
    prefix = train(cfg.replace(eval_chars=500), path, out_dir=trainer_home / "cut", track=False)
    # the same training (same seed and data), measured on less text: another number
    assert whole.test_loss == prefix.test_loss  # the test split is never cut
    assert [r["val_loss"] for r in whole.history] != [r["val_loss"] for r in prefix.history]

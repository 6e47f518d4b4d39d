"""Sampling: determinism, carried state (constant work per char), top-k, any script, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.config import build_config
from training.errors import TrainingError
from training.models import CharModel
from training.sample import generate, sample_texts
from training.train import train

TEXT = "To be, or not to be: 😀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 三国 演义.\n"
VOCAB = sorted(set(TEXT))


@pytest.fixture(scope="module")
def model() -> CharModel:
    torch.manual_seed(0)
    return CharModel(len(VOCAB), "lstm", emb_size=8, hidden_size=16, num_layers=2).eval()


def text(model, **kwargs) -> str:
    return "".join(generate(model, VOCAB, **kwargs))


def test_same_seed_same_text(model):
    a = text(model, length=200, prime="To be", seed=7)
    assert a == text(model, length=200, prime="To be", seed=7)
    assert a != text(model, length=200, prime="To be", seed=8)
    assert len(a) == 200 and set(a) <= set(VOCAB)


def test_prime_runs_once_then_one_char_per_step(model):
    """Constant work per character: the prefix is never fed again."""
    lengths = []
    hook = model.rnn.register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
    try:
        text(model, length=50, prime="not to be", seed=1)
    finally:
        hook.remove()
    assert lengths == [len("not to be")] + [1] * 49


def test_carried_state_equals_rerunning_the_whole_text(model):
    prime = "or not"
    fast = text(model, length=30, prime=prime, temperature=0)
    slow = prime
    index = {ch: i for i, ch in enumerate(VOCAB)}
    with torch.no_grad():
        for _ in range(30):
            logits, _ = model(torch.tensor([[index[c] for c in slow]]))
            slow += VOCAB[int(logits[0, -1].argmax())]
    assert fast == slow[len(prime) :]


def test_top_k_one_is_greedy(model):
    greedy = text(model, length=40, prime="三国", temperature=0)
    assert text(model, length=40, prime="三国", temperature=1.5, top_k=1, seed=3) == greedy


def test_any_script_prime_and_non_bmp_output(model):
    out = text(model, length=300, prime="😀 𝔘𝔫", seed=2, temperature=2.0)
    assert set(out) <= set(VOCAB)
    assert any(ord(ch) > 0xFFFF for ch in out)  # non-BMP symbols come out whole


def test_unknown_prime_characters_are_listed(model):
    with pytest.raises(TrainingError) as err:
        text(model, length=5, prime="To be Ω or ж")
    assert "'Ω' (U+03A9)" in str(err.value) and "'ж' (U+0436)" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"length": -1}, "length"), ({"temperature": -0.5}, "temperature"), ({"top_k": 0}, "top_k")],
)
def test_bad_sampling_settings(model, kwargs, message):
    with pytest.raises(TrainingError, match=message):
        text(model, **{"length": 5, **kwargs})


@pytest.fixture
def checkpoint(trainer_home, write_text, shakespeare_text) -> Path:
    cfg = build_config("tiny", max_steps=20, eval_every=20, device="cpu")
    return train(cfg, write_text("s.txt", shakespeare_text[:10_000]), track=False).best_checkpoint


def test_sample_texts_for_several_primes(checkpoint):
    texts = sample_texts(checkpoint, ["ROMEO:", "JULIET:"], length=25, seed=4, device="cpu")
    assert [t[:-25] for t in texts] == ["ROMEO:", "JULIET:"]
    assert texts == sample_texts(checkpoint, ["ROMEO:", "JULIET:"], length=25, seed=4)


def test_cli_streams_characters_as_they_are_made(checkpoint):
    """The first characters reach the pipe while the process is still generating."""
    charflow = Path(sys.executable).parent / "charflow"
    proc = subprocess.Popen(
        [charflow, "sample", "--checkpoint", checkpoint, "--prime", "First", "--length",
         "1000000", "--seed", "1", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        first = proc.stdout.read(20)
        assert first.startswith(b"First") and len(first) == 20, proc.stderr.read()
        assert proc.poll() is None  # a million characters are far from done
    finally:
        proc.kill()
        proc.wait()

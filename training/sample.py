"""Sampling: run the prime once, then one character at a time with the recurrent state carried,
so each generated character costs the same small amount of work however long the text gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import encode_text
from training.device import resolve_device
from training.errors import TrainingError
from training.models import CharModel


def check_sampling(length: int, temperature: float, top_k: int | None) -> None:
    if length < 0:
        raise TrainingError(f"length must be 0 or more, not {length}")
    if temperature < 0:
        raise TrainingError(f"temperature must be 0 (greedy) or more, not {temperature}")
    if top_k is not None and top_k < 1:
        raise TrainingError(f"top_k must be at least 1, not {top_k}")


@torch.no_grad()
def generate(
    model: CharModel,
    vocab: list[str],
    *,
    length: int,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield `length` characters that follow `prime` (the prime itself is not yielded).

    Without a prime the text starts after a newline (or the first vocabulary symbol).
    temperature 0 picks the most likely character; the same seed gives the same text.
    """
    check_sampling(length, temperature, top_k)
    index = {ch: i for i, ch in enumerate(vocab)}
    start = prime or ("\n" if "\n" in index else vocab[0])
    ids = encode_text(index, start)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        logits, state = model(torch.tensor([ids], device=device))
        for i in range(length):
            next_id = _pick(logits[0, -1].float(), temperature, top_k, gen)
            yield vocab[next_id]
            if i + 1 < length:
                logits, state = model(torch.tensor([[next_id]], device=device), state)
    finally:
        model.train(was_training)


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, gen) -> int:
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen))


def load_sampler(checkpoint: str | Path, device: str = "auto") -> tuple[CharModel, list[str]]:
    """The model and vocabulary of a checkpoint file (for an MLflow model, fetch its
    checkpoint first with training.pyfunc.download_checkpoint)."""
    target = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location="cpu")  # GPU checkpoints sample anywhere
    return model_from_checkpoint(ckpt, target), list(ckpt["vocab"])


def sample_texts(
    checkpoint: str | Path,
    primes: list[str],
    *,
    length: int = 300,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    device: str = "auto",
) -> list[str]:
    """One text per prime, each prime followed by its `length` sampled characters."""
    model, vocab = load_sampler(checkpoint, device=device)
    kwargs = dict(length=length, temperature=temperature, top_k=top_k, seed=seed)
    return [p + "".join(generate(model, vocab, prime=p, **kwargs)) for p in primes]

"""Sampling: run the prime once, then one character at a time with the recurrent state carried,
so each generated character costs the same small amount of work however long the text gets.

A sample starts from a state that training shows the model: it first reads a stretch of
training text ending where a document starts (`context`, saved in every checkpoint).
Training carries state across chunks and almost never starts from zeros, so a zero state fed
a newline sends a vanilla RNN or a GRU into a region no text leads to, and it writes symbol
soup there however well it has learned (measured: bigram loss of its samples 5.8 nats/char
against 2.4 for real text; after reading 256 characters of context, 2.5).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import encode_text
from training.device import resolve_device
from training.errors import TrainingError
from training.models import CharModel, State

CONTEXT_CHARS = 256  # a vanilla RNN needs ~32 characters to recover from a zero state
# What every document of a corpus folder follows: the tail of its separator "\n\x1e\n".
DOC_START = "\x1e\n"
CONTEXT_SEARCH_CHARS = 1 << 16
# How a document boundary inside a sample is shown to people (the raw U+001E is invisible):
# a rule of box-drawing characters, no letters, since letters are symbols in some corpora.
DOCUMENT_BREAK = "\n" + "─" * 16 + "\n"


def visible_breaks(text: str) -> str:
    """`text` with each document separator drawn as a line a reader sees."""
    return text.replace("\n\x1e\n", DOCUMENT_BREAK).replace("\x1e", DOCUMENT_BREAK)


@dataclass(frozen=True)
class Start:
    """Where a sample starts: `context` is read first (not yielded), from `state` (None: zeros)."""

    context: str = ""
    state: State | None = None


def sample_context(train_ids: np.ndarray, vocab: list[str], size: int = CONTEXT_CHARS) -> str:
    """`size` characters of the train split that end where a document (else a line) starts."""
    tail = train_ids[-(CONTEXT_SEARCH_CHARS + size) :]
    text = "".join(vocab[int(i)] for i in tail)
    for mark in (DOC_START, "\n"):
        at = text.rfind(mark, size)
        if at >= 0:
            return text[at + len(mark) - size : at + len(mark)]
    return text[-size:]


def checkpoint_start(ckpt: dict) -> Start:
    """The checkpoint's context; a checkpoint from before contexts were saved starts from
    one row of the state training carried, which is a state training shows the model."""
    if ckpt.get("sample_context"):
        return Start(ckpt["sample_context"])
    saved = ckpt.get("state")
    if not saved:
        return Start()
    rows = [t[:, :1].float().contiguous() for t in saved]
    return Start("\n", tuple(rows) if len(rows) == 2 else rows[0])


def check_sampling(length: int, temperature: float, top_k: int | None) -> None:
    if length < 0:
        raise TrainingError(f"length must be 0 or more, not {length}")
    if not 0 <= temperature < float("inf"):  # nan fails every comparison
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
    start: Start = Start(),
) -> Iterator[str]:
    """Yield `length` characters that follow `prime` (the prime itself is not yielded).

    The model first reads `start.context` then the prime; with neither, a newline (or the
    first vocabulary symbol). temperature 0 picks the most likely character; the same seed
    gives the same text.
    """
    check_sampling(length, temperature, top_k)
    index = {ch: i for i, ch in enumerate(vocab)}
    encode_text(index, prime)  # an unknown prime character is the caller's error, named
    text = start.context + prime or ("\n" if "\n" in index else vocab[0])
    ids = [index[ch] for ch in text if ch in index]  # a context is the model's own text
    device = next(model.parameters()).device
    state = start.state
    if state is not None:
        state = tuple(t.to(device) for t in state) if isinstance(state, tuple) else state.to(device)
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        logits, state = model(torch.tensor([ids], device=device), state)
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


def load_sampler(
    checkpoint: str | Path, device: str = "auto"
) -> tuple[CharModel, list[str], Start]:
    """The model, vocabulary and sampling start of a checkpoint file (for an MLflow model,
    fetch its checkpoint first with training.pyfunc.download_checkpoint)."""
    target = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location="cpu")  # GPU checkpoints sample anywhere
    return model_from_checkpoint(ckpt, target), list(ckpt["vocab"]), checkpoint_start(ckpt)


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
    model, vocab, start = load_sampler(checkpoint, device=device)
    kwargs = dict(length=length, temperature=temperature, top_k=top_k, seed=seed, start=start)
    return [p + "".join(generate(model, vocab, prime=p, **kwargs)) for p in primes]

"""What a trained model learned, for every finished run: samples at three temperatures, how
much of them is copied verbatim from the training split (memorisation against
generalisation), whether they read like the corpus (the bigram check), and pictures of the
hidden units that track something a reader can name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.bigram import BigramModel
from training.cells import cell_report
from training.copy_rate import sample_copy_rate
from training.models import CharModel
from training.sample import generate

FINAL_TEMPERATURES = (0.5, 0.8, 1.0)
FINAL_SAMPLE_CHARS = 600
CELL_TEXT_CHARS = 3000


@dataclass
class Learned:
    samples: dict[float, str]  # temperature -> sample
    metrics: dict[str, float]  # sample_copy_rate, sample_bigram_loss, val_bigram_loss
    cells_html: str


def bigram_check(
    samples: list[str], vocab: list[str], train_ids: np.ndarray, val_ids: np.ndarray
) -> dict[str, float]:
    """The samples' bigram loss beside real validation text's (as long as the samples)."""
    bigrams = BigramModel(train_ids, len(vocab))
    length = sum(len(s) for s in samples)
    return {
        "sample_bigram_loss": bigrams.texts_loss(samples, vocab),
        "val_bigram_loss": bigrams.loss(val_ids[: length + 1]),
    }


def what_it_learned(
    model: CharModel,
    vocab: list[str],
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    *,
    seed: int,
    sample_chars: int = FINAL_SAMPLE_CHARS,
) -> Learned:
    samples = {
        t: "".join(generate(model, vocab, length=sample_chars, temperature=t, seed=seed))
        for t in FINAL_TEMPERATURES
    }
    texts = list(samples.values())
    metrics = {
        "sample_copy_rate": sample_copy_rate(texts, train_ids, vocab),
        **bigram_check(texts, vocab, train_ids, val_ids),
    }
    val_text = "".join(vocab[int(i)] for i in val_ids[:CELL_TEXT_CHARS])
    return Learned(samples, metrics, cell_report(model, vocab, val_text))


def log_learned(tracker, learned: Learned, step: int) -> None:
    """samples/final_T0.5.txt …, the metrics, cells/cells.html into the run."""
    for temperature, text in learned.samples.items():
        tracker.log_text(text, f"samples/final_T{temperature}.txt")
    tracker.log_metrics(learned.metrics, step=step)
    tracker.log_text(learned.cells_html, "cells/cells.html")

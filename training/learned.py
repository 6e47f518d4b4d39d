"""What a trained model learned, for every finished run: samples at three temperatures, how
much of them is copied verbatim from the training split (memorisation against
generalisation), whether they read like the corpus (the bigram check), and pictures of the
hidden units that track something a reader can name.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.bigram import BigramModel
from training.cells import cell_report
from training.copy_rate import sample_copy_rate
from training.run import Run
from training.sample import generate, visible_breaks

FINAL_TEMPERATURES = (0.5, 0.8, 1.0)
FINAL_SAMPLE_CHARS = 600
CELL_TEXT_CHARS = 3000


@dataclass
class Learned:
    samples: dict[float, str]  # temperature -> sample
    metrics: dict[str, float]  # sample_copy_rate, sample_bigram_loss, val_bigram_loss
    cells_html: str


def what_it_learned(run: Run, sample_chars: int = FINAL_SAMPLE_CHARS) -> Learned:
    """For the run's model as it stands (the caller loads the best weights)."""
    vocab = run.data.vocab
    samples = {
        t: "".join(
            generate(
                run.model, vocab, length=sample_chars, temperature=t, seed=run.cfg.seed,
                start=run.sample_start,
            )
        )
        for t in FINAL_TEMPERATURES
    }  # fmt: skip
    texts = list(samples.values())
    bigrams = run.bigrams or BigramModel(run.data.split_ids("train"), len(vocab))
    metrics = {
        "sample_copy_rate": sample_copy_rate(texts, run.data.split_ids("train"), vocab),
        "sample_bigram_loss": bigrams.texts_loss(texts, vocab),
        "val_bigram_loss": bigrams.loss(run.val_ids),
    }
    val_text = "".join(vocab[int(i)] for i in run.val_ids[:CELL_TEXT_CHARS])
    return Learned(samples, metrics, cell_report(run.model, vocab, val_text))


def log_learned(tracker, learned: Learned, step: int) -> None:
    """samples/final_T0.5.txt …, the metrics, cells/cells.html into the run."""
    for temperature, text in learned.samples.items():
        tracker.log_text(visible_breaks(text), f"samples/final_T{temperature}.txt")
    tracker.log_metrics(learned.metrics, step=step)
    tracker.log_text(learned.cells_html, "cells/cells.html")

"""A character-bigram model of the training split: the yardstick for "does this text read
like the corpus?".

`sample_bigram_loss` is the cross-entropy (nats/char) of a model's samples under the
bigram model of the training split; the same measure on real validation text is what a
model that learned the corpus should come close to. Symbol soup scores far above it (pairs
the corpus never has), so a sampler fault shows up as a number, not only to a reader.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Add-k smoothing: a pair never seen in training costs about log(count(prev) / k) nats,
# large but finite, so one odd pair does not make the whole measure infinite.
SMOOTHING = 0.5


class BigramModel:
    """P(next | prev) = (count(prev, next) + k) / (count(prev) + k * V), from id sequences.

    Pairs are stored sparsely (sorted codes prev * V + next), so a Chinese vocabulary of
    thousands of symbols costs memory for the pairs that occur, not V * V."""

    def __init__(self, train_ids: np.ndarray, vocab_size: int, k: float = SMOOTHING):
        ids = np.asarray(train_ids, dtype=np.int64)
        self.vocab_size, self.k = vocab_size, k
        self.codes, self.counts = np.unique(ids[:-1] * vocab_size + ids[1:], return_counts=True)
        self.prev_counts = np.bincount(ids[:-1], minlength=vocab_size)

    def loss(self, ids: Sequence[int] | np.ndarray) -> float:
        """Mean -log P(next | prev) over the pairs of `ids`, in nats; nan with no pair."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < 2:
            return math.nan
        codes = ids[:-1] * self.vocab_size + ids[1:]
        at = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        pair = np.where(self.codes[at] == codes, self.counts[at], 0)
        prob = (pair + self.k) / (self.prev_counts[ids[:-1]] + self.k * self.vocab_size)
        return float(-np.log(prob).mean())

    def texts_loss(self, texts: Sequence[str], vocab: Sequence[str]) -> float:
        """The loss over the pairs inside each text (none across two), pooled."""
        index = {ch: i for i, ch in enumerate(vocab)}
        losses, pairs = 0.0, 0
        for text in texts:
            ids = [index[ch] for ch in text if ch in index]
            if len(ids) >= 2:
                losses += self.loss(ids) * (len(ids) - 1)
                pairs += len(ids) - 1
        return losses / pairs if pairs else math.nan

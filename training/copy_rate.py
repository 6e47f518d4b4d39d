"""Copy rate: how much of a model's sampled text is lifted verbatim from its training split.

A char-RNN that writes "To be, or not to be" has either learned English or memorised
Hamlet; write-ups tell the two apart by eye. `sample_copy_rate` makes it a number: the
fraction of the samples' `window`-character windows that occur somewhere in the training
split, character for character.

The samples' distinct windows are hashed (a polynomial hash over random 64-bit codes per
symbol, wrapping mod 2**64) and sorted; one vectorised pass over the training split, in
chunks, hashes every training window the same way and looks it up with np.searchsorted.
A hash hit is then confirmed by comparing the ids themselves, so a collision can never
count as a copy; identical windows always hash alike, so a copy is never missed. The
answer is exact, not probabilistic, and memory stays bounded by the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

WINDOW = 20
# Training windows hashed per pass: bounds the transient arrays (a few uint64 per window,
# plus the windows gathered for comparison) to tens of MB, whatever the split's size.
CHUNK = 1 << 18
# Fixed so the symbol codes, and with them every hash, are the same from run to run.
SEED = 0x5EED_C0DE


def sample_copy_rate(
    samples: Sequence[str], train_ids: np.ndarray, vocab: Sequence[str], window: int = WINDOW
) -> float:
    """Fraction of the samples' `window`-char windows found verbatim in `train_ids`.

    `train_ids`: the training split as ids into `vocab` (`data.split_ids("train")`, a memmap
    is fine). Windows are taken inside each sample, never across two, and pooled: the rate
    is copied windows / all windows. A window holding a character outside `vocab` cannot
    occur in the split and counts as not copied. When no sample reaches `window`
    characters there is nothing to measure and the rate is nan (0 would claim "nothing
    memorised", which was never tested).
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    sample_windows = _sample_windows(samples, vocab, window)
    if len(sample_windows) == 0:
        return math.nan
    known = sample_windows[(sample_windows >= 0).all(axis=1)]
    if len(known) == 0:
        return 0.0
    # Each distinct window is looked up once, however often the samples repeat it.
    distinct, inverse = np.unique(known, axis=0, return_inverse=True)
    codes = _symbol_codes(len(vocab))
    found = _found_in_split(distinct, np.asarray(train_ids), codes)
    return int(found[inverse.reshape(-1)].sum()) / len(sample_windows)


def _found_in_split(windows: np.ndarray, train_ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """found[i]: does the distinct window `windows[i]` occur in `train_ids`?

    One pass over the split in chunks: hash every training window, keep those whose hash
    some sample window has, and compare their ids with every sample window of that hash
    (two windows may share a hash; only equal ids count).
    """
    window = windows.shape[1]
    by_hash = np.argsort(_row_hashes(windows, codes))
    windows = windows[by_hash]
    hashes = _row_hashes(windows, codes)
    # A hash no other sample window shares can stop being checked once found; one that
    # collides keeps every training window of its hash compared, so no copy is missed.
    alone = np.ones(len(windows), dtype=bool)
    alone[1:] &= hashes[1:] != hashes[:-1]
    alone[:-1] &= hashes[:-1] != hashes[1:]
    found = np.zeros(len(windows), dtype=bool)
    count = len(train_ids) - window + 1
    for lo in range(0, max(count, 0), CHUNK):
        hi = min(lo + CHUNK, count)
        chunk = np.asarray(train_ids[lo : hi + window - 1])
        chunk_hashes = _chunk_hashes(chunk, codes, window)
        first = np.searchsorted(hashes, chunk_hashes)
        first[first == len(hashes)] = 0  # past the end: compared below and rejected
        starts = np.flatnonzero((hashes[first] == chunk_hashes) & ~(found[first] & alone[first]))
        if len(starts) == 0:
            continue
        chunk_windows = np.lib.stride_tricks.sliding_window_view(chunk, window)[starts]
        target, target_hash = first[starts], chunk_hashes[starts]
        # Walk along each run of equal hashes; a run longer than one is a collision.
        while len(target):
            equal = (chunk_windows == windows[target]).all(axis=1)
            found[target[equal]] = True
            target = target + 1
            same_run = target < len(hashes)
            same_run[same_run] = hashes[target[same_run]] == target_hash[same_run]
            chunk_windows, target, target_hash = (
                chunk_windows[same_run],
                target[same_run],
                target_hash[same_run],
            )
    found_in_input_order = np.empty_like(found)
    found_in_input_order[by_hash] = found
    return found_in_input_order


def _symbol_codes(vocab_size: int) -> np.ndarray:
    """A random 64-bit code per symbol: hashing codes instead of raw ids spreads structured
    texts (long runs, tiny alphabets) evenly over the hash space."""
    rng = np.random.default_rng(SEED)
    return rng.integers(0, 2**64, size=max(vocab_size, 1), dtype=np.uint64)


# Odd, so multiplying by it is a bijection mod 2**64 and no symbol's contribution vanishes.
BASE = np.uint64(0x9E37_79B9_7F4A_7C15)


def _chunk_hashes(ids: np.ndarray, codes: np.ndarray, window: int) -> np.ndarray:
    """hash[i] = sum_k codes[ids[i + k]] * BASE**(window - 1 - k) mod 2**64, for every start i."""
    count = len(ids) - window + 1
    symbol_codes = codes[ids]
    h = np.zeros(count, dtype=np.uint64)
    for k in range(window):
        h *= BASE  # uint64 arrays wrap silently: the mod 2**64 is numpy's own
        h += symbol_codes[k : k + count]
    return h


def _row_hashes(windows: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The same hash for windows given as rows of ids."""
    h = np.zeros(len(windows), dtype=np.uint64)
    for k in range(windows.shape[1]):
        h *= BASE
        h += codes[windows[:, k]]
    return h


def _sample_windows(samples: Sequence[str], vocab: Sequence[str], window: int) -> np.ndarray:
    """(n, window) int64 ids of every window of every sample; -1 marks a character outside
    the vocabulary."""
    index = {ch: i for i, ch in enumerate(vocab)}
    rows = []
    for sample in samples:
        if len(sample) < window:
            continue
        ids = np.fromiter((index.get(ch, -1) for ch in sample), dtype=np.int64, count=len(sample))
        rows.append(np.lib.stride_tricks.sliding_window_view(ids, window))
    if not rows:
        return np.empty((0, window), dtype=np.int64)
    return np.concatenate(rows)

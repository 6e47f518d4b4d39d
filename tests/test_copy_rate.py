"""sample_copy_rate: hand-made answers, edge cases, brute force, collisions, a 5 MB split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.copy_rate import CHUNK, _found_in_split, sample_copy_rate

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def encode(text: str, vocab: list[str]) -> np.ndarray:
    index = {ch: i for i, ch in enumerate(vocab)}
    return np.array([index[ch] for ch in text], dtype=np.uint16)


def brute_force_rate(samples: list[str], train: str, window: int) -> float:
    present = {train[i : i + window] for i in range(len(train) - window + 1)}
    windows = [s[i : i + window] for s in samples for i in range(len(s) - window + 1)]
    return sum(w in present for w in windows) / len(windows) if windows else math.nan


@pytest.fixture
def vocab() -> list[str]:
    return sorted(ALPHABET)


def test_half_copied(vocab):
    ids = encode(ALPHABET, vocab)
    copied = ALPHABET[:25]  # 6 windows of 20, every one in the split
    reversed_ = ALPHABET[::-1][:25]  # 6 windows, none in the split
    assert sample_copy_rate([copied, reversed_], ids, vocab) == 0.5


def test_character_outside_vocab_is_not_copied(vocab):
    ids = encode(ALPHABET, vocab)
    # Window 0 "a..t" is in the split; window 1 ends in "!", which the split cannot hold.
    assert sample_copy_rate([ALPHABET[:20] + "!"], ids, vocab) == 0.5
    assert sample_copy_rate(["!" * 30], ids, vocab) == 0.0


def test_windows_never_span_two_samples(vocab):
    ids = encode(ALPHABET, vocab)
    # Joined, these would be one copied window; apart, neither reaches 20 characters.
    assert math.isnan(sample_copy_rate([ALPHABET[:10], ALPHABET[10:20]], ids, vocab))
    assert sample_copy_rate([ALPHABET[:10], ALPHABET[:20]], ids, vocab) == 1.0


def test_nothing_to_measure_is_nan(vocab):
    ids = encode(ALPHABET, vocab)
    assert math.isnan(sample_copy_rate([], ids, vocab))
    assert math.isnan(sample_copy_rate(["", "short"], ids, vocab))


def test_split_shorter_than_a_window_copies_nothing(vocab):
    ids = encode(ALPHABET[:10], vocab)
    assert sample_copy_rate([ALPHABET[:20]], ids, vocab) == 0.0
    assert sample_copy_rate([ALPHABET[:20]], ids[:0], vocab) == 0.0


def test_window_must_be_positive(vocab):
    with pytest.raises(ValueError, match="window"):
        sample_copy_rate(["abc"], encode(ALPHABET, vocab), vocab, window=0)


def test_chinese_text():
    train = "滚滚长江东逝水，浪花淘尽英雄。是非成败转头空，青山依旧在，几度夕阳红。"
    vocab = sorted(set(train))
    ids = encode(train, vocab)
    sample = "浪花淘尽英雄。是非成败转头空，青山依旧在，白发渔樵江渚上"
    assert sample_copy_rate([sample], ids, vocab, window=10) == brute_force_rate(
        [sample], train, 10
    )
    assert 0 < sample_copy_rate([sample], ids, vocab, window=10) < 1


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_brute_force(seed):
    """Tiny alphabets and short windows: many repeats, partial copies, repeated samples."""
    rng = np.random.default_rng(seed)
    vocab = list("abc")
    train = "".join(rng.choice(vocab, 2000))
    samples = ["".join(rng.choice(vocab, n)) for n in (3, 8, 50, 50, 200)]
    samples.append(samples[-1])  # the same windows twice count twice
    for window in (1, 4, 8, 12):
        got = sample_copy_rate(samples, encode(train, vocab), vocab, window=window)
        assert got == pytest.approx(brute_force_rate(samples, train, window), abs=1e-12)


def test_colliding_hashes_are_told_apart_by_their_ids():
    """All-zero symbol codes hash every window alike: the exact comparison alone decides."""
    rng = np.random.default_rng(1)
    train = rng.integers(0, 4, 500).astype(np.uint16)
    windows = np.concatenate([train[None, 10:16], rng.integers(0, 4, (40, 6))]).astype(np.int64)
    windows = np.unique(windows, axis=0)
    present = {tuple(train[i : i + 6]) for i in range(len(train) - 5)}
    expected = np.array([tuple(w) in present for w in windows])
    assert expected.any() and not expected.all()
    zero_codes = np.zeros(4, dtype=np.uint64)
    assert np.array_equal(_found_in_split(windows, train, zero_codes), expected)


def test_five_megabyte_split():
    """Correctness at the size the metric must handle; copies straddle chunk boundaries."""
    rng = np.random.default_rng(2)
    vocab = [chr(32 + i) for i in range(80)]
    ids = rng.integers(0, len(vocab), 5_000_000).astype(np.uint16)

    def text(a: int, b: int) -> str:
        return "".join(vocab[i] for i in ids[a:b])

    samples = [
        text(CHUNK - 50, CHUNK + 50),  # 81 windows, across the first chunk boundary
        text(3 * CHUNK - 19, 3 * CHUNK + 1),  # 1 window ending just past a boundary
        text(len(ids) - 30, len(ids)),  # 11 windows, the split's last
        text(0, 20),  # 1 window, the split's first
        "".join(rng.choice(vocab, 60)),  # 41 windows: 80**20 strings, 5e6 of them present
    ]
    assert sample_copy_rate(samples, ids, vocab) == pytest.approx(94 / 135)


def test_dataset_split_as_the_trainer_passes_it(tmp_path, write_text, shakespeare_text):
    """The memmapped train split of a real text: its own lines are copies, held-out ones
    mostly are not, and a Shakespeare line the text lacks is not."""
    from training.data import prepare_dataset

    data = prepare_dataset(write_text("shk.txt", shakespeare_text), cache_dir=tmp_path / "cache")
    train_ids = data.split_ids("train")
    assert isinstance(train_ids, np.memmap)
    train, val = data.decode(train_ids), data.decode(data.split_ids("val"))
    seen = train[1000:1400]
    assert sample_copy_rate([seen], train_ids, data.vocab) == 1.0
    held_out = val[1000:1400]
    assert sample_copy_rate([held_out], train_ids, data.vocab) == brute_force_rate(
        [held_out], train, 20
    )
    assert sample_copy_rate([held_out], train_ids, data.vocab) < 0.5
    assert sample_copy_rate(["Shall I compare thee to a summer's day?"], train_ids, data.vocab) == 0

"""training/baselines.py: the metrics, and counting baselines on sequences whose true
next-symbol probabilities are known, so each loss has a value it must come out at."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.baselines import (
    ADD_K_GRID,
    DISCOUNT_GRID,
    NGramCounts,
    ScoreSum,
    alphabet_ids,
    fit_baselines,
    scores_from_logits,
    scores_from_probs,
    symbol_mask,
    to_symbols,
)


def entropy(p) -> float:
    p = np.asarray(p, dtype=float)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def splits(seq, val=0.1, test=0.1):
    n = len(seq)
    a, b = int(n * (1 - val - test)), int(n * (1 - test))
    return seq[:a], seq[a:b], seq[b:]


# -- metrics --------------------------------------------------------------------------------


def test_metrics_from_logits_by_hand():
    logits = np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 1.0], [0.0, 5.0, 1.0, 2.0]])
    targets = np.array([0, 3, 0])
    log_z = np.log(np.exp(logits).sum(axis=1))
    loss = float(np.mean(log_z - logits[np.arange(3), targets]))
    got = scores_from_logits(logits, targets)
    assert got.loss == pytest.approx(loss, rel=1e-12)
    # ranks of the targets: 0 (best), 1 (second), 3 (last)
    assert (got.top1, got.top3, got.count) == (pytest.approx(1 / 3), pytest.approx(2 / 3), 3)
    probs = np.exp(logits - log_z[:, None])
    assert scores_from_probs(probs, targets).loss == pytest.approx(loss, rel=1e-12)


def test_masked_positions_and_batches_add_up_to_one_pass():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 50, 7)) * 3
    targets = rng.integers(0, 7, size=(4, 50))
    mask = rng.random((4, 50)) < 0.7
    whole = scores_from_logits(logits, targets, mask)
    total = ScoreSum()
    for b in range(4):  # batch by batch, as a trainer evaluates
        total.add_logits(logits[b], targets[b], mask[b])
    assert total.scores() == pytest.approx(whole)
    kept = scores_from_logits(logits[mask], targets[mask])
    assert kept.count == mask.sum() == whole.count
    assert kept.loss == pytest.approx(whole.loss)


def test_ties_never_count_in_the_predictions_favour():
    uniform = np.zeros((6, 6))
    got = scores_from_logits(uniform, np.arange(6))
    assert got.loss == pytest.approx(math.log(6))
    assert (got.top1, got.top3) == (pytest.approx(1 / 6), pytest.approx(3 / 6))


def test_a_zero_probability_costs_a_finite_large_loss():
    got = scores_from_probs(np.array([[1.0, 0.0]]), np.array([1]))
    assert 700 < got.loss < 800 and got.top1 == 0.0


def test_symbols_drop_the_separator_characters():
    # ids: 0 '\n', 1 '\x1e', 2 '.', 3 'A', 4 'B'; a corpus "AB.\n\x1e\nBA."
    ids = np.array([3, 4, 2, 0, 1, 0, 4, 3, 2])
    symbols = [3, 4, 2]
    assert to_symbols(ids, symbols).tolist() == [0, 1, 2, 1, 0, 2]
    assert symbol_mask(ids, symbols).tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 1]


def test_alphabet_ids_from_a_manifest():
    vocab = ["\n", "\x1e", ".", "A", "B"]
    alphabet = {"A": {}, "B": {}, "C": {}, ".": {}}  # C declared, never used
    assert alphabet_ids(vocab, alphabet, ".") == ([3, 4, 2], 2)
    with pytest.raises(ValueError, match="end symbol '!'"):
        alphabet_ids(vocab, alphabet, "!")


# -- n-gram models on sources with known probabilities --------------------------------------


def test_a_deterministic_cycle_costs_nothing_to_an_ngram_and_log_v_to_counting():
    cycle = np.tile(np.array([5, 6, 7, 8, 9]), 2000)  # ids of a 5-symbol alphabet, 9 = end
    report = fit_baselines(*splits(cycle), symbols=[5, 6, 7, 8, 9], end=9)
    by_name = {b.name: b for b in report.baselines}
    frequent = by_name["most-frequent"]
    assert frequent.test.loss == pytest.approx(math.log(5), abs=1e-3)
    for order in (2, 3, 4):
        for smoothing in ("kneser-ney", "add-k"):
            b = by_name[f"{order}-gram {smoothing}"]
            assert b.test.loss < 0.01 and b.test.top1 == 1.0, b
    assert report.best_loss < 0.01
    # a cycle rewards the least smoothing the grids offer
    assert by_name["2-gram add-k"].param == min(ADD_K_GRID)
    assert by_name["2-gram kneser-ney"].param == min(DISCOUNT_GRID)


def test_an_iid_source_costs_its_entropy_at_every_order():
    p = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
    seq = np.random.default_rng(1).choice(5, size=60_000, p=p)
    report = fit_baselines(*splits(seq), symbols=range(5), end=4)
    h = entropy(p)  # 1.3863... nats (1.875 bits)
    for b in report.baselines:
        assert b.test.loss == pytest.approx(h, abs=0.03), b
        assert b.test.top1 == pytest.approx(0.5, abs=0.02)
        assert b.test.top3 == pytest.approx(0.875, abs=0.02)
    # the extra context of a higher order is only noise here; counting cannot be beaten
    frequent = report.baselines[0]
    assert frequent.name == "most-frequent"
    assert frequent.test.loss <= min(b.test.loss for b in report.baselines) + 0.005


def test_a_markov_chain_costs_its_entropy_rate_from_order_two():
    transitions = np.array([[0.1, 0.8, 0.1], [0.6, 0.1, 0.3], [0.3, 0.3, 0.4]])
    rng = np.random.default_rng(2)
    seq, state = np.empty(80_000, dtype=np.int64), 0
    draws = rng.random(len(seq))
    cumulative = transitions.cumsum(axis=1)
    for i, u in enumerate(draws):
        state = int(np.searchsorted(cumulative[state], u))
        seq[i] = state
    values, vectors = np.linalg.eig(transitions.T)
    stationary = np.real(vectors[:, np.argmin(abs(values - 1))])
    stationary /= stationary.sum()
    rate = float(sum(stationary[i] * entropy(transitions[i]) for i in range(3)))
    report = fit_baselines(*splits(seq), symbols=[0, 1, 2], end=2)
    by_name = {b.name: b for b in report.baselines}
    assert by_name["most-frequent"].test.loss == pytest.approx(entropy(stationary), abs=0.02)
    for order in (2, 3, 4):
        assert by_name[f"{order}-gram kneser-ney"].test.loss == pytest.approx(rate, abs=0.02)
    assert report.best.order >= 2 and report.best_loss == pytest.approx(rate, abs=0.02)


def test_kneser_ney_and_add_k_give_distributions_with_room_for_the_unseen():
    train = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3, 0, 1, 2])  # symbol 4 never occurs
    counts = NGramCounts(train, 3, 5, start=3)
    query = np.array([0, 1, 4, 4, 2, 1, 0])  # contexts never seen, too
    for probs in (counts.kneser_ney(query, 0.5), counts.add_k(query, 0.1)):
        assert probs.shape == (len(query), 5)
        assert np.allclose(probs.sum(axis=1), 1.0)
        assert (probs > 0).all()
    # after (0, 1) training saw 2 twice and 3 once: the trigram ranks them so
    p = counts.kneser_ney(np.array([0, 1, 2]), 0.5)[2]
    assert p[2] > p[3] > p[4] and p[0] < p[3]


def test_best_baseline_is_chosen_on_validation_and_reported_on_test():
    rng = np.random.default_rng(3)
    seq = rng.choice(4, size=5000, p=[0.4, 0.3, 0.2, 0.1])
    train, val, test = splits(seq)
    report = fit_baselines(train, val, test, symbols=range(4), end=3)
    assert report.best.val.loss == min(b.val.loss for b in report.baselines)
    metrics = report.metrics()
    assert metrics["baseline_best_loss"] == report.best_loss == report.best.test.loss
    assert metrics["baseline_3_gram_kneser_ney_test_top3"] == report.baselines[5].test.top3
    rows = report.table()
    assert len(rows) == 1 + 3 * 2 and sum(r["best"] for r in rows) == 1
    assert {"name", "param", "val_loss", "test_loss", "test_top1", "test_top3"} <= set(rows[0])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="end symbol"):
        fit_baselines([0, 1], [0], [1], symbols=[0, 1], end=7)
    with pytest.raises(ValueError, match="at least one symbol"):
        fit_baselines([0, 1], [5], [1], symbols=[0, 1], end=1)
    with pytest.raises(ValueError, match="discount"):
        NGramCounts([0, 1], 2, 2, 0).kneser_ney([0], 1.5)

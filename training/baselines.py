"""Counting baselines for symbol corpora, and the metrics a model is measured on beside them.

A symbol corpus (ShuttleSet: a symbol per stroke, an end symbol per rally) declares its
alphabet. Only those symbols are scored: the characters of the document separator that
follow the end symbol are fixed by it, and counting them would flatter every model alike.
Each metric is per symbol (per stroke, the rally end included):

    loss   mean cross-entropy of the true next symbol, in nats
    top1   how often the true next symbol is the most probable one
    top3   how often it is among the three most probable

Ties are broken by symbol index, never in the model's favour: a uniform guess is right
1/V of the time, not always.

Baselines are fitted on the training split and evaluated on validation and test:
`most-frequent` (the training frequencies: the most frequent symbol is its top-1 guess)
and n-grams of orders 2-4 with add-k or interpolated Kneser-Ney smoothing. Each family's
smoothing constant is chosen on validation, and the best baseline is the one with the
lowest validation loss; its test loss is `baseline_best_loss`. Nothing is tuned on test.

A model is scored with `ScoreSum` (batch by batch) or `scores_from_logits` on the same
symbol positions (`symbol_mask`), so model and baselines read alike. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

ORDERS = (2, 3, 4)
SMOOTHINGS = ("kneser-ney", "add-k")
# Candidates tried on validation. add-k spans "almost maximum likelihood" to "almost
# uniform"; Kneser-Ney discounts live in (0, 1).
ADD_K_GRID = tuple(float(k) for k in np.geomspace(1e-3, 10.0, 13))
DISCOUNT_GRID = tuple(round(float(d), 2) for d in np.linspace(0.05, 0.95, 19))
TINY = np.finfo(np.float64).tiny  # a probability of 0 scores as log(tiny), not -inf


# -- metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    loss: float  # mean cross-entropy per symbol, nats
    top1: float
    top3: float
    count: int  # symbols scored


class ScoreSum:
    """Running sums of the metrics over batches of next-symbol predictions.

    add_*(scores of shape (..., V), targets of shape (...), mask of shape (...) or None):
    only positions where mask is True count (see symbol_mask).
    """

    def __init__(self) -> None:
        self.nll = 0.0
        self.top1 = 0
        self.top3 = 0
        self.count = 0

    def add_log_probs(self, log_probs, targets, mask=None) -> None:
        log_probs, targets = _flat(log_probs, targets, mask)
        if not len(targets):
            return
        rows = np.arange(len(targets))
        true = log_probs[rows, targets]
        self.nll -= float(true.sum())
        # rank of the true symbol: those scored higher, then equal ones with a lower index
        higher = (log_probs > true[:, None]).sum(axis=1)
        lower_index = np.arange(log_probs.shape[1])[None, :] < targets[:, None]
        rank = higher + ((log_probs == true[:, None]) & lower_index).sum(axis=1)
        self.top1 += int((rank < 1).sum())
        self.top3 += int((rank < 3).sum())
        self.count += len(targets)

    def add_logits(self, logits, targets, mask=None) -> None:
        logits = np.asarray(logits, dtype=np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        self.add_log_probs(shifted - log_norm, targets, mask)

    def add_probs(self, probs, targets, mask=None) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        self.add_log_probs(np.log(np.maximum(probs, TINY)), targets, mask)

    def scores(self) -> Scores:
        if not self.count:
            return Scores(float("nan"), float("nan"), float("nan"), 0)
        n = self.count
        return Scores(self.nll / n, self.top1 / n, self.top3 / n, n)


def _flat(scores, targets, mask) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores.reshape(-1, scores.shape[-1])
    targets = np.asarray(targets).reshape(-1).astype(np.int64)
    if len(targets) != len(scores):
        raise ValueError(f"{len(scores)} predictions for {len(targets)} targets")
    if mask is not None:
        keep = np.asarray(mask, dtype=bool).reshape(-1)
        scores, targets = scores[keep], targets[keep]
    return scores, targets


def scores_from_logits(logits, targets, mask=None) -> Scores:
    """The metrics of unnormalised scores (a model's output), shape (..., V)."""
    total = ScoreSum()
    total.add_logits(logits, targets, mask)
    return total.scores()


def scores_from_probs(probs, targets, mask=None) -> Scores:
    """The metrics of probability distributions over V symbols, shape (..., V)."""
    total = ScoreSum()
    total.add_probs(probs, targets, mask)
    return total.scores()


def symbol_mask(ids, symbols: Sequence[int]) -> np.ndarray:
    """True where an id is one of the declared symbols: the positions worth scoring when
    it is the target (a separator's fixed characters are not)."""
    return np.isin(np.asarray(ids), np.asarray(symbols))


def alphabet_ids(vocab: Sequence[str], alphabet, end_symbol: str) -> tuple[list[int], int]:
    """(ids of the declared symbols, id of the end symbol) in a trainer's vocabulary, from a
    manifest's `alphabet` and `end_symbol`. Declared symbols the corpus never uses are not
    in the vocabulary and are left out; a missing end symbol is an error."""
    index = {ch: i for i, ch in enumerate(vocab)}
    if end_symbol not in index:
        raise ValueError(f"the end symbol {end_symbol!r} is not in the vocabulary")
    return [index[s] for s in alphabet if s in index], index[end_symbol]


def to_symbols(ids, symbols: Sequence[int]) -> np.ndarray:
    """The ids that are symbols, in order, as indices into `symbols` (0..V-1)."""
    ids = np.asarray(ids, dtype=np.int64)
    symbols = np.asarray(symbols, dtype=np.int64)
    if len(np.unique(symbols)) != len(symbols):
        raise ValueError("symbols must be distinct ids")
    size = int(max(ids.max(initial=0), symbols.max(initial=0))) + 1
    lookup = np.full(size, -1, dtype=np.int64)
    lookup[symbols] = np.arange(len(symbols))
    dense = lookup[ids]
    return dense[dense >= 0]


# -- n-gram models --------------------------------------------------------------------------


class NGramCounts:
    """Counts of a symbol sequence (indices 0..V-1) for n-grams of orders 1..order.

    The sequence is read as if `start` came before it order-1 times: for a corpus of rallies
    `start` is the end symbol, so the first stroke is predicted as "after a rally ended".
    Contexts are stored sparsely (only those seen), as integer codes in base V.
    """

    def __init__(self, seq, order: int, num_symbols: int, start: int):
        if order < 1:
            raise ValueError(f"order must be at least 1, not {order}")
        if num_symbols ** max(order - 1, 1) >= 2**62:
            raise ValueError(f"{num_symbols} symbols are too many for order {order}")
        self.order, self.size, self.start = order, num_symbols, start
        seq = self._check(seq)
        # level m (1..order): contexts of m-1 symbols -> (codes, counts[context, symbol])
        self.raw: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.continuation: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for m in range(1, order + 1):
            self.raw[m] = self._table(self._contexts(seq, m - 1), seq)
        # Kneser-Ney's lower orders count in how many distinct contexts a (shorter) n-gram
        # follows, not how often: "Francisco" is frequent but follows only "San".
        for m in range(1, order):
            longer = self._contexts(seq, m) * self.size + seq  # (m+1)-grams as codes
            distinct = np.unique(longer)
            targets = distinct % self.size
            shorter = (distinct // self.size) % self.size ** (m - 1)  # drop the oldest symbol
            self.continuation[m] = self._table(shorter, targets)

    def _check(self, seq) -> np.ndarray:
        seq = np.asarray(seq, dtype=np.int64)
        if seq.ndim != 1 or (len(seq) and (seq.min() < 0 or seq.max() >= self.size)):
            raise ValueError(f"a sequence of symbol indices 0..{self.size - 1} is expected")
        return seq

    def _contexts(self, seq: np.ndarray, length: int) -> np.ndarray:
        """The code of the `length` symbols before each position (padded with start)."""
        padded = np.concatenate([np.full(length, self.start, dtype=np.int64), seq])
        codes = np.zeros(len(seq), dtype=np.int64)
        for j in range(length):
            codes = codes * self.size + padded[j : j + len(seq)]
        return codes

    def _table(self, contexts: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes, row = np.unique(contexts, return_inverse=True)
        counts = np.zeros((len(codes), self.size))
        np.add.at(counts, (row.reshape(-1), targets), 1)
        return codes, counts

    def _rows(self, table: tuple[np.ndarray, np.ndarray], contexts: np.ndarray) -> np.ndarray:
        """Counts of each query context (zeros for a context never seen)."""
        codes, counts = table
        at = np.minimum(np.searchsorted(codes, contexts), len(codes) - 1)
        seen = codes[at] == contexts
        return np.where(seen[:, None], counts[at], 0.0)

    def add_k(self, seq, k: float) -> np.ndarray:
        """P(next | the order-1 symbols before it) = (count + k) / (context count + kV),
        for every position of seq; shape (len(seq), V)."""
        seq = self._check(seq)
        counts = self._rows(self.raw[self.order], self._contexts(seq, self.order - 1))
        return (counts + k) / (counts.sum(axis=1, keepdims=True) + k * self.size)

    def kneser_ney(self, seq, discount: float) -> np.ndarray:
        """Interpolated Kneser-Ney (Chen & Goodman 1998) with one discount for all orders,
        the lowest order interpolated with the uniform distribution, so that every symbol
        keeps some probability; shape (len(seq), V)."""
        if not 0 < discount < 1:
            raise ValueError(f"the discount must be in (0, 1), not {discount}")
        seq = self._check(seq)
        probs = np.full((len(seq), self.size), 1.0 / self.size)
        for m in range(1, self.order + 1):
            table = self.raw[m] if m == self.order else self.continuation[m]
            counts = self._rows(table, self._contexts(seq, m - 1))
            total = counts.sum(axis=1, keepdims=True)
            kinds = (counts > 0).sum(axis=1, keepdims=True)
            mixed = (np.maximum(counts - discount, 0) + discount * kinds * probs) / np.maximum(
                total, 1
            )
            probs = np.where(total > 0, mixed, probs)  # an unseen context backs off whole
        return probs


# -- the baselines --------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    name: str  # "most-frequent", "3-gram kneser-ney", ...
    order: int  # 1 for most-frequent
    smoothing: str  # "add-k" or "kneser-ney"
    param: float  # k or the discount, chosen on validation
    val: Scores
    test: Scores


@dataclass(frozen=True)
class BaselineReport:
    baselines: list[Baseline]
    best: Baseline  # the lowest validation loss

    @property
    def best_loss(self) -> float:
        """baseline_best_loss: the test loss of the baseline chosen on validation."""
        return self.best.test.loss

    def table(self) -> list[dict]:
        """One flat row per baseline, for a CSV/MLflow table."""
        rows = []
        for b in self.baselines:
            row = {"name": b.name, "order": b.order, "smoothing": b.smoothing, "param": b.param}
            for split in ("val", "test"):
                for key, value in asdict(getattr(b, split)).items():
                    row[f"{split}_{key}"] = value
            row["best"] = b is self.best
            rows.append(row)
        return rows

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metric names: baseline_<name>_test_<metric>, baseline_best_*."""
        out = {}
        for b in self.baselines:
            key = b.name.replace(" ", "_").replace("-", "_")
            for metric in ("loss", "top1", "top3"):
                out[f"baseline_{key}_test_{metric}"] = getattr(b.test, metric)
        out["baseline_best_loss"] = self.best_loss
        out["baseline_best_top1"] = self.best.test.top1
        out["baseline_best_top3"] = self.best.test.top3
        return out


def _choose(predict, grid, val: np.ndarray, test: np.ndarray):
    """The grid value with the lowest validation loss, and its (val, test) scores."""
    best = None
    for value in grid:
        scores = scores_from_probs(predict(val, value), val)
        if best is None or scores.loss < best[1].loss:
            best = (value, scores)
    value, val_scores = best
    return value, val_scores, scores_from_probs(predict(test, value), test)


def fit_baselines(
    train_ids,
    val_ids,
    test_ids,
    symbols: Sequence[int],
    end: int,
    *,
    orders: Sequence[int] = ORDERS,
    smoothings: Sequence[str] = SMOOTHINGS,
) -> BaselineReport:
    """Fit every baseline on train_ids, choose its smoothing on val_ids, score on test_ids.

    The id sequences are the trainer's (any ids); `symbols` lists the ids of the declared
    alphabet, the end symbol included, and only those are read (other ids, such as the
    separator's characters, are dropped). `end` is the end symbol's id.
    """
    if end not in symbols:
        raise ValueError("the end symbol must be one of the symbols")
    unknown = set(smoothings) - set(SMOOTHINGS)
    if unknown:
        raise ValueError(f"unknown smoothing {sorted(unknown)}; choose from {SMOOTHINGS}")
    train, val, test = (to_symbols(ids, symbols) for ids in (train_ids, val_ids, test_ids))
    if not len(train) or not len(val) or not len(test):
        raise ValueError("train, val and test each need at least one symbol")
    size, start = len(symbols), list(symbols).index(end)
    baselines = []
    unigram = NGramCounts(train, 1, size, start)
    k, val_scores, test_scores = _choose(unigram.add_k, ADD_K_GRID, val, test)
    baselines.append(Baseline("most-frequent", 1, "add-k", k, val_scores, test_scores))
    for order in orders:
        counts = NGramCounts(train, order, size, start)
        for smoothing in smoothings:
            if smoothing == "kneser-ney":
                chosen = _choose(counts.kneser_ney, DISCOUNT_GRID, val, test)
            else:
                chosen = _choose(counts.add_k, ADD_K_GRID, val, test)
            baselines.append(Baseline(f"{order}-gram {smoothing}", order, smoothing, *chosen))
    best = min(baselines, key=lambda b: b.val.loss)
    return BaselineReport(baselines, best)

"""The model against the counting baselines on a symbol corpus's test split: the model's
scores (read as training.streams.evaluate reads a split), each baseline's on the same
positions, the run's metrics and baselines.json's table. Used by training/symbols.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.baselines import (
    Baseline,
    BaselineReport,
    NGramCounts,
    Scores,
    ScoreSum,
    scores_from_probs,
    symbol_mask,
    to_symbols,
)
from training.streams import EVAL_CHUNK, EVAL_STREAMS, Streams

# -- the model on the test split ------------------------------------------------------------


@dataclass
class ModelScores:
    symbols: Scores  # per symbol, over positions whose target is a declared symbol
    events: int  # of those, targets that are a shot or the rally end (strokes)
    all_loss: float  # mean over every position: what `evaluate` gives (test_loss)
    next_sum: np.ndarray  # (E, E): sum of P(next event) by the previous event
    next_count: np.ndarray  # (E,): positions summed per previous event
    scored: np.ndarray  # bool per position of the split: a target scored in `symbols`

    @property
    def loss_per_stroke(self) -> float:
        return per_stroke(self.symbols.loss, self.symbols.count, self.events)


def per_stroke(loss_per_symbol: float, symbols: int, events: int) -> float:
    """Mean nats per symbol -> nats per stroke (strokes and rally ends counted once)."""
    return loss_per_symbol * symbols / events if events else math.nan


def previous_event(ids: np.ndarray, event_ids: Sequence[int]) -> np.ndarray:
    """For each position, the index (into event_ids) of the last event at or before it;
    -1 before the first. The context a next-shot distribution is filed under."""
    ids = np.asarray(ids, dtype=np.int64)
    where = np.full(int(max(ids.max(initial=0), max(event_ids, default=0))) + 1, -1)
    where[list(event_ids)] = np.arange(len(event_ids))
    index = where[ids]
    at = np.where(index >= 0, np.arange(len(ids)), -1)
    last = np.maximum.accumulate(at) if len(at) else at  # position of the last event so far
    return np.where(last >= 0, index[np.maximum(last, 0)], -1)


@torch.no_grad()
def score_model(
    model, ids: np.ndarray, device, autocast, symbol_ids: Sequence[int], event_ids: Sequence[int]
) -> ModelScores:
    """The model's metrics on `ids`, read as training.streams.evaluate reads a split."""
    streams = Streams(ids, max(1, min(EVAL_STREAMS, len(ids) - 1)), device)
    n, length = streams.x.shape
    before = previous_event(ids, event_ids)[: n * length].reshape(n, length)
    is_event = np.zeros(int(max(np.max(ids, initial=0), *event_ids)) + 1, dtype=bool)
    is_event[list(event_ids)] = True
    events_t = torch.as_tensor(list(event_ids), device=device)
    sums, nll_all, events = ScoreSum(), 0.0, 0
    next_sum = np.zeros((len(event_ids), len(event_ids)))
    next_count = np.zeros(len(event_ids))
    was_training = model.training
    model.eval()
    state = None
    try:
        for pos in range(0, length, EVAL_CHUNK):
            x, y = streams.chunk(pos, EVAL_CHUNK)
            with autocast:
                logits, state = model(x, state)
            logits = logits.float()
            nll_all += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), y.flatten(), reduction="sum"
            ).item()
            targets = streams.y[:, pos : pos + EVAL_CHUNK]
            sums.add_logits(logits.cpu().numpy(), targets, symbol_mask(targets, symbol_ids))
            # the next-shot distribution where a shot (or the end) comes next, filed under
            # the shot before; renormalised over the events (areas are not "next shots")
            events += int(is_event[targets].sum())
            file = is_event[targets] & (before[:, pos : pos + EVAL_CHUNK] >= 0)
            probs = torch.softmax(logits[..., events_t], dim=-1).cpu().numpy()
            np.add.at(next_sum, before[:, pos : pos + EVAL_CHUNK][file], probs[file])
            next_count += np.bincount(
                before[:, pos : pos + EVAL_CHUNK][file], minlength=len(event_ids)
            )
    finally:
        model.train(was_training)
    # the targets read: ids[1 : n * length + 1]; those that are symbols were scored
    scored = np.zeros(len(ids), dtype=bool)
    scored[1 : n * length + 1] = symbol_mask(ids[1 : n * length + 1], symbol_ids)
    # an event is a declared symbol, so `events` counts the strokes among the scored symbols
    return ModelScores(
        sums.scores(), events, nll_all / streams.x.size, next_sum, next_count, scored
    )


# -- the report -----------------------------------------------------------------------------


def baseline_picks(report: BaselineReport) -> dict[str, Baseline]:
    """most_frequent, and per n-gram order the smoothing with the lowest validation loss."""
    picks = {"most_frequent": next(b for b in report.baselines if b.order == 1)}
    for order in sorted({b.order for b in report.baselines} - {1}):
        same = [b for b in report.baselines if b.order == order]
        picks[f"ngram{order}"] = min(same, key=lambda b: b.val.loss)
    return picks


def baseline_scores(
    report: BaselineReport, train_ids, test_ids, symbol_ids: Sequence[int], end_id: int,
    scored: np.ndarray,
) -> dict[str, Scores]:  # fmt: skip
    """Each baseline (as fitted and chosen on validation) scored on the test positions the
    model was scored on (`scored`, ModelScores.scored): the model's streams leave out the
    split's first symbol and its last few characters, and on a small test split those few
    positions move the comparison (the baselines' own `test` scores read them all)."""
    train = to_symbols(train_ids, symbol_ids)
    test = to_symbols(test_ids, symbol_ids)
    keep = scored[symbol_mask(test_ids, symbol_ids)]  # per test symbol, in order
    size, start = len(symbol_ids), list(symbol_ids).index(end_id)
    out = {}
    for b in report.baselines:
        counts = NGramCounts(train, b.order, size, start)
        predict = counts.kneser_ney if b.smoothing == "kneser-ney" else counts.add_k
        out[b.name] = scores_from_probs(predict(test, b.param)[keep], test[keep])
    return out


def symbol_metrics(model: ModelScores, report: BaselineReport, tests: dict[str, Scores]) -> dict:
    """The run's metrics: losses per stroke, accuracies per symbol. `tests`: each
    baseline's scores on the model's positions (baseline_scores), so the strokes counted
    are the model's."""

    def loss(b: Baseline) -> float:
        return per_stroke(tests[b.name].loss, tests[b.name].count, model.events)

    out = {
        "symbol_test_loss": model.loss_per_stroke,
        "symbol_top1": model.symbols.top1,
        "symbol_top3": model.symbols.top3,
    }
    for key, b in baseline_picks(report).items():
        out |= {
            f"baseline_{key}_loss": loss(b),
            f"baseline_{key}_top1": tests[b.name].top1,
            f"baseline_{key}_top3": tests[b.name].top3,
        }
    out["baseline_best_loss"] = loss(report.best)
    out["baseline_best_top1"] = tests[report.best.name].top1
    out["baseline_best_top3"] = tests[report.best.name].top3
    out["gain_over_baseline"] = out["baseline_best_loss"] - out["symbol_test_loss"]
    return out


def baselines_table(
    model: ModelScores, model_name: str, report: BaselineReport, tests: dict[str, Scores]
) -> dict[str, list]:
    """baselines.json's columns: one row per baseline and one for the model."""
    picked = {id(b) for b in baseline_picks(report).values()}
    rows = [
        {
            "name": model_name,
            "order": 0,
            "smoothing": "",
            "param": math.nan,
            "val_loss": math.nan,  # the trainer's val_loss is per character, not comparable
            "test_loss": model.symbols.loss,
            "test_loss_per_stroke": model.loss_per_stroke,
            "test_top1": model.symbols.top1,
            "test_top3": model.symbols.top3,
            "test_symbols": model.symbols.count,
            "chosen": "model",
        }
    ]
    for b in report.baselines:
        chosen = "best" if b is report.best else "order" if id(b) in picked else ""
        test = tests[b.name]
        rows.append(
            {
                "name": b.name,
                "order": b.order,
                "smoothing": b.smoothing,
                "param": b.param,
                "val_loss": b.val.loss,
                "test_loss": test.loss,
                "test_loss_per_stroke": per_stroke(test.loss, test.count, model.events),
                "test_top1": test.top1,
                "test_top3": test.top3,
                "test_symbols": test.count,
                "chosen": chosen,
            }
        )
    return {key: [r[key] for r in rows] for key in rows[0]}

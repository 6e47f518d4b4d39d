"""Symbol corpora: the model measured against counting, rallies in words, transition pictures.

A corpus whose manifest.json declares an `alphabet` (symbol -> {zh, en, count[, kind,
player]}) and an `end_symbol` is a symbol corpus (ShuttleSet: a symbol per stroke, "." for
the rally end). For its tracked runs `log_symbol_report(tracker, run)` adds to the run:

    metrics        symbol_test_loss (nats per stroke), symbol_top1, symbol_top3; the same
                   for each counting baseline fitted on the training split,
                   baseline_<most_frequent|ngram2|ngram3|ngram4>_{loss,top1,top3} (each
                   order with the smoothing chosen on validation); baseline_best_loss and
                   gain_over_baseline = baseline_best_loss - symbol_test_loss
    baselines.json every baseline, both smoothings of each order, and the model, per symbol
                   and per stroke
    corpus/shots.json                   the symbols by name, with their counts
    samples/final_T<t>_rallies.txt      the final samples as rallies in words
    plots/transitions.png               P(next shot | previous shot): the training split,
                                        the model's predictions, the model's samples

Losses are per stroke: total nats over strokes + rally ends. With one symbol per stroke
that is the loss per symbol; with `detail=shot+area` (a shot and a landing area per stroke)
a stroke's two symbols are one stroke, so the numbers still read as "nats per shot played".
Top-1/top-3 are per symbol (shots, areas and rally ends alike), as the baselines score them.

The model is scored on the test split exactly as `training.streams.evaluate` reads it
(EVAL_STREAMS parallel streams, state carried from chunk to chunk), so its loss over every
position is the run's `test_loss`; only the positions whose target is a declared symbol
count for the symbol metrics (training/baselines.py says why), and the baselines are scored
on exactly those positions too. Its probabilities are the
softmax over the whole vocabulary, separator characters included: nothing is renormalised
in the model's favour.

The parts: training/symbol_alphabet.py (the alphabet, rallies in words, shots by name),
training/symbol_metrics.py (the model against the baselines), training/symbol_plots.py
(transitions.png); this module puts them into the run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from training.baselines import alphabet_ids, fit_baselines, symbol_mask
from training.symbol_alphabet import sample_in_words, shots_table, symbol_alphabet
from training.symbol_metrics import baseline_scores, baselines_table, score_model, symbol_metrics
from training.symbol_plots import (
    SAMPLE_TEMPERATURE,
    row_normalised,
    sample_ids,
    transition_counts,
    transitions_figure,
)

if TYPE_CHECKING:
    from training.run import Run

log = logging.getLogger(__name__)


def _best_effort(what: str, call) -> None:
    """An artifact sent to the store directly (the tracker has no journal record for
    tables and figures): tracking is best effort, so a store that fails here costs the
    artifact and one warning line, never the finished training."""
    try:
        call()
    except Exception as err:  # any store failure: reported, not raised
        log.warning("could not log %s: %s", what, f"{type(err).__name__}: {err}".splitlines()[0])


def log_symbol_report(tracker, run: Run, samples: dict[float, str] | None = None) -> str | None:
    """Everything above into the run, for a corpus that declares a symbol alphabet; a
    one-line summary for the console. None (nothing logged) for any other corpus.

    Call it with the best weights loaded. `samples` (temperature -> text) are the final
    samples the run logged as samples/final_T<t>.txt; each is logged again in words."""
    alphabet = symbol_alphabet(run.data.source)
    if alphabet is None:
        return None
    data, step = run.data, run.state.step
    vocab = data.vocab
    symbol_ids, end_id = alphabet_ids(vocab, alphabet.entries, alphabet.end)
    event_ids = [i for i in symbol_ids if alphabet.is_event(vocab[i])]
    train_ids = data.split_ids("train")
    # the whole validation split: run.val_ids may be a prefix (eval_chars), and the
    # baselines' smoothing is chosen on all of it
    val_ids = data.split_ids("val")
    client, run_id = tracker.client, tracker.run_id

    shots = shots_table(alphabet, vocab, train_ids)
    _best_effort("corpus/shots.json", lambda: client.log_table(run_id, shots, "corpus/shots.json"))
    for temperature, text in (samples or {}).items():
        name = f"final_T{temperature}"
        words = sample_in_words(text, alphabet, f"{name}.txt")
        tracker.log_text(words, f"samples/{name}_rallies.txt")

    # held out: test, or val for a corpus without a test split (the picture only)
    held_out, split = (run.test_ids, "test") if len(run.test_ids) > 1 else (val_ids, "val")
    scores = score_model(run.model, held_out, run.device, run.autocast, symbol_ids, event_ids)
    sampled = sample_ids(run.model, end_id, run.device, seed=run.cfg.seed)
    fig = transitions_figure(
        alphabet,
        [vocab[i] for i in event_ids],
        [
            ("data: training split", row_normalised(transition_counts(train_ids, event_ids))),
            (
                f"model: mean prediction on the {split} split",
                row_normalised(scores.next_sum, scores.next_count),
            ),
            (
                f"model: {sampled.size:,} sampled chars, T={SAMPLE_TEMPERATURE}",
                row_normalised(transition_counts(sampled, event_ids)),
            ),
        ],
    )
    _best_effort(
        "plots/transitions.png", lambda: client.log_figure(run_id, fig, "plots/transitions.png")
    )

    has_symbols = all(
        symbol_mask(ids, symbol_ids).any() for ids in (train_ids, val_ids, run.test_ids)
    )
    if split != "test" or not has_symbols:
        return "symbols: no test split with symbols, so no comparison with the baselines"
    report = fit_baselines(train_ids, val_ids, run.test_ids, symbol_ids, end_id)
    tests = baseline_scores(report, train_ids, run.test_ids, symbol_ids, end_id, scores.scored)
    metrics = symbol_metrics(scores, report, tests)
    tracker.log_metrics(metrics, step=step)
    name = f"model ({run.cfg.model} {run.cfg.num_layers}x{run.cfg.hidden_size})"
    table = baselines_table(scores, name, report, tests)
    _best_effort("baselines.json", lambda: client.log_table(run_id, table, "baselines.json"))
    return (
        f"symbols: test {metrics['symbol_test_loss']:.4f} nats/stroke, top-1 "
        f"{metrics['symbol_top1']:.3f}, top-3 {metrics['symbol_top3']:.3f}; best baseline "
        f"{report.best.name} {metrics['baseline_best_loss']:.4f}: gain "
        f"{metrics['gain_over_baseline']:+.4f} nats/stroke"
    )

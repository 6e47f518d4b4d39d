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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch

from training.baselines import (
    Baseline,
    BaselineReport,
    NGramCounts,
    Scores,
    ScoreSum,
    alphabet_ids,
    fit_baselines,
    scores_from_probs,
    symbol_mask,
    to_symbols,
)
from training.data import corpus_manifest
from training.streams import EVAL_CHUNK, EVAL_STREAMS, Streams

if TYPE_CHECKING:
    from training.run import Run

ARROW = " → "  # between the steps of a rally
AT = " @ "  # a shot and where it landed
CUT = "…"  # a rally the sample's length (or a stray separator) broke off
SAMPLE_STREAMS = 64  # the transition picture's samples: 64 x 300 chars, ~1,400 rallies
SAMPLE_STEPS = 300
SAMPLE_TEMPERATURE = 1.0  # the model's own distribution, neither sharpened nor flattened
SHOT, AREA, END = "shot", "area", "end"

log = logging.getLogger(__name__)


# -- the alphabet ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Alphabet:
    """A manifest's symbols: names, kinds and (with `player=`) whose stroke each one is."""

    entries: dict[str, dict]  # symbol -> {zh, en, count, kind, player?}, manifest order
    end: str

    @classmethod
    def from_manifest(cls, manifest: dict | None) -> Alphabet | None:
        """None unless the manifest declares an alphabet and its end symbol."""
        if not manifest or not manifest.get("alphabet") or not manifest.get("end_symbol"):
            return None
        entries, end = dict(manifest["alphabet"]), manifest["end_symbol"]
        if end not in entries:
            raise ValueError(f"the end symbol {end!r} is not in the declared alphabet")
        return cls(entries, end)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.entries

    def kind(self, symbol: str) -> str:
        # A corpus that declares no kinds has shots and its end symbol only.
        return END if symbol == self.end else self.entries[symbol].get("kind", SHOT)

    def is_event(self, symbol: str) -> bool:
        """A shot or the rally end: what a stroke is counted by ("nats per stroke")."""
        return self.kind(symbol) in (SHOT, END)

    @property
    def player(self) -> str | None:
        """The modelled player's name (the corpus was built with `player=`), else None."""
        for entry in self.entries.values():
            if entry.get("player") not in (None, "opponent"):
                return entry["player"]
        return None

    def side(self, symbol: str) -> str | None:
        """'Player' or 'Opponent' for a shot of a one-player corpus, else None."""
        if self.player is None or self.kind(symbol) != SHOT:
            return None
        return "Opponent" if self.entries[symbol].get("player") == "opponent" else "Player"

    def label(self, symbol: str) -> str:
        """'發短球 (short service)': the data's name, then the English one."""
        entry = self.entries[symbol]
        zh, en = entry.get("zh"), entry.get("en")
        if zh and en and zh != en:
            return f"{zh} ({en})"
        return zh or en or symbol

    def english(self, symbol: str) -> str:
        entry = self.entries[symbol]
        return entry.get("en") or entry.get("zh") or symbol

    def axis_label(self, symbol: str, *, chinese: bool) -> str:
        """A heat-map tick: English (and Chinese when a font can draw it), side marked."""
        name = self.english(symbol)
        if chinese and self.entries[symbol].get("zh"):
            name = f"{name} {self.entries[symbol]['zh']}"
        side = self.side(symbol)
        return f"{'P' if side == 'Player' else 'O'}: {name}" if side else name


def symbol_alphabet(source) -> Alphabet | None:
    """The alphabet a corpus folder declares, or None (plain text, or no alphabet)."""
    return Alphabet.from_manifest(corpus_manifest(source))


# -- rallies in words -----------------------------------------------------------------------


def rallies_of(text: str, alphabet: Alphabet) -> list[str]:
    """The alphabet's symbols of `text`, one string per rally: a rally ends after the end
    symbol, or where a character outside the alphabet (the corpus separator) breaks in
    before it. Separator characters between rallies are dropped."""
    rallies, current = [], []
    for ch in text:
        if ch in alphabet:
            current.append(ch)
            if ch == alphabet.end:
                rallies.append("".join(current))
                current = []
        elif current:  # a separator inside a rally: show the rally as broken off
            rallies.append("".join(current))
            current = []
    if current:
        rallies.append("".join(current))
    return rallies


def rally_in_words(symbols: str, alphabet: Alphabet) -> str:
    """'Server: 發短球 (short service) → Receiver: 推球 (push) → … → 回合結束 (rally end)'.

    Who plays a stroke: with `player=` the symbol's case says it (Player / Opponent);
    otherwise strokes alternate from the rally's first, the serve (Server / Receiver).
    A landing area follows its shot after " @ "; one with no shot before it stands alone
    in brackets (a sample can produce that). A rally without its end symbol ends in "…".
    """
    steps: list[str] = []
    strokes, open_shot = 0, False  # open_shot: the last step is a shot without its area
    for symbol in symbols:
        kind = alphabet.kind(symbol)
        if kind == AREA and open_shot:
            steps[-1] += AT + alphabet.english(symbol)
            open_shot = False
        elif kind == AREA:
            steps.append(f"[{alphabet.english(symbol)}]")
        elif kind == END:
            steps.append(alphabet.label(symbol))
            open_shot = False
        else:
            role = alphabet.side(symbol) or ("Server" if strokes % 2 == 0 else "Receiver")
            steps.append(f"{role}: {alphabet.label(symbol)}")
            strokes, open_shot = strokes + 1, True
    if not symbols.endswith(alphabet.end):
        steps.append(CUT)
    return ARROW.join(steps)


def rally_from_words(line: str, alphabet: Alphabet) -> str:
    """The symbols of a rally written by rally_in_words (its inverse)."""
    shots, areas = _word_tables(alphabet)
    out = []
    for step in line.split(ARROW):
        if step == CUT:
            continue
        if step.startswith("[") and step.endswith("]"):
            out.append(_look_up(areas, step[1:-1], line))
            continue
        shot, _, area = step.partition(AT)
        role, colon, name = shot.partition(": ")
        if not colon:  # the rally end has no role
            role, name = "", shot
        side = role if role in ("Player", "Opponent") else None
        out.append(_look_up(shots, (name, side), line))
        if area:
            out.append(_look_up(areas, area, line))
    return "".join(out)


def _word_tables(alphabet: Alphabet) -> tuple[dict, dict]:
    shots = {(alphabet.label(s), alphabet.side(s)): s for s in alphabet.entries if s}
    areas = {alphabet.english(s): s for s in alphabet.entries if alphabet.kind(s) == AREA}
    return shots, areas


def _look_up(table: dict, key, line: str) -> str:
    if key not in table:
        raise ValueError(f"{key!r} names no symbol of the alphabet (in {line!r})")
    return table[key]


def sample_in_words(text: str, alphabet: Alphabet, name: str) -> str:
    """A sample as one rally a line, under a header saying how to read it."""
    rallies = rallies_of(text, alphabet)
    cut = sum(not r.endswith(alphabet.end) for r in rallies)
    who = (
        f"Player is {alphabet.player}, Opponent whoever they played"
        if alphabet.player
        else "Server and Receiver alternate from each rally's first stroke"
    )
    header = [
        f"# {name} in words: {len(rallies)} rallies, one a line; the symbols are in {name}.",
        f"# {who}. Shot names: the data's (Chinese), then English.",
        f"# {cut} of them end in {CUT}, cut off by the sample's length or a stray separator.",
    ]
    return "\n".join(header + [rally_in_words(r, alphabet) for r in rallies]) + "\n"


def sample_from_words(text: str, alphabet: Alphabet) -> str:
    """The symbols of a file written by sample_in_words, rallies joined."""
    lines = [x for x in text.splitlines() if x and not x.startswith("#")]
    return "".join(rally_from_words(x, alphabet) for x in lines)


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


@torch.no_grad()
def sample_ids(
    model, start: int, device, *, streams: int = SAMPLE_STREAMS, steps: int = SAMPLE_STEPS,
    temperature: float = SAMPLE_TEMPERATURE, seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """`streams` samples of `steps` ids each, drawn side by side (one model call per step
    for all of them), each starting after the id `start` (the end symbol: a rally starts)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    was_training = model.training
    model.eval()
    x = torch.full((streams, 1), start, dtype=torch.long, device=device)
    out, state = [], None
    try:
        for _ in range(steps):
            logits, state = model(x, state)
            probs = torch.softmax(logits[:, -1].float() / temperature, dim=-1)
            x = torch.multinomial(probs, 1, generator=gen)
            out.append(x)
    finally:
        model.train(was_training)
    return torch.cat(out, dim=1).cpu().numpy()


# -- transitions ----------------------------------------------------------------------------


def transition_counts(ids: np.ndarray, event_ids: Sequence[int]) -> np.ndarray:
    """(E, E) counts of next event after previous event, areas and separators skipped.
    Each row of ids (2-D: one sample a row) is read on its own."""
    ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
    size = len(event_ids)
    where = np.full(int(max(ids.max(initial=0), max(event_ids, default=0))) + 1, -1)
    where[list(event_ids)] = np.arange(size)
    counts = np.zeros((size, size))
    for row in ids:
        seq = where[row]
        seq = seq[seq >= 0]
        np.add.at(counts, (seq[:-1], seq[1:]), 1)
    return counts


def row_normalised(counts: np.ndarray, totals: np.ndarray | None = None) -> np.ndarray:
    totals = counts.sum(axis=1) if totals is None else totals
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals[:, None] > 0, counts / totals[:, None], np.nan)


@cache
def _font_for(chars: str) -> str | None:
    """The file of a font that draws every one of `chars` (a CJK one for the Chinese
    names), or None: matplotlib's default has no Chinese glyphs and draws empty boxes."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    wanted = {ord(c) for c in chars}
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith("Last Resort"):  # maps every code point to a box glyph
            continue
        try:
            if wanted <= set(FT2Font(entry.fname).get_charmap()):
                return entry.fname
        except (OSError, RuntimeError):
            continue
    return None


def transitions_figure(
    alphabet: Alphabet, symbols: list[str], panels: list[tuple[str, np.ndarray]]
):
    """Heat-maps side by side: row = previous shot, column = next shot, cell = P(next |
    previous); the row of the rally end is the rally's first stroke (the serve)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    from matplotlib.font_manager import FontProperties

    zh = "".join(sorted({alphabet.entries[s].get("zh") or "" for s in symbols}))
    path = _font_for(zh) if zh else None
    font = FontProperties(fname=path, size=7) if path else FontProperties(size=7)
    labels = [alphabet.axis_label(s, chinese=path is not None) for s in symbols]
    rows = ["rally start" if s == alphabet.end else x for s, x in zip(symbols, labels, strict=True)]
    size = len(symbols)
    side = 2.5 + 0.24 * size
    fig = Figure(figsize=(side * len(panels) + 1.0, side + 0.4), dpi=100, layout="constrained")
    fig.suptitle(
        "Which shot follows which: each row sums to 1; the row 'rally start' is the serve",
        fontsize=11,
    )
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    top = max(float(np.nanmax(m)) if np.isfinite(m).any() else 0.0 for _, m in panels) or 1.0
    image = None
    for ax, (title, matrix) in zip(axes, panels, strict=True):
        image = ax.imshow(matrix, vmin=0, vmax=top, cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(size), labels, rotation=90, fontproperties=font)
        ax.set_yticks(range(size), rows, fontproperties=font)
        ax.set_xlabel("next shot")
        ax.set_ylabel("previous shot")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="P(next shot | previous shot)")
    return fig


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


def shots_table(alphabet: Alphabet, vocab: list[str], train_ids: np.ndarray) -> dict[str, list]:
    """corpus/shots.json: each declared symbol by name, with its count in the corpus (from
    the manifest) and in the training split, most frequent first within each kind."""
    train_counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=len(vocab))
    index = {ch: i for i, ch in enumerate(vocab)}
    kind_totals: dict[str, int] = {}
    for s, e in alphabet.entries.items():
        kind_totals[alphabet.kind(s)] = kind_totals.get(alphabet.kind(s), 0) + e.get("count", 0)
    order = {SHOT: 0, AREA: 1, END: 2}
    symbols = sorted(
        alphabet.entries,
        key=lambda s: (order.get(alphabet.kind(s), 3), -alphabet.entries[s].get("count", 0)),
    )
    rows = []
    for s in symbols:
        entry, kind = alphabet.entries[s], alphabet.kind(s)
        count = entry.get("count", 0)
        rows.append(
            {
                "symbol": s,
                "zh": entry.get("zh", ""),
                "en": entry.get("en", ""),
                "kind": kind,
                "side": alphabet.side(s) or "",
                "count": count,
                "share_of_kind": count / kind_totals[kind] if kind_totals[kind] else 0.0,
                "train_count": int(train_counts[index[s]]) if s in index else 0,
            }
        )
    return {key: [r[key] for r in rows] for key in rows[0]}


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

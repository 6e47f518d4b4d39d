"""Symbol corpora in the trainer (training/symbols.py and the symbol_alphabet, symbol_metrics
and symbol_plots modules it calls): the model against counting, rallies in words, transition
pictures.

The corpora are real: three of Viktor AXELSEN's matches from ../shared/corpora/shuttleset,
ingested by the real ingest into the test's own folder. Trainings are tracked into a SQLite
MLflow store under the test's CHARFLOW_HOME and read back with MlflowClient.
"""

from __future__ import annotations

import csv
import json
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_fixtures import CORPORA

from scrapers.fetch import Fetcher
from scrapers.ingest import ingest
from training.baselines import (
    NGramCounts,
    alphabet_ids,
    fit_baselines,
    scores_from_probs,
    symbol_mask,
    to_symbols,
)
from training.config import build_config
from training.data import corpus_manifest, prepare_dataset
from training.errors import TrainingError
from training.models import CharModel
from training.streams import EVAL_STREAMS, evaluate
from training.symbol_alphabet import (
    rallies_of,
    rally_from_words,
    rally_in_words,
    sample_from_words,
    sample_in_words,
    symbol_alphabet,
)
from training.symbol_metrics import baseline_scores, previous_event, score_model
from training.symbol_plots import transition_counts
from training.train import train

SET_DIR = CORPORA / "shuttleset" / "set"
MATCHES = [  # three of Viktor AXELSEN's: a split by match needs one each for train/val/test
    "Kento_MOMOTA_Viktor_AXELSEN_Malaysia_Masters_2020_Finals",
    "Viktor_AXELSEN _SHI_Yu_Qi_All_England_Open_2020_QuarterFinals",  # a space in the name
    "Viktor_AXELSEN_NG_Ka_Long_Angus_Malaysia_Masters_2020_SemiFinals",
]
SPLIT = dict(val_fraction=0.2, test_fraction=0.2)  # a match each (each is a third)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """ShuttleSet's layout with three of its matches, copied verbatim."""
    root = tmp_path_factory.mktemp("shuttleset")
    with open(SET_DIR / "match.csv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["video"] in MATCHES]
    assert len(rows) == len(MATCHES)
    for row in rows:
        (root / "set" / row["video"]).mkdir(parents=True)
        for n in range(1, int(row["set"]) + 1):
            name = f"set{n}.csv"
            (root / "set" / row["video"] / name).write_bytes(
                (SET_DIR / row["video"] / name).read_bytes()
            )
    with open(root / "set" / "match.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def build(source: Path, data: Path, **options) -> Path:
    with Fetcher(rate_limit=None) as fetcher:
        result = ingest(
            "shuttleset", str(source), data_dir=data, options=options, fetcher=fetcher,
            progress=False,
        )  # fmt: skip
    return result.path


@pytest.fixture(scope="module")
def corpora(source, tmp_path_factory) -> dict[str, Path]:
    """The same matches ingested three ways: plain, one player, one player with areas."""
    data = tmp_path_factory.mktemp("data")
    return {
        "shot": build(source, data / "shot"),
        "player": build(source, data / "player", player="Viktor AXELSEN"),
        "area": build(source, data / "area", player="Viktor AXELSEN", detail="shot+area"),
    }


def texts(corpus: Path) -> list[str]:
    text = (corpus / "corpus.txt").read_text(encoding="utf-8")
    docs = [json.loads(x) for x in (corpus / "documents.jsonl").read_text("utf-8").splitlines()]
    return [text[d["char_start"] : d["char_end"]] for d in docs]


# -- the manifest ---------------------------------------------------------------------------


def test_manifest_is_read_from_corpus_folders_only(corpora, tmp_path):
    manifest = corpus_manifest(corpora["shot"])
    assert manifest["end_symbol"] == "." and manifest["alphabet"]["T"]["en"] == "short service"
    plain = tmp_path / "plain.txt"
    plain.write_text("just text\n", encoding="utf-8")
    assert corpus_manifest(plain) is None and symbol_alphabet(plain) is None
    (tmp_path / "folder").mkdir()
    assert corpus_manifest(tmp_path / "folder") is None
    # a corpus without an alphabet is not a symbol corpus; a broken manifest is an error
    (tmp_path / "folder" / "manifest.json").write_text('{"name": "x"}', encoding="utf-8")
    assert corpus_manifest(tmp_path / "folder") == {"name": "x"}
    assert symbol_alphabet(tmp_path / "folder") is None
    (tmp_path / "folder" / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TrainingError, match=r"manifest.json is not readable JSON"):
        corpus_manifest(tmp_path / "folder")


# -- rallies in words -----------------------------------------------------------------------


def test_rallies_in_words_name_who_played_what(corpora):
    shot = symbol_alphabet(corpora["shot"])
    assert rally_in_words("TUS.", shot) == (
        "Server: 發短球 (short service) → Receiver: 推球 (push) → Server: 殺球 (smash) "
        "→ 回合結束 (rally end)"
    )
    player = symbol_alphabet(corpora["player"])
    assert player.player == "Viktor AXELSEN"
    assert rally_in_words("Tu", player) == (
        "Player: 發短球 (short service) → Opponent: 推球 (push) → …"
    )
    area = symbol_alphabet(corpora["area"])
    assert rally_in_words("S7s0.", area) == (
        "Player: 殺球 (smash) @ landing area 7 → Opponent: 殺球 (smash) @ no landing area "
        "→ 回合結束 (rally end)"
    )
    # what only a sample can hold: an area with no shot before it stands alone
    assert rally_in_words("77.", area) == (
        "[landing area 7] → [landing area 7] → 回合結束 (rally end)"
    )


@pytest.mark.parametrize("kind", ["shot", "player", "area"])
def test_every_rally_round_trips_through_words(corpora, kind):
    alphabet = symbol_alphabet(corpora[kind])
    rallies = texts(corpora[kind])
    assert len(rallies) > 100
    for rally in rallies:
        words = rally_in_words(rally, alphabet)
        assert rally_from_words(words, alphabet) == rally, words
    # the whole corpus as if it were a sample: one line a rally, back to the same symbols
    corpus = (corpora[kind] / "corpus.txt").read_text(encoding="utf-8")
    assert rallies_of(corpus, alphabet) == rallies
    lines = sample_in_words(corpus, alphabet, "corpus.txt")
    assert sample_from_words(lines, alphabet) == "".join(rallies)
    assert len([x for x in lines.splitlines() if not x.startswith("#")]) == len(rallies)


def test_a_sample_breaks_rallies_at_stray_separators_and_at_its_end(corpora):
    alphabet = symbol_alphabet(corpora["shot"])
    sample = "\x1e\nTU.\n\x1e\nTN\nS.\n\x1e\nGL"  # a separator inside a rally, a cut end
    assert rallies_of(sample, alphabet) == ["TU.", "TN", "S.", "GL"]
    words = sample_in_words(sample, alphabet, "final_T1.0.txt")
    lines = [x for x in words.splitlines() if not x.startswith("#")]
    assert [x.endswith("…") for x in lines] == [False, True, False, True]
    assert "# 2 of them end in …" in words
    assert sample_from_words(words, alphabet) == "TU.TNS.GL"
    with pytest.raises(ValueError, match="names no symbol"):
        rally_from_words("Server: 球 (ball)", alphabet)


# -- scoring the model as the trainer does ---------------------------------------------------


def split_of(corpus: Path, split: str):
    data = prepare_dataset(corpus, cache_dir=corpus.parent / "cache", **SPLIT)
    return data, data.split_ids(split)


def stream_targets(ids: np.ndarray) -> np.ndarray:
    """The targets evaluate() reads: n streams of (len - 1) // n, the tail left out."""
    n = min(EVAL_STREAMS, len(ids) - 1)
    return np.asarray(ids[1 : n * ((len(ids) - 1) // n) + 1])


def streamed_symbols(ids: np.ndarray, symbols: list[int]) -> np.ndarray:
    """Per symbol of `ids` (in order): whether the streams read it as a target."""
    where = np.flatnonzero(symbol_mask(ids, symbols))
    return (where >= 1) & (where <= len(stream_targets(ids)))


def baseline_on(b, train, test, symbols: list[int], end: int, keep: np.ndarray):
    """A fitted baseline's scores on some of the test symbols, from its counts."""
    counts = NGramCounts(to_symbols(train, symbols), b.order, len(symbols), symbols.index(end))
    predict = counts.kneser_ney if b.smoothing == "kneser-ney" else counts.add_k
    test = to_symbols(test, symbols)
    return scores_from_probs(predict(test, b.param)[keep], test[keep])


def test_score_model_reads_the_split_as_evaluate_does(corpora):
    data, ids = split_of(corpora["shot"], "test")
    alphabet = symbol_alphabet(corpora["shot"])
    symbols, _ = alphabet_ids(data.vocab, alphabet.entries, alphabet.end)
    torch.manual_seed(0)
    model = CharModel(len(data.vocab), "gru", emb_size=8, hidden_size=16, num_layers=1)
    cpu = torch.device("cpu")
    got = score_model(model, ids, cpu, nullcontext(), symbols, symbols)
    assert got.all_loss == pytest.approx(evaluate(model, ids, cpu, nullcontext()), rel=1e-6)
    targets = stream_targets(ids)
    assert got.symbols.count == symbol_mask(targets, symbols).sum() < len(targets)
    assert got.scored.sum() == got.symbols.count and not got.scored[0]
    assert (got.scored[1 : len(targets) + 1] == symbol_mask(targets, symbols)).all()
    assert got.events == got.symbols.count  # one symbol per stroke: per stroke = per symbol
    assert got.loss_per_stroke == got.symbols.loss


def test_a_model_with_a_fixed_distribution_scores_what_it_should(corpora):
    """Head weights zero, bias log p: every prediction is p, so the metrics are sums over
    the targets, computed here by hand, and the per-stroke loss counts a stroke's shot and
    area (and a rally end) as one stroke."""
    data, ids = split_of(corpora["area"], "test")
    alphabet = symbol_alphabet(corpora["area"])
    symbols, _ = alphabet_ids(data.vocab, alphabet.entries, alphabet.end)
    events = [i for i in symbols if alphabet.kind(data.vocab[i]) != "area"]
    assert len(events) < len(symbols)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(len(data.vocab)))
    model = CharModel(len(data.vocab), "gru", emb_size=4, hidden_size=4, num_layers=1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.as_tensor(np.log(p)))
    got = score_model(model, ids, torch.device("cpu"), nullcontext(), symbols, events)

    targets = stream_targets(ids)
    scored = targets[symbol_mask(targets, symbols)]
    nll = -np.log(p[scored])
    strokes = symbol_mask(scored, events).sum()
    assert got.symbols.loss == pytest.approx(nll.mean())
    assert got.loss_per_stroke == pytest.approx(nll.sum() / strokes)
    # about two symbols a stroke: shot and area, and one for each rally end
    assert 1.7 < len(scored) / strokes < 2.0
    rank = (p[None, :] > p[scored][:, None]).sum(axis=1)  # p has no ties
    assert got.symbols.top1 == pytest.approx((rank < 1).mean())
    assert got.symbols.top3 == pytest.approx((rank < 3).mean())
    # the model's next-shot distribution, filed under the shot before: p over the events
    rows = got.next_sum[got.next_count > 0] / got.next_count[got.next_count > 0, None]
    assert np.allclose(rows, p[events] / p[events].sum())


def test_baselines_rescored_on_every_position_are_the_librarys_own(corpora):
    data, _ = split_of(corpora["shot"], "test")
    alphabet = symbol_alphabet(corpora["shot"])
    symbols, end = alphabet_ids(data.vocab, alphabet.entries, alphabet.end)
    train, val, test = (data.split_ids(s) for s in ("train", "val", "test"))
    report = fit_baselines(train, val, test, symbols, end)
    every = symbol_mask(test, symbols)
    got = baseline_scores(report, train, test, symbols, end, every)
    assert set(got) == {b.name for b in report.baselines}
    for b in report.baselines:
        assert got[b.name].count == b.test.count
        assert got[b.name].loss == pytest.approx(b.test.loss)
        assert (got[b.name].top1, got[b.name].top3) == pytest.approx((b.test.top1, b.test.top3))
    # leaving out the split's first symbol: one fewer, scored like the rest
    fewer = every.copy()
    fewer[np.flatnonzero(every)[0]] = False
    assert (
        baseline_scores(report, train, test, symbols, end, fewer)[b.name].count == b.test.count - 1
    )


# -- transitions ----------------------------------------------------------------------------


def test_transitions_skip_areas_and_separators_and_a_rally_end_leads_to_the_serve():
    # ids: 0 '\n', 1 '\x1e', 2 '.', 3 'T', 4 'S', 5 '7' (an area); events: . T S
    ids = np.array([3, 5, 4, 5, 2, 0, 1, 0, 3, 5, 3, 2])  # "T7S7.\n\x1e\nT7T."
    counts = transition_counts(ids, [2, 3, 4])
    expected = np.zeros((3, 3))
    for a, b in [(3, 4), (4, 2), (2, 3), (3, 3), (3, 2)]:  # T>S S>. .>T T>T T>.
        expected[[2, 3, 4].index(a), [2, 3, 4].index(b)] += 1
    assert (counts == expected).all()
    # each row of a 2-D array is a sample of its own: nothing runs from one to the next
    assert transition_counts(np.array([[3, 4], [2, 3]]), [2, 3, 4]).sum() == 2
    assert previous_event(ids, [2, 3, 4]).tolist() == [1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0]
    assert previous_event(np.array([0, 1, 3]), [2, 3, 4]).tolist() == [-1, -1, 1]


# -- a tracked training ----------------------------------------------------------------------


def tracked_training(corpus: Path, monkeypatch, home: Path, **settings):
    from mlflow import MlflowClient

    from training import mlflow_setup

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    cfg = build_config("tiny", max_steps=40, eval_every=20, device="cpu", **SPLIT, **settings)
    result = train(cfg, corpus, corpus="shuttleset")
    client = MlflowClient(mlflow_setup.configure_mlflow())
    return result, client


def artifact(client, run_id: str, path: str, tmp: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(tmp)))


def table(client, run_id: str, path: str, tmp: Path) -> list[dict]:
    """An mlflow log_table artifact as rows."""
    data = json.loads(artifact(client, run_id, path, tmp).read_text(encoding="utf-8"))
    return [dict(zip(data["columns"], row, strict=True)) for row in data["data"]]


BASELINE_KEYS = ("most_frequent", "ngram2", "ngram3", "ngram4")


def test_a_tracked_training_is_measured_against_counting(
    corpora, trainer_home, monkeypatch, tmp_path
):
    corpus = corpora["shot"]
    # evaluations read a 100-char prefix of val (on which the smoothing constants chosen
    # differ); the baselines still choose on all of it
    result, client = tracked_training(corpus, monkeypatch, trainer_home, eval_chars=100)
    run_id = result.run_id
    metrics = client.get_run(run_id).data.metrics
    wanted = {"symbol_test_loss", "symbol_top1", "symbol_top3", "gain_over_baseline"}
    wanted |= {f"baseline_{k}_{m}" for k in BASELINE_KEYS for m in ("loss", "top1", "top3")}
    wanted |= {"baseline_best_loss", "baseline_best_top1", "baseline_best_top3"}
    assert wanted <= set(metrics)
    assert metrics["gain_over_baseline"] == pytest.approx(
        metrics["baseline_best_loss"] - metrics["symbol_test_loss"], abs=1e-12
    )
    assert 0 < metrics["symbol_top1"] <= metrics["symbol_top3"] <= 1

    # the baselines, fitted here on the trainer's own splits, give the logged numbers
    data = prepare_dataset(corpus, **SPLIT)
    alphabet = symbol_alphabet(corpus)
    symbols, end = alphabet_ids(data.vocab, alphabet.entries, alphabet.end)
    split = {s: data.split_ids(s) for s in ("train", "val", "test")}
    report = fit_baselines(split["train"], split["val"], split["test"], symbols, end)
    # scored on the positions the model was: the streams skip the first and last few
    keep = streamed_symbols(split["test"], symbols)
    assert 0 < (~keep).sum() <= EVAL_STREAMS
    on = {b.name: baseline_on(b, split["train"], split["test"], symbols, end, keep)
          for b in report.baselines}  # fmt: skip
    assert metrics["baseline_best_loss"] == pytest.approx(on[report.best.name].loss)
    assert metrics["baseline_best_loss"] == pytest.approx(report.best_loss, abs=0.05)
    assert metrics["baseline_most_frequent_loss"] == pytest.approx(on["most-frequent"].loss)
    trigrams = [b for b in report.baselines if b.order == 3]
    chosen = min(trigrams, key=lambda b: b.val.loss)  # the smoothing chosen on validation
    assert metrics["baseline_ngram3_loss"] == pytest.approx(on[chosen.name].loss)
    assert metrics["baseline_ngram3_top1"] == pytest.approx(on[chosen.name].top1)

    rows = table(client, run_id, "baselines.json", tmp_path)
    assert [r["chosen"] for r in rows].count("best") == 1 and rows[0]["chosen"] == "model"
    assert len(rows) == 1 + len(report.baselines)
    assert {r["test_symbols"] for r in rows} == {keep.sum()}  # model and baselines alike
    assert rows[0]["test_loss_per_stroke"] == pytest.approx(metrics["symbol_test_loss"])
    best = next(r for r in rows if r["chosen"] == "best")
    assert best["name"] == report.best.name and best["val_loss"] == pytest.approx(
        report.best.val.loss
    )

    # shot frequencies by name, counts as the manifest declares them
    shots = table(client, run_id, "corpus/shots.json", tmp_path)
    declared = alphabet.entries
    assert {r["symbol"]: r["count"] for r in shots} == {s: e["count"] for s, e in declared.items()}
    assert shots[0]["kind"] == "shot" and shots[0]["count"] == max(
        e["count"] for e in declared.values() if e["kind"] == "shot"
    )
    assert {r["en"] for r in shots} >= {"short service", "smash", "rally end"}
    train_ids = split["train"]
    by_symbol = {r["symbol"]: r["train_count"] for r in shots}
    assert by_symbol["T"] == int((np.asarray(train_ids) == data.vocab.index("T")).sum())

    # samples in words beside the raw ones, read back to the very same symbols
    for t in (0.5, 0.8, 1.0):
        raw = artifact(client, run_id, f"samples/final_T{t}.txt", tmp_path / "raw")
        words = artifact(client, run_id, f"samples/final_T{t}_rallies.txt", tmp_path / "words")
        sample, text = raw.read_text(encoding="utf-8"), words.read_text(encoding="utf-8")
        assert "Server: " in text
        assert sample_from_words(text, alphabet) == "".join(c for c in sample if c in alphabet)

    png = artifact(client, run_id, "plots/transitions.png", tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_with_two_symbols_a_stroke_losses_are_per_stroke(
    corpora, trainer_home, monkeypatch, tmp_path
):
    corpus = corpora["area"]
    result, client = tracked_training(corpus, monkeypatch, trainer_home)
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics["gain_over_baseline"] == pytest.approx(
        metrics["baseline_best_loss"] - metrics["symbol_test_loss"], abs=1e-12
    )
    data = prepare_dataset(corpus, **SPLIT)
    alphabet = symbol_alphabet(corpus)
    symbols, _ = alphabet_ids(data.vocab, alphabet.entries, alphabet.end)
    test_ids = data.split_ids("test")
    every = [alphabet.kind(data.vocab[symbols[i]]) for i in to_symbols(test_ids, symbols)]
    assert every.count("area") == every.count("shot")  # a landing area after every shot
    kinds = np.array(every)[streamed_symbols(test_ids, symbols)]  # those scored
    strokes = (kinds != "area").sum()
    rows = {r["name"]: r for r in table(client, result.run_id, "baselines.json", tmp_path)}
    best = next(r for r in rows.values() if r["chosen"] == "best")
    # nats per stroke = nats over the scored test symbols / their strokes and rally ends
    per_stroke = best["test_loss"] * len(kinds) / strokes
    assert best["test_symbols"] == len(kinds)
    assert metrics["baseline_best_loss"] == pytest.approx(per_stroke)
    assert metrics["baseline_best_loss"] > 1.5 * best["test_loss"]  # not per symbol
    model = rows[next(n for n in rows if n.startswith("model"))]
    assert metrics["symbol_test_loss"] > 1.5 * model["test_loss"]
    words = artifact(client, result.run_id, "samples/final_T1.0_rallies.txt", tmp_path)
    assert "Player is Viktor AXELSEN" in words.read_text(encoding="utf-8")
    assert not math.isnan(metrics["symbol_top3"])

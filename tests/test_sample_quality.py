"""Samples show what the model learned, whatever the architecture.

The check that would have caught symbol soup from rnn and gru models: the samples'
cross-entropy under a bigram model of the training split (`sample_bigram_loss`) is close
to what real validation text scores on it. A vanilla RNN started from zeros on a newline
wrote `[]]]]_]]]]'[]]…` (5.8 nats/char against 2.4) although its val loss was good.
"""

from __future__ import annotations

import numpy as np
import pytest

from training.bigram import BigramModel
from training.config import build_config
from training.sample import Start, generate, load_sampler
from training.train import train

# Each architecture with the budget that makes it a fair, short model of the Paul Graham
# corpus on one thread; rnn 1x256 for 340 steps is where the defect showed (val ~1.7,
# samples from zeros pure soup).
ARCHITECTURES = {
    "rnn": dict(num_layers=1, hidden_size=256, max_steps=340),
    "gru": dict(num_layers=1, hidden_size=128, max_steps=200),
    "lstm": dict(num_layers=1, hidden_size=128, max_steps=200),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpora_dir):
    """The essays (a corpus folder: documents joined by the separator), one short training
    per architecture; module-scoped, about a minute together."""
    import os

    import torch

    from scrapers.fetch import Fetcher
    from scrapers.ingest import ingest

    home = tmp_path_factory.mktemp("home")
    os.environ["CHARFLOW_HOME"] = str(home)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    source = str(corpora_dir / "paulgraham" / "articles.html")
    with Fetcher(rate_limit=None) as fetcher:
        corpus = ingest("paulgraham", source, fetcher=fetcher, progress=False).path
    results = {}
    for model, shape in ARCHITECTURES.items():
        cfg = build_config(
            "cpu-small", model=model, **shape, eval_every=10**6, device="cpu", sample_chars=300
        )
        results[model] = train(cfg, corpus, out_dir=home / model, track=False, progress=False)
    torch.set_num_threads(threads)
    del os.environ["CHARFLOW_HOME"]
    return {"corpus": corpus, **results}


@pytest.mark.parametrize("model", ARCHITECTURES)
def test_logged_samples_read_like_validation_text(trained, model):
    last = trained[model].history[-1]
    assert last["val_loss"] < 2.3  # the model did learn something
    assert abs(last["sample_bigram_loss"] - last["val_bigram_loss"]) < 0.5, last


def test_the_metric_catches_the_old_zero_state_start(trained):
    """What the rnn wrote before the fix: started from zeros on a newline, it is far from
    the corpus by this measure, and from its own context it is not."""
    net, vocab, start = load_sampler(trained["rnn"].best_checkpoint, device="cpu")
    text = (trained["corpus"] / "corpus.txt").read_text(encoding="utf-8")
    index = {ch: i for i, ch in enumerate(vocab)}
    bigrams = BigramModel(np.array([index[c] for c in text[: len(text) * 9 // 10]]), len(vocab))
    real = bigrams.texts_loss([text[-20_000:]], vocab)
    soup = "".join(generate(net, vocab, length=300, seed=1, start=Start()))
    fixed = "".join(generate(net, vocab, length=300, seed=1, start=start))
    assert bigrams.texts_loss([soup], vocab) > real + 1.5, soup[:80]
    assert abs(bigrams.texts_loss([fixed], vocab) - real) < 0.5, fixed[:80]


def test_a_checkpoint_keeps_its_sampling_context(trained):
    _, _, start = load_sampler(trained["gru"].best_checkpoint, device="cpu")
    assert len(start.context) == 256 and start.context.endswith("\x1e\n")  # a document start


def test_bigram_loss_by_hand():
    """Two symbols, train "abab…": P(b|a) = (count(ab) + k) / (count(a) + 2k)."""
    bigrams = BigramModel(np.array([0, 1] * 50), 2, k=0.5)
    p_ab = (50 + 0.5) / (50 + 1.0)
    p_aa = 0.5 / (50 + 1.0)
    assert bigrams.loss([0, 1]) == pytest.approx(-np.log(p_ab))
    assert bigrams.loss([0, 0, 1]) == pytest.approx(-(np.log(p_aa) + np.log(p_ab)) / 2)
    assert np.isnan(bigrams.loss([1]))


def test_an_empty_start_is_a_newline_from_zeros(trained):
    """Start() reads just a newline from zeros: kept for callers that want exactly that."""
    net, vocab, _ = load_sampler(trained["lstm"].best_checkpoint, device="cpu")
    a = "".join(generate(net, vocab, length=50, seed=1, start=Start()))
    b = "".join(generate(net, vocab, length=50, seed=1, prime="\n"))
    assert a == b


def test_document_breaks_are_visible():
    from training.sample import DOCUMENT_BREAK, visible_breaks

    assert visible_breaks("end.\n\x1e\nNext") == f"end.{DOCUMENT_BREAK}Next"
    assert "\x1e" not in visible_breaks("a\x1eb") and "─" * 16 in visible_breaks("\x1e")
    assert not any(ch.isalnum() for ch in DOCUMENT_BREAK)  # letters are symbols somewhere

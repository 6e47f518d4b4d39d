"""Cell pictures: text features, unit selection on made-up activations, the last layer's
states, and the page for briefly trained rnn, gru and lstm models."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from training.cells import cell_report, last_layer_states, select_units, text_features
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.config import build_config
from training.models import CharModel
from training.train import train

nan = np.nan


def test_text_features_by_hand():
    text = '\nAl: "a (b" c)\n  x(\ny'
    f = text_features(text)
    expected = {
        "inside quotes": [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "inside brackets": [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1],
        "position in line": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0, 1, 2, 3, 4, 0, 1],
        "indentation": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 0, 0],
        "speaker turn": [nan, *range(20)],
        "position in word": [0, 1, 2, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1],
    }
    assert set(f) == set(expected)
    for name, values in expected.items():
        assert len(f[name]) == len(text)
        np.testing.assert_array_equal(f[name], np.array(values, dtype=float), err_msg=name)


def test_text_features_quotes_brackets_and_unknown_line_start():
    text = 'ng “on” 「曰」\nsay "open\nshut) x'
    f = text_features(text)
    quoted = "".join(ch for ch, q in zip(text, f["inside quotes"], strict=True) if q)
    assert quoted == '“on「曰"open'  # an opener counts as inside, a closer as outside
    assert not f["inside quotes"][text.index("shut")]  # an open quote closes with its line
    assert not f["inside brackets"].any()  # a stray ")" never makes the depth negative
    # The text starts mid-line: its first line's column and indentation are unknown.
    first_line = text.index("\n")
    assert np.isnan(f["position in line"][:first_line]).all()
    assert np.isnan(f["indentation"][:first_line]).all()
    assert not np.isnan(f["position in line"][first_line:]).any()
    assert np.isnan(f["speaker turn"]).all()  # no "Name:" line


def bracket_text(rng: np.random.Generator, length: int) -> str:
    """Words with bracketed stretches, some nested, across lines."""
    out, depth = [], 0
    while len(out) < length:
        roll = rng.random()
        if roll < 0.03:
            out.append("(")
            depth += 1
        elif roll < 0.13 and depth:
            out.append(")")
            depth -= 1
        elif roll < 0.15:
            out.append("\n")
        else:
            out.append(str(rng.choice(list("abcde  "))))
    return "".join(out)


def test_select_units_finds_the_unit_made_to_track_brackets():
    rng = np.random.default_rng(0)
    text = bracket_text(rng, 3000)
    features = text_features(text)
    inside = features["inside brackets"]
    assert 0.2 < inside.mean() < 0.8
    activations = rng.normal(0, 1, (len(text), 64))
    activations[:, 37] = np.tanh(2 * inside - 1 + rng.normal(0, 0.3, len(text)))

    picks = select_units(activations, features, max_units=4)
    assert picks[0][:2] == (37, "inside brackets") and picks[0][2] > 0.9
    # The other 63 units are noise: nothing else clears the bar.
    assert len(picks) == 1


def test_select_units_signed_r_distinct_units_and_max_units():
    rng = np.random.default_rng(1)
    text = bracket_text(rng, 3000)
    features = text_features(text)
    activations = rng.normal(0, 1, (len(text), 16))
    line_pos = np.nan_to_num(features["position in line"])
    activations[:, 3] = -line_pos / 40 + rng.normal(0, 0.1, len(text))  # falls along a line
    activations[:, 9] = features["inside brackets"] + rng.normal(0, 0.2, len(text))
    activations[:, 12] = features["inside brackets"] + rng.normal(0, 0.4, len(text))

    picks = select_units(activations, features, max_units=6)
    # Every feature's best unit before any feature's second.
    assert [(u, name) for u, name, _ in picks] == [
        (3, "position in line"),
        (9, "inside brackets"),
        (12, "inside brackets"),
    ]
    assert picks[0][2] < -0.8  # r keeps its sign
    assert select_units(activations, features, max_units=2) == picks[:2]
    assert select_units(activations, features, max_units=0) == []


def test_select_units_one_unit_one_feature():
    """Two features that one unit tracks: the unit is shown once; the other feature gets
    its next best unit."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 500)
    features = {"a": x, "b": x + rng.normal(0, 0.3, 500)}
    activations = np.stack([x, rng.normal(0, 1, 500), x + rng.normal(0, 1, 500)], axis=1)
    picks = select_units(activations, features, max_units=6)
    assert [(u, name) for u, name, _ in picks] == [(0, "a"), (2, "b")]


def test_select_units_uses_only_where_a_feature_is_defined():
    rng = np.random.default_rng(3)
    feature = np.full(1000, nan)
    feature[500:] = np.arange(500)
    activations = rng.normal(0, 1, (1000, 4))
    activations[500:, 2] = np.arange(500) / 500 + rng.normal(0, 0.05, 500)
    picks = select_units(activations, {"f": feature, "constant": np.ones(1000)}, 3)
    assert picks[0][:2] == (2, "f") and picks[0][2] > 0.95
    assert all(name != "constant" for _, name, _ in picks)


@pytest.mark.parametrize("model_type", ["rnn", "gru", "lstm"])
def test_last_layer_states_match_the_fused_module(model_type):
    torch.manual_seed(0)
    model = CharModel(11, model_type, emb_size=6, hidden_size=8, num_layers=2, dropout=0.3)
    ids = torch.randint(0, 11, (40,)).tolist()
    states = last_layer_states(model, ids)
    assert model.training  # dropout switched off for the walk, then back on

    model.eval()
    with torch.no_grad():
        out, _ = model.rnn(model.embedding(torch.tensor([ids])))
    np.testing.assert_allclose(states["h"], out[0].numpy(), atol=1e-5)
    if model_type == "lstm":
        # nn.LSTM reports c only at a sequence's end: run each prefix to check c_t.
        for t in (0, 17, 39):
            with torch.no_grad():
                _, (_, c) = model.rnn(model.embedding(torch.tensor([ids[: t + 1]])))
            np.testing.assert_allclose(states["c"][t], c[-1, 0].numpy(), atol=1e-5)
    else:
        assert set(states) == {"h"}


class PictureText(HTMLParser):
    """The headings and the text inside each <pre class="cells">, unescaped."""

    def __init__(self):
        super().__init__()
        self.headings: list[str] = []
        self.pictures: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._in, self.headings = "h2", [*self.headings, ""]
        elif tag == "pre" and ("class", "cells") in attrs:
            self._in, self.pictures = "pre", [*self.pictures, ""]

    def handle_endtag(self, tag):
        if tag in ("h2", "pre"):
            self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.headings[-1] += data
        elif self._in == "pre":
            self.pictures[-1] += data


def parse(page: str) -> PictureText:
    parser = PictureText()
    parser.feed(page)
    return parser


FEATURES = "|".join(text_features("x"))


@pytest.mark.parametrize("model_type", ["rnn", "gru", "lstm"])
def test_page_for_a_briefly_trained_model(model_type, trainer_home, write_text, shakespeare_text):
    text = shakespeare_text[:100_000]
    cfg = build_config("tiny", model=model_type, max_steps=300, lr=2e-2, device="cpu")
    result = train(cfg, write_text("shk.txt", text), track=False, progress=False)
    ckpt = load_checkpoint(result.best_checkpoint)
    model = model_from_checkpoint(ckpt)
    stretch = text[90_000:93_000]  # the validation split (the 5% after the first 90%)

    page = cell_report(model, ckpt["vocab"], stretch, max_units=4)

    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "src=" not in page and "href=" not in page  # self-contained
    found = parse(page)
    assert 1 <= len(found.headings) <= 4
    assert found.pictures == [stretch] * len(found.headings)
    kind = r" \((h|c)\)" if model_type == "lstm" else ""
    units = []
    for heading in found.headings:
        match = re.fullmatch(rf"unit (\d+){kind} · ({FEATURES}) · r = (-?\d\.\d\d)", heading)
        assert match, heading
        assert 0.3 <= abs(float(match[match.lastindex])) <= 1
        units.append(heading.split(" · ")[0])
    assert len(set(units)) == len(units)
    named = " ".join(found.headings)
    # Counting along a word or a line is what 300 steps teach every architecture here
    # (|r| 0.35 to 0.67 when this was written); quotes and indentation are absent from
    # this text, so nothing may be named after them.
    assert "position in word" in named or "position in line" in named
    assert "inside quotes" not in named and "indentation" not in named
    if model_type == "lstm":
        assert "(c)" in named  # the cell state is searched too, and it tracks the most


def test_page_escapes_any_text_and_any_script():
    text = 'if a < b && c > "d" {\n\t诸葛亮曰：「善。」\n}\n'
    vocab = sorted(set(text))
    torch.manual_seed(0)
    model = CharModel(len(vocab), "gru", emb_size=4, hidden_size=8, num_layers=1)
    page = cell_report(model, vocab, text * 20)
    found = parse(page)
    assert found.pictures and all(p == text * 20 for p in found.pictures)
    # The text's markup characters appear only escaped (the spans may split runs of them).
    assert "< b" not in page and "&& c" not in page and '> "' not in page
    assert "&lt;" in page and "&amp;" in page and "&gt;" in page


def test_page_of_an_empty_or_cut_text():
    vocab = list("ab\n")
    torch.manual_seed(0)
    model = CharModel(len(vocab), "lstm", emb_size=4, hidden_size=8, num_layers=1)
    assert parse(cell_report(model, vocab, "")).pictures == [""]
    cut = cell_report(model, vocab, "ab\n" * 100, max_chars=10)
    assert parse(cut).pictures[0] == "ab\nab\nab\na"

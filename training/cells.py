"""Cell pictures: which hidden units of a trained char model track something simple.

Karpathy's "Visualizing and Understanding Recurrent Networks" (2015) shows units that turn
on inside quotes, count the position in a line or follow the depth of an expression. This
module finds such units in any charflow model: run the model over a stretch of text, take
the last layer's hidden state after each character (and, for an LSTM, its cell state), and
correlate every unit with a few features of the text that a reader can name. The units that
track a feature best are drawn as the text, each character's background coloured by the
unit's activation, in one self-contained HTML page.
"""

from __future__ import annotations

import html
import re

import numpy as np
import torch

from training.data import encode_text
from training.models import CharModel

# Correlations weaker than this mean "tracks nothing we can name"; showing such a unit
# under a feature's name would mislabel it.
MIN_ABS_R = 0.3
MAX_CHARS = 4000

OPENING_QUOTES = "“「『"
CLOSING_QUOTES = "”」』"
OPENING_BRACKETS = "([{（【"
CLOSING_BRACKETS = ")]}）】"
# "First Citizen:" (Shakespeare), "Monica: There's nothing to tell!" (Friends). A capital
# first letter keeps Go's `default:` and most prose out.
SPEAKER_LINE = re.compile(r"[A-Z][A-Za-z .'\-]{0,29}:(?=\s|$)")


def text_features(text: str) -> dict[str, np.ndarray]:
    """Per character, float (T,): the state of the text after reading that character, the
    same moment the hidden state describes. nan marks "undefined here"."""
    n = len(text)
    in_quotes = np.zeros(n)
    in_brackets = np.zeros(n)
    line_pos = np.zeros(n)
    indent = np.zeros(n)
    speaker = np.full(n, np.nan)
    word_pos = np.zeros(n)

    quoted = False
    depth = 0
    column = 0
    leading = True  # still inside the current line's leading whitespace
    indent_now = 0
    turn_start = None
    word = 0
    for t, ch in enumerate(text):
        if ch == "\n":
            # A quote left open at a line's end is closed there: prose with an unbalanced
            # quote would otherwise invert the feature for the rest of the text.
            quoted = False
            column = 0
            leading = True
            indent_now = 0
        else:
            if ch == '"':
                quoted = not quoted
            elif ch in OPENING_QUOTES:
                quoted = True
            elif ch in CLOSING_QUOTES:
                quoted = False
            if ch in OPENING_BRACKETS:
                depth += 1
            elif ch in CLOSING_BRACKETS:
                depth = max(depth - 1, 0)  # a stray closer ("1)" in a list) is ignored
            if column == 0 and SPEAKER_LINE.match(text, t):
                turn_start = t
            column += 1
            if leading and ch in " \t":
                indent_now += 1
            else:
                leading = False
        word = word + 1 if ch.isalnum() else 0
        in_quotes[t] = quoted
        in_brackets[t] = depth > 0
        line_pos[t] = column
        indent[t] = indent_now
        if turn_start is not None:
            speaker[t] = t - turn_start
        word_pos[t] = word
    # Where the text starts mid-line, its first line's column and indentation are unknown.
    first_newline = text.find("\n")
    line_pos[: first_newline if first_newline >= 0 else n] = np.nan
    indent[: first_newline if first_newline >= 0 else n] = np.nan
    return {
        "inside quotes": in_quotes,
        "inside brackets": in_brackets,
        "position in line": line_pos,
        "indentation": indent,
        "speaker turn": speaker,
        "position in word": word_pos,
    }


def select_units(
    activations: np.ndarray,
    features: dict[str, np.ndarray],
    max_units: int,
    min_abs_r: float = MIN_ABS_R,
) -> list[tuple[int, str, float]]:
    """The units that best track a feature: [(unit, feature, Pearson r)], in picking order.

    Each feature's r is taken over the characters where it is defined (not nan); a feature
    constant there (no quotes in the text) names nothing. Each pick goes to the feature
    with the fewest units so far, the strongest |r| among those breaking ties, so the page
    shows what different units track rather than six units tracking the easiest feature.
    A unit appears once; |r| below `min_abs_r` is never shown.
    """
    ranked = {}
    for name, values in features.items():
        r = _pearson_per_unit(activations, values)
        if r is not None:
            order = np.argsort(-np.abs(r), kind="stable")
            ranked[name] = [(int(u), float(r[u])) for u in order if abs(r[u]) >= min_abs_r]
    picks_of = dict.fromkeys(ranked, 0)
    chosen: list[tuple[int, str, float]] = []
    taken: set[int] = set()
    while len(chosen) < max_units:
        heads = []
        for name, units in ranked.items():
            while units and units[0][0] in taken:
                units.pop(0)
            if units:
                unit, r = units[0]
                heads.append((picks_of[name], -abs(r), unit, name, r))
        if not heads:
            break
        _, _, unit, name, r = min(heads)
        chosen.append((unit, name, r))
        taken.add(unit)
        picks_of[name] += 1
    return chosen


def _pearson_per_unit(activations: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """r of every unit (column) with `values` over its defined rows; None if undefined."""
    defined = np.isfinite(values)
    if defined.sum() < 3:
        return None
    y = values[defined] - values[defined].mean()
    y_norm = np.linalg.norm(y)
    if y_norm == 0:
        return None
    x = activations[defined].astype(np.float64)
    x = x - x.mean(axis=0)
    x_norm = np.linalg.norm(x, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x.T @ y) / (x_norm * y_norm)
    return np.nan_to_num(r)  # a constant unit tracks nothing


@torch.no_grad()
def last_layer_states(model: CharModel, ids: list[int]) -> dict[str, np.ndarray]:
    """{"h": (T, H)} and, for an LSTM, {"c": (T, H)}: the last layer's state after each id.

    nn.LSTM hands back only the final (h, c) of a sequence, so the text is fed one
    character at a time, carrying the state, from a zero state. Dropout is off meanwhile.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = model.embedding(torch.tensor([ids], dtype=torch.long, device=device))
        h = torch.empty(len(ids), model.rnn.hidden_size, device=device)
        c = torch.empty_like(h) if model.model_type == "lstm" else None
        state = None
        for t in range(len(ids)):
            _, state = model.rnn(x[:, t : t + 1], state)
            if c is None:
                h[t] = state[-1, 0]
            else:
                h[t], c[t] = state[0][-1, 0], state[1][-1, 0]
    finally:
        model.train(was_training)
    states = {"h": h.cpu().numpy()}
    if c is not None:
        states["c"] = c.cpu().numpy()
    return states


def cell_report(
    model: CharModel,
    vocab: list[str],
    text: str,
    max_units: int = 6,
    max_chars: int = MAX_CHARS,
) -> str:
    """A self-contained HTML page of the units that best track a simple feature of `text`
    (the first `max_chars` characters; every one must be in `vocab`)."""
    text = text[:max_chars]
    index = {ch: i for i, ch in enumerate(vocab)}
    states = last_layer_states(model, encode_text(index, text))
    hidden = states["h"].shape[1]
    # An LSTM's h and c side by side: columns hidden.. are the cell state's units.
    activations = np.concatenate(list(states.values()), axis=1)
    features = text_features(text)
    picks = select_units(activations, features, max_units)

    def unit_name(column: int) -> str:
        if "c" not in states:
            return f"unit {column}"
        kind = "h" if column < hidden else "c"
        return f"unit {column % hidden} ({kind})"

    sections = []
    for column, feature, r in picks:
        values = activations[:, column]
        scale = float(np.abs(values).max()) or 1.0
        heading = f"{unit_name(column)} · {feature} · r = {r:.2f}"
        sections.append(
            f"<h2>{html.escape(heading)}</h2>\n"
            f'<p class="scale">colour: blue −{scale:.2f} … white 0 … red +{scale:.2f}</p>\n'
            f'<pre class="cells">{_coloured(text, values / scale)}</pre>'
        )
    if not sections:
        sections.append(
            f"<p>No unit tracks any feature with |r| ≥ {MIN_ABS_R} on this text.</p>\n"
            f'<pre class="cells">{html.escape(text)}</pre>'
        )
    return _page(model, len(text), _best_table(activations, features, unit_name), sections)


# 21 colour steps, -10..10: a class per step keeps the page small (one short class name per
# character instead of an inline style).
STEPS = 10


def _coloured(text: str, values: np.ndarray) -> str:
    """The text as spans of one colour step each; a newline gets its own span so that its
    colour shows on a visible glyph."""
    steps = np.clip(np.rint(values * STEPS), -STEPS, STEPS).astype(int)
    classes = [f"p{s}" if s >= 0 else f"n{-s}" for s in steps.tolist()]
    parts = []
    start = 0
    for t in range(1, len(text) + 1):
        boundary = t == len(text) or classes[t] != classes[start] or "\n" in text[t - 1 : t + 1]
        if boundary:
            cls = classes[start] + (" nl" if text[start] == "\n" else "")
            # The glyph comes from CSS, so the page's text stays exactly the text.
            parts.append(f'<span class="{cls}">{html.escape(text[start:t])}</span>')
            start = t
    return "".join(parts)


def _best_table(activations, features, unit_name) -> str:
    """Every feature's best unit, shown or not: what the model tracks at all."""
    rows = []
    for name, values in features.items():
        r = _pearson_per_unit(activations, values)
        if r is None:
            rows.append(f"<tr><td>{name}</td><td colspan=2>not in this text</td></tr>")
            continue
        best = int(np.argmax(np.abs(r)))
        rows.append(
            f"<tr><td>{name}</td><td>{html.escape(unit_name(best))}</td>"
            f"<td>{r[best]:+.2f}</td></tr>"
        )
    return (
        "<table><tr><th>feature</th><th>best unit</th><th>r</th></tr>\n"
        + "\n".join(rows)
        + "</table>"
    )


def _page(model: CharModel, num_chars: int, table: str, sections: list[str]) -> str:
    rnn = model.rnn
    what = f"{model.model_type} {rnn.num_layers}×{rnn.hidden_size}"
    styles = []
    for step in range(STEPS + 1):
        alpha = step / STEPS
        styles.append(f".p{step}{{background:rgba(214,39,40,{alpha:.2f})}}")
        styles.append(f".n{step}{{background:rgba(31,119,180,{alpha:.2f})}}")
    css = "\n".join(
        [
            "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}",
            "pre.cells{font-family:ui-monospace,monospace;white-space:pre-wrap;"
            "line-height:1.5;border:1px solid #ddd;padding:.6em}",
            '.nl::before{content:"↵";color:#999}',
            "p.scale{color:#666;font-size:.85em;margin:.2em 0}",
            "table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #eee}",
            *styles,
        ]
    )
    intro = (
        f"<p>{html.escape(what)}: the last layer's hidden state after each of {num_chars} "
        "characters, starting from a zero state. Each picture colours every character by one "
        "unit's activation; the heading names the feature of the text the unit follows best "
        "and the Pearson correlation r with it over this text. Features describe the text "
        'after reading the character: inside quotes (" or “…”), inside brackets (depth of '
        "()[]{} &gt; 0), position in line, indentation (leading spaces/tabs so far), speaker "
        "turn (characters since a line began with <code>Name:</code>), position in word.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>cell pictures · {html.escape(what)}</title>\n<style>\n{css}\n</style></head>\n"
        f"<body>\n<h1>Cell pictures · {html.escape(what)}</h1>\n{intro}\n{table}\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )

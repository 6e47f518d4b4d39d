"""plots/transitions.png: P(next shot | previous shot) as heat-maps, from the training split,
the model's predictions and the model's own samples. Used by training/symbols.py."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

from training.symbol_alphabet import Alphabet

SAMPLE_STREAMS = 64  # the transition picture's samples: 64 x 300 chars, ~1,400 rallies
SAMPLE_STEPS = 300
SAMPLE_TEMPERATURE = 1.0  # the model's own distribution, neither sharpened nor flattened


# -- the model's samples ---------------------------------------------------------------------


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

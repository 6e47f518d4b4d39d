"""Gradient checks: hand-written backward passes against central differences, in float64.

For a parameter entry w the numerical gradient is the fourth-order central difference

    n = (8 (L(w + d) - L(w - d)) - (L(w + 2d) - L(w - 2d))) / (12 d),    d = 1e-3

and the error is |a - n| / max(|a|, |n|, TINY): relative where the gradient is large, and
absolute (scaled by 1/TINY) where both are ~0, so a zero gradient cannot divide by zero.
Why not the two-point (L(w + d) - L(w - d)) / 2d: its error is about d^2 |L'''| / 6 + eps |L| / d,
and with |L| ~ 60 nats no d brings that under 1e-5 relative for the small (~1e-6) entries of
an LSTM gradient; the five-point stencil's truncation error is O(d^4), so d can be 100x
larger and the round-off 100x smaller (worst error measured: ~3e-7, against ~1e-4 for the
two-point stencil at d = 1e-5). The analytic gradients are the unclipped ones from
model.loss (clipping is the optimiser's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.reference import build_model

DELTA = 1e-3
TINY = 1e-8
THRESHOLD = 1e-5
# Tiny models, so every entry of every parameter is checked, in a few seconds.
CHECK_TEXT = "hello charflow! 滚滚长江东逝水"
CHECK_HIDDEN = 5
CHECK_MODELS = (("minchar", 1), ("rnn", 1), ("rnn", 2), ("rnn", 3), ("lstm", 1), ("lstm", 2))


@dataclass
class CheckRow:
    check: str  # "finite-diff" or "torch"
    model: str
    parameter: str
    max_rel_error: float
    threshold: float

    @property
    def passed(self) -> bool:
        # `not >` so that a NaN error fails too
        return bool(self.max_rel_error <= self.threshold)


def rel_error(a, n, tiny: float = TINY):
    a, n = np.asarray(a), np.asarray(n)
    return np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), tiny)


def randomize(model, seed: int = 0, scale: float = 0.5) -> None:
    """Draw every parameter, biases too, at a scale where tanh/sigmoid are well off linear,
    so the checks exercise the nonlinearities rather than a near-linear model."""
    rng = np.random.default_rng(seed)
    for p in model.params.values():
        p[...] = rng.standard_normal(p.shape) * scale


def random_state(model, seed: int = 1, scale: float = 0.5):
    """A nonzero starting state, so the gradient paths through h_{-1} (and c_{-1}) matter."""
    rng = np.random.default_rng(seed)

    def draw(like):
        if isinstance(like, tuple | list):
            return type(like)(draw(x) for x in like)
        return np.tanh(rng.standard_normal(like.shape) * scale)

    return draw(model.initial_state())


def check_gradients(
    model, inputs, targets, state=None, *, max_entries: int | None = None, seed: int = 0
) -> dict[str, float]:
    """Max error per parameter over all entries, or over `max_entries` sampled ones."""
    state = model.initial_state() if state is None else state
    _, grads, _ = model.loss(inputs, targets, state)
    rng = np.random.default_rng(seed)
    errors = {}
    for name, param in model.params.items():
        entries = range(param.size)
        if max_entries is not None and param.size > max_entries:
            entries = rng.choice(param.size, max_entries, replace=False)
        worst = 0.0
        for flat in entries:
            ix = np.unravel_index(flat, param.shape)
            old = param[ix]
            losses = {}
            for k in (-2, -1, 1, 2):
                param[ix] = old + k * DELTA
                losses[k] = model.forward(inputs, targets, state)[0]
            param[ix] = old
            numerical = (8 * (losses[1] - losses[-1]) - (losses[2] - losses[-2])) / (12 * DELTA)
            worst = max(worst, float(rel_error(grads[name][ix], numerical)))
        errors[name] = worst
    return errors


def check_inputs(text: str = CHECK_TEXT):
    vocab = sorted(set(text))
    ids = [vocab.index(ch) for ch in text]
    return vocab, ids[:-1], ids[1:]


def finite_difference_rows(hidden_size: int = CHECK_HIDDEN, seed: int = 0) -> list[CheckRow]:
    vocab, inputs, targets = check_inputs()
    rows = []
    for kind, layers in CHECK_MODELS:
        model = build_model(kind, len(vocab), hidden_size, layers)
        randomize(model, seed)
        state = random_state(model, seed + 1)
        errors = check_gradients(model, inputs, targets, state, seed=seed)
        rows += [CheckRow("finite-diff", model.name, k, v, THRESHOLD) for k, v in errors.items()]
    return rows


def format_table(rows: list[CheckRow]) -> str:
    header = ("check", "model", "parameter", "max rel error", "result")
    cells = [
        (r.check, r.model, r.parameter, f"{r.max_rel_error:.2e}", "pass" if r.passed else "FAIL")
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

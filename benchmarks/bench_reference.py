"""Training speed, chars/s: numpy min-char-rnn beside the trainer's PyTorch CharModel.

Same model (1-layer tanh RNN, hidden 100, one-hot input = identity embedding of the
vocabulary, tinyshakespeare), same update (Adagrad, element-wise clip at 5, loss summed over
time), so the only difference is the implementation. The numpy figure is the baseline; the
ratio column is each row's speed over it. Run: `python -m benchmarks.bench_reference`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.models import CharModel
from training.reference import build_model
from training.reference.train import CLIP, fit

TEXT = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare" / "input.txt"
HIDDEN = 100
SECONDS = 5.0  # per measurement, after a warm-up


def load_ids() -> tuple[int, np.ndarray]:
    text = TEXT.read_text(encoding="utf-8")[:400_000]
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    return len(vocab), np.array([index[ch] for ch in text], dtype=np.int64)


def numpy_chars_per_sec(kind: str, vocab_size: int, ids: np.ndarray, seq_len: int = 25) -> float:
    model = build_model(kind, vocab_size, HIDDEN, 1, seed=0)
    steps = fit(model, ids, seq_len, lr=0.1, steps=10**9)
    for _ in range(20):  # warm-up
        next(steps)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        next(steps)
        n += 1
    return n * seq_len / (time.perf_counter() - start)


def torch_chars_per_sec(vocab_size: int, ids: np.ndarray, batch: int, seq_len: int) -> float:
    torch.manual_seed(0)
    net = CharModel(vocab_size, "rnn", emb_size=vocab_size, hidden_size=HIDDEN, num_layers=1)
    opt = torch.optim.Adagrad(net.parameters(), lr=0.1)
    length = (len(ids) - 1) // batch
    xs = torch.from_numpy(ids[: batch * length].reshape(batch, length))
    ys = torch.from_numpy(ids[1 : batch * length + 1].reshape(batch, length))
    state, pos, n, start = None, 0, 0, None
    while start is None or time.perf_counter() - start < SECONDS:
        if pos + seq_len > length:
            state, pos = None, 0
        logits, state = net(xs[:, pos : pos + seq_len], state)
        loss = F.cross_entropy(
            logits.flatten(0, 1), ys[:, pos : pos + seq_len].flatten(), reduction="sum"
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(net.parameters(), CLIP)
        opt.step()
        state = state.detach()
        pos += seq_len
        n += 1
        if start is None and n == 20:  # warm-up done
            n, start = 0, time.perf_counter()
    return n * batch * seq_len / (time.perf_counter() - start)


def run() -> list[dict]:
    vocab_size, ids = load_ids()
    base = numpy_chars_per_sec("minchar", vocab_size, ids)
    rows = [
        dict(
            name="numpy min-char-rnn, batch 1, seq 25",
            value=base,
            unit="chars/s",
            note="the baseline; about 14k on 2 idle cores",
        ),
        dict(
            name="numpy rnn.RNN (1 layer), batch 1, seq 25",
            value=numpy_chars_per_sec("rnn", vocab_size, ids),
            unit="chars/s",
            note="input projection vectorised over time",
        ),
    ]
    # numpy's small matrix-vector products run on one core, so the fair comparison pins
    # torch to one thread too; the last row is torch's default (all cores), which on a
    # shared, oversubscribed machine can be slower than one thread.
    default_threads = torch.get_num_threads()
    for batch, seq_len, threads, note in (
        (1, 25, 1, "per-step overhead dominates at this size"),
        (32, 128, 1, ""),
        (32, 128, default_threads, "about 220k on 2 idle cores"),
    ):
        torch.set_num_threads(threads)
        try:
            value = torch_chars_per_sec(vocab_size, ids, batch, seq_len)
        finally:
            torch.set_num_threads(default_threads)
        rows.append(
            dict(
                name=f"torch CharModel rnn, batch {batch}, seq {seq_len}, {threads} thread(s)",
                value=value,
                unit="chars/s",
                note=note,
            )
        )
    for row in rows[1:]:
        row["baseline"] = base
        row["ratio"] = row["value"] / base
    return rows


if __name__ == "__main__":
    for row in run():
        ratio = f"  ({row['ratio']:.2f}x numpy min-char-rnn)" if "ratio" in row else ""
        print(f"{row['name']:55s} {row['value']:>10,.0f} {row['unit']}{ratio}  {row['note']}")

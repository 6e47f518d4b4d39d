"""Trainer step throughput against a plain PyTorch loop at the same shapes, same process.

The plain loop is the least a training step can do: embedding -> nn.LSTM -> linear ->
cross-entropy -> AdamW step on batches already in memory. The trainer adds everything it
really does per step (batches cut from the memmap, learning-rate schedule, gradient clipping,
carried state, loss bookkeeping). Runs alternate trainer/plain and keep each side's best
window, so a neighbour's burst of CPU use hurts both sides alike instead of one.

    python -m benchmarks.bench_trainer
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.config import build_config
from training.train import train

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare" / "input.txt"
ROUNDS = 3  # trainer run, plain run, trainer run, plain run, ...
WINDOWS = 3  # timed windows per run; each side keeps its best
CASES = [
    # name, device, layers, hidden, batch, seq, bf16, steps per timed window
    ("cpu lstm 2x256 b32 s128", "cpu", 2, 256, 32, 128, False, 8),
    ("cuda lstm 3x512 b50 s50 fp32", "cuda", 3, 512, 50, 50, False, 200),
    ("cuda lstm 3x512 b256 s256 bf16", "cuda", 3, 512, 256, 256, True, 50),
]


def plain_loop(vocab: int, device: str, layers, hidden, batch, seq, bf16, steps) -> list[float]:
    """chars/s of the textbook loop on random ids already on the device, per window."""
    torch.manual_seed(0)
    emb = nn.Embedding(vocab, 64).to(device)
    lstm = nn.LSTM(64, hidden, layers, batch_first=True).to(device)
    head = nn.Linear(hidden, vocab).to(device)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3)
    data = torch.randint(0, vocab, (batch, seq + 1), device=device)
    x, y = data[:, :-1], data[:, 1:]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)

    def step():
        with autocast:
            out, _ = lstm(emb(x))
            loss = F.cross_entropy(head(out).flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: kernel selection, allocator
        step()
    rates = []
    for _ in range(WINDOWS):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        rates.append(steps * batch * seq / (time.perf_counter() - start))
    return rates


def trainer(text: Path, home: Path, device: str, layers, hidden, batch, seq, bf16, steps):
    """chars/s of the trainer's eval windows after the first (which pays for warm-up)."""
    cfg = build_config(
        "cpu-small",
        model="lstm",
        num_layers=layers,
        hidden_size=hidden,
        emb_size=64,
        dropout=0.0,
        batch_size=batch,
        seq_len=seq,
        bf16=bf16,
        device=device,
        max_steps=(WINDOWS + 1) * steps,
        eval_every=steps,
        patience=0,
        sample_chars=0,
        val_fraction=0.005,
        test_fraction=0.0,
    )
    # the same folder each repeat: overwrite=True starts over there
    result = train(cfg, text, out_dir=home / "ckpt", track=False, progress=False, overwrite=True)
    return [row["chars_per_sec"] for row in result.history[1:]]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for name, device, *shape in CASES:
            if device == "cuda" and not torch.cuda.is_available():
                row = {"name": f"trainer / plain loop, {name}", "note": "skipped: no CUDA"}
                rows.append(row)
                continue
            ours, base = [], []
            for _ in range(ROUNDS):
                ours += trainer(SHAKESPEARE, home, device, *shape)
                base += plain_loop(65, device, *shape)
            ratio = max(ours) / max(base)
            rows.append(
                {
                    "name": f"trainer / plain loop, {name}",
                    "value": max(ours),
                    "unit": "chars/s",
                    "baseline": max(base),
                    "ratio": ratio,
                    "target": ">= 0.9",
                    "note": f"best of {len(ours)} windows each; trainer {min(ours):,.0f}-"
                    f"{max(ours):,.0f}, plain {min(base):,.0f}-{max(base):,.0f}"
                    + ("" if device == "cpu" else f"; {torch.cuda.get_device_name()}"),
                }
            )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)

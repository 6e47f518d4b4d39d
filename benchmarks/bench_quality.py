"""Quality: best val loss on tiny-shakespeare (last 10% as val) within a time budget.

CPU: the cpu-small preset, target <= 1.55 nats/char within 5 minutes on the 2 CPU cores
(290 s of training and periodic evaluation; the final evaluation fits in the rest).
GPU (only where CUDA is present): the gpu preset, target <= 1.40 within 120 s.
For scale: a plain 2x256 LSTM with cosine decay reached 1.56 on CPU; nanoGPT's CPU
configuration reports 1.88 after about 3 minutes on a laptop. The CPU result depends on how
much CPU the machine really gives (the note shows the throughput seen): run it quietly.

    python -m benchmarks.bench_quality        # or: python -m benchmarks quality
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from training.config import CORPUS_DEFAULTS, build_config
from training.train import train
from training.units import bits

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare" / "input.txt"
CASES = [
    # name, preset, device, seconds, target
    ("cpu-small on tinyshakespeare, best val loss in 5 min", "cpu-small", "cpu", 290.0, 1.55),
    ("gpu on tinyshakespeare, best val loss in 2 min", "gpu", "cuda", 115.0, 1.40),
]


def run() -> list[dict]:
    rows = []
    for name, preset, device, seconds, target in CASES:
        if device == "cuda" and not torch.cuda.is_available():
            rows.append({"name": name, "note": "skipped: no CUDA"})
            continue
        cfg = build_config(
            preset, CORPUS_DEFAULTS["tinyshakespeare"], device=device, max_seconds=seconds
        )
        with tempfile.TemporaryDirectory() as tmp:
            result = train(
                cfg, SHAKESPEARE, corpus="tinyshakespeare", out_dir=Path(tmp), track=False
            )
        best_row = min(result.history, key=lambda r: r["val_loss"])
        where = torch.cuda.get_device_name() if device == "cuda" else f"{os.cpu_count()} CPUs"
        rows.append(
            {
                "name": name,
                "value": result.best_val_loss,
                "unit": "nats/char",
                "target": f"<= {target}",
                "note": (
                    f"{bits(result.best_val_loss):.3f} bits/char at step "
                    f"{best_row['step']} of {result.steps} ({result.stopped_because}); "
                    f"{result.chars_per_sec:,.0f} chars/s while training; {where}"
                ),
            }
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)

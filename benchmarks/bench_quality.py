"""CPU quality: the cpu-small preset on tiny-shakespeare (last 10% as val) for 5 minutes.

Target: best val loss <= 1.55 nats/char within 300 s on the 2 CPU cores. For scale: a plain
2x256 LSTM with cosine decay reached 1.56; nanoGPT's CPU configuration reports 1.88 after
about 3 minutes on a laptop. The result depends on how much CPU the machine really gives
(the note shows the throughput seen), so run it on a quiet machine:

    python -m benchmarks.bench_quality        # or: python -m benchmarks quality
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from training.config import CORPUS_DEFAULTS, build_config
from training.loop import train

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare" / "input.txt"
SECONDS = 290.0  # training + periodic evals; the final evaluation fits in the 5 minutes


def run() -> list[dict]:
    cfg = build_config(
        "cpu-small", CORPUS_DEFAULTS["tinyshakespeare"], device="cpu", max_seconds=SECONDS
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, SHAKESPEARE, corpus="tinyshakespeare", out_dir=Path(tmp), track=False)
    best_row = min(result.history, key=lambda r: r["val_loss"])
    return [
        {
            "name": "cpu-small on tinyshakespeare, best val loss in 5 min",
            "value": result.best_val_loss,
            "unit": "nats/char",
            "target": "<= 1.55",
            "note": (
                f"{result.best_val_loss / math.log(2):.3f} bits/char at step {best_row['step']}"
                f" of {result.steps} ({result.stopped_because}); "
                f"{result.chars_per_sec:,.0f} chars/s while training"
            ),
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(row)

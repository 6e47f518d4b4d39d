"""MLflow tracking cost on a SQLite store: what a training step pays to log its metrics.

Baseline: one `MlflowClient.log_batch` call (one SQLite transaction) per step. charflow's
RunTracker buffers metrics and writes them in batches at most every few seconds.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

STEP_METRICS = {
    "train_loss": 2.0,
    "train_bpc": 2.9,
    "lr": 1e-3,
    "grad_norm": 0.5,
    "chars_per_sec": 2e4,
}


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        start = time.perf_counter()
        from mlflow.entities import Metric

        from training.registration import register_model
        from training.tracking import RunTracker

        tracker = RunTracker("bench")  # creates the store: MLflow's migrations run here
        first_use = time.perf_counter() - start
        with tracker as run:
            steps = 300
            start = time.perf_counter()
            for step in range(steps):
                metrics = [Metric(k, v, 0, step) for k, v in STEP_METRICS.items()]
                run.client.log_batch(run.run_id, metrics=metrics)
            direct_ms = (time.perf_counter() - start) / steps * 1e3

            steps = 3000
            start = time.perf_counter()
            for step in range(steps):
                run.log_metrics(STEP_METRICS, step)
            run.flush()  # the buffered rows are written inside the timed span
            buffered_ms = (time.perf_counter() - start) / steps * 1e3

            checkpoint = Path(tmp) / "best.pt"
            checkpoint.write_bytes(os.urandom(1 << 20))
            start = time.perf_counter()
            register_model(run, checkpoint, val_loss=1.0, corpus_digest="0" * 64)
            log_model = time.perf_counter() - start
    del os.environ["MLFLOW_TRACKING_URI"]
    return [
        {
            "name": "log 5 metrics per step (RunTracker.log_metrics, flush included)",
            "value": buffered_ms,
            "unit": "ms/step",
            "baseline": direct_ms,
            "ratio": direct_ms / buffered_ms,
            "target": ">= 5x faster than log_batch per step",
            "note": "baseline: one MlflowClient.log_batch per step",
        },
        {"name": "new SQLite store (migrations)", "value": first_use, "unit": "s"},
        {
            "name": "log_model + register + champion (1 MiB checkpoint)",
            "value": log_model,
            "unit": "s",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)

"""Where the training loop's news goes: the console (log lines and a progress bar) and MLflow.

The loop calls three methods of one `Reporter` and knows nothing else about its audience;
`Reporters` fans one call out to several.
"""

from __future__ import annotations

import sys

from training.sample import visible_breaks
from training.units import bits

# The metrics every run logs at each evaluation, under these names (compare runs in the UI).
# seconds and chars (training time and characters read so far) are the x-axes on which
# runs of different speeds compare: equal time is not equal data.
EVAL_METRICS = ("train_loss", "val_loss", "lr", "grad_norm", "chars_per_sec", "seconds", "chars")
SAMPLE_METRICS = ("sample_bigram_loss", "val_bigram_loss")  # when the run samples
UNBOUNDED_STEPS = 10**8


class Reporter:
    """Silent: the base for reporters, and what ranks other than 0 report to."""

    def log(self, message: str) -> None:
        """A line for the person watching."""

    def step(self) -> None:
        """One training step is done."""

    def evaluation(self, row: dict, sample: str, improved: bool) -> bool | None:
        """An evaluation: `row` as in the run's history, a sample of the model's text.
        Returning True asks the loop to stop (e.g. a search pruning an unpromising trial)."""

    def flush(self) -> None:
        """Make what was reported durable: a checkpoint is about to be written, and a run
        resumed from it must find every metric up to it."""


class Reporters(Reporter):
    def __init__(self, *reporters: Reporter):
        self.reporters = reporters

    def log(self, message: str) -> None:
        for r in self.reporters:
            r.log(message)

    def step(self) -> None:
        for r in self.reporters:
            r.step()

    def evaluation(self, row: dict, sample: str, improved: bool) -> bool:
        stops = [r.evaluation(row, sample, improved) for r in self.reporters]  # all hear it
        return any(stops)

    def flush(self) -> None:
        for r in self.reporters:
            r.flush()


class Console(Reporter):
    """Lines on stderr; a tqdm bar over the steps when `bar` is on (then lines go through tqdm
    so they do not tear it)."""

    def __init__(self, bar: bool, max_steps: int, initial_step: int = 0):
        # A run bounded by time or characters sets max_steps out of reach: no total then.
        self.max_steps = max_steps if max_steps < UNBOUNDED_STEPS else None
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.max_steps, initial=initial_step, dynamic_ncols=True)

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update()

    def evaluation(self, row: dict, sample: str, improved: bool) -> None:
        of = f"/{self.max_steps}" if self.max_steps else ""
        self.log(
            f"step {row['step']}{of} | train {row['train_loss']:.4f} | "
            f"val {row['val_loss']:.4f} ({bits(row['val_loss']):.3f} bpc)"
            f"{' *' if improved else ''} | lr {row['lr']:.2e} | "
            f"{row['chars_per_sec']:,.0f} chars/s | {row['seconds']:.0f} s"
        )
        if sample:
            measured = ""
            if "sample_bigram_loss" in row:
                measured = (
                    f" (bigram loss {row['sample_bigram_loss']:.2f}, "
                    f"validation text {row['val_bigram_loss']:.2f})"
                )
            shown = visible_breaks(sample[:120]).replace("\n", " | ")
            self.log(f"  sample{measured}: {shown}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MLflowReporter(Reporter):
    """Metrics (with their bits/char twins) and samples into the run of `tracker`."""

    def __init__(self, tracker):
        self.tracker = tracker  # training.tracking.RunTracker; MLflow loads only when used

    def evaluation(self, row: dict, sample: str, improved: bool) -> None:
        metrics = {k: row[k] for k in (*EVAL_METRICS, *SAMPLE_METRICS) if k in row}
        metrics.update(train_bpc=bits(row["train_loss"]), val_bpc=bits(row["val_loss"]))
        self.tracker.log_metrics(metrics, step=row["step"])
        if sample:
            self.tracker.log_sample(row["step"], visible_breaks(sample))

    def flush(self) -> None:
        self.tracker.flush()  # with a journal: an fsync, never a wait on the network

"""Registering a live run's model: the run's records reach the store first, a busy store
gets a few more tries, and a store that stays away gets the registration journaled in the
run folder (sent when it answers again, or by `charflow sync RUN_DIR`). What a version is
and who is champion: training/registry.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from training.errors import TrainingError
from training.registry import ModelResult, register_version
from training.tracking_journal import is_transient, reason

if TYPE_CHECKING:
    from training.tracking import RunTracker

REGISTER_WAIT_SECONDS = 60.0  # how long registration waits for the run's records to be sent
# A busy store (a locked SQLite file, a server restarting) mostly answers within seconds:
# tries 1 + 2 + 4 s apart before the registration is deferred to the journal.
REGISTER_TRIES = 4


def register_model(
    tracker: RunTracker, checkpoint_path: Path, *, val_loss: float, corpus_digest: str
) -> ModelResult:
    """Log the checkpoint as the pyfunc model of the tracker's run, register it as a new
    version of charflow-<corpus>, and crown it if it is the best finished version.

    The run's records reach the store first (its metrics are complete before its model
    appears). When the store is away, the registration is journaled with a copy of the
    checkpoint and done when the store answers again, or by `charflow sync RUN_DIR`:
    the result then says `deferred`."""
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise TrainingError(f"checkpoint not found: {checkpoint_path}")
    if not tracker.drain(REGISTER_WAIT_SECONDS):
        return _defer(tracker, checkpoint_path, val_loss, corpus_digest, "is not answering")
    for attempt in range(REGISTER_TRIES):
        try:
            return register_version(
                tracker.client,
                corpus=tracker.corpus,
                experiment_id=tracker.experiment_id,
                run_id=tracker.run_id,
                checkpoint_path=checkpoint_path,
                val_loss=val_loss,
                corpus_digest=corpus_digest,
                # One id per run and val loss: a retry, or a resume that finishes a run killed
                # after it registered, finds that version instead of adding another.
                registration=f"{tracker.run_id}:{float(val_loss)!r}",
            )
        except Exception as err:
            if not is_transient(err):
                raise
            if attempt == REGISTER_TRIES - 1:
                what = f"failed ({reason(err)})"
                return _defer(tracker, checkpoint_path, val_loss, corpus_digest, what)
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _defer(tracker, checkpoint_path: Path, val_loss: float, digest: str, what: str):
    tracker.defer_registration(checkpoint_path, val_loss=val_loss, corpus_digest=digest)
    later = (
        f"`charflow sync {tracker.journal.folder}`"
        if tracker.journal.folder is not None
        else "nothing: this run has no folder to keep it in"
    )
    return ModelResult(
        "",
        False,
        f"not registered yet: {tracker.label} {what}; it is registered when the store "
        f"answers again (or by {later})",
        deferred=True,
    )

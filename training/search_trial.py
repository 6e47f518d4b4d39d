"""One trial of an Optuna search: a child run of the sweep, the pruner fed its validation
loss at each twentieth of its budget (PruningReporter), the result told to the study."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket

from training.config import TrainConfig
from training.loop import EVAL_POINTS
from training.reporting import Reporter
from training.search_space import SearchSpace
from training.search_study import PRUNED_TAG, STUDY_TAG, TRIAL_TAG, Search, open_study
from training.sweep import ChildResult, Sweep, run_child
from training.sweep_workers import describe_result

log = logging.getLogger(__name__)


class ChildFailed(Exception):
    """A trial's training failed (the child run says why): the trial is FAIL."""


class PruningReporter(Reporter):
    """Feeds each evaluation's val_loss to the trial, at the twentieth of the budget the
    run has reached, and asks the loop to stop when the pruner says so."""

    def __init__(self, trial, cfg: TrainConfig):
        self.trial, self.cfg = trial, cfg
        self.last_point = 0
        self.pruned = ""  # why, once pruned

    def point(self, row: dict) -> int:
        """1..20: how far through its budget (steps, seconds or characters) the run is."""
        cfg = self.cfg
        done = [row["step"] / cfg.max_steps]
        if cfg.max_seconds:
            done.append(row["seconds"] / cfg.max_seconds)
        if cfg.max_chars:
            done.append(row["chars"] / cfg.max_chars)
        return min(EVAL_POINTS, int(max(done) * EVAL_POINTS + 1e-9))

    def evaluation(self, row: dict, sample: str, improved: bool) -> bool | None:
        point = self.point(row)
        if point <= self.last_point:  # another evaluation within the same twentieth
            return None
        self.last_point = point
        self.trial.report(row["val_loss"], point)
        if self.trial.should_prune():
            self.pruned = (
                f"pruned at {point}/{EVAL_POINTS} of the budget (step {row['step']}): "
                f"val_loss {row['val_loss']:.4f} above the median of earlier trials there"
            )
            return True
        return None


def trial_sweep(sweep: Sweep, space: SearchSpace) -> Sweep:
    """The sweep as a trial sees it: its one configuration with the searched settings
    marked, so every trial differs from it (a new child, named by what was searched)."""
    reference = dataclasses.replace(sweep.configs[0], **dict.fromkeys(space.keys, "(searched)"))
    return dataclasses.replace(sweep, configs=[reference])


def run_trial(
    sweep: Sweep, search: Search, *, seed_offset: int = 0, study=None, progress: bool = False
) -> ChildResult | None:
    """Ask the study for one trial, train it as a child run (the pruner listening), tell
    the study how it went. None when the trial never reached training."""
    import optuna

    study = study if study is not None else open_study(search, seed_offset)
    seen: dict[str, ChildResult] = {}

    def objective(trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        cfg = search.base.replace(**search.space.suggest(trial))
        reporter = PruningReporter(trial, cfg)
        tags = {TRIAL_TAG: str(trial.number), STUDY_TAG: search.study_name}
        result = run_child(
            trial_sweep(sweep, search.space), cfg, reporter=reporter, tags=tags, progress=progress
        )
        result.index = trial.number
        seen["result"] = result
        if result.run_id:
            trial.set_user_attr("mlflow_run_id", result.run_id)
        trial.set_user_attr("run_name", result.run_name)
        if result.status == "FAILED":
            trial.set_user_attr("failure", result.reason)
            raise ChildFailed(result.reason)
        if reporter.pruned:
            result.status, result.reason = "PRUNED", reporter.pruned
            _mark_pruned(result.run_id, reporter.pruned)
            raise optuna.TrialPruned(reporter.pruned)
        return result.best_val_loss

    with _quiet_failures():
        study.optimize(objective, n_trials=1, catch=(ChildFailed,), gc_after_trial=False)
    return seen.get("result")


@contextlib.contextmanager
def _quiet_failures():
    """Optuna logs a failed trial with a traceback of our own raise; the child's log and
    charflow's line already say why."""
    optuna_log = logging.getLogger("optuna")
    level = optuna_log.level
    optuna_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        optuna_log.setLevel(level)


def _mark_pruned(run_id: str | None, why: str) -> None:
    from training.mlflow_setup import mlflow_client

    if not run_id:
        return
    try:
        client = mlflow_client()
        client.set_tag(run_id, PRUNED_TAG, why)
        client.set_terminated(run_id, "KILLED")
    except Exception as err:  # best effort
        log.warning("could not mark run %s as pruned: %s", run_id, err)


def describe_trial(result: ChildResult | None, done: int, total: int) -> str:
    if result is None:
        return f"[{done}/{total}] a trial did not start"
    if result.status == "PRUNED":
        return f"[{done}/{total}] trial {result.index} {result.run_name}: PRUNED {result.reason}"
    line = describe_result(result, done, total)
    return line.replace(f"[{done}/{total}] ", f"[{done}/{total}] trial {result.index} ", 1)

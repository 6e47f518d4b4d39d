"""Hyperparameter search with Optuna: ranges from a YAML file, the TPE sampler, and the
median pruner fed the validation loss at every evaluation. Each trial is one child run of
one sweep (training/sweep.py), so a search reads in MLflow like any other sweep.

A search space is a YAML mapping of TrainConfig settings to ranges or choices
(training/search_space.py). The study lives in a database (training/search_study.py). A
search started again with the same name continues it: the parent run is reopened, trials
a dead process left RUNNING are failed (and run again), and only the missing trials run
(training/search_start.py).

    check_space / load_space   the ranges, checked before anything starts (search_space)
    begin_search               the study and the parent run, new or reopened (search_start)
    run_trial                  one trial: a child run, pruned or not, told to the study
                               (search_trial)
    finish_search              the comparison of every trial onto the parent run
    run_search                 all of it on this machine (trials in local processes)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from training.config import TrainConfig
from training.search_space import SearchSpace
from training.search_start import begin_search, end_interrupted_children
from training.search_study import (
    Search,
    counted,
    existing_study,
    open_study,
    shown_url,
    trials_left,
)
from training.search_trial import describe_trial, run_trial
from training.sweep import ChildResult, Sweep, finish_sweep
from training.sweep_records import _attach_log, _end_parent
from training.sweep_workers import _to_stderr, in_worker_processes, plan_workers
from training.units import bits


def trial_results(study) -> list[ChildResult]:
    """The counted trials as sweep children, in trial order."""
    from optuna.trial import TrialState

    status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "PRUNED"}
    results = []
    for t in study.get_trials(deepcopy=False):
        if counted(t) and t.user_attrs.get("mlflow_run_id"):
            results.append(
                ChildResult(
                    index=t.number,
                    run_name=t.user_attrs.get("run_name", ""),
                    run_id=t.user_attrs["mlflow_run_id"],
                    status=status.get(t.state, "FAILED"),
                    reason=t.user_attrs.get("failure", ""),
                    best_val_loss=t.value if t.state == TrialState.COMPLETE else float("nan"),
                )
            )
    return results


def finish_search(sweep: Sweep, search: Search):
    """The comparison of every counted trial (this start's and earlier ones') onto the
    parent run, which ends; the best trial's settings as the parent's tags."""
    from training.mlflow_setup import mlflow_client

    study = open_study(search)
    end_interrupted_children(study, sweep)
    results = trial_results(study)
    comparison = finish_sweep(sweep, results)
    finished = [r for r in results if r.status == "FINISHED"]
    if finished:
        best = min(finished, key=lambda r: r.best_val_loss)
        client = mlflow_client()
        with contextlib.suppress(Exception):
            client.set_tag(sweep.parent_run_id, "charflow.best_trial", str(best.index))
            params = study.trials[best.index].params
            client.set_tag(sweep.parent_run_id, "charflow.best_params", json.dumps(params))
    return comparison


def summary(search: Search, study) -> str:
    """`8 trials: 6 finished, 2 pruned, 0 failed; best trial 3 val 1.70 nats/char (lr=..)`"""
    results = trial_results(study)
    by = {s: sum(r.status == s for r in results) for s in ("FINISHED", "PRUNED", "FAILED")}
    line = (
        f"{len(results)} trials: {by['FINISHED']} finished, {by['PRUNED']} pruned, "
        f"{by['FAILED']} failed"
    )
    finished = [r for r in results if r.status == "FINISHED"]
    if finished:
        best = min(finished, key=lambda r: r.best_val_loss)
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in study.trials[best.index].params.items())  # fmt: skip
        line += (
            f"; best trial {best.index}: val {best.best_val_loss:.4f} nats/char "
            f"({bits(best.best_val_loss):.3f} bpc) with {params}"
        )
    return line


# --- all of it on this machine ---------------------------------------------------------------


def run_search(
    corpus: str,
    source: str | Path,
    base: TrainConfig,
    space: SearchSpace,
    *,
    trials: int,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    grid: str = "optuna",
    parallel: int | None = None,
    storage: str | None = None,
    echo: Callable[[str], None] | None = None,
):
    """begin_search, the trials still missing (in local processes when more than one at a
    time), finish_search. Started again with the same name, it continues."""
    echo = echo or _to_stderr
    plan_workers([base], parallel)  # a bad --parallel fails before anything starts
    sweep, search = begin_search(
        corpus, source, base, space, trials=trials, name=name, tags=tags, grid=grid,
        storage=storage,
    )  # fmt: skip
    study = open_study(search, seed_offset=len(_all_trials(search)))
    done, running, left = trials_left(search, study)
    plan = plan_workers([base] * max(1, left), parallel)
    again = f"{done} done, " if done else ""
    elsewhere = f"{running} running elsewhere, " if running else ""
    echo(
        f"search {sweep.name}: {trials} trials ({again}{elsewhere}{left} to run), "
        f"{plan.describe()}; {space.describe()}; study in {shown_url(search.storage)}; "
        f"parent run {sweep.url}"
    )
    try:
        if plan.parallel == 1 or left <= 1:
            for number in range(left):
                result = run_trial(sweep, search, study=study)
                echo(describe_trial(result, done + number + 1, trials))
        else:
            _trials_in_processes(sweep, search, plan, left, done, echo)
    except BaseException as err:  # the parent must not stay RUNNING
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        _end_parent(sweep.parent_run_id, status)
        echo(f"search {sweep.name} stopped ({type(err).__name__}): parent run {status}; "
             f"the same command continues it")  # fmt: skip
        raise
    comparison = finish_search(sweep, search)
    echo(summary(search, open_study(search)))
    return comparison


def _all_trials(search: Search) -> list:
    study = existing_study(search.study_name, search.storage)
    return study.get_trials(deepcopy=False) if study is not None else []


def _trials_in_processes(sweep: Sweep, search: Search, plan, left: int, done: int, echo) -> None:
    """Each trial in a worker process that asks the study for its trial (the study's
    database is what they share)."""
    offset = len(_all_trials(search))
    jobs = [(trial_in_worker, (sweep, search, offset + ordinal)) for ordinal in range(left)]
    for finished, result in enumerate(in_worker_processes(plan, jobs), start=1):
        echo(describe_trial(result, done + finished, search.trials))


def trial_in_worker(sweep: Sweep, search: Search, seed_offset: int) -> ChildResult | None:
    """run_trial with its output in <sweep folder>/logs/ (attached to the child run), so
    that trials side by side do not interleave on the terminal."""
    logs = Path(sweep.out_root) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"trial-{seed_offset:03d}-{os.getpid()}.log"
    with (
        open(log_path, "w", encoding="utf-8", buffering=1) as out,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(out),
    ):
        result = run_trial(sweep, search, seed_offset=seed_offset)
        if result is not None and result.status != "FINISHED":
            print(f"{result.status.lower()}: {result.reason}")
    if result is not None and result.run_id:
        _attach_log(result.run_id, log_path)
    return result

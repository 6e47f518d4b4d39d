"""A sweep run here, by `run_sweep`: how many children at a time this machine takes (CPU
cores or GPUs), and a pool of spawned worker processes, each child's output in its own
train.log. An orchestrator spreads the steps of training/sweep.py out itself instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.config import TrainConfig
from training.errors import TrainingError
from training.sweep import (
    ChildResult,
    Sweep,
    finish_sweep,
    run_child,
    start_sweep,
)
from training.sweep_records import _attach_log, _end_parent
from training.units import bits


@dataclass(frozen=True)
class WorkerPlan:
    """How many runs at once, and torch threads each: never more than the machine has."""

    parallel: int
    threads: int
    gpus: int  # 0: runs share the CPU cores; else one run per GPU

    def describe(self) -> str:
        where = f"one per GPU ({self.gpus})" if self.gpus else f"{self.threads} torch threads each"
        return f"{self.parallel} at a time, {where}"


def plan_workers(configs: Sequence[TrainConfig], parallel: int | None = None) -> WorkerPlan:
    """On CPU, runs x threads <= cores; with GPUs, one run per GPU. `parallel` beyond that
    is refused rather than oversubscribed."""
    cores = len(os.sched_getaffinity(0))
    gpus = _gpus_for(configs)
    limit = gpus or cores
    if parallel is not None and not 1 <= parallel <= limit:
        what = f"{gpus} GPU(s), one run each" if gpus else f"{cores} CPU core(s)"
        raise TrainingError(f"--parallel {parallel} does not fit this machine: {what}")
    runs = min(len(configs), parallel or limit)
    return WorkerPlan(parallel=runs, threads=max(1, cores // runs), gpus=gpus)


def _gpus_for(configs: Sequence[TrainConfig]) -> int:
    devices = {cfg.device for cfg in configs}
    if any(d.startswith("cuda:") for d in devices):
        return 1  # the configurations name one GPU: one run at a time on it
    if not devices <= {"auto", "cuda"}:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_sweep(
    corpus: str,
    source: str | Path,
    configs: Sequence[TrainConfig],
    *,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    grid: str = "custom",
    parallel: int | None = None,
    echo: Callable[[str], None] | None = None,
):
    """start_sweep, every run_child (in local processes when more than one at a time),
    finish_sweep; a line per finished child goes to `echo` (default stderr)."""
    echo = echo or _to_stderr
    plan = plan_workers(configs, parallel)  # a bad --parallel fails before anything starts
    sweep = start_sweep(corpus, source, configs, name=name, tags=tags, grid=grid)
    echo(
        f"sweep {sweep.name}: {len(configs)} configurations, {plan.describe()}; "
        f"parent run {sweep.url}"
    )
    try:
        results = _run_children(sweep, plan, echo)
    except BaseException as err:  # the parent must not stay RUNNING
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        _end_parent(sweep.parent_run_id, status)
        echo(f"sweep {sweep.name} stopped ({type(err).__name__}): parent run {status}")
        raise
    return finish_sweep(sweep, results)


def _run_children(sweep: Sweep, plan: WorkerPlan, echo) -> list[ChildResult]:
    total = len(sweep.configs)
    if plan.parallel == 1:  # in this process, its output straight to the terminal
        results = []
        for index in range(total):
            results.append(run_child(sweep, index))
            echo(describe_result(results[-1], len(results), total))
        return results
    return _run_in_processes(sweep, plan, echo)


def _run_in_processes(sweep: Sweep, plan: WorkerPlan, echo) -> list[ChildResult]:
    results = []
    jobs = [(_child_in_worker, (sweep, index)) for index in range(len(sweep.configs))]
    for result in in_worker_processes(plan, jobs):
        results.append(result)
        echo(describe_result(result, len(results), len(sweep.configs)))
    return results


def in_worker_processes(plan: WorkerPlan, jobs: Sequence[tuple[Callable, tuple]]) -> Iterator:
    """Each job `(function, args)` in a spawned worker process, at most plan.parallel at a
    time, handed out one by one (a pool queues what it is given, and after Ctrl-C a queued
    job would still start); their results as they complete."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # no forked torch or MLflow state
    slots = context.Queue()
    for slot in range(plan.parallel):  # each worker takes one slot: its GPU, if any
        slots.put(slot if plan.gpus else None)
    waiting, running = list(jobs), set()
    with ProcessPoolExecutor(
        plan.parallel, mp_context=context, initializer=_init_worker, initargs=(slots, plan.threads)
    ) as pool:
        try:
            while waiting or running:
                while waiting and len(running) < plan.parallel:
                    function, args = waiting.pop(0)
                    running.add(pool.submit(function, *args))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BaseException:  # Ctrl-C reached the workers too: they save and stop
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _init_worker(slots, threads: int) -> None:
    """Runs first in every worker process: pin it to its GPU (before torch sees any) and
    give it its share of the CPU cores."""
    slot = slots.get()
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)
    import torch

    torch.set_num_threads(threads)


def _child_in_worker(sweep: Sweep, index: int) -> ChildResult:
    """run_child with its output in <child folder>/train.log (attached to the child run),
    so that parallel runs do not interleave on the terminal."""
    out_dir = sweep.child_dir(index, sweep.configs[index])
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "train.log"
    with (
        open(log_path, "w", encoding="utf-8", buffering=1) as out,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(out),
    ):
        result = run_child(sweep, index)
        if result.status == "FAILED":  # the log says why, beside any traceback above
            print(f"failed: {result.reason}")
    if result.run_id:
        _attach_log(result.run_id, log_path)
    return result


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def describe_result(result: ChildResult, done: int, total: int) -> str:
    """`[2/5] paulgraham-gru2x256: val 1.7012 nats/char (2.454 bpc), 3,145,728 chars in 60 s`"""
    head = f"[{done}/{total}] {result.run_name}"
    if result.status != "FINISHED":
        log_path = Path(result.out_dir) / "train.log"
        return f"{head}: FAILED: {result.reason}" + (
            f" (log: {log_path})" if log_path.is_file() else ""
        )
    return (
        f"{head}: val {result.best_val_loss:.4f} nats/char ({bits(result.best_val_loss):.3f} bpc), "
        f"{result.chars:,} chars in {result.seconds:.0f} s"
    )

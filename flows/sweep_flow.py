"""The `sweep` flow: `charflow sweep` as a Prefect flow (deployments `sweep/<corpus>`).

It calls the library's steps (training/sweep.py, training/search*.py): start the sweep (or
the Optuna search), fan the configurations out, then log the comparison on the parent
MLflow run. Two ways to fan out, by `fan_out`:

    tasks  each configuration (or trial) is a task run on the flow's task runner, trained
           in a process of its own on the machine that runs the flow, `parallel` at a time
           on their share of the cores (the plan of `charflow sweep --parallel`).
    pool   each configuration (or trial) is a flow run of the deployment
           `sweep-child/<corpus>` on the work pool, started with `run_deployment` and shown
           as a subflow run of this one: every worker polling the pool takes children, on
           this machine or others. A worker runs as many as its `--limit` allows.

Tasks cannot leave the process that runs their flow (process workers run flow runs, not
task runs), so "beyond one machine" is the pool, Prefect's own unit of placing work. The
children then need what a machine of their own needs: the corpus at the same path (or at
data/<corpus> of their CHARFLOW_HOME), the tracking store as a server (MLFLOW_TRACKING_URI
http://..., which the sweep carries to them) and, for a search, the study in PostgreSQL
(`study_storage`, else $CHARFLOW_OPTUNA_STORAGE): docs/compare.md, "Sweeps on a work pool".
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import queue
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from training.config import TrainConfig
from training.errors import TrainingError
from training.sweep import ChildResult, Sweep

FAN_OUTS = ("tasks", "pool")
CHILD_FLOW = "sweep-child"  # the children's flow; its deployments: sweep-child/<corpus>
POLL_SECONDS = 2.0  # how often the parent looks at a child flow run on the pool


# --- a sweep as flow-run parameters -------------------------------------------------------


def sweep_to_dict(sweep: Sweep) -> dict[str, Any]:
    """The sweep as JSON values (flow-run parameters)."""
    return dataclasses.asdict(sweep)


def sweep_from_dict(doc: dict[str, Any]) -> Sweep:
    fields = {**doc, "configs": [TrainConfig(**c) for c in doc["configs"]]}
    return Sweep(**fields)


def _plain(result: ChildResult | None) -> dict[str, Any] | None:
    """A result as JSON values (nan as None)."""
    if result is None:
        return None
    return {
        k: None if isinstance(v, float) and math.isnan(v) else v
        for k, v in dataclasses.asdict(result).items()
    }


# --- tasks: children in processes of this machine -----------------------------------------


def _in_process(fn: Callable, args: tuple, threads: int, gpu: int | None):
    """fn(*args) in a spawned process on `threads` torch threads (pinned to `gpu`)."""
    from training.sweep_workers import _init_worker

    context = multiprocessing.get_context("spawn")  # no forked torch or MLflow state
    slots = context.Queue()
    slots.put(gpu)
    with ProcessPoolExecutor(
        1, mp_context=context, initializer=_init_worker, initargs=(slots, threads)
    ) as pool:
        return pool.submit(fn, *args).result()


@task(name="train-configuration", task_run_name="{label}", cache_policy=NO_CACHE)
def train_configuration(
    sweep: Sweep, index: int, label: str, threads: int, gpu: int | None = None
) -> ChildResult:
    """One configuration as a child run, in a process of its own (its output in the
    child's train.log, attached to the run)."""
    from training.sweep_workers import _child_in_worker

    return _in_process(_child_in_worker, (sweep, index), threads, gpu)


@task(name="search-trial", task_run_name="trial {ordinal} of {sweep.name}", cache_policy=NO_CACHE)
def search_trial(
    sweep: Sweep, search: dict, ordinal: int, threads: int, gpu: int | None = None
) -> ChildResult | None:
    """One Optuna trial (asked of the study, pruned or not, told to it), in a process of
    its own."""
    from training.search import trial_in_worker
    from training.search_study import Search

    return _in_process(trial_in_worker, (sweep, Search.from_dict(search), ordinal), threads, gpu)


# --- pool: children as flow runs of sweep-child/<corpus> ----------------------------------


@task(name="child-on-pool", task_run_name="{label} on the work pool", cache_policy=NO_CACHE)
def child_on_pool(deployment: str, parameters: dict[str, Any], label: str, key: str) -> dict:
    """Start the child flow run on the work pool and wait for it; its final state."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        deployment,
        parameters=parameters,
        flow_run_name=label,
        timeout=None,  # as long as the child trains
        poll_interval=POLL_SECONDS,
        idempotency_key=key,  # a retried task does not start the child twice
    )
    state = run.state
    return {
        "flow_run_id": str(run.id),
        "state": state.type.value if state else "UNKNOWN",
        "message": (state.message or "") if state else "",
    }


@flow(name=CHILD_FLOW, flow_run_name="{label}", validate_parameters=True)
def sweep_child_flow(
    sweep: dict[str, Any],
    index: int | None = None,
    search: dict[str, Any] | None = None,
    ordinal: int = 0,
    label: str = "",
    torch_threads: int | None = None,
    data_dir: str | None = None,
) -> dict[str, Any] | None:
    """One configuration of a sweep (index) or one trial of its search (search), on
    whichever worker took this flow run; logged into the sweep's tracking store.

    sweep: the started sweep (flows/sweep_flow.py: sweep_to_dict).
    torch_threads: torch threads of this training (default: torch's own choice).
    data_dir: where this machine keeps corpora, when the sweep's source path is not here.
    """
    logger = get_run_logger()
    local = _here(sweep_from_dict(sweep), data_dir)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    if search is not None:
        from training.search_study import Search
        from training.search_trial import describe_trial, run_trial

        result = run_trial(local, Search.from_dict(search), seed_offset=ordinal)
        logger.info("%s", describe_trial(result, 1, 1))
    else:
        from training.sweep import run_child
        from training.sweep_workers import describe_result

        if index is None:
            raise ValueError("give index (a configuration) or search (a trial)")
        result = run_child(local, index)
        logger.info("%s", describe_result(result, 1, 1))
    return _plain(result)


def _here(sweep: Sweep, data_dir: str | None) -> Sweep:
    """The sweep as this machine sees it: children log to the sweep's tracking store,
    keep checkpoints under this machine's CHARFLOW_HOME, read the corpus where it is here."""
    from charflow.paths import checkpoints_dir
    from training.mlflow_setup import sqlite_path
    from training.sweep_grid import _slug

    db = sqlite_path(sweep.tracking_uri)
    if db is not None and not db.exists():
        raise TrainingError(
            f"the sweep's tracking store {sweep.tracking_uri} is a file of another machine; "
            "children on several machines need a tracking server (MLFLOW_TRACKING_URI=http://...)"
        )
    os.environ["MLFLOW_TRACKING_URI"] = sweep.tracking_uri
    source = sweep.source
    if not Path(source).exists():
        from charflow.paths import data_dir as default_data

        source = str(Path(data_dir or default_data()) / sweep.corpus)
        if not Path(source).exists():
            raise TrainingError(
                f"corpus {sweep.corpus} is neither at {sweep.source} nor at {source} on this "
                f"machine; run `charflow ingest {sweep.corpus}` here first"
            )
    out_root = str(checkpoints_dir() / sweep.corpus / "sweeps" / _slug(sweep.name))
    return dataclasses.replace(sweep, source=source, out_root=out_root)


# --- the flow -------------------------------------------------------------------------------


@flow(
    name="sweep",
    flow_run_name="sweep-{corpus}",
    task_runner=ThreadPoolTaskRunner(max_workers=32),  # threads wait on processes/flow runs
    validate_parameters=True,
)
def sweep_flow(
    corpus: str,
    grid: str = "architectures",
    search: str | None = None,
    trials: int = 20,
    max_seconds: float | None = None,
    max_chars: int | None = None,
    hidden: int | None = None,
    preset: str = "cpu-small",
    settings: dict[str, Any] | None = None,
    parallel: int | None = None,
    fan_out: str = "tasks",
    child_deployment: str | None = None,
    torch_threads: int | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    source: str | None = None,
    data_dir: str | None = None,
    study_storage: str | None = None,
) -> dict[str, Any]:
    """Train a grid of configurations (or an Optuna search) on a corpus as child runs of
    one MLflow run, then log their comparison on it; as `charflow sweep`.

    corpus: a corpus under data/ (or give source).
    grid: architectures, or a YAML file: setting -> values, or a list of configurations;
        with search, the YAML file of ranges.
    search: optuna, to search the ranges of `grid` (TPE sampler, median pruner).
    trials: with search: trials in the study; the same run_name continues an interrupted one.
    max_seconds, max_chars, hidden, preset, settings: every run's settings (settings as
        `--set`, e.g. {"max_steps": 500}).
    parallel: children at a time (tasks: default what this machine holds; pool: default
        all of them, the workers' limits decide).
    fan_out: tasks (processes of this machine) or pool (flow runs of child_deployment,
        default sweep-child/<corpus>, on the work pool's workers).
    torch_threads: pool: torch threads of each child (default: torch's own choice).
    run_name, tags: the sweep's name (a search's study name) and MLflow tags on every run.
    source: corpus folder or text file (default data/<corpus>); data_dir: where corpora live.
    study_storage: with search: the study's database URL (default $CHARFLOW_OPTUNA_STORAGE,
        else optuna.db beside MLflow's store).
    """
    from flows.cli_sweep import resolve_corpus, search_space, sweep_configs
    from training.comparison_report import text_table
    from training.sweep_grid import _as_text
    from training.sweep_workers import plan_workers

    logger = get_run_logger()
    if fan_out not in FAN_OUTS:
        raise ValueError(f"fan_out {fan_out!r}: choose {' or '.join(FAN_OUTS)}")
    if parallel is not None and parallel < 1:
        raise ValueError(f"parallel must be at least 1, not {parallel}")
    if source is None and data_dir is not None:
        source = str(Path(data_dir) / corpus)
    name, path = resolve_corpus(corpus, Path(source) if source else None)
    budget = dict(max_seconds=max_seconds, max_chars=max_chars, hidden_size=hidden)
    assignments = [f"{k}={_as_text(v)}" for k, v in (settings or {}).items()]
    deployment = child_deployment or f"{CHILD_FLOW}/{name}"
    on_pool = fan_out == "pool"
    if search is not None:
        base, space = search_space(name, search, grid, preset, budget, assignments)
        configs = [base]
    else:
        configs = sweep_configs(name, grid, preset, budget, assignments)
    # Tasks share this machine: never more than it holds. The pool's workers decide there.
    plan = plan_workers(configs * (trials if search else 1), None if on_pool else parallel)

    if search is not None:
        from training.search_start import begin_search
        from training.search_study import open_study, shown_url, trials_left

        sweep, found = begin_search(
            name, path, base, space, trials=trials, name=run_name, tags=tags,
            grid=f"optuna:{Path(grid).name}", storage=study_storage,
        )  # fmt: skip
        done, running, left = trials_left(found, open_study(found))
        offset = done + running
        jobs = list(range(left))
        what = (
            f"search {sweep.name}: {trials} trials ({done} done, {left} to run); "
            f"{space.describe()}; study in {shown_url(found.storage)}"
        )
    else:
        from training.sweep import start_sweep

        sweep = start_sweep(name, path, configs, name=run_name, tags=tags, grid=grid)
        jobs = list(range(len(configs)))
        what = f"sweep {sweep.name}: {len(configs)} configurations"
    at_once = (parallel or max(1, len(jobs))) if on_pool else plan.parallel
    where = f"flow runs of {deployment}" if on_pool else f"task runs, {plan.describe()}"
    logger.info("%s, %d at a time as %s; parent run %s", what, at_once, where, sweep.url)

    def submit(job: int, slot: int):
        gpu = slot if plan.gpus and not on_pool else None
        if on_pool:
            parameters: dict[str, Any] = {
                "sweep": sweep_to_dict(sweep),
                "torch_threads": torch_threads,
                "data_dir": data_dir,
            }
            if search is not None:
                parameters |= {"search": found.to_dict(), "ordinal": offset + job}
                label = f"{sweep.name}-trial-{offset + job}"
            else:
                parameters |= {"index": job}
                label = sweep.child_run_name(sweep.configs[job])
            parameters["label"] = label
            key = f"{sweep.parent_run_id}/{job if search is None else offset + job}"
            return child_on_pool.submit(deployment, parameters, label, key)
        if search is not None:
            return search_trial.submit(sweep, found.to_dict(), offset + job, plan.threads, gpu)
        label = sweep.child_run_name(sweep.configs[job])
        return train_configuration.submit(sweep, job, label, plan.threads, gpu)

    outcomes: dict[int, Any] = {}
    try:
        for job, future in _at_most(jobs, at_once, submit):
            outcomes[job] = future
            logger.info("%s", _describe(future, job, len(outcomes), len(jobs), search))
        if search is not None:
            from training.search import finish_search, summary

            comparison = finish_search(sweep, found)
            logger.info("%s", summary(found, open_study(found)))
        else:
            from training.sweep import finish_sweep

            results = [_grid_result(sweep, job, outcomes[job], on_pool) for job in jobs]
            comparison = finish_sweep(sweep, results)
    except BaseException as err:  # the parent run must not stay RUNNING
        from training.sweep_records import _end_parent

        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        _end_parent(sweep.parent_run_id, status)
        raise
    table = text_table(comparison)
    logger.info("comparison:\n%s\ncompare in MLflow: %s", table, comparison.url)
    create_markdown_artifact(
        key=f"sweep-{_artifact_key(name)}",
        markdown=f"Sweep [{sweep.name}]({sweep.url}) ([compare]({comparison.url}))\n\n"
        f"```text\n{table}\n```\n",
        description=what,
    )
    return {
        "sweep": sweep.name,
        "parent_run_id": sweep.parent_run_id,
        "url": sweep.url,
        "compare_url": comparison.url,
        "rows": [
            {k: row.get(k) for k in ("run", "status", "best_val_loss", "run_id")}
            for row in comparison.rows
        ],
    }


def _at_most(jobs: list[int], at_once: int, submit: Callable[[int, int], Any]):
    """Submit `jobs` with at most `at_once` unfinished, each with a free slot number
    (0..at_once-1: its GPU, if any); yields (job, future) as they finish."""
    done: queue.Queue = queue.Queue()
    waiting, free, running = list(jobs), list(range(at_once)), 0
    while waiting or running:
        while waiting and free:
            job, slot = waiting.pop(0), free.pop(0)
            future = submit(job, slot)
            future.add_done_callback(lambda _, j=job, s=slot, f=future: done.put((j, s, f)))
            running += 1
        job, slot, future = done.get()
        future.wait()
        free.append(slot)
        running -= 1
        yield job, future


def _describe(future, job: int, finished: int, total: int, search: str | None) -> str:
    from training.search_trial import describe_trial
    from training.sweep_workers import describe_result

    if future.state.is_failed() or future.state.is_crashed():
        return f"[{finished}/{total}] child {job}: {future.state.name}: {future.state.message}"
    value = future.result()
    if isinstance(value, dict):  # a flow run on the pool
        return f"[{finished}/{total}] child flow run {value['flow_run_id']}: {value['state']}"
    if search is not None:
        return describe_trial(value, finished, total)
    return describe_result(value, finished, total)


def _grid_result(sweep: Sweep, index: int, future, on_pool: bool) -> ChildResult:
    """The child's result: the task's own, or (pool) read back from MLflow, since the
    flow run's return value stays on its worker. A child that never made a run (its task
    or flow run crashed first) is recorded as a FAILED run with the reason."""
    from training.sweep import _child_tags
    from training.sweep_records import _record_failure

    cfg = sweep.configs[index]
    name = sweep.child_run_name(cfg)
    state = future.state
    if not on_pool and state.is_completed():
        return future.result()
    reason = f"task {state.name}: {state.message}"
    if on_pool:
        found = _child_run(sweep, index)
        if found is not None:
            return ChildResult(index, name, found.info.run_id, found.info.status)
        if state.is_completed():
            outcome = future.result()
            reason = f"flow run {outcome['flow_run_id']} {outcome['state']}: {outcome['message']}"
    tags = _child_tags(sweep, index, sweep.child_dir(index, cfg), None)
    run_id = _record_failure(sweep.experiment_id, sweep.corpus, cfg, name, tags, reason[:1000])
    return ChildResult(index, name, run_id, "FAILED", reason[:1000])


def _child_run(sweep: Sweep, index: int):
    from training.mlflow_names import CHILD_TAG
    from training.mlflow_setup import mlflow_client

    child = f"{sweep.parent_run_id}/{sweep.child_dir(index, sweep.configs[index]).name}"
    found = mlflow_client().search_runs(
        [sweep.experiment_id], f"tags.`{CHILD_TAG}` = '{child}'", max_results=1
    )
    return found[0] if found else None


def _artifact_key(name: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    import re

    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "corpus"

"""Many configurations of one corpus as one experiment: a grid of settings, then one parent
MLflow run with a nested child run per configuration, compared side by side.

The steps are public so that an orchestrator can spread them out (the Prefect flow runs
each `run_child` as a task run); `run_sweep` does all three with local processes:

    start_sweep   check every configuration, create the parent run
    run_child     one configuration -> one nested child run; a failure is recorded, not raised
    finish_sweep  the comparison (table, plots, report) onto the parent run, which then ends
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charflow.paths import checkpoints_dir
from training.comparison import ARCH_KEYS
from training.config import TrainConfig
from training.errors import TrainingError
from training.mlflow_setup import (
    CHILD_TAG,
    INDEX_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SWEEP_TAG,
    architecture,
    ui_run_url,
)
from training.units import bits

log = logging.getLogger(__name__)

# The study charflow exists for: a vanilla RNN against a deeper one, a GRU and two LSTMs,
# all with the hidden size, budget and seed that the command line gives them.
ARCHITECTURES: list[dict[str, Any]] = [
    {"model": "rnn", "num_layers": 1},
    {"model": "rnn", "num_layers": 3},
    {"model": "gru", "num_layers": 2},
    {"model": "lstm", "num_layers": 1},
    {"model": "lstm", "num_layers": 2},
]
BUILTIN_GRIDS = {"architectures": ARCHITECTURES}
# With a budget in seconds or characters the step budget steps aside, so the budget asked
# for is the one that binds (a preset's max_steps would stop fast models first).
UNBOUNDED_STEPS = 10**9


# --- the grid -------------------------------------------------------------------------


def load_grid(spec: str | Path) -> list[dict[str, Any]]:
    """A built-in grid by name, or a YAML file holding either {setting: [values]} (every
    combination) or [{setting: value, ...}, ...] (these configurations)."""
    if str(spec) in BUILTIN_GRIDS:
        return [dict(entry) for entry in BUILTIN_GRIDS[str(spec)]]
    path = Path(spec)
    if not path.is_file():
        names = ", ".join(BUILTIN_GRIDS)
        raise TrainingError(f"grid {str(spec)!r} is neither a built-in grid ({names}) nor a file")
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TrainingError(f"{path}: not valid YAML{where}") from None
    return expand_grid(doc, str(path))


def expand_grid(doc: Any, where: str = "grid") -> list[dict[str, Any]]:
    """{setting: values} -> the cartesian product (a single value is a list of one);
    [{...}, ...] -> those configurations, in order."""
    if isinstance(doc, dict) and doc:
        axes = {str(k): v if isinstance(v, list) else [v] for k, v in doc.items()}
        empty = [key for key, values in axes.items() if not values]
        if empty:
            raise TrainingError(f"{where}: setting {empty[0]} has an empty list of values")
        return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    if isinstance(doc, list) and doc and all(isinstance(entry, dict) for entry in doc):
        return [{str(k): v for k, v in entry.items()} for entry in doc]
    raise TrainingError(
        f"{where}: a grid is a mapping of settings to lists of values, "
        "or a non-empty list of configurations (mappings)"
    )


def build_configs(
    base: TrainConfig, grid: Sequence[dict[str, Any]], fixed: dict[str, Any] | None = None
) -> list[TrainConfig]:
    """Every grid entry over `base`, typed by the field's annotation and validated; the
    first bad one fails with one line naming its key or value. `fixed`: the settings the
    user gave for every run (a grid may not also vary them)."""
    fixed = fixed or {}
    configs = []
    for number, entry in enumerate(grid, 1):
        try:
            configs.append(_entry_config(base, entry, fixed))
        except TrainingError as err:
            shown = ", ".join(f"{k}={v}" for k, v in entry.items())
            raise TrainingError(f"configuration {number} ({shown}): {err}") from None
    _refuse_duplicates(configs)
    return configs


def _entry_config(base: TrainConfig, entry: dict[str, Any], fixed: dict[str, Any]) -> TrainConfig:
    typed = TrainConfig.parse_overrides({key: _as_text(value) for key, value in entry.items()})
    both = sorted(set(typed) & set(fixed))
    if both:
        raise TrainingError(f"{both[0]} is set both by the grid and for every run; give it once")
    cfg = base.replace(**fixed, **typed)
    budgeted = cfg.max_seconds is not None or cfg.max_chars is not None
    if budgeted and "max_steps" not in typed and "max_steps" not in fixed:
        cfg = cfg.replace(max_steps=UNBOUNDED_STEPS)
    return cfg.validate()


def _as_text(value: Any) -> str:
    """A YAML value as the text `--set` would take (YAML reads `3e-3` as a string anyway)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _refuse_duplicates(configs: list[TrainConfig]) -> None:
    seen: dict[tuple, int] = {}
    for number, cfg in enumerate(configs, 1):
        key = tuple(cfg.to_params().items())
        if key in seen:
            raise TrainingError(f"configurations {seen[key]} and {number} are the same")
        seen[key] = number


def varied_settings(configs: Sequence[TrainConfig]) -> list[str]:
    """The settings whose values differ between configurations, in field order."""
    params = [cfg.to_params() for cfg in configs]
    return [key for key in params[0] if len({repr(p[key]) for p in params}) > 1]


def common_settings(configs: Sequence[TrainConfig]) -> dict[str, Any]:
    varied = set(varied_settings(configs))
    return {k: v for k, v in configs[0].to_params().items() if k not in varied}


def child_label(cfg: TrainConfig, varied: Sequence[str]) -> str:
    """`lstm2x256` plus each other varied setting: `lstm2x256-lr=0.003`."""
    params = cfg.to_params()
    extra = [f"{key}={_short(params[key])}" for key in varied if key not in ARCH_KEYS]
    return "-".join([architecture(cfg), *extra])


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    """A name that is safe as one folder name."""
    return re.sub(r"[^\w.=+-]+", "_", text).strip("._") or "run"


# --- running it -----------------------------------------------------------------------


@dataclass
class Sweep:
    """A started sweep: what `run_child` needs, as plain values (it travels to worker
    processes and task runs)."""

    name: str
    corpus: str
    source: str
    configs: list[TrainConfig]
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    varied: list[str]  # settings that differ between the configurations
    out_root: str  # checkpoints/<corpus>/sweeps/<name>/
    tags: dict[str, str] = field(default_factory=dict)  # the user's, on every run

    def label(self, cfg: TrainConfig) -> str:
        """What sets `cfg` apart: the varied settings, and any other in which it differs
        from the grid (a configuration decided on the fly, e.g. a search's trial)."""
        common, params = self.configs[0].to_params(), cfg.to_params()
        own = [k for k in params if k not in self.varied and params[k] != common[k]]
        return child_label(cfg, [*self.varied, *own])

    def child_dir(self, index: int, cfg: TrainConfig) -> Path:
        return Path(self.out_root) / f"{index:02d}-{_slug(self.label(cfg))}"

    def child_run_name(self, cfg: TrainConfig) -> str:
        return f"{self.corpus}-{self.label(cfg)}"

    @property
    def url(self) -> str:
        return ui_run_url(self.experiment_id, self.parent_run_id, self.tracking_uri)


@dataclass
class ChildResult:
    """One configuration's outcome; `status` is the child run's: FINISHED or FAILED."""

    index: int
    run_name: str
    run_id: str | None
    status: str
    reason: str = ""  # why it failed
    best_val_loss: float = math.nan
    test_loss: float = math.nan
    seconds: float = 0.0  # training steps only, evaluation excluded
    chars: int = 0
    out_dir: str = ""


def start_sweep(
    corpus: str,
    source: str | Path,
    configs: Sequence[TrainConfig],
    *,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    grid: str = "custom",
) -> Sweep:
    """Check every configuration, then create the parent run (tag charflow.sweep, the
    settings common to all children as params). Nothing is written before the checks pass."""
    from training.mlflow_setup import experiment_id, mlflow_client

    configs = _checked(configs, source)
    name = name or f"{corpus}-{_slug(Path(grid).stem)}-{time.strftime('%m%d-%H%M%S')}"
    out_root = checkpoints_dir() / corpus / "sweeps" / _slug(name)
    if out_root.exists():
        raise TrainingError(f"sweep {name!r} exists already ({out_root}); choose another name")
    client = mlflow_client()
    exp_id = experiment_id(client, corpus, client.tracking_uri)
    parent = client.create_run(exp_id, run_name=name, tags=_parent_tags(corpus, name, grid, tags))
    sweep = Sweep(
        name=name,
        corpus=corpus,
        source=str(Path(source).resolve()),  # workers may run elsewhere on this machine
        configs=list(configs),
        parent_run_id=parent.info.run_id,
        experiment_id=exp_id,
        tracking_uri=client.tracking_uri,
        varied=varied_settings(configs),
        out_root=str(out_root),
        tags=dict(tags or {}),
    )
    _log_parent_params(client, sweep, grid)
    return sweep


def open_sweep(
    corpus: str,
    source: str | Path,
    configs: Sequence[TrainConfig],
    *,
    name: str,
    tags: dict[str, str] | None = None,
    grid: str = "custom",
) -> Sweep | None:
    """The sweep `name` that start_sweep began, reopened to take more children (an
    interrupted search goes on): its parent run RUNNING again. None when there is no such
    sweep; refused when it was started with another grid or other common settings."""
    from training.mlflow_setup import experiment_id, mlflow_client

    configs = _checked(configs, source)
    if "'" in name:
        raise TrainingError(f"a sweep name has no quotes: {name!r}")
    client = mlflow_client()
    exp_id = experiment_id(client, corpus, client.tracking_uri)
    found = client.search_runs(
        [exp_id],
        f"tags.`{SWEEP_TAG}` = '{name}' and tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        return None
    parent = found[0]
    expected = {**common_settings(configs), "sweep_grid": grid, "sweep_size": len(configs)}
    for key, value in expected.items():
        logged = parent.data.params.get(key)
        if logged is not None and logged != str(value):
            raise TrainingError(
                f"sweep {name!r} was started with {key}={logged}, not {value}; "
                "give the same settings to continue it, or another name"
            )
    client.update_run(parent.info.run_id, status="RUNNING")
    return Sweep(
        name=name,
        corpus=corpus,
        source=str(Path(source).resolve()),
        configs=list(configs),
        parent_run_id=parent.info.run_id,
        experiment_id=exp_id,
        tracking_uri=client.tracking_uri,
        varied=varied_settings(configs),
        out_root=str(checkpoints_dir() / corpus / "sweeps" / _slug(name)),
        tags=dict(tags or {}),
    )


def _checked(configs: Sequence[TrainConfig], source: str | Path) -> list[TrainConfig]:
    if not configs:
        raise TrainingError("a sweep needs at least one configuration")
    if not Path(source).exists():
        raise TrainingError(f"no such file or corpus folder: {source}")
    for number, cfg in enumerate(configs, 1):
        try:
            cfg.validate()
        except TrainingError as err:
            raise TrainingError(f"configuration {number}: {err}") from None
    _refuse_duplicates(list(configs))
    return list(configs)


def _parent_tags(corpus: str, name: str, grid: str, tags: dict | None) -> dict[str, str]:
    return {
        **(tags or {}),
        "corpus": corpus,
        SWEEP_TAG: name,
        ROLE_TAG: "sweep",
        "charflow.grid": grid,
        "mlflow.source.name": "charflow",
    }


def _log_parent_params(client, sweep: Sweep, grid: str) -> None:
    from mlflow.entities import Param

    params = {
        **common_settings(sweep.configs),
        "corpus": sweep.corpus,
        "sweep_grid": grid,
        "sweep_size": len(sweep.configs),
        "sweep_varies": ",".join(sweep.varied) or "nothing",
    }
    client.log_batch(sweep.parent_run_id, params=[Param(k, str(v)) for k, v in params.items()])


def run_child(
    sweep: Sweep,
    index_or_config: int | TrainConfig,
    *,
    reporter=None,
    tags: dict[str, str] | None = None,
    progress: bool = False,
) -> ChildResult:
    """Train one configuration as a child run of the sweep. A configuration that fails is
    recorded as a FAILED child with its reason and returned, not raised; Ctrl-C is raised.

    A configuration that is not one of `sweep.configs` (a search's trial) gets the next
    index after them plus a random suffix in its folder name."""
    from training.train import train

    index, cfg = _pick(sweep, index_or_config)
    out_dir = sweep.child_dir(index, cfg)
    if index >= len(sweep.configs):  # decided on the fly: several may share an index
        out_dir = out_dir.with_name(f"{out_dir.name}-{os.urandom(3).hex()}")
    name = sweep.child_run_name(cfg)
    run_tags = _child_tags(sweep, index, out_dir, tags)
    try:
        result = train(
            cfg,
            sweep.source,
            corpus=sweep.corpus,
            out_dir=out_dir,
            run_name=name,
            run_tags=run_tags,
            progress=progress,
            reporter=reporter,
            register=False,  # experiments: the registry keeps models trained to be used
        )
    except Exception as err:  # one configuration's failure must not end the sweep
        if not isinstance(err, TrainingError):  # a bug: its traceback goes to the child's log
            traceback.print_exc()
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:1000]
        run_id = _record_failure(sweep, cfg, name, run_tags, reason)
        return ChildResult(index, name, run_id, "FAILED", reason, out_dir=str(out_dir))
    last = result.history[-1] if result.history else {}
    return ChildResult(
        index,
        name,
        result.run_id,
        "FINISHED",
        best_val_loss=result.best_val_loss,
        test_loss=result.test_loss,
        seconds=float(last.get("seconds", 0.0)),
        chars=int(last.get("chars", 0)),
        out_dir=str(out_dir),
    )


def _pick(sweep: Sweep, which: int | TrainConfig) -> tuple[int, TrainConfig]:
    if isinstance(which, TrainConfig):
        which.validate()
        if which in sweep.configs:
            return sweep.configs.index(which), which
        return len(sweep.configs), which
    if not 0 <= which < len(sweep.configs):
        raise TrainingError(f"sweep {sweep.name} has no configuration {which}")
    return which, sweep.configs[which]


def _child_tags(sweep: Sweep, index: int, out_dir: Path, tags: dict | None) -> dict[str, str]:
    return {
        **sweep.tags,
        **(tags or {}),
        PARENT_TAG: sweep.parent_run_id,
        SWEEP_TAG: sweep.name,
        ROLE_TAG: "child",
        CHILD_TAG: f"{sweep.parent_run_id}/{out_dir.name}",
        INDEX_TAG: str(index),
    }


def _record_failure(sweep: Sweep, cfg: TrainConfig, name: str, tags: dict, reason: str):
    """The failed child's run id: the run train() had begun (already FAILED, with its
    `failure` tag), else a FAILED run made now (train() fails some checks before it starts
    one). Best effort: the sweep goes on without it."""
    from mlflow.entities import Param

    from training.mlflow_setup import mlflow_client

    try:
        client = mlflow_client()
        found = client.search_runs(
            [sweep.experiment_id], f"tags.`{CHILD_TAG}` = '{tags[CHILD_TAG]}'", max_results=1
        )
        if found:
            return found[0].info.run_id
        run_tags = {**tags, "corpus": sweep.corpus, "failure": reason}
        run_tags["mlflow.source.name"] = "charflow"
        run_id = client.create_run(sweep.experiment_id, run_name=name, tags=run_tags).info.run_id
        logged = {**cfg.to_params(), "corpus": sweep.corpus, "device": _device_name(cfg)}
        params = [Param(k, str(v)) for k, v in logged.items()]
        client.log_batch(run_id, params=params)
        client.set_terminated(run_id, "FAILED")
        return run_id
    except Exception as err:
        log.warning("could not record the failed child %s in MLflow: %s", name, err)
        return None


def _device_name(cfg: TrainConfig) -> str:
    """The device as a finished run logs it ("cpu", not "auto"), so it does not look varied."""
    from training.device import resolve_device

    try:
        return str(resolve_device(cfg.device))
    except TrainingError:
        return cfg.device


def finish_sweep(sweep: Sweep, results: Sequence[ChildResult]):
    """Log the comparison of the children (table, plots, report) on the parent run and end
    it: FINISHED when at least one child finished, else FAILED. Returns the Comparison."""
    from training.comparison import compare_runs, log_comparison
    from training.mlflow_setup import mlflow_client

    client = mlflow_client()
    ordered = sorted(results, key=lambda r: r.index)
    runs = [client.get_run(r.run_id) for r in ordered if r.run_id]
    try:
        comparison = compare_runs(client, runs)
        log_comparison(client, sweep.parent_run_id, comparison, title=sweep.name)
    except BaseException:
        client.set_terminated(sweep.parent_run_id, "FAILED")
        raise
    finished = any(r.status == "FINISHED" for r in results)
    client.set_terminated(sweep.parent_run_id, "FINISHED" if finished else "FAILED")
    return comparison


# --- local processes ------------------------------------------------------------------


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
        _end_parent(sweep, status)
        echo(f"sweep {sweep.name} stopped ({type(err).__name__}): parent run {status}")
        raise
    return finish_sweep(sweep, results)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _end_parent(sweep: Sweep, status: str) -> None:
    from training.mlflow_setup import mlflow_client

    with contextlib.suppress(Exception):
        mlflow_client().set_terminated(sweep.parent_run_id, status)


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
    """At most plan.parallel children handed out at a time: a pool queues what it is given,
    and after Ctrl-C a queued child would still start."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # no forked torch or MLflow state
    slots = context.Queue()
    for slot in range(plan.parallel):  # each worker takes one slot: its GPU, if any
        slots.put(slot if plan.gpus else None)
    waiting, running, results = list(range(len(sweep.configs))), set(), []
    with ProcessPoolExecutor(
        plan.parallel, mp_context=context, initializer=_init_worker, initargs=(slots, plan.threads)
    ) as pool:
        try:
            while waiting or running:
                while waiting and len(running) < plan.parallel:
                    running.add(pool.submit(_child_in_worker, sweep, waiting.pop(0)))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    results.append(future.result())
                    echo(describe_result(results[-1], len(results), len(sweep.configs)))
        except BaseException:  # Ctrl-C reached the workers too: they save and stop
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


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


def _attach_log(run_id: str, log_path: Path) -> None:
    from training.mlflow_setup import mlflow_client

    try:
        mlflow_client().log_artifact(run_id, str(log_path))
    except Exception as err:
        log.warning("could not attach %s to run %s: %s", log_path, run_id, err)


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

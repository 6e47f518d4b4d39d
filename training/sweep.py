"""Many configurations of one corpus as one experiment: a grid of settings, then one parent
MLflow run with a nested child run per configuration, compared side by side.

The steps are public so that an orchestrator can spread them out (the Prefect flow runs
each `run_child` as a task run); `run_sweep` (training/sweep_workers.py) does all three
with local processes. The grid of configurations is training/sweep_grid.py.

    start_sweep   check every configuration, create the parent run
    run_child     one configuration -> one nested child run; a failure is recorded, not raised
    finish_sweep  the comparison (table, plots, report) onto the parent run, which then ends
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from charflow.paths import checkpoints_dir
from training.config import TrainConfig
from training.errors import TrainingError
from training.mlflow_names import (
    CHILD_TAG,
    INDEX_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SWEEP_TAG,
)
from training.mlflow_setup import ui_run_url
from training.sweep_grid import (
    _refuse_duplicates,
    _slug,
    child_label,
    common_settings,
    varied_settings,
)
from training.sweep_records import _record_failure

log = logging.getLogger(__name__)


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
        run_id = _record_failure(sweep.experiment_id, sweep.corpus, cfg, name, run_tags, reason)
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


def finish_sweep(sweep: Sweep, results: Sequence[ChildResult]):
    """Log the comparison of the children (table, plots, report) on the parent run and end
    it: FINISHED when at least one child finished, else FAILED. Returns the Comparison."""
    from training.comparison import compare_runs
    from training.comparison_report import log_comparison
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

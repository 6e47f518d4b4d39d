"""Hyperparameter search with Optuna: ranges from a YAML file, the TPE sampler, and the
median pruner fed the validation loss at every evaluation. Each trial is one child run of
one sweep (training/sweep.py), so a search reads in MLflow like any other sweep.

A search space is a YAML mapping of TrainConfig settings to ranges or choices:

    lr: {low: 1e-3, high: 1e-2, log: true}     # a float setting: a float range
    dropout: {low: 0.0, high: 0.3}
    num_layers: {low: 1, high: 3}               # an int setting: an int range (step: 1)
    model: [gru, lstm]                          # any setting: these choices
    optuna:                                     # optional, these are the defaults
      sampler: {n_startup_trials: 4}            # TPE: random trials before it models
      pruner: {n_startup_trials: 2, n_warmup_steps: 4}

The pruner compares trials at the same point of their budget: a run bounded by time or
characters evaluates at each twentieth of it (training/loop.py), so the "step" a trial
reports is the twentieth it has reached (1..20), not its training step, which differs
between fast and slow configurations. n_warmup_steps counts twentieths too.

The study lives in a database (Optuna's RDBStorage): by default sqlite optuna.db beside
MLflow's mlflow.db; with PostgreSQL, the tracking database itself (schema `optuna`), so
trials on several machines share one study. A search started again with the same name
continues it: the parent run is reopened, trials a dead process left RUNNING are failed
(and run again), and only the missing trials run.

    check_space / load_space   the ranges, checked before anything starts
    begin_search               the study and the parent run, new or reopened
    run_trial                  one trial: a child run, pruned or not, told to the study
    finish_search              the comparison of every trial onto the parent run
    run_search                 all of it on this machine (trials in local processes)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.errors import TrainingError
from training.loop import EVAL_POINTS
from training.reporting import Reporter
from training.sweep import ChildResult, Sweep, finish_sweep, open_sweep, run_child, start_sweep
from training.sweep_grid import _slug
from training.sweep_records import _attach_log, _end_parent
from training.sweep_workers import _init_worker, _to_stderr, describe_result, plan_workers
from training.units import bits

log = logging.getLogger(__name__)

STORAGE_ENV = "CHARFLOW_OPTUNA_STORAGE"  # the study's database URL (else beside MLflow's)
SCHEMA = "optuna"  # in a PostgreSQL tracking database: beside MLflow's tables, not among them
TRIAL_TAG = "charflow.trial"  # the trial's number, on its child run
STUDY_TAG = "charflow.study"  # the study's name, on the parent and every child
PRUNED_TAG = "charflow.pruned"  # why the trial was pruned (the child run ends KILLED)
INTERRUPTED_TAG = "charflow.interrupted"  # a trial whose process died; the search re-ran it
# A trial whose process stops sending heartbeats for GRACE_SECONDS (a machine lost) is
# failed by the next trial that starts anywhere, and run again.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
OPTUNA_DEFAULTS = {
    "sampler": {"n_startup_trials": 4, "seed": None},  # seed None: the runs' own seed
    "pruner": {"n_startup_trials": 2, "n_warmup_steps": 4},
}
RANGE_KEYS = ("low", "high", "log", "step")


# --- the search space ---------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """One searched setting: low..high (int or float, by the setting's type), or choices."""

    key: str
    kind: str  # "int" | "float" | "choice"
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key} in {{{', '.join(map(str, self.choices))}}}"
        extra = " log" if self.log else f" step {self.step:g}" if self.step else ""
        return f"{self.key} in [{self.low:g}, {self.high:g}]{extra}"

    def doc(self) -> Any:
        """As it would be written in the YAML file (normalised: typed, defaults filled)."""
        if self.kind == "choice":
            return list(self.choices)
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class SearchSpace:
    ranges: tuple[Range, ...]
    optuna: dict = field(default_factory=lambda: json.loads(json.dumps(OPTUNA_DEFAULTS)))

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.ranges]

    def suggest(self, trial) -> dict[str, Any]:
        return {r.key: r.suggest(trial) for r in self.ranges}

    def describe(self) -> str:
        return ", ".join(r.describe() for r in self.ranges)

    def doc(self) -> dict[str, Any]:
        """The whole space as plain JSON values: it travels to flow runs and is kept with
        the study, so a search continued with another space is refused."""
        return {**{r.key: r.doc() for r in self.ranges}, "optuna": self.optuna}


def load_space(
    spec: str | Path, base: TrainConfig, fixed: typing.Iterable[str] = ()
) -> SearchSpace:
    """The search space of a YAML file, checked against the runs' settings (`base`) and
    the settings given for every run (`fixed`): one line naming the bad key or value."""
    import yaml

    path = Path(spec)
    if not path.is_file():
        raise TrainingError(f"search space {str(spec)!r} is not a file (a YAML file of ranges)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TrainingError(f"{path}: not valid YAML{where}") from None
    try:
        return check_space(parse_space(doc), base, fixed)
    except TrainingError as err:
        raise TrainingError(f"{path}: {err}") from None


def parse_space(doc: Any) -> SearchSpace:
    """{setting: {low, high[, log, step]} | [choices], optuna: {...}} -> SearchSpace."""
    if not isinstance(doc, dict) or not [k for k in doc if k != "optuna"]:
        raise TrainingError(
            "a search space maps settings to ranges ({low: ..., high: ...}) or to lists of choices"
        )
    ranges = tuple(_parse_range(str(key), value) for key, value in doc.items() if key != "optuna")
    return SearchSpace(ranges, _parse_optuna(doc.get("optuna")))


def _parse_range(key: str, value: Any) -> Range:
    hints = typing.get_type_hints(TrainConfig)
    if key not in hints:
        TrainConfig.parse_overrides({key: ""})  # raises: unknown setting, with a suggestion
    if isinstance(value, list):
        return _parse_choices(key, value)
    if not isinstance(value, dict):
        raise TrainingError(
            f"{key}: a search range is {{low: ..., high: ...}} or a list of choices, "
            f"not {value!r} (a setting for every run goes in --set)"
        )
    unknown = sorted(set(map(str, value)) - set(RANGE_KEYS))
    if unknown:
        raise TrainingError(
            f"{key}: unknown range key {unknown[0]!r} (use {', '.join(RANGE_KEYS)})"
        )
    missing = [k for k in ("low", "high") if k not in value]
    if missing:
        raise TrainingError(f"{key}: a range needs {missing[0]}")
    kind = _number_kind(key, hints[key])
    low, high = (_typed(key, value[k], k) for k in ("low", "high"))
    if kind == "int" and not all(isinstance(v, int) for v in (low, high)):
        raise TrainingError(f"{key}: an integer setting takes integer low and high")
    low, high = (float(v) if kind == "float" else v for v in (low, high))
    if not low < high:
        raise TrainingError(f"{key}: low ({low:g}) must be below high ({high:g})")
    log_scale = value.get("log", False)
    if not isinstance(log_scale, bool):
        raise TrainingError(f"{key}: log is true or false, not {log_scale!r}")
    if log_scale and low <= 0:
        raise TrainingError(f"{key}: a log range needs low > 0, not {low:g}")
    step = value.get("step")
    if step is not None:
        step = _typed(key, step, "step")
        if log_scale:
            raise TrainingError(f"{key}: give log or step, not both")
        if kind == "int" and not isinstance(step, int):
            raise TrainingError(f"{key}: an integer setting takes an integer step")
        if not step > 0:
            raise TrainingError(f"{key}: step must be above 0, not {step:g}")
        step = float(step) if kind == "float" else step
    return Range(key, kind, low, high, log_scale, step)


def _number_kind(key: str, hint: Any) -> str:
    options = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
    if options == [int]:
        return "int"
    if options == [float]:
        return "float"
    raise TrainingError(f"{key} is not a number: give a list of choices, not a range")


def _typed(key: str, value: Any, what: str) -> Any:
    """A range bound as a number: an int as YAML reads it, else a float (YAML reads 1e-3
    as text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = float(value) if isinstance(value, float | str) else None
    except ValueError:
        number = None
    if number is None or not abs(number) < float("inf"):
        raise TrainingError(f"{key}: {what} must be a finite number, not {value!r}")
    return number


def _parse_choices(key: str, values: list) -> Range:
    from training.sweep_grid import _as_text

    if not values:
        raise TrainingError(f"{key}: the list of choices is empty")
    choices = []
    for value in values:
        if isinstance(value, dict | list):
            raise TrainingError(f"{key}: a choice is one value, not {value!r}")
        typed = TrainConfig.parse_overrides({key: _as_text(value)})[key]
        if typed in choices:
            raise TrainingError(f"{key}: choice {value!r} is listed twice")
        choices.append(typed)
    return Range(key, "choice", choices=tuple(choices))


def _parse_optuna(doc: Any) -> dict:
    settings = json.loads(json.dumps(OPTUNA_DEFAULTS))
    if doc is None:
        return settings
    if not isinstance(doc, dict):
        raise TrainingError("optuna: a mapping with sampler and pruner settings")
    for part, values in doc.items():
        if part not in settings:
            raise TrainingError(f"optuna: unknown key {part!r} (use sampler, pruner)")
        if not isinstance(values, dict):
            raise TrainingError(f"optuna.{part}: a mapping of settings")
        for key, value in values.items():
            if key not in settings[part]:
                known = ", ".join(settings[part])
                raise TrainingError(f"optuna.{part}: unknown setting {key!r} (use {known})")
            if key == "seed" and (value is None or _whole(value)):  # None: the runs' seed
                settings[part][key] = value
                continue
            if not _whole(value) or value < 0:
                raise TrainingError(f"optuna.{part}.{key}: a whole number >= 0, not {value!r}")
            settings[part][key] = value
    return settings


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def space_from_doc(doc: dict[str, Any]) -> SearchSpace:
    """SearchSpace.doc() back into a SearchSpace (in a flow run or a worker process)."""
    return parse_space(doc)


def check_space(
    space: SearchSpace, base: TrainConfig, fixed: typing.Iterable[str] = ()
) -> SearchSpace:
    """Every bound and choice must make a configuration the trainer accepts, and a
    searched setting may not also be given for every run."""
    fixed = set(fixed)
    for r in space.ranges:
        if r.key in fixed:
            raise TrainingError(f"{r.key} is searched and also set for every run; give it once")
        values = r.choices if r.kind == "choice" else (r.low, r.high)
        for value in values:
            try:
                base.replace(**{r.key: value}).validate()
            except TrainingError as err:
                raise TrainingError(f"{r.key}: {value!r}: {err}") from None
    return space


# --- the study ----------------------------------------------------------------------------


@dataclass
class Search:
    """A started search: what a trial needs, as plain values (it travels to worker
    processes and flow runs, see to_dict)."""

    study_name: str
    storage: str  # the study's database URL
    space: SearchSpace
    trials: int  # finished trials wanted in the study
    base: TrainConfig  # every trial's settings before the searched ones

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "space": self.space.doc(),
            "trials": self.trials,
            "base": dataclasses.asdict(self.base),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Search:
        return cls(
            doc["study_name"],
            doc["storage"],
            space_from_doc(doc["space"]),
            int(doc["trials"]),
            TrainConfig(**doc["base"]),
        )


def study_storage_url(explicit: str | None = None, tracking_uri: str | None = None) -> str:
    """Where the study lives: `explicit`, else $CHARFLOW_OPTUNA_STORAGE, else the tracking
    database when it is PostgreSQL or MySQL, else sqlite optuna.db beside mlflow.db (for a
    tracking server: in this machine's mlruns/)."""
    from charflow.paths import mlruns_dir
    from training.mlflow_setup import default_tracking_uri, sqlite_path

    url = explicit or os.environ.get(STORAGE_ENV)
    if url:
        return url
    tracking = tracking_uri or default_tracking_uri()
    if tracking.startswith(("postgresql", "mysql")):
        return tracking
    db = sqlite_path(tracking)
    folder = db.parent if db else mlruns_dir()
    return f"sqlite:///{folder / 'optuna.db'}"


def shown_url(url: str) -> str:
    """The URL with its password hidden, to print or log."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable storage URL)"


def _storage(url: str):
    """Optuna's RDBStorage on `url`, with heartbeats (a trial of a lost machine is failed);
    PostgreSQL in its own schema, since Optuna and MLflow both keep an alembic_version."""
    import optuna
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    engine_kwargs: dict[str, Any] = {}
    if parsed.drivername.startswith("sqlite"):
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # trials in parallel processes wait
    elif parsed.drivername.startswith("postgresql"):
        parsed = _in_own_schema(parsed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in (1, 2):
            try:
                return optuna.storages.RDBStorage(
                    parsed.render_as_string(hide_password=False),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                )
            except Exception as err:  # another process made the tables at the same moment
                if attempt == 2 or "already exists" not in str(err):
                    raise
    raise AssertionError("unreachable")


def _in_own_schema(url):
    """The PostgreSQL URL with search_path=optuna (schema created if new), unless the URL
    chooses its own options. psycopg2 unless a driver is named (charflow installs it)."""
    from sqlalchemy import create_engine, text

    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    if "options" in url.query:
        return url
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    finally:
        engine.dispose()
    return url.update_query_dict({"options": f"-csearch_path={SCHEMA}"})


def open_study(search: Search, seed_offset: int = 0):
    """The study (created if new): TPE (constant liar, for trials running side by side)
    and the median pruner. Each opener samples with its own seed, base seed + offset: two
    processes seeded alike would propose the same first trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # charflow prints each trial itself
    sampler_opts, pruner_opts = search.space.optuna["sampler"], search.space.optuna["pruner"]
    seed = sampler_opts.get("seed")
    seed = (search.base.seed if seed is None else seed) + seed_offset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=sampler_opts["n_startup_trials"], seed=seed, constant_liar=True
        )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=pruner_opts["n_startup_trials"],
        n_warmup_steps=pruner_opts["n_warmup_steps"],
    )
    return optuna.create_study(
        storage=_storage(search.storage),
        study_name=search.study_name,
        direction="minimize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def _existing_study(name: str, storage: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=_storage(storage))
    except KeyError:
        return None


def counted(trial) -> bool:
    """A trial that counts toward the search: complete, pruned, or failed by its training
    (a trial whose process died failed without a reason, and is run again)."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "failure" in trial.user_attrs
    )


def trials_left(search: Search, study) -> tuple[int, int, int]:
    """(counted, running elsewhere, still to start)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(counted(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return done, running, max(0, search.trials - done - running)


def begin_search(
    corpus: str,
    source: str | Path,
    base: TrainConfig,
    space: SearchSpace,
    *,
    trials: int,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    grid: str = "optuna",
    storage: str | None = None,
) -> tuple[Sweep, Search]:
    """The study and its parent run: new, or (same name) the ones an earlier start of this
    search made, checked to be the same search. Trials that a dead process on this machine
    left RUNNING are failed (their child runs end KILLED) so that they are run again."""
    if trials < 1:
        raise TrainingError(f"--trials must be at least 1, not {trials}")
    check_space(space, base)
    stem = _slug(Path(grid.removeprefix("optuna:")).stem)
    name = name or f"{corpus}-{stem}-{time.strftime('%m%d-%H%M%S')}"
    url = study_storage_url(storage)
    existing = _existing_study(name, url)
    if existing is not None:
        kept = existing.user_attrs.get("space")
        if kept is not None and kept != json.loads(json.dumps(space.doc())):
            raise TrainingError(
                f"study {name!r} in {shown_url(url)} searches another space; give the same "
                "ranges to continue it, or another --run-name"
            )
        if existing.user_attrs.get("corpus", corpus) != corpus:
            raise TrainingError(
                f"study {name!r} searches corpus {existing.user_attrs['corpus']}, not {corpus}"
            )
    search_tags = {**(tags or {}), STUDY_TAG: name}
    sweep = open_sweep(corpus, source, [base], name=name, tags=search_tags, grid=grid)
    if sweep is None:
        sweep = start_sweep(corpus, source, [base], name=name, tags=search_tags, grid=grid)
        _log_search_params(sweep, space, trials, url)
    elif existing is not None and existing.user_attrs.get("parent_run_id") not in (
        None,
        sweep.parent_run_id,
    ):
        raise TrainingError(
            f"study {name!r} belongs to parent run {existing.user_attrs['parent_run_id']}, "
            f"not to run {sweep.parent_run_id} of this tracking store"
        )
    search = Search(name, url, space, trials, base)
    study = open_study(search)
    for key, value in {
        "space": space.doc(),
        "corpus": corpus,
        "parent_run_id": sweep.parent_run_id,
    }.items():
        study.set_user_attr(key, value)
    fail_dead_trials(study, sweep)
    return sweep, search


def _log_search_params(sweep: Sweep, space: SearchSpace, trials: int, url: str) -> None:
    from mlflow.entities import Param

    from training.mlflow_setup import mlflow_client

    params = {
        "search": "optuna",
        "search_space": space.describe(),
        "search_trials": trials,
        "search_storage": shown_url(url),
    }
    mlflow_client().log_batch(
        sweep.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()]
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study, sweep: Sweep) -> list[int]:
    """Trials left RUNNING by a process of this machine that no longer runs: FAIL, without
    a reason (so they do not count); their child runs end KILLED. Trials of other machines
    are failed by Optuna's heartbeat check once GRACE_SECONDS pass without a beat."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    dead = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("host") == host and not _alive(int(t.user_attrs.get("pid", 0)) or 1)
    ]
    for number in dead:
        study.tell(number, state=TrialState.FAIL)
    _end_interrupted_children(study, sweep)
    return dead


def _end_interrupted_children(study, sweep: Sweep) -> None:
    """Child runs of trials that failed without a reason (interrupted) and still read
    RUNNING in MLflow: KILLED, tagged so the UI says why."""
    from optuna.trial import TrialState

    from training.mlflow_names import PARENT_TAG
    from training.mlflow_setup import mlflow_client

    interrupted = {
        str(t.number)
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if "failure" not in t.user_attrs
    }
    if not interrupted:
        return
    try:
        client = mlflow_client()
        runs = client.search_runs(
            [sweep.experiment_id],
            f"tags.`{PARENT_TAG}` = '{sweep.parent_run_id}' and attributes.status = 'RUNNING'",
            max_results=10_000,
        )
        for run in runs:
            if run.data.tags.get(TRIAL_TAG) in interrupted:
                client.set_tag(
                    run.info.run_id,
                    INTERRUPTED_TAG,
                    "its process stopped; the search ran another trial in its place",
                )
                client.set_terminated(run.info.run_id, "KILLED")
    except Exception as err:  # best effort: the search goes on
        log.warning("could not end the interrupted trials' runs: %s", err)


# --- one trial ------------------------------------------------------------------------------


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


# --- the end --------------------------------------------------------------------------------


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
    _end_interrupted_children(study, sweep)
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
        _end_parent(sweep, status)
        echo(f"search {sweep.name} stopped ({type(err).__name__}): parent run {status}; "
             f"the same command continues it")  # fmt: skip
        raise
    comparison = finish_search(sweep, search)
    echo(summary(search, open_study(search)))
    return comparison


def _all_trials(search: Search) -> list:
    study = _existing_study(search.study_name, search.storage)
    return study.get_trials(deepcopy=False) if study is not None else []


def _trials_in_processes(sweep: Sweep, search: Search, plan, left: int, done: int, echo) -> None:
    """At most plan.parallel trials at a time, each in a spawned process that asks the
    study for its trial (the study's database is what they share)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in range(plan.parallel):
        slots.put(slot if plan.gpus else None)
    offset = len(_all_trials(search))
    waiting, running, finished = list(range(left)), set(), 0
    with ProcessPoolExecutor(
        plan.parallel, mp_context=context, initializer=_init_worker, initargs=(slots, plan.threads)
    ) as pool:
        try:
            while waiting or running:
                while waiting and len(running) < plan.parallel:
                    ordinal = waiting.pop(0)
                    running.add(pool.submit(trial_in_worker, sweep, search, offset + ordinal))
                completed, running = wait(running, return_when=FIRST_COMPLETED)
                for future in completed:
                    finished += 1
                    echo(describe_trial(future.result(), done + finished, search.trials))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


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


__all__ = [
    "STORAGE_ENV",
    "Range",
    "Search",
    "SearchSpace",
    "begin_search",
    "check_space",
    "finish_search",
    "load_space",
    "parse_space",
    "run_search",
    "run_trial",
    "study_storage_url",
]

"""Starting an Optuna search, or continuing one: `begin_search` opens the study and the
parent run (new, or the ones an earlier start of the same name made, checked to be the same
search); trials a dead process left RUNNING are failed (their child runs end KILLED) so that
they are run again."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

from charflow.processes import pid_alive
from training.config import TrainConfig
from training.errors import TrainingError
from training.search_space import SearchSpace, check_space
from training.search_study import (
    INTERRUPTED_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    Search,
    existing_study,
    open_study,
    shown_url,
    study_storage_url,
)
from training.sweep import Sweep, open_sweep, start_sweep
from training.sweep_grid import _slug

log = logging.getLogger(__name__)


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
    existing = existing_study(name, url)
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


def fail_dead_trials(study, sweep: Sweep) -> list[int]:
    """Trials left RUNNING by a process of this machine that no longer runs: FAIL, without
    a reason (so they do not count); their child runs end KILLED. Trials of other machines
    are failed by Optuna's heartbeat check once GRACE_SECONDS pass without a beat."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    dead = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("host") == host and not pid_alive(int(t.user_attrs.get("pid", 0)) or 1)
    ]
    for number in dead:
        study.tell(number, state=TrialState.FAIL)
    end_interrupted_children(study, sweep)
    return dead


def end_interrupted_children(study, sweep: Sweep) -> None:
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

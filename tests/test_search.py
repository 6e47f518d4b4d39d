"""Optuna searches (training/search.py, `charflow sweep --search optuna`): ranges checked
before anything starts, the pruner fed at the same point of every trial's budget, a real
search in a real SQLite MLflow store with the study beside it (trials pruned, recorded as
pruned), and a search killed with SIGKILL that the same command continues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training import mlflow_setup
from training.config import build_config
from training.errors import TrainingError
from training.search_space import check_space, parse_space
from training.search_study import (
    INTERRUPTED_TAG,
    PRUNED_TAG,
    STORAGE_ENV,
    TRIAL_TAG,
    study_storage_url,
)
from training.search_trial import PruningReporter

REPO = Path(__file__).resolve().parent.parent
TINY = build_config("tiny")

# lr 1e-6 learns nothing in 30 steps: once one trial has finished, a trial drawn with it is
# above the median at its first report. TPE draws its first 10 trials at random, seeded
# (the runs' seed), so which trials draw it is fixed: trial 0 finishes, others are pruned.
PRUNING_SPACE = """\
lr: [0.01, 0.000001]
dropout: {low: 0.0, high: 0.3}
optuna:
  sampler: {n_startup_trials: 10}
  pruner: {n_startup_trials: 1, n_warmup_steps: 0}
"""
TINY_STEPS = ["--preset", "tiny", "--set", "max_steps=30", "--set", "eval_every=5"]


# --- the space ------------------------------------------------------------------------------


def test_ranges_are_typed_by_their_setting():
    space = check_space(
        parse_space(
            {
                "lr": {"low": "1e-3", "high": 1e-2, "log": True},  # YAML reads 1e-3 as text
                "dropout": {"low": 0, "high": 0.3},
                "num_layers": {"low": 1, "high": 3},
                "hidden_size": {"low": 32, "high": 128, "step": 32},
                "model": ["gru", "lstm"],
                "bf16": ["on", "off"],
                "optuna": {"pruner": {"n_warmup_steps": 2}},
            }
        ),
        TINY,
    )
    kinds = {r.key: (r.kind, r.low, r.high, r.log, r.step, r.choices) for r in space.ranges}
    assert kinds["lr"] == ("float", 0.001, 0.01, True, None, ())
    assert kinds["dropout"] == ("float", 0.0, 0.3, False, None, ())
    assert kinds["num_layers"] == ("int", 1, 3, False, None, ())
    assert kinds["hidden_size"] == ("int", 32, 128, False, 32, ())
    assert kinds["model"][0] == "choice" and kinds["model"][5] == ("gru", "lstm")
    assert kinds["bf16"][5] == (True, False)  # as --set types them
    assert space.optuna == {
        "sampler": {"n_startup_trials": 4, "seed": None},
        "pruner": {"n_startup_trials": 2, "n_warmup_steps": 2},
    }
    assert space.describe().startswith("lr in [0.001, 0.01] log, dropout in [0, 0.3], ")
    # the space travels as JSON (flow runs, the study's attributes) and comes back the same
    assert parse_space(json.loads(json.dumps(space.doc()))) == space


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("lrr: {low: 0.001, high: 0.01}", "unknown training setting 'lrr'; did you mean lr?"),
        ("lr: 0.01", "lr: a search range is {low: ..., high: ...} or a list of choices, not 0.01"),
        ("lr: {low: 0.01}", "lr: a range needs high"),
        ("lr: {low: 0.01, high: 0.001}", "lr: low (0.01) must be below high (0.001)"),
        ("lr: {low: 0, high: 0.01, log: true}", "lr: a log range needs low > 0, not 0"),
        ("lr: {low: 0.001, high: 0.01, log: yes please}", "lr: log is true or false"),
        ("lr: {low: 0.001, high: 0.01, by: 2}", "lr: unknown range key 'by'"),
        ("lr: {low: fast, high: 0.01}", "lr: low must be a finite number, not 'fast'"),
        ("lr: {low: 0.001, high: .inf}", "lr: high must be a finite number"),
        ("dropout: {low: 0.0, high: 1.5}", "dropout: 1.5: dropout = 1.5 is out of range"),
        ("num_layers: {low: 1, high: 2.5}", "num_layers: an integer setting takes integer low"),
        ("hidden_size: {low: 0, high: 64}", "hidden_size: 0: hidden_size must be at least 1"),
        ("model: {low: 1, high: 2}", "model is not a number: give a list of choices"),
        ("model: [gru, transformer]", "model: 'transformer': unknown model type 'transformer'"),
        ("model: []", "model: the list of choices is empty"),
        ("model: [gru, gru]", "model: choice 'gru' is listed twice"),
        ("max_steps: [10, 20]", "max_steps is searched and also set for every run"),
        ("optuna: {}", "a search space maps settings to ranges"),
        ("lr: [0.01]\noptuna: {pruner: {n_warmup_steps: -1}}", "optuna.pruner.n_warmup_steps"),
        ("lr: [0.01]\noptuna: {sampler: {greedy: 1}}", "optuna.sampler: unknown setting"),
        ("lr: [0.01]\n  bad: indent", "not valid YAML at line 2"),
    ],
)
def test_bad_spaces_fail_with_one_line_and_start_nothing(
    trainer_home, write_text, charflow, yaml_text, message
):
    text = write_text("shakes.txt", "a few words of text\n" * 50)
    space = write_text("space.yaml", yaml_text)
    code, out, err = charflow(
        "sweep", text, "--search", "optuna", "--grid", space, *TINY_STEPS, "--trials", "2"
    )
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("charflow: error: "), err
    assert message in err
    assert not (trainer_home / "mlruns").exists()  # no study, no run


def test_search_needs_a_space_file(trainer_home, write_text, charflow):
    text = write_text("shakes.txt", "a few words of text\n" * 50)
    code, _, err = charflow("sweep", text, "--search", "optuna", "--preset", "tiny")
    assert code == 1 and "--search optuna takes its ranges from a YAML file" in err
    code, _, err = charflow("sweep", text, "--search", "grid", "--grid", text)
    assert code == 1 and "the one search is optuna" in err
    code, _, err = charflow("sweep", text, "--trials", "3", "--grid", text)
    assert code == 1 and "--trials counts the trials of a search: add --search optuna" in err


def test_the_study_lives_beside_the_tracking_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARFLOW_HOME", str(tmp_path))
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert study_storage_url() == f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    assert study_storage_url(tracking_uri="sqlite:////srv/ml/mlflow.db") == (
        "sqlite:////srv/ml/optuna.db"
    )
    pg = "postgresql+psycopg2://u:p@db:5432/mlflow"
    assert study_storage_url(tracking_uri=pg) == pg  # the tracking database itself
    server = study_storage_url(tracking_uri="http://mlflow:5000")  # a server: this machine's
    assert server == f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    monkeypatch.setenv(STORAGE_ENV, pg)
    assert study_storage_url(tracking_uri="http://mlflow:5000") == pg
    assert study_storage_url("sqlite:////x/o.db") == "sqlite:////x/o.db"


def test_trials_report_at_the_same_point_of_their_budget():
    """A fast and a slow configuration evaluate at different steps but at the same
    twentieths of a time budget: the pruner compares them there."""
    import optuna

    study = optuna.create_study()  # in memory: real trials, nothing stored
    trial = study.ask()
    reporter = PruningReporter(trial, TINY.replace(max_steps=10**9, max_seconds=10.0))
    rows = [(100, 0.51, 3.0), (150, 0.8, 2.9), (900, 5.02, 2.0), (1000, 9.99, 1.9)]
    for step, seconds, loss in rows:
        row = {"step": step, "seconds": seconds, "chars": 0, "val_loss": loss}
        assert not reporter.evaluation(row, "", True)
    assert study.trials[0].intermediate_values == {1: 3.0, 10: 2.0, 19: 1.9}
    steps = PruningReporter(study.ask(), TINY.replace(max_steps=30))
    assert [steps.point({"step": s}) for s in (5, 10, 15, 30)] == [3, 6, 10, 20]


# --- searches ---------------------------------------------------------------------------------


def test_search_prunes_and_records_every_trial_as_a_child(
    trainer_home, write_text, charflow, shakespeare_text
):
    text = write_text("shakes.txt", shakespeare_text[:40_000])
    space = write_text("space.yaml", PRUNING_SPACE)
    code, out, err = charflow(
        "sweep", text, "--search", "optuna", "--grid", space, "--trials", "4", *TINY_STEPS,
        "--run-name", "s1", "--tag", "team=nlp", "--parallel", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "search s1: 4 trials (4 to run), 1 at a time" in err
    assert f"study in sqlite:///{trainer_home / 'mlruns' / 'optuna.db'}" in err
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert [line.split(" ")[0] for line in lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert "trial 0 shakes-lstm1x32-dropout=" in lines[0] and ": val " in lines[0]
    assert any(": PRUNED pruned at 3/20 of the budget (step 5)" in line for line in lines)

    import optuna

    study = optuna.load_study(study_name="s1", storage=study_storage_url())
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and states[0] == "COMPLETE" and "PRUNED" in states
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert all(len(t.intermediate_values) == 1 for t in pruned)  # stopped at its first report
    assert study.trials[0].params["lr"] == 0.01 and len(study.trials[0].intermediate_values) == 6

    client = mlflow_setup.mlflow_client()
    exp = mlflow_setup.experiment_id(client, "shakes", client.tracking_uri)
    (parent,) = client.search_runs([exp], "tags.`charflow.role` = 'sweep'")
    assert parent.info.status == "FINISHED" and parent.data.tags["charflow.study"] == "s1"
    assert parent.data.params["search"] == "optuna"
    assert parent.data.params["search_space"] == "lr in {0.01, 1e-06}, dropout in [0, 0.3]"
    assert parent.data.tags["charflow.best_trial"] == "0"
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_trial = {int(c.data.tags[TRIAL_TAG]): c for c in children}
    assert sorted(by_trial) == [0, 1, 2, 3]
    assert {c.data.tags["team"] for c in children} == {"nlp"}
    for trial in study.trials:
        run = by_trial[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert float(run.data.params["lr"]) == trial.params["lr"]
        if trial.state.name == "PRUNED":  # pruned: a tag saying where, and the run KILLED
            assert run.info.status == "KILLED"
            assert run.data.tags[PRUNED_TAG].startswith("pruned at 3/20 of the budget (step 5)")
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
            assert steps == [5]  # it stopped at the evaluation that pruned it
        else:
            assert run.info.status == "FINISHED" and PRUNED_TAG not in run.data.tags

    parent_id = parent.info.run_id
    table = json.loads(Path(client.download_artifacts(parent_id, "comparison.json")).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["run_id"] for r in rows] == [t.user_attrs["mlflow_run_id"] for t in study.trials]
    assert {"lr", "dropout"} <= set(table["columns"])
    assert {a.path for a in client.list_artifacts(parent_id)} >= {"comparison.json", "report.html"}
    assert out.splitlines()[0].split()[:4] == ["run", "status", "dropout", "lr"]


def _counted(study) -> int:
    return sum(
        t.state.name in ("COMPLETE", "PRUNED")
        or (t.state.name == "FAIL" and "failure" in t.user_attrs)
        for t in study.trials
    )


def test_a_killed_search_continues_where_it_stopped(trainer_home, write_text, shakespeare_text):
    """SIGKILL mid-trial: nothing gets to clean up. The same command again fails the dead
    trial (its child run ends KILLED), runs only the missing trials, and compares all."""
    import optuna

    text = write_text("shakes.txt", shakespeare_text[:40_000])
    space = write_text("space.yaml", "lr: {low: 1e-3, high: 1e-2, log: true}\n")
    command = [sys.executable, "-m", "flows.cli", "sweep", text, "--search", "optuna"]
    command += ["--grid", space, "--trials", "3", "--preset", "tiny", "--max-seconds", "3"]
    command += ["--run-name", "k1", "--parallel", "1", "--set", "patience=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    output = trainer_home / "first.log"  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=output.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    storage = study_storage_url()
    folder = trainer_home / "checkpoints" / "shakes" / "sweeps" / "k1"
    try:
        deadline = time.monotonic() + 240
        while True:  # until trial 0 is done and trial 1 has saved its first checkpoint
            assert proc.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.3)
            if "search k1:" not in output.read_text():  # its study exists from then on
                continue
            try:
                study = optuna.load_study(study_name="k1", storage=storage)
            except Exception:  # not created yet, or the database is busy
                continue
            if _counted(study) == 1 and len(list(folder.glob("*/last.pt"))) == 2:
                seen = [(t.number, t.state.name, len(t.intermediate_values)) for t in study.trials]
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "search k1: 3 trials (1 done, 2 to run)" in done.stderr
    study = optuna.load_study(study_name="k1", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states[0] == "COMPLETE" and states[1] == "FAIL" and len(states) == 4, seen
    assert _counted(study) == 3 and "failure" not in study.trials[1].user_attrs

    client = mlflow_setup.mlflow_client()
    exp = mlflow_setup.experiment_id(client, "shakes", client.tracking_uri)
    (parent,) = client.search_runs([exp], "tags.`charflow.role` = 'sweep'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4
    (killed,) = [c for c in children if c.data.tags[TRIAL_TAG] == "1"]
    assert killed.info.status == "KILLED" and INTERRUPTED_TAG in killed.data.tags
    table = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "comparison.json")).read_text()
    )
    compared = {row[table["columns"].index("run_id")] for row in table["data"]}
    assert compared == {t.user_attrs["mlflow_run_id"] for t in study.trials if t.number != 1}

    # the study remembers its space: another one under the same name is refused
    other = write_text("other.yaml", "lr: {low: 1e-4, high: 1e-2, log: true}\n")
    again = [
        *command[: command.index("--grid") + 1],
        other,
        *command[command.index("--grid") + 2 :],
    ]
    refused = subprocess.run(again, cwd=REPO, env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert (
        "study 'k1' in sqlite:///" in refused.stderr and "searches another space" in refused.stderr
    )


def test_search_space_errors_name_the_file(write_text):
    from training.search_space import load_space

    path = write_text("space.yaml", "lr: {low: 1, high: 0.1}\n")
    with pytest.raises(TrainingError, match=r"space.yaml: lr: low \(1\) must be below high"):
        load_space(path, TINY)

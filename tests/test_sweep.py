"""Sweeps (training/sweep.py, `charflow sweep`): grids expanded and checked before anything
starts, then a real sweep in a real SQLite MLflow store: a parent run, nested children (in
spawned processes), a child that fails at run time without stopping the others, the
comparison on the parent, and run names that say what they are."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from training import mlflow_setup
from training.config import TrainConfig, build_config
from training.errors import TrainingError
from training.sweep import finish_sweep, run_child, start_sweep
from training.sweep_grid import (
    ARCHITECTURES,
    UNBOUNDED_STEPS,
    build_configs,
    load_grid,
    varied_settings,
)
from training.sweep_workers import plan_workers, run_sweep

TINY = build_config("tiny")


def configs_from(write_text, yaml_text: str, fixed: dict | None = None) -> list[TrainConfig]:
    return build_configs(TINY, load_grid(write_text("grid.yaml", yaml_text)), fixed)


# --- grids ------------------------------------------------------------------------------


def test_architectures_grid_shares_hidden_size_budget_and_seed():
    configs = build_configs(
        TINY, load_grid("architectures"), {"hidden_size": 48, "max_seconds": 30.0}
    )
    assert [(c.model, c.num_layers) for c in configs] == [
        ("rnn", 1),
        ("rnn", 3),
        ("gru", 2),
        ("lstm", 1),
        ("lstm", 2),
    ]
    assert {(c.hidden_size, c.max_seconds, c.seed) for c in configs} == {(48, 30.0, TINY.seed)}
    # the time budget binds, not the preset's step budget
    assert {c.max_steps for c in configs} == {UNBOUNDED_STEPS}
    assert varied_settings(configs) == ["model", "num_layers"]
    assert load_grid("architectures") == ARCHITECTURES and load_grid("architectures") is not (
        ARCHITECTURES
    )


def test_yaml_mapping_is_the_cartesian_product_typed_like_set(write_text):
    configs = configs_from(write_text, "model: [rnn, lstm]\nlr: [3e-3, 0.01, 1]\ndropout: 0.1\n")
    assert len(configs) == 6
    assert [(c.model, c.lr) for c in configs] == [
        ("rnn", 0.003),  # YAML reads 3e-3 as a string; it is typed as the field's float
        ("rnn", 0.01),
        ("rnn", 1.0),
        ("lstm", 0.003),
        ("lstm", 0.01),
        ("lstm", 1.0),
    ]
    assert {c.dropout for c in configs} == {0.1}  # a single value: every configuration
    assert varied_settings(configs) == ["model", "lr"]
    assert configs[0].max_steps == TINY.max_steps  # no time or character budget: steps bind


def test_yaml_list_is_those_configurations_in_order(write_text):
    configs = configs_from(
        write_text,
        "- {model: gru, num_layers: 2}\n- {model: lstm, max_chars: 5000, bf16: false}\n",
    )
    assert [(c.model, c.num_layers) for c in configs] == [("gru", 2), ("lstm", 1)]
    assert (configs[1].max_chars, configs[1].bf16, configs[1].max_steps) == (
        5000,
        False,
        UNBOUNDED_STEPS,
    )
    assert configs[0].max_chars is None and configs[0].max_steps == TINY.max_steps


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("lrr: [0.1]\n", r"^configuration 1 \(lrr=0.1\): unknown .* 'lrr'; did you mean lr"),
        ("hidden_size: [64, big]\n", r"^configuration 2 \(hidden_size=big\): bad value .*: 'big'"),
        ("dropout: [0.2, 1.5]\n", r"^configuration 2 \(dropout=1.5\): dropout = 1.5 is out"),
        ("- {model: transformer}\n", r"unknown model type 'transformer'"),
        ("lr: []\n", r"setting lr has an empty list of values"),
        ("- {lr: 0.1}\n- {lr: 0.10}\n", r"configurations 1 and 2 are the same"),
        ("just text\n", r"a grid is a mapping of settings to lists of values"),
        ("model: [rnn\n", r"not valid YAML at line 2"),
        ("max_seconds: [5]\n", r"max_seconds is set both by the grid and for every run"),
    ],
)  # fmt: skip
def test_bad_grids_fail_with_one_line_naming_the_key_or_value(write_text, yaml_text, message):
    with pytest.raises(TrainingError, match=message) as err:
        configs_from(write_text, yaml_text, {"max_seconds": 10.0})
    assert "\n" not in str(err.value)


def test_an_unknown_grid_name_is_refused():
    with pytest.raises(TrainingError, match="grid 'archs' is neither a built-in grid"):
        load_grid("archs")


def test_workers_never_oversubscribe_the_cores():
    cores = len(os.sched_getaffinity(0))
    cpu = [TINY.replace(device="cpu", seed=s) for s in range(5)]
    plan = plan_workers(cpu)
    assert plan.gpus == 0 and plan.parallel == min(5, cores)
    assert plan.parallel * plan.threads <= cores
    assert plan_workers(cpu, 1).threads == cores  # alone: the whole machine
    assert plan_workers(cpu[:1]).parallel == 1  # never more workers than runs
    with pytest.raises(TrainingError, match=f"--parallel {cores + 1} does not fit"):
        plan_workers(cpu, cores + 1)
    assert plan_workers([TINY.replace(device="cuda:0")]).parallel == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "bad.yaml"], "configuration 1 (lrr=0.1): unknown training setting 'lrr'"),
        (["--max-seconds", "5", "--max-chars", "9"], "give --max-seconds or --max-chars, not both"),
        (["--parallel", "999"], "--parallel 999 does not fit this machine"),
        (["--tag", "mlflow.note=x"], "tag 'mlflow.note' is reserved"),
        (["--set", "max_steps=many"], "bad value for training setting max_steps: 'many'"),
        (["--hidden", "8", "--set", "hidden_size=8"], "hidden_size given both as a flag and with"),
        (["--preset", "huge"], "unknown preset 'huge'"),
    ],
)  # fmt: skip
def test_bad_sweep_input_is_one_line_and_starts_nothing(
    trainer_home, write_text, charflow, shakespeare_text, args, message
):
    text = write_text("shakes.txt", shakespeare_text[:20_000])
    (trainer_home / "bad.yaml").write_text("lrr: [0.1]\n")  # beside the working directory
    code, out, err = charflow("sweep", text, "--preset", "tiny", *args)
    assert (code, out) == (1, "")
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (trainer_home / "mlruns").exists() and not (trainer_home / "checkpoints").exists()


def test_an_unknown_corpus_name_says_where_it_looked(trainer_home, charflow):
    code, _, err = charflow("sweep", "nosuchcorpus")
    assert code == 1
    assert err.startswith(f"charflow: error: no corpus 'nosuchcorpus': neither {trainer_home}")
    assert "charflow ingest nosuchcorpus" in err


# --- a real sweep -----------------------------------------------------------------------


GRID = """\
- {model: rnn}
- {model: lstm}
- {model: gru, seq_len: 100000}
"""


def test_sweep_logs_parent_children_comparison_and_goes_on_past_a_failure(
    trainer_home, write_text, charflow, shakespeare_text
):
    """3 children in 2 spawned processes; the gru asks for more text than there is."""
    text = write_text("shakes.txt", shakespeare_text[:60_000])
    grid = write_text("grid.yaml", GRID)
    args = ["--grid", grid, "--preset", "tiny", "--set", "max_steps=30", "--parallel", "2"]
    code, out, err = charflow("sweep", text, *args, "--run-name", "s1", "--tag", "team=nlp")
    assert code == 0, err
    progress = [line for line in err.splitlines() if re.match(r"\[\d/3\] ", line)]
    assert len(progress) == 3
    failed = "shakes-gru1x32-seq_len=100000: FAILED: TrainingError: seq_len 100000"
    assert sum(failed in line for line in progress) == 1

    client = mlflow_setup.mlflow_client()
    (parent,) = client.search_runs(
        [mlflow_setup.experiment_id(client, "shakes", client.tracking_uri)],
        "tags.`charflow.role` = 'sweep'",
    )
    assert parent.info.run_name == "s1" and parent.info.status == "FINISHED"
    assert parent.data.tags["charflow.sweep"] == "s1" and parent.data.tags["team"] == "nlp"
    assert parent.data.params["hidden_size"] == "32" and parent.data.params["sweep_size"] == "3"
    assert parent.data.params["sweep_varies"] == "model,seq_len"
    assert "model" not in parent.data.params  # only what the children share

    from training.comparison import sweep_children

    children = sweep_children(client, parent)
    assert [c.info.run_name for c in children] == [
        "shakes-rnn1x32-seq_len=32",
        "shakes-lstm1x32-seq_len=32",
        "shakes-gru1x32-seq_len=100000",
    ]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["team"] for c in children} == {"nlp"}
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED", "FAILED"]
    assert "needs at least 800,001 training chars" in children[2].data.tags["failure"]
    assert children[2].data.params["model"] == "gru"  # recorded with its settings
    for child in children[:2]:
        history = client.get_metric_history(child.info.run_id, "chars")
        assert len(history) >= 2 and history[-1].value == 30 * 8 * 32  # steps x batch x seq_len
        logs = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "train.log" in logs  # each process's output, kept apart from the others

    folder = trainer_home / "checkpoints" / "shakes" / "sweeps" / "s1"
    assert (folder / "00-rnn1x32-seq_len=32" / "best.pt").is_file()
    assert "needs at least" in (folder / "02-gru1x32-seq_len=100000" / "train.log").read_text()

    parent_id = parent.info.run_id
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"comparison.json", "report.html", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent_id, "plots")}
    assert plots == {"plots/val_loss_vs_seconds.png", "plots/val_loss_vs_chars.png"}
    table = json.loads(Path(client.download_artifacts(parent_id, "comparison.json")).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["status"] for r in rows] == ["FINISHED", "FINISHED", "FAILED"]
    best = min(m.value for m in client.get_metric_history(children[0].info.run_id, "val_loss"))
    assert rows[0]["best_val_loss"] == pytest.approx(best)
    report = Path(client.download_artifacts(parent_id, "report.html")).read_text()
    assert report.count("data:image/png;base64,") == 2 and "T=0.5" in report
    assert all(c.info.run_name in report for c in children)

    # the terminal table is the comparison's, and `charflow compare s1` prints it again
    assert out.splitlines()[0].split()[:4] == ["run", "status", "model", "seq_len"]
    code, again, err = charflow("compare", "s1")
    assert code == 0, err
    assert again == out

    # a second sweep of that name would mix checkpoints: refused before it starts
    code, _, err = charflow("sweep", text, *args, "--run-name", "s1")
    assert code == 1 and "sweep 's1' exists already" in err


def test_library_steps_one_by_one_with_a_failure_first(trainer_home, write_text, shakespeare_text):
    """start_sweep / run_child / finish_sweep as a flow calls them; in this process."""
    text = write_text("shakes.txt", shakespeare_text[:30_000])
    bad = TINY.replace(max_steps=10, seq_len=50_000)
    good = TINY.replace(max_steps=10, model="gru")
    sweep = start_sweep("shakes", text, [bad, good], name="steps", tags={"k": "v"})
    results = [run_child(sweep, 0), run_child(sweep, 1)]
    assert [r.status for r in results] == ["FAILED", "FINISHED"]
    assert results[0].reason.startswith("TrainingError: seq_len 50000")
    assert results[1].chars == 10 * 8 * 32 and results[1].best_val_loss < 5
    # a configuration decided on the fly (a search's trial) is one more child
    extra = run_child(sweep, good.replace(lr=0.01))
    assert extra.index == 2 and extra.run_name == "shakes-gru1x32-seq_len=32-lr=0.01"
    assert Path(extra.out_dir).name.startswith("02-gru1x32-seq_len=32-lr=0.01-")
    comparison = finish_sweep(sweep, [extra, *results])
    assert [row["status"] for row in comparison.rows] == ["FAILED", "FINISHED", "FINISHED"]
    client = mlflow_setup.mlflow_client()
    assert client.get_run(sweep.parent_run_id).info.status == "FINISHED"
    assert client.get_run(results[0].run_id).data.tags["mlflow.parentRunId"] == sweep.parent_run_id


def test_a_sweep_whose_children_all_fail_ends_failed(trainer_home, write_text, shakespeare_text):
    text = write_text("shakes.txt", shakespeare_text[:5_000])
    too_long = [TINY.replace(seq_len=n) for n in (4000, 5000)]
    lines = []
    comparison = run_sweep("shakes", text, too_long, name="doomed", parallel=1, echo=lines.append)
    assert [row["status"] for row in comparison.rows] == ["FAILED", "FAILED"]
    assert lines[0].startswith("sweep doomed: 2 configurations, 1 at a time")
    assert "workflowType=machine_learning" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == [
        "[1/2] shakes-lstm1x32-seq_len=4000",
        "[2/2] shakes-lstm1x32-seq_len=5000",
    ]
    parent = mlflow_setup.mlflow_client().get_run(comparison.rows[0]["run_id"]).data.tags
    assert parent["mlflow.parentRunId"]
    client = mlflow_setup.mlflow_client()
    assert client.get_run(parent["mlflow.parentRunId"]).info.status == "FAILED"


# --- run names --------------------------------------------------------------------------


def test_train_runs_are_named_by_what_they_are(
    trainer_home, write_text, charflow, shakespeare_text
):
    text = write_text("shakes.txt", shakespeare_text[:20_000])
    tiny = ["--preset", "tiny", "--max-steps", "5", "--no-progress"]
    code, _, err = charflow("train", text, *tiny, "--run-name", "mine", "--tag", "team=nlp")
    assert code == 0, err
    code, _, err = charflow("train", text, *tiny)
    assert code == 0, err
    client = mlflow_setup.mlflow_client()
    exp = mlflow_setup.experiment_id(client, "shakes", client.tracking_uri)
    runs = client.search_runs([exp], order_by=["attributes.start_time ASC"])
    assert runs[0].info.run_name == "mine" and runs[0].data.tags["team"] == "nlp"
    assert re.fullmatch(r"shakes-lstm1x32-\d{4}-\d{6}", runs[1].info.run_name)
    # the link train prints opens the run in the model-training view
    assert f"/runs/{runs[1].info.run_id}?workflowType=machine_learning" in err
    code, _, err = charflow("train", text, *tiny, "--tag", "charflow.sweep=x")
    assert code == 1 and "tag 'charflow.sweep' is reserved" in err


def test_ctrl_c_stops_every_child_and_starts_no_more(trainer_home, write_text, shakespeare_text):
    """SIGINT to the command's process group, as a terminal sends it: both running children
    save a checkpoint and end KILLED, no queued child starts, the parent ends KILLED."""
    import signal
    import subprocess
    import sys
    import time

    text = write_text("shakes.txt", shakespeare_text[:60_000])
    command = [sys.executable, "-m", "flows.cli", "sweep", text, "--preset", "tiny"]
    command += ["--max-seconds", "120", "--parallel", "2", "--run-name", "stopped"]
    folder = trainer_home / "checkpoints" / "shakes" / "sweeps" / "stopped"
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        command,
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group, to signal it as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while len(list(folder.glob("*/last.pt"))) < 2:  # both children are training
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err.decode()
    assert "sweep stopped stopped (KeyboardInterrupt): parent run KILLED" in err.decode()
    assert sorted(p.name for p in folder.iterdir()) == ["00-rnn1x32", "01-rnn3x32"]
    client = mlflow_setup.mlflow_client()
    exp = mlflow_setup.experiment_id(client, "shakes", client.tracking_uri)
    runs = client.search_runs([exp], "tags.`charflow.sweep` = 'stopped'")
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("shakes-rnn1x32", "KILLED"),
        ("shakes-rnn3x32", "KILLED"),
        ("stopped", "KILLED"),
    ]

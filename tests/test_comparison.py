"""The comparison of runs (training/comparison.py) and the links charflow prints: runs made
by hand in a real SQLite MLflow store, so every number in the table is known in advance."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from mlflow.entities import Metric, Param

from training import mlflow_names, mlflow_setup
from training.comparison import compare_runs, find_runs
from training.comparison_report import log_comparison, render_report, sample_html, text_table
from training.errors import TrainingError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds);
    tests keep apart by using their own corpus names."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARFLOW_HOME", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.delenv("MLFLOW_UI_URL", raising=False)
        yield root


def make_run(corpus: str, name: str, *, params: dict, evals: list[tuple], **extra) -> str:
    """A run as the trainer leaves one: params, then (step, val_loss, seconds, chars) at each
    evaluation; `extra`: status, failure, metrics, samples {artifact path: text}, tags."""
    client = mlflow_setup.mlflow_client()
    exp = mlflow_setup.experiment_id(client, corpus, client.tracking_uri)
    tags = {"corpus": corpus, **extra.get("tags", {})}
    if "failure" in extra:
        tags["failure"] = extra["failure"]
    run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    metrics = [
        Metric(key, value, 0, step)
        for step, val, seconds, chars in evals
        for key, value in (("val_loss", val), ("seconds", seconds), ("chars", chars))
    ]
    metrics += [Metric(k, v, 0, 0) for k, v in extra.get("metrics", {}).items()]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    for path, text in extra.get("samples", {}).items():
        client.log_text(run_id, text, path)
    client.set_terminated(run_id, extra.get("status", "FINISHED"))
    return run_id


LSTM = {"model": "lstm", "num_layers": 2, "hidden_size": 64, "lr": 0.003, "param_count": 5000}


@pytest.fixture(scope="module")
def three_runs(store) -> list[str]:
    """Two finished runs that differ in lr only, one that failed before training."""
    fast = make_run(
        "cmp",
        "cmp-lstm2x64-lr=0.003",
        params={**LSTM, "corpus": "cmp"},
        evals=[(10, 2.5, 1.0, 1000), (20, 1.9, 2.0, 2000), (30, 2.1, 4.0, 4000)],
        metrics={"test_loss": 1.95, "sample_copy_rate": 0.25, "sample_bigram_loss": 2.6},
        samples={
            "samples/final_T0.5.txt": "<b>ROMEO</b> & co\x1eJULIET",
            "samples/final_T1.0.txt": "the end",
        },
    )
    slow = make_run(
        "cmp",
        "cmp-lstm2x64-lr=0.01",
        params={**LSTM, "lr": 0.01, "corpus": "cmp"},
        evals=[(10, 2.8, 2.0, 1000), (20, 2.4, 4.0, 2000)],
        samples={"samples/step_000010.txt": "early", "samples/step_000020.txt": "later text"},
    )
    failed = make_run(
        "cmp",
        "cmp-lstm2x64-broken",
        params={"model": "lstm"},  # failed before the trainer logged the rest
        evals=[],
        status="FAILED",
        failure="TrainingError: seq_len 9999 needs more text",
    )
    return [fast, slow, failed]


def compared(run_ids: list[str]):
    client = mlflow_setup.mlflow_client()
    return compare_runs(client, [client.get_run(r) for r in run_ids])


def test_table_has_a_row_per_run_with_what_differs_and_the_best_loss(three_runs):
    comparison = compared(three_runs)
    assert comparison.varied == ["lr"]  # a failed run's missing params do not count as varied
    assert comparison.columns[:3] == ["run", "status", "lr"]
    fast, slow, failed = comparison.rows
    assert fast["lr"] == 0.003 and slow["lr"] == 0.01  # typed as TrainConfig types them
    assert fast["best_val_loss"] == 1.9  # the best evaluation, not the last one
    assert fast["val_bpc"] == pytest.approx(1.9 / math.log(2))
    assert fast["test_loss"] == 1.95 and fast["params"] == 5000
    assert (fast["seconds"], fast["chars"]) == (4.0, 4000)
    assert fast["chars_per_sec"] == pytest.approx(1000.0)  # over the whole run
    assert fast["sample_copy_rate"] == 0.25 and slow["sample_copy_rate"] is None
    assert failed["status"] == "FAILED" and "seq_len 9999" in failed["reason"]
    assert failed["best_val_loss"] is None
    assert [c.label for c in comparison.curves][:2] == ["lr=0.003", "lr=0.01"]
    assert [p["seconds"] for p in comparison.curves[0].points] == [1.0, 2.0, 4.0]


def test_text_table_is_aligned_and_lists_failures(three_runs):
    text = text_table(compared(three_runs))
    lines = text.splitlines()
    header, rows, reasons = lines[0], lines[1:4], lines[4:]
    assert header.split()[:3] == ["run", "status", "lr"]
    assert "val_loss" in header and "copy" in header
    assert rows[0].split()[:4] == ["cmp-lstm2x64-lr=0.003", "FINISHED", "0.003", "1.9000"]
    # numbers are right-aligned under their header: each value ends where its header ends
    end = header.index("val_loss") + len("val_loss")
    assert rows[0][end - len("1.9000") : end] == "1.9000"
    assert rows[1][end - len("2.4000") : end] == "2.4000"
    assert reasons == ["cmp-lstm2x64-broken failed: TrainingError: seq_len 9999 needs more text"]


def test_report_is_one_page_with_escaped_samples_side_by_side(three_runs):
    client = mlflow_setup.mlflow_client()
    comparison = compared(three_runs)
    from training.comparison_report import final_samples

    samples = [final_samples(client, run) for run in comparison.runs]
    assert samples[0] == {"T=0.5": "<b>ROMEO</b> & co\x1eJULIET", "T=1.0": "the end"}
    assert samples[1] == {"last training sample (step 20)": "later text"}  # no final ones
    assert samples[2] == {}
    page = render_report(comparison, "cmp <sweep>", {"plot": PNG_MAGIC}, samples)
    assert "<title>cmp &lt;sweep&gt;</title>" in page
    assert "&lt;b&gt;ROMEO&lt;/b&gt; &amp; co" in page and "<b>ROMEO" not in page
    assert "\x1e" not in page and "␞" in page  # the separator is shown, not swallowed
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page  # the PNG inlined
    # nothing loads from elsewhere: the only URLs are links to the MLflow UI
    assert re.findall(r'src="(?!data:)', page) == []
    assert "seq_len 9999 needs more text" in page  # the failed run's column says why
    row = page.split("<th class=text>T=0.5</th>")[1].split("</tr>")[0]
    assert row.count("<td>") == 3  # one cell per run, side by side


def test_sample_html_marks_each_document_separator():
    html = sample_html("a<b\x1ec\x1ed")
    assert html.startswith('a&lt;b<span class="docsep"')
    assert html.count("docsep") == 2 and html.endswith("d")


def test_log_comparison_puts_table_plots_and_report_on_the_parent(three_runs):
    client = mlflow_setup.mlflow_client()
    parent = make_run("cmp", "cmp-parent", params={}, evals=[])
    log_comparison(client, parent, compared(three_runs), title="cmp")
    names = {a.path for a in client.list_artifacts(parent)}
    assert {"comparison.json", "report.html", "plots"} <= names
    plots = {a.path for a in client.list_artifacts(parent, "plots")}
    assert plots == {"plots/val_loss_vs_seconds.png", "plots/val_loss_vs_chars.png"}
    folder = Path(client.download_artifacts(parent, "plots"))
    assert (folder / "val_loss_vs_chars.png").read_bytes().startswith(PNG_MAGIC)
    got = client.get_run(parent)
    table = client.load_table(got.info.experiment_id, "comparison.json", run_ids=[parent])
    assert list(table["run"]) == [
        "cmp-lstm2x64-lr=0.003",
        "cmp-lstm2x64-lr=0.01",
        "cmp-lstm2x64-broken",
    ]
    assert list(table["status"]) == ["FINISHED", "FINISHED", "FAILED"]
    raw = json.loads(Path(client.download_artifacts(parent, "comparison.json")).read_text())
    assert raw["data"][0][raw["columns"].index("params")] == 5000  # an integer, not 5000.0
    got = client.get_run(parent)  # again: the metrics came after
    assert got.data.metrics["best_val_loss"] == 1.9
    assert got.data.tags["charflow.best_run"] == "cmp-lstm2x64-lr=0.003"


def test_charflow_compare_prints_the_table_of_runs_and_of_a_sweep(three_runs, charflow):
    code, out, err = charflow("compare", *three_runs[:2])
    assert code == 0, err
    assert out.splitlines()[0].split()[:3] == ["run", "status", "lr"]
    assert "cmp-lstm2x64-lr=0.01" in out and "broken" not in out
    assert "workflowType=machine_learning" in out.splitlines()[-1]

    # a sweep by name stands for its children, in grid order whatever their start order
    sweep_tags = {"charflow.sweep": "cmp-sweep", "charflow.role": "sweep"}
    parent = make_run("cmp", "cmp-sweep", params={}, evals=[], tags=sweep_tags)
    for index in (1, 0):
        child_tags = {"mlflow.parentRunId": parent, "charflow.child_index": str(index)}
        make_run(
            "cmp",
            f"cmp-child-{index}",
            params={**LSTM, "seed": index},
            evals=[(5, 3.0 - index, 1.0, 100)],
            tags=child_tags,
        )
    code, out, err = charflow("compare", "cmp-sweep")
    assert code == 0, err
    rows = out.splitlines()[1:3]
    assert [r.split()[0] for r in rows] == ["cmp-child-0", "cmp-child-1"]
    assert out.splitlines()[0].split()[:3] == ["run", "status", "seed"]
    code_by_id, out_by_id, _ = charflow("compare", parent)  # the parent's id: the same
    assert code_by_id == 0 and out_by_id.splitlines()[:3] == out.splitlines()[:3]


def test_charflow_compare_refuses_what_it_cannot_find(store, charflow):
    code, out, err = charflow("compare", "no-such-sweep")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        f"charflow: error: 'no-such-sweep' is neither a sweep name nor a run id in "
        f"sqlite:///{store / 'mlflow.db'}"
    ]
    with pytest.raises(TrainingError, match="no runs to compare"):
        compare_runs(mlflow_setup.mlflow_client(), [])
    assert find_runs(mlflow_setup.mlflow_client(), []) == []


def test_links_open_the_model_training_view(monkeypatch):
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    server = "http://tracking.example:5000"
    run = mlflow_setup.ui_run_url("3", "abc", server)
    assert run == f"{server}/#/experiments/3/runs/abc?workflowType=machine_learning"
    compare = mlflow_setup.ui_compare_url(["3", "3", "4"], ["a", "b"], server)
    base, _, fragment = compare.partition("#")
    assert base == f"{server}/"
    route, _, query = fragment.partition("?")
    assert route == "/compare-runs"
    params = {k: v[0] for k, v in parse_qs(query).items()}
    assert json.loads(params["runs"]) == ["a", "b"]
    assert json.loads(params["experiments"]) == ["3", "4"]
    assert params["workflowType"] == "machine_learning"
    assert '"' not in compare and unquote(compare).count('"a"') == 1  # quoted for terminals
    monkeypatch.setenv("MLFLOW_UI_URL", "http://ui.example/")
    assert urlsplit(mlflow_setup.ui_compare_url(["1"], ["x"], server)).netloc == "ui.example"


def test_user_tags_refuse_reserved_and_repeated_keys():
    assert mlflow_names.user_tags(["team=nlp", "goal = baseline"]) == {
        "team": "nlp",
        "goal": "baseline",
    }
    with pytest.raises(TrainingError, match=r"tag 'mlflow.parentRunId' is reserved"):
        mlflow_names.user_tags(["mlflow.parentRunId=abc"])
    with pytest.raises(TrainingError, match="team is given twice"):
        mlflow_names.user_tags(["team=a", "team=b"])
    with pytest.raises(TrainingError, match="not of the form key=value"):
        mlflow_names.user_tags(["team"])

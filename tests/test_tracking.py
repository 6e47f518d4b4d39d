"""MLflow tracking against real stores: a SQLite file in a temporary folder, and a real
`mlflow server` process on a loopback port for the http:// path."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import torch
from mlflow import MlflowClient

from training import mlflow_setup, pyfunc, registry
from training.errors import TrainingError
from training.registration import register_model
from training.tracking import RunTracker

DIGEST = "3f" * 32  # a sha256 hex digest


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One SQLite store for the module (creating one runs MLflow's migrations: seconds);
    tests keep apart by using their own corpus names."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield root


def make_checkpoint(path: Path, seed: int) -> Path:
    """A small real checkpoint: a dict of tensors and plain values."""
    gen = torch.Generator().manual_seed(seed)
    torch.save({"model": {"w": torch.randn(4, 3, generator=gen)}, "vocab": ["a", "b"]}, path)
    return path


def client() -> MlflowClient:
    return MlflowClient(mlflow_setup.configure_mlflow())


def test_default_uri_honours_charflow_home_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CHARFLOW_HOME", str(tmp_path / "home"))
    assert mlflow_setup.default_tracking_uri() == f"sqlite:///{tmp_path}/home/mlruns/mlflow.db"

    monkeypatch.delenv("CHARFLOW_HOME")
    monkeypatch.chdir(tmp_path)
    assert mlflow_setup.default_tracking_uri() == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert mlflow_setup.configure_mlflow() == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns").is_dir()
    # MLflow exports the URIs it is given; a later CHARFLOW_HOME must still win.
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    monkeypatch.setenv("CHARFLOW_HOME", str(tmp_path / "other"))
    assert mlflow_setup.configure_mlflow() == f"sqlite:///{tmp_path}/other/mlruns/mlflow.db"
    assert MlflowClient().tracking_uri == f"sqlite:///{tmp_path}/other/mlruns/mlflow.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert mlflow_setup.default_tracking_uri() == "http://127.0.0.1:5999"

    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    run_page = "http://127.0.0.1:5999/#/experiments/3/runs/abc"
    assert mlflow_setup.ui_run_url("3", "abc").startswith(run_page)  # a view query may follow
    local = f"sqlite:///{tmp_path}/mlflow.db"
    assert mlflow_setup.ui_run_url("3", "abc", local).startswith("http://127.0.0.1:5000/#/")
    monkeypatch.setenv("MLFLOW_UI_URL", "http://ui.example:8080/")
    ui_page = "http://ui.example:8080/#/experiments/3/runs/abc"
    assert mlflow_setup.ui_run_url("3", "abc").startswith(ui_page)


def test_run_logs_params_metrics_samples_dataset_and_curve(store, tmp_path):
    source = tmp_path / "corpus"
    source.mkdir()
    history = []
    with RunTracker("shakes", run_name="first", tags={"preset": "tiny"}) as run:
        run.log_params({"model": "lstm", "hidden_size": 32, "max_seconds": None})
        run.log_dataset(
            name="shakes",
            digest=DIGEST,
            source=str(source),
            num_chars=1000,
            vocab_size=40,
            num_documents=3,
        )
        for step in range(1, 31):
            run.log_metrics({"train_loss": 4.0 - step / 10, "lr": 1e-3}, step)
            if step % 10 == 0:
                val = 4.2 - step / 10
                run.log_metrics({"val_loss": val, "val_bpc": val / 0.6931471805599453}, step)
                run.log_sample(step, f"sample at {step}: ROMEO 羅密歐")
            history.append({"step": step, "train_loss": 4.0 - step / 10})
            history[-1]["val_loss"] = 4.2 - step / 10 if step % 10 == 0 else None
        run.log_loss_curve(history)
        run.log_metrics({"test_loss": 1.3}, 30)
        assert f"/#/experiments/{run.experiment_id}/runs/{run.run_id}" in run.run_url()

    c = client()
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "first"
    assert got.data.tags["corpus"] == "shakes" and got.data.tags["preset"] == "tiny"
    assert got.data.params == {"model": "lstm", "hidden_size": "32", "max_seconds": "None"}
    assert c.get_experiment(run.experiment_id).name == "charflow/shakes"

    train = c.get_metric_history(run.run_id, "train_loss")
    assert [m.step for m in sorted(train, key=lambda m: m.step)] == list(range(1, 31))
    assert {m.step: m.value for m in train}[20] == pytest.approx(2.0)
    assert [m.step for m in c.get_metric_history(run.run_id, "val_loss")] == [10, 20, 30]
    assert got.data.metrics["test_loss"] == pytest.approx(1.3)

    samples = [f.path for f in c.list_artifacts(run.run_id, "samples")]
    assert samples == [f"samples/step_{s:06d}.txt" for s in (10, 20, 30)]
    text = Path(c.download_artifacts(run.run_id, "samples/step_000020.txt", str(tmp_path)))
    assert text.read_text(encoding="utf-8") == "sample at 20: ROMEO 羅密歐"

    png = Path(c.download_artifacts(run.run_id, "plots/loss_curve.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (inp,) = got.inputs.dataset_inputs
    assert inp.dataset.name == "shakes"
    assert inp.dataset.digest == DIGEST[:16]
    assert str(source) in inp.dataset.source
    assert f'"sha256": "{DIGEST}"' in inp.dataset.profile
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "train"

    # Artifacts sit beside the SQLite file, not in ./mlartifacts of whatever the cwd was.
    assert got.info.artifact_uri.startswith((store / "artifacts" / "shakes").as_uri())
    assert (store / "artifacts" / "shakes" / run.run_id / "artifacts" / "plots").is_dir()


def test_failure_inside_the_run_marks_it_failed(store):
    with pytest.raises(RuntimeError, match="boom"), RunTracker("failing") as run:
        run.log_metrics({"train_loss": 3.0}, 1)
        raise RuntimeError("boom")
    got = client().get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["failure"] == "RuntimeError: boom"
    assert got.data.metrics["train_loss"] == 3.0  # buffered metrics still reach the store


def test_champion_moves_only_on_strict_improvement(store, tmp_path):
    assert registry.get_champion("champs") is None
    results = []
    for i, val_loss in enumerate([2.0, 2.5, 1.5], start=1):
        ckpt = make_checkpoint(tmp_path / f"best{i}.pt", seed=i)
        with RunTracker("champs", run_name=f"r{i}") as run:
            results.append(
                (run.run_id, register_model(run, ckpt, val_loss=val_loss, corpus_digest=DIGEST))
            )

    (r1, m1), (r2, m2), (r3, m3) = results
    assert (m1.version, m1.is_champion) == ("1", True)
    assert (m2.version, m2.is_champion) == ("2", False)
    assert "does not beat champion v1 (2.0000)" in m2.reason
    assert (m3.version, m3.is_champion) == ("3", True)
    assert "beats champion v1" in m3.reason
    assert m3.model_uri == "models:/charflow-champs/3"

    c = client()
    for run_id, result in results:
        assert c.get_run(run_id).data.tags["champion_decision"] == result.reason
    v2 = c.get_model_version("charflow-champs", "2")
    assert {k: v2.tags[k] for k in ("val_loss", "corpus_digest")} == {
        "val_loss": "2.5",
        "corpus_digest": DIGEST,
    }
    assert v2.run_id == r2

    champ = registry.get_champion("champs")
    assert champ == registry.Champion(version="3", run_id=r3, val_loss=1.5, corpus_digest=DIGEST)

    # An equal loss is no improvement.
    with RunTracker("champs") as run:
        tie = register_model(run, tmp_path / "best3.pt", val_loss=1.5, corpus_digest=DIGEST)
    assert not tie.is_champion and registry.get_champion("champs").version == "3"


def test_a_non_finite_val_loss_is_never_champion(store, tmp_path):
    ckpt = make_checkpoint(tmp_path / "best.pt", seed=5)
    with RunTracker("diverged") as run:
        nan = register_model(run, ckpt, val_loss=float("nan"), corpus_digest=DIGEST)
    assert (nan.version, nan.is_champion) == ("1", False)
    assert nan.reason == "val_loss nan is not finite"
    assert registry.get_champion("diverged") is None  # registered, but no alias yet
    with RunTracker("diverged") as run:
        assert register_model(run, ckpt, val_loss=3.0, corpus_digest=DIGEST).is_champion
    assert registry.get_champion("diverged").version == "2"


def test_download_checkpoint_round_trip(store, tmp_path):
    ckpt = make_checkpoint(tmp_path / "best.pt", seed=7)
    with RunTracker("roundtrip") as run:
        register_model(run, ckpt, val_loss=1.9, corpus_digest=DIGEST)
    want = torch.load(ckpt, weights_only=True)
    for uri in (
        "models:/charflow-roundtrip@champion",
        "models:/charflow-roundtrip/1",
        f"runs:/{run.run_id}/model",
    ):
        path = pyfunc.download_checkpoint(uri, tmp_path / "dl" / str(abs(hash(uri))))
        got = torch.load(path, weights_only=True)
        assert torch.equal(got["model"]["w"], want["model"]["w"]) and got["vocab"] == ["a", "b"]

    with pytest.raises(TrainingError, match="cannot load MLflow model models:/charflow-nope/1"):
        pyfunc.download_checkpoint("models:/charflow-nope/1", tmp_path / "nope")


def test_pyfunc_model_samples_like_the_checkpoint(store, tmp_path):
    import mlflow.pyfunc

    from training.checkpoint import build_model, save_checkpoint
    from training.config import build_config
    from training.sample import sample_texts

    cfg = build_config("tiny")
    vocab = list("\nabcdefgh 三国")
    torch.manual_seed(0)
    model = build_model(cfg, len(vocab))
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_params(), "vocab": vocab})
    with RunTracker("pyfunc") as run:
        register_model(run, ckpt, val_loss=2.0, corpus_digest=DIGEST)

    loaded = mlflow.pyfunc.load_model("models:/charflow-pyfunc@champion")
    params = {"length": 40, "temperature": 0.9, "top_k": 5, "seed": 11}
    texts = loaded.predict(["ab", "三国"], params=params)
    want = sample_texts(ckpt, ["ab", "三国"], length=40, temperature=0.9, top_k=5, seed=11)
    assert texts == want
    assert texts[1].startswith("三国") and len(texts[1]) == 2 + 40
    assert loaded.predict("ab", params=params) == texts[:1]
    assert len(loaded.predict(["a"])[0]) == 1 + 200  # the signature's default length


def test_models_logged_before_the_pyfunc_module_split_still_load():
    """A pyfunc model pickles its class by name; older models name training.tracking."""
    import pickle

    old = pickle.loads(b"ctraining.tracking\nCharflowModel\n.")
    assert old is pyfunc.CharflowModel
    with pytest.raises(AttributeError, match="'log_model'"):
        pickle.loads(b"ctraining.tracking\nlog_model\n.")


def test_resume_continues_the_same_run(store):
    """Issue 15, defect 11: a resume that changes a setting logs the value it ran with, as
    param `resume.<n>.<key>` of segment n (params are write-once: `max_steps` keeps the
    first segment's value); a step the run already has is not logged again."""
    dataset = dict(name="resumed", digest=DIGEST, source="x.txt", num_chars=9, vocab_size=3)
    with RunTracker("resumed") as first:
        first.log_params({"max_steps": 10, "lr": 0.01, "max_seconds": None})
        first.log_dataset(**dataset, num_documents=None)
        first.log_metrics({"train_loss": 3.0}, 10)
    with RunTracker("resumed", run_id=first.run_id) as again:
        again.log_params({"max_steps": 20, "lr": 0.01, "max_seconds": 60.0, "seed": 1})
        again.log_dataset(**dataset, num_documents=None)
        again.log_metrics({"train_loss": 2.5}, 10)  # re-run after the checkpoint: kept once
        again.log_metrics({"train_loss": 2.0}, 20)
    with RunTracker("resumed", run_id=first.run_id) as third:
        third.log_params({"max_steps": 30, "lr": 0.01, "max_seconds": None, "seed": 1})
        third.log_metrics({"train_loss": 1.5}, 30)
    got = client().get_run(first.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {
        "max_steps": "10",
        "lr": "0.01",
        "max_seconds": "None",
        "seed": "1",
        "resume.1.max_steps": "20",
        "resume.1.max_seconds": "60.0",
        "resume.2.max_steps": "30",  # max_seconds is back to its first value: nothing to log
    }
    assert got.data.tags["charflow.resumes"] == "2"
    assert got.data.tags["charflow.resume.1"] == "resumed; the run was FINISHED"
    assert len(got.inputs.dataset_inputs) == 1
    history = client().get_metric_history(first.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(10, 3.0), (20, 2.0), (30, 1.5)]

    missing = pytest.raises(TrainingError, match="MLflow run 0123abcd to resume is not in sqlite")
    with missing, RunTracker("resumed", run_id="0123abcd"):
        pass


def test_deleted_experiment_is_a_clear_error(store):
    with RunTracker("gone") as run:
        pass
    client().delete_experiment(run.experiment_id)
    with pytest.raises(TrainingError, match="experiment 'charflow/gone' is deleted"):
        RunTracker("gone")


# -- a real tracking server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` with a SQLite backend that proxies artifacts to a local folder."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # Only the tracking API is needed: no background job runners (GenAI features).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            tail = (root / "server.log").read_text(errors="replace")[-2000:]
            assert proc.poll() is None, f"mlflow server exited:\n{tail}"
            assert time.monotonic() < deadline, f"mlflow server not up in 180 s:\n{tail}"
            time.sleep(0.5)
        yield url, root / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_remote_tracking_server_works_unchanged(mlflow_server, tmp_path, monkeypatch):
    url, artifacts_dir = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    ckpt = make_checkpoint(tmp_path / "best.pt", seed=3)
    with RunTracker("remote", run_name="over-http") as run:
        run.log_params({"model": "gru"})
        run.log_metrics({"train_loss": 2.5, "val_loss": 2.6}, 5)
        run.log_sample(5, "over the wire")
        result = register_model(run, ckpt, val_loss=2.6, corpus_digest=DIGEST)
    assert run.run_url().startswith(f"{url}/#/experiments/")
    assert result.is_champion

    c = MlflowClient(url, url)
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["model"] == "gru"
    assert [m.value for m in c.get_metric_history(run.run_id, "val_loss")] == [2.6]
    # The server chose where artifacts live and proxies them: nothing local was decided here.
    assert got.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [f.path for f in c.list_artifacts(run.run_id, "samples")] == ["samples/step_000005.txt"]
    assert list(artifacts_dir.rglob("step_000005.txt"))
    assert registry.get_champion("remote").version == result.version

    path = pyfunc.download_checkpoint("models:/charflow-remote@champion", tmp_path / "dl")
    want = torch.load(ckpt, weights_only=True)["model"]["w"]
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], want)


# -- the journal (issue 15) ------------------------------------------------------------------


def test_journal_keeps_unacknowledged_records_and_survives_a_torn_line(tmp_path):
    from training.tracking_journal import JOURNAL, Journal, read_pending

    journal = Journal(tmp_path).open()
    for step in range(1, 4):
        journal.append({"run_id": "r", "op": "metrics", "metrics": [["loss", 1.0, 0, step]]})
    journal.ack(2)
    journal.close()  # record 3 is pending: the journal stays
    with open(tmp_path / JOURNAL, "a", encoding="utf-8") as fh:
        fh.write('{"seq": 4, "run_id": "r", "op": "metr')  # the process died mid-write
    pending, last = read_pending(tmp_path / JOURNAL)
    assert [r["seq"] for r in pending] == [3] and last == 3

    again = Journal(tmp_path).open()  # the next writer continues after the last seq
    assert again.append({"run_id": "r", "op": "tags", "tags": {}})["seq"] == 4
    again.ack(4)
    again.close()
    assert not (tmp_path / JOURNAL).exists()  # nothing pending: nothing left behind


def test_a_second_writer_of_a_journal_is_refused_in_one_line(tmp_path):
    from training.tracking_journal import Journal

    first = Journal(tmp_path).open()
    try:
        with pytest.raises(TrainingError, match=f"in use by process {os.getpid()}"):
            Journal(tmp_path).open()
    finally:
        first.close()
    Journal(tmp_path).open().close()  # released with the first


def test_a_record_the_store_refuses_is_dropped_with_one_warning(store, tmp_path):
    notices: list[str] = []
    with RunTracker("refused", journal_dir=tmp_path / "run", notify=notices.append) as run:
        run.log_params({"lr": 0.1})
        run.log_params({"lr": 0.2})  # params are write-once: the store refuses this one
        run.log_metrics({"train_loss": 2.0}, 1)
    got = client().get_run(run.run_id)
    assert got.data.params == {"lr": "0.1"}
    assert got.data.metrics == {"train_loss": 2.0}  # what came after still arrived
    assert got.info.status == "FINISHED"
    assert len(notices) == 1 and "refused a tracking record (params" in notices[0]
    assert not (tmp_path / "run" / "mlflow-pending.jsonl").exists()

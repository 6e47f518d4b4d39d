"""Training and sampling the numpy models; `charflow scratch train` with and without MLflow."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from training.errors import TrainingError
from training.reference import build_model, sample
from training.reference.train import CLIP, ScratchConfig, adagrad_update, fit, train_scratch

REPEATED = "the cat sat on the mat. " * 40


def ids_of(text: str) -> tuple[list[str], np.ndarray]:
    vocab = sorted(set(text))
    return vocab, np.array([vocab.index(ch) for ch in text])


@pytest.mark.parametrize(("kind", "layers"), [("minchar", 1), ("rnn", 2), ("lstm", 1)])
def test_a_few_hundred_steps_on_repetitive_text_reduce_the_loss(kind, layers):
    vocab, data = ids_of(REPEATED)
    model = build_model(kind, len(vocab), 32, layers, seed=0)
    losses = [s.loss for s in fit(model, data, seq_len=25, lr=0.1, steps=300)]
    assert losses[0] == pytest.approx(np.log(len(vocab)), rel=1e-3)  # the uniform guess
    # a 24-char period: the model learns it almost by heart (measured: 0.002 to 0.07 nats/char)
    assert np.mean(losses[-20:]) < 0.1 * losses[0], losses[-20:]


def test_sampling_under_a_seed_is_deterministic():
    vocab, data = ids_of(REPEATED)
    model = build_model("lstm", len(vocab), 16, 2, seed=1, init_scale=0.5)
    state = model.initial_state()
    draws = [sample(model, state, 0, 50, np.random.default_rng(seed)) for seed in (7, 7, 8)]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]
    assert all(0 <= ix < len(vocab) for ix in draws[0])


def test_trained_model_samples_the_repeated_text():
    vocab, data = ids_of(REPEATED)
    model = build_model("rnn", len(vocab), 32, 1, seed=0)
    *_, step = fit(model, data, seq_len=25, lr=0.1, steps=400)
    text = "".join(
        vocab[i] for i in sample(model, step.state, step.next_ix, 60, np.random.default_rng(0))
    )
    assert "the" in text and "mat" in text, text


def test_adagrad_clips_each_gradient_entry():
    params = {"w": np.zeros(2)}
    mem = {"w": np.zeros(2)}
    adagrad_update(params, {"w": np.array([1e3, -1e3])}, mem, lr=0.1)
    np.testing.assert_allclose(mem["w"], [CLIP**2, CLIP**2])  # clipped before it is squared
    np.testing.assert_allclose(params["w"], [-0.1, 0.1], rtol=1e-6)  # first step: lr * sign


def test_fit_rejects_text_shorter_than_a_step():
    model = build_model("rnn", 3, 4)
    with pytest.raises(TrainingError, match="need at least seq_len"):
        next(fit(model, np.array([0, 1, 2]), seq_len=25, lr=0.1, steps=1))


def test_bad_settings_are_one_line_errors():
    bad = dict(model="gru", seq_len=0, lr=-1.0, sample_every=-1)
    for cfg in (ScratchConfig(**{k: v}) for k, v in bad.items()):
        with pytest.raises(TrainingError):
            cfg.validate()


@pytest.fixture
def text_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARFLOW_HOME", str(tmp_path))  # the encoded-ids cache and mlruns/
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "repeat.txt"
    path.write_text(REPEATED * 3, encoding="utf-8")
    return path


def test_cli_scratch_train_without_tracking(text_file):
    from flows.cli import app

    args = ["scratch", "train", "--text", str(text_file), "--model", "lstm", "--layers", "2"]
    args += ["--hidden", "16", "--steps", "60", "--sample-every", "30", "--no-track"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("smooth loss") == 2
    assert "step 60/60" in result.output and "val " in result.output
    assert not (text_file.parent / "mlruns").exists()


def test_cli_scratch_train_rejects_an_unknown_model(text_file):
    from flows.cli import app

    result = CliRunner().invoke(
        app, ["scratch", "train", "--text", str(text_file), "--model", "gru"]
    )
    assert result.exit_code != 0
    assert "unknown model 'gru'" in str(result.exception)


def test_tracked_run_uses_the_trainers_names(text_file, capsys):
    from mlflow import MlflowClient

    from training.mlflow_names import METRICS, experiment_name
    from training.mlflow_setup import configure_mlflow

    cfg = ScratchConfig(
        model="rnn",
        hidden_size=16,
        num_layers=2,
        max_steps=120,
        sample_every=60,
        log_every=20,
        eval_every=60,
        sample_chars=30,
    )
    result = train_scratch(cfg, text_file, corpus="repeat-test", track=True, progress=False)
    assert "smooth loss" in capsys.readouterr().out

    client = MlflowClient(configure_mlflow())
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert (
        run.info.experiment_id
        == client.get_experiment_by_name(experiment_name("repeat-test")).experiment_id
    )
    assert run.data.tags["implementation"] == "numpy-reference"
    params = run.data.params
    assert params["implementation"] == "numpy-reference"
    expected = {
        "model": "rnn",
        "hidden_size": "16",
        "num_layers": "2",
        "seq_len": "25",
        "lr": "0.1",
    }
    assert {k: params[k] for k in expected} == expected
    assert params["corpus"] == "repeat-test" and len(params["corpus_digest"]) == 64
    assert params["code_version"]
    assert set(run.data.metrics) <= set(METRICS)
    assert {"train_loss", "val_loss", "test_loss"} <= set(run.data.metrics)
    history = client.get_metric_history(result.run_id, "train_loss")
    assert [m.step for m in history] == [20, 40, 60, 80, 100, 120]
    assert history[-1].value < history[0].value
    samples = [a.path for a in client.list_artifacts(result.run_id, "samples")]
    assert samples == ["samples/step_000060.txt", "samples/step_000120.txt"]
    assert client.search_registered_models() == []  # a scratch run registers no model

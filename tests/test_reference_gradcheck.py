"""The numpy reference models' backward passes against finite differences."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from training.reference import MinCharRNN, build_model, gradcheck, lstm, rnn
from training.reference.gradcheck import (
    CHECK_HIDDEN,
    CHECK_MODELS,
    THRESHOLD,
    check_gradients,
    check_inputs,
    random_state,
    randomize,
    rel_error,
)


def checked(kind: str, layers: int, hidden: int = CHECK_HIDDEN, **kw) -> dict[str, float]:
    vocab, inputs, targets = check_inputs()
    model = build_model(kind, len(vocab), hidden, layers)
    randomize(model)
    return check_gradients(model, inputs, targets, random_state(model), **kw)


@pytest.mark.parametrize(("kind", "layers"), CHECK_MODELS)
def test_every_parameter_matches_finite_differences(kind, layers):
    errors = checked(kind, layers)
    model = build_model(kind, 3, 2, layers)
    assert set(errors) == set(model.params)  # every parameter was checked
    assert max(errors.values()) < THRESHOLD, errors


def test_sampled_entries_of_larger_shapes_pass():
    errors = checked("lstm", 2, hidden=24, max_entries=8)
    assert max(errors.values()) < THRESHOLD, errors


def flipped_dtanh(y, dy):
    return (1.0 + y * y) * dy  # sign error inside tanh's derivative


def flipped_dsigmoid(y, dy):
    return -y * (1.0 - y) * dy


@pytest.mark.parametrize(
    ("module", "helper", "broken", "kind", "layers"),
    [
        (rnn, "dtanh", flipped_dtanh, "rnn", 2),
        (lstm, "dsigmoid", flipped_dsigmoid, "lstm", 1),
        (lstm, "dtanh", flipped_dtanh, "lstm", 2),
    ],
)
def test_a_broken_backward_is_caught(monkeypatch, module, helper, broken, kind, layers):
    monkeypatch.setattr(module, helper, broken)
    errors = checked(kind, layers)
    assert max(errors.values()) > 1e-2, errors
    # the head's gradients do not pass through the broken line, so they still agree
    assert errors["Why"] < THRESHOLD and errors["by"] < THRESHOLD


def test_one_layer_rnn_is_min_char_rnn():
    """Two independent derivations (Karpathy's line-by-line loop, the vectorised layer)."""
    vocab, inputs, targets = check_inputs()
    mc = MinCharRNN(len(vocab), 7, seed=3, init_scale=0.5)
    rn = build_model("rnn", len(vocab), 7, 1)
    rn_name = {"Wxh": "Wxh1", "Whh": "Whh1", "bh": "bh1", "Why": "Why", "by": "by"}
    for name, p in mc.params.items():
        rn.params[rn_name[name]][...] = p.reshape(rn.params[rn_name[name]].shape)
    h0 = np.tanh(np.random.default_rng(0).standard_normal(7))
    loss_mc, grads_mc, h_mc = mc.loss(inputs, targets, h0[:, None])
    loss_rn, grads_rn, h_rn = rn.loss(inputs, targets, [h0])
    assert loss_mc == pytest.approx(loss_rn, rel=1e-12)
    np.testing.assert_allclose(h_mc.ravel(), h_rn[0], rtol=1e-12)
    for name, g in grads_mc.items():
        np.testing.assert_allclose(
            g.ravel(), grads_rn[rn_name[name]].ravel(), rtol=1e-10, atol=1e-14
        )


def test_relative_error_of_two_zeros_is_zero():
    assert rel_error(0.0, 0.0) == 0.0
    assert rel_error(1.0, 1.0 + 1e-9) == pytest.approx(1e-9, rel=1e-3)


def test_cli_gradcheck_prints_the_table_and_exits_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "gradcheck"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["check", "model", "parameter", "max", "rel", "error", "result"]
    for kind, layers in CHECK_MODELS:
        name = "minchar" if kind == "minchar" else f"{kind}-{layers}"
        assert any(line.split()[1] == name for line in lines[2:] if line.startswith("finite")), name
    assert any("lstm-2 zh" in line and "rnn.weight_hh_l1" in line for line in lines)
    assert "FAIL" not in proc.stdout
    assert lines[-1].endswith("checks passed")


def test_cli_gradcheck_exits_nonzero_on_a_failure(monkeypatch):
    from flows.cli import app

    monkeypatch.setattr(rnn, "dtanh", flipped_dtanh)
    monkeypatch.setattr(gradcheck, "CHECK_MODELS", (("minchar", 1), ("rnn", 2)))  # keep it quick
    result = CliRunner().invoke(app, ["gradcheck", "--no-torch"])
    assert result.exit_code == 1
    failed = [line.split() for line in result.output.splitlines() if line.endswith("FAIL")]
    assert failed and {row[1] for row in failed} == {"rnn-2"}  # minchar has its own backward

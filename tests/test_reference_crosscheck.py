"""The trainer's PyTorch CharModel against the numpy reference: same weights, same numbers."""

from __future__ import annotations

import pytest
import torch

from training.reference import build_model
from training.reference.crosscheck import (
    CROSSCHECK_MODELS,
    GRAD_TOLERANCE,
    LOSS_TOLERANCE,
    compare,
    crosscheck,
    random_state,
    randomize,
    to_torch,
)


def english(corpora) -> str:
    return (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="ascii")[:60]


def chinese(corpora) -> str:
    novel = (corpora / "sanguo" / "三国演义.txt").read_bytes().decode("gbk")
    start = novel.index("话说天下大势")
    return novel[start : start + 60]


SNIPPETS = {"en": english, "zh": chinese}


def setup(kind: str, layers: int, text: str, hidden: int = 6):
    vocab = sorted(set(text))
    ids = [vocab.index(ch) for ch in text]
    model = build_model(kind, len(vocab), hidden, layers)
    randomize(model, seed=5)
    return model, ids[:-1], ids[1:], random_state(model, seed=6)


def assert_agrees(errors: dict[str, float]) -> None:
    assert errors["loss"] < LOSS_TOLERANCE, errors
    assert errors["state"] < LOSS_TOLERANCE, errors
    grads = {k: v for k, v in errors.items() if k not in ("loss", "state")}
    assert max(grads.values()) < GRAD_TOLERANCE, grads


@pytest.mark.parametrize("lang", SNIPPETS)
@pytest.mark.parametrize(("kind", "layers"), CROSSCHECK_MODELS)
def test_torch_and_numpy_agree(kind, layers, lang, corpora_dir):
    text = SNIPPETS[lang](corpora_dir)
    if lang == "zh":
        assert len(set(text)) > 30  # a real Chinese passage, many distinct characters
    model, inputs, targets, state = setup(kind, layers, text)
    net = to_torch(model)
    errors = compare(model, net, inputs, targets, state)
    # every trainable tensor of the trainer's model is compared, plus loss and final state
    assert set(errors) == {"loss", "state"} | {name for name, _ in net.named_parameters()}
    assert_agrees(errors)


def test_the_sum_convention_is_the_trainers_mean_times_length(corpora_dir):
    model, inputs, targets, state = setup("lstm", 1, english(corpora_dir))
    net = to_torch(model)
    logits, _ = net(torch.tensor([inputs]))
    mean = torch.nn.functional.cross_entropy(logits[0], torch.tensor(targets))
    loss, _, _ = model.forward(inputs, targets, model.initial_state())
    assert loss == pytest.approx(mean.item() * len(inputs), rel=1e-12)


@pytest.mark.parametrize(
    ("kind", "tensor"),
    [("rnn", "rnn.weight_hh_l1"), ("lstm", "rnn.weight_ih_l0"), ("lstm", "head.bias")],
)
def test_a_change_to_the_torch_math_is_caught(kind, tensor, corpora_dir):
    model, inputs, targets, state = setup(kind, 2, english(corpora_dir))
    net = to_torch(model)
    with torch.no_grad():
        net.get_parameter(tensor)[0] += 1e-4  # first row (first entry of a bias)
    errors = compare(model, net, inputs, targets, state)
    assert errors["loss"] > LOSS_TOLERANCE
    assert max(v for k, v in errors.items() if k not in ("loss", "state")) > GRAD_TOLERANCE


def test_the_lstm_gate_order_matters(corpora_dir):
    """Copying numpy's i, f, o, g blocks without reordering to PyTorch's i, f, g, o fails."""
    model, inputs, targets, state = setup("lstm", 1, chinese(corpora_dir))
    errors = compare(model, to_torch(model, gates="ifog"), inputs, targets, state)
    assert errors["loss"] > 1e-3


def test_dropout_in_training_mode_would_be_caught(corpora_dir):
    """The check runs the model in eval mode; the same weights with dropout active differ."""
    model, inputs, targets, state = setup("rnn", 2, english(corpora_dir))
    net = to_torch(model)
    net.drop.p = 0.5
    net.train()
    logits, _ = net(torch.tensor([inputs]))
    loss = torch.nn.functional.cross_entropy(logits[0], torch.tensor(targets), reduction="sum")
    numpy_loss = model.forward(inputs, targets, model.initial_state())[0]
    assert abs(loss.item() - numpy_loss) / numpy_loss > LOSS_TOLERANCE


def test_crosscheck_helper_passes_on_builtin_text():
    text = "hello, 你好 world"
    assert_agrees(crosscheck(build_model("lstm", len(set(text)), 4, 2), text))

"""Cross-check: the numpy reference models against the trainer's PyTorch CharModel.

Same weights, same sequence, float64: the loss must agree to 1e-9 relative and every
parameter's gradient to 1e-6. The weight mapping, numpy layer l = 1..N <-> PyTorch layer
k = l - 1 (CharModel with emb_size = vocab_size, dropout 0):

    embedding.weight    = I (V x V)   numpy feeds one-hot chars; an identity embedding is that
    rnn.weight_ih_l{k}  = Wxh{l}      lstm: Wx{l}, gate blocks reordered (see below)
    rnn.weight_hh_l{k}  = Whh{l}      lstm: Wh{l}, reordered
    rnn.bias_ih_l{k}    = bh{l}       lstm: b{l}, reordered
    rnn.bias_hh_l{k}    = 0           PyTorch has two biases; only their sum enters the math
    head.weight         = Why
    head.bias           = by

LSTM gate blocks: numpy stacks i, f, o, g (Karpathy's IFOG); PyTorch stacks i, f, g, o.
Gradients map the same way, with two additions: grad bias_ih == grad bias_hh == dbh (a sum's
two terms get the same gradient), and grad embedding.weight = dWxh1^T Wxh1 (with one-hot
input, column v of dWxh1 sums the pre-activation gradients at the steps that read char v,
and the embedding row v receives Wxh1^T times that same sum).

Loss convention: numpy sums -log p over the time steps (min-char-rnn); the torch side uses
F.cross_entropy(..., reduction="sum"). The trainer reports the mean, i.e. this sum / T.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training.models import CharModel
from training.reference import build_model
from training.reference.gradcheck import CheckRow, random_state, randomize, rel_error

NUMPY_GATES = "ifog"
TORCH_GATES = "ifgo"
LOSS_TOLERANCE = 1e-9
GRAD_TOLERANCE = 1e-6
ENGLISH = "First Citizen:\nBefore we proceed any further, hear me speak."
CHINESE = "滚滚长江东逝水，浪花淘尽英雄。是非成败转头空：青山依旧在，几度夕阳红。"
CROSSCHECK_MODELS = (("rnn", 1), ("rnn", 2), ("lstm", 1), ("lstm", 2))


def reorder_gates(a: np.ndarray, hidden_size: int, gates: str = TORCH_GATES) -> np.ndarray:
    """Stack the 4 gate blocks (rows) of a numpy LSTM array in the order `gates`."""
    blocks = a.reshape(4, hidden_size, *a.shape[1:])
    return blocks[[NUMPY_GATES.index(g) for g in gates]].reshape(a.shape)


def torch_layout(model, arrays: dict[str, np.ndarray], gates: str = TORCH_GATES) -> dict:
    """numpy names -> CharModel parameter names. Applies to gradients as well as weights
    (the caller zeroes bias_hh for weights; see the module docstring)."""
    H = model.hidden_size
    out = {
        "embedding.weight": arrays["Wxh1" if model.kind == "rnn" else "Wx1"],
        "head.weight": arrays["Why"],
        "head.bias": arrays["by"],
    }
    for layer in range(1, model.num_layers + 1):
        Wx, Wh, b = (arrays[f"{name}{layer}"] for name in model.layer_names)
        if model.kind == "lstm":
            Wx, Wh, b = (reorder_gates(a, H, gates) for a in (Wx, Wh, b))
        k = layer - 1
        out[f"rnn.weight_ih_l{k}"] = Wx
        out[f"rnn.weight_hh_l{k}"] = Wh
        out[f"rnn.bias_ih_l{k}"] = b
        out[f"rnn.bias_hh_l{k}"] = b
    return out


def to_torch(model, gates: str = TORCH_GATES) -> CharModel:
    """A float64 CharModel computing exactly what `model` computes."""
    net = CharModel(
        model.vocab_size,
        model.kind,
        emb_size=model.vocab_size,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        dropout=0.0,
    ).double()
    weights = torch_layout(model, model.params, gates)
    weights["embedding.weight"] = np.eye(model.vocab_size)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.zeros_like(p) if ".bias_hh_" in name else torch.from_numpy(weights[name]))
    return net


def expected_torch_grads(model, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    expected = torch_layout(model, grads)
    Wx1 = model.params["Wxh1" if model.kind == "rnn" else "Wx1"]
    expected["embedding.weight"] = expected["embedding.weight"].T @ Wx1
    return expected


def stack_state(model, state) -> list[np.ndarray]:
    """numpy per-layer state -> [h (N, H)] for rnn, [h (N, H), c (N, H)] for lstm."""
    if model.kind == "lstm":
        return [np.stack([s[j] for s in state]) for j in (0, 1)]
    return [np.stack(state)]


def state_to_torch(model, state):
    """-> PyTorch's (num_layers, batch=1, H) state: h, or (h, c) for the LSTM."""
    h_c = tuple(torch.from_numpy(a)[:, None] for a in stack_state(model, state))
    return h_c if model.kind == "lstm" else h_c[0]


def compare(model, net: CharModel, inputs, targets, state) -> dict[str, float]:
    """Max relative error, numpy vs torch, of the loss, the final state and each gradient."""
    net.eval()
    net.zero_grad()
    logits, last = net(torch.tensor([inputs]), state_to_torch(model, state))
    torch_loss = F.cross_entropy(logits[0], torch.tensor(targets), reduction="sum")
    torch_loss.backward()
    loss, grads, np_last = model.loss(inputs, targets, state)
    torch_last = last if model.kind == "lstm" else (last,)
    state_errors = [
        rel_error(a, t[:, 0].detach().numpy()).max()
        for a, t in zip(stack_state(model, np_last), torch_last, strict=True)
    ]
    errors = {
        "loss": float(rel_error(loss, torch_loss.item())),
        "state": float(max(state_errors)),
    }
    expected = expected_torch_grads(model, grads)
    for name, p in net.named_parameters():
        errors[name] = float(rel_error(expected[name], p.grad.numpy()).max())
    return errors


def crosscheck(model, text: str, vocab: list[str] | None = None, seed: int = 0):
    """Randomised weights and starting state for `model`, then compare() on `text`."""
    vocab = vocab or sorted(set(text))
    ids = [vocab.index(ch) for ch in text]
    randomize(model, seed)
    state = random_state(model, seed + 1)
    return compare(model, to_torch(model), ids[:-1], ids[1:], state)


def crosscheck_rows(hidden_size: int = 8, texts: dict[str, str] | None = None) -> list[CheckRow]:
    texts = texts or {"en": ENGLISH, "zh": CHINESE}
    rows = []
    for lang, text in texts.items():
        for kind, layers in CROSSCHECK_MODELS:
            model = build_model(kind, len(set(text)), hidden_size, layers)
            for name, err in crosscheck(model, text).items():
                tol = LOSS_TOLERANCE if name in ("loss", "state") else GRAD_TOLERANCE
                rows.append(CheckRow("torch", f"{model.name} {lang}", name, err, tol))
    return rows

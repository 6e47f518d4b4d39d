"""Shared pieces of the numpy reference models: softmax cross-entropy head, the stack of
recurrent layers, and sampling. numpy only, float64 throughout.

Every model here has the same small interface, so gradient checks, training and sampling
are written once:

    model.params                             dict name -> array (updated in place)
    model.initial_state()                    zero state
    model.forward(inputs, targets, state)    -> loss, cache, next state
    model.backward(cache)                    -> grads, same keys and shapes as params
    model.loss(inputs, targets, state)       -> loss, grads, next state  (min-char-rnn's lossFun)
    model.probs(ix, state)                   -> p over the vocabulary for the next char, next state

`inputs` and `targets` are lists of char ids; the loss is the SUM over time of -log p(target)
in nats (min-char-rnn's convention); divide by len(inputs) for nats/char.
"""

from __future__ import annotations

import numpy as np


def softmax(ys: np.ndarray) -> np.ndarray:
    """Row-wise; subtracting the max changes nothing mathematically and avoids overflow."""
    e = np.exp(ys - ys.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def one_hot(ixs, vocab_size: int) -> np.ndarray:
    xs = np.zeros((len(ixs), vocab_size))
    xs[np.arange(len(ixs)), ixs] = 1.0
    return xs


def dtanh(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Backward through y = tanh(z), written in terms of the output: dz = (1 - y^2) * dy."""
    return (1.0 - y * y) * dy


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def dsigmoid(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Backward through y = sigmoid(z): dz = y (1 - y) * dy."""
    return y * (1.0 - y) * dy


def head_forward(
    Why: np.ndarray, by: np.ndarray, hs: np.ndarray, targets
) -> tuple[float, np.ndarray]:
    """hs (T, H) -> summed cross-entropy of the targets and the probabilities ps (T, V)."""
    ps = softmax(hs @ Why.T + by)
    loss = -np.log(ps[np.arange(len(targets)), targets]).sum()
    return float(loss), ps


def head_backward(Why: np.ndarray, hs: np.ndarray, ps: np.ndarray, targets):
    """Softmax + cross-entropy: dL/dy = p - onehot(target). Returns dWhy, dby, dhs."""
    dy = ps.copy()
    dy[np.arange(len(targets)), targets] -= 1.0
    return dy.T @ hs, dy.sum(axis=0), dy @ Why


class StackedCharRNN:
    """N recurrent layers under a softmax head.

    Layer 1 reads the one-hot input, layer l reads the hidden states of layer l-1, and the
    head reads the top layer. Parameters are named per layer, 1-based: e.g. Wxh1, Whh1, bh1,
    Wxh2, ... then Why, by. Subclasses supply the layer math as two functions:

        layer_forward(*layer_params, xs (T, D), state) -> hs (T, H), cache, next state
        layer_backward(*layer_params, cache, dhs (T, H)) -> layer grads (tuple), dxs (T, D)
    """

    layer_names: tuple[str, ...] = ()
    kind = ""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 100,
        num_layers: int = 1,
        *,
        seed: int = 0,
        init_scale: float = 0.01,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = {}
        for layer in range(1, num_layers + 1):
            input_size = vocab_size if layer == 1 else hidden_size
            for name, shape in self.layer_shapes(input_size, hidden_size).items():
                # min-char-rnn's init: small Gaussian weights, zero biases.
                self.params[f"{name}{layer}"] = (
                    rng.standard_normal(shape) * init_scale
                    if name.startswith("W")
                    else np.zeros(shape)
                )
        self.params["Why"] = rng.standard_normal((vocab_size, hidden_size)) * init_scale
        self.params["by"] = np.zeros(vocab_size)

    # --- supplied by subclasses -------------------------------------------------------
    def layer_shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def layer_initial_state(self):
        raise NotImplementedError

    # --- the stack -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.kind}-{self.num_layers}"

    def layer_params(self, layer: int) -> list[np.ndarray]:
        return [self.params[f"{name}{layer}"] for name in self.layer_names]

    def initial_state(self) -> list:
        return [self.layer_initial_state() for _ in range(self.num_layers)]

    def run_layers(self, inputs, state):
        xs = one_hot(inputs, self.vocab_size)
        caches, next_state = [], []
        for layer in range(1, self.num_layers + 1):
            xs, cache, s = self.layer_forward(*self.layer_params(layer), xs, state[layer - 1])
            caches.append(cache)
            next_state.append(s)
        return xs, caches, next_state

    def forward(self, inputs, targets, state):
        hs, caches, next_state = self.run_layers(inputs, state)
        loss, ps = head_forward(self.params["Why"], self.params["by"], hs, targets)
        return loss, (caches, hs, ps, targets), next_state

    def backward(self, cache) -> dict[str, np.ndarray]:
        caches, hs, ps, targets = cache
        grads = {}
        grads["Why"], grads["by"], dhs = head_backward(self.params["Why"], hs, ps, targets)
        # Top layer first: each layer's input gradient is the output gradient of the one below.
        for layer in range(self.num_layers, 0, -1):
            layer_grads, dhs = self.layer_backward(
                *self.layer_params(layer), caches[layer - 1], dhs
            )
            for name, g in zip(self.layer_names, layer_grads, strict=True):
                grads[f"{name}{layer}"] = g
        return grads

    def loss(self, inputs, targets, state):
        loss, cache, next_state = self.forward(inputs, targets, state)
        return loss, self.backward(cache), next_state

    def probs(self, ix: int, state):
        hs, _, next_state = self.run_layers([ix], state)
        return softmax(hs[-1] @ self.params["Why"].T + self.params["by"]), next_state


def sample(model, state, seed_ix: int, n: int, rng: np.random.Generator) -> list[int]:
    """n char ids drawn one at a time from the model, starting after `seed_ix`."""
    ixes, ix = [], seed_ix
    for _ in range(n):
        p, state = model.probs(ix, state)
        ix = int(rng.choice(len(p), p=p))
        ixes.append(ix)
    return ixes


def evaluate(model, data, seq_len: int) -> float:
    """Mean loss in nats/char over `data` (ids), fed in chunks with the state carried over."""
    state, total, count = model.initial_state(), 0.0, 0
    for start in range(0, len(data) - 1, seq_len):
        chunk = data[start : start + seq_len + 1]
        loss, _, state = model.forward(chunk[:-1], chunk[1:], state)
        total, count = total + loss, count + len(chunk) - 1
    return total / max(count, 1)

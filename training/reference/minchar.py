"""min-char-rnn: Karpathy's one-layer character RNN, retraced line by line in numpy.

Column vectors, as in the original gist; each line is one equation:

    x_t = onehot(inputs[t])
    h_t = tanh(Wxh x_t + Whh h_{t-1} + bh)
    y_t = Why h_t + by                       unnormalized log-probabilities
    p_t = softmax(y_t)
    loss = sum_t -log p_t[targets[t]]        nats, summed over time (not averaged)

Backward (docs/derivations.md): dy = p - onehot(target); dh = Why^T dy + dhnext;
dhraw = (1 - h^2) * dh; dhnext = Whh^T dhraw. Training (Adagrad, clip at +-5, hidden state
carried across chunks) lives in train.py, shared with the N-layer models; rnn.RNN with
num_layers=1 computes exactly this (tested), vectorised over time where the math allows.
"""

from __future__ import annotations

import numpy as np

PARAM_NAMES = ("Wxh", "Whh", "Why", "bh", "by")


class MinCharRNN:
    kind = "minchar"
    name = "minchar"
    num_layers = 1

    def __init__(self, vocab_size: int, hidden_size: int = 100, *, seed: int = 0, init_scale=0.01):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        rng = np.random.default_rng(seed)
        self.params = {
            "Wxh": rng.standard_normal((hidden_size, vocab_size)) * init_scale,  # input to hidden
            "Whh": rng.standard_normal((hidden_size, hidden_size)) * init_scale,  # hidden to hidden
            "Why": rng.standard_normal((vocab_size, hidden_size)) * init_scale,  # hidden to output
            "bh": np.zeros((hidden_size, 1)),  # hidden bias
            "by": np.zeros((vocab_size, 1)),  # output bias
        }

    def initial_state(self) -> np.ndarray:
        return np.zeros((self.hidden_size, 1))

    def forward(self, inputs, targets, hprev):
        Wxh, Whh, Why, bh, by = (self.params[k] for k in PARAM_NAMES)
        xs, hs, ys, ps = {}, {}, {}, {}
        hs[-1] = np.copy(hprev)
        loss = 0.0
        for t in range(len(inputs)):
            xs[t] = np.zeros((self.vocab_size, 1))  # encode in 1-of-k representation
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)  # hidden state
            ys[t] = np.dot(Why, hs[t]) + by  # unnormalized log probabilities for next chars
            ps[t] = np.exp(ys[t] - np.max(ys[t])) / np.sum(np.exp(ys[t] - np.max(ys[t])))  # softmax
            loss += -np.log(ps[t][targets[t], 0])  # softmax (cross-entropy loss)
        return float(loss), (xs, hs, ps, targets), hs[len(inputs) - 1]

    def backward(self, cache) -> dict[str, np.ndarray]:
        xs, hs, ps, targets = cache
        Wxh, Whh, Why, bh, by = (self.params[k] for k in PARAM_NAMES)
        dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
        dbh, dby = np.zeros_like(bh), np.zeros_like(by)
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(targets))):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1  # backprop into y: dL/dy = p - onehot(target)
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dh = np.dot(Why.T, dy) + dhnext  # backprop into h: from the output and from step t+1
            dhraw = (1 - hs[t] * hs[t]) * dh  # backprop through tanh nonlinearity
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(Whh.T, dhraw)
        return {"Wxh": dWxh, "Whh": dWhh, "Why": dWhy, "bh": dbh, "by": dby}

    def loss(self, inputs, targets, hprev):
        """Karpathy's lossFun: loss, gradients on the parameters, last hidden state."""
        loss, cache, hlast = self.forward(inputs, targets, hprev)
        return loss, self.backward(cache), hlast

    def probs(self, ix: int, h):
        """One step of the sampler: the distribution over the next char, and the new h."""
        Wxh, Whh, Why, bh, by = (self.params[k] for k in PARAM_NAMES)
        x = np.zeros((self.vocab_size, 1))
        x[ix] = 1
        h = np.tanh(np.dot(Wxh, x) + np.dot(Whh, h) + bh)
        y = np.dot(Why, h) + by
        p = np.exp(y - np.max(y)) / np.sum(np.exp(y - np.max(y)))
        return p.ravel(), h

"""N-layer vanilla (tanh) RNN in numpy, with backpropagation through time.

Layer l, at time t, with input x_t (one-hot char for l = 1, layer l-1's h_t above that):

    h_t = tanh(Wxh_l x_t + Whh_l h_{t-1} + bh_l)

The top layer's h_t feeds the softmax head: y_t = Why h_t + by, p_t = softmax(y_t).
Backward equations: docs/derivations.md. PyTorch mapping: training/reference/crosscheck.py.
"""

from __future__ import annotations

import numpy as np

from training.reference.core import StackedCharRNN, dtanh


def rnn_layer_forward(Wxh, Whh, bh, xs, hprev):
    """xs (T, D), hprev (H,) -> hs (T, H), cache, last h."""
    hs = np.empty((len(xs), Whh.shape[0]))
    zxs = xs @ Wxh.T + bh  # the input's share of every step at once; only the recurrence is serial
    h = hprev
    for t in range(len(xs)):
        h = np.tanh(zxs[t] + Whh @ h)
        hs[t] = h
    return hs, (xs, hs, hprev), h


def rnn_layer_backward(Wxh, Whh, bh, cache, dhs):
    """dhs (T, H): loss gradient reaching each h_t from above -> (dWxh, dWhh, dbh), dxs (T, D)."""
    xs, hs, hprev = cache
    dhraws = np.empty_like(hs)  # gradient at the pre-activation Wxh x + Whh h + bh
    dhnext = np.zeros_like(hprev)  # gradient reaching h_t from step t+1
    for t in reversed(range(len(hs))):
        dhraws[t] = dtanh(hs[t], dhs[t] + dhnext)
        dhnext = Whh.T @ dhraws[t]
    hprevs = np.vstack([hprev[None], hs[:-1]])  # h_{t-1} for every t
    dWxh = dhraws.T @ xs
    dWhh = dhraws.T @ hprevs
    dbh = dhraws.sum(axis=0)
    return (dWxh, dWhh, dbh), dhraws @ Wxh


class RNN(StackedCharRNN):
    """Parameters: Wxh{l} (H, D), Whh{l} (H, H), bh{l} (H,) for l = 1..N; Why (V, H), by (V,).
    State: list of h (H,) per layer."""

    kind = "rnn"
    layer_names = ("Wxh", "Whh", "bh")
    layer_forward = staticmethod(rnn_layer_forward)
    layer_backward = staticmethod(rnn_layer_backward)

    def layer_shapes(self, input_size, hidden_size):
        return {
            "Wxh": (hidden_size, input_size),
            "Whh": (hidden_size, hidden_size),
            "bh": (hidden_size,),
        }

    def layer_initial_state(self):
        return np.zeros(self.hidden_size)

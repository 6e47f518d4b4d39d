"""N-layer LSTM in numpy, with backpropagation through time.

Layer l, at time t, with input x_t (one-hot char for l = 1, layer l-1's h_t above that):

    z_t = Wx_l x_t + Wh_l h_{t-1} + b_l          4H pre-activations, gate blocks i, f, o, g
    i = sigmoid(z_i)   input gate               f = sigmoid(z_f)   forget gate
    o = sigmoid(z_o)   output gate              g = tanh(z_g)      candidate
    c_t = f * c_{t-1} + i * g                   h_t = o * tanh(c_t)

The gate blocks are stacked in the order i, f, o, g (Karpathy's lstm.py "IFOG"); PyTorch
stacks i, f, g, o, and crosscheck.py reorders them. Backward equations: docs/derivations.md.
"""

from __future__ import annotations

import numpy as np

from training.reference.core import StackedCharRNN, dsigmoid, dtanh, sigmoid


def lstm_layer_forward(Wx, Wh, b, xs, state):
    """xs (T, D), state (h, c) each (H,) -> hs (T, H), cache, last (h, c)."""
    hprev, cprev = state
    T, H = len(xs), Wh.shape[1]
    hs, cs, gates = np.empty((T, H)), np.empty((T, H)), np.empty((T, 4 * H))
    zxs = xs @ Wx.T + b  # the input's share of every step at once; only the recurrence is serial
    h, c = hprev, cprev
    for t in range(T):
        z = zxs[t] + Wh @ h
        i, f, o = sigmoid(z[: 3 * H]).reshape(3, H)
        g = np.tanh(z[3 * H :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[t], cs[t], gates[t] = h, c, np.concatenate([i, f, o, g])
    return hs, (xs, hs, cs, gates, hprev, cprev), (h, c)


def lstm_layer_backward(Wx, Wh, b, cache, dhs):
    """dhs (T, H): loss gradient reaching each h_t from above -> (dWx, dWh, db), dxs (T, D)."""
    xs, hs, cs, gates, hprev, cprev = cache
    H = Wh.shape[1]
    dzs = np.empty_like(gates)  # gradient at the pre-activations z_t
    dhnext, dcnext = np.zeros(H), np.zeros(H)  # gradients reaching h_t, c_t from step t+1
    for t in reversed(range(len(hs))):
        i, f, o, g = gates[t].reshape(4, H)
        c_prev = cs[t - 1] if t > 0 else cprev
        tanh_c = np.tanh(cs[t])
        dh = dhs[t] + dhnext
        do = dh * tanh_c
        dc = dtanh(tanh_c, dh * o) + dcnext
        di, df, dg = dc * g, dc * c_prev, dc * i
        dzs[t] = np.concatenate([dsigmoid(i, di), dsigmoid(f, df), dsigmoid(o, do), dtanh(g, dg)])
        dcnext = dc * f
        dhnext = Wh.T @ dzs[t]
    hprevs = np.vstack([hprev[None], hs[:-1]])  # h_{t-1} for every t
    dWx = dzs.T @ xs
    dWh = dzs.T @ hprevs
    db = dzs.sum(axis=0)
    return (dWx, dWh, db), dzs @ Wx


class LSTM(StackedCharRNN):
    """Parameters: Wx{l} (4H, D), Wh{l} (4H, H), b{l} (4H,) for l = 1..N, gate blocks i, f, o, g;
    Why (V, H), by (V,). State: list of (h, c) per layer."""

    kind = "lstm"
    layer_names = ("Wx", "Wh", "b")
    layer_forward = staticmethod(lstm_layer_forward)
    layer_backward = staticmethod(lstm_layer_backward)

    def layer_shapes(self, input_size, hidden_size):
        four_h = 4 * hidden_size
        return {"Wx": (four_h, input_size), "Wh": (four_h, hidden_size), "b": (four_h,)}

    def layer_initial_state(self):
        return (np.zeros(self.hidden_size), np.zeros(self.hidden_size))

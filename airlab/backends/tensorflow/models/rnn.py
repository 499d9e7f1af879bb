"""Recurrent sequence classifier (see airlab.specs.rnn.RNNSpec).

    x (B, C, H, W) -> rows (B, T=H, F=C*W)        (or x (B, T, F) as is)
      -> RNN/LSTM/GRU layers (PyTorch's cells) -> final state of the last layer (B, dirs*hidden) -> Dense -> (B, classes)

The recurrent layer is airlab's own (`Recurrent`, layer name `rnn`), not keras.layers.LSTM: it
keeps PyTorch's two bias vectors per gate (b_ih and b_hh, where Keras's LSTM and SimpleRNN keep
their sum) and PyTorch's gate order (LSTM i, f, g, o; GRU r, z, n), so the parameter count and
the function equal the torch model's. Variables per layer l and direction: weight_ih_l{l}
(F, gates*hidden), weight_hh_l{l} (hidden, gates*hidden), bias_ih_l{l}, bias_hh_l{l}, with the
suffix `_reverse` for the backward direction: PyTorch's names, Keras's (in, out) layout.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from airlab.backends.tensorflow.models import AirlabModel, Dropout, dense, uniform
from airlab.specs.base import DataInfo
from airlab.specs.rnn import RNNSpec

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


class Recurrent(keras.layers.Layer):
    """Stacked, optionally bidirectional RNN/LSTM/GRU over (B, T, F) with PyTorch's equations.
    Returns the last layer's final state (B, dirs*hidden): forward at t = T-1, backward at t = 0.
    The input projection of every step is one matmul; the recurrence is a tf.scan over time
    (measured faster than an unrolled loop on CPU, and much quicker to trace)."""

    def __init__(self, cell: str, hidden: int, num_layers: int, bidirectional: bool, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.cell, self.hidden, self.num_layers = cell, hidden, num_layers
        self.dirs = 2 if bidirectional else 1
        self.between = [Dropout(dropout, name=f"dropout_{i}") for i in range(num_layers - 1)]
        bound = 1.0 / math.sqrt(hidden)
        self._inits = [[[uniform(bound) for _ in range(4)] for _ in range(self.dirs)] for _ in range(num_layers)]

    def build(self, input_shape):
        g, h = _GATES[self.cell], self.hidden
        self.params = []
        n_in = int(input_shape[-1])
        for layer in range(self.num_layers):
            per_dir = []
            for d in range(self.dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                inits = self._inits[layer][d]
                per_dir.append((
                    self.add_weight(shape=(n_in, g * h), initializer=inits[0], name=f"weight_ih{sfx}"),
                    self.add_weight(shape=(h, g * h), initializer=inits[1], name=f"weight_hh{sfx}"),
                    self.add_weight(shape=(g * h,), initializer=inits[2], name=f"bias_ih{sfx}"),
                    self.add_weight(shape=(g * h,), initializer=inits[3], name=f"bias_hh{sfx}"),
                ))
            self.params.append(per_dir)
            n_in = self.dirs * h

    def _step(self, xw_t, state, w_hh, b_hh):
        """One time step; state h or (h, c). For the LSTM and the simple RNN, xw_t = x_t W_ih +
        b_ih + b_hh (both biases added once for all steps); for the GRU, x_t W_ih + b_ih."""
        if self.cell == "lstm":
            h, c = state
            gates = xw_t + tf.matmul(h, w_hh)  # (B, 4h)
            i, f, g, o = tf.split(gates, 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            return h, (h, c)
        if self.cell == "gru":
            h = state
            hw = tf.matmul(h, w_hh) + b_hh  # (B, 3h)
            r_i, z_i, n_i = tf.split(xw_t, 3, axis=-1)
            r_h, z_h, n_h = tf.split(hw, 3, axis=-1)
            r = tf.sigmoid(r_i + r_h)
            z = tf.sigmoid(z_i + z_h)
            n = tf.tanh(n_i + r * n_h)
            h = (1 - z) * n + z * h
            return h, h
        h = tf.tanh(xw_t + tf.matmul(state, w_hh))
        return h, h

    def _direction(self, xw, w_hh, b_hh, reverse: bool):
        """Run one direction over xw (B, T, gates*hidden); returns outputs (B, T, hidden), final h."""
        xs = tf.transpose(xw, [1, 0, 2])  # (T, B, gates*hidden)
        if reverse:
            xs = tf.reverse(xs, [0])
        zeros = tf.zeros([tf.shape(xw)[0], self.hidden], xw.dtype)
        init = (zeros, zeros) if self.cell == "lstm" else zeros
        states = tf.scan(lambda state, x_t: self._step(x_t, state, w_hh, b_hh)[1], xs, initializer=init)
        hs = states[0] if self.cell == "lstm" else states  # (T, B, hidden)
        final = hs[-1]
        if reverse:
            hs = tf.reverse(hs, [0])
        return tf.transpose(hs, [1, 0, 2]), final

    def call(self, x, training=False, seed=None):
        finals = None
        for layer, per_dir in enumerate(self.params):
            outputs, finals = [], []
            for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(per_dir):
                xw = tf.einsum("btf,fg->btg", x, w_ih) + b_ih  # (B, T, gates*hidden): all steps at once
                if self.cell != "gru":  # the GRU's b_hn sits inside r * (W_hn h + b_hn)
                    xw = xw + b_hh
                out, final = self._direction(xw, w_hh, b_hh, reverse=bool(d))
                outputs.append(out)  # (B, T, hidden)
                finals.append(final)  # forward: t = T-1; backward: t = 0
            x = tf.concat(outputs, axis=-1) if self.dirs == 2 else outputs[0]  # (B, T, dirs*hidden)
            if layer < self.num_layers - 1:
                x = self.between[layer](x, training=training, seed=seed)
        return tf.concat(finals, axis=-1) if self.dirs == 2 else finals[0]  # (B, dirs*hidden)


class RNNClassifier(AirlabModel):
    def __init__(self, spec: RNNSpec, info: DataInfo, **kwargs):
        super().__init__(name="rnn", **kwargs)
        self.rnn = self.register("rnn", Recurrent(spec.cell, spec.hidden_size, spec.num_layers, spec.bidirectional,
                                                  spec.dropout, name="rnn"))
        dirs = 2 if spec.bidirectional else 1
        self.head = self.register("head", dense(info.num_classes, dirs * spec.hidden_size, "head"))

    def call(self, x, training=False, seed=None):
        if len(x.shape) == 4:
            b, c, h, w = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
            x = tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [b, h, c * w])  # (B, T=H, F=C*W): one row per step
        h = self.rnn(x, training=training, seed=seed)  # (B, dirs*hidden)
        return self.head(h)  # (B, classes)


def build(spec: RNNSpec, info: DataInfo) -> RNNClassifier:
    spec.check_data(info)  # ValueError without num_classes or with input neither (C, H, W) nor (T, F)
    return RNNClassifier(spec, info).build_for(np.zeros((1, *info.input_shape), np.float32))

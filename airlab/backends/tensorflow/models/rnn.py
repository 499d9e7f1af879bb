"""Recurrent sequence classifier (see airlab.specs.rnn.RNNSpec).

    x (B, C, H, W) -> rows (B, T=H, F=C*W)        (or x (B, T, F) as is)
      -> RNN/LSTM/GRU layers (PyTorch's cells) -> final state of the last layer (B, dirs*hidden) -> Dense -> (B, classes)

The recurrent layer is airlab's own (`Recurrent`, layer name `rnn`): it keeps PyTorch's two bias
vectors per gate (b_ih and b_hh, where Keras's LSTM and SimpleRNN keep their sum) and PyTorch's
gate order (LSTM i, f, g, o; GRU r, z, n), so the parameter count, the checkpoints and the
function equal the torch model's. Variables per layer l and direction: weight_ih_l{l}
(F, gates*hidden), weight_hh_l{l} (hidden, gates*hidden), bias_ih_l{l}, bias_hh_l{l}, with the
suffix `_reverse` for the backward direction: PyTorch's names, Keras's (in, out) layout.

It computes what keras.layers.LSTM / SimpleRNN (one bias: b_ih + b_hh, the same function) and
keras.layers.GRU(reset_after=True) (its two biases, gates z, r, n) compute, and runs the loop
they run on a CPU (issue 14: 1.3x the former tf.scan over precomputed input projections;
tests/unit/test_fast_defaults_tf.py pins both equalities). The weights, and so every checkpoint
and conversion, are unchanged; the last bits of the outputs are not (the sums are in another
order), so a checkpoint written before resumes on the same function, not bitwise.
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
    The recurrence is a tf.while_loop over time, as Keras's LSTM/GRU/SimpleRNN run it on a CPU
    (see _direction)."""

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

    def _step(self, x_t, state, w_ih, w_hh, b, b_hh):
        """One time step of PyTorch's cell; state h or (h, c). `b` is the input side's bias: for
        the LSTM and the simple RNN b_ih + b_hh (their sum is the one bias of Keras's LSTM and
        SimpleRNN: the same function), for the GRU b_ih alone (its b_hn sits inside r * (W_hn h +
        b_hn), as Keras's GRU with reset_after=True keeps it)."""
        if self.cell == "lstm":
            h, c = state
            gates = tf.matmul(x_t, w_ih) + tf.matmul(h, w_hh) + b  # (B, 4h): i, f, g, o
            i, f, g, o = tf.split(gates, 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            return h, (h, c)
        if self.cell == "gru":
            h = state
            xw = tf.matmul(x_t, w_ih) + b  # (B, 3h): r, z, n
            hw = tf.matmul(h, w_hh) + b_hh  # (B, 3h)
            r_i, z_i, n_i = tf.split(xw, 3, axis=-1)
            r_h, z_h, n_h = tf.split(hw, 3, axis=-1)
            r = tf.sigmoid(r_i + r_h)
            z = tf.sigmoid(z_i + z_h)
            n = tf.tanh(n_i + r * n_h)
            h = (1 - z) * n + z * h
            return h, h
        h = tf.tanh(tf.matmul(x_t, w_ih) + tf.matmul(state, w_hh) + b)
        return h, h

    def _direction(self, xs, weights, reverse: bool, sequences: bool):
        """Run one direction over xs (T, B, F), time-major; returns (outputs (T, B, hidden) in
        the input's time order, or None without `sequences`; the final h). The loop is the one
        Keras's recurrent layers run on a CPU (a tf.while_loop over a TensorArray of the steps,
        each step's input projection inside it): measured 1.3x faster than a tf.scan over
        precomputed projections, for the same function."""
        w_ih, w_hh, b_ih, b_hh = weights
        b = b_ih if self.cell == "gru" else b_ih + b_hh  # (gates*hidden,)
        if reverse:
            xs = tf.reverse(xs, [0])
        steps = xs.shape[0] if xs.shape[0] is not None else tf.shape(xs)[0]
        zeros = tf.zeros([tf.shape(xs)[1], self.hidden], xs.dtype)
        state = (zeros, zeros) if self.cell == "lstm" else zeros
        inputs = tf.TensorArray(xs.dtype, size=steps, element_shape=xs.shape[1:]).unstack(xs)
        outputs = tf.TensorArray(xs.dtype, size=steps if sequences else 0, dynamic_size=not sequences,
                                 element_shape=tf.TensorShape([None, self.hidden]))

        def body(t, state, outputs):
            h, state = self._step(inputs.read(t), state, w_ih, w_hh, b, b_hh)
            return t + 1, state, (outputs.write(t, h) if sequences else outputs)

        _, state, outputs = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), state, outputs),
                                          parallel_iterations=32, swap_memory=True)
        final = state[0] if self.cell == "lstm" else state  # (B, hidden)
        if not sequences:
            return None, final
        hs = outputs.stack()  # (T, B, hidden)
        return (tf.reverse(hs, [0]) if reverse else hs), final

    def call(self, x, training=False, seed=None):
        xs = tf.transpose(x, [1, 0, 2])  # (T, B, F): time-major
        finals = None
        for layer, per_dir in enumerate(self.params):
            last = layer == self.num_layers - 1
            outputs, finals = [], []
            for d, weights in enumerate(per_dir):
                out, final = self._direction(xs, weights, reverse=bool(d), sequences=not last)
                outputs.append(out)  # (T, B, hidden), or None on the last layer
                finals.append(final)  # forward: t = T-1; backward: t = 0
            if not last:
                xs = tf.concat(outputs, axis=-1) if self.dirs == 2 else outputs[0]  # (T, B, dirs*hidden)
                if training and self.between[layer].rate > 0:  # the mask is drawn batch-major: (B, T, dirs*hidden)
                    xs = tf.transpose(self.between[layer](tf.transpose(xs, [1, 0, 2]), training=training, seed=seed),
                                      [1, 0, 2])
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

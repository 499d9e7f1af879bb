"""TensorFlow's fast defaults (issue 14) compute what they computed before.

- airlab's recurrent layer (the while-loop form Keras's own layers run on a CPU) equals the cell
  formula of PyTorch, step by step in numpy, for lstm, gru and rnn (stacked and bidirectional),
  and equals keras.layers.LSTM / GRU(reset_after=True) / SimpleRNN given the same weights with
  the two biases folded where the math allows (LSTM, SimpleRNN: b_ih + b_hh) and the GRU's gates
  reordered (PyTorch r, z, n; Keras z, r, n).
- The fused optimizer update equals the per-variable rule of airlab.backends.tensorflow.optim.
- env.json's threads.intra_op says where the figure came from.

Everything pinned: fp32, no XLA in the model under test. One TensorFlow import for the module.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import airlab.backends.tensorflow  # noqa: E402,F401  (KERAS_BACKEND=tensorflow)
import keras  # noqa: E402

from airlab.backends.tensorflow.models.rnn import Recurrent  # noqa: E402

B, T, F, H = 3, 5, 4, 6


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _torch_cell(cell, x_t, state, w_ih, w_hh, b_ih, b_hh):
    """PyTorch's documented equations, weights in Keras's (in, out) layout, float64."""
    if cell == "lstm":
        h, c = state
        i, f, g, o = np.split(x_t @ w_ih + b_ih + h @ w_hh + b_hh, 4, axis=-1)
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        h = _sig(o) * np.tanh(c)
        return h, (h, c)
    if cell == "gru":
        h = state
        r_i, z_i, n_i = np.split(x_t @ w_ih + b_ih, 3, axis=-1)
        r_h, z_h, n_h = np.split(h @ w_hh + b_hh, 3, axis=-1)
        r, z = _sig(r_i + r_h), _sig(z_i + z_h)
        n = np.tanh(n_i + r * n_h)
        h = (1 - z) * n + z * h
        return h, h
    h = np.tanh(x_t @ w_ih + b_ih + state @ w_hh + b_hh)
    return h, h


def _reference(layer: Recurrent, x: np.ndarray) -> np.ndarray:
    """The final state of the last layer (B, dirs*H), computed step by step."""
    seq = x.astype(np.float64)
    finals = []
    for per_dir in layer.params:
        outs, finals = [], []
        for d, weights in enumerate(per_dir):
            w_ih, w_hh, b_ih, b_hh = (np.asarray(w.numpy(), np.float64) for w in weights)
            zeros = np.zeros((seq.shape[0], layer.hidden))
            state = (zeros, zeros) if layer.cell == "lstm" else zeros
            hs = [None] * seq.shape[1]
            order = range(seq.shape[1] - 1, -1, -1) if d else range(seq.shape[1])
            for t in order:
                hs[t], state = _torch_cell(layer.cell, seq[:, t], state, w_ih, w_hh, b_ih, b_hh)
            outs.append(np.stack(hs, axis=1))  # (B, T, H)
            finals.append(hs[-1] if d == 0 else hs[0])
        seq = np.concatenate(outs, axis=-1)
    return np.concatenate(finals, axis=-1)


def _layer(cell, num_layers=1, bidirectional=False, seed=0):
    layer = Recurrent(cell, H, num_layers, bidirectional, 0.0)
    x = np.random.default_rng(seed).normal(size=(B, T, F)).astype(np.float32)
    layer(x)  # builds
    rng = np.random.default_rng(seed + 1)
    for per_dir in layer.params:
        for weights in per_dir:
            for w in weights:  # biases far from zero, so that a dropped or doubled bias shows
                w.assign(rng.uniform(-0.6, 0.6, size=w.shape).astype(np.float32))
    return layer, x


@pytest.mark.parametrize("cell,num_layers,bidirectional", [
    ("lstm", 1, False), ("gru", 1, False), ("rnn", 1, False),
    ("lstm", 2, True), ("gru", 2, True), ("rnn", 2, True),
])
def test_recurrent_layer_is_pytorchs_cell_formula(cell, num_layers, bidirectional):
    layer, x = _layer(cell, num_layers, bidirectional)
    got = layer(x).numpy()
    assert got.shape == (B, (2 if bidirectional else 1) * H)
    np.testing.assert_allclose(got, _reference(layer, x), rtol=0, atol=2e-6)
    traced = tf.function(lambda a: layer(a, training=True))(tf.constant(x)).numpy()  # the loop inside a graph
    np.testing.assert_allclose(traced, got, rtol=0, atol=1e-6)


def _keras_twin(layer: Recurrent):
    """keras.layers.LSTM/GRU/SimpleRNN holding the same function's weights."""
    w_ih, w_hh, b_ih, b_hh = (w.numpy() for w in layer.params[0][0])
    if layer.cell == "gru":
        k = keras.layers.GRU(H, reset_after=True)
        k.build((None, T, F))

        def zrn(a):  # PyTorch's r, z, n -> Keras's z, r, n along the last axis
            r, z, n = np.split(a, 3, axis=-1)
            return np.concatenate([z, r, n], axis=-1)

        k.set_weights([zrn(w_ih), zrn(w_hh), np.stack([zrn(b_ih), zrn(b_hh)])])
        return k
    k = keras.layers.LSTM(H) if layer.cell == "lstm" else keras.layers.SimpleRNN(H)
    k.build((None, T, F))
    k.set_weights([w_ih, w_hh, b_ih + b_hh])  # i, f, g, o = Keras's i, f, c, o; one bias: the sum
    return k


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recurrent_layer_equals_keras_layer_with_folded_bias(cell):
    layer, x = _layer(cell, seed=3)
    twin = _keras_twin(layer)
    np.testing.assert_allclose(layer(x).numpy(), twin(x).numpy(), rtol=0, atol=2e-6)
    # and the gradients agree where the weights are shared: W_ih, W_hh and the (summed) bias
    with tf.GradientTape(persistent=True) as tape:
        ours = tf.reduce_sum(tf.square(layer(x)))
        theirs = tf.reduce_sum(tf.square(twin(x)))
    g_ours = tape.gradient(ours, [w for w in layer.params[0][0]])
    g_theirs = tape.gradient(theirs, twin.trainable_variables)
    if cell != "gru":  # one bias gets the gradient both of PyTorch's biases get
        np.testing.assert_allclose(g_ours[0].numpy(), g_theirs[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(g_ours[2].numpy(), g_ours[3].numpy(), atol=1e-6)
        np.testing.assert_allclose(g_ours[2].numpy(), g_theirs[2].numpy(), atol=1e-5)


# -- the fused optimizer update --------------------------------------------------------------------

@pytest.mark.parametrize("kind,kw", [
    ("adam", {"weight_decay": 0.01}),
    ("adamw", {"weight_decay": 0.1, "betas": (0.9, 0.99)}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
])
def test_fused_update_is_the_per_tensor_rule(kind, kw):
    from airlab.backends.tensorflow.optim import Optimizer

    shapes = [(7, 5), (5,), (3, 3, 2, 4)]
    rng = np.random.default_rng(0)
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(4)]
    out = []
    for fused in (False, True):
        variables = [tf.Variable(a) for a in init]
        opt = Optimizer(kind, [(f"w{i}", v) for i, v in enumerate(variables)], fused=fused, **kw)
        assert opt.fused is fused
        step = tf.function(lambda g, lr, opt=opt: opt.apply(g, lr))
        for g in grads:
            step([tf.constant(a) for a in g], tf.constant(0.01))
        state = opt.state()
        out.append((state, [v.numpy() for v in variables]))
    (s0, w0), (s1, w1) = out
    assert sorted(s0) == sorted(s1) and int(s1["step"][0]) == 4
    for a, b in zip(w0, w1):  # XLA may contract a multiply-add: equal to the last bits, not bitwise
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    assert any(np.max(np.abs(a - i)) > 1e-3 for a, i in zip(w1, init))  # and the weights did move


# -- threads -------------------------------------------------------------------------------------

def test_intra_op_count_is_the_one_in_force_or_unknown(monkeypatch):
    from airlab.backends.tensorflow import backend

    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 3)
    assert backend._intra_op_in_force()[0] == 3
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 0)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "5")
    assert backend._intra_op_in_force() == (5, backend._intra_op_in_force()[1])
    assert "TF_NUM_INTRAOP_THREADS" in backend._intra_op_in_force()[1]
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    count, why = backend._intra_op_in_force()
    assert count is None and why.startswith("unknown: ") and "does not report" in why


@pytest.mark.parametrize("model, flags, onednn, expected", [
    ("cnn", ("avx512_bf16",), None, True), ("rnn", ("amx_bf16",), None, True),
    ("transformer", ("avx512_bf16",), "1", True),
    ("mlp", ("avx512_bf16",), None, True), ("vae", ("amx_bf16",), None, False),  # measured x0.88
    ("autoencoder", ("amx_bf16",), None, True),  # x1.23-1.25 with its sub-pixel transposed convolutions
    ("cnn", (), None, False),  # bf16 emulated: fp32
    ("cnn", ("avx512_bf16",), "0", False),  # oneDNN turned off: TensorFlow's own bf16 kernels
])
def test_tensorflow_auto_precision_on_a_cpu_is_bf16_only_where_measured_faster(monkeypatch, model, flags,
                                                                              onednn, expected):
    from types import SimpleNamespace

    from airlab.backends import common
    from airlab.backends.tensorflow.backend import TensorFlowBackend

    monkeypatch.setattr(common, "cpu_bf16_flags", lambda cpuinfo=None: flags)
    if onednn is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", onednn)
    backend = SimpleNamespace(spec=SimpleNamespace(name=model))
    assert TensorFlowBackend._cpu_bf16(backend) is expected
    assert common.resolve_precision("auto", "cpu", lambda: None, lambda: TensorFlowBackend._cpu_bf16(backend)) == \
        ("bf16" if expected else "fp32")


@pytest.mark.parametrize("k, s, p, op, h", [
    (3, 2, 1, 1, 7),  # the autoencoder's decoder (kernel_size 3)
    (5, 2, 2, 1, 4), (4, 2, 1, 0, 5), (2, 2, 0, 0, 3), (1, 2, 0, 1, 3),  # a phase without taps
    (3, 3, 1, 2, 4), (3, 1, 1, 0, 5), (3, 2, 0, 0, 4),
])
def test_subpixel_transposed_convolution_is_conv2d_transpose(k, s, p, op, h):
    """The bf16 CPU path of ConvTranspose computes tf.nn.conv2d_transpose's function, and its
    gradients, for PyTorch's geometry (float64: equal to rounding)."""
    from airlab.backends.tensorflow.models import subpixel_conv_transpose

    rng = np.random.default_rng(k * 100 + s * 10 + p)
    x = tf.constant(rng.standard_normal((2, h, h + 1, 3)))
    w = tf.constant(rng.standard_normal((k, k, 4, 3)))
    oh, ow = (h - 1) * s - 2 * p + k + op, h * s - 2 * p + k + op
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        want = tf.nn.conv2d_transpose(x, w, [2, oh, ow, 4], strides=s, padding=[[0, 0], [p, p], [p, p], [0, 0]])
        got = subpixel_conv_transpose(x, w, s, p, op)
        weights = tf.constant(rng.standard_normal((2, oh, ow, 4)))
        lw, lg = tf.reduce_sum(want * weights), tf.reduce_sum(got * weights)
    assert got.shape == (2, oh, ow, 4)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-10)
    for a, b in zip(tape.gradient(lg, [x, w]), tape.gradient(lw, [x, w])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10)


def test_conv_transpose_layer_takes_the_subpixel_path_in_bf16_on_a_cpu():
    """In bf16 without a GPU the layer's output is the sub-pixel form's (and within bf16 rounding of
    the fp32 transposed convolution); in fp32 it is tf.nn.conv2d_transpose's."""
    from airlab.backends.tensorflow.models import ConvTranspose, init_seeds, subpixel_conv_transpose

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: the layer keeps TensorFlow's transposed convolution there")
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 5, 3)), tf.float32)
    layers = []
    for policy in ("float32", "mixed_bfloat16"):
        with init_seeds(0):  # the same draws: the same weights
            layers.append(ConvTranspose(4, 3, strides=2, padding=1, output_padding=1, dtype=policy))
            layers[-1](x)
    y32 = layers[0](x).numpy()
    w, b = layers[0].kernel_var, layers[0].bias
    np.testing.assert_array_equal(layers[1].kernel_var.numpy(), w.numpy())
    want = tf.nn.conv2d_transpose(x, w, [2, 10, 10, 4], strides=2, padding=[[0, 0], [1, 1], [1, 1], [0, 0]]) + b
    np.testing.assert_allclose(y32, want.numpy(), rtol=1e-5, atol=1e-5)
    yb = layers[1](x)
    assert yb.dtype == tf.bfloat16
    xb = tf.cast(x, tf.bfloat16)
    sub = tf.nn.bias_add(subpixel_conv_transpose(xb, tf.cast(w, tf.bfloat16), 2, 1, 1), tf.cast(b, tf.bfloat16))
    np.testing.assert_array_equal(tf.cast(yb, tf.float32).numpy(), tf.cast(sub, tf.float32).numpy())
    np.testing.assert_allclose(tf.cast(yb, tf.float32).numpy(), y32, rtol=0.05, atol=0.05)

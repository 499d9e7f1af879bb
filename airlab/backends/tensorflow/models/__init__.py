"""Keras 3 models: one file per model, each with `build(spec, info) -> AirlabModel`.

Builders are found through `airlab.registry` ("airlab.backends.tensorflow.models.<name>:build").

Conventions shared by every model here, so that a spec means the same network on both backends:

- Inputs and outputs have the same layout as the spec's data: images (B, C, H, W), token ids
  (B, T). Convolutions run channels-last inside the model (TensorFlow's CPU kernels need it);
  the model transposes at its edges and back to (C, H, W) before any flatten, so a dense layer
  after a convolution sees its features in the same order on both backends.
- Every layer holding weights is registered under a stable, dotted name (`hidden.0`,
  `transformer.h.1.attn.c_attn`): the same module path on both backends. A weight's stable name
  is `<layer>.<variable>` (`hidden.0.kernel`), in Keras's own layout (Dense kernel (in, out),
  Conv2D kernel (kh, kw, in, out)).
- Initialisation follows the spec (PyTorch's defaults unless the spec says otherwise), drawn
  from seeds handed out by `init_seeds(seed)`, so a model is a pure function of (spec, seed).
- Randomness in the forward pass (dropout, the VAE's noise) is stateless: `call(..., seed=s)`
  takes a (2,) int seed for the step and every layer folds in its own salt, so the backend owns
  the only random state (one tf.random.Generator) and a checkpoint restores it exactly. Without
  a seed (plain `model.fit`), dropout draws from a Keras SeedGenerator of the layer.
- Under tf.distribute a replica computes rows [offset, offset + b) of a global batch: within
  `global_rows(offset, total)` the draws over the batch (`batch_draw`) are made for the whole
  global batch and sliced at the replica's rows, so every example gets the numbers it gets on
  one device, whatever the replica count.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import keras
import numpy as np
import tensorflow as tf

# -- seeds for initialisers ----------------------------------------------------------------------

_seed_state = threading.local()


@contextlib.contextmanager
def init_seeds(seed: int):
    """Within the block, initialisers draw consecutive seeds starting from `seed`."""
    before = getattr(_seed_state, "next", None)
    _seed_state.next = int(seed) * 1_000_003 % (2**31 - 1)
    try:
        yield
    finally:
        _seed_state.next = before


def next_seed() -> int:
    value = getattr(_seed_state, "next", None)
    if value is None:  # outside init_seeds: a process-wide stream, like an unseeded framework RNG
        value = 0
    _seed_state.next = (value + 1) % (2**31 - 1)
    return value


def uniform(bound: float) -> keras.initializers.Initializer:
    """U(-bound, bound): PyTorch's default for Linear, Conv and recurrent weights and biases."""
    return keras.initializers.RandomUniform(-bound, bound, seed=next_seed())


def torch_default(fan_in: int) -> keras.initializers.Initializer:
    """nn.Linear / nn.Conv2d's default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), the same for the bias."""
    return uniform(1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)


def normal(std: float) -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, std, seed=next_seed())


# -- draws keyed to the global sample position (tf.distribute's replicas) ---------------------------

_rows_state = threading.local()


@contextlib.contextmanager
def global_rows(offset, total):
    """Within the block (a replica's forward pass, traced in the replica's own thread), the batch
    is rows [offset, offset + b) of a global batch of `total` rows (int32 scalars)."""
    before = getattr(_rows_state, "rows", None)
    _rows_state.rows = (offset, total)
    try:
        yield
    finally:
        _rows_state.rows = before


def batch_draw(draw, shape, seed):
    """`draw(shape, seed)` for a batch of `shape` (B, ...); within `global_rows`, the replica's rows
    of the draw for the whole global batch: the numbers one device draws for the same examples."""
    rows = getattr(_rows_state, "rows", None)
    if rows is None:
        return draw(shape, seed)
    offset, total = rows
    shape = tf.convert_to_tensor(shape)
    full = tf.concat([tf.reshape(tf.cast(total, shape.dtype), [1]), shape[1:]], axis=0)  # (total, ...)
    return draw(full, seed)[offset:offset + shape[0]]


# -- activations -------------------------------------------------------------------------------

_ACTIVATIONS = {
    "relu": tf.nn.relu,
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),  # the exact erf form, as nn.GELU()
    "tanh": tf.math.tanh,
    "silu": tf.nn.silu,
}


def activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"Expected `activation` in {sorted(_ACTIVATIONS)}. Received: activation={name!r}") from None


# -- layers with PyTorch's semantics -----------------------------------------------------------------


def dense(units: int, fan_in: int, name: str, *, use_bias: bool = True, kernel_init=None) -> keras.layers.Dense:
    init = kernel_init or torch_default(fan_in)
    return keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=init,
                              bias_initializer=torch_default(fan_in) if kernel_init is None else "zeros", name=name)


def conv(filters: int, kernel: int, c_in: int, name: str, *, padding: str = "valid", strides: int = 1,
         use_bias: bool = True) -> keras.layers.Conv2D:
    fan_in = c_in * kernel * kernel
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias,
                               kernel_initializer=torch_default(fan_in), bias_initializer=torch_default(fan_in),
                               name=name)


class Dropout(keras.layers.Layer):
    """Inverted dropout. With `seed` (a (2,) int tensor) the mask is a pure function of the seed
    and this layer's salt; without, it comes from the layer's own Keras SeedGenerator."""

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.salt = next_seed()
        self.seed_generator = keras.random.SeedGenerator(self.salt) if self.rate > 0 else None

    def build(self, input_shape=None):
        self.built = True

    def call(self, x, training=False, seed=None):
        if not training or self.rate <= 0:
            return x
        if seed is None:
            return keras.random.dropout(x, self.rate, seed=self.seed_generator)
        s = tf.random.experimental.stateless_fold_in(seed, self.salt)
        keep = batch_draw(lambda shape, s: tf.random.stateless_uniform(shape, seed=s, dtype=tf.float32),
                          tf.shape(x), s) >= self.rate
        return tf.where(keep, x / tf.cast(1.0 - self.rate, x.dtype), tf.zeros_like(x))


class BatchNorm(keras.layers.Layer):
    """BatchNorm over the last axis with PyTorch's semantics: normalise with the batch's biased
    variance, update the running variance with the unbiased one; running = (1 - momentum) *
    running + momentum * batch with PyTorch's momentum (0.1) and eps (1e-5). Under tf.distribute
    each replica normalises with its own share's statistics, and the running statistics become
    the mean of the replicas' updates ("mean" aggregation; inert on one device)."""

    def __init__(self, momentum: float = 0.1, epsilon: float = 1e-5, **kwargs):
        super().__init__(autocast=False, **kwargs)  # statistics in float32 under mixed precision too
        self.momentum, self.epsilon = momentum, epsilon

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", name="moving_mean", trainable=False,
                                           aggregation="mean")
        self.moving_variance = self.add_weight(shape=(c,), initializer="ones", name="moving_variance",
                                               trainable=False, aggregation="mean")

    def call(self, x, training=False):
        x32 = tf.cast(x, tf.float32)
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if training:
            axes = list(range(len(x.shape) - 1))
            mean, var = tf.nn.moments(x32, axes=axes)
            n = tf.cast(tf.reduce_prod(tf.shape(x32)[:-1]), tf.float32)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * (1 - m) + mean * m)
            self.moving_variance.assign(self.moving_variance * (1 - m) + var * (n / tf.maximum(n - 1, 1.0)) * m)
        else:
            mean, var = self.moving_mean, self.moving_variance
        y = (x32 - mean) * tf.math.rsqrt(var + self.epsilon) * gamma + beta
        return tf.cast(y, x.dtype)


class ConvTranspose(keras.layers.Layer):
    """A transposed convolution with PyTorch's geometry: ConvTranspose2d(kernel, stride,
    padding, output_padding), output (H - 1) * stride - 2 * padding + kernel + output_padding.
    Keras's 'same' crops the other side for stride 2, so this runs tf.nn.conv2d_transpose with
    explicit padding. Kernel (kh, kw, out, in), as Keras's Conv2DTranspose; PyTorch's default
    initialisation (whose fan-in is out * kh * kw for a transposed convolution).

    In bf16 where TensorFlow sees no GPU it computes the same function as its sub-pixel
    convolution (`subpixel_conv_transpose`): TensorFlow's CPU kernel for a bf16 transposed
    convolution is ~6x slower than its fp32 one, its bf16 convolution is fast (issue 14)."""

    def __init__(self, filters: int, kernel: int, *, strides: int = 2, padding: int = 0, output_padding: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel, self.strides = filters, kernel, strides
        self.padding, self.output_padding = padding, output_padding
        self._init = torch_default(filters * kernel * kernel)
        self._bias_init = torch_default(filters * kernel * kernel)

    def build(self, input_shape):
        c_in = int(input_shape[-1])
        self.kernel_var = self.add_weight(shape=(self.kernel, self.kernel, self.filters, c_in),
                                          initializer=self._init, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer=self._bias_init, name="bias")

    def call(self, x):
        k, s, p, op = self.kernel, self.strides, self.padding, self.output_padding
        w = tf.cast(self.kernel_var, x.dtype)
        if x.dtype == tf.bfloat16 and not _gpu_visible() and None not in x.shape[1:3]:  # (H, W known)
            y = subpixel_conv_transpose(x, w, s, p, op)
        else:
            b, h, wd = tf.shape(x)[0], x.shape[1], x.shape[2]
            out_shape = tf.stack([b, (h - 1) * s - 2 * p + k + op, (wd - 1) * s - 2 * p + k + op, self.filters])
            y = tf.nn.conv2d_transpose(x, w, out_shape, strides=s, padding=[[0, 0], [p, p], [p, p], [0, 0]])
        return tf.nn.bias_add(y, tf.cast(self.bias, x.dtype))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        k, s, p, op = self.kernel, self.strides, self.padding, self.output_padding
        return (b, (h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op, self.filters)


@functools.cache
def _gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (asked once per process)."""
    return bool(tf.config.list_physical_devices("GPU"))


def _phase_taps(kernel: int, stride: int, padding: int) -> list[dict[int, int]]:
    """Per output phase r (output rows o = stride * q + r): {input offset d: kernel tap} such that
    output row o sums input row q + d times tap. From o + padding = stride * i + tap."""
    phases = []
    for r in range(stride):
        base, taps, m = (r + padding) % stride, {}, 0
        while base + stride * m < kernel:
            taps[(r + padding) // stride - m] = base + stride * m
            m += 1
        phases.append(taps)
    return phases


def subpixel_conv_transpose(x, w, stride: int, padding: int, output_padding: int):
    """tf.nn.conv2d_transpose(x, w, strides=stride, padding=[[0, 0], [p, p], [p, p], [0, 0]]) with
    PyTorch's geometry (output (H - 1) * stride - 2p + k + output_padding), computed as one stride-1
    convolution of x whose stride**2 output blocks are the output's phases, interleaved by
    depth_to_space: the same sums (the taps a phase lacks are zeros), through the ordinary
    convolution kernel. x (B, H, W, in), w (k, k, out, in) as Keras's Conv2DTranspose keeps it."""
    k, out_c, in_c = int(w.shape[0]), int(w.shape[2]), int(w.shape[3])
    s, p = stride, padding
    h, wd = int(x.shape[1]), int(x.shape[2])
    oh, ow = (h - 1) * s - 2 * p + k + output_padding, (wd - 1) * s - 2 * p + k + output_padding
    phases = _phase_taps(k, s, p)
    offsets = [d for taps in phases for d in taps] or [0]
    lo, hi = min(offsets), max(offsets)
    size = hi - lo + 1
    # one gather builds the (size, size, in, s*s*out) kernel: tap (kh, kw) or the zero block k*k
    zero = k * k
    index = np.full((size, size, s * s), zero, np.int32)
    for rh, th in enumerate(phases):
        for rw, tw in enumerate(phases):
            for dh, kh in th.items():
                for dw, kw in tw.items():
                    index[dh - lo, dw - lo, rh * s + rw] = kh * k + kw
    flat = tf.concat([tf.reshape(tf.transpose(w, [0, 1, 3, 2]), [k * k, in_c, out_c]),
                      tf.zeros([1, in_c, out_c], w.dtype)], axis=0)  # (k*k + 1, in, out)
    kern = tf.gather(flat, index)  # (size, size, s*s, in, out)
    kern = tf.reshape(tf.transpose(kern, [0, 1, 3, 2, 4]), [size, size, in_c, s * s * out_c])
    qh, qw = -(-oh // s), -(-ow // s)  # positions per phase
    # input rows q + d for q in [0, qh) and d in [lo, hi]: pad (or crop) x to rows lo .. qh - 1 + hi
    pads = [[0, 0], [max(-lo, 0), max(qh - 1 + hi - (h - 1), 0)], [max(-lo, 0), max(qw - 1 + hi - (wd - 1), 0)], [0, 0]]
    xp = tf.pad(x, pads)[:, max(lo, 0):, max(lo, 0):, :]
    y = tf.nn.conv2d(xp, kern, strides=1, padding="VALID")[:, :qh, :qw, :]  # (B, qh, qw, s*s*out)
    if s > 1:
        y = tf.nn.depth_to_space(y, s)  # channel (rh*s + rw)*out + c -> row s*q + rh, col s*q' + rw
    return y[:, :oh, :ow, :]


def nchw_to_nhwc(x):
    return tf.transpose(x, [0, 2, 3, 1])  # (B, C, H, W) -> (B, H, W, C)


def nhwc_to_nchw(x):
    return tf.transpose(x, [0, 3, 1, 2])  # (B, H, W, C) -> (B, C, H, W)


# -- the model base ------------------------------------------------------------------------------


class AirlabModel(keras.Model):
    """A Keras model whose weight-holding layers are registered under stable dotted names.

    `named_variables()` lists every variable (trainable and not) as `<layer>.<variable>`,
    in registration order; `tied` maps a layer to the other layers that use its weight (the
    Transformer's output head uses the token embedding)."""

    tied: dict[str, list[str]] = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.named_layers: dict[str, keras.layers.Layer] = {}  # registration order

    def register(self, name: str, layer):
        if name in self.named_layers:
            raise ValueError(f"duplicate layer name {name!r}")
        self.named_layers[name] = layer
        return layer

    def build(self, input_shape=None):
        """Nothing to build up front: the layers create their variables in the first forward pass
        (`build_for`). Without this, Keras would first trace the whole model symbolically."""
        self.built = True

    def named_variables(self) -> list[tuple[str, "keras.Variable"]]:
        out, seen = [], set()
        for name, layer in self.named_layers.items():
            for v in layer.weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append((f"{name}.{v.name}", v))
        return out

    def build_for(self, example) -> "AirlabModel":
        """Create the variables with one forward pass on `example` (a batch of one)."""
        self(example, training=False)
        names = [n for n, _ in self.named_variables()]
        own = {id(v) for v in self.weights}
        missing = own - {id(v) for _, v in self.named_variables()}
        if missing or len(set(names)) != len(names):
            raise AssertionError(f"{type(self).__name__}: every variable needs one stable name")
        return self

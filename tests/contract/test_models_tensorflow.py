"""Contract tests for every TensorFlow (Keras 3) model, generated from the registry.

The twin of test_models_torch.py: a model registered with a "tensorflow" builder is built at its
spec's defaults on its `default_data` and at each of its spec's `test_variants`, and must
(1) have exactly the parameter count its spec computes without a framework, (2) return the
outputs its task expects, in the spec's layout, (3) lower a finite loss over a few Adam steps on
a fixed batch, (4) survive a safetensors save/load into a freshly built model with identical
outputs, and (5) name every variable once, under a stable `<layer>.<variable>` name.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import airlab.backends.tensorflow  # noqa: E402,F401  (fixes KERAS_BACKEND before keras is imported)
import keras  # noqa: E402
import safetensors.numpy  # noqa: E402
import tensorflow as tf  # noqa: E402

from airlab.backends.tensorflow.backend import assign_weights, model_weights  # noqa: E402
from airlab.backends.tensorflow.models import init_seeds  # noqa: E402
from airlab.registry import builder, list_models, spec_class  # noqa: E402
from airlab.specs.base import DataInfo  # noqa: E402

TASKS = {"classification", "reconstruction", "vae", "lm"}
ENTRIES = [e for e in list_models() if "tensorflow" in e.builders]
CASES = [
    pytest.param(e, variant, id=f"{e.name}-{'default' if i == 0 else f'variant{i}'}")
    for e in ENTRIES
    for i, variant in enumerate([{}, *spec_class(e.name).test_variants])
]
BATCH = 4
LM_STEPS = 16


def make(entry, variant: dict, seed: int = 0):
    spec = spec_class(entry.name)(**variant)
    info = type(spec).default_data
    with init_seeds(seed):
        return spec, info, builder(entry.name, "tensorflow")(spec, info)


_SHARED: dict = {}


def shared(entry, variant: dict):
    """One model per case for the tests that only read it (counts, names, forward shapes)."""
    key = (entry.name, repr(sorted(variant.items())))
    if key not in _SHARED:
        _SHARED[key] = make(entry, variant)
    return _SHARED[key]


def make_batch(task: str, spec, info: DataInfo):
    rng = np.random.default_rng(1234)
    if task == "lm":
        t = min(spec.context_length, LM_STEPS)
        idx = rng.integers(0, info.vocab_size, (BATCH, t + 1)).astype(np.int32)
        return tf.constant(idx[:, :-1]), tf.constant(idx[:, 1:])
    x = tf.constant(rng.random((BATCH, *info.input_shape), dtype=np.float32))
    y = tf.constant(rng.integers(0, info.num_classes, BATCH).astype(np.int32)) if task == "classification" else None
    return x, y


def task_loss(task: str, spec, out, x, y):
    if task == "classification":
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out))
    if task == "reconstruction":
        if getattr(spec, "loss", "bce") == "mse":
            return tf.reduce_mean(tf.square(tf.sigmoid(out) - x))
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=out))
    if task == "vae":
        recon, mu, logvar = out
        bce = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=recon)) / x.shape[0]
        kl = -0.5 * tf.reduce_sum(1 + logvar - tf.square(mu) - tf.exp(logvar)) / x.shape[0]
        return bce + getattr(spec, "beta", 1.0) * kl
    if task == "lm":
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out))
    raise AssertionError(f"no contract loss for task {task!r}")


def check_outputs(task: str, spec, info: DataInfo, out, x) -> None:
    if task == "classification":
        assert tuple(out.shape) == (x.shape[0], info.num_classes)
    elif task == "reconstruction":
        assert tuple(out.shape) == tuple(x.shape)
    elif task == "vae":
        recon, mu, logvar = out
        assert tuple(recon.shape) == tuple(x.shape)
        assert tuple(mu.shape) == tuple(logvar.shape) == (x.shape[0], spec.latent_dim)
    elif task == "lm":
        assert tuple(out.shape) == (*x.shape, info.vocab_size)
    tensors = out if isinstance(out, tuple) else (out,)
    assert all(t.dtype == tf.float32 and bool(tf.reduce_all(tf.math.is_finite(t))) for t in tensors)


def as_tuple(out):
    return tuple(t.numpy() for t in (out if isinstance(out, tuple) else (out,)))


def outputs_equal(a, b) -> bool:
    a, b = as_tuple(a), as_tuple(b)
    return len(a) == len(b) and all(np.array_equal(s, t) for s, t in zip(a, b))


def test_registry_has_tensorflow_models():
    assert ENTRIES, "no model has a tensorflow builder"
    assert {e.task for e in ENTRIES} <= TASKS
    assert [e.name for e in ENTRIES] == [e.name for e in list_models()], "every model has both backends"


@pytest.mark.parametrize("entry,variant", CASES)
def test_num_params_matches_tensorflow(entry, variant):
    spec, info, model = shared(entry, variant)
    assert spec.num_params(info) == sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize("entry,variant", CASES)
def test_every_variable_has_one_stable_name(entry, variant):
    _, _, model = shared(entry, variant)
    named = model.named_variables()
    names = [n for n, _ in named]
    assert len(names) == len(set(names))
    assert {id(v) for _, v in named} == {id(v) for v in model.weights}
    assert all(n.count(".") >= 1 and "/" not in n for n in names)


@pytest.mark.parametrize("entry,variant", CASES)
def test_forward_shapes(entry, variant):
    spec, info, model = shared(entry, variant)
    x, _ = make_batch(entry.task, spec, info)
    seed = tf.constant([1, 2], tf.int64)
    check_outputs(entry.task, spec, info, model(x, training=True, seed=seed), x)
    check_outputs(entry.task, spec, info, model(x, training=True), x)  # Keras's own seed generators (model.fit)
    check_outputs(entry.task, spec, info, model(x, training=False), x)
    check_outputs(entry.task, spec, info, model(x[:1], training=False), x[:1])  # batch of one
    assert outputs_equal(model(x, training=False), model(x, training=False)), "eval mode must be deterministic"
    assert outputs_equal(model(x, training=True, seed=seed), model(x, training=True, seed=seed)), \
        "a step's seed must fix its randomness"


@pytest.mark.parametrize("entry,variant", CASES)
def test_loss_decreases_on_a_fixed_batch(entry, variant):
    spec, info, model = make(entry, variant)
    x, y = make_batch(entry.task, spec, info)
    seed = tf.constant([99, 0], tf.int64)  # the same dropout masks / VAE noise each time

    def loss_now() -> float:
        return float(task_loss(entry.task, spec, model(x, training=True, seed=seed), x, y))

    before = loss_now()
    opt = keras.optimizers.Adam(learning_rate=1e-3)
    opt.build(model.trainable_variables)

    @tf.function
    def step(i):
        with tf.GradientTape() as tape:
            loss = task_loss(entry.task, spec, model(x, training=True, seed=tf.stack([i, 1])), x, y)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for i in range(15):
        assert bool(tf.math.is_finite(step(tf.constant(i, tf.int64))))
    after = loss_now()
    assert after == after and after < before, f"loss did not decrease: {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("entry,variant", CASES)
def test_safetensors_round_trip(entry, variant, tmp_path):
    spec, info, model = make(entry, variant, seed=0)
    x, _ = make_batch(entry.task, spec, info)
    model(x, training=True, seed=tf.constant([3, 3], tf.int64))  # move BatchNorm's running statistics
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(model_weights(model), str(path))

    _, _, fresh = make(entry, variant, seed=1)
    assert not outputs_equal(model(x, training=False), fresh(x, training=False)), "two seeds gave the same weights"
    assign_weights(fresh, safetensors.numpy.load_file(str(path)))
    assert outputs_equal(model(x, training=False), fresh(x, training=False))


@pytest.mark.parametrize("entry,variant", CASES[:3])
def test_same_seed_same_weights(entry, variant):
    _, _, a = make(entry, variant, seed=7)
    _, _, b = make(entry, variant, seed=7)
    wa, wb = model_weights(a), model_weights(b)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in ENTRIES])
def test_builder_rejects_data_it_cannot_use(entry):
    spec = spec_class(entry.name)()
    data = type(spec).default_data
    bad = {
        "classification": DataInfo(input_shape=data.input_shape, num_classes=None),
        "lm": DataInfo(input_shape=data.input_shape, vocab_size=None),
        "reconstruction": DataInfo(input_shape=()),
        "vae": DataInfo(input_shape=()),
    }[entry.task]
    with pytest.raises(ValueError):
        builder(entry.name, "tensorflow")(spec, bad)


CLASSIC_COUNTS = [
    ("mlp", {}, DataInfo((1, 28, 28), num_classes=10), 669_706),
    ("cnn", {}, DataInfo((1, 28, 28), num_classes=10), 1_199_882),
    ("cnn", {"pool_after": [0, 1], "dense": [], "conv_dropout": 0.5, "dropout": 0.0},
     DataInfo((1, 28, 28), num_classes=10), 34_826),
    ("rnn", {}, DataInfo((1, 28, 28), num_classes=10), 82_186),
    ("autoencoder", {}, DataInfo((1, 28, 28)), 28_353),
    ("vae", {}, DataInfo((1, 28, 28)), 652_824),
    ("vae", {"kind": "conv", "channels": [32, 64], "hidden": [16], "latent_dim": 2}, DataInfo((1, 28, 28)), 134_165),
    ("transformer", {}, DataInfo((), vocab_size=65), 804_096),
    ("cnn", {}, DataInfo((3, 32, 32), num_classes=10), 1_626_442),  # colour images: CIFAR-10's shape
]


@pytest.mark.parametrize("name,fields,info,expected", CLASSIC_COUNTS, ids=lambda v: v if isinstance(v, str) else None)
def test_classic_parameter_counts(name, fields, info, expected):
    spec = spec_class(name)(**fields)
    assert spec.num_params(info) == expected
    with init_seeds(0):
        model = builder(name, "tensorflow")(spec, info)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == expected


def test_generate_extends_a_prompt():
    spec = spec_class("transformer")(n_layer=1, n_head=2, n_embd=16, context_length=8)
    info = DataInfo((), vocab_size=11)
    with init_seeds(0):
        model = builder("transformer", "tensorflow")(spec, info)
    prompt = np.array([[1, 2, 3]], np.int32)
    out = model.generate(prompt, 12, temperature=0.8, top_k=5, seed=3)
    assert out.shape == (1, 15) and (out[:, :3] == prompt).all() and out.max() < 11
    assert np.array_equal(out, model.generate(prompt, 12, temperature=0.8, top_k=5, seed=3))
    greedy = model.generate(prompt, 4, temperature=0)
    logits = model(tf.constant(prompt), training=False)[:, -1]
    assert greedy[0, 3] == int(tf.argmax(logits, axis=-1)[0])

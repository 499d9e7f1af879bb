"""Contract tests for every model on every backend, generated from the registry and the table.

A model registered with a builder for a backend of airlab's backend table is covered here with
no new test code: on each backend (the `backend` fixture: one adapter per framework, skipped
where the framework is missing) it is built at its spec's defaults on its `default_data` and at
each of its spec's `test_variants`, and must (1) have exactly the parameter count its spec
computes without a framework, (2) return the outputs its task expects, in the spec's layout,
deterministically in inference and under a fixed seed in training, (3) lower a finite loss over a
few Adam steps on a fixed batch, (4) survive a safetensors save/load into a freshly built model
with identical outputs, and (5) build the same weights from the same seed. The losses here are
written once, in the adapter's operations, independently of the backends' own.

What only one framework has lives beside it: test_models_torch.py, test_models_tensorflow.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from airlab.backends import table
from airlab.registry import list_models, model_names, spec_class
from airlab.specs.base import DataInfo

TASKS = {"classification", "reconstruction", "vae", "lm"}
CASES = [
    pytest.param(e, variant, id=f"{e.name}-{'default' if i == 0 else f'variant{i}'}")
    for e in list_models()
    for i, variant in enumerate([{}, *spec_class(e.name).test_variants])
]
BATCH = 4
LM_STEPS = 16  # tokens per sequence in the LM batch (at most the spec's context_length)


def make(backend, entry, variant: dict, seed: int = 0):
    spec = spec_class(entry.name)(**variant)
    info = type(spec).default_data
    return spec, info, backend.build(entry.name, spec, info, seed)


_SHARED: dict = {}


def shared(backend, entry, variant: dict):
    """One model per case and backend for the tests that only read it (counts, forward shapes)."""
    key = (backend.name, entry.name, repr(sorted(variant.items())))
    if key not in _SHARED:
        _SHARED[key] = make(backend, entry, variant)
    return _SHARED[key]


def make_batch(backend, task: str, spec, info: DataInfo):
    """A fixed batch (inputs, targets): float32 in [0, 1] and class labels, or token windows and
    their next tokens; targets None where the task has none."""
    rng = np.random.default_rng(1234)
    if task == "lm":
        t = min(spec.context_length, LM_STEPS)
        idx = rng.integers(0, info.vocab_size, (BATCH, t + 1))
        return backend.tensor(idx[:, :-1]), backend.tensor(idx[:, 1:])  # (B, T) each
    x = rng.random((BATCH, *info.input_shape), dtype=np.float32)
    y = backend.tensor(rng.integers(0, info.num_classes, BATCH)) if task == "classification" else None
    return backend.tensor(x), y


def task_loss(fw, task: str, spec, out, x, y):
    """The task's loss in the adapter's operations (a mean over the batch; the VAE's per sample)."""
    if task in ("classification", "lm"):
        return fw.cross_entropy(out, y)
    if task == "reconstruction":
        if getattr(spec, "loss", "bce") == "mse":
            d = fw.sigmoid(out) - x
            return fw.mean(d * d)
        return fw.mean(fw.bce_with_logits(out, x))
    if task == "vae":
        recon, mu, logvar = out
        n = x.shape[0]
        bce = fw.sum(fw.bce_with_logits(recon, x)) / n
        kl = -0.5 * fw.sum(1 + logvar - mu * mu - fw.exp(logvar)) / n
        return bce + getattr(spec, "beta", 1.0) * kl
    raise AssertionError(f"no contract loss for task {task!r}")


def check_outputs(fw, task: str, spec, info: DataInfo, out, x) -> None:
    arrays = fw.arrays(out)
    n = x.shape[0]
    if task == "classification":
        assert [a.shape for a in arrays] == [(n, info.num_classes)]
    elif task == "reconstruction":
        assert [a.shape for a in arrays] == [tuple(x.shape)]
    elif task == "vae":
        recon, mu, logvar = arrays
        assert recon.shape == tuple(x.shape)
        assert mu.shape == logvar.shape == (n, spec.latent_dim)
    elif task == "lm":
        assert [a.shape for a in arrays] == [(*x.shape, info.vocab_size)]
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in arrays)


def outputs_equal(fw, a, b) -> bool:
    a, b = fw.arrays(a), fw.arrays(b)
    return len(a) == len(b) and all(np.array_equal(s, t) for s, t in zip(a, b))


# -- framework-free --------------------------------------------------------------------------------


def test_registry_models_have_known_tasks_and_every_backend():
    assert list_models(), "no model is registered"
    assert {e.task for e in list_models()} <= TASKS
    for e in list_models():
        assert list(e.builders) == list(table.BACKENDS), f"{e.name}: builders for {list(e.builders)}"


@pytest.mark.parametrize("entry,variant", CASES)
def test_spec_is_documented_and_round_trips(entry, variant):
    cls = spec_class(entry.name)
    spec = cls(**variant)
    assert spec.name == entry.name
    assert cls.__doc__ and cls.__doc__.strip()
    for field_name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{field_name} has no description"
        assert not field.is_required(), f"{cls.__name__}.{field_name} has no default"
    assert cls.model_validate(spec.model_dump(mode="json")) == spec
    assert isinstance(spec.num_params(cls.default_data), int)


@pytest.mark.parametrize("name", model_names())
def test_smoke_fields_are_a_valid_spec_no_bigger_than_the_default(name):
    """The tiny runs of every suite (tests/smoke.py) train the spec's `smoke` fields."""
    cls = spec_class(name)
    assert set(cls.smoke) <= set(cls.model_fields), sorted(set(cls.smoke) - set(cls.model_fields))
    small = cls(**cls.smoke)
    assert small.num_params(cls.default_data) <= cls().num_params(cls.default_data)


def test_specs_need_no_framework():
    """Spec classes and their parameter counts import no framework."""
    code = (
        "import sys\n"
        "from airlab.registry import spec_classes\n"
        "for cls in spec_classes():\n"
        "    spec = cls()\n"
        "    spec.num_params(cls.default_data)\n"
        "    [cls(**v).num_params(cls.default_data) for v in [*cls.test_variants, cls.smoke]]\n"
        f"bad = sorted(m for m in {(*(r.module for r in table.ROWS), 'keras', 'numpy')!r} if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- on every backend ------------------------------------------------------------------------------


@pytest.mark.parametrize("entry,variant", CASES)
def test_num_params_matches_the_framework(backend, entry, variant):
    spec, info, model = shared(backend, entry, variant)
    assert spec.num_params(info) == backend.count_params(model)


@pytest.mark.parametrize("entry,variant", CASES)
def test_forward_shapes(backend, entry, variant):
    spec, info, model = shared(backend, entry, variant)
    x, _ = make_batch(backend, entry.task, spec, info)
    check_outputs(backend, entry.task, spec, info, backend.forward(model, x, training=True, seed=1), x)
    check_outputs(backend, entry.task, spec, info, backend.forward(model, x, training=True), x)
    check_outputs(backend, entry.task, spec, info, backend.forward(model, x, training=False), x)
    check_outputs(backend, entry.task, spec, info, backend.forward(model, x[:1], training=False), x[:1])  # batch of 1
    assert outputs_equal(backend, backend.forward(model, x, training=False),
                         backend.forward(model, x, training=False)), "eval mode must be deterministic"
    assert outputs_equal(backend, backend.forward(model, x, training=True, seed=2),
                         backend.forward(model, x, training=True, seed=2)), "a step's seed must fix its randomness"


@pytest.mark.parametrize("entry,variant", CASES)
def test_loss_decreases_on_a_fixed_batch(backend, entry, variant):
    spec, info, model = make(backend, entry, variant)
    x, y = make_batch(backend, entry.task, spec, info)

    def loss_of(out):
        return task_loss(backend, entry.task, spec, out, x, y)

    def loss_now() -> float:  # the same dropout masks / VAE noise each time: only the weights differ
        return float(backend.arrays(loss_of(backend.forward(model, x, training=True, seed=99)))[0])

    before = loss_now()
    losses = backend.adam_steps(model, x, loss_of, steps=15, lr=1e-3)
    assert all(np.isfinite(losses)), losses
    after = loss_now()
    assert after == after and after < before, f"loss did not decrease: {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("entry,variant", CASES)
def test_safetensors_round_trip(backend, entry, variant, tmp_path):
    spec, info, model = make(backend, entry, variant, seed=0)
    x, _ = make_batch(backend, entry.task, spec, info)
    backend.forward(model, x, training=True, seed=3)  # move BatchNorm's running statistics off their start
    path = tmp_path / "model.safetensors"
    backend.save(model, path)

    _, _, fresh = make(backend, entry, variant, seed=1)
    assert not outputs_equal(backend, backend.forward(model, x, training=False),
                             backend.forward(fresh, x, training=False)), "two seeds gave the same weights"
    backend.load(fresh, path)
    assert outputs_equal(backend, backend.forward(model, x, training=False), backend.forward(fresh, x, training=False))


@pytest.mark.parametrize("entry,variant", CASES[:3])
def test_same_seed_same_weights(backend, entry, variant):
    wa = backend.weights(make(backend, entry, variant, seed=7)[2])
    wb = backend.weights(make(backend, entry, variant, seed=7)[2])
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in list_models()])
def test_builder_rejects_data_it_cannot_use(backend, entry):
    spec = spec_class(entry.name)()
    data = type(spec).default_data
    bad = {
        "classification": DataInfo(input_shape=data.input_shape, num_classes=None),
        "lm": DataInfo(input_shape=data.input_shape, vocab_size=None),
        "reconstruction": DataInfo(input_shape=()),
        "vae": DataInfo(input_shape=()),
    }[entry.task]
    with pytest.raises(ValueError):
        backend.build(entry.name, spec, bad)
    with pytest.raises(ValueError):
        spec.num_params(bad)


# Published parameter counts of the classic architectures the specs reproduce (see each spec's
# docstring and shared/reference/results.md). Only models whose published count is known appear.
CLASSIC_COUNTS = [
    ("mlp", {}, DataInfo((1, 28, 28), num_classes=10), 669_706),  # Keras mnist_mlp.py
    ("cnn", {}, DataInfo((1, 28, 28), num_classes=10), 1_199_882),  # Keras mnist_cnn.py / pytorch examples
    ("cnn", {"pool_after": [0, 1], "dense": [], "conv_dropout": 0.5, "dropout": 0.0},
     DataInfo((1, 28, 28), num_classes=10), 34_826),  # keras-io simple MNIST convnet
    ("rnn", {}, DataInfo((1, 28, 28), num_classes=10), 82_186),
    ("autoencoder", {}, DataInfo((1, 28, 28)), 28_353),  # keras-io convolutional autoencoder
    ("vae", {}, DataInfo((1, 28, 28)), 652_824),  # pytorch/examples vae
    ("vae", {"kind": "conv", "channels": [32, 64], "hidden": [16], "latent_dim": 2},
     DataInfo((1, 28, 28)), 134_165),  # keras-io VAE (encoder 69,076 + decoder 65,089)
    ("transformer", {}, DataInfo((), vocab_size=65), 804_096),  # nanoGPT CPU run: 0.80M + 8,192 wpe
    ("cnn", {}, DataInfo((3, 32, 32), num_classes=10), 1_626_442),  # colour images: CIFAR-10's shape
]


@pytest.mark.parametrize("name,fields,info,expected", CLASSIC_COUNTS, ids=lambda v: v if isinstance(v, str) else None)
def test_classic_parameter_counts(backend, name, fields, info, expected):
    spec = spec_class(name)(**fields)
    assert spec.num_params(info) == expected
    assert backend.count_params(backend.build(name, spec, info, seed=0)) == expected

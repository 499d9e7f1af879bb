"""Cross-backend parity, generated from the registry: a spec means the same network on PyTorch and
on TensorFlow.

For every model with both builders, at its defaults, at each of its spec's `test_variants` and
at a few more non-default specs and data shapes (colour images, odd kernels):

1. the parameter counts are identical (and equal the spec's own count);
2. weights copied from the torch model into the TensorFlow model through the converter
   (airlab.interop) give the same eval-mode outputs on the same inputs (relative error <= 1e-4
   in float32), and copied back they are bitwise the torch weights and give the same outputs;
3. from the same weights, one or two optimizer steps (SGD with momentum, Adam, AdamW with weight
   decay and gradient clipping) through each backend's own training step on the same batch give
   the same loss and the same updated weights within tolerance (dropout off; the VAE's noise
   fixed to the same draw on both). A model with no row in STEP_MODELS steps at its spec's
   `smoke` fields. The numerics of both backends are pinned (tests/numerics.py: fp32, eager
   kernels, one thread, CPU).

`PARITY_REPORT=1` prints the largest relative errors per model (the figures quoted in notes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
import airlab.backends.tensorflow  # noqa: E402,F401
import safetensors.numpy  # noqa: E402
import safetensors.torch  # noqa: E402
import tensorflow as tf  # noqa: E402

from airlab.backends.tensorflow.backend import TensorFlowBackend, assign_weights, model_weights  # noqa: E402
from airlab.backends.tensorflow.models import init_seeds  # noqa: E402
from airlab.backends.torch.backend import TorchBackend  # noqa: E402
from airlab.config import validate  # noqa: E402
from airlab.data import load_dataset  # noqa: E402
from airlab.interop import weights as W  # noqa: E402
from airlab.registry import builder, get_model, list_models, model_names, spec_class  # noqa: E402
from airlab.specs.base import DataInfo  # noqa: E402
from airlab.tasks import get_task  # noqa: E402
from numerics import pinned  # noqa: E402

ENTRIES = [e for e in list_models() if {"torch", "tensorflow"} <= set(e.builders)]
COLOUR = DataInfo((3, 16, 16), num_classes=7)
EXTRA = {  # more non-default specs (and data shapes) per model, beyond the specs' test_variants
    "mlp": [({"hidden": [7], "activation": "silu"}, COLOUR)],
    "cnn": [({"channels": [4, 6], "kernel_size": 5, "padding": "same", "batchnorm": True, "dense": [9]}, COLOUR),
            ({"channels": [3], "kernel_size": 4, "padding": "same", "pool_after": []}, COLOUR)],
    "rnn": [({"cell": "lstm", "hidden_size": 8, "num_layers": 2, "bidirectional": True, "dropout": 0.2}, COLOUR)],
    "autoencoder": [({"channels": [4], "kernel_size": 1}, COLOUR), ({"kind": "dense", "hidden": []}, COLOUR)],
    "vae": [({"kind": "conv", "channels": [4, 8], "hidden": [], "latent_dim": 3, "activation": "silu"}, COLOUR)],
    "transformer": [({"n_layer": 1, "n_head": 1, "n_embd": 8, "context_length": 5, "bias": True}, None)],
}
CASES = [
    pytest.param(e, variant, None, id=f"{e.name}-{'default' if i == 0 else f'variant{i}'}")
    for e in ENTRIES
    for i, variant in enumerate([{}, *spec_class(e.name).test_variants])
] + [
    pytest.param(e, variant, info, id=f"{e.name}-extra{i}")
    for e in ENTRIES
    for i, (variant, info) in enumerate(EXTRA.get(e.name, []))
]
FORWARD_RTOL = 1e-4
REPORT: dict[str, float] = {}


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # models built here, outside a backend: one thread


@pytest.fixture(autouse=True, scope="module")
def report():
    yield
    if os.environ.get("PARITY_REPORT") and REPORT:
        print("\nlargest relative errors, torch vs tensorflow:")
        for key in sorted(REPORT):
            print(f"  {key:40} {REPORT[key]:.2e}")


def note(key: str, value: float) -> None:
    REPORT[key] = max(REPORT.get(key, 0.0), value)


_PAIRS: dict = {}


def build_pair(entry, variant: dict, info: DataInfo | None, seed: int = 0):
    """The torch and the TensorFlow model of a case (built once per case and shared)."""
    key = (entry.name, repr(sorted(variant.items())), info, seed)
    if key not in _PAIRS:
        _PAIRS[key] = _build_pair(entry, variant, info, seed)
    return _PAIRS[key]


def _build_pair(entry, variant: dict, info: DataInfo | None, seed: int):
    spec = spec_class(entry.name)(**variant)
    info = info or type(spec).default_data
    torch.manual_seed(seed)
    tm = builder(entry.name, "torch")(spec, info)
    with init_seeds(seed + 100):
        km = builder(entry.name, "tensorflow")(spec, info)
    return spec, info, tm, km


def torch_file_weights(model, tmp_path: Path) -> dict[str, np.ndarray]:
    """The weights exactly as the torch backend writes them (safetensors: a tied tensor once)."""
    path = tmp_path / "torch.safetensors"
    safetensors.torch.save_model(model, str(path))
    return safetensors.numpy.load_file(str(path))


def batch(task: str, spec, info: DataInfo, n: int = 5):
    rng = np.random.default_rng(7)
    if task == "lm":
        return rng.integers(0, info.vocab_size, (n, min(spec.context_length, 12))).astype(np.int64)
    return rng.random((n, *info.input_shape), dtype=np.float32)


def outputs(out) -> list[np.ndarray]:
    items = out if isinstance(out, tuple) else (out,)
    return [np.asarray(o.detach().numpy() if hasattr(o, "detach") else o.numpy()) for o in items]


@pytest.mark.parametrize("entry,variant,info", CASES)
def test_parameter_counts_are_identical(entry, variant, info):
    spec, info, tm, km = build_pair(entry, variant, info)
    n_torch = sum(p.numel() for p in tm.parameters())
    n_tf = sum(int(np.prod(v.shape)) for v in km.trainable_variables)
    assert n_torch == n_tf == spec.num_params(info)


@pytest.mark.parametrize("entry,variant,info", CASES)
def test_converted_weights_give_the_same_outputs_both_ways(entry, variant, info, tmp_path):
    spec, info, tm, km = build_pair(entry, variant, info)
    x = batch(entry.task, spec, info)
    with torch.no_grad():
        tm.train()(torch.from_numpy(x))  # move BatchNorm's running statistics off their initial values
        tm.eval()
        expected = outputs(tm(torch.from_numpy(x)))

    # torch -> tensorflow, through the converter and the file the torch backend writes
    source = torch_file_weights(tm, tmp_path)
    shapes = {n: tuple(v.shape) for n, v in km.named_variables()}
    assign_weights(km, W.torch_to_tensorflow(source, shapes, km.tied))
    got = outputs(km(tf.constant(x if entry.task != "lm" else x.astype(np.int32)), training=False))
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        err = W.max_relative_error(e, g)
        note(f"{entry.name} forward torch->tf", err)
        assert err <= FORWARD_RTOL, f"relative error {err:.2e}"

    # tensorflow -> torch: the same arrays, bitwise, and the same outputs
    back = W.tensorflow_to_torch(model_weights(km))
    for name, array in source.items():
        if not name.endswith("num_batches_tracked"):
            target = name if name in back else "transformer.wte.weight"  # the tied head, by its other name
            assert np.array_equal(back[target], array), name
    torch.manual_seed(123)
    fresh = builder(entry.name, "torch")(spec, info).eval()
    path = tmp_path / "back.safetensors"
    safetensors.numpy.save_file(back, str(path))
    missing, unexpected = safetensors.torch.load_model(fresh, str(path), strict=False)
    assert not missing and not unexpected
    with torch.no_grad():
        again = outputs(fresh(torch.from_numpy(x)))
    for e, a in zip(expected, again):
        assert np.array_equal(e, a)


# -- one training step through each backend ----------------------------------------------------------

STEP_MODELS = {  # model -> (config file overrides for a tiny offline run, extra model fields)
    "mlp": ({}, {"hidden": [32, 16]}),
    "cnn": ({}, {"channels": [4, 8], "dense": [16]}),
    "cnn-batchnorm": ({}, {"channels": [4, 8], "dense": [16], "batchnorm": True, "padding": "same"}),
    "rnn": ({}, {"hidden_size": 16}),
    "rnn-gru": ({}, {"cell": "gru", "hidden_size": 8, "num_layers": 2, "bidirectional": True}),
    "autoencoder": ({}, {"channels": [4, 4]}),
    "vae": ({}, {"hidden": [32], "latent_dim": 4}),
    "vae-conv": ({}, {"kind": "conv", "channels": [4, 8], "hidden": [8], "latent_dim": 2}),
    "transformer": ({}, {"n_layer": 1, "n_embd": 16, "n_head": 2, "context_length": 12, "bias": True}),
}
OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
    "adam": {"optimizer": "adam", "lr": 1e-3, "eps": 1e-8},
    "adamw": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1, "grad_clip": 0.5, "betas": [0.9, 0.99]},
}
STEP_MODELS.update({m: ({}, spec_class(m).smoke) for m in model_names() if m not in STEP_MODELS})
STEP_CASES = [pytest.param(m, o, id=f"{m}-{o}") for m in STEP_MODELS if "-" not in m for o in ("sgd", "adam")]
STEP_CASES += [pytest.param(m, o, id=f"{m}-{o}") for m, o in [
    ("cnn-batchnorm", "sgd"), ("cnn-batchnorm", "adamw"), ("rnn-gru", "adam"), ("vae-conv", "adam"),
    ("transformer", "adamw")]]


def _no_dropout(name: str, fields: dict) -> dict:
    cls = spec_class(name)
    return {**fields, **{k: 0.0 for k in cls.model_fields if k.endswith("dropout")}}


def step_config(case: str, optimizer: str):
    name = case.split("-")[0]
    _, fields = STEP_MODELS[case]
    lm = get_model(name).task == "lm"
    data = ({"name": "pycorpus", "size": 20000, "limit": 4000, "batch_size": 6} if lm else
            {"name": "shapes", "size": 256, "limit": 64, "batch_size": 8})
    return validate(pinned({"name": "parity", "seed": 0, "model": {"name": name, **_no_dropout(name, fields)},
                            "data": data, "train": {"steps": 2, **OPTIMIZERS[optimizer]}}))


def torch_names(backend: TensorFlowBackend) -> dict[str, np.ndarray]:
    return W.tensorflow_to_torch(dict(backend.named_weights()))


@pytest.fixture(scope="module")
def datasets():
    cache = {}

    def get(cfg):
        d = cfg.data
        key = (d.name, d.size, d.limit)
        if key not in cache:
            cache[key] = load_dataset(d.name, val_fraction=cfg.data.val_fraction, seed=cfg.seed, size=d.size,
                                      limit=d.limit)
        return cache[key]

    return get


@pytest.mark.parametrize("case,optimizer", STEP_CASES)
def test_training_steps_match(case, optimizer, datasets, tmp_path, monkeypatch):
    cfg = step_config(case, optimizer)
    dataset = datasets(cfg)
    task = get_task(get_model(cfg.model.name).task)
    tb = TorchBackend(cfg, dataset, task)
    kb = TensorFlowBackend(cfg, dataset, task)
    tb.save_state(tmp_path)
    start = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    shapes = {n: a.shape for n, a in kb.named_weights()}
    assign_weights(kb.model, W.torch_to_tensorflow(start, shapes, kb.weight_aliases()))

    batch_size = cfg.data.batch_size
    order = task.epoch_indices(len(dataset.train), cfg.seed, 0, getattr(cfg.model, "context_length", None))
    if task.name == "vae":  # the same noise on both backends: a fixed draw instead of each framework's RNG
        eps = np.random.default_rng(5).standard_normal((batch_size, cfg.model.latent_dim)).astype(np.float32)
        monkeypatch.setattr(torch, "randn", lambda *a, **k: torch.from_numpy(eps.copy()))
        kb.model.sample_noise = lambda shape, seed=None: tf.constant(eps)

    before_torch = {n: a.copy() for n, a in tb.named_weights()}
    for step in range(2):
        index = order[step * batch_size:(step + 1) * batch_size]
        tb.train_step(index, cfg.train.lr, step=step + 1)
        kb.train_step(index, cfg.train.lr, step=step + 1)
        lt, lk = tb.pop_train_metrics(), kb.pop_train_metrics()
        assert lt.keys() == lk.keys()
        for k in lt:
            err = abs(lt[k] - lk[k]) / max(abs(lt[k]), 1e-12)
            note(f"{case} loss ({optimizer})", err)
            assert err <= 1e-5, f"step {step + 1} {k}: torch {lt[k]} tensorflow {lk[k]}"

    after_torch = dict(tb.named_weights())
    after_tf = torch_names(kb)
    lr = cfg.train.lr
    for name, w in after_torch.items():
        if name.endswith("num_batches_tracked"):
            continue
        other = after_tf[name if name in after_tf else "transformer.wte.weight"]
        moved = w - before_torch[name]
        # an element whose gradient is mathematically zero (a key bias under softmax, a pixel that
        # is always 0) gets rounding noise as its gradient in both frameworks, and Adam normalises
        # noise: so the absolute tolerance is a small fraction of a step of size lr
        err = float(np.abs(w - other).max())
        note(f"{case} weights ({optimizer})", W.max_relative_error(w, other))
        assert err <= 1e-4 * float(np.abs(w).max()) + 1e-3 * lr, f"{name}: weights differ by {err:.2e}"
        if np.abs(moved).max() > 0:  # the update itself, not only the weights, agrees
            update_err = W.max_relative_error(moved, other - before_torch[name])
            note(f"{case} update ({optimizer})", update_err)
            assert update_err <= 5e-3, f"{name}: update differs by {update_err:.2e} of its size"

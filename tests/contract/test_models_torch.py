"""Contract tests for every PyTorch model, generated from the registry.

A model registered with a "torch" builder is covered here with no new test code: it is built at
its spec's defaults on its `default_data` and at each of its spec's `test_variants`, and must
(1) have exactly the parameter count its spec computes without torch, (2) return the outputs its
task expects, (3) lower a finite loss over a few Adam steps on a fixed batch, and (4) survive a
safetensors save/load into a freshly built model with identical outputs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_model, save_model  # noqa: E402

from airlab.registry import builder, list_models, spec_class  # noqa: E402
from airlab.specs.base import DataInfo  # noqa: E402

TASKS = {"classification", "reconstruction", "vae", "lm"}
ENTRIES = [e for e in list_models() if "torch" in e.builders]
CASES = [
    pytest.param(e, variant, id=f"{e.name}-{'default' if i == 0 else f'variant{i}'}")
    for e in ENTRIES
    for i, variant in enumerate([{}, *spec_class(e.name).test_variants])
]
BATCH = 4
LM_STEPS = 16  # tokens per sequence in the LM batch (at most the spec's context_length)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models and batches are tiny: intra-op threads only add synchronisation, which on a
    busy shared machine can cost 100x. Restored afterwards for the rest of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(entry, variant: dict, seed: int = 0):
    spec = spec_class(entry.name)(**variant)
    info = type(spec).default_data
    torch.manual_seed(seed)
    return spec, info, builder(entry.name, "torch")(spec, info)


def make_batch(task: str, spec, info: DataInfo) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(1234)
    if task == "lm":
        t = min(spec.context_length, LM_STEPS)
        idx = torch.randint(0, info.vocab_size, (BATCH, t + 1), generator=g)
        return idx[:, :-1], idx[:, 1:]  # inputs and next-token targets, (B, T) each
    x = torch.rand(BATCH, *info.input_shape, generator=g)  # float32 in [0, 1]
    y = torch.randint(0, info.num_classes, (BATCH,), generator=g) if task == "classification" else None
    return x, y


def task_loss(task: str, spec, out, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    if task == "classification":
        return F.cross_entropy(out, y)
    if task == "reconstruction":
        if getattr(spec, "loss", "bce") == "mse":
            return F.mse_loss(torch.sigmoid(out), x)
        return F.binary_cross_entropy_with_logits(out, x)
    if task == "vae":
        recon, mu, logvar = out
        bce = F.binary_cross_entropy_with_logits(recon, x, reduction="sum") / x.shape[0]  # per sample
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
        return bce + getattr(spec, "beta", 1.0) * kl
    if task == "lm":
        return F.cross_entropy(out.flatten(0, 1), y.flatten())
    raise AssertionError(f"no contract loss for task {task!r}")


def check_outputs(task: str, spec, info: DataInfo, out, x: torch.Tensor) -> None:
    if task == "classification":
        assert out.shape == (x.shape[0], info.num_classes)
    elif task == "reconstruction":
        assert out.shape == x.shape
    elif task == "vae":
        recon, mu, logvar = out
        assert recon.shape == x.shape
        assert mu.shape == logvar.shape == (x.shape[0], spec.latent_dim)
    elif task == "lm":
        assert out.shape == (*x.shape, info.vocab_size)
    tensors = out if isinstance(out, tuple) else (out,)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors)


def outputs_equal(a, b) -> bool:
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    return len(a) == len(b) and all(torch.equal(s, t) for s, t in zip(a, b))


def test_registry_has_torch_models():
    assert ENTRIES, "no model has a torch builder"
    assert {e.task for e in ENTRIES} <= TASKS


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


@pytest.mark.parametrize("entry,variant", CASES)
def test_num_params_matches_torch(entry, variant):
    spec, info, model = make(entry, variant)
    assert spec.num_params(info) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("entry,variant", CASES)
def test_forward_shapes(entry, variant):
    spec, info, model = make(entry, variant)
    x, _ = make_batch(entry.task, spec, info)
    model.train()
    check_outputs(entry.task, spec, info, model(x), x)
    model.eval()
    with torch.no_grad():
        check_outputs(entry.task, spec, info, model(x), x)
        check_outputs(entry.task, spec, info, model(x[:1]), x[:1])  # batch of one
        assert outputs_equal(model(x), model(x)), "eval mode must be deterministic"


@pytest.mark.parametrize("entry,variant", CASES)
def test_loss_decreases_on_a_fixed_batch(entry, variant):
    spec, info, model = make(entry, variant)
    x, y = make_batch(entry.task, spec, info)
    model.train()

    def loss_now() -> float:  # same dropout masks / VAE noise each time: only the weights differ
        torch.manual_seed(99)
        with torch.no_grad():
            return task_loss(entry.task, spec, model(x), x, y).item()

    before = loss_now()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(15):
        opt.zero_grad(set_to_none=True)
        loss = task_loss(entry.task, spec, model(x), x, y)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    after = loss_now()
    assert after == after and after < before, f"loss did not decrease: {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("entry,variant", CASES)
def test_safetensors_round_trip(entry, variant, tmp_path: Path):
    spec, info, model = make(entry, variant, seed=0)
    x, _ = make_batch(entry.task, spec, info)
    with torch.no_grad():
        model.train()(x)  # move any running statistics (BatchNorm) away from their initial values
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))

    _, _, fresh = make(entry, variant, seed=1)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert not outputs_equal(model(x), fresh(x)), "two seeds gave the same weights"
        missing, unexpected = load_model(fresh, str(path))
        assert not missing and not unexpected
        assert outputs_equal(model(x), fresh(x))


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
        builder(entry.name, "torch")(spec, bad)
    with pytest.raises(ValueError):
        spec.num_params(bad)


IMAGE_CASES = [c for c in CASES if len(spec_class(c.values[0].name).default_data.input_shape) == 3]


@pytest.mark.parametrize("entry,variant", IMAGE_CASES)
def test_channels_last_gives_the_same_outputs(entry, variant):
    spec, info, model = make(entry, variant)
    x, _ = make_batch(entry.task, spec, info)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    expected, got = (expected if isinstance(expected, tuple) else (expected,)), (got if isinstance(got, tuple) else (got,))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_specs_need_no_framework():
    """Spec classes and their parameter counts import neither torch nor tensorflow."""
    code = (
        "import sys\n"
        "from airlab.registry import spec_classes\n"
        "for cls in spec_classes():\n"
        "    spec = cls()\n"
        "    spec.num_params(cls.default_data)\n"
        "    [cls(**v).num_params(cls.default_data) for v in cls.test_variants]\n"
        "bad = sorted(m for m in ('torch', 'tensorflow', 'keras', 'numpy') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# Published parameter counts of the classic architectures the specs reproduce (see each spec's
# docstring and shared/reference/results.md). Only models whose published count is known appear.
CLASSIC_COUNTS = [
    ("mlp", {}, DataInfo((1, 28, 28), num_classes=10), 669_706),  # Keras mnist_mlp.py
    ("cnn", {}, DataInfo((1, 28, 28), num_classes=10), 1_199_882),  # Keras mnist_cnn.py / pytorch examples
    ("cnn", {"pool_after": [0, 1], "dense": [], "conv_dropout": 0.5, "dropout": 0.0},
     DataInfo((1, 28, 28), num_classes=10), 34_826),  # keras-io simple MNIST convnet
    ("autoencoder", {}, DataInfo((1, 28, 28)), 28_353),  # keras-io convolutional autoencoder
    ("vae", {}, DataInfo((1, 28, 28)), 652_824),  # pytorch/examples vae
    ("vae", {"kind": "conv", "channels": [32, 64], "hidden": [16], "latent_dim": 2},
     DataInfo((1, 28, 28)), 134_165),  # keras-io VAE (encoder 69,076 + decoder 65,089)
    ("transformer", {}, DataInfo((), vocab_size=65), 804_096),  # nanoGPT CPU run: 0.80M + 8,192 wpe
]


@pytest.mark.parametrize("name,fields,info,expected", CLASSIC_COUNTS, ids=lambda v: v if isinstance(v, str) else None)
def test_classic_parameter_counts(name, fields, info, expected):
    spec = spec_class(name)(**fields)
    assert spec.num_params(info) == expected
    model = builder(name, "torch")(spec, info)
    assert sum(p.numel() for p in model.parameters()) == expected

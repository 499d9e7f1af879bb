"""Contract tests that only PyTorch has, generated from the registry. Everything that holds on
every backend (counts, outputs, losses, safetensors round trips, ...) is in test_models.py."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from adapters import adapter  # noqa: E402
from airlab.registry import list_models, spec_class  # noqa: E402

TORCH = adapter("torch")
IMAGE_CASES = [
    pytest.param(e, variant, id=f"{e.name}-{'default' if i == 0 else f'variant{i}'}")
    for e in list_models()
    if len(spec_class(e.name).default_data.input_shape) == 3
    for i, variant in enumerate([{}, *spec_class(e.name).test_variants])
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with TORCH.numerics():
        yield


@pytest.mark.parametrize("entry,variant", IMAGE_CASES)
def test_channels_last_gives_the_same_outputs(entry, variant):
    spec = spec_class(entry.name)(**variant)
    info = type(spec).default_data
    model = TORCH.build(entry.name, spec, info).eval()
    x = torch.rand(4, *info.input_shape, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        expected = TORCH.arrays(model(x))
        model = model.to(memory_format=torch.channels_last)
        got = TORCH.arrays(model(x.contiguous(memory_format=torch.channels_last)))
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(torch.from_numpy(g), torch.from_numpy(e), rtol=1e-4, atol=1e-5)

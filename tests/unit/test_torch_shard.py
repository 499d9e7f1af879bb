"""Draws keyed to the global sample position (airlab/backends/torch/shard.py): in a run of N
processes, process r's dropout mask and VAE noise are rows r*b .. (r+1)*b of what one process
draws for the whole batch, from the same generator state, in every memory layout a layer hands
over (a convolution's output may be channels-last)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from airlab.backends.torch import shard  # noqa: E402


@pytest.fixture(autouse=True)
def _one_process_after():
    yield
    shard.configure(0, 1, None)


def _in_processes(world: int, draw, state: torch.Tensor) -> list[torch.Tensor]:
    parts = []
    for rank in range(world):
        g = torch.Generator()
        g.set_state(state)
        shard.configure(rank, world, g)
        parts.append(draw(rank))
    return parts


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "2d"])
@pytest.mark.parametrize("world", [2, 4])
def test_a_dropout_mask_of_n_processes_is_the_one_process_mask_in_rows(layout, world):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) if layout != "2d" else torch.randn(8, 40)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    state = torch.get_rng_state()
    whole = F.dropout(x, 0.3, True)  # one process: the framework's own dropout, default generator
    rows = 8 // world
    layer = shard.Dropout(0.3).train()
    parts = _in_processes(world, lambda r: layer(x[r * rows:(r + 1) * rows]), state)
    assert torch.equal(torch.cat(parts), whole)


def test_the_vae_noise_of_n_processes_is_the_one_process_noise_in_rows():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    whole = torch.randn((8, 6))
    parts = _in_processes(2, lambda r: shard.randn((4, 6), device="cpu"), state)
    assert torch.equal(torch.cat(parts), whole)


def test_one_process_and_an_explicit_generator_draw_as_the_framework_does():
    shard.configure(0, 1, None)
    torch.manual_seed(2)
    a = shard.randn((3, 4), device="cpu")
    torch.manual_seed(2)
    assert torch.equal(a, torch.randn(3, 4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    shard.configure(1, 2, torch.Generator())  # evaluation's own generator wins in any process
    assert torch.equal(shard.randn((3, 4), device="cpu", generator=g1), torch.randn(3, 4, generator=g2))

"""Randomness that does not depend on how many processes share a batch.

In a run of N processes (DistributedDataParallel) each process computes a contiguous share of
every global batch. Dropout masks and the VAE's noise are drawn here for the whole global batch,
from a generator that is the same in every process, and each process keeps the rows of its own
share: the mask of a sample depends on its position in the global batch, not on the rank, so a
run of N processes draws the same masks as a run of one (with train.grad_accum 1; the micro-
batches of accumulation are per process). On one process this module changes nothing: it calls
the framework's own dropout and randn on the default generator, as every model always did.

Kernels that draw their own randomness from the device's default generator (the dropout inside
scaled_dot_product_attention and inside nn.LSTM/nn.GRU) cannot be keyed this way: there each
process's default generator is seeded from (seed, rank) (airlab/backends/torch/backend.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Shard:
    rank = 0
    world = 1
    generator: torch.Generator | None = None  # the same state in every process


SHARD = _Shard()


def configure(rank: int, world: int, generator: torch.Generator | None) -> None:
    """Set by the backend once the model is built (world 1: the framework's own draws)."""
    SHARD.rank, SHARD.world, SHARD.generator = rank, world, (generator if world > 1 else None)


def _mine(full: torch.Tensor, rows: int) -> torch.Tensor:
    return full[SHARD.rank * rows:(SHARD.rank + 1) * rows]


def _global_like(x: torch.Tensor, rows: int) -> torch.Tensor:
    """An empty tensor for the global batch of `x`, laid out as `x` is (F.dropout draws into
    `empty_like(x)`, in memory order: a convolution's output may be channels-last). With the batch
    dimension outermost, the same strides hold for more rows, and the first rows in memory are the
    first rows of the batch."""
    shape = (rows * SHARD.world, *x.shape[1:])
    inner = x.numel() // max(rows, 1)
    dense = x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
    if x.dim() > 1 and x.stride(0) == inner and dense:
        return torch.empty_strided(shape, x.stride(), dtype=x.dtype, device=x.device)
    return torch.empty(shape, dtype=x.dtype, device=x.device)


class Dropout(nn.Dropout):
    """nn.Dropout whose mask, in a run of several processes, is keyed to the global sample
    position (drawn for the global batch and sliced); on one process exactly nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if SHARD.world == 1 or not self.training or self.p == 0.0:
            return F.dropout(x, self.p, self.training, self.inplace)
        keep = 1.0 - self.p
        rows = x.shape[0]
        noise = _global_like(x, rows)
        noise.bernoulli_(keep, generator=SHARD.generator)  # what F.dropout draws for the global batch
        return x * _mine(noise, rows).div_(keep)


def randn(shape, *, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise of `shape` (rows first); keyed to the global sample position in a run
    of several processes unless an explicit `generator` is given (evaluation's own)."""
    if generator is not None or SHARD.world == 1:
        return torch.randn(shape, device=device, generator=generator)
    rows = shape[0]
    full = torch.randn((rows * SHARD.world, *shape[1:]), device=device, generator=SHARD.generator)
    return _mine(full, rows)

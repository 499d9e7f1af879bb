"""What each suite measures: shapes, sizes, repeats. Data, so a test can run a tiny plan.

The quick suite takes a few large squares per dtype and short windows (under 60 s on 2 CPU
cores); the full suite sweeps M, N and K over a grid in the style of the maximum-achievable-matmul
finders and reports the best shape, with longer windows and more repeats.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

KiB = 2**10
MiB = 2**20
GiB = 2**30


def _grid(sizes: list[int]) -> tuple[tuple[int, int, int], ...]:
    return tuple(itertools.product(sizes, sizes, sizes))


@dataclass(frozen=True)
class Plan:
    name: str
    cpu_shapes: tuple[tuple[int, int, int], ...]
    gpu_shapes: tuple[tuple[int, int, int], ...]
    warmup: int = 2
    warmup_s: float = 0.25  # CPU: warm-up lasts at least this long (first products in a process run slower)
    repeats: int = 5
    min_window_s: float = 0.05  # per timed repeat on the CPU (GPU iterations are timed one by one)
    budget_s: float = 1.5  # timing of one shape or copy stops after this once 3 repeats are done
    gpu_warmup: int = 5
    gpu_repeats: int = 20
    cpu_copy_bytes: int = 128 * MiB  # well beyond any last-level cache
    gpu_copy_bytes: int = 1 * GiB
    host_copy_bytes: int = 256 * MiB
    allreduce_bytes: int = 256 * MiB
    allreduce_repeats: int = 10
    # all-reduce across the processes of a run (`airlab bench --nproc N`, or under torchrun): message
    # sizes (fewer and smaller on the CPU, where gloo moves a few GB/s at best) and warm-up calls
    allreduce_cpu_sizes: tuple[int, ...] = (1 * KiB, 64 * KiB, 1 * MiB, 8 * MiB)
    allreduce_gpu_sizes: tuple[int, ...] = (1 * KiB, 32 * KiB, 1 * MiB, 16 * MiB, 64 * MiB)
    allreduce_warmup: int = 3
    # training: fixed sizes so machines and frameworks compare
    train_models: tuple[str, ...] | None = None  # None: every registered model
    train_batch: dict = field(default_factory=lambda: {"image": 64, "lm": 16})
    train_warmup_steps: int = 2
    train_repeats: int = 3
    train_window_s: float = 0.6  # all repeats together
    train_budget_s: float = 1.5  # timing of one model stops after this once 3 repeats are done
    train_all_devices: bool = False  # else only the first device of each kind (cpu, first GPU)
    shapes_size: int = 1024  # generated `shapes` images (train + val)
    pycorpus_size: int = 50_000  # characters
    seed: int = 0
    suites: tuple[str, ...] = ("matmul", "memory", "interconnect", "training")

    def with_(self, **changes) -> "Plan":
        return replace(self, **changes)


QUICK = Plan(
    name="quick",
    cpu_shapes=((1024, 1024, 1024), (2048, 2048, 2048)),
    gpu_shapes=((4096, 4096, 4096), (8192, 8192, 8192)),
)

FULL = Plan(
    name="full",
    cpu_shapes=_grid([1024, 2048, 3072]),
    gpu_shapes=_grid([4096, 8192, 12288, 16384]),
    warmup=3, warmup_s=0.5, repeats=7, min_window_s=0.2, budget_s=20.0, gpu_warmup=10, gpu_repeats=30,
    cpu_copy_bytes=512 * MiB, gpu_copy_bytes=4 * GiB, host_copy_bytes=1 * GiB, allreduce_bytes=1 * GiB,
    allreduce_repeats=20, allreduce_cpu_sizes=tuple(KiB * 4**i for i in range(9)),  # 1 KiB .. 64 MiB
    allreduce_gpu_sizes=tuple(KiB * 4**i for i in range(11)), allreduce_warmup=5,  # 1 KiB .. 1 GiB
    train_warmup_steps=5, train_repeats=5, train_window_s=5.0, train_budget_s=20.0,
    train_all_devices=True,
)

PLANS = {"quick": QUICK, "full": FULL}

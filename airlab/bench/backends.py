"""The seam between the framework-free bench and each framework's timing code.

A backend's bench module (`airlab/backends/<name>/bench.py`) provides `make() -> BenchBackend`.
Everything it returns is plain Python; workloads carry their own clock (CUDA events on a GPU,
the synchronized host clock on a CPU). Adding a framework is one module with these methods and
its row in airlab/backends/table.py; the training suite needs nothing more than the training backend
itself (airlab.backends.backend_class), so it covers a framework as soon as that lands.

Device ids are framework-neutral: "cpu", "cuda:0", "cuda:1", ...
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, Protocol

from airlab.bench.harness import Clock
from airlab.errors import BackendUnavailable
from airlab.backends import table

BENCH_MODULES = {row.name: row.bench for row in table.ROWS}


class BenchWorkload(Protocol):
    clock: Clock
    flush: Callable[[], None] | None  # evicts the device cache between timed iterations, or None
    # optional: `min_window_s` (float | None) makes a host-clocked GPU workload time several iterations
    # per window; `notes` (tuple of str) go into the figure's notes

    def run(self) -> None: ...

    def close(self) -> None: ...


class BenchBackend(Protocol):
    name: str

    def environment(self) -> dict:
        """Framework and runtime versions (framework, CUDA, cuDNN, threads)."""

    def devices(self) -> list[dict]:
        """Every device it can bench: {'id', 'kind': 'cpu'|'gpu', 'index', 'name', 'uuid', 'pci',
        'capability', 'memory_bytes', 'l2_bytes', 'threads'} (unknown facts may be missing)."""

    def matmul_dtypes(self, device: str) -> list[str]:
        """Of fp32, tf32, bf16, fp16, fp8: those this device multiplies natively."""

    def matmul(self, device: str, dtype: str, m: int, n: int, k: int, seed: int) -> BenchWorkload: ...

    def copy_kinds(self, device: str) -> list[str]:
        """'cpu' on the CPU; 'd2d', 'h2d-pinned', 'h2d-pageable', 'd2h-pinned', 'd2h-pageable' on a GPU."""

    def copy(self, device: str, kind: str, nbytes: int, seed: int) -> BenchWorkload: ...

    def plain_matmul_seconds(self, device: str, dtype: str, m: int, n: int, k: int, *, iters: int,
                             rounds: int) -> list[float]:
        """Seconds per product of a plain framework loop (for --verify), one value per round."""

    def allreduce(self, devices: list[str], nbytes: int, *, warmup: int, repeats: int) -> dict:
        """{'seconds': [per repeat], 'per_rank_seconds': {device: median}} for a sum all-reduce.
        Optional: a backend without it (or with `allreduce = None`) has its all-reduce skipped, with
        the reason."""


def framework_installed(name: str) -> bool:
    return table.get(name).installed()


def installed_backends() -> list[str]:
    """Backends whose framework is importable, in the table's order."""
    return [row.name for row in table.ROWS if row.installed()]


def has_bench_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(BENCH_MODULES[name]) is not None
    except ModuleNotFoundError:  # the backend's package itself is missing
        return False


def load(name: str) -> BenchBackend:
    """The bench backend for `name` (imports its framework); exit 4 when it cannot be had."""
    if name not in BENCH_MODULES:
        raise BackendUnavailable(f"unknown backend {name!r}", hint=f"choose one of {', '.join(BENCH_MODULES)}")
    if not framework_installed(name):
        from airlab.registry import require_framework

        require_framework(name)
    if not has_bench_module(name):
        raise BackendUnavailable(f"the {name} backend has no bench module in this airlab version",
                                 hint=f"use --backend {table.BACKENDS[0]}")
    return importlib.import_module(BENCH_MODULES[name]).make()

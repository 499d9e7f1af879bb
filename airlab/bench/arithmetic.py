"""How much work each benchmark does: FLOPs of a matmul, bytes of a copy, all-reduce bandwidth.

Conventions (stated in every JSON result under `method`):

- matmul: C(M, N) = A(M, K) @ B(K, N) is 2*M*N*K FLOPs (one multiply and one add per term).
- copy within one memory (CPU RAM, or GPU memory device-to-device): bytes read + bytes written,
  i.e. 2 x the buffer size, as STREAM's copy counts (write-allocate traffic not counted).
- host<->device: the buffer size: bytes moved across the link in one direction.
- all-reduce: bus bandwidth as nccl-tests reports it: (size / time) x 2(n-1)/n, the bandwidth a
  ring all-reduce needs per link, comparable across GPU counts.
"""

from __future__ import annotations

CONVENTIONS = {
    "matmul": "2*M*N*K FLOPs per C(M,N) = A(M,K) @ B(K,N)",
    "copy": "bytes read + bytes written = 2 x buffer size (CPU RAM copy, GPU device-to-device copy)",
    "host_device": "buffer size: bytes moved across the host-device link in one direction",
    "allreduce": "bus bandwidth = (buffer size / time) x 2(n-1)/n, as nccl-tests reports it",
    "allreduce_processes": "per message size: algorithm bandwidth = size / time and bus bandwidth = algorithm "
                           "bandwidth x 2(n-1)/n (nccl-tests' definitions), fp32 sum; time = median over timed "
                           "repeats of the slowest rank's time per all-reduce (each repeat starts after a barrier)",
    "training": "training samples per second (examples for classifiers and autoencoders, context windows for "
                "language models), optimizer step included, data already on the device",
}

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


def matmul_flops(m: int, n: int, k: int) -> int:
    for name, v in (("m", m), ("n", n), ("k", k)):
        if v < 1:
            raise ValueError(f"Expected `{name}` >= 1. Received: {name}={v}")
    return 2 * m * n * k


def matmul_bytes(m: int, n: int, k: int, dtype: str, out_dtype: str | None = None) -> int:
    """Bytes of A, B and C once each: the minimum memory traffic of the product."""
    e = DTYPE_BYTES[dtype]
    out = DTYPE_BYTES[out_dtype or ("bf16" if dtype == "fp8" else dtype)]
    return (m * k + k * n) * e + m * n * out


def arithmetic_intensity(m: int, n: int, k: int, dtype: str) -> float:
    """FLOPs per byte of minimum traffic (large squares are compute-bound, thin shapes are not)."""
    return matmul_flops(m, n, k) / matmul_bytes(m, n, k, dtype)


def copy_bytes(buffer_bytes: int, kind: str) -> int:
    """Bytes counted for one copy of `buffer_bytes` (see the module docstring)."""
    if kind in ("cpu", "d2d"):
        return 2 * buffer_bytes
    if kind.startswith(("h2d", "d2h")):
        return buffer_bytes
    raise ValueError(f"unknown copy kind {kind!r}")


def allreduce_algorithm_bandwidth(buffer_bytes: int, seconds: float) -> float:
    """nccl-tests' algorithm bandwidth in B/s: the buffer size over the time of one all-reduce."""
    if seconds <= 0:
        raise ValueError(f"Expected seconds > 0. Received: seconds={seconds}")
    return buffer_bytes / seconds


def allreduce_bus_bandwidth(buffer_bytes: int, seconds: float, n: int) -> float:
    """nccl-tests' bus bandwidth in B/s for an all-reduce of `buffer_bytes` on `n` ranks."""
    if n < 1 or seconds <= 0:
        raise ValueError(f"Expected n >= 1 and seconds > 0. Received: n={n}, seconds={seconds}")
    return buffer_bytes / seconds * (2 * (n - 1) / n)


def rate(work: float, seconds: float) -> float:
    """Work per second (FLOP/s, B/s, samples/s)."""
    return work / seconds if seconds > 0 else float("inf")

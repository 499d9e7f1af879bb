"""PyTorch side of `airlab bench`: devices, workloads and clocks for the framework-free harness.

Everything here is timing mechanics; what is measured, how often and how it is judged lives in
airlab/bench/. On a GPU a workload times itself with CUDA events on the current stream and
flushes the L2 cache (by writing a buffer twice its size) before every timed iteration; on the
CPU it uses the host clock (torch's CPU ops are synchronous). Data are random normal, never
zeros (zeros flatter the power draw and so the clocks).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from airlab.bench.harness import WallClock

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class CudaEventClock:
    """CUDA events on the device's current stream; one synchronize after all repeats."""

    def __init__(self, device: torch.device):
        self.device = device

    def _mark(self):
        e = torch.cuda.Event(enable_timing=True)
        e.record(torch.cuda.current_stream(self.device))
        return e

    def start(self):
        return self._mark()

    def stop(self):
        return self._mark()

    def finish(self) -> None:
        torch.cuda.synchronize(self.device)

    def elapsed(self, start, stop) -> float:
        return start.elapsed_time(stop) / 1e3


class _Workload:
    def __init__(self, device: torch.device, run, tensors: list, precision: str | None = None):
        self.device = device
        self.run = run
        self._tensors = tensors
        self._precision_before = None
        if precision is not None:
            self._precision_before = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision(precision)
        if device.type == "cuda":
            self.clock = CudaEventClock(device)
            props = torch.cuda.get_device_properties(device)
            l2 = int(getattr(props, "L2_cache_size", 0) or 0) or 64 * 2**20
            self._scratch = torch.empty(2 * l2, dtype=torch.uint8, device=device)
            self.flush = self._flush
        else:
            self.clock = WallClock()
            self._scratch = None
            self.flush = None

    def _flush(self) -> None:
        self._scratch.fill_(1)  # writes twice the L2 size: evicts what the last iteration left there

    def close(self) -> None:
        if self._precision_before is not None:
            torch.set_float32_matmul_precision(self._precision_before)
        self._tensors.clear()
        self._scratch = None
        self.run = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _random(shape, device, dtype, gen) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=torch.float32, generator=gen).to(dtype)


class TorchBench:
    name = "torch"

    def __init__(self):
        self._devices = None

    # -- facts ---------------------------------------------------------------------------------
    def environment(self) -> dict:
        return {"framework": "torch", "version": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                "threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability()}

    def devices(self) -> list[dict]:
        if self._devices is not None:
            return self._devices
        out = [{"id": "cpu", "kind": "cpu", "index": None, "threads": torch.get_num_threads(),
                "capability": torch.backends.cpu.get_cpu_capability()}]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                uuid = getattr(p, "uuid", None)
                pci = None
                if getattr(p, "pci_bus_id", None) is not None:
                    pci = [int(getattr(p, "pci_domain_id", 0)), int(p.pci_bus_id), int(getattr(p, "pci_device_id", 0))]
                out.append({"id": f"cuda:{i}", "kind": "gpu", "index": i, "name": p.name,
                            "uuid": str(uuid) if uuid is not None else None, "pci": pci,
                            "capability": f"{p.major}.{p.minor}", "memory_bytes": int(p.total_memory),
                            "l2_bytes": int(getattr(p, "L2_cache_size", 0) or 0) or None,
                            "multiprocessors": int(p.multi_processor_count)})
        self._devices = out
        return out

    def _device(self, device: str) -> torch.device:
        d = torch.device(device)
        if d.type == "cuda":
            if not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count():
                from airlab.errors import EnvironmentProblem

                raise EnvironmentProblem(f"{device}: torch {torch.__version__} sees "
                                         f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA devices",
                                         hint="use --device cpu, or check CUDA_VISIBLE_DEVICES")
            torch.cuda.set_device(d)
        return d

    def matmul_dtypes(self, device: str) -> list[str]:
        d = torch.device(device)
        if d.type == "cpu":
            return ["fp32", "bf16"]
        major, minor = torch.cuda.get_device_capability(d)
        dtypes = ["fp32"]
        if major >= 8:
            dtypes.append("tf32")
        if torch.cuda.is_bf16_supported():
            dtypes.append("bf16")
        dtypes.append("fp16")
        if (major, minor) >= (8, 9) and hasattr(torch, "_scaled_mm") and hasattr(torch, "float8_e4m3fn"):
            dtypes.append("fp8")
        return dtypes

    # -- workloads -----------------------------------------------------------------------------
    def matmul(self, device: str, dtype: str, m: int, n: int, k: int, seed: int):
        d = self._device(device)
        gen = torch.Generator(device=d).manual_seed(seed)
        if dtype == "fp8":
            a = _random((m, k), d, torch.float32, gen).to(torch.float8_e4m3fn)
            b = _random((n, k), d, torch.float32, gen).to(torch.float8_e4m3fn).t()  # column-major (K, N)
            one = torch.ones((), device=d, dtype=torch.float32)

            def run():
                torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

            return _Workload(d, run, [a, b, one])
        a = _random((m, k), d, DTYPES[dtype], gen)
        b = _random((k, n), d, DTYPES[dtype], gen)
        out = torch.empty((m, n), device=d, dtype=DTYPES[dtype])

        def run():
            torch.mm(a, b, out=out)

        precision = {"fp32": "highest", "tf32": "high"}.get(dtype)
        return _Workload(d, run, [a, b, out], precision=precision)

    def copy_kinds(self, device: str) -> list[str]:
        if torch.device(device).type == "cpu":
            return ["cpu"]
        return ["d2d", "h2d-pinned", "h2d-pageable", "d2h-pinned", "d2h-pageable"]

    def copy(self, device: str, kind: str, nbytes: int, seed: int):
        d = self._device(device)
        n = max(1, nbytes // 4)
        gen = torch.Generator().manual_seed(seed)
        if kind in ("cpu", "d2d"):
            src = torch.randn(n, device=d, generator=torch.Generator(device=d).manual_seed(seed))  # made where it lives
            dst = torch.empty_like(src)
            return _Workload(d, lambda: dst.copy_(src), [src, dst])
        direction, memory = kind.split("-")
        host = torch.randn(n, generator=gen)
        pinned = memory == "pinned"
        if pinned:
            host = host.pin_memory()
        dev = torch.empty(n, device=d)
        if direction == "h2d":
            return _Workload(d, lambda: dev.copy_(host, non_blocking=pinned), [host, dev])
        return _Workload(d, lambda: host.copy_(dev, non_blocking=pinned), [host, dev])

    def plain_matmul_seconds(self, device: str, dtype: str, m: int, n: int, k: int, *, iters: int,
                             rounds: int) -> list[float]:
        """What a user would write: torch.mm in a loop, timed with perf_counter and one sync."""
        d = self._device(device)
        sync = (lambda: torch.cuda.synchronize(d)) if d.type == "cuda" else (lambda: None)
        before = torch.get_float32_matmul_precision()
        if dtype in ("fp32", "tf32"):
            torch.set_float32_matmul_precision("highest" if dtype == "fp32" else "high")
        try:
            if dtype == "fp8":
                a = torch.randn(m, k, device=d).to(torch.float8_e4m3fn)
                b = torch.randn(n, k, device=d).to(torch.float8_e4m3fn).t()
                one = torch.ones((), device=d)

                def mm():
                    return torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
            else:
                a = torch.randn(m, k, device=d).to(DTYPES[dtype])
                b = torch.randn(k, n, device=d).to(DTYPES[dtype])

                def mm():
                    return torch.mm(a, b)
            mm()
            sync()
            out = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                for _ in range(iters):
                    mm()
                sync()
                out.append((time.perf_counter() - t0) / iters)
            return out
        finally:
            torch.set_float32_matmul_precision(before)

    # -- several GPUs --------------------------------------------------------------------------
    def allreduce(self, devices: list[str], nbytes: int, *, warmup: int, repeats: int) -> dict:
        """A sum all-reduce of `nbytes` of fp32 on each GPU through torch.distributed (NCCL),
        one process per GPU, rendezvous through a file (no network)."""
        import torch.distributed as dist
        import torch.multiprocessing as mp

        if not dist.is_available() or not dist.is_nccl_available():
            from airlab.errors import EnvironmentProblem

            raise EnvironmentProblem("torch.distributed with NCCL is not available in this torch build")
        indices = [torch.device(x).index for x in devices]
        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        with tempfile.TemporaryDirectory() as tmp:
            init = "file://" + os.path.join(tmp, "rendezvous")
            procs = [ctx.Process(target=_allreduce_rank, args=(r, indices, init, nbytes, warmup, repeats, queue))
                     for r in range(len(indices))]
            for p in procs:
                p.start()
            results = [queue.get() for _ in procs]
            for p in procs:
                p.join(timeout=60)
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"all-reduce failed: {errors[0]}")
        by_rank = {r["rank"]: r["seconds"] for r in results}
        # a collective ends when its slowest rank ends: per repeat, the max over ranks
        seconds = [max(by_rank[r][i] for r in by_rank) for i in range(repeats)]
        return {"seconds": seconds,
                "per_rank_seconds": {devices[r]: statistics.median(s) for r, s in sorted(by_rank.items())}}


    # -- the processes of a run ----------------------------------------------------------------
    def process_group_allreduce(self, device_kind: str, sizes: list[int], *, warmup: int, repeats: int,
                                inners: list[int], seed: int = 0) -> dict:
        """Sum all-reduces of fp32 messages of each size over the process group of this run
        (joined from the launcher's variables, or the one that exists: gloo on the CPU, NCCL on
        this local rank's GPU). Every rank times its own calls: warm-up, then `repeats` timed
        windows of `inners[i]` calls, each window after a barrier (on the CPU group, so the GPU
        stream is idle when a window starts; CUDA events time it on a GPU, the host clock on the
        CPU). Every rank must pass the same arguments.

        Returns {'rank', 'world_size', 'backend', 'device', 'seconds'}: seconds[rank][size][repeat]
        per all-reduce, gathered on rank 0 (None on the other ranks). The message is all-reduced
        in place, so its values grow n-fold per call until they saturate at +-inf: harmless for
        the timing (infinities cost what finite values do; values only grow, never subnormal)."""
        import types

        import torch.distributed as dist

        from airlab.backends.torch import distributed
        from airlab.errors import EnvironmentProblem

        existed = dist.is_available() and dist.is_initialized()  # a group someone else made stays theirs
        collective = distributed.join(types.SimpleNamespace(device="cuda" if device_kind == "gpu" else "cpu"))
        if collective is None:
            raise EnvironmentProblem("the all-reduce bench needs several processes, and this is the only one",
                                     hint="start it with airlab bench --nproc N (or torchrun)")
        cuda = collective.backend == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        times = torch.zeros(len(sizes), repeats, dtype=torch.float64)
        try:
            for i, (nbytes, inner) in enumerate(zip(sizes, inners)):
                gen = torch.Generator(device=device).manual_seed(seed + collective.rank)
                x = torch.randn(max(1, nbytes // 4), device=device, generator=gen)
                for _ in range(max(1, warmup)):
                    dist.all_reduce(x)
                if cuda:
                    torch.cuda.synchronize(device)
                for j in range(repeats):
                    dist.barrier(group=collective.group)
                    if cuda:
                        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        a.record()
                        for _ in range(inner):
                            dist.all_reduce(x)
                        b.record()
                        torch.cuda.synchronize(device)
                        seconds = a.elapsed_time(b) / 1e3
                    else:
                        t0 = time.perf_counter()
                        for _ in range(inner):
                            dist.all_reduce(x)
                        seconds = time.perf_counter() - t0
                    times[i, j] = seconds / inner
                del x
            parts = [torch.empty_like(times) for _ in range(collective.world_size)]
            dist.all_gather(parts, times, group=collective.group)
            dist.barrier(group=collective.group)
        except (RuntimeError, dist.DistError) as e:
            raise distributed.lost(e, "the all-reduce bench") from None
        if not existed:
            dist.destroy_process_group()
        return {"rank": collective.rank, "world_size": collective.world_size, "backend": collective.backend,
                "device": str(device) if cuda else "cpu",
                "seconds": [p.tolist() for p in parts] if collective.rank == 0 else None}


def _allreduce_rank(rank, indices, init, nbytes, warmup, repeats, queue) -> None:
    import torch.distributed as dist

    try:
        torch.cuda.set_device(indices[rank])
        dist.init_process_group("nccl", init_method=init, rank=rank, world_size=len(indices))
        x = torch.randn(max(1, nbytes // 4), device=f"cuda:{indices[rank]}")
        for _ in range(max(1, warmup)):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            dist.barrier()
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            dist.all_reduce(x)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        dist.destroy_process_group()
        queue.put({"rank": rank, "seconds": times})
    except Exception as e:  # reported to the parent, which raises
        queue.put({"rank": rank, "error": f"{type(e).__name__}: {e}"})


def make() -> TorchBench:
    return TorchBench()

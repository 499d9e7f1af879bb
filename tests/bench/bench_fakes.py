"""Fakes and fixtures for the bench tests, imported by them as `bench_fakes`.

A virtual-time backend with GPUs, a fake NVML, a fake CPU and tiny plans. (Not a conftest.py:
other test folders import the root conftest as `conftest`, and a second one here would take its
place in sys.modules.)

The fake backend's workloads advance a virtual clock by work / rate, so every figure it yields is
known exactly and the GPU paths of the framework-free bench (peaks by name, verdicts, stragglers,
all-reduce arithmetic, telemetry marks) run on any CPU without a framework.
"""

from __future__ import annotations

import pytest

from airlab.bench.harness import Stats
from airlab.bench.peaks import CpuInfo
from airlab.bench.plans import QUICK
from airlab.bench.training import TrainingResult

GPU_RATES = {"fp32": 20e12, "tf32": 400e12, "bf16": 800e12, "fp16": 790e12, "fp8": 2500e12}  # FLOP/s
CPU_RATES = {"fp32": 150e9, "bf16": 40e9}
COPY_RATES = {"cpu": 20e9, "d2d": 4.3e12, "h2d-pinned": 50e9, "h2d-pageable": 10e9, "d2h-pinned": 50e9,
              "d2h-pageable": 10e9}  # counted B/s


class VirtualTime:
    def __init__(self):
        self.now = 0.0


class FakeClock:
    def __init__(self, vt: VirtualTime):
        self.vt = vt

    def start(self):
        return self.vt.now

    def stop(self):
        return self.vt.now

    def finish(self):
        pass

    def elapsed(self, a, b):
        return b - a


class FakeWorkload:
    def __init__(self, vt: VirtualTime, seconds: float, gpu: bool):
        self.vt = vt
        self.seconds = seconds
        self.clock = FakeClock(vt)
        self.flushes = 0
        self.flush = self._flush if gpu else None
        self.closed = False

    def _flush(self):
        self.flushes += 1

    def run(self):
        self.vt.now += self.seconds

    def close(self):
        self.closed = True


class FakeBench:
    """A machine with a CPU and `len(gpus)` GPUs; `slow` scales a GPU's rates (straggler)."""

    name = "torch"

    def __init__(self, gpus=("NVIDIA H200", "NVIDIA H200"), slow=None, gpu_rates=None):
        self.vt = VirtualTime()
        self.gpus = list(gpus)
        self.slow = dict(slow or {})
        self.gpu_rates = dict(GPU_RATES, **(gpu_rates or {}))
        self.workloads: list[FakeWorkload] = []
        self.allreduce_calls = []

    def environment(self):
        return {"framework": "fake-torch", "version": "0", "threads": 2}

    def devices(self):
        out = [{"id": "cpu", "kind": "cpu", "index": None, "threads": 2}]
        for i, name in enumerate(self.gpus):
            out.append({"id": f"cuda:{i}", "kind": "gpu", "index": i, "name": name, "uuid": f"fake-{i}",
                        "pci": None, "capability": "9.0", "memory_bytes": 141 * 2**30, "l2_bytes": 50 * 2**20})
        return out

    def matmul_dtypes(self, device):
        return ["fp32", "bf16"] if device == "cpu" else ["fp32", "tf32", "bf16", "fp16", "fp8"]

    def _factor(self, device):
        return self.slow.get(device, 1.0)

    def _matmul_seconds(self, device, dtype, m, n, k):
        rate = (CPU_RATES if device == "cpu" else self.gpu_rates)[dtype] * self._factor(device)
        if device != "cpu":
            rate *= min(1.0, m / 2048)  # smaller GPU shapes reach less
        return 2 * m * n * k / rate

    def matmul(self, device, dtype, m, n, k, seed):
        wl = FakeWorkload(self.vt, self._matmul_seconds(device, dtype, m, n, k), gpu=device != "cpu")
        self.workloads.append(wl)
        return wl

    def copy_kinds(self, device):
        return ["cpu"] if device == "cpu" else ["d2d", "h2d-pinned", "h2d-pageable", "d2h-pinned", "d2h-pageable"]

    def copy(self, device, kind, nbytes, seed):
        counted = 2 * nbytes if kind in ("cpu", "d2d") else nbytes
        wl = FakeWorkload(self.vt, counted / (COPY_RATES[kind] * self._factor(device)), gpu=device != "cpu")
        self.workloads.append(wl)
        return wl

    def plain_matmul_seconds(self, device, dtype, m, n, k, *, iters, rounds):
        return [self._matmul_seconds(device, dtype, m, n, k)] * rounds

    def allreduce(self, devices, nbytes, *, warmup, repeats):
        self.allreduce_calls.append((list(devices), nbytes))
        t = nbytes / 100e9
        return {"seconds": [t] * repeats, "per_rank_seconds": {d: t for d in devices}}


class FakeNvml:
    """pynvml's surface as telemetry uses it; `reasons[i]` is GPU i's clock-event mask."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, count=2, reasons=None, other_pids=None):
        self.count = count
        self.reasons = dict(reasons or {})
        self.other_pids = dict(other_pids or {})
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-fake-{h}"

    def nvmlDeviceGetPciInfo(self, h):
        raise RuntimeError("not supported")

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1500 if self.reasons.get(h) else 1980

    def nvmlDeviceGetTemperature(self, h, kind):
        return 61

    def nvmlDeviceGetPowerUsage(self, h):
        return 650_000

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.reasons.get(h, 0)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        class P:
            def __init__(self, pid):
                self.pid = pid

        return [P(p) for p in self.other_pids.get(h, [])]

    def nvmlSystemGetDriverVersion(self):
        return "570.86.15"

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return 5

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return 16

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 1980


FAKE_CPU = CpuInfo(model_name="Fake CPU", vendor="GenuineIntel", family=6, model=85,
                   flags=frozenset({"sse", "sse2", "avx", "avx2", "fma"}), logical=2, physical=2, usable=2,
                   reported_mhz=2000.0)
FAKE_CLOCK = {"single_core_mhz": 3100.0, "all_core_mhz": 3000.0, "threads": 2, "method": "fake"}

# A plan small enough for milliseconds of real work (and microseconds of virtual time).
TINY = QUICK.with_(
    cpu_shapes=((64, 64, 64), (128, 128, 128)), gpu_shapes=((1024, 1024, 1024), (2048, 2048, 2048)),
    warmup=1, warmup_s=0.0, repeats=3, min_window_s=0.0, budget_s=5.0, gpu_warmup=1, gpu_repeats=3,
    cpu_copy_bytes=2**20, gpu_copy_bytes=2**24, host_copy_bytes=2**22, allreduce_bytes=2**24, allreduce_repeats=3,
    train_models=("mlp",), shapes_size=256, pycorpus_size=5000, train_warmup_steps=1, train_repeats=3,
    train_window_s=0.03, train_budget_s=2.0)


def fake_trainer(backend, device, model, plan, data, on_window=None):
    with on_window() if on_window else _null():
        pass
    return TrainingResult(stats=Stats.of([0.05, 0.05, 0.05]), samples_per_step=64, params=1234,
                          meta={"dataset": "shapes", "batch_size": 64, "precision": "fp32"})


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def fake_run():
    """run_bench on the fake machine: fake_run(options_kwargs..., bench=FakeBench(), nvml=FakeNvml())."""
    from airlab.bench.runner import Options, run_bench
    from airlab.bench.telemetry import Telemetry

    def run(bench=None, nvml=None, progress=None, **options):
        bench = bench or FakeBench()
        nvml = nvml or FakeNvml(count=len(bench.gpus))
        options.setdefault("plan", TINY)
        options.setdefault("backend", "torch")
        report = run_bench(Options(**options), progress, bench_loader=lambda name: bench,
                           clock_probe=lambda threads: dict(FAKE_CLOCK), cpu_info=lambda: FAKE_CPU,
                           trainer=fake_trainer,
                           telemetry_factory=lambda gpus: Telemetry(gpus, nvml_module=nvml, interval=0.01))
        return report, bench

    return run


@pytest.fixture
def tiny_plan(monkeypatch):
    """Make the CLI's quick suite tiny (real torch on the CPU, a second or two)."""
    from airlab.bench import plans

    monkeypatch.setitem(plans.PLANS, "quick", TINY.with_(suites=("matmul", "memory", "training")))
    return TINY

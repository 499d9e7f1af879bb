"""GPU-only checks of the torch bench (pytest -m gpu). Skipped, with the reason, without a CUDA device.

scripts/gpu_check.sh runs these on a machine with an NVIDIA GPU. Bounds are coarse: they catch a
wrong clock, a missing synchronize or a peak table mismatch, not a slow machine.
"""

from __future__ import annotations

import importlib.util
import statistics

import pytest


def _cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    return None


REASON = _cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"needs an NVIDIA GPU: {REASON}")]


@pytest.fixture(scope="module")
def tb():
    from airlab.backends.torch.bench import make

    return make()


def test_the_gpu_is_described_and_found_in_nvml(tb):
    from airlab.bench.telemetry import Telemetry

    gpus = [d for d in tb.devices() if d["kind"] == "gpu"]
    assert gpus and gpus[0]["id"] == "cuda:0" and gpus[0]["name"]
    tel = Telemetry(gpus)
    try:
        assert tel.problems == [], tel.problems
        with tel.window("cuda:0", cpu_bound=False) as w:
            pass
        assert w.record.gpu["samples"] >= 2 and w.record.gpu["sm_clock_mhz_max"] > 0
        assert tel.static("cuda:0").get("driver")
    finally:
        tel.close()


def test_cuda_events_agree_with_the_synchronized_host_clock(tb):
    import torch

    from airlab.bench.harness import WallClock, measure

    wl = tb.matmul("cuda:0", "bf16", 4096, 4096, 4096, seed=0)
    try:
        events = measure(wl.run, wl.clock, warmup=5, repeats=20, flush=wl.flush)
        wall = measure(wl.run, WallClock(lambda: torch.cuda.synchronize(0)), warmup=2, repeats=10, inner=20)
    finally:
        wl.close()
    assert 0.7 < events.median / wall.median < 1.5  # a missing sync would make one of them tiny


def test_the_l2_flush_buffer_is_twice_the_l2(tb):
    wl = tb.matmul("cuda:0", "fp16", 256, 256, 256, seed=0)
    try:
        l2 = next(d for d in tb.devices() if d["id"] == "cuda:0")["l2_bytes"] or 64 * 2**20
        assert wl._scratch.numel() >= 2 * l2
        assert wl.flush is not None
    finally:
        wl.close()


def test_a_quick_gpu_bench_is_plausible(tb):
    from airlab.bench.plans import QUICK
    from airlab.bench.runner import Options, run_bench

    plan = QUICK.with_(gpu_shapes=((8192, 8192, 8192),), gpu_repeats=10, train_models=("mlp",),
                       gpu_copy_bytes=2**28, host_copy_bytes=2**26, suites=("matmul", "memory", "training"))
    report = run_bench(Options(device="cuda:0", backend="torch", verify=True, plan=plan))
    figs = {f.id: f for f in report.figures}
    bf16 = figs.get("matmul/torch/cuda:0/bf16")
    assert bf16 is not None, report.skipped
    assert bf16.verdict != "suspicious", bf16.verdict_reason
    for f in report.figures:
        assert f.value > 0 and f.verdict != "suspicious", (f.id, f.verdict_reason)
        for row in f.detail.get("shapes", []):
            # the bench and a plain torch.mm loop agree within 10 % (the check)
            assert 0.9 < row["plain"]["ratio_bench_to_plain"] < 1.15, (f.id, row["plain"])
    assert figs["memory/torch/cuda:0/d2d"].work["bytes_counted"] == 2 * 2**28
    assert "training/torch/cuda:0/mlp" in figs


@pytest.mark.skipif(REASON is None and __import__("torch").cuda.device_count() < 2, reason="needs two GPUs")
def test_all_reduce_across_gpus(tb):
    import torch

    ids = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    result = tb.allreduce(ids, 2**24, warmup=2, repeats=5)
    assert len(result["seconds"]) == 5 and statistics.median(result["seconds"]) > 0
    assert set(result["per_rank_seconds"]) == set(ids)

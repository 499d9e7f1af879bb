"""The GPU paths of the bench through its seams: a fake two-GPU machine in virtual time.

Peaks matched by name, % of peak, verdicts (a fake fp8 rate above the datasheet is suspicious),
the straggler named, all-reduce bus bandwidth, host<->device against the PCIe link NVML reports,
telemetry marks from NVML, device selection.
"""

from __future__ import annotations

import pytest
from bench_fakes import FAKE_CLOCK, FakeBench, FakeNvml, TINY, fake_run  # noqa: F401 (fixtures)

from airlab.bench.arithmetic import allreduce_bus_bandwidth
from airlab.errors import EnvironmentProblem, UsageError


def by_id(report):
    return {f.id: f for f in report.figures}


def test_auto_selects_the_gpus_and_judges_them_against_the_h200_datasheet(fake_run):
    report, bench = fake_run()
    figs = by_id(report)
    assert {f.device for f in report.figures} == {"cuda:0", "cuda:1", "cuda:0,cuda:1"}  # no CPU figures
    bf16 = figs["matmul/torch/cuda:0/bf16"]
    assert bf16.value == pytest.approx(800e12)
    assert bf16.peak == 989e12 and "H200-SXM" in bf16.peak_source
    assert bf16.fraction_of_peak == pytest.approx(800 / 989)
    assert bf16.verdict == "ok"
    assert bf16.work["m"] == 2048 and len(bf16.detail["shapes"]) == 2  # best shape of the sweep
    fp8 = figs["matmul/torch/cuda:0/fp8"]
    assert fp8.verdict == "suspicious" and fp8.fraction_of_peak > 1.0
    fp32 = figs["matmul/torch/cuda:0/fp32"]
    assert fp32.verdict == "low"  # 20 of 67 TFLOP/s on CUDA cores
    d2d = figs["memory/torch/cuda:0/d2d"]
    assert d2d.value == pytest.approx(4.3e12) and d2d.peak == 4.8e12 and d2d.verdict == "ok"
    assert d2d.work["bytes_counted"] == 2 * d2d.work["buffer_bytes"]
    h2d = figs["memory/torch/cuda:0/h2d-pinned"]
    assert h2d.peak == pytest.approx(63.008e9) and h2d.verdict == "ok"  # PCIe 5 x16 from NVML
    assert h2d.work["bytes_counted"] == h2d.work["buffer_bytes"]
    assert figs["memory/torch/cuda:0/h2d-pageable"].verdict == "low"  # 10 of 63 GB/s
    # every GPU workload flushed the cache before each timed iteration and was closed
    assert all(w.closed for w in bench.workloads)
    assert all(w.flushes >= TINY.gpu_repeats for w in bench.workloads)


def test_the_all_reduce_reports_bus_bandwidth(fake_run):
    report, bench = fake_run()
    ar = by_id(report)["interconnect/torch/cuda:0,cuda:1/allreduce-2gpu"]
    devices, nbytes = bench.allreduce_calls[0]
    assert devices == ["cuda:0", "cuda:1"]
    assert ar.value == pytest.approx(allreduce_bus_bandwidth(nbytes, nbytes / 100e9, 2))
    assert ar.verdict == "n/a" and ar.unit == "B/s"
    assert set(ar.detail["per_rank_seconds"]) == {"cuda:0", "cuda:1"}


def test_a_slow_gpu_is_named_as_the_straggler(fake_run):
    report, _ = fake_run(bench=FakeBench(gpus=["NVIDIA H200"] * 4, slow={"cuda:2": 0.7}))
    assert [s["device"] for s in report.stragglers] == ["cuda:2"] * 3  # bf16, fp32 matmul and d2d copy
    assert report.stragglers[0]["shortfall"] == pytest.approx(0.3)
    assert any(line.startswith("cuda:2 is a straggler") for line in report.findings)
    report, _ = fake_run(bench=FakeBench(gpus=["NVIDIA H200"] * 4))
    assert report.stragglers == []


def test_throttling_and_other_gpu_processes_mark_the_figures(fake_run):
    nvml = FakeNvml(count=2, reasons={1: 0x4 | 0x40}, other_pids={0: [999_999]})
    report, _ = fake_run(nvml=nvml)
    g1 = by_id(report)["matmul/torch/cuda:1/bf16"]
    assert g1.marks == ["throttled"]
    assert any("sw_power_cap" in n and "hw_thermal_slowdown" in n for n in g1.notes)
    assert g1.telemetry["gpu"]["sm_clock_mhz_min"] == 1500
    assert g1.telemetry["gpu"]["reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]
    g0 = by_id(report)["matmul/torch/cuda:0/bf16"]
    assert g0.marks == ["interference"] and g0.telemetry["gpu"]["other_pids"] == [999_999]
    gpu0 = next(d for d in report.devices if d["id"] == "cuda:0")
    assert gpu0["driver"] == "570.86.15" and gpu0["peak_table_entry"] == "H200-SXM"
    assert nvml.shut


def test_an_unknown_gpu_is_reported_without_a_peak(fake_run):
    report, _ = fake_run(bench=FakeBench(gpus=["NVIDIA Future GPU 9000"]))
    bf16 = by_id(report)["matmul/torch/cuda:0/bf16"]
    assert bf16.peak is None and bf16.verdict == "n/a"
    assert next(d for d in report.devices if d["id"] == "cuda:0")["peak_table_entry"] is None


def test_all_adds_the_cpu_with_its_estimated_peak(fake_run):
    report, _ = fake_run(device="all")
    figs = by_id(report)
    cpu = figs["matmul/torch/cpu/fp32"]
    peak = 2 * FAKE_CLOCK["all_core_mhz"] * 1e6 * 32  # 2 cores x 3 GHz x AVX2+FMA
    assert cpu.peak == pytest.approx(peak) and cpu.fraction_of_peak == pytest.approx(150e9 / peak)
    assert "measured" in cpu.peak_source and "AVX2+FMA" in cpu.peak_source
    assert figs["memory/torch/cpu/cpu"].verdict == "n/a"
    assert report.host["cpu"]["clock_mhz"] == 3000.0 and report.host["cpu"]["clock_reported_mhz"] == 2000.0
    # training: the first device of each kind in the quick plan
    assert {f.device for f in report.figures if f.suite == "training"} == {"cpu", "cuda:0"}


def test_device_cpu_runs_no_gpu_suites(fake_run):
    report, bench = fake_run(device="cpu")
    assert {f.device for f in report.figures} == {"cpu"}
    assert bench.allreduce_calls == []


def test_verify_times_a_plain_loop_beside_every_shape(fake_run):
    report, _ = fake_run(device="cuda:0", verify=True)
    for f in report.figures:
        for row in f.detail.get("shapes", []):
            assert row["plain"]["ratio_bench_to_plain"] == pytest.approx(1.0)


def test_device_errors(fake_run):
    with pytest.raises(EnvironmentProblem, match="cuda:7: no such device"):
        fake_run(device="cuda:7")
    with pytest.raises(EnvironmentProblem, match="no CUDA device"):
        fake_run(device="cuda", bench=FakeBench(gpus=[]))
    with pytest.raises(UsageError, match="--device"):
        fake_run(device="gpu0")


def test_a_failing_figure_is_skipped_with_its_reason_and_the_run_goes_on(fake_run):
    class NoFp8(FakeBench):
        def matmul(self, device, dtype, m, n, k, seed):
            if dtype == "fp8":
                raise RuntimeError("fp8 needs compute capability 8.9")
            return super().matmul(device, dtype, m, n, k, seed)

    report, _ = fake_run(bench=NoFp8(), device="cuda:0")
    assert not any(f.id.endswith("/fp8") for f in report.figures)
    assert any("fp8 needs compute capability 8.9" in s["reason"] for s in report.skipped)
    assert any(f.id.endswith("/bf16") for f in report.figures)


def test_progress_hears_of_every_job(fake_run):
    events = []

    class Rec:
        def begin(self, total):
            events.append(("begin", total))

        def start(self, label):
            pass

        def advance(self, figure=None, skipped=None):
            events.append(("advance", figure.id if figure else None))

        def end(self):
            events.append(("end",))

    report, _ = fake_run(progress=Rec())
    assert events[0] == ("begin", len(report.figures)) and events[-1] == ("end",)
    assert [e[1] for e in events if e[0] == "advance"] == [f.id for f in report.figures]


def test_a_backend_without_a_bench_module_is_still_trained_on_the_cpu():
    from bench_fakes import FAKE_CPU, fake_trainer

    from airlab.bench.runner import Options, run_bench
    from airlab.bench.telemetry import Telemetry
    from airlab.errors import BackendUnavailable

    def no_bench(name):
        raise BackendUnavailable(f"the {name} backend has no bench module in this airlab version")

    report = run_bench(Options(plan=TINY, backend="torch", device="auto"), bench_loader=no_bench,
                       clock_probe=lambda t: dict(FAKE_CLOCK), cpu_info=lambda: FAKE_CPU, trainer=fake_trainer,
                       telemetry_factory=lambda gpus: Telemetry(gpus))
    assert [f.id for f in report.figures] == ["training/torch/cpu/mlp"]
    assert report.skipped[0]["what"] == "matmul/memory on torch" and "no bench module" in report.skipped[0]["reason"]


def test_a_host_clocked_backend_times_several_iterations_per_window_and_says_so(fake_run):
    """A backend without device events (TensorFlow) asks for longer GPU windows; its notes reach the
    figure, and a bench without an all-reduce has it skipped with the reason."""
    from bench_fakes import FakeWorkload

    class HostClocked(FakeBench):
        name = "tensorflow"
        allreduce = None  # this backend has none

        def _host(self, wl):
            wl.flush, wl.min_window_s, wl.notes = None, 0.001, ("host clock, L2 not flushed",)
            return wl

        def matmul(self, device, dtype, m, n, k, seed):
            return self._host(super().matmul(device, dtype, m, n, k, seed)) if device != "cpu" else \
                super().matmul(device, dtype, m, n, k, seed)

        def copy(self, device, kind, nbytes, seed):
            return self._host(super().copy(device, kind, nbytes, seed))

    report, bench = fake_run(bench=HostClocked(), backend="tensorflow", device="cuda")
    mm = by_id(report)["matmul/tensorflow/cuda:0/bf16"]
    assert mm.stats["inner"] > 1 and "host clock, L2 not flushed" in mm.notes
    assert mm.verdict == "ok"  # judged against the same datasheet peak
    assert all(w.flushes == 0 for w in bench.workloads if isinstance(w, FakeWorkload))
    assert "host clock, L2 not flushed" in by_id(report)["memory/tensorflow/cuda:1/d2d"].notes
    assert not [f for f in report.figures if f.suite == "interconnect"]
    assert any(s["what"] == "all-reduce on tensorflow" and "torch.distributed" in s["reason"]
               for s in report.skipped)

"""Telemetry windows: other processes' CPU load, NVML samples, and the marks they give a figure."""

from __future__ import annotations

import subprocess
import sys
import time

from bench_fakes import FakeNvml

from airlab.bench.telemetry import GPU_THROTTLING, Telemetry, interference_threshold, reason_names

BUSY = "import time\nt = time.time() + 30\nwhile time.time() < t: pass\n"


def test_another_busy_process_is_seen_as_interference():
    tel = Telemetry()
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.3)  # let it start spinning
        with tel.window(cpu_bound=True) as w:
            time.sleep(0.6)  # this process idles; the child burns a core
    finally:
        proc.kill()
        proc.wait()
    cpu = w.record.cpu
    assert cpu["other_load_cores"] is not None and cpu["other_load_cores"] >= 0.5
    assert cpu["own_load_cores"] < 0.5
    assert "interference" in w.record.marks
    assert any("other processes used" in n for n in w.record.notes)
    assert w.record.seconds >= 0.6


def test_a_gpu_bound_window_is_not_marked_for_cpu_load():
    tel = Telemetry()
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.3)
        with tel.window(cpu_bound=False) as w:
            time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait()
    assert "interference" not in w.record.marks
    assert w.record.cpu["other_load_cores"] is not None  # still recorded


def test_a_window_too_short_to_measure_says_so():
    with Telemetry().window() as w:
        pass
    assert w.record.cpu["other_load_cores"] is None
    assert any("too short" in n for n in w.record.notes)
    assert w.record.marks == []


def test_nvml_samples_are_summarized_and_throttling_marked():
    nvml = FakeNvml(count=1, reasons={0: 0x1 | 0x4})
    tel = Telemetry([{"id": "cuda:0", "uuid": "fake-0", "index": 0}], nvml_module=nvml, interval=0.01)
    with tel.window("cuda:0", cpu_bound=False) as w:
        time.sleep(0.05)
    gpu = w.record.gpu
    assert gpu["samples"] >= 2
    assert gpu["reasons"] == ["gpu_idle", "sw_power_cap"]
    assert gpu["sm_clock_mhz_min"] == gpu["sm_clock_mhz_max"] == 1500
    assert gpu["temperature_c_max"] == 61 and gpu["power_w_max"] == 650.0
    assert w.record.marks == ["throttled"]
    assert tel.static("cuda:0")["pcie_max_generation"] == 5
    tel.close()
    assert nvml.shut


def test_an_idle_gpu_is_not_throttled_and_a_gpu_missing_from_nvml_is_reported():
    nvml = FakeNvml(count=1, reasons={0: 0x1})
    tel = Telemetry([{"id": "cuda:0", "uuid": "fake-0"}, {"id": "cuda:1", "uuid": "other"}], nvml_module=nvml)
    with tel.window("cuda:0", cpu_bound=False) as w:
        pass
    assert w.record.marks == []
    assert any("cuda:1: not found in NVML" in p for p in tel.problems)


def test_without_nvml_there_is_no_gpu_telemetry_and_a_reason():
    class Broken:
        def nvmlInit(self):
            raise OSError("NVML Shared Library Not Found")

    tel = Telemetry([{"id": "cuda:0"}], nvml_module=Broken())
    with tel.window("cuda:0") as w:
        pass
    assert w.record.gpu is None
    assert "NVML unavailable" in tel.problems[0]


def test_reason_bits_and_threshold():
    assert reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert not GPU_THROTTLING & (0x1 | 0x2 | 0x100)  # idle, app clocks and display clocks are not throttling
    assert interference_threshold(2) == 0.25 and interference_threshold(64) == 6.4

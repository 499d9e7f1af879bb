"""The CPU clock probe: a chain of dependent multiplies, judged against what the OS says.

The real probe is asserted only for what holds on every CPU, loaded or not: it gives a plausible
measured clock, or the OS's figure with a note saying why. The judgement itself is tested with
injected figures, including the Xeon on which the old add loop read 14,500 MHz against 2,100.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from bench_fakes import FAKE_CPU, TINY, FakeBench, FakeNvml, fake_trainer

from airlab.bench import clock
from airlab.bench.clock import BOUNDS_MHZ, OsClock, judge, measure_clock, read_os_clock, supported

M = clock.METHOD


def measured(single, all_core=None, threads=2):
    return {"single_core_mhz": single, "all_core_mhz": single if all_core is None else all_core,
            "threads": threads, "method": M}


def test_the_probe_gives_a_plausible_clock_or_the_os_figure_with_a_note():
    os_clock = read_os_clock()
    result = measure_clock(1, os_clock=os_clock)
    if result is None:  # nothing plausible measured, and the OS says nothing
        assert not os_clock.reference_mhz
        return
    if result["source"] == "measured":
        assert supported() and result["note"] is None and "multiplies" in result["method"]
        lo, hi = BOUNDS_MHZ
        ref = os_clock.reference_mhz
        if ref:
            ceiling = clock.CEILING_OF_MAX if os_clock.max_mhz else clock.CEILING_OF_NOMINAL
            lo, hi = max(lo, ref / 3), min(hi, ceiling * ref)
        for key in ("single_core_mhz", "all_core_mhz"):
            assert lo <= result[key] <= hi, (key, result, os_clock)
    else:
        assert result["source"] == "os" and result["note"]
        assert result["single_core_mhz"] == result["all_core_mhz"] == os_clock.reference_mhz


@pytest.mark.skipif(not supported(), reason="the multiply chain is x86-64 machine code (Linux/macOS)")
def test_the_machine_code_is_a_chain_of_multiplies_that_computes_the_power():
    code = clock._machine_code()
    assert code.count(b"\x48\x0f\xaf\xc6") == clock.UNROLL  # imul rax, rsi
    assert b"\x48\x83\xc0\x01" not in code  # no add rax, 1: recent cores run those several to a cycle
    # the child checks the product before timing anything: a wrong encoding exits non-zero
    proc = subprocess.run([sys.executable, "-m", "airlab.bench.clock", "1"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("os_clock, figures, source, note_has", [
    # the Emerald Rapids VM of the issue: the add loop read 14,500 MHz against a nominal 2,100
    (OsClock(reported_mhz=2100.0), measured(14500.0, 14400.0), "os", ["14,500 MHz on one core", "more than 2x",
                                                                    "2,100 MHz (/proc/cpuinfo cpu MHz)"]),
    (OsClock(reported_mhz=2100.0), measured(3900.0, 3000.0), "measured", []),  # turbo above a VM's nominal clock
    (OsClock(max_mhz=4000.0, reported_mhz=2100.0), measured(3800.0), "measured", []),
    (OsClock(max_mhz=4000.0, reported_mhz=2100.0), measured(6500.0), "os", ["more than 1.5x", "cpufreq"]),
    (OsClock(reported_mhz=2100.0), measured(500.0), "os", ["500 MHz", "less than 1/3"]),
    (OsClock(reported_mhz=2100.0), measured(3000.0, 9000.0), "os", ["9,000 MHz on all cores"]),
    (OsClock(reported_mhz=2100.0), measured(math.nan), "os", ["not a number"]),
    (OsClock(), measured(3000.0), "measured", []),  # nothing from the OS: only the absolute bounds
    (OsClock(), measured(14500.0), None, []),  # implausible, and nothing to fall back to
    (OsClock(), measured(150.0), None, []),
])
def test_a_measurement_is_judged_against_the_os_figure(os_clock, figures, source, note_has):
    result = judge(figures, os_clock)
    if source is None:
        assert result is None
        return
    assert result["source"] == source
    if source == "measured":
        assert result["single_core_mhz"] == figures["single_core_mhz"] and result["note"] is None
        assert result["os_mhz"] == os_clock.reference_mhz
    else:
        ref = os_clock.reference_mhz
        assert result["single_core_mhz"] == result["all_core_mhz"] == ref
        raw = result["measured"]["single_core_mhz"]
        assert raw == figures["single_core_mhz"] or math.isnan(figures["single_core_mhz"])
        for part in note_has:
            assert part in result["note"], result["note"]


def test_without_a_measurement_the_os_figure_comes_with_the_reason():
    result = judge(None, OsClock(reported_mhz=2596.1), "not measured on aarch64 (no instruction of one known latency)")
    assert result["source"] == "os" and result["all_core_mhz"] == 2596.1 and result["measured"] is None
    assert result["note"].startswith("not measured on aarch64")
    assert judge(None, OsClock(), "whatever") is None


def test_unsupported_machines_get_the_os_figure(monkeypatch):
    monkeypatch.setattr(clock, "supported", lambda: False)
    monkeypatch.setattr(clock.platform, "machine", lambda: "aarch64")
    result = measure_clock(4, os_clock=OsClock(max_mhz=3000.0))
    assert result["source"] == "os" and result["all_core_mhz"] == 3000.0 and "aarch64" in result["note"]
    assert measure_clock(4, os_clock=OsClock()) is None


def test_the_os_figures_are_read_from_cpufreq_and_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "proc" / "cpuinfo"
    cpuinfo.parent.mkdir()
    cpuinfo.write_text("processor\t: 0\ncpu MHz\t\t: 2100.000\n\nprocessor\t: 1\ncpu MHz\t\t: 2596.140\n")
    assert read_os_clock(tmp_path) == OsClock(max_mhz=None, reported_mhz=2596.14)
    for cpu, khz in (("cpu0", "3800000\n"), ("cpu1", "4000000\n"), ("cpu2", "garbage\n")):
        f = tmp_path / "sys/devices/system/cpu" / cpu / "cpufreq" / "cpuinfo_max_freq"
        f.parent.mkdir(parents=True)
        f.write_text(khz)
    os_clock = read_os_clock(tmp_path)
    assert os_clock == OsClock(max_mhz=4000.0, reported_mhz=2596.14)
    assert os_clock.reference_mhz == 4000.0 and os_clock.source == "cpufreq cpuinfo_max_freq"
    assert read_os_clock(tmp_path / "nothing") == OsClock()  # aarch64 VMs print no cpu MHz at all


def test_a_clock_taken_from_the_os_is_reported_as_such_with_its_reason():
    from airlab.bench.runner import Options, run_bench
    from airlab.bench.telemetry import Telemetry

    fallback = judge(measured(14500.0), OsClock(reported_mhz=2000.0))
    report = run_bench(Options(plan=TINY, backend="torch", device="all"), bench_loader=lambda name: FakeBench(),
                       clock_probe=lambda threads: dict(fallback), cpu_info=lambda: FAKE_CPU, trainer=fake_trainer,
                       telemetry_factory=lambda gpus: Telemetry(gpus, nvml_module=FakeNvml()))
    cpu = report.host["cpu"]
    assert cpu["clock_mhz"] == 2000.0 and cpu["clock_single_core_mhz"] is None
    assert cpu["clock_source"].startswith("reported by the OS (/proc/cpuinfo cpu MHz): the multiply chain measured")
    assert "14,500 MHz" in cpu["clock_note"]
    mm = next(f for f in report.figures if f.id == "matmul/torch/cpu/fp32")
    assert "2,000 MHz (reported)" in mm.peak_source
    assert any(f.startswith("CPU clock: the multiply chain measured 14,500 MHz") for f in report.findings)

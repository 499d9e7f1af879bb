"""The peak table loads and matches device names; the CPU peak estimate for each ISA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlab.bench import peaks

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "gpu_peaks.json"


def test_the_packaged_table_loads_and_is_well_formed():
    table = peaks.load_table()
    names = [g["name"] for g in table["gpus"]]
    assert len(names) == len(set(names)) >= 10
    for g in table["gpus"]:
        for key in ("fp32", "tf32", "fp16", "bf16", "fp8", "mem_bw_tbps"):
            assert key in g and (g[key] is None or g[key] > 0), (g["name"], key)
    assert table["cpu_flops_per_cycle_per_core_fp32"]["AMX-BF16 (SPR/EMR TMUL)"] == 1024


@pytest.mark.skipif(not REFERENCE.exists(), reason="no ../shared/reference beside this checkout")
def test_the_packaged_table_is_the_reference_copy():
    assert peaks.load_table() == json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("device, entry", [
    ("NVIDIA H200", "H200-SXM"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB-SXM4"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB-SXM4"),
    ("NVIDIA A100-PCIE-40GB", "A100-40GB-PCIe"),
    ("NVIDIA A100 80GB PCIe", "A100-80GB-PCIe"),
    ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("NVIDIA GeForce RTX 3090", "RTX-3090"),
    ("NVIDIA H100 80GB HBM3", "H100-SXM5"),
    ("NVIDIA H100 PCIe", "H100-PCIe"),
    ("Tesla V100-SXM2-16GB", "V100-SXM2"),
    ("Tesla V100-PCIE-32GB", "V100-PCIe"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA B200", "B200-HGX"),
    ("AMD Instinct MI300X", "MI300X"),
])
def test_device_names_match_their_table_entry(device, entry):
    assert peaks.match_gpu(device)["name"] == entry


@pytest.mark.parametrize("device", [
    "NVIDIA A10G",  # AWS part with other tensor rates
    "NVIDIA H100 NVL", "NVIDIA H200 NVL",  # other power and clocks
    "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 3090 Ti",
    "NVIDIA L40", "Tesla T4", "Tesla V100S-PCIE-32GB", "cpu", "",
])
def test_parts_the_table_does_not_hold_match_nothing(device):
    assert peaks.match_gpu(device) is None


def test_gpu_peaks_and_expected_fractions():
    h200 = peaks.match_gpu("NVIDIA H200")
    assert peaks.gpu_matmul_peak(h200, "bf16") == 989e12
    assert peaks.gpu_matmul_peak(h200, "fp32") == 67e12
    assert peaks.gpu_memory_peak(h200) == 4.8e12
    assert peaks.gpu_expected_fraction(h200, "bf16") == pytest.approx(0.803)  # the H100-SXM measurement
    assert peaks.gpu_expected_fraction(peaks.match_gpu("NVIDIA L4"), "bf16") == peaks.DEFAULT_TENSOR_FRACTION
    v100 = peaks.match_gpu("Tesla V100-SXM2-16GB")
    assert peaks.gpu_matmul_peak(v100, "bf16") is None and peaks.gpu_matmul_peak(v100, "tf32") is None
    assert peaks.gpu_matmul_peak(None, "bf16") is None
    assert peaks.copy_expected_fraction() == pytest.approx(4.3 / 4.8)
    assert peaks.pcie_peak(5, 16) == pytest.approx(63.008e9)
    assert peaks.pcie_peak(4, 16) == pytest.approx(31.504e9)
    assert peaks.pcie_peak(None, 16) is None


INTEL_BASE = {"sse", "sse2", "avx", "avx2", "fma"}


@pytest.mark.parametrize("flags, vendor, family, fp32, bf16, name", [
    ({"sse", "sse2"}, "GenuineIntel", 6, 8, 8, "SSE"),
    ({"sse", "sse2", "avx"}, "GenuineIntel", 6, 16, 16, "AVX (no FMA)"),
    (INTEL_BASE, "GenuineIntel", 6, 32, 32, "AVX2+FMA"),
    (INTEL_BASE | {"avx512f"}, "GenuineIntel", 6, 64, 64, "AVX-512 (2 FMA units)"),  # Skylake-SP
    (INTEL_BASE | {"avx512f", "avx512_bf16"}, "GenuineIntel", 6, 64, 128, "AVX512_BF16"),  # Cooper Lake
    (INTEL_BASE | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "GenuineIntel", 6, 64, 1024, "AMX-BF16"),
    (INTEL_BASE | {"avx512f", "avx512_bf16"}, "AuthenticAMD", 25, 32, 64, "Zen 4"),  # 512-bit on 256-bit units
    (INTEL_BASE | {"avx512f", "avx512_bf16"}, "AuthenticAMD", 26, 64, 128, "AVX-512 (2 FMA units)"),  # Zen 5
    (INTEL_BASE, "AuthenticAMD", 25, 32, 32, "AVX2+FMA"),  # Zen 3
])
def test_cpu_flops_per_cycle_for_each_isa(flags, vendor, family, fp32, bf16, name):
    isa = peaks.detect_isa(flags, vendor, family)
    assert (isa.fp32_per_cycle, isa.bf16_per_cycle) == (fp32, bf16)
    assert name in isa.name
    assert len(isa.basis) == 2
    # the estimate: cores x clock x FLOPs/cycle
    assert peaks.cpu_peak(2, 3.0e9, isa, "fp32") == 2 * 3.0e9 * fp32
    assert peaks.cpu_peak(16, 2.5e9, isa, "bf16") == 16 * 2.5e9 * bf16


def test_no_cpu_peak_without_an_isa_or_a_clock():
    arm = peaks.detect_isa({"fp", "asimd", "sve"}, "", None)
    assert arm.name == "unknown" and peaks.cpu_peak(8, 3e9, arm, "fp32") is None
    isa = peaks.detect_isa(INTEL_BASE, "GenuineIntel", 6)
    assert peaks.cpu_peak(8, None, isa, "fp32") is None
    assert peaks.cpu_peak(8, 3e9, isa, "fp16") is None


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9454 48-Core Processor
cpu MHz\t\t: 2750.000
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_bf16

processor\t: 1
vendor_id\t: GenuineIntel
"""


def test_cpuinfo_is_read_from_the_first_processor():
    info = peaks.read_cpu_info(CPUINFO)
    assert info.vendor == "AuthenticAMD" and info.family == 25 and info.model == 17
    assert info.model_name.startswith("AMD EPYC 9454")
    assert {"avx512f", "avx512_bf16"} <= info.flags
    assert info.cores >= 1


def test_hyperthreads_add_no_cores():
    info = peaks.CpuInfo("x", "GenuineIntel", 6, 85, frozenset(), logical=32, physical=16, usable=32,
                         reported_mhz=None)
    assert info.cores == 16
    info.usable = 8
    assert info.cores == 4
    info = peaks.CpuInfo("x", "AuthenticAMD", 25, 17, frozenset(), logical=2, physical=2, usable=2, reported_mhz=None)
    assert info.cores == 2

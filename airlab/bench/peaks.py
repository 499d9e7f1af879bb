"""Theoretical peaks: GPU datasheet figures (data, matched by device name) and the CPU estimate.

GPU peaks come from `gpu_peaks.json` (a copy of ../shared/reference/gpu_peaks.json): dense
vendor peaks in TFLOP/s and TB/s, and measured achievable fractions. A device name as the driver
reports it ('NVIDIA H200', 'NVIDIA A100-SXM4-80GB', 'NVIDIA GeForce RTX 4090') is matched to one
table entry by the rules in `_GPU_RULES`; a variant the table does not hold (H100 NVL, A10G,
laptop parts) matches nothing rather than the wrong entry.

CPU peak = cores x clock x FLOPs per cycle per core for the ISA. The clock is measured (see
airlab.bench.clock) because virtual machines report a fixed nominal value. FLOPs per cycle for
fp32 come from the same JSON file; bf16 is native only with AMX-BF16 (1024 per cycle) or
AVX512_BF16 (VDPBF16PS: twice the fp32 FMA rate); without them bf16 is computed in fp32 and its
peak is the fp32 one.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psutil

TFLOPS = 1e12
TBPS = 1e12

# How far below the typical achievable fraction a figure may fall before it is called low.
LOW_MARGIN = 0.8

# Used where gpu_peaks.json has no measured fraction for the device family: the issue's
# "bf16 matmul typically reaches 75-90 % of datasheet peak on NVIDIA data-center GPUs".
DEFAULT_TENSOR_FRACTION = 0.75
# CUDA-core fp32 matmul (no tensor cores) comes close to its peak on large squares.
DEFAULT_GPU_FP32_FRACTION = 0.75
# A large MKL/oneDNN sgemm on all cores of a modern x86 CPU reaches about 70-90 % of the estimate;
# bf16 through oneDNN less (conversions, smaller kernels).
CPU_EXPECTED_FRACTION = {"fp32": 0.7, "bf16": 0.5}
# Host<->device copies against the PCIe link's theoretical rate (per direction, after encoding).
PCIE_EXPECTED_FRACTION = {"pinned": 0.8, "pageable": 0.3}
# Usable GB/s per lane and direction for each PCIe generation (after 8b/10b or 128b/130b coding).
PCIE_GBPS_PER_LANE = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


@functools.lru_cache(maxsize=None)
def load_table(path: str | None = None) -> dict:
    """The peak table (the packaged gpu_peaks.json, or `path`)."""
    if path is not None:
        return json.loads(Path(path).read_text())
    return json.loads(resources.files("airlab.bench").joinpath("gpu_peaks.json").read_text())


# ---------------------------------------------------------------------------------------------
# GPUs

# (pattern on the upper-cased device name, table entry). The first match wins; order matters
# (PCIe before SXM, 80GB before 40GB). Word boundaries keep A10 from matching A10G and L4 from L40S.
_GPU_RULES: list[tuple[str, str]] = [
    (r"\bH200\b(?!.*\bNVL\b)", "H200-SXM"),
    (r"\bH100\b.*\bPCIE\b", "H100-PCIe"),
    (r"\bH100\b(?!.*\bNVL\b)", "H100-SXM5"),  # 'NVIDIA H100 80GB HBM3', 'NVIDIA H100 SXM5 80GB'
    (r"\bA100\b(?=.*\bPCIE\b)(?=.*\b80GB\b)", "A100-80GB-PCIe"),
    (r"\bA100\b.*\bPCIE\b", "A100-40GB-PCIe"),
    (r"\bA100\b.*\b80GB\b", "A100-80GB-SXM4"),
    (r"\bA100\b", "A100-40GB-SXM4"),
    (r"\bV100\b.*\bPCIE\b", "V100-PCIe"),
    (r"\bV100\b", "V100-SXM2"),
    (r"\bA10\b", "A10"),
    (r"\bL40S\b", "L40S"),
    (r"\bL4\b", "L4"),
    (r"\bRTX 4090\b(?! D\b)", "RTX-4090"),
    (r"\bRTX 3090\b(?! TI\b)", "RTX-3090"),
    (r"\bB200\b", "B200-HGX"),
    (r"\bMI300X\b", "MI300X"),
]
_NOT_THE_DATASHEET_PART = re.compile(r"\b(LAPTOP|MOBILE|MAX-Q)\b")

# table entry -> key of achieved_reference.bf16_matmul_fraction_of_peak
_FRACTION_FAMILY = {
    "A100-40GB-SXM4": "A100-SXM", "A100-40GB-PCIe": "A100-SXM", "A100-80GB-SXM4": "A100-SXM",
    "A100-80GB-PCIe": "A100-SXM", "H100-SXM5": "H100-SXM", "H100-PCIe": "H100-SXM", "H200-SXM": "H100-SXM",
    "B200-HGX": "B200", "MI300X": "MI300X",
}


def match_gpu(device_name: str, table: dict | None = None) -> dict | None:
    """The table entry for a device name, or None when the table holds no such part."""
    table = table or load_table()
    name = " ".join(device_name.upper().split())
    if _NOT_THE_DATASHEET_PART.search(name):
        return None
    entries = {e["name"]: e for e in table["gpus"]}
    for pattern, entry in _GPU_RULES:
        if re.search(pattern, name) and entry in entries:
            return entries[entry]
    return None


def gpu_matmul_peak(entry: dict | None, dtype: str) -> float | None:
    """Datasheet matmul peak in FLOP/s for a dtype (fp32 is the CUDA-core rate), or None."""
    if entry is None or entry.get(dtype) is None:
        return None
    return float(entry[dtype]) * TFLOPS


def gpu_memory_peak(entry: dict | None) -> float | None:
    """Datasheet memory bandwidth in B/s, or None."""
    if entry is None or entry.get("mem_bw_tbps") is None:
        return None
    return float(entry["mem_bw_tbps"]) * TBPS


def gpu_expected_fraction(entry: dict | None, dtype: str, table: dict | None = None) -> float:
    """The fraction of datasheet peak a good large matmul reaches on this GPU family."""
    if dtype == "fp32":
        return DEFAULT_GPU_FP32_FRACTION
    table = table or load_table()
    fractions = table.get("achieved_reference", {}).get("bf16_matmul_fraction_of_peak", {})
    family = _FRACTION_FAMILY.get(entry["name"]) if entry else None
    return float(fractions.get(family, DEFAULT_TENSOR_FRACTION))


def copy_expected_fraction(table: dict | None = None) -> float:
    """Device-to-device copy: the H200 reading in the table (read+write bytes over datasheet)."""
    table = table or load_table()
    ref = table.get("achieved_reference", {})
    measured = ref.get("H200_d2d_copy_tbps_measured_read_plus_write")
    h200 = next((e for e in table["gpus"] if e["name"] == "H200-SXM"), None)
    if measured and h200 and h200.get("mem_bw_tbps"):
        return float(measured) / float(h200["mem_bw_tbps"])
    return 0.85


# Bus bandwidth of an NCCL all-reduce between GPUs joined by PCIe only (peer-to-peer, or through the
# host): typically 60-80 % of the link's one-direction rate. An assumption from nccl-tests readings,
# not a datasheet figure: "low" is below LOW_MARGIN x this.
ALLREDUCE_PCIE_EXPECTED_FRACTION = 0.6


def allreduce_reference(gpu: dict, one_host: bool) -> tuple[float | None, str | None, float | None, str]:
    """What the bus bandwidth of an all-reduce across GPUs is judged against, from the facts of
    rank 0's GPU: (peak in B/s, its source, the typical fraction, a note). Only the PCIe link of
    GPUs on one host without NVLink has a reference here; gpu_peaks.json holds no NVLink rates and
    nothing is known of the network between hosts, so those get no verdict (peak None)."""
    if not one_host:
        return None, None, None, "processes on several hosts: the network between them is not known: no verdict"
    links = gpu.get("nvlink_links_active")
    if links is None:
        return None, None, None, "NVML could not tell whether NVLink is up: no verdict"
    if links > 0:
        return None, None, None, f"NVLink up ({links} links): gpu_peaks.json holds no NVLink rates: no verdict"
    gen, width = gpu.get("pcie_max_generation"), gpu.get("pcie_max_width")
    peak = pcie_peak(gen, width)
    if peak is None:
        return None, None, None, "no NVLink, and the PCIe link is not known: no verdict"
    return (peak, f"PCIe gen {gen} x{width} (NVML), one direction; no NVLink", ALLREDUCE_PCIE_EXPECTED_FRACTION,
            "GPUs joined by PCIe only: judged against the link's one-direction rate")


def pcie_peak(generation: int | None, width: int | None) -> float | None:
    """Theoretical one-direction PCIe bandwidth in B/s for a link, or None when unknown."""
    if not generation or not width or generation not in PCIE_GBPS_PER_LANE:
        return None
    return PCIE_GBPS_PER_LANE[generation] * width * 1e9


# ---------------------------------------------------------------------------------------------
# CPUs

# ISA id -> key of gpu_peaks.json's cpu_flops_per_cycle_per_core_fp32 (values there are fp32
# FLOPs per cycle per core: FMA units x lanes x 2).
_CPU_TABLE_KEYS = {
    "sse": "SSE (no FMA)",
    "avx": "AVX (SandyBridge, no FMA)",
    "avx2": "AVX2+FMA, 2 FMA ports (Haswell..)",
    "avx512": "AVX-512, 2 FMA ports (Xeon SP Gold 6xxx/Platinum, SPR/EMR)",
    "avx512-half": "AVX-512, 1 FMA port (some Xeon SKUs)",
    "amx-bf16": "AMX-BF16 (SPR/EMR TMUL)",
}
_CPU_DEFAULTS = {"sse": 8, "avx": 16, "avx2": 32, "avx512": 64, "avx512-half": 32, "amx-bf16": 1024}


def _per_cycle(isa: str, table: dict | None) -> float:
    table = table or load_table()
    values = table.get("cpu_flops_per_cycle_per_core_fp32", {})
    return float(values.get(_CPU_TABLE_KEYS[isa], _CPU_DEFAULTS[isa]))


@dataclass(frozen=True)
class CpuIsa:
    """What one core can do per cycle, and why we think so."""

    name: str  # e.g. "AVX-512 (2 FMA units)", "AVX2+FMA"
    fp32_per_cycle: float | None
    bf16_per_cycle: float | None
    basis: list[str] = field(default_factory=list)


def detect_isa(flags: set[str] | frozenset[str], vendor: str = "", family: int | None = None,
               table: dict | None = None) -> CpuIsa:
    """The vector/matrix ISA from /proc/cpuinfo flags (and the vendor, for AMD's AVX-512 width).

    AMD Zen 4 (family 0x19) runs 512-bit FMAs on 256-bit units: one 512-bit FMA per cycle, the rate
    the table lists as "AVX-512, 1 FMA port". Zen 5 (0x1A) and Intel server parts with AVX-512
    are taken to have two 512-bit FMA units (a few Xeon SKUs have one: the estimate is then 2x high).
    """
    flags = set(flags)
    vendor = vendor or ""
    basis: list[str] = []
    if "avx512f" in flags:
        if "AMD" in vendor.upper() and family == 0x19:
            isa, name = "avx512-half", "AVX-512 (one 512-bit FMA per cycle: AMD Zen 4)"
        else:
            isa, name = "avx512", "AVX-512 (2 FMA units)"
    elif "avx2" in flags and "fma" in flags:
        isa, name = "avx2", "AVX2+FMA"
    elif "avx" in flags:
        isa, name = "avx", "AVX (no FMA)"
    elif "sse2" in flags or "sse" in flags:
        isa, name = "sse", "SSE (no FMA)"
    else:
        return CpuIsa("unknown", None, None, ["no x86 vector flags found (ARM or unknown CPU): no CPU peak"])
    fp32 = _per_cycle(isa, table)
    basis.append(f"fp32: {fp32:g} FLOPs/cycle/core ({_CPU_TABLE_KEYS[isa]})")
    if "amx_bf16" in flags:
        bf16 = _per_cycle("amx-bf16", table)
        name += " + AMX-BF16"
        basis.append(f"bf16: {bf16:g} FLOPs/cycle/core (AMX-BF16 tile multiply)")
    elif "avx512_bf16" in flags:
        bf16 = 2 * fp32
        name += " + AVX512_BF16"
        basis.append(f"bf16: {bf16:g} FLOPs/cycle/core (AVX512_BF16 dot product: 2x the fp32 FMA rate)")
    else:
        bf16 = fp32
        basis.append(f"bf16: {bf16:g} FLOPs/cycle/core (no native bf16 arithmetic: computed in fp32)")
    return CpuIsa(name, fp32, bf16, basis)


def cpu_peak(cores: int, clock_hz: float | None, isa: CpuIsa, dtype: str) -> float | None:
    """cores x clock x FLOPs/cycle in FLOP/s, or None when something is unknown."""
    per_cycle = {"fp32": isa.fp32_per_cycle, "bf16": isa.bf16_per_cycle}.get(dtype)
    if not per_cycle or not clock_hz or not cores:
        return None
    return cores * clock_hz * per_cycle


@dataclass
class CpuInfo:
    model_name: str
    vendor: str
    family: int | None
    model: int | None
    flags: frozenset[str]
    logical: int
    physical: int
    usable: int  # CPUs this process may run on (affinity)
    reported_mhz: float | None

    @property
    def cores(self) -> int:
        """Cores whose FMA units the bench can use: physical cores, capped by the affinity mask.
        Hyper-threads share their core's FMA units and add nothing to the peak."""
        per_core = max(1, self.logical // max(1, self.physical))
        return max(1, min(self.physical, self.usable // per_core if per_core > 1 else self.usable))


def parse_cpuinfo(text: str) -> dict:
    """The fields of the first processor block of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def read_cpu_info(cpuinfo_text: str | None = None) -> CpuInfo:
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo_text = ""
    f = parse_cpuinfo(cpuinfo_text)
    import platform

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    try:
        freq = psutil.cpu_freq()
        reported = (freq.max or freq.current) if freq else None
    except Exception:  # psutil raises various errors on exotic platforms
        reported = None
    return CpuInfo(
        model_name=f.get("model name") or platform.processor() or platform.machine(),
        vendor=f.get("vendor_id", ""),
        family=_int(f.get("cpu family")), model=_int(f.get("model")),
        flags=frozenset(f.get("flags", "").split()),
        logical=logical, physical=physical, usable=usable, reported_mhz=float(reported) if reported else None)

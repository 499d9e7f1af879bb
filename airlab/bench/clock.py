"""Measure the CPU's real clock with a timed chain of dependent 64-bit integer multiplies.

Virtual machines report a fixed nominal frequency (psutil, /proc/cpuinfo), so the CPU peak uses
a measured clock instead: a loop of `imul rax, rsi` instructions, each depending on the one
before, runs at one multiply per 3 cycles on every big x86-64 core of the last fifteen years (the
latency of a 64-bit integer multiply is 3 cycles on Intel since Nehalem and AMD since Zen), so
3 x multiplies / seconds is the clock. A multiply cannot be folded away by the renamer, eliminated
like a move or fused with its neighbour, which is how recent cores (Intel Golden Cove and later:
Sapphire and Emerald Rapids) run a chain of `add rax, 1` several to a cycle: the add loop this
probe used before read 14,500 MHz on a 2,100 MHz Xeon. The loop is a few bytes of machine code run
through ctypes, in a child process so that a platform which refuses executable memory (or anything
worse) costs only the measurement.

The measurement is checked against the OS's figures (`read_os_clock`: cpufreq's maximum under
/sys, else /proc/cpuinfo's `cpu MHz`, which a virtual machine reports as the nominal clock): above
1.5x the maximum (2x a nominal figure, which turbo exceeds), below a third of the OS's figure, or
outside 200-7,000 MHz it is implausible (a core whose multiply takes longer, such as Atom-class or
pre-Zen AMD cores, or a round never run undisturbed), and the OS's figure is used instead, with a
note saying why (`judge`). Other architectures have no instruction of one known latency (an Arm
core multiplies in 2 to 5 cycles depending on the design), so there the OS's figure is used with a
note. APERF/MPERF would give the effective clock directly, but the msr device (/dev/cpu/*/msr)
needs root and the msr module and hypervisors rarely expose the counters, so they are not read.

The all-core clock (what a matmul on every core runs at) is measured with one thread per core
running the loop at once (ctypes releases the GIL); each thread keeps its fastest of many short
rounds, so a round in which another process took the core does not count.

    python -m airlab.bench.clock [threads]    # prints JSON (the raw measurement, not judged)
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

UNROLL = 200  # multiplies per loop iteration
LATENCY = 3  # cycles of one dependent 64-bit imul (Intel since Nehalem, AMD since Zen)
MULTIPLIER = 0x9E3779B97F4A7C15  # odd, so the running product never collapses to zero
ROUND_S = 0.002  # one timed round; short, so most rounds run without being descheduled
ROUNDS = 25
METHOD = (f"timed chain of dependent 64-bit integer multiplies ({UNROLL} imul per loop at {LATENCY} cycles each, "
          f"best of {ROUNDS} rounds of ~{ROUND_S * 1e3:g} ms)")

BOUNDS_MHZ = (200.0, 7000.0)  # no CPU core runs outside these
CEILING_OF_MAX = 1.5  # x the OS's maximum frequency (cpufreq cpuinfo_max_freq)
CEILING_OF_NOMINAL = 2.0  # x a nominal or current figure (/proc/cpuinfo), which turbo can exceed
FLOOR_OF_OS = 1 / 3  # x the OS's figure: a busy core is not clocked lower than that


def _machine_code() -> bytes:
    """x86-64 System V: uint64 f(uint64 n, uint64 m) = m ** (n x UNROLL) mod 2**64, one dependent imul at a time."""
    code = bytearray(b"\xb8\x01\x00\x00\x00")  # mov eax, 1
    top = len(code)
    code += b"\x48\x0f\xaf\xc6" * UNROLL  # imul rax, rsi
    code += b"\x48\xff\xcf"  # dec rdi
    rel = top - (len(code) + 6)
    code += b"\x0f\x85" + rel.to_bytes(4, "little", signed=True)  # jnz top
    code += b"\xc3"  # ret
    return bytes(code)


def supported() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and sys.platform.startswith(("linux", "darwin"))


def _measure(threads: int) -> dict:
    import ctypes
    import mmap
    import threading

    code = _machine_code()
    mem = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    mem.write(code)
    func = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64)(
        ctypes.addressof(ctypes.c_char.from_buffer(mem)))
    if func(3, MULTIPLIER) != pow(MULTIPLIER, 3 * UNROLL, 2**64):
        raise RuntimeError("the multiply chain returned a wrong product")
    cycles_per_call = UNROLL * LATENCY

    def rate(n: int) -> float:
        t0 = time.perf_counter()
        func(n, MULTIPLIER)
        return n * cycles_per_call / (time.perf_counter() - t0)

    # calibrate n so a round takes ROUND_S (at about 3 GHz; refined once)
    n = max(1, int(3e9 * ROUND_S / cycles_per_call))
    for _ in range(3):
        rate(n)
    n = max(1, int(max(rate(n) for _ in range(3)) * ROUND_S / cycles_per_call))
    single = max(rate(n) for _ in range(ROUNDS))

    best = [0.0] * threads
    start = threading.Barrier(threads)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(ROUNDS):
            best[i] = max(best[i], rate(n))

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"single_core_mhz": single / 1e6, "all_core_mhz": min(best) / 1e6, "threads": threads, "method": METHOD}


@dataclass(frozen=True)
class OsClock:
    """What the OS says about the clock, in MHz."""

    max_mhz: float | None = None  # cpufreq's cpuinfo_max_freq: the highest clock a core may run at
    reported_mhz: float | None = None  # /proc/cpuinfo's `cpu MHz`: a current clock, or a VM's nominal one

    @property
    def reference_mhz(self) -> float | None:
        return self.max_mhz or self.reported_mhz

    @property
    def source(self) -> str:
        if self.max_mhz:
            return "cpufreq cpuinfo_max_freq"
        return "/proc/cpuinfo cpu MHz" if self.reported_mhz else "none"


def _floats(values) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out.append(f)
    return out


def read_os_clock(root: Path | str = "/") -> OsClock:
    """The highest cpufreq maximum over the CPUs and the highest `cpu MHz` in /proc/cpuinfo (under `root`)."""
    root = Path(root)
    khz = []
    for p in (root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            khz.append(p.read_text().strip())
        except OSError:
            pass
    try:
        text = (root / "proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    mhz = [value for key, _, value in (line.partition(":") for line in text.splitlines()) if key.strip() == "cpu MHz"]
    khz, mhz = _floats(khz), _floats(mhz)
    return OsClock(max_mhz=max(khz) / 1000 if khz else None, reported_mhz=max(mhz) if mhz else None)


def implausible(measured: dict, os_clock: OsClock) -> str | None:
    """Why a measurement cannot be the clock (see the module docstring for the bounds), or None."""
    lo, hi = BOUNDS_MHZ
    ref = os_clock.reference_mhz
    factor = CEILING_OF_MAX if os_clock.max_mhz else CEILING_OF_NOMINAL
    if ref:
        hi, lo = min(hi, factor * ref), max(lo, FLOOR_OF_OS * ref)
    for key, where in (("single_core_mhz", "on one core"), ("all_core_mhz", "on all cores")):
        v = measured.get(key)
        if isinstance(v, (int, float)) and lo <= v <= hi:
            continue
        got = f"{v:,.0f} MHz" if isinstance(v, (int, float)) and math.isfinite(v) else repr(v)
        os_said = f"the OS's {ref:,.0f} MHz ({os_clock.source})" if ref else ""
        if isinstance(v, (int, float)) and v > hi:
            bound = (f"more than {factor:g}x {os_said}" if ref and hi == factor * ref
                     else f"above {hi:,.0f} MHz, faster than any CPU core runs")
        elif isinstance(v, (int, float)) and v < lo:
            bound = f"less than 1/3 of {os_said}" if ref and lo == FLOOR_OF_OS * ref else f"below {lo:,.0f} MHz"
        else:
            bound = "not a number"
        return f"the multiply chain measured {got} {where}, implausible: {bound}"
    return None


def judge(measured: dict | None, os_clock: OsClock, unmeasured: str | None = None) -> dict | None:
    """The clock to use: the measurement when it is plausible, else the OS's figure with a note saying why.

    The result has 'single_core_mhz', 'all_core_mhz', 'threads', 'method', 'source' ('measured' or
    'os'), 'note' (None when measured), 'os_mhz' and, when the OS's figure is used, 'measured'
    (the raw measurement or None). None when neither is known.
    """
    ref = os_clock.reference_mhz
    problem = (unmeasured or "not measured") if measured is None else implausible(measured, os_clock)
    if problem is None:
        return {**measured, "source": "measured", "note": None, "os_mhz": ref}
    if not ref:
        return None
    raw = None if measured is None else {k: measured.get(k) for k in ("single_core_mhz", "all_core_mhz")}
    return {"single_core_mhz": ref, "all_core_mhz": ref, "threads": (measured or {}).get("threads"),
            "method": os_clock.source, "source": "os", "note": problem, "os_mhz": ref, "measured": raw}


def measure_clock(threads: int, timeout: float = 20.0, os_clock: OsClock | None = None) -> dict | None:
    """The CPU clock (see `judge` for the result) from a measurement in a child process, judged against the OS."""
    os_clock = os_clock if os_clock is not None else read_os_clock()
    if not supported():
        return judge(None, os_clock, f"not measured on {platform.machine() or 'this machine'} (no instruction of "
                                     "one known latency on every core of the architecture)")
    try:
        proc = subprocess.run([sys.executable, "-m", "airlab.bench.clock", str(max(1, threads))],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return judge(None, os_clock, f"the clock probe took longer than {timeout:g} s")
    except (OSError, subprocess.SubprocessError) as e:
        return judge(None, os_clock, f"the clock probe could not start: {e}")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return judge(None, os_clock, f"the clock probe failed: {last}")
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        measured = {"single_core_mhz": float(result["single_core_mhz"]), "all_core_mhz": float(result["all_core_mhz"]),
                    "threads": int(result["threads"]), "method": str(result["method"])}
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return judge(None, os_clock, f"the clock probe printed no result ({type(e).__name__})")
    return judge(measured, os_clock)


if __name__ == "__main__":
    print(json.dumps(_measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1)))

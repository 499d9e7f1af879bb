"""Measure the CPU's real clock with a timed chain of dependent integer adds.

Virtual machines report a fixed nominal frequency (psutil, /proc/cpuinfo), so the CPU peak uses
a measured clock instead: a loop of `add rax, 1` instructions, each depending on the one before,
runs at one add per cycle on every x86-64 core (an integer add has a latency of one cycle), so
adds / seconds is the clock. The loop is a few bytes of machine code run through ctypes, in a
child process so that a platform which refuses executable memory (or anything worse) costs only
the measurement; then the reported frequency is used and marked as such.

The all-core clock (what a matmul on every core runs at) is measured with one thread per core
running the loop at once (ctypes releases the GIL); each thread keeps its fastest of many short
rounds, so a round in which another process took the core does not count.

    python -m airlab.bench.clock [threads]    # prints JSON
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time

UNROLL = 200  # adds per loop iteration
ROUND_S = 0.002  # one timed round; short, so most rounds run without being descheduled
ROUNDS = 25


def _machine_code() -> bytes:
    """x86-64 System V: uint64 f(uint64 n) running n x UNROLL dependent adds on rax."""
    code = bytearray(b"\x31\xc0")  # xor eax, eax
    top = len(code)
    code += b"\x48\x83\xc0\x01" * UNROLL  # add rax, 1
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
    func = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(mem)))
    if func(3) != 3 * UNROLL:
        raise RuntimeError("the add loop returned a wrong count")

    def rate(n: int) -> float:
        t0 = time.perf_counter()
        func(n)
        return n * UNROLL / (time.perf_counter() - t0)

    # calibrate n so a round takes ROUND_S (at about 3 GHz; refined once)
    n = max(1, int(3e9 * ROUND_S / UNROLL))
    for _ in range(3):
        rate(n)
    n = max(1, int(max(rate(n) for _ in range(3)) * ROUND_S / UNROLL))
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
    return {"single_core_mhz": single / 1e6, "all_core_mhz": min(best) / 1e6, "threads": threads,
            "method": f"timed dependent-add loop ({UNROLL} adds x {ROUNDS} rounds of ~{ROUND_S * 1e3:g} ms, best round)"}


def measure_clock(threads: int, timeout: float = 20.0) -> dict | None:
    """{'single_core_mhz', 'all_core_mhz', 'threads', 'method'} from a child process, or None."""
    if not supported():
        return None
    try:
        proc = subprocess.run([sys.executable, "-m", "airlab.bench.clock", str(max(1, threads))],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            return None
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if not (1e2 < result["single_core_mhz"] < 1e4 and 1e2 < result["all_core_mhz"] < 1e4):
            return None
        return result
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


if __name__ == "__main__":
    print(json.dumps(_measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1)))

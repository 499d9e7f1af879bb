"""How close to the limit: a run's achieved FLOP/s and its model FLOPs utilisation (MFU).

    achieved_flops = train FLOPs per sample x samples trained in this process / its training time
    mfu            = achieved_flops / peak

The FLOPs per sample are the model's, counted once in its spec (`train_flops_per_sample`; the
convention is in airlab.specs.base: matmuls and convolutions only, forward + backward). The peak
is the one `airlab bench` judges a matmul by on the same device and precision:

- a CPU: cores x clock x FLOPs per cycle per core for the ISA and precision, computed by the
  bench's own code (airlab.bench.runner's CPU facts over airlab.bench.peaks), with the clock
  measured as the bench measures it (airlab.bench.clock: a timed multiply chain on as many cores
  as the run has threads, judged against the OS's figure) and the cores capped by the run's
  threads. The probe runs in a child process while the run starts (`ClockProbe`), once per process;
- a GPU: the datasheet matmul peak of gpu_peaks.json for the device name and precision (fp32
  counts the CUDA-core rate, or TF32's where the run enables it), times the devices of the run;
- anything else (MPS, a GPU the table does not hold, no measurable clock): no peak, mfu null,
  and `mfu_reason` says why.

Nothing here imports a framework.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from airlab.bench import peaks

# How long the end of a run waits for a clock probe still running (it takes well under a second).
CLOCK_WAIT_S = 20.0


@dataclass(frozen=True)
class Peak:
    """The device peak a run's MFU is judged against: FLOP/s and where it came from, or None and why."""

    flops: float | None
    source: str | None = None
    reason: str | None = None  # why there is no peak (flops None)


class ClockProbe:
    """The CPU clock as `airlab bench` measures it (airlab.bench.clock.measure_clock), measured in
    a child process on a background thread so that a run's start-up hides its half second; one
    measurement per process and thread count."""

    _done: dict[int, dict | None] = {}
    _lock = threading.Lock()

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self._thread: threading.Thread | None = None

    def start(self) -> "ClockProbe":
        with self._lock:
            if self.threads in self._done or self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._measure, name="airlab-clock-probe", daemon=True)
            self._thread.start()
        return self

    def _measure(self) -> None:
        from airlab.bench.clock import measure_clock

        try:
            clock = measure_clock(self.threads)
        except Exception:  # the probe is best effort: no clock means no CPU peak, said in mfu_reason
            clock = None
        with self._lock:
            self._done[self.threads] = clock

    def result(self, wait: float | None = CLOCK_WAIT_S) -> tuple[bool, dict | None]:
        """(finished, clock): the judged clock (airlab.bench.clock.judge) once the probe finished.
        `wait` 0 never blocks (the progress line asks that way)."""
        with self._lock:
            if self.threads in self._done:
                return True, self._done[self.threads]
        if self._thread is None:
            self.start()
        if wait:
            self._thread.join(wait)
        with self._lock:
            return self.threads in self._done, self._done.get(self.threads)


def cpu_peak(precision: str, threads: int, clock: dict | None, *, info: peaks.CpuInfo | None = None,
             table: dict | None = None) -> Peak:
    """The CPU peak for a run computing in `precision` on `threads` threads, as `airlab bench`
    computes it (the same code: its CPU facts)."""
    from airlab.bench.runner import CpuFacts  # the bench's cores x clock x FLOPs/cycle, not a copy

    if precision not in ("fp32", "bf16"):
        return Peak(None, reason=f"no CPU peak for precision {precision}")
    facts = CpuFacts(info or peaks.read_cpu_info(), threads, clock, table or peaks.load_table())
    value, source = facts.peak(precision), facts.peak_source(precision)
    if value is None:
        why = ("the CPU's vector ISA is not known" if not facts.isa.fp32_per_cycle
               else "the CPU clock is not known (neither measured nor reported by the OS)")
        return Peak(None, reason=f"no CPU peak: {why}")
    return Peak(value, f"cpu {precision}: {source}")


def gpu_peak(name: str | None, precision: str, devices: int = 1, *, tf32: bool = False,
             table: dict | None = None) -> Peak:
    """The datasheet matmul peak of `devices` GPUs named `name` in `precision` (gpu_peaks.json)."""
    if not name:
        return Peak(None, reason="the GPU's name is not known: no datasheet peak")
    entry = peaks.match_gpu(name, table)
    if entry is None:
        return Peak(None, reason=f"{name} is not in gpu_peaks.json: no datasheet peak")
    dtype = "tf32" if precision == "fp32" and tf32 and entry.get("tf32") else precision
    one = peaks.gpu_matmul_peak(entry, dtype)
    if one is None:
        return Peak(None, reason=f"gpu_peaks.json has no {dtype} peak for {entry['name']}")
    many = f" x {devices} GPUs" if devices > 1 else ""
    return Peak(one * devices, f"gpu_peaks.json {entry['name']}: {entry[dtype]} TFLOP/s {dtype}{many}")


def figures(flops_per_sample: int | None, samples: int, seconds: float, peak: Peak | None) -> dict:
    """The summary's keys: achieved_flops (FLOP/s), mfu (a fraction), peak_flops, peak_source and
    mfu_reason (None unless mfu is None)."""
    peak_flops = float(f"{peak.flops:.4g}") if peak and peak.flops else None
    out = {"achieved_flops": None, "mfu": None, "peak_flops": peak_flops,
           "peak_source": peak.source if peak else None, "mfu_reason": None}
    if flops_per_sample is None:
        out["mfu_reason"] = "the model's FLOPs are not counted (its spec has no train_flops_per_sample)"
        return out
    if samples <= 0 or seconds <= 0:
        out["mfu_reason"] = "no training steps in this process"
        return out
    achieved = flops_per_sample * samples / seconds
    out["achieved_flops"] = float(f"{achieved:.4g}")
    if peak is None or peak.flops is None:
        out["mfu_reason"] = (peak.reason if peak else None) or "the device's peak is not known"
        return out
    out["mfu"] = float(f"{achieved / peak.flops:.4g}")
    return out


def model_flops(spec, info) -> int | None:
    """The spec's training FLOPs per sample, or None for a spec that does not count them."""
    try:
        return int(spec.train_flops_per_sample(info))
    except NotImplementedError:
        return None


def fmt_flops(value: float) -> str:
    """12.3 GFLOP/s, 1.02 TFLOP/s."""
    for unit, scale in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("MFLOP/s", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP/s"


__all__ = ["CLOCK_WAIT_S", "ClockProbe", "Peak", "cpu_peak", "figures", "fmt_flops", "gpu_peak", "model_flops"]

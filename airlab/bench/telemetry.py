"""Telemetry taken during every timed window, and the marks it puts on a figure.

CPU (psutil): the reported frequency, the CPU time other processes used during the window (busy
time of the whole machine minus this process's own), the hypervisor's steal time, and Linux's
thermal-throttle counters where they exist. GPU (NVML, no framework): SM clock, temperature,
power, the clock-event ("throttle") reasons and other processes computing on the same GPU,
sampled every `interval` seconds by a background thread and at both ends of the window.

A figure is marked `throttled` when a power or thermal limit lowered the clocks during its window,
and `interference` when other processes competed for its CPU cores or its GPU. Marked figures are
reported as measured, with the mark: the reader decides.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

# NVML clock-event reason bits (nvmlClocksEventReason*).
GPU_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
GPU_THROTTLING = 0x4 | 0x8 | 0x20 | 0x40 | 0x80  # limits that lower clocks under load

# Windows shorter than this cannot resolve other processes' CPU time (/proc/stat counts 10 ms ticks).
MIN_LOAD_WINDOW_S = 0.2


def interference_threshold(logical_cpus: int) -> float:
    """CPU cores of other processes' work (or steal) that counts as interference."""
    return max(0.25, 0.1 * logical_cpus)


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in GPU_REASONS.items() if mask & bit]


def _throttle_count() -> int | None:
    paths = glob.glob("/sys/devices/system/cpu/cpu*/thermal_throttle/*_throttle_count")
    if not paths:
        return None
    total = 0
    for p in paths:
        try:
            total += int(open(p).read().strip())
        except (OSError, ValueError):
            pass
    return total


def _busy(t) -> float:
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))


def _cpu_freq() -> float | None:
    try:
        f = psutil.cpu_freq()
        return float(f.current) if f and f.current else None
    except Exception:  # not available on every platform
        return None


class _Nvml:
    """The few NVML calls used here; every one may fail on a given GPU or driver."""

    def __init__(self, module):
        self.m = module

    def sample(self, handle) -> dict:
        m, out = self.m, {}
        for key, fn in (("sm_clock_mhz", lambda: m.nvmlDeviceGetClockInfo(handle, m.NVML_CLOCK_SM)),
                        ("temperature_c", lambda: m.nvmlDeviceGetTemperature(handle, m.NVML_TEMPERATURE_GPU)),
                        ("power_w", lambda: m.nvmlDeviceGetPowerUsage(handle) / 1000.0),
                        ("reasons", lambda: self._reasons(handle)),
                        ("pids", lambda: [p.pid for p in m.nvmlDeviceGetComputeRunningProcesses(handle)])):
            try:
                out[key] = fn()
            except Exception:  # NVMLError_NotSupported and friends
                pass
        return out

    def _reasons(self, handle) -> int:
        fn = getattr(self.m, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            self.m.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(fn(handle))


@dataclass
class WindowRecord:
    """What one timed window saw."""

    seconds: float = 0.0
    cpu: dict = field(default_factory=dict)
    gpu: dict | None = None
    marks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "cpu": self.cpu, "gpu": self.gpu}


class Window:
    """Context manager around one timed window; `record` is filled on exit."""

    def __init__(self, telemetry: "Telemetry", device: str | None, cpu_bound: bool):
        self.t = telemetry
        self.device = device
        self.cpu_bound = cpu_bound
        self.record = WindowRecord()
        self._samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = None

    def _sample_gpu(self) -> None:
        handle = self.t.handle(self.device)
        if handle is not None:
            s = self.t.nvml.sample(handle)
            s["cpu_freq_mhz"] = _cpu_freq()
            self._samples.append(s)

    def _loop(self) -> None:
        while not self._stop.wait(self.t.interval):
            self._sample_gpu()

    def __enter__(self) -> "Window":
        self._freqs = [_cpu_freq()]
        self._throttle0 = _throttle_count()
        if self.t.handle(self.device) is not None:
            self._sample_gpu()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        self._sys0 = psutil.cpu_times()
        self._own0 = self.t.process.cpu_times()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self._t0
        sys1, own1 = psutil.cpu_times(), self.t.process.cpu_times()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample_gpu()
        self._freqs.append(_cpu_freq())
        throttle1 = _throttle_count()
        r = self.record
        r.seconds = seconds
        own = (own1.user + own1.system) - (self._own0.user + self._own0.system)
        busy = _busy(sys1) - _busy(self._sys0)
        steal = getattr(sys1, "steal", 0.0) - getattr(self._sys0, "steal", 0.0)
        freqs = [f for f in self._freqs if f]
        r.cpu = {"freq_mhz_min": min(freqs) if freqs else None, "freq_mhz_max": max(freqs) if freqs else None,
                 "own_load_cores": own / seconds if seconds > 0 else None}
        if seconds >= MIN_LOAD_WINDOW_S:
            r.cpu["other_load_cores"] = max(0.0, busy - own) / seconds
            r.cpu["steal_cores"] = max(0.0, steal) / seconds
        else:
            r.cpu["other_load_cores"] = r.cpu["steal_cores"] = None
            r.notes.append(f"window {seconds * 1e3:.0f} ms: too short to measure other processes' CPU load")
        if self._throttle0 is not None and throttle1 is not None:
            r.cpu["thermal_throttle_events"] = throttle1 - self._throttle0
        if self._samples:
            r.gpu = self._summarize_gpu()
        self._mark()

    def _summarize_gpu(self) -> dict:
        def col(key):
            return [s[key] for s in self._samples if s.get(key) is not None]

        mask = 0
        for m in col("reasons"):
            mask |= m
        ours = self.t.own_pids()
        others = sorted({p for pids in col("pids") for p in pids} - ours)
        out = {"samples": len(self._samples), "reasons_mask": mask, "reasons": reason_names(mask),
               "other_pids": others}
        for key, agg in (("sm_clock_mhz", (min, max)), ("temperature_c", (max,)), ("power_w", (max,))):
            values = col(key)
            for f in agg:
                out[f"{key}_{f.__name__}"] = f(values) if values else None
        return out

    def _mark(self) -> None:
        r = self.record
        threshold = self.t.threshold
        other, steal = r.cpu.get("other_load_cores"), r.cpu.get("steal_cores")
        if r.cpu.get("thermal_throttle_events"):
            r.marks.append("throttled")
            r.notes.append(f"CPU thermal throttling: {r.cpu['thermal_throttle_events']} events")
        if self.cpu_bound and other is not None and other >= threshold:
            r.marks.append("interference")
            own = r.cpu.get("own_load_cores")
            r.notes.append(f"other processes used {other:.2f} CPU cores during the window"
                           + (f" (this one got {own:.2f})" if own is not None else ""))
        if self.cpu_bound and steal is not None and steal >= threshold:
            if "interference" not in r.marks:
                r.marks.append("interference")
            r.notes.append(f"the hypervisor took {steal:.2f} cores (steal time)")
        if r.gpu:
            throttling = r.gpu["reasons_mask"] & GPU_THROTTLING
            if throttling:
                if "throttled" not in r.marks:
                    r.marks.append("throttled")
                r.notes.append("GPU clocks limited: " + ", ".join(reason_names(throttling)))
            if r.gpu["other_pids"]:
                if "interference" not in r.marks:
                    r.marks.append("interference")
                r.notes.append(f"other processes computing on the GPU: {r.gpu['other_pids'][:5]}")


class Telemetry:
    """Opens NVML once (if there is a GPU to watch) and hands out windows."""

    def __init__(self, gpus: list[dict] | None = None, *, interval: float = 0.05, nvml_module: Any = None,
                 logical_cpus: int | None = None):
        self.interval = interval
        self.process = psutil.Process()
        self.threshold = interference_threshold(logical_cpus or psutil.cpu_count() or 1)
        self.nvml = None
        self._handles: dict[str, Any] = {}
        self.problems: list[str] = []
        gpus = gpus or []
        if gpus:
            self._open_nvml(gpus, nvml_module)

    def _open_nvml(self, gpus: list[dict], module) -> None:
        try:
            if module is None:
                import pynvml as module
            module.nvmlInit()
        except Exception as e:  # no driver library, no permission
            self.problems.append(f"NVML unavailable ({type(e).__name__}: {e}): no GPU telemetry")
            return
        self.nvml = _Nvml(module)
        handles = []
        try:
            for i in range(module.nvmlDeviceGetCount()):
                h = module.nvmlDeviceGetHandleByIndex(i)
                uuid = module.nvmlDeviceGetUUID(h)
                uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
                try:
                    pci = module.nvmlDeviceGetPciInfo(h)
                    bus = (int(pci.domain), int(pci.bus), int(pci.device))
                except Exception:
                    bus = None
                handles.append((h, _norm_uuid(uuid), bus))
        except Exception as e:
            self.problems.append(f"NVML could not list GPUs ({e}): no GPU telemetry")
            return
        for g in gpus:
            found = None
            if g.get("uuid"):
                found = next((h for h, u, _ in handles if u == _norm_uuid(g["uuid"])), None)
            if found is None and g.get("pci") is not None:
                found = next((h for h, _, b in handles if b == tuple(g["pci"])), None)
            if found is None and not os.environ.get("CUDA_VISIBLE_DEVICES") and g.get("index") is not None \
                    and g["index"] < len(handles):
                found = handles[g["index"]][0]
            if found is None:
                self.problems.append(f"{g['id']}: not found in NVML: no telemetry for it")
            else:
                self._handles[g["id"]] = found

    def handle(self, device: str | None):
        return self._handles.get(device) if device else None

    def own_pids(self) -> set[int]:
        pids = {self.process.pid}
        try:
            pids |= {c.pid for c in self.process.children(recursive=True)}
        except psutil.Error:
            pass
        return pids

    def static(self, device: str) -> dict:
        """Facts about a GPU that do not change during the run (driver, PCIe link, limits)."""
        h = self.handle(device)
        if h is None:
            return {}
        m, out = self.nvml.m, {}
        for key, fn in (("driver", m.nvmlSystemGetDriverVersion),
                        ("pcie_max_generation", lambda: m.nvmlDeviceGetMaxPcieLinkGeneration(h)),
                        ("pcie_max_width", lambda: m.nvmlDeviceGetMaxPcieLinkWidth(h)),
                        ("power_limit_w", lambda: m.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
                        ("sm_clock_max_mhz", lambda: m.nvmlDeviceGetMaxClockInfo(h, m.NVML_CLOCK_SM)),
                        ("nvlink_links_active", lambda: nvlink_links_active(m, h))):
            try:
                v = fn()
                out[key] = v.decode() if isinstance(v, bytes) else v
            except Exception:
                pass
        return out

    def window(self, device: str | None = None, *, cpu_bound: bool = True) -> Window:
        return Window(self, device, cpu_bound)

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.m.nvmlShutdown()
            except Exception:
                pass
            self.nvml = None


# What NVML answers for a link a GPU does not have (no NVLink at all, or past its last link).
_NO_SUCH_LINK = ("NVMLError_NotSupported", "NVMLError_InvalidArgument", "NVMLError_NotFound")


def nvlink_links_active(m, handle) -> int | None:
    """How many of a GPU's NVLink links are up: 0 for a GPU without NVLink (NVML answers "not
    supported"), None when NVML cannot tell (an older library, another error)."""
    count, answered = 0, False
    for link in range(int(getattr(m, "NVML_NVLINK_MAX_LINKS", 18))):
        try:
            state = m.nvmlDeviceGetNvLinkState(handle, link)
        except Exception as e:
            if type(e).__name__ in _NO_SUCH_LINK:
                answered = True
                continue
            return None
        answered = True
        count += int(state == getattr(m, "NVML_FEATURE_ENABLED", 1))
    return count if answered else None


def _norm_uuid(u: str) -> str:
    u = u.strip().lower()
    return u[4:] if u.startswith("gpu-") else u

"""CPU threads for the framework's kernels: how many this process may use, how many a run uses,
whether the cores are contended, and the facts that bitwise-exact resume depends on.

Framework-free: the backends apply the count (torch.set_num_threads, TensorFlow's intra-op
setting) and report what is in force; this module only decides and describes.

The default for `train.threads` is the cores this process may actually use: its CPU affinity,
capped by its cgroup's CPU quota (a container given 2 CPUs of a 64-core host gets 2, not 64),
lowered to OMP_NUM_THREADS or to a count the framework was already told to use in this process.

The count changes the order of floating-point reductions, so it changes the weights bitwise:
airlab never changes it silently. When other processes are busy on our cores, a run that splits
each kernel over several threads waits for the slowest one, and steps can run several times
slower (one quickstart epoch on torch, on a 2-core machine where other processes used 1.0-1.5
cores: 9.0 s and 53.8 s of training on 2 threads, 2.3 s and 2.6 s on 1); `contention_warning`
measures that load and names it, and the user decides.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

CGROUP_ROOT = "/sys/fs/cgroup"
SELF_CGROUP = "/proc/self/cgroup"

# the contention check's window: /proc/stat counts 10 ms ticks, so 0.3 s resolves 3% of a core
LOAD_WINDOW_S = 0.3


# --- cores this process may use ----------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _own_cgroups(self_cgroup: str | os.PathLike) -> tuple[str, str]:
    """This process's cgroup path in the v2 hierarchy and in v1's cpu controller ("/" if unknown)."""
    v2 = v1 = "/"
    for line in (_read(Path(self_cgroup)) or "").splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path or "/"
        elif "cpu" in controllers.split(","):
            v1 = path or "/"
    return v2, v1


def _up_from(base: Path, rel: str) -> list[Path]:
    """`base/rel` and each directory above it up to `base`. A path outside our cgroup namespace
    (it shows as "/../..") cannot be followed: then only `base`, the namespace's own root."""
    parts = [p for p in rel.split("/") if p]
    if ".." in parts:
        parts = []
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _quota_v2(directory: Path) -> float | None:
    """cpu.max: "QUOTA PERIOD" or "max PERIOD" (no limit)."""
    text = _read(directory / "cpu.max")
    fields = text.split() if text else []
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(directory: Path) -> float | None:
    """cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us."""
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    try:
        q, p = int(quota.strip()), int(period.strip())
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_quota(root: str | os.PathLike = CGROUP_ROOT, self_cgroup: str | os.PathLike = SELF_CGROUP
                     ) -> float | None:
    """The CPUs' worth of time per period this process's cgroup (or one above it) may use, e.g.
    1.5; None when no quota is set or none can be read. cgroup v2 and v1 both."""
    root = Path(root)
    v2, v1 = _own_cgroups(self_cgroup)
    found = [_quota_v2(d) for d in _up_from(root, v2)]
    for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        found += [_quota_v1(d) for d in _up_from(root / controller, v1)]
    limits = [q for q in found if q is not None]
    return min(limits) if limits else None


def affinity_cpus() -> set[int] | None:
    """The CPUs this process may be scheduled on, or None where the OS does not say."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return None


@dataclass(frozen=True)
class Cores:
    """How many cores this process may use, and why."""

    usable: int
    affinity: int  # CPUs in the affinity mask (os.cpu_count() where there is none)
    quota: float | None  # the cgroup CPU quota in CPUs, None if unlimited
    source: str  # e.g. "2 CPUs in this process's affinity", "cgroup CPU quota 1.5 (8 CPUs in its affinity)"


def cores(*, affinity: Callable[[], set[int] | None] = affinity_cpus, root: str | os.PathLike = CGROUP_ROOT,
          self_cgroup: str | os.PathLike = SELF_CGROUP) -> Cores:
    cpus = affinity()
    count = len(cpus) if cpus else (os.cpu_count() or 1)
    where = "this process's affinity" if cpus else "this machine (no affinity mask)"
    quota = cgroup_cpu_quota(root, self_cgroup)
    if quota is not None and math.ceil(quota) < count:
        return Cores(max(1, math.ceil(quota)), count, quota, f"cgroup CPU quota {quota:g} ({count} CPUs in {where})")
    return Cores(count, count, quota, f"{count} CPUs in {where}")


def usable_cores(**where) -> int:
    """The cores this process may actually use: its affinity, capped by its cgroup CPU quota
    (rounded up, at least 1). Keyword arguments as for `cores` (for tests)."""
    return cores(**where).usable


# --- the count a run uses ----------------------------------------------------------------------

def _omp_num_threads(env: Mapping[str, str]) -> int | None:
    value = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # "4,2" sets nested levels too
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


@dataclass(frozen=True)
class ThreadPlan:
    """The thread count a run asks its framework for, and how it was chosen."""

    requested: int | None  # train.threads
    threads: int
    cores: Cores
    source: str  # "train.threads", "OMP_NUM_THREADS=1", or the cores' source

    def as_dict(self) -> dict:
        """For env.json."""
        return {"requested": self.requested, "resolved": self.threads, "derived_from": self.source,
                "usable_cores": self.cores.usable, "usable_cores_from": self.cores.source,
                "affinity_cpus": self.cores.affinity, "cgroup_quota": self.cores.quota}


def plan_threads(configured: int | None, *, env: Mapping[str, str] | None = None,
                 available: Cores | None = None) -> ThreadPlan:
    """`train.threads` when set; otherwise the usable cores, lowered to OMP_NUM_THREADS where that
    is smaller (the variable every BLAS and OpenMP runtime reads)."""
    available = available or cores()
    if configured is not None:
        return ThreadPlan(configured, int(configured), available, "train.threads")
    n, source = available.usable, available.source
    omp = _omp_num_threads(os.environ if env is None else env)
    if omp is not None and omp < n:
        n, source = omp, f"OMP_NUM_THREADS={omp}"
    return ThreadPlan(None, n, available, source)


def resolve_threads(configured: int | None, **kwargs) -> int:
    """The thread count a run uses: `train.threads`, else the cores this process may use."""
    return plan_threads(configured, **kwargs).threads


# --- contention --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuLoad:
    """What other processes did on our cores during a short window."""

    seconds: float
    cores: int  # the CPUs measured: those this process may run on (all of them if unknown)
    other: float  # cores' worth of busy time of other processes
    steal: float  # cores' worth the hypervisor gave to other machines


def _busy(t) -> float:
    # the same busy-time sum as the bench's interference telemetry (airlab/bench/telemetry.py)
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))


def _own_cpu(proc) -> float:
    """CPU seconds of this process and its children (the run's own: the CPU clock probe of
    airlab.train.flops runs in a child while the run starts), finished children included."""
    import psutil

    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.Error:  # it ended meanwhile: its time is in children_* once it is waited for
            continue
        total += c.user + c.system
    return total


def measure_load(window: float = LOAD_WINDOW_S, *, cpus: Iterable[int] | None = None) -> CpuLoad | None:
    """Sleep `window` seconds and measure the CPU time other processes used on `cpus` (default:
    this process's affinity): busy time of those CPUs minus this process's own and its children's. No thread is
    started. None where psutil cannot say."""
    try:
        import psutil

        cpus = sorted(affinity_cpus() or []) if cpus is None else sorted(cpus)
        proc = psutil.Process()
        sys0, own0, t0 = psutil.cpu_times(percpu=True), _own_cpu(proc), time.perf_counter()
        time.sleep(window)
        sys1, own1, seconds = psutil.cpu_times(percpu=True), _own_cpu(proc), time.perf_counter() - t0
    except Exception:  # no psutil support on this platform, /proc unreadable
        return None
    # psutil lists online CPUs in order; trust the indices only when every CPU is listed
    if not cpus or len(sys1) != (os.cpu_count() or 0) or len(sys0) != len(sys1) or cpus[-1] >= len(sys1):
        cpus = list(range(len(sys1)))
    busy = sum(_busy(sys1[i]) - _busy(sys0[i]) for i in cpus)
    steal = sum(getattr(sys1[i], "steal", 0.0) - getattr(sys0[i], "steal", 0.0) for i in cpus)
    own = own1 - own0
    if seconds <= 0:
        return None
    return CpuLoad(seconds, len(cpus), max(0.0, busy - own) / seconds, max(0.0, steal) / seconds)


def contention_warning(threads: int, *, device: str = "cpu", usable: int | None = None,
                       measure: Callable[[], CpuLoad | None] | None = None) -> str | None:
    """One line for the run to warn with, once, when other processes are busy on the cores this
    run's `threads` need; None when they are not, when the run uses one thread (nothing to
    recommend), or when the work is not on the CPU. Measures for about LOAD_WINDOW_S seconds.
    Never changes the count: the warning names the measured load and the setting to change."""
    if threads <= 1 or not device.startswith("cpu"):
        return None
    load = (measure or measure_load)()
    if load is None:
        return None
    taken = load.other + load.steal
    spare = load.cores - taken
    # a kernel split over `threads` waits for its slowest thread; one that must share its core
    # half the time or more makes the whole step wait
    if threads <= spare + 0.5:
        return None
    suggest = max(1, min(math.floor(spare + 0.5), usable or threads))
    steal = f" (the hypervisor took {load.steal:.1f} of them)" if load.steal >= 0.1 else ""
    return (f"the CPU is shared: other processes used {taken:.1f} of the {load.cores} cores available to this run "
            f"over {load.seconds:.1f} s as it started{steal}; with train.threads={threads} each step may run several "
            f"times slower: set train.threads={suggest} (it changes the weights bitwise, so airlab never changes it "
            "silently)")


# --- facts bitwise-exact resume depends on -----------------------------------------------------

def host_facts() -> dict:
    """The framework-free part of a backend's numerics_facts: CPU architecture and model, numpy."""
    import numpy

    from airlab.train.rundir import _cpu_model  # the model env.json names

    return {"machine": platform.machine(), "cpu": _cpu_model(), "numpy": numpy.__version__}


def _flat(facts: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in facts.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def compare_facts(saved: Mapping, now: Mapping) -> list[str]:
    """What differs between the numerics facts a checkpoint was written under and those of this
    process, one line each ("threads 2 -> 1"), in the saved order. Keys the checkpoint did not
    record are ignored (an older checkpoint, or a fact added since)."""
    before, after = _flat(saved), _flat(now)
    return [f"{key} {_show(value)} -> {_show(after[key]) if key in after else 'not recorded'}"
            for key, value in before.items() if key not in after or after[key] != value]

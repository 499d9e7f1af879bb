"""Runs the suites and assembles the report: the one function the CLI calls.

Order: matmul and memory per device, the all-reduce across GPUs, training throughput per model;
each timed window with telemetry; each figure judged against its peak. In a process of a run of
several (`airlab bench --nproc N`, or torchrun), only the all-reduce across the run's processes is
measured (airlab.bench.collective), and only rank 0 gets a report. One failing figure (an
unsupported dtype, out of memory) is recorded under `skipped` with its reason and the run goes on.
The seams `bench_loader`, `clock_probe`, `cpu_info`, `trainer` and `telemetry` let tests run the
GPU paths on a CPU with fakes.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil

from airlab import __version__, registry
from airlab.bench import arithmetic, collective, peaks
from airlab.bench import backends as bench_backends
from airlab.bench.clock import measure_clock
from airlab.bench.harness import STATISTIC, Stats, measure
from airlab.bench.plans import PLANS, Plan
from airlab.bench.report import SCHEMA, Figure, Report
from airlab.bench.telemetry import Telemetry
from airlab.bench.verdict import judge, stragglers
from airlab.errors import AirlabError, BackendUnavailable, EnvironmentProblem, UsageError

DEVICE_SYNTAX = re.compile(r"^(auto|all|cpu|cuda|cuda:\d+)$")
STRAGGLER_TOLERANCE = 0.10


@dataclass
class Options:
    suite: str = "quick"  # quick | full
    device: str = "auto"  # auto (GPUs if any, else the CPU) | all | cpu | cuda | cuda:N
    backend: str = "all"  # all installed | torch | tensorflow
    verify: bool = False  # time a plain framework matmul loop beside every matmul figure
    argv: list[str] = field(default_factory=list)
    plan: Plan | None = None  # overrides PLANS[suite] (tests)
    sizes: tuple[int, ...] | None = None  # all-reduce message sizes across processes (default: the plan's)


class Progress:
    """What the runner tells its caller; the default tells nobody."""

    def begin(self, total: int) -> None: ...

    def start(self, label: str) -> None: ...

    def advance(self, figure: Figure | None = None, skipped: dict | None = None) -> None: ...

    def end(self) -> None: ...


@dataclass
class _Job:
    label: str
    run: Callable[[], list[Figure]]


def _debug() -> bool:
    return os.environ.get("AIRLAB_DEBUG", "") not in ("", "0", "false", "no")


def check_options(options: Options) -> None:
    if options.suite not in PLANS:
        raise UsageError(f"unknown suite {options.suite!r}", hint="use --quick or --full")
    if not DEVICE_SYNTAX.match(options.device):
        raise UsageError(f"--device: expected cpu, cuda, cuda:N, all or auto. Received: {options.device!r}",
                         hint="example: airlab bench --device cuda:0")
    if options.backend not in ("all", *bench_backends.BENCH_MODULES):
        raise UsageError(f"--backend: expected torch, tensorflow or all. Received: {options.backend!r}")


def select_devices(available: list[dict], request: str) -> list[dict]:
    cpu = [d for d in available if d["kind"] == "cpu"]
    gpus = [d for d in available if d["kind"] == "gpu"]
    if request == "auto":
        return gpus or cpu
    if request == "all":
        return cpu + gpus
    if request == "cpu":
        return cpu
    if request == "cuda":
        if not gpus:
            raise EnvironmentProblem("--device cuda: no CUDA device is visible",
                                     hint="use --device cpu, or check the driver with `nvidia-smi`")
        return gpus
    found = [d for d in available if d["id"] == request]
    if not found:
        raise EnvironmentProblem(f"--device {request}: no such device (this machine has: "
                                 f"{', '.join(d['id'] for d in available)})",
                                 hint="use one of those ids, or check CUDA_VISIBLE_DEVICES")
    return found


def _backends_for(options: Options) -> list[str]:
    if options.backend == "all":
        names = bench_backends.installed_backends()
        if not names:
            raise BackendUnavailable("no deep-learning framework is installed (neither torch nor tensorflow)",
                                     hint='install one: pip install "airlab[torch]"')
        return names
    if not bench_backends.framework_installed(options.backend):
        registry.require_framework(options.backend)
    return [options.backend]


class CpuFacts:
    """The CPU, its measured clock and its estimated peaks."""

    def __init__(self, info: peaks.CpuInfo, threads: int | None, clock: dict | None, table: dict):
        self.info = info
        self.isa = peaks.detect_isa(info.flags, info.vendor, info.family, table)
        self.cores = min(info.cores, threads) if threads else info.cores
        self.clock = clock
        # a probe that could not measure a plausible clock hands back the OS's figure with a note
        self.measured = bool(clock) and clock.get("source", "measured") == "measured"
        if self.measured:
            self.clock_mhz = clock["all_core_mhz"]
            self.clock_source = f"measured: {clock['method']}"
        elif clock:
            self.clock_mhz = clock["all_core_mhz"]
            self.clock_source = f"reported by the OS ({clock['method']}): {clock['note']}"
        elif info.reported_mhz:
            self.clock_mhz = info.reported_mhz
            self.clock_source = "reported by the OS (not measured: the clock probe gave no figure here)"
        else:
            self.clock_mhz = None
            self.clock_source = "unknown"

    def peak(self, dtype: str) -> float | None:
        hz = self.clock_mhz * 1e6 if self.clock_mhz else None
        return peaks.cpu_peak(self.cores, hz, self.isa, dtype)

    def peak_source(self, dtype: str) -> str | None:
        per_cycle = {"fp32": self.isa.fp32_per_cycle, "bf16": self.isa.bf16_per_cycle}.get(dtype)
        if not per_cycle or not self.clock_mhz:
            return None
        how = "measured" if self.measured else "reported"
        return (f"estimate: {self.cores} cores x {self.clock_mhz:,.0f} MHz ({how}) x {per_cycle:g} FLOPs/cycle "
                f"({self.isa.name})")

    def as_dict(self) -> dict:
        i = self.info
        return {"model_name": i.model_name, "vendor": i.vendor, "family": i.family, "model": i.model,
                "logical_cpus": i.logical, "physical_cores": i.physical, "usable_cpus": i.usable,
                "cores_used": self.cores, "isa": self.isa.name, "isa_basis": self.isa.basis,
                "clock_mhz": self.clock_mhz, "clock_source": self.clock_source,
                "clock_single_core_mhz": self.clock.get("single_core_mhz") if self.measured else None,
                "clock_note": self.clock.get("note") if self.clock else None,
                "clock_reported_mhz": i.reported_mhz,
                "peak_flops": {"fp32": self.peak("fp32"), "bf16": self.peak("bf16")}}


class _CpuOnly:
    """The device list when no installed backend has a bench module: training on the CPU only."""

    name = "none"

    def devices(self) -> list[dict]:
        return [{"id": "cpu", "kind": "cpu", "index": None}]


class _Run:
    def __init__(self, options: Options, progress: Progress, *, bench_loader, clock_probe, cpu_info, trainer,
                 telemetry_factory):
        self.o = options
        self.plan = options.plan or PLANS[options.suite]
        self.progress = progress
        self.bench_loader = bench_loader
        self.clock_probe = clock_probe
        self.cpu_info = cpu_info
        self.trainer = trainer
        self.telemetry_factory = telemetry_factory
        self.table = peaks.load_table()
        self.figures: list[Figure] = []
        self.skipped: list[dict] = []
        self.devices: dict[str, dict] = {}  # id -> metadata
        self.backend_env: dict[str, dict] = {}
        self.cpu: CpuFacts | None = None
        self.telemetry: Telemetry | None = None
        self.across: dict | None = None  # the all-reduce across the processes of a run (report.allreduce)

    # -- building blocks -----------------------------------------------------------------------
    def skip(self, what: str, reason: str) -> dict:
        item = {"what": what, "reason": reason}
        self.skipped.append(item)
        return item

    def _figure(self, *, suite, key, name, backend, device, value, unit, stats: Stats | None, work, peak,
                peak_source, expected, window, detail=None, notes=()) -> Figure:
        v = judge(value, peak, expected)
        record = window.record if window is not None else None
        return Figure(
            id=f"{suite}/{backend}/{device}/{key}", suite=suite, name=name, backend=backend, device=device,
            value=value, unit=unit, stats=stats.as_dict() if stats else None, work=work, peak=peak,
            peak_source=peak_source, fraction_of_peak=v.fraction, expected_fraction=expected if peak else None,
            verdict=v.label, verdict_reason=v.reason, marks=list(record.marks) if record else [],
            notes=[*(record.notes if record else []), *notes], telemetry=record.as_dict() if record else None,
            detail=detail or {})

    def _min_window(self, workload, gpu: bool) -> float:
        """Seconds a timed window lasts at least: the plan's on the CPU; on a GPU one iteration per window
        (device events time it), unless the workload is host-clocked and asks for longer windows."""
        asked = getattr(workload, "min_window_s", None)
        if asked is not None:
            return asked
        return 0.0 if gpu else self.plan.min_window_s

    def _window(self, device: dict, cpu_bound: bool | None = None):
        gpu = device["kind"] == "gpu"
        return self.telemetry.window(device["id"] if gpu else None,
                                     cpu_bound=(not gpu) if cpu_bound is None else cpu_bound)

    # -- suites --------------------------------------------------------------------------------
    def matmul(self, bench, device: dict, dtype: str) -> list[Figure]:
        gpu = device["kind"] == "gpu"
        p = self.plan
        shapes = p.gpu_shapes if gpu else p.cpu_shapes
        rows, best = [], None
        for m, n, k in shapes:
            self.progress.start(f"matmul {dtype} {m}x{n}x{k} on {device['id']} ({bench.name})")
            try:
                wl = bench.matmul(device["id"], dtype, m, n, k, p.seed)
            except AirlabError:
                raise
            except Exception as e:
                if _debug():
                    raise
                self.skip(f"matmul/{bench.name}/{device['id']}/{dtype} {m}x{n}x{k}", f"{type(e).__name__}: {e}")
                continue
            window = self._window(device)
            notes = list(getattr(wl, "notes", ()))
            try:
                stats = measure(wl.run, wl.clock, warmup=p.gpu_warmup if gpu else p.warmup,
                                repeats=p.gpu_repeats if gpu else p.repeats,
                                min_window_s=self._min_window(wl, gpu), flush=wl.flush,
                                on_window=lambda: window, budget_s=None if gpu else p.budget_s,
                                warmup_s=0.0 if gpu else p.warmup_s)
            finally:
                wl.close()
            flops = arithmetic.matmul_flops(m, n, k)
            value = arithmetic.rate(flops, stats.median)
            row = {"m": m, "n": n, "k": k, "flops": flops, "value": value, **stats.as_dict(),
                   "marks": list(window.record.marks)}
            if self.o.verify:
                self.progress.start(f"plain matmul {dtype} {m}x{n}x{k} on {device['id']} (--verify)")
                iters = max(stats.inner, 10 if gpu else 1)  # a GPU round of one product would time the sync
                plain = bench.plain_matmul_seconds(device["id"], dtype, m, n, k, iters=iters,
                                                   rounds=max(3, stats.repeats))
                plain_s = statistics.median(plain)
                row["plain"] = {"what": f"plain {bench.name} loop timed with perf_counter and one device sync",
                                "median_s": plain_s, "value": flops / plain_s, "rounds": len(plain),
                                "iters_per_round": iters, "ratio_bench_to_plain": value / (flops / plain_s),
                                # fastest window against fastest round: the least disturbed on a busy machine
                                "ratio_best": min(plain) / stats.min}
            rows.append(row)
            if best is None or value > best[0]:
                best = (value, (m, n, k), stats, window, notes)
        if best is None:
            return []
        value, (m, n, k), stats, window, notes = best
        if gpu:
            entry = self.devices[device["id"]].get("_peak_entry")
            peak = peaks.gpu_matmul_peak(entry, dtype)
            source = (f"gpu_peaks.json {entry['name']}: {entry[dtype]} TFLOP/s {dtype}" if peak else None)
            expected = peaks.gpu_expected_fraction(entry, dtype, self.table)
        else:
            peak, source = self.cpu.peak(dtype), self.cpu.peak_source(dtype)
            expected = peaks.CPU_EXPECTED_FRACTION.get(dtype)
        label = f"matmul {dtype}"
        work = {"m": m, "n": n, "k": k, "flops": arithmetic.matmul_flops(m, n, k),
                "arithmetic_intensity": arithmetic.arithmetic_intensity(m, n, k, dtype), "dtype": dtype}
        return [self._figure(suite="matmul", key=dtype, name=label, backend=bench.name, device=device["id"],
                             value=value, unit="FLOP/s", stats=stats, work=work, peak=peak, peak_source=source,
                             expected=expected, window=window, notes=notes,
                             detail={"best_shape": [m, n, k], "shapes": rows})]

    def memory(self, bench, device: dict, kind: str) -> list[Figure]:
        p = self.plan
        gpu = device["kind"] == "gpu"
        avail = psutil.virtual_memory().available
        if kind == "cpu":
            nbytes = min(p.cpu_copy_bytes, avail // 8)
        elif kind == "d2d":
            nbytes = min(p.gpu_copy_bytes, (device.get("memory_bytes") or p.gpu_copy_bytes * 8) // 8)
        else:
            nbytes = min(p.host_copy_bytes, avail // 8)
        self.progress.start(f"copy {kind} {nbytes / 2**20:,.0f} MiB on {device['id']} ({bench.name})")
        wl = bench.copy(device["id"], kind, nbytes, p.seed)
        window = self._window(device)
        notes = list(getattr(wl, "notes", ()))
        try:
            stats = measure(wl.run, wl.clock, warmup=p.gpu_warmup if gpu else p.warmup,
                            repeats=p.gpu_repeats if gpu else p.repeats,
                            min_window_s=self._min_window(wl, gpu), flush=wl.flush, on_window=lambda: window,
                            budget_s=None if gpu else p.budget_s, warmup_s=0.0 if gpu else p.warmup_s)
        finally:
            wl.close()
        counted = arithmetic.copy_bytes(nbytes, kind)
        value = arithmetic.rate(counted, stats.median)
        peak = source = expected = None
        if kind == "d2d":
            entry = self.devices[device["id"]].get("_peak_entry")
            peak = peaks.gpu_memory_peak(entry)
            source = f"gpu_peaks.json {entry['name']}: {entry['mem_bw_tbps']} TB/s" if peak else None
            expected = peaks.copy_expected_fraction(self.table)
        elif kind != "cpu":
            info = self.devices[device["id"]]
            gen, width = info.get("pcie_max_generation"), info.get("pcie_max_width")
            peak = peaks.pcie_peak(gen, width)
            source = f"PCIe gen {gen} x{width} (NVML), one direction" if peak else None
            expected = peaks.PCIE_EXPECTED_FRACTION["pinned" if kind.endswith("pinned") else "pageable"]
        else:
            notes.append("no peak: the memory configuration of this machine is not known to software")
        convention = arithmetic.CONVENTIONS["copy" if kind in ("cpu", "d2d") else "host_device"]
        names = {"cpu": "memory copy", "d2d": "copy device-to-device"}
        name = names.get(kind) or f"copy {kind.replace('-', ' ')}"
        return [self._figure(suite="memory", key=kind, name=name, backend=bench.name, device=device["id"],
                             value=value, unit="B/s", stats=stats,
                             work={"buffer_bytes": nbytes, "bytes_counted": counted, "convention": convention},
                             peak=peak, peak_source=source, expected=expected, window=window, notes=notes)]

    def allreduce(self, bench, gpus: list[dict]) -> list[Figure]:
        p = self.plan
        ids = [g["id"] for g in gpus]
        nbytes = min([p.allreduce_bytes] + [(g.get("memory_bytes") or p.allreduce_bytes * 8) // 8 for g in gpus])
        self.progress.start(f"all-reduce {nbytes / 2**20:,.0f} MiB across {len(ids)} GPUs ({bench.name})")
        window = self._window(gpus[0], cpu_bound=False)
        with window:
            result = bench.allreduce(ids, nbytes, warmup=p.gpu_warmup, repeats=p.allreduce_repeats)
        stats = Stats.of(result["seconds"])
        value = arithmetic.allreduce_bus_bandwidth(nbytes, stats.median, len(ids))
        key = f"allreduce-{len(ids)}gpu"
        return [self._figure(suite="interconnect", key=key, name=f"all-reduce bus bandwidth, {len(ids)} GPUs",
                             backend=bench.name, device=",".join(ids), value=value, unit="B/s", stats=stats,
                             work={"buffer_bytes": nbytes, "ranks": len(ids), "dtype": "fp32", "op": "sum",
                                   "convention": arithmetic.CONVENTIONS["allreduce"]},
                             peak=None, peak_source=None, expected=None, window=window,
                             detail={"per_rank_seconds": result.get("per_rank_seconds", {})},
                             notes=["telemetry from the first GPU only"])]

    def training(self, backend: str, device: dict, model: str, data) -> list[Figure]:
        self.progress.start(f"train {model} on {device['id']} ({backend})")
        window = self._window(device, cpu_bound=True)
        result = self.trainer(backend, device["id"], model, self.plan, data, on_window=lambda: window)
        value = result.samples_per_step / result.stats.median
        return [self._figure(suite="training", key=model, name=f"train {model}", backend=backend,
                             device=device["id"], value=value, unit="samples/s", stats=result.stats,
                             work={"samples_per_step": result.samples_per_step, "params": result.params,
                                   **result.meta, "convention": arithmetic.CONVENTIONS["training"]},
                             peak=None, peak_source=None, expected=None, window=window)]

    # -- the run -------------------------------------------------------------------------------
    def describe_devices(self, selected: list[dict]) -> None:
        for d in selected:
            if d["id"] in self.devices:
                continue
            meta = {k: v for k, v in d.items()}
            if d["kind"] == "gpu":
                meta.update(self.telemetry.static(d["id"]))
                entry = peaks.match_gpu(d.get("name", ""), self.table)
                meta["_peak_entry"] = entry
                meta["peak_table_entry"] = entry["name"] if entry else None
                if entry is None:
                    meta["peak_note"] = (f"{d.get('name')!r} is not in gpu_peaks.json: figures are reported "
                                         "without % of peak")
            else:
                meta["name"] = self.cpu.info.model_name if self.cpu else "cpu"
            self.devices[d["id"]] = meta

    def jobs(self, benches: dict, names: list[str]) -> list[_Job]:
        p = self.plan
        jobs: list[_Job] = []
        primary = self.primary
        for name in names:
            bench = benches.get(name)
            if bench is None:
                continue
            selected = select_devices(bench.devices(), self.o.device)
            self.describe_devices(selected)
            for d in selected:
                if "matmul" in p.suites:
                    for dtype in bench.matmul_dtypes(d["id"]):
                        jobs.append(_Job(f"matmul {dtype} {d['id']}",
                                         lambda b=bench, d=d, t=dtype: self.matmul(b, d, t)))
                if "memory" in p.suites:
                    for kind in bench.copy_kinds(d["id"]):
                        jobs.append(_Job(f"copy {kind} {d['id']}", lambda b=bench, d=d, k=kind: self.memory(b, d, k)))
            gpus = [d for d in selected if d["kind"] == "gpu"]
            if "interconnect" in p.suites and len(gpus) >= 2:
                if getattr(bench, "allreduce", None) is not None:
                    jobs.append(_Job(f"all-reduce {len(gpus)} GPUs", lambda b=bench, g=gpus: self.allreduce(b, g)))
                else:
                    self.skip(f"all-reduce on {name}", f"the {name} bench has no all-reduce (the torch one measures "
                                                       "it through torch.distributed and NCCL)")
        if "training" in p.suites:
            train_devices = select_devices(primary.devices(), self.o.device)
            if not p.train_all_devices:
                firsts = {}
                for d in train_devices:
                    firsts.setdefault(d["kind"], d)
                train_devices = list(firsts.values())
            self.describe_devices(train_devices)
            from airlab.bench.training import DataCache

            data = DataCache(p)
            models = list(p.train_models or registry.model_names())
            for name in names:
                missing = [m for m in models if name not in registry.get_model(m).backends]
                if missing:
                    what = "no registered model has" if len(missing) == len(models) else \
                        f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'}"
                    self.skip(f"training on {name}", f"{what} a {name} implementation yet")
                for d in train_devices:
                    for model in models:
                        if model not in missing:
                            jobs.append(_Job(f"train {model} {d['id']}",
                                             lambda n=name, d=d, m=model: self.training(n, d, m, data)))
        return jobs

    def run(self) -> Report | None:
        t0 = time.perf_counter()
        created = _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")
        if collective.world_size() > 1:
            return self.run_processes(t0, created)
        names = _backends_for(self.o)
        benches = {}
        for name in names:
            try:
                benches[name] = self.bench_loader(name)
            except BackendUnavailable as e:  # a framework without a bench module: training only
                self.skip(f"matmul/memory on {name}", e.message)
                self.backend_env[name] = {"framework": name}
                continue
            self.backend_env[name] = benches[name].environment()
        self.primary = next(iter(benches.values()), None) or _CpuOnly()
        primary = self.primary
        selected = select_devices(primary.devices(), self.o.device)
        info = self.cpu_info() if callable(self.cpu_info) else self.cpu_info
        threads = next((d.get("threads") for d in primary.devices() if d["kind"] == "cpu"), None)
        clock = None
        if any(d["kind"] == "cpu" for d in selected):
            self.progress.start("measuring the CPU clock")
            clock = self.clock_probe(min(info.cores, threads or info.cores))
        self.cpu = CpuFacts(info, threads, clock, self.table)
        self.telemetry = self.telemetry_factory([d for d in selected if d["kind"] == "gpu"])
        try:
            jobs = self.jobs(benches, names)
            self.progress.begin(len(jobs))
            for job in jobs:
                try:
                    figures = job.run()
                except AirlabError:
                    raise
                except Exception as e:
                    if _debug():
                        raise
                    self.progress.advance(skipped=self.skip(job.label, f"{type(e).__name__}: {e}"))
                    continue
                self.figures.extend(figures)
                self.progress.advance(figure=figures[0] if figures else None)
        finally:
            self.telemetry.close()
            self.progress.end()
        return self.report(created, time.perf_counter() - t0)

    # -- the processes of a run ----------------------------------------------------------------
    def run_processes(self, t0: float, created: str) -> Report | None:
        """This process's part of the all-reduce across the run's processes; the report on rank 0,
        None on the others (which show no progress either)."""
        if self.o.backend == "tensorflow":
            raise UsageError("the all-reduce across processes is measured with PyTorch (torch.distributed)",
                             hint="use --backend torch (or leave --backend out)")
        bench = self.bench_loader("torch")  # exit 4 with the install hint when torch is missing
        if getattr(bench, "process_group_allreduce", None) is None:
            raise BackendUnavailable("this torch bench module cannot time an all-reduce across processes")
        main = collective.rank() == 0
        progress = self.progress if main else Progress()
        self.backend_env["torch"] = bench.environment()
        available = bench.devices()
        gpus = [d for d in available if d["kind"] == "gpu"]
        if self.o.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device {self.o.device} in a run of {collective.world_size()} processes: each "
                             "process takes the GPU of its local rank", hint="use --device cuda, cpu or auto")
        if self.o.device == "cuda" and not gpus:
            raise EnvironmentProblem("--device cuda: no CUDA device is visible",
                                     hint="use --device cpu (gloo), or check the driver with `nvidia-smi`")
        kind = "gpu" if gpus and self.o.device != "cpu" else "cpu"
        if kind == "gpu":
            index = collective.local_rank()
            device = next((d for d in gpus if d.get("index") == index), None)
            if device is None:
                raise EnvironmentProblem(f"local rank {index} has no GPU of its own: {len(gpus)} visible on this host",
                                         hint="start at most as many processes per host as it has GPUs, or use "
                                              "--device cpu")
        else:
            device = next(d for d in available if d["kind"] == "cpu")
        info = self.cpu_info() if callable(self.cpu_info) else self.cpu_info
        threads = next((d.get("threads") for d in available if d["kind"] == "cpu"), None)
        self.cpu = CpuFacts(info, threads, None, self.table)  # no clock probe: no CPU peak is judged here
        self.telemetry = self.telemetry_factory([device] if main and kind == "gpu" else [])
        try:
            self.describe_devices([device])
            p = self.plan
            sizes = list(self.o.sizes or (p.allreduce_gpu_sizes if kind == "gpu" else p.allreduce_cpu_sizes))
            world = collective.world_size()
            progress.begin(1)
            progress.start(f"all-reduce across {world} processes, {collective.human_size(sizes[0])} to "
                           f"{collective.human_size(sizes[-1])} (torch, {'NCCL' if kind == 'gpu' else 'gloo'})")
            result = bench.process_group_allreduce(kind, sizes, warmup=p.allreduce_warmup, repeats=p.allreduce_repeats,
                                                   inners=[collective.inner_iterations(n) for n in sizes], seed=p.seed)
            if not main:
                return None
            figures = self.process_figures(bench.name, device, sizes, result)
            self.figures.extend(figures)
            progress.advance(figure=figures[-1])
        finally:
            self.telemetry.close()
            progress.end()
        return self.report(created, time.perf_counter() - t0)

    def process_figures(self, backend: str, device: dict, sizes: list[int], result: dict) -> list[Figure]:
        summary = collective.summarize(sizes, result["seconds"], tolerance=STRAGGLER_TOLERANCE)
        n = summary["world_size"]
        gpu = device["kind"] == "gpu"
        if gpu:
            peak, source, expected, note = peaks.allreduce_reference(self.devices[device["id"]], collective.one_host())
        else:
            peak = source = expected = None
            note = "gloo on the CPU: no reference to judge against"
        label = "cuda" if gpu else "cpu"
        figures = []
        for nbytes, row in zip(sizes, summary["rows"]):
            stats = Stats.of(row["seconds"], inner=collective.inner_iterations(nbytes))
            slow = row["slowest"]
            figures.append(self._figure(
                suite="interconnect", key=f"allreduce-{n}proc-{nbytes}", backend=backend, device=label,
                name=f"all-reduce bus bandwidth, {n} processes, {collective.human_size(nbytes)}", value=row["busbw"],
                unit="B/s", stats=stats,
                work={"buffer_bytes": nbytes, "ranks": n, "dtype": "fp32", "op": "sum", "backend": result["backend"],
                      "calls_per_repeat": stats.inner, "convention": arithmetic.CONVENTIONS["allreduce_processes"]},
                peak=peak, peak_source=source, expected=expected, window=None, notes=[note],
                detail={"algbw": row["algbw"], "per_rank_median_s": row["per_rank_median_s"],
                        "slowest_rank": slow["rank"], "slowest_lag": slow["lag"]}))
        self.across = {
            "world_size": n, "backend": result["backend"], "device": label, "one_host": collective.one_host(),
            "convention": arithmetic.CONVENTIONS["allreduce_processes"], "reference": note,
            "warmup": self.plan.allreduce_warmup, "repeats": self.plan.allreduce_repeats,
            "sizes": [{k: v for k, v in row.items() if k != "seconds"} for row in summary["rows"]],
            "straggler": summary["straggler"]}
        return figures

    def findings(self) -> tuple[list[str], list[dict]]:
        out: list[str] = []
        slow: list[dict] = []
        if self.across is not None and self.across["straggler"]["straggler"]:
            s = self.across["straggler"]
            slow.append({"rank": s["rank"], "figure": "interconnect/allreduce", "shortfall": s["lag"],
                         "median_of": self.across["world_size"]})
            out.append(f"rank {s['rank']} is a straggler: its all-reduces of {collective.human_size(s['bytes'])} take "
                       f"{s['lag']:.0%} longer than the median of {self.across['world_size']} ranks")
        gpus = [d for d, m in self.devices.items() if m.get("kind") == "gpu"]
        if len(gpus) >= 2:
            for suite, key in (("matmul", "bf16"), ("matmul", "fp32"), ("memory", "d2d")):
                values = {f.device: f.value for f in self.figures if f.suite == suite and f.id.endswith(f"/{key}")
                          and f.device in gpus}
                for dev, shortfall in stragglers(values, STRAGGLER_TOLERANCE):
                    name = next(f.name for f in self.figures if f.device == dev and f.id.endswith(f"/{key}"))
                    slow.append({"device": dev, "figure": f"{suite}/{key}", "shortfall": shortfall,
                                 "median_of": len(values)})
                    out.append(f"{dev} is a straggler: {name} {shortfall:.0%} below the median of {len(values)} GPUs")
        for f in self.figures:
            if f.verdict == "suspicious":
                out.append(f"suspicious: {f.name} on {f.device}: {f.verdict_reason}")
            elif f.verdict == "low":
                out.append(f"low: {f.name} on {f.device}: {f.verdict_reason}"
                           + (f" (taken under {' and '.join(f.marks)})" if f.marks else ""))
        marked = [f for f in self.figures if f.marks]
        if marked:
            out.append(f"{len(marked)} of {len(self.figures)} figures were taken under throttling or interference "
                       "(marked); rerun on a quiet machine to confirm them")
        if self.cpu and self.cpu.clock and not self.cpu.measured:
            out.append(f"CPU clock: {self.cpu.clock['note']}; the peak estimate uses the OS's "
                       f"{self.cpu.clock_mhz:,.0f} MHz ({self.cpu.clock['method']})")
        elif self.cpu and self.cpu.clock and self.cpu.info.reported_mhz:
            out.append(f"CPU clock measured at {self.cpu.clock_mhz:,.0f} MHz with all cores busy "
                       f"({self.cpu.clock['single_core_mhz']:,.0f} MHz on one); the OS reports "
                       f"{self.cpu.info.reported_mhz:,.0f} MHz")
        return out, slow

    def report(self, created: str, wall: float) -> Report:
        findings, slow = self.findings()
        devices = [{k: v for k, v in m.items() if not k.startswith("_")} for m in self.devices.values()]
        host = {"hostname": platform.node(), "os": platform.platform(), "python": sys.version.split()[0],
                "machine": platform.machine(), "memory_bytes": psutil.virtual_memory().total,
                "cpu": self.cpu.as_dict() if self.cpu else {}}
        method = {
            "statistic": STATISTIC,
            "timing": {"cpu": "host perf_counter after a device synchronize",
                       "gpu": "CUDA events on the current stream, one synchronize after the repeats; L2 flushed "
                              "(a write of twice its size) before every timed iteration, outside the events",
                       "gpu_host_clocked": "backends without device events (tensorflow): host perf_counter around "
                                           "back-to-back iterations, devices synchronized before each reading, "
                                           "L2 not flushed (said in the figure's notes)"},
            "data": "random normal (never zeros); warm-up iterations before timing",
            "conventions": arithmetic.CONVENTIONS,
            "verdicts": {"suspicious": "above 100 % of the theoretical peak, or not a positive finite value",
                         "low": f"below {peaks.LOW_MARGIN:g} x the typical achievable fraction of peak",
                         "ok": "otherwise", "n/a": "no theoretical peak for this figure"},
            "marks": {"throttled": "a power or thermal limit lowered the clocks during the window",
                      "interference": "other processes used the figure's CPU cores (or GPU) during the window"},
            "plan": {k: v for k, v in self.plan.__dict__.items()},
            "peak_table": "airlab/bench/gpu_peaks.json (dense datasheet peaks)",
        }
        counts: dict[str, int] = {}
        for f in self.figures:
            counts[f.verdict] = counts.get(f.verdict, 0) + 1
        return Report(schema=SCHEMA, airlab_version=__version__, created=created, argv=list(self.o.argv), suite=self.plan.name,
                      wall_seconds=wall, host=host, backends=self.backend_env, devices=devices, method=method,
                      figures=self.figures, findings=findings, skipped=self.skipped,
                      stragglers=slow, verdict_counts=counts, allreduce=self.across,
                      telemetry_problems=self.telemetry.problems if self.telemetry else [])


def run_bench(options: Options, progress: Progress | None = None, *, bench_loader=bench_backends.load,
              clock_probe=measure_clock, cpu_info=peaks.read_cpu_info, trainer=None,
              telemetry_factory=Telemetry) -> Report | None:
    """Run the bench the options describe and return its report: None in a process other than
    rank 0 of a run of several (the all-reduce across processes: rank 0 reports)."""
    check_options(options)
    if trainer is None:
        from airlab.bench.training import train_throughput as trainer
    return _Run(options, progress or Progress(), bench_loader=bench_loader, clock_probe=clock_probe,
                cpu_info=cpu_info, trainer=trainer, telemetry_factory=telemetry_factory).run()

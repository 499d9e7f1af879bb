"""The all-reduce across the processes of a run: `airlab bench --nproc N`, or `airlab bench`
in every process a launcher started (torchrun, `srun torchrun`, a Kubeflow TrainJob).

Framework-free: what is measured and how it is summarized lives here; the timing itself is the
torch bench module's (`process_group_allreduce` in airlab/backends/torch/bench.py), over the
process group in use (gloo on the CPU, NCCL on GPUs). `--nproc N` starts N local processes
through the launcher of the torch row of airlab/backends/table.py (torchrun's, as `airlab train
--nproc N` does); each process then runs the bench without `--nproc`.

Per message size every rank times its own all-reduces (warm-up calls, then timed repeats, each
after a barrier); rank 0 gathers every rank's times (float tensors, nothing pickled) and reports,
as nccl-tests does:

- algorithm bandwidth = size / time;
- bus bandwidth = algorithm bandwidth x 2(n-1)/n, what a ring all-reduce asks of every link,
  comparable across process counts;

where time is the median over repeats of the slowest rank's time (a collective ends when its
last rank does). The rank whose own median time is the longest at the largest size is named,
with how far it lags the median of all ranks; beyond STRAGGLER_TOLERANCE it is a straggler.
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Sequence

from airlab.bench import arithmetic
from airlab.errors import EnvironmentProblem, UsageError
from airlab.train.process import launcher_int

STRAGGLER_TOLERANCE = 0.10  # a slowest rank within 10 % of the median is noise on a shared machine
ONE_PROCESS = "one process: no all-reduce measured (use --nproc N)"
# Each timed repeat runs this many bytes of all-reduces at least (small messages are repeated so a
# window is not a single 50-microsecond call), capped at MAX_INNER calls. Fixed by the size alone,
# so every rank makes the same number of calls: no rank waits for a decision another took alone.
TARGET_BYTES_PER_REPEAT = 4 * 2**20
MAX_INNER = 50

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


# -- the process this is ------------------------------------------------------------------------
def world_size() -> int:
    """How many processes the launcher started (WORLD_SIZE; 1 without a launcher)."""
    return launcher_int("WORLD_SIZE", 1)


def rank() -> int:
    return launcher_int("RANK", 0)


def local_rank() -> int:
    return launcher_int("LOCAL_RANK", 0)


def one_host() -> bool:
    """Whether every process of the run is on this host (torchrun's LOCAL_WORLD_SIZE)."""
    return launcher_int("LOCAL_WORLD_SIZE", world_size()) == world_size()


# -- sizes ---------------------------------------------------------------------------------------
def parse_sizes(text: str) -> tuple[int, ...]:
    """'1KiB,64KiB,1MiB' -> bytes (binary units: K, KiB, KB all mean 1024), ascending, no repeats."""
    sizes = []
    for part in [p for p in str(text).split(",") if p.strip()] or [""]:
        m = _SIZE.match(part)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS or int(m.group(1)) * _UNITS[unit] < 4:
            raise UsageError(f"--sizes: expected message sizes of at least 4 bytes like 1KiB,1MiB,64MiB. "
                             f"Received: {part.strip()!r}", hint="example: airlab bench --nproc 2 --sizes 1KiB,1MiB")
        sizes.append(int(m.group(1)) * _UNITS[unit])
    return tuple(sorted(set(sizes)))


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def inner_iterations(nbytes: int) -> int:
    """All-reduces per timed repeat for a message of `nbytes` (the same on every rank)."""
    return max(1, min(MAX_INNER, math.ceil(TARGET_BYTES_PER_REPEAT / max(1, nbytes))))


# -- the arithmetic ------------------------------------------------------------------------------
def collective_seconds(per_rank: Sequence[Sequence[float]]) -> list[float]:
    """Per repeat, the time of the collective: the slowest rank's time (per_rank[rank][repeat])."""
    return [max(times) for times in zip(*per_rank)]


def slowest_rank(per_rank_median_s: Sequence[float], tolerance: float = STRAGGLER_TOLERANCE) -> dict:
    """The rank with the longest median time, how long, and by how much it lags the median of all
    ranks' medians (0.25 = 25 % longer); a straggler when that lag exceeds `tolerance`."""
    if not per_rank_median_s:
        raise ValueError("no ranks")
    slow = max(range(len(per_rank_median_s)), key=lambda r: (per_rank_median_s[r], -r))
    median = statistics.median(per_rank_median_s)
    lag = per_rank_median_s[slow] / median - 1 if median > 0 else 0.0
    return {"rank": slow, "median_s": per_rank_median_s[slow], "ranks_median_s": median, "lag": lag,
            "straggler": len(per_rank_median_s) > 1 and lag > tolerance, "tolerance": tolerance}


def summarize(sizes: Sequence[int], seconds: Sequence[Sequence[Sequence[float]]], *,
              tolerance: float = STRAGGLER_TOLERANCE) -> dict:
    """Rows per message size and the slowest rank, from seconds[rank][size][repeat] (time per
    all-reduce as each rank measured it)."""
    n = len(seconds)
    if n < 1 or any(len(by_size) != len(sizes) for by_size in seconds):
        raise ValueError(f"Expected seconds[rank][size][repeat] for {len(sizes)} sizes. Received {n} ranks")
    rows = []
    for i, nbytes in enumerate(sizes):
        per_rank = [seconds[r][i] for r in range(n)]
        collective = collective_seconds(per_rank)
        t = statistics.median(collective)
        medians = [statistics.median(times) for times in per_rank]
        rows.append({"bytes": nbytes, "seconds": collective, "median_s": t,
                     "algbw": arithmetic.allreduce_algorithm_bandwidth(nbytes, t),
                     "busbw": arithmetic.allreduce_bus_bandwidth(nbytes, t, n),
                     "per_rank_median_s": medians, "slowest": slowest_rank(medians, tolerance)})
    return {"world_size": n, "rows": rows, "straggler": dict(rows[-1]["slowest"], bytes=rows[-1]["bytes"])}


# -- starting the processes ----------------------------------------------------------------------
def argv_without(argv: Sequence[str], options: tuple[str, ...]) -> list[str]:
    """`argv` without the options named (and their values): what each started process runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not any(arg.startswith(o + "=") for o in options):
            out.append(arg)
    return out


def check_nproc(nproc: int | None, *, device: str, backend: str, verify: bool, sizes: str | None) -> None:
    """Refuse what `--nproc` (and `--sizes`) cannot mean, before any process starts."""
    inside = world_size() > 1
    if nproc is None:
        if sizes is not None and not inside:
            raise UsageError("--sizes sets the all-reduce's message sizes, measured across processes",
                             hint="add --nproc N, e.g. airlab bench --nproc 2 --sizes 1KiB,1MiB")
        return
    if inside:
        raise UsageError(f"--nproc {nproc} in a process a launcher started (WORLD_SIZE={world_size()})",
                         hint="leave out --nproc: every process of the launcher's run takes part")
    if nproc > 1:
        if backend == "tensorflow":
            raise UsageError("--nproc: the all-reduce across processes is measured with PyTorch (torch.distributed)",
                             hint="use --backend torch (or leave --backend out)")
        if device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device {device} with --nproc {nproc}: each process takes the GPU of its local rank",
                             hint="use --device cuda (GPUs, NCCL), --device cpu (gloo) or leave --device out")
        if verify:
            raise UsageError("--verify times matmuls; with --nproc only the all-reduce is measured",
                             hint="run airlab bench --verify without --nproc")


def launch(nproc: int, argv: list[str], *, device: str, bench_loader=None) -> int:
    """Run `airlab ARGV` (the bench, without --nproc) in `nproc` local processes through the torch
    row's launcher; return the run's exit code. Checks first that there is a GPU per process when
    the processes will use GPUs."""
    from airlab import registry
    from airlab.backends import table
    from airlab.bench import backends as bench_backends

    registry.require_framework("torch")
    bench = (bench_loader or bench_backends.load)("torch")
    gpus = [d for d in bench.devices() if d["kind"] == "gpu"]
    if device == "cuda" and not gpus:
        raise EnvironmentProblem("--device cuda: no CUDA device is visible",
                                 hint="use --device cpu (gloo), or check the driver with `nvidia-smi`")
    if device in ("auto", "cuda") and gpus and nproc > len(gpus):
        raise EnvironmentProblem(f"--nproc {nproc}: each process needs a GPU of its own, and {len(gpus)} "
                                 f"{'is' if len(gpus) == 1 else 'are'} visible",
                                 hint=f"use --nproc {len(gpus)} or fewer, or --device cpu (gloo)")
    return table.load(table.get("torch").launcher)(nproc, list(argv))

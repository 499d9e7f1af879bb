#!/usr/bin/env python
"""Training throughput with both trackers on (TensorBoard and MLflow) against none, side by side.

Each config trains a few hundred steps in a fresh `python -m airlab train` process per arm:
"none" (output.trackers: []), "both" (output.trackers: [tensorboard, mlflow], MLflow on the
default sqlite store beside the runs, the same store for every round, as a runs root has it) and
"control" (none again). Rounds rotate which arm runs first. Each arm's figure is summary.json
`samples_per_s` (training time only: the steps and their records, where the trackers' `write`
runs; evaluation, checkpoints and the trackers' open/finish are outside it). The ratio is the
median over rounds of both/none within a round; the control's ratio to "none" is what the same
code scores against itself, so its distance from 1.000 is the resolution of this run (the IQR of
the per-round ratios shows the machine's noise).

Both configs train on `shapes` (offline; mlp.yaml names mnist, which would need a download), at
the config's own log_every and at log_every 10, on the CPU unless --device says otherwise.

`--malloc pinned` runs every arm with glibc's mmap and trim thresholds fixed
(MALLOC_MMAP_THRESHOLD_=64 MiB, MALLOC_TRIM_THRESHOLD_=256 MiB). Measured on a 2-core VM: with
glibc's default (dynamic) thresholds, the main thread of a CPU run takes 40k to 500k minor page
faults in 300 steps of the quickstart CNN, varying from process to process with its memory layout
(a process that only imports mlflow, with no tracker, ran 12 % faster than one without), and
samples/s follows the faults; the trackers' own work is ~0.05 s of CPU in a 4 s loop. Pinned, the
faults drop to ~10-20k in every arm and the ratio measures the trackers rather than the allocator.

`--in-process` runs the same arms one after another in this process instead (after a warm-up run
with both trackers, so every arm has their libraries imported and their one-time costs paid):
what remains is the trackers' work during training. It also prints the CPU time that threads other
than the training loop's took while a run trained (TensorBoard's writer, MLflow's sender; torch's
own with more than one thread), as a share of the training time, with the trackers and without;
and the trackers' own CPU, counted (the main thread's time in their `write` plus their threads'
CPU, see TrackerCPU), with the ratio it bounds: a figure the machine's noise does not move.

    python scripts/bench_trackers.py [--rounds 5] [--steps 300] [--configs quickstart,mlp] [--threads N]
                                     [--malloc default|pinned] [--in-process]

Target (issue 13): ratio >= 0.97 at both log_every settings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from ratios import paired  # scripts/ratios.py (python puts this folder on sys.path)

REPO = Path(__file__).resolve().parents[1]
ARMS = {"none": "[]", "both": "[tensorboard,mlflow]", "control": "[]"}
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20)}


def log_every_of(config: Path) -> int:
    return int((yaml.safe_load(config.read_text()).get("train") or {}).get("log_every", 100))


def train(config: Path, run_dir: Path, trackers: str, log_every: int, args) -> float:
    """One run in a fresh process; its training samples/s."""
    cmd = [sys.executable, "-m", "airlab", "train", str(config), "--run-dir", str(run_dir),
           *overrides(log_every, trackers, args)]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    if args.malloc == "pinned":
        env.update(PINNED_MALLOC)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text())["samples_per_s"]


def overrides(log_every: int, trackers: str, args) -> list[str]:
    out = ["data.name=shapes", "train.epochs=null", f"train.steps={args.steps}", f"train.log_every={log_every}",
           f"train.checkpoint_every={args.steps}", "train.keep_checkpoints=1", f"device={args.device}",
           f"output.trackers={trackers}", "output.curves=false"]
    return out + ([f"train.threads={args.threads}"] if args.threads else [])


def _thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process (Linux /proc), by thread id."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / hz
    return out


class TrackerCPU:
    """The CPU the trackers take in one run, counted rather than inferred from throughput: the
    main thread's time inside the trackers' `write` (time.thread_time around each call) plus the
    CPU of the Python threads that appeared while the run trained (TensorBoard's writer, MLflow's
    sender; torch's worker threads are not Python threads), read when `finish` or `close` begins
    (an ended thread leaves /proc): their work while the run trained and evaluated."""

    def __init__(self):
        import importlib

        from airlab.train.trackers import TRACKERS

        self.classes = [getattr(importlib.import_module(module), name)
                        for module, name in (where.split(":") for where in TRACKERS.values())]
        self.write_s = 0.0
        self.threads: set[int] = set()
        self._known = {t.native_id for t in threading.enumerate()}

    def __enter__(self):
        self._saved = [(cls, name, getattr(cls, name)) for cls in self.classes for name in ("write", "finish", "close")]
        for cls, name, method in self._saved:
            setattr(cls, name, self._timed(method) if name == "write" else self._sampled(method))
        self.thread_cpu: dict[int, float] = {}  # their CPU when last seen alive (an ended thread leaves /proc)
        return self

    def __exit__(self, *exc):
        for cls, name, method in self._saved:
            setattr(cls, name, method)

    def _sampled(self, method):
        def sampled(sink, *args):
            now = _thread_cpu()
            self.thread_cpu.update({tid: now[tid] for tid in self.threads if tid in now})
            return method(sink, *args)
        return sampled

    def _timed(self, write):
        def timed(sink, record):
            self.threads |= {t.native_id for t in threading.enumerate()} - self._known
            t0 = time.thread_time()
            try:
                return write(sink, record)
            finally:
                self.write_s += time.thread_time() - t0
        return timed


def train_here(config: Path, run_dir: Path, trackers: str, log_every: int, args) -> tuple[float, float, float]:
    """One run in this process: its training samples/s; the CPU seconds threads other than this
    one took while it ran, as a share of its training time; and the trackers' own CPU (TrackerCPU)
    as a share of its training time."""
    from airlab.config import load_config
    from airlab.train.loop import Trainer
    from airlab.train.progress import Reporter

    cfg = load_config(config, overrides(log_every, trackers, args))
    main = threading.get_native_id()
    before = _thread_cpu()
    with TrackerCPU() as counted:
        summary = Trainer(cfg, run_dir=run_dir, reporter=Reporter(quiet=True)).run().summary
    after = _thread_cpu()
    others = sum(t - before.get(tid, 0.0) for tid, t in after.items() if tid != main)
    mine = counted.write_s + sum(counted.thread_cpu.get(tid, 0.0) - before.get(tid, 0.0) for tid in counted.threads)
    train_s = max(summary["train_time_s"], 1e-9)
    return summary["samples_per_s"], others / train_s, mine / train_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--configs", default="quickstart,mlp")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="train.threads (default: airlab's own choice)")
    ap.add_argument("--malloc", choices=("default", "pinned"), default="default",
                    help="glibc malloc thresholds of every run: the default (dynamic) or pinned (see above)")
    ap.add_argument("--in-process", action="store_true", help="every run in this process (see above)")
    args = ap.parse_args()
    if args.in_process and args.malloc == "pinned" and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        os.environ.update(PINNED_MALLOC)  # glibc reads them at start-up: run this script again under them
        os.execv(sys.executable, [sys.executable, *sys.argv])
    where = "one process, after a warm-up run with both" if args.in_process else "fresh process per run"
    print(f"{args.rounds} rounds of {args.steps} steps, device {args.device}, threads {args.threads or 'default'}, "
          f"malloc {args.malloc}, {os.cpu_count()} CPUs; {where}")
    print(f"{'config':11} {'log_every':>9} {'none samples/s':>15} {'both samples/s':>15} {'ratio':>6} {'IQR':>11}   "
          f"{'control':>7} {'IQR':>11}" + ("   tracker threads' CPU" if args.in_process else ""))
    with tempfile.TemporaryDirectory(prefix="airlab-bench-trackers-") as tmp:
        runs = Path(tmp) / "runs"
        n = 0
        for name in args.configs.split(","):
            config = REPO / "configs" / f"{name}.yaml"
            own = log_every_of(config)
            for log_every in dict.fromkeys([own, 10]):
                one = train_here if args.in_process else train
                one(config, runs / f"warmup-{n}", ARMS["both"], log_every, args)  # data cache, store tables
                got: dict[str, list[float]] = {k: [] for k in ARMS}
                cpu: dict[str, list[float]] = {k: [] for k in ARMS}
                own: list[float] = []  # the trackers' counted CPU, per "both" run, as a share of its training
                names = list(ARMS)
                for r in range(args.rounds):
                    shift = r % len(names)
                    for arm in names[shift:] + names[:shift]:
                        n += 1
                        result = one(config, runs / f"{name}-{log_every}-{arm}-{n}", ARMS[arm], log_every, args)
                        if args.in_process:
                            result, share, counted = result
                            cpu[arm].append(share)
                            if arm == "both":
                                own.append(counted)
                        got[arm].append(result)
                none, both = statistics.median(got["none"]), statistics.median(got["both"])
                ratio, r1, r3 = paired(got["both"], got["none"])
                c, c1, c3 = paired(got["control"], got["none"])
                print(f"{name:11} {log_every:>9} {none:>15,.0f} {both:>15,.0f} {ratio:>6.3f} {r1:.3f}-{r3:.3f}   "
                      f"{c:>7.3f} {c1:.3f}-{c3:.3f}" + (f"   {statistics.median(cpu['both']):.2%} (none: "
                                                         f"{statistics.median(cpu['none']):.2%})" if args.in_process
                                                         else ""), flush=True)
                for arm, values in got.items():
                    print(f"{'':11} {arm:>9}: {', '.join(f'{v:,.0f}' for v in values)}", flush=True)
                if own:
                    worst = max(own)
                    print(f"{'':11} trackers' own CPU (counted): median {statistics.median(own):.2%}, most "
                          f"{worst:.2%} of training time -> throughput ratio >= {1 / (1 + worst):.3f} even if "
                          f"every tracker cycle stalled training", flush=True)


if __name__ == "__main__":
    main()

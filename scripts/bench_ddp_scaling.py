#!/usr/bin/env python
"""Data-parallel training on 1 process against N processes: throughput, weights, all-reduce.

The same config (default configs/mlp.yaml on offline `shapes` data, dropout off, SGD, fp32, the
CPU) trains for a fixed number of steps with 1 process (on every core, and on one thread) and with
N (`airlab train --nproc N`: torchrun's launcher, DDP over gloo), the arms rotating which runs
first, round by round. It prints:

- samples/s of each (summary.json `samples_per_s`: global samples over the training steps, evaluation
  and saves excluded), their median and range over the rounds, and the ratios per round;
- the largest absolute difference between the final weights of the 1- and the N-process run
  (checkpoints/step-S/model.safetensors), beside that between 1 process on every core and on one
  thread (only the order of floating-point sums differs in both), and whether every round
  reproduced its weights bitwise;
- the all-reduce bus bandwidth across N processes at the largest message (`airlab bench --nproc N`).

    python scripts/bench_ddp_scaling.py [--config configs/cnn.yaml] [--steps 300] [--rounds 3] [--nproc 2]

On a machine of few cores N processes share them (1 process uses them all as intra-op threads):
the point there is correctness and the overhead of the gradient all-reduce, not a speed-up. SGD by
default: Adam turns the last-bit differences of near-zero gradients into steps of the learning
rate, so its weights drift apart faster (train.optimizer=adam shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train(config: str, nproc: int, steps: int, device: str, overrides: list[str], run_dir: Path) -> dict:
    """One run in a fresh process; its summary, final weights and wall time."""
    argv = [sys.executable, "-m", "airlab", "train", config, "--run-dir", str(run_dir),
            *(["--nproc", str(nproc)] if nproc > 1 else []),
            "train.epochs=null", f"train.steps={steps}", f"train.log_every={max(1, steps // 5)}",
            f"train.eval_every={steps}", f"train.checkpoint_every={steps}", f"device={device}", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(argv[2:])} exited {proc.returncode}:\n{proc.stderr.strip()}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"summary": summary, "weights": run_dir / "checkpoints" / f"step-{summary['steps']}" / "model.safetensors",
            "wall_s": wall}


def max_weight_difference(a: Path, b: Path) -> tuple[float, str]:
    """The largest |a - b| over every weight, and the tensor it is in."""
    import numpy as np
    from safetensors.numpy import load_file

    wa, wb = load_file(str(a)), load_file(str(b))
    if set(wa) != set(wb):
        sys.exit(f"error: {a} and {b} hold different tensors")
    worst = max(((float(np.max(np.abs(wa[k].astype(np.float64) - wb[k].astype(np.float64)))), k) for k in wa),
                default=(0.0, "-"))
    return worst


def allreduce_figure(nproc: int, device: str) -> dict | None:
    """`airlab bench --nproc N`: the bus bandwidth at the largest message and the slowest rank."""
    argv = [sys.executable, "-m", "airlab", "bench", "--nproc", str(nproc), "--device", device, "--json"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"(airlab bench --nproc {nproc} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout)["allreduce"]


def _si(v: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:,.2f} {prefix}{unit}"
    return f"{v:,.1f} {unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/mlp.yaml")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("overrides", nargs="*", help="more KEY=VALUE overrides (e.g. train.optimizer=adam)")
    args = ap.parse_args()
    overrides = ["data.name=shapes", "data.size=12000", "data.val_fraction=0.05", "model.dropout=0.0",
                 "train.optimizer=sgd", "train.lr=0.05", *args.overrides]
    n = args.nproc
    import torch

    # three arms: 1 process on every core (intra-op threads), 1 process on one thread (the per-core
    # baseline: N processes on N free cores would reach N x its rate), N processes (one thread each)
    arms = [("1 process", 1, []), ("1 process, 1 thread", 1, ["train.threads=1"]), (f"{n} processes", n, [])]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}), load average "
          f"{os.getloadavg()[0]:.2f}; device {args.device}; {args.config} {' '.join(overrides)}; {args.steps} steps, "
          f"{args.rounds} rounds, the arms rotating which runs first; airlab train --nproc {n} (gloo), the same "
          "global batch")
    got: dict[str, list[dict]] = {name: [] for name, _, _ in arms}
    with tempfile.TemporaryDirectory(prefix="ddp-scaling-") as tmp:
        for r in range(args.rounds):
            order = arms[r % len(arms):] + arms[:r % len(arms)]
            for i, (name, k, extra) in enumerate(order):
                got[name].append(train(args.config, k, args.steps, args.device, [*overrides, *extra],
                                       Path(tmp) / f"r{r}-{i}"))
            print(f"round {r + 1}: " + ", ".join(f"{name} {got[name][-1]['summary']['samples_per_s']:,.0f}"
                                                  for name, _, _ in arms) + " samples/s", flush=True)
        one, single, many = (got[name] for name, _, _ in arms)
        diff, where = max_weight_difference(one[0]["weights"], many[0]["weights"])
        threads_diff, _ = max_weight_difference(one[0]["weights"], single[0]["weights"])
        bitwise = {name: len({x["summary"]["weights_sha256"] for x in runs}) == 1 for name, runs in got.items()}
    rate = {name: [x["summary"]["samples_per_s"] for x in runs] for name, runs in got.items()}
    print()
    for name, _, _ in arms:
        v = rate[name]
        print(f"samples/s, {name + ':':22} median {statistics.median(v):8,.0f} (range {min(v):,.0f} .. {max(v):,.0f})")
    for base in (arms[0][0], arms[1][0]):
        ratios = [b / a for a, b in zip(rate[base], rate[arms[2][0]])]
        print(f"ratio {n} processes / {base}: median {statistics.median(ratios):.3f} "
              f"(range {min(ratios):.3f} .. {max(ratios):.3f}, per round)")
    print(f"final weights after {args.steps} steps: max |1 process - {n} processes| = {diff:.3g} (in {where}); "
          f"for scale, max |1 process - 1 process on 1 thread| = {threads_diff:.3g}")
    print("every round reproduced its weights bitwise: " + ", ".join(f"{name} {'yes' if same else 'NO'}"
                                                                    for name, same in bitwise.items()))
    first1, firstn = one[0]["summary"], many[0]["summary"]
    for split in ("val", "test"):
        a, b = first1["final"].get(split) or {}, firstn["final"].get(split) or {}
        if a and b:
            pairs = ", ".join(f"{k} {a[k]:.6g} vs {b[k]:.6g}" for k in a if k in b)
            print(f"final {split}, 1 vs {n} processes: {pairs}")
    print(f"world size recorded in summary.json: {first1.get('world_size')} and {firstn.get('world_size')}")
    ar = allreduce_figure(n, args.device)
    if ar is not None:
        big = ar["sizes"][-1]
        s = ar["straggler"]
        print(f"all-reduce across {n} processes ({ar['backend']}), {big['bytes'] / 2**20:g} MiB fp32: bus bandwidth "
              f"{_si(big['busbw'], 'B/s')} (algorithm bandwidth {_si(big['algbw'], 'B/s')}, "
              f"{big['median_s'] * 1e3:.2f} ms); slowest rank {s['rank']}, {s['lag']:.0%} behind the median")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine moves these figures)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The fast path against the streaming path: samples/s and peak memory of the same training.

The same CNN config trains on the same data (a .npz of generated uint8 images written once into a
temporary directory: `--images N` of `--size`x`--size` with `--channels` channels, 10 classes)
twice per round, once with `data.placement: device` (every split in memory/on the device,
batches gathered there by index) and once with `data.placement: stream` (batches gathered on
the host from the memory-mapped cache by a background thread and prefetched), each in a fresh
process, the arms alternating which runs first. Both read the cache the first run builds (it is
built before the rounds, so no arm pays for it). It prints, per arm: samples/s (summary.json:
training steps only, evaluation and saving excluded), the median over the rounds, the peak
resident memory of the process (VmHWM) and its anonymous part at the end (RssAnon: the memory
the data costs when it is copied in, as opposed to file pages the kernel may drop), and
whether both arms ended at bitwise-equal weights.

    python scripts/bench_data_path.py [--images 50000] [--size 32] [--channels 3] [--steps 300] [--rounds 3]

Target (issue 12): streaming >= 0.9 x the fast path on the CPU when the data would fit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_data(path: Path, n: int, size: int, channels: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    # class-dependent brightness plus noise: learnable, and not compressible to nothing
    base = (y[:, None, None, None] * 20 + 30).astype(np.int16)
    x = np.clip(base + rng.integers(-30, 31, size=(n, size, size, channels)), 0, 255).astype(np.uint8)
    np.savez(path, x_train=x, y_train=y)


def child(args) -> None:
    """One training run in this process; prints one JSON line."""
    from airlab.config.load import load_config
    from airlab.train.loop import train

    overrides = [f"data.path={args.data}", f"data.placement={args.placement}", "data.name=npz",
                 "train.epochs=null", f"train.steps={args.steps}", f"train.log_every={max(1, args.steps // 5)}",
                 f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}", "device=cpu",
                 f"output.runs_root={args.runs}", "data.val_fraction=0.02", *args.override]
    config = load_config(REPO / args.config, overrides)
    result = train(config)
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            status[key] = int(value.split()[0]) * 1024
    weights = result.run_dir / "checkpoints" / f"step-{args.steps}" / "model.safetensors"
    print(json.dumps({"sps": result.summary["samples_per_s"], "placement": result.summary["data"]["placement"],
                      "weights": hashlib.sha256(weights.read_bytes()).hexdigest(), **status}))


def run_arm(args, placement: str, runs: Path) -> dict:
    argv = [sys.executable, __file__, "--child", "--placement", placement, "--data", str(args.data),
            "--steps", str(args.steps), "--config", args.config, "--runs", str(runs),
            *sum((["--override", o] for o in args.override), [])]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: the {placement} run exited {proc.returncode}:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/cnn.yaml")
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--override", action="append", default=[], help="more KEY=VALUE config overrides")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--placement", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--runs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="airlab-bench-data-") as tmp:
        tmp = Path(tmp)
        os.environ["AIRLAB_CACHE_DIR"] = str(tmp / "cache")
        args.data = tmp / "images.npz"
        make_data(args.data, args.images, args.size, args.channels)
        nbytes = args.images * args.size * args.size * args.channels
        print(f"data: {args.images:,} images {args.channels}x{args.size}x{args.size} uint8 ({mib(nbytes)}); "
              f"{args.config}, {args.steps} steps per run, {args.rounds} rounds, device cpu")
        # build the cache once, outside the measured runs
        from airlab.config.load import load_config
        from airlab.data import load_dataset

        cfg = load_config(REPO / args.config, [f"data.path={args.data}", "data.name=npz", "data.val_fraction=0.02"])
        load_dataset("npz", seed=cfg.seed, options=cfg.data)
        arms = {"device": [], "stream": []}
        for r in range(args.rounds):
            order = ("device", "stream") if r % 2 == 0 else ("stream", "device")
            for placement in order:
                out = run_arm(args, placement, tmp / f"runs-{r}-{placement}")
                arms[placement].append(out)
                print(f"round {r + 1} {placement:>6}: {out['sps']:9,.1f} samples/s, peak RSS {mib(out['VmHWM'])}, "
                      f"anonymous at the end {mib(out['RssAnon'])} (placement taken: {out['placement']})", flush=True)
        med = {k: statistics.median(o["sps"] for o in v) for k, v in arms.items()}
        ratios = [s["sps"] / d["sps"] for d, s in zip(arms["device"], arms["stream"])]
        same = all(d["weights"] == s["weights"] for d, s in zip(arms["device"], arms["stream"]))
        print()
        for k, v in arms.items():
            print(f"{k:>6}: median {med[k]:,.1f} samples/s; peak RSS {mib(max(o['VmHWM'] for o in v))}, "
                  f"anonymous {mib(max(o['RssAnon'] for o in v))}")
        print(f"stream / device: median {statistics.median(ratios):.3f} (per round: "
              f"{', '.join(f'{x:.3f}' for x in ratios)}); target >= 0.9")
        print(f"final weights bitwise equal between the paths in every round: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

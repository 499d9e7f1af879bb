#!/usr/bin/env python
"""Training throughput of the six models at their shipped configs, torch against TensorFlow.

Each shipped config (configs/<model>.yaml) runs through airlab's trainer on both backends with
its own model, optimizer and batch size, on offline data of the same shape (`shapes` for the
image models, `pycorpus` for the language model), for a fixed number of steps; the backends
alternate which runs first, round by round. Figures are samples/s:

- steady: the median over the logged intervals after the first (metrics.jsonl `samples_per_s`),
  i.e. without the first step's tracing (TensorFlow) or warm-up;
- whole: summary.json `samples_per_s` over every training step (evaluation and saves excluded).

    python scripts/bench_backends.py [--rounds 2] [--models mlp,cnn,...] [--device cpu]

Prints one table row per model and the ratio tensorflow / torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from airlab import registry
from airlab.config import load_config
from airlab.train.loop import Trainer
from airlab.train.progress import Reporter

REPO = Path(__file__).resolve().parents[1]
STEPS = {"mlp": 200, "cnn": 40, "rnn": 60, "autoencoder": 80, "vae": 200, "transformer": 100}


def run(model: str, backend: str, steps: int, device: str, root: Path) -> tuple[float, float]:
    path = REPO / "configs" / f"{model}.yaml"
    task = registry.get_model(load_config(path).model.name).task
    data = ["data.name=pycorpus", "data.size=400000"] if task == "lm" else ["data.name=shapes", "data.size=12000"]
    log = max(1, steps // 5)
    cfg = load_config(path, [*data, "train.epochs=null", f"train.steps={steps}", f"train.log_every={log}",
                             f"train.eval_every={steps}", f"train.checkpoint_every={steps}", f"device={device}",
                             f"backend={backend}", f"output.runs_root={root}", "data.val_fraction=0.02"])
    result = Trainer(cfg, reporter=Reporter(quiet=True)).run()
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    intervals = [r["samples_per_s"] for r in lines if r["split"] == "train"][1:]
    return statistics.median(intervals), result.summary["samples_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", default=",".join(STEPS))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import airlab.backends.tensorflow  # noqa: F401  (imports TensorFlow quietly, KERAS_BACKEND fixed)
    import tensorflow as tf
    import torch

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), tensorflow {tf.__version__}, "
          f"device {args.device}; offline data, shipped model/optimizer/batch size")
    print(f"{'model':12} {'batch':>5} {'steps':>5} {'torch steady':>13} {'tf steady':>10} {'ratio':>6} "
          f"{'torch whole':>12} {'tf whole':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            steps = STEPS[model]
            figures = {"torch": [], "tensorflow": []}
            for r in range(args.rounds):
                for backend in (("torch", "tensorflow") if r % 2 == 0 else ("tensorflow", "torch")):
                    figures[backend].append(run(model, backend, steps, args.device, Path(tmp)))
            med = {b: (statistics.median(f[0] for f in v), statistics.median(f[1] for f in v))
                   for b, v in figures.items()}
            batch = load_config(REPO / "configs" / f"{model}.yaml").data.batch_size
            (ts, tw), (ks, kw) = med["torch"], med["tensorflow"]
            print(f"{model:12} {batch:>5} {steps:>5} {ts:>13,.0f} {ks:>10,.0f} {ks / ts:>6.2f} "
                  f"{tw:>12,.0f} {kw:>9,.0f} {kw / tw:>6.2f}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""airlab's trainer against a minimal hand-written PyTorch loop, side by side in one process.

Both train the same model (built from the same spec), with the same optimizer, on the same
in-memory batches in the same order. Rounds alternate which runs first; the figure reported for
each is the median samples/s over the rounds, and the ratio is the median over rounds of
airlab / hand-written within a round (the two halves of a round see the same machine load).
airlab's figure is its own training throughput (summary.json `samples_per_s`: the time spent in
training steps and their logging, without evaluation or checkpoint saves), the hand loop's is
the wall time of its steps with one device sync at the end. The spread printed is the
interquartile range of the per-round ratios: on a shared machine the load of other tenants moves
whole rounds by 10-30 %, so read the ratio with it, and prefer more rounds to longer ones.

    python scripts/bench_trainer_overhead.py [--rounds 15] [--models mlp,cnn] [--device cpu]

Target (issue 2): ratio >= 0.95 for the MLP and the CNN.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from airlab import registry
from airlab.config import validate
from airlab.data import load_dataset
from airlab.tasks import get_task
from airlab.train.loop import Trainer, make_plan
from airlab.train.progress import Reporter

SETTINGS = {  # model -> (steps per round, batch size)
    "mlp": (400, 128),
    "cnn": (60, 128),
}


def config_for(model: str, steps: int, batch: int, device: str, runs_root: str):
    return validate({
        "name": f"bench-{model}", "seed": 0, "device": device,
        "model": {"name": model},
        "data": {"name": "shapes", "batch_size": batch, "val_fraction": 0.01, "size": 12000},
        "train": {"steps": steps, "optimizer": "adam", "lr": 1e-3, "log_every": 100,
                  "checkpoint_every": steps, "keep_checkpoints": 1},
        "output": {"runs_root": runs_root},
    })


def airlab_round(cfg) -> float:
    result = Trainer(cfg, reporter=Reporter(quiet=True)).run()
    return result.summary["samples_per_s"]


def hand_round(cfg, dataset, batches: list[np.ndarray]) -> float:
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device.startswith("cuda") else "cpu")
    model = registry.builder(cfg.model.name, "torch")(cfg.model, dataset.info).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    x_all = torch.as_tensor(dataset.train.x, device=device)
    y_all = torch.as_tensor(dataset.train.y.astype(np.int64), device=device)
    model.train()
    seen = 0
    t0 = time.perf_counter()
    for index in batches:
        idx = torch.from_numpy(index).to(device)
        x, y = x_all[idx], y_all[idx]
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += len(index)
    loss.item()  # one sync at the end
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'model':6} {'batch':>5} {'steps':>5} {'airlab samples/s':>17} {'hand loop samples/s':>20} {'ratio':>6}"
          f" {'spread (IQR)':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            steps, batch = SETTINGS[model]
            cfg = config_for(model, steps, batch, args.device, tmp)
            dataset = load_dataset("shapes", val_fraction=0.01, seed=0, size=12000)
            task = get_task(registry.get_model(model).task)
            plan = make_plan(cfg, dataset, task)
            batches = []
            for step in range(plan.total_steps):  # the trainer's own batch order
                epoch, pos = divmod(step, plan.steps_per_epoch)
                order = task.epoch_indices(len(dataset.train), cfg.seed, epoch)
                batches.append(order[pos * batch:(pos + 1) * batch])
            ours, theirs = [], []
            airlab_round(cfg), hand_round(cfg, dataset, batches[:20])  # warm-up
            for r in range(args.rounds):
                if r % 2 == 0:
                    ours.append(airlab_round(cfg))
                    theirs.append(hand_round(cfg, dataset, batches))
                else:
                    theirs.append(hand_round(cfg, dataset, batches))
                    ours.append(airlab_round(cfg))
            a, h = statistics.median(ours), statistics.median(theirs)
            ratios = [o / t for o, t in zip(ours, theirs)]
            paired = statistics.median(ratios)
            q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (paired, paired, paired)
            print(f"{model:6} {batch:>5} {steps:>5} {a:>17,.0f} {h:>20,.0f} {paired:>6.3f} {q1:>6.3f}-{q3:.3f}")
            print(f"       rounds airlab: {', '.join(f'{v:,.0f}' for v in ours)}; "
                  f"hand: {', '.join(f'{v:,.0f}' for v in theirs)}")


if __name__ == "__main__":
    main()

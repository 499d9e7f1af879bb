#!/usr/bin/env python
"""airlab on a Ray cluster: Ray Train's TorchTrainer runs airlab's training loop in every worker.

Ray starts `--workers` processes (one GPU each with `--gpu`), creates the torch.distributed
process group (NCCL on GPUs, gloo on CPUs) and sets each worker's GPU; airlab's trainer finds
that group and uses it as is (DDP, data.batch_size the global batch, rank 0 writes the run).

    python examples/ray/train_ray.py configs/cnn.yaml --workers 4 --gpu \\
        --run-dir /shared/airlab-runs/cnn-ray [KEY=VALUE ...]

Shared filesystem: only rank 0 writes the run directory and every rank reads the checkpoint it
resumes from, so --run-dir (and Ray's own --storage) must be on storage every node mounts.
Resuming: run the same command again; it finds the run in --run-dir and continues it from its
newest checkpoint (bitwise at the same number of workers).

Ray is not a dependency of airlab: install it where you run this (`pip install "ray[train]"`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def train_loop_per_worker(config: dict) -> None:
    """One worker's part of the run: airlab's own run loop, in this process."""
    from airlab.config import load_config
    from airlab.train.loop import Trainer

    cfg = load_config(config["config"], config["overrides"])
    run_dir = Path(config["run_dir"])
    if config["resume"]:  # decided once, by the driver: every worker must agree
        Trainer(cfg, resume=run_dir).run()  # a config that differs from the run's is refused, naming the keys
    else:
        Trainer(cfg, run_dir=run_dir).run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="airlab YAML config (on a path every node can read)")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. train.epochs=2")
    ap.add_argument("--workers", type=int, default=2, help="processes in all (one GPU each with --gpu)")
    ap.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL); else CPUs (gloo)")
    ap.add_argument("--cpus-per-worker", type=float, default=1)
    ap.add_argument("--run-dir", required=True, help="airlab's run directory, on shared storage")
    ap.add_argument("--storage", default=None, help="Ray's own results (default: beside --run-dir)")
    args = ap.parse_args()

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    run_dir = Path(args.run_dir).resolve()
    resume = (run_dir / "config.yaml").is_file()  # a run is there: continue it
    device = "device=cuda" if args.gpu else "device=cpu"  # cuda: the GPU Ray gave this worker
    ray.init()  # joins the cluster this runs on (RAY_ADDRESS), or starts a local one
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": str(Path(args.config).resolve()), "overrides": [*args.overrides, device],
                           "run_dir": str(run_dir), "resume": resume},
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpu,
                                     resources_per_worker={"CPU": args.cpus_per_worker}),
        run_config=RunConfig(name=f"airlab-{run_dir.name}", storage_path=args.storage or str(run_dir.parent)),
    )
    trainer.fit()
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()

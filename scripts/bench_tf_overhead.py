#!/usr/bin/env python
"""airlab's TensorFlow trainer against plain Keras `model.fit`, side by side in one process.

Both train the same Keras model (built by airlab's builder from the same spec, with the same
initial weights), with Adam at the same learning rate and eps, on the same batches in the same
order, at the same batch size. Rounds alternate which runs first; each figure is the median
samples/s over the rounds, and the ratio is airlab / model.fit.

- airlab: `Trainer(config).run()` with `backend: tensorflow`; its figure is summary.json
  `samples_per_s` (training steps and their logging; evaluation and checkpoint saves excluded,
  the first step's tracing included).
- model.fit: a fresh `model.compile(Adam, sparse categorical cross-entropy from logits)` and
  one `model.fit(x, y, batch_size, shuffle=False, epochs=1)` over the same batches, timed whole
  (tracing included, as for airlab); once on numpy arrays (Keras's own data adapter) and once
  on a `tf.data` pipeline with prefetch.
- XLA: both sides without it (`train.compile: false`; `jit_compile=False`, which is also what
  Keras's default "auto" picks on a CPU-only machine), and with `--xla on|both` both with it
  (`train.compile: true`; `jit_compile=True`).

    python scripts/bench_tf_overhead.py [--rounds 3] [--models mlp,cnn] [--xla off|on|both]

Target (issue 3): ratio >= 1.0.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

import airlab.backends.tensorflow  # noqa: F401  (KERAS_BACKEND=tensorflow before keras is imported)
import keras
import tensorflow as tf

from airlab import registry
from airlab.backends.tensorflow.models import init_seeds
from airlab.config import validate
from airlab.data import load_dataset
from airlab.tasks import get_task
from airlab.train.loop import Trainer, make_plan
from airlab.train.progress import Reporter

SETTINGS = {  # model -> (steps per round, batch size)
    "mlp": (400, 128),
    "cnn": (120, 128),
    "rnn": (100, 128),
}


def config_for(model: str, steps: int, batch: int, xla: bool, runs_root: str):
    return validate({
        "name": f"bench-tf-{model}", "seed": 0, "device": "cpu", "backend": "tensorflow",
        "model": {"name": model},
        "data": {"name": "shapes", "batch_size": batch, "val_fraction": 0.01, "size": 12000},
        "train": {"steps": steps, "optimizer": "adam", "lr": 1e-3, "eps": 1e-8, "log_every": 100,
                  "checkpoint_every": steps, "keep_checkpoints": 1, "compile": xla},
        "output": {"runs_root": runs_root},
    })


def airlab_round(cfg) -> float:
    return Trainer(cfg, reporter=Reporter(quiet=True)).run().summary["samples_per_s"]


def fit_round(cfg, dataset, xs: np.ndarray, ys: np.ndarray, xla: bool, pipeline: bool) -> float:
    with init_seeds(cfg.seed):
        model = registry.builder(cfg.model.name, "tensorflow")(cfg.model, dataset.info)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.train.lr, epsilon=cfg.train.eps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=bool(xla))
    batch = cfg.data.batch_size
    if pipeline:
        data = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(batch).prefetch(tf.data.AUTOTUNE)
        t0 = time.perf_counter()
        model.fit(data, epochs=1, shuffle=False, verbose=0)
    else:
        t0 = time.perf_counter()
        model.fit(xs, ys, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return len(xs) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--xla", choices=["both", "off", "on"], default="off")
    args = ap.parse_args()
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, intra-op threads {threads}, device cpu")
    print(f"{'model':6} {'xla':4} {'batch':>5} {'steps':>5} {'airlab sam/s':>13} {'fit numpy sam/s':>16} "
          f"{'fit tf.data sam/s':>18} {'ratio numpy':>12} {'ratio tf.data':>14}")
    xla_modes = {"both": [False, True], "off": [False], "on": [True]}[args.xla]
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            steps, batch = SETTINGS[model]
            dataset = load_dataset("shapes", val_fraction=0.01, seed=0, size=12000)
            task = get_task(registry.get_model(model).task)
            for xla in xla_modes:
                cfg = config_for(model, steps, batch, xla, tmp)
                plan = make_plan(cfg, dataset, task)
                order = []
                for step in range(plan.total_steps):  # the trainer's own batch order
                    epoch, pos = divmod(step, plan.steps_per_epoch)
                    order.append(task.epoch_indices(len(dataset.train), cfg.seed, epoch)[pos * batch:(pos + 1) * batch])
                index = np.concatenate(order)
                xs, ys = dataset.train.x[index], dataset.train.y[index].astype(np.int32)
                ours, numpy_fit, data_fit = [], [], []
                airlab_round(config_for(model, 10, batch, xla, tmp))  # warm-up: libraries, first traces
                fit_round(cfg, dataset, xs[:10 * batch], ys[:10 * batch], xla, pipeline=False)
                for r in range(args.rounds):
                    runs = [lambda: ours.append(airlab_round(cfg)),
                            lambda: numpy_fit.append(fit_round(cfg, dataset, xs, ys, xla, pipeline=False)),
                            lambda: data_fit.append(fit_round(cfg, dataset, xs, ys, xla, pipeline=True))]
                    for run in (runs if r % 2 == 0 else runs[::-1]):
                        run()
                a, n, d = statistics.median(ours), statistics.median(numpy_fit), statistics.median(data_fit)
                print(f"{model:6} {'on' if xla else 'off':4} {batch:>5} {steps:>5} {a:>13,.0f} {n:>16,.0f} {d:>18,.0f} "
                      f"{a / n:>12.3f} {a / d:>14.3f}")
                print(f"       rounds airlab: {', '.join(f'{v:,.0f}' for v in ours)}; fit numpy: "
                      f"{', '.join(f'{v:,.0f}' for v in numpy_fit)}; fit tf.data: "
                      f"{', '.join(f'{v:,.0f}' for v in data_fit)}")


if __name__ == "__main__":
    main()

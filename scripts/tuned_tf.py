#!/usr/bin/env python
"""airlab's TensorFlow trainer against a hand-tuned TensorFlow loop, side by side in one process.

`tuned_tf_arms(model_name, cfg, steps, threads)` gives two callables, each training `steps` steps
and returning samples/s (scripts/bench_vs_tuned.py calls it; run alone, this file prints the
ratios):

- "airlab": `Trainer(config).run()` with `backend: tensorflow`, in-process, as
  scripts/bench_tf_overhead.py does; its figure is summary.json `samples_per_s` (the training
  steps and their logging; the first step's tracing INCLUDED, evaluation and checkpoints not).
- "tuned": what an expert writes in TensorFlow for the same model: the same layers and sizes
  (airlab's Keras model for the feed-forward models and the Transformer; Keras's own recurrent
  layers, `keras.layers.LSTM/GRU/SimpleRNN`, for the RNN), the same optimizer and
  hyper-parameters (Keras's Adam/AdamW/SGD, clipping by global norm where the config clips), the
  training split pre-placed as one float32 tensor (already scaled and normalised) gathered by
  index inside one `tf.function` step, no per-step host sync (one at the end), Keras's
  mixed_bfloat16 policy where it measures faster here (tuned_precision, measured per model as the
  torch loop's bf16 autocast is), and XLA only where it measured faster on this CPU (TUNED_XLA
  below). Timed from before the first step to after the last one, so its tracing/compilation is
  INCLUDED too, as airlab's is.

Same batches: both take the trainer's own batch order (a pure function of (seed, epoch)).

How far to trust a ratio: a third arm ("control") runs the tuned loop again; its ratio to the
first tuned run is the resolution of the measurement on this (shared) machine. Rounds rotate the
order; ratios are the median of per-round ratios, with the IQR.

    python scripts/tuned_tf.py [--models mlp,cnn,rnn,autoencoder,vae,transformer] [--steps 200]
                               [--rounds 3] [--threads N] [--torch]

`--torch` adds airlab's torch backend as a fourth arm and prints TF/torch.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from typing import Callable

import numpy as np

import airlab.backends.tensorflow  # noqa: F401  (KERAS_BACKEND=tensorflow before keras is imported)
import keras
import tensorflow as tf

from airlab import registry
from airlab.backends.tensorflow import losses
from airlab.backends.tensorflow.models import init_seeds
from airlab.config import load_config, validate
from airlab.config.load import to_dict
from airlab.data import load_dataset
from airlab.tasks import get_task
from airlab.train.loop import Trainer, make_plan
from airlab.train.progress import Reporter
from ratios import paired, rounds_of  # scripts/ratios.py (python puts this folder on sys.path)

MODELS = ["mlp", "cnn", "rnn", "autoencoder", "vae", "transformer"]
OFFLINE = {"transformer": ["data.name=pycorpus"]}  # every other model: data.name=shapes
# XLA (jit_compile) for the tuned loop, per model: measured on this CPU (2 cores, AVX512), the
# faster of the two with compilation time included over 200 steps
TUNED_XLA = {"mlp": False, "cnn": False, "rnn": False, "autoencoder": False, "vae": False, "transformer": False}
# the optimizer path of the tuned loop: "keras" (keras.optimizers.Adam/AdamW) or "fused"
# (tf.raw_ops.ResourceApplyAdam, FusedAdam below), the faster measured per model
TUNED_OPT = {"mlp": "fused", "cnn": "fused", "rnn": "fused", "autoencoder": "fused", "vae": "fused",
             "transformer": "fused"}


def offline_config(model: str, extra: list[str] | None = None):
    """configs/<model>.yaml with the offline data the harness uses."""
    return load_config(f"configs/{model}.yaml", OFFLINE.get(model, ["data.name=shapes"]) + list(extra or []))


def _run_config(cfg, steps: int, threads: int | None, runs_root: str, backend: str = "tensorflow"):
    data = to_dict(cfg)
    t = data["train"]
    t.update(steps=steps, epochs=None, log_every=steps, checkpoint_every=steps, keep_checkpoints=1,
             eval_every=None, early_stopping=None, threads=threads)
    data["backend"] = backend
    data["device"] = "cpu"
    data["output"] = {**data.get("output", {}), "runs_root": runs_root}
    data["name"] = f"tuned-{backend}-{cfg.model.name}"
    return validate(data)


def _batches(cfg, dataset, task, steps: int) -> list[np.ndarray]:
    """The trainer's batch order: (steps, B) positions, or window starts for the LM."""
    plan = make_plan(cfg, dataset, task)
    out = []
    for step in range(steps):
        epoch, pos = divmod(step, plan.steps_per_epoch)
        order = task.epoch_indices(len(dataset.train), cfg.seed, epoch, plan.context)
        out.append(np.asarray(order[pos * cfg.data.batch_size:(pos + 1) * cfg.data.batch_size], np.int64))
    return out


# -- the tuned models ----------------------------------------------------------------------------

class KerasRNN(keras.Model):
    """The RNN spec with Keras's own recurrent layers (one bias per gate for LSTM/SimpleRNN, the
    two of reset_after=True for the GRU): the function airlab's RNN computes."""

    def __init__(self, spec, info):
        super().__init__()
        kind = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}[spec.cell]
        self.stack = []
        for i in range(spec.num_layers):
            layer = kind(spec.hidden_size, return_sequences=i < spec.num_layers - 1)
            self.stack.append(keras.layers.Bidirectional(layer) if spec.bidirectional else layer)
        self.drop = keras.layers.Dropout(spec.dropout)
        self.head = keras.layers.Dense(info.num_classes)

    def call(self, x, training=False, seed=None):
        if len(x.shape) == 4:  # (B, C, H, W) -> (B, T=H, F=C*W)
            x = tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [-1, x.shape[2], x.shape[1] * x.shape[3]])
        for i, layer in enumerate(self.stack):
            x = layer(x, training=training)
            if i < len(self.stack) - 1:
                x = self.drop(x, training=training)
        return self.head(x)


def _tuned_model(cfg, dataset):
    with init_seeds(cfg.seed):
        if cfg.model.name == "rnn":
            model = KerasRNN(cfg.model, dataset.info)
            model(np.zeros((1, *dataset.info.input_shape), np.float32))
            return model
        return registry.builder(cfg.model.name, "tensorflow")(cfg.model, dataset.info)


class FusedAdam:
    """Adam/AdamW through TensorFlow's fused C++ kernel (tf.raw_ops.ResourceApplyAdam: one op per
    tensor, updating m, v and the weight in place), decoupled decay on tensors of rank >= 2
    first for AdamW: what an expert reaches for when Keras's optimizer is the bottleneck."""

    def __init__(self, t, variables):
        self.lr, self.b1, self.b2, self.eps = float(t.lr), float(t.betas[0]), float(t.betas[1]), float(t.eps)
        self.wd = float(t.weight_decay) if t.optimizer == "adamw" else 0.0
        self.step = tf.Variable(0.0, trainable=False)
        self.slots = [(tf.Variable(tf.zeros(v.shape)), tf.Variable(tf.zeros(v.shape))) for v in variables]

    def build(self, variables):
        pass

    def apply(self, grads, variables):
        self.step.assign_add(1.0)
        b1p, b2p = tf.pow(self.b1, self.step), tf.pow(self.b2, self.step)
        for g, var, (m, v) in zip(grads, variables, self.slots):
            handle = var.value.handle if hasattr(var, "value") else var.handle
            if self.wd and len(var.shape) >= 2:
                var.assign(var * (1.0 - self.lr * self.wd))
            tf.raw_ops.ResourceApplyAdam(var=handle, m=m.handle, v=v.handle, beta1_power=b1p, beta2_power=b2p,
                                         lr=self.lr, beta1=self.b1, beta2=self.b2, epsilon=self.eps, grad=g)


def _keras_optimizer(t):
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(t.lr, momentum=t.momentum, nesterov=t.nesterov)
    kw = dict(learning_rate=t.lr, beta_1=t.betas[0], beta_2=t.betas[1], epsilon=t.eps)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=t.weight_decay, **kw)
    return keras.optimizers.Adam(**kw)


def _train_tensors(cfg, dataset):
    """The training split on the device, as the model reads it: float32 scaled to [0, 1] and
    normalised (images), int32 token ids (text); labels int32."""
    x = dataset.train.materialize() if hasattr(dataset.train, "materialize") else dataset.train.x
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) * np.float32(1.0 / 255.0)
    if dataset.kind == "image" and dataset.mean is not None and dataset.std is not None and x.ndim == 4:
        x = (x - np.asarray(dataset.mean, np.float32).reshape(1, -1, 1, 1)) / \
            np.asarray(dataset.std, np.float32).reshape(1, -1, 1, 1)
    if dataset.kind == "text":
        x = x.astype(np.int32)
    y = None if dataset.train.y is None else tf.constant(np.asarray(dataset.train.y).astype(np.int32))
    return tf.constant(x), y


def tuned_round(cfg, dataset, task, batches: list[np.ndarray], xla: bool, opt_path: str = "fused",
                precision: str = "fp32") -> float:
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        model = _tuned_model(cfg, dataset)
    finally:
        keras.config.set_dtype_policy(before)
    t = cfg.train
    variables = model.trainable_variables
    opt = FusedAdam(t, variables) if opt_path == "fused" and t.optimizer in ("adam", "adamw") else _keras_optimizer(t)
    opt.build(variables)
    loss_fn = losses.TRAIN[task.name]
    x_all, y_all = _train_tensors(cfg, dataset)
    windows = task.batches == "windows"
    span = tf.range(cfg.model.context_length + 1, dtype=tf.int64) if windows else None
    clip = t.grad_clip

    @tf.function(jit_compile=xla, reduce_retracing=True)
    def step(idx):
        if windows:
            w = tf.gather(x_all, idx[:, None] + span)  # (B, T+1)
            x, y = w[:, :-1], w[:, 1:]
        else:
            x, y = tf.gather(x_all, idx), (None if y_all is None else tf.gather(y_all, idx))
        with tf.GradientTape() as tape:
            loss, _ = loss_fn(model, x, y, training=True, seed=None, spec=cfg.model)
        grads = tape.gradient(loss, variables)
        if clip:
            grads, _ = tf.clip_by_global_norm(grads, clip)
        opt.apply(grads, variables)
        return loss

    idxs = [tf.constant(b) for b in batches]
    seen = sum(len(b) for b in batches)
    gc.collect()  # the garbage of the arm before (TensorFlow graphs: 0.5 s a collection) is not this arm's
    t0 = time.perf_counter()
    for idx in idxs:
        loss = step(idx)
    float(loss)  # one sync at the end
    return seen / (time.perf_counter() - t0)


def airlab_round(cfg) -> float:
    gc.collect()  # as before the tuned loop
    return Trainer(cfg, reporter=Reporter(quiet=True)).run().summary["samples_per_s"]


def _set_threads(threads: int | None) -> None:
    if threads:
        for put in (tf.config.threading.set_intra_op_parallelism_threads,
                    tf.config.threading.set_inter_op_parallelism_threads):
            try:
                put(threads)
            except RuntimeError:  # TensorFlow's runtime already started: its count stays
                pass


_ROOT = tempfile.TemporaryDirectory(prefix="airlab-tuned-tf-")


def tuned_tf_arms(model_name: str, cfg, steps: int, threads: int | None,
                  xla: bool | None = None, opt: str | None = None) -> dict[str, Callable[[], float]]:
    """{"airlab": ..., "tuned": ...}: callables training `steps` steps of `cfg` (airlab's
    validated config of `model_name`), each returning samples/s, tracing included for both."""
    if cfg.model.name != model_name:
        raise ValueError(f"cfg is for model {cfg.model.name!r}, not {model_name!r}")
    _set_threads(threads)
    run_cfg = _run_config(cfg, steps, threads, _ROOT.name)
    dataset = load_dataset(run_cfg.data.name, val_fraction=run_cfg.data.val_fraction, seed=run_cfg.seed,
                           size=run_cfg.data.size)
    task = get_task(registry.get_model(model_name).task)
    batches = _batches(run_cfg, dataset, task, steps)
    use_xla = TUNED_XLA.get(model_name, False) if xla is None else xla
    path = TUNED_OPT.get(model_name, "fused") if opt is None else opt
    precision = tuned_precision(run_cfg, dataset, task, batches, use_xla, path)
    return {"airlab": lambda: airlab_round(run_cfg),
            "tuned": lambda: tuned_round(run_cfg, dataset, task, batches, use_xla, path, precision)}


def tuned_precision(cfg, dataset, task, batches, xla: bool, path: str, rounds: int = 3) -> str:
    """The expert's precision for this model: Keras's mixed_bfloat16 where the CPU computes bf16
    natively and the tuned loop measures more than 3 % faster in it over half the steps (as
    scripts/bench_vs_tuned.py chooses bf16 autocast for the torch loop), else float32. Printed."""
    from airlab.backends.common import cpu_bf16_flags

    if not cpu_bf16_flags():
        print("   tensorflow tuned loop: float32 (the CPU has no native bf16)")
        return "fp32"
    half = batches[:max(10, len(batches) // 2)]
    got = rounds_of({p: (lambda p=p: tuned_round(cfg, dataset, task, half, xla, path, p)) for p in ("fp32", "bf16")},
                    rounds)
    r, r1, r3 = paired(got["bf16"], got["fp32"])
    choice = "bf16" if r > 1.03 else "fp32"
    print(f"   tensorflow tuned loop: mixed_bfloat16 / float32 x{r:.3f} (IQR {r1:.3f}-{r3:.3f})  -> {choice}")
    return choice


# -- run alone -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--xla", choices=["auto", "on", "off"], default="auto", help="XLA for the tuned loop")
    ap.add_argument("--opt", choices=["auto", "keras", "fused"], default="auto",
                    help="the tuned loop's optimizer path (auto: TUNED_OPT)")
    ap.add_argument("--torch", action="store_true", help="also airlab on torch: TF/torch")
    args = ap.parse_args()
    _set_threads(args.threads)
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, {args.steps} steps, "
          f"{args.rounds} rounds (tracing included in every figure)")
    print(f"{'model':12} {'airlab sam/s':>12} {'tuned sam/s':>12} {'airlab/tuned':>12} {'IQR':>11}  "
          f"{'control':>7} {'IQR':>11}" + (f"  {'torch sam/s':>11} {'TF/torch':>8} {'IQR':>11}" if args.torch else ""))
    xla = {"auto": None, "on": True, "off": False}[args.xla]
    for model in args.models.split(","):
        cfg = offline_config(model)
        arms = tuned_tf_arms(model, cfg, args.steps, args.threads, xla=xla,
                             opt=None if args.opt == "auto" else args.opt)
        arms["control"] = arms["tuned"]
        if args.torch:
            torch_cfg = _run_config(cfg, args.steps, args.threads, _ROOT.name, backend="torch")
            arms["torch"] = lambda c=torch_cfg: airlab_round(c)
        for k in list(arms):  # warm-up: libraries, first traces of the process
            if k != "control":
                arms[k]()
        got = rounds_of(arms, args.rounds)
        a, tn = statistics.median(got["airlab"]), statistics.median(got["tuned"])
        r, r1, r3 = paired(got["airlab"], got["tuned"])
        c, c1, c3 = paired(got["control"], got["tuned"])
        line = (f"{model:12} {a:>12,.0f} {tn:>12,.0f} {r:>12.3f} {r1:.3f}-{r3:.3f}  {c:>7.3f} {c1:.3f}-{c3:.3f}")
        if args.torch:
            tr, t1, t3 = paired(got["airlab"], got["torch"])
            line += f"  {statistics.median(got['torch']):>11,.0f} {tr:>8.3f} {t1:.3f}-{t3:.3f}"
        print(line, flush=True)
        for k, v in got.items():
            print(f"             {k:>8}: {', '.join(f'{x:,.0f}' for x in v)}", flush=True)


if __name__ == "__main__":
    main()

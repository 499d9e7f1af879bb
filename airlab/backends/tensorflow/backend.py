"""The TensorFlow backend: native Keras 3 models, a tf.function training step, state io.

The whole training split lives on the device as tensors and each step gathers its batch by
index inside the traced step (measured faster than a tf.data pipeline with prefetch on the
same data: see scripts/bench_tf_overhead.py), so nothing stands between the run loop and the
model. The step is one tf.function (XLA-compiled with `train.compile: true`): forward, loss,
gradients, global norm, optional clipping, and an update applied only when the loss and the
gradient norm are finite.

Randomness: one tf.random.Generator (Philox, seeded from the config) owned by the backend gives
each step a seed; dropout and the VAE's noise are stateless functions of that seed, so the
generator's state (saved as a tensor) is all the random state a checkpoint needs.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import keras
import numpy as np
import safetensors.numpy
import tensorflow as tf

from airlab import faults as faults_module
from airlab import registry
from airlab.backends.base import LayerRow, ModelSummary, NonFiniteStep, OutOfMemoryStep
from airlab.backends.tensorflow import losses
from airlab.backends.tensorflow.models import init_seeds
from airlab.backends.tensorflow.optim import Optimizer
from airlab.errors import CheckpointError, ConfigError, EnvironmentProblem
from airlab.train import threads as threads_module

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
# safetensors metadata of model files: one key only, since safetensors writes a metadata dict in
# hash order, and a second key would make the bytes of equal checkpoints differ between processes
FORMAT = {"format": "airlab-tensorflow"}

# fp16 loss scaling: torch.amp.GradScaler's defaults
_SCALE_INIT, _SCALE_GROWTH, _SCALE_BACKOFF, _SCALE_INTERVAL = 2.0**16, 2.0, 0.5, 2000


def _gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def resolve_device(requested: str) -> tuple[str, str]:
    """(airlab's name for the device, TensorFlow's device string)."""
    gpus = _gpus()
    if requested == "auto":
        return ("cuda:0", "/GPU:0") if gpus else ("cpu", "/CPU:0")
    if requested == "cpu":
        return "cpu", "/CPU:0"
    if requested == "mps":
        raise ConfigError("device: mps is not supported by the tensorflow backend",
                          hint="use device: cpu or auto (Apple GPUs need the tensorflow-metal plugin, which airlab "
                               "does not support), or backend: torch")
    index = int(requested.split(":")[1]) if ":" in requested else 0
    if not gpus:
        build = tf.sysconfig.get_build_info()
        raise EnvironmentProblem(
            f"device: {requested} requested but tensorflow {tf.__version__} sees no GPU"
            + ("" if build.get("is_cuda_build") else " (this is a CPU-only build)"),
            hint='use device: cpu, or install TensorFlow with CUDA: pip install "tensorflow[and-cuda]" (see README: TensorFlow)')
    if index >= len(gpus):
        raise EnvironmentProblem(f"device: {requested} requested but only {len(gpus)} GPU(s) are visible",
                                 hint="use cuda:0 or check CUDA_VISIBLE_DEVICES")
    return f"cuda:{index}", f"/GPU:{index}"


def _gpu_capability(tf_device: str) -> tuple[int, int] | None:
    if not tf_device.startswith("/GPU"):
        return None
    gpu = _gpus()[int(tf_device.rsplit(":", 1)[1])]
    cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
    return tuple(cc) if cc else None


def resolve_precision(requested: str, tf_device: str) -> str:
    """The Keras dtype policy: float32, mixed_bfloat16 or mixed_float16."""
    cc = _gpu_capability(tf_device)
    if requested == "auto":
        return "mixed_bfloat16" if cc is not None and cc >= (8, 0) else "float32"
    if requested == "fp32":
        return "float32"
    if requested == "bf16":
        if cc is not None and cc < (8, 0):
            raise ConfigError(f"train.precision: bf16 is not supported on this GPU (compute capability "
                              f"{cc[0]}.{cc[1]})", hint="use precision: fp16 or fp32")
        return "mixed_bfloat16"
    if requested == "fp16":
        if cc is None:
            raise ConfigError("train.precision: fp16 needs a CUDA device (this run is on cpu)",
                              hint="use precision: bf16 or fp32")
        return "mixed_float16"
    raise ConfigError(f"train.precision: unknown precision {requested!r}")


_PRECISION_NAMES = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}


def model_variables(model) -> list[tuple[str, "keras.Variable"]]:
    """A built model's variables by stable name (`<layer>.<variable>`), in registration order."""
    return model.named_variables()


def model_weights(model) -> dict[str, np.ndarray]:
    return {name: np.asarray(v.numpy()) for name, v in model.named_variables()}


def assign_weights(model, arrays: dict[str, np.ndarray], *, source: str = "weights") -> None:
    """Set every variable of `model` from `arrays` (names and shapes must match exactly)."""
    variables = dict(model.named_variables())
    missing, unexpected = sorted(set(variables) - set(arrays)), sorted(set(arrays) - set(variables))
    if missing or unexpected:
        torch_like = any(n.endswith((".weight", ".running_mean")) for n in unexpected)
        raise CheckpointError(
            f"{source}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})",
            hint=("these look like PyTorch weights: carry them across with `airlab convert RUN_DIR --to tensorflow`"
                  if torch_like else None))
    for name, v in variables.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(a.shape)}, the model needs {tuple(v.shape)}")
        v.assign(a.astype(np.float32) if a.dtype != np.float32 else a)


class TensorFlowBackend:
    name = "tensorflow"

    def __init__(self, config, dataset, task, *, training: bool = True):
        self.config, self.dataset, self.task = config, dataset, task
        self.spec = config.model
        t = config.train
        self._apply_threads(t.threads)  # first: TensorFlow takes thread counts only before its runtime starts
        self.device, self.tf_device = resolve_device(config.device)
        self.policy = resolve_precision(t.precision, self.tf_device)
        if t.deterministic:
            tf.config.experimental.enable_op_determinism()  # process-wide; TensorFlow has no public undo
        tf.random.set_seed(config.seed)  # python and numpy are seeded by the run loop
        self.faults = faults_module.NONE  # the run loop sets the faults of AIRLAB_FAULT

        build = registry.builder(self.spec.name, "tensorflow")
        before = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.policy)
        try:
            with tf.device(self.tf_device), init_seeds(config.seed):
                self.model = build(self.spec, dataset.info)
        finally:
            keras.config.set_dtype_policy(before)
        self.named_vars = self.model.named_variables()
        self.train_vars = [(n, v) for n, v in self.named_vars if v.trainable]

        self._train_loss = losses.TRAIN[task.name]
        self._eval_loss = losses.EVAL[task.name]
        self._finish = task.finish
        self._context = getattr(self.spec, "context_length", None)
        self._put_data_on_device()

        with tf.device(self.tf_device):
            self.generator = tf.random.Generator.from_seed(config.seed, alg="philox")
            self.optimizer = None
            if training:
                self.optimizer = Optimizer(t.optimizer, self.train_vars, betas=t.betas, eps=t.eps,
                                           momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay)
            self.fp16 = self.policy == "mixed_float16" and training
            self.loss_scale = tf.Variable(_SCALE_INIT, dtype=tf.float32, trainable=False)
            self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._acc = None  # per-metric float32 sums, created on the first step
            self._acc_n = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.grad_accum = t.grad_accum  # micro-batches per step; the run loop raises it on OOM
        self._fns: dict[tuple, object] = {}

    # -- data ----------------------------------------------------------------------------------
    def _put_data_on_device(self) -> None:
        self._splits = {}
        with tf.device(self.tf_device):
            for name, split in self.dataset.splits().items():
                if self.task.batches == "windows":
                    x = tf.constant(split.x.astype(np.int32))  # (N,) token ids
                    y = None
                else:
                    x = tf.constant(np.ascontiguousarray(split.x, dtype=np.float32))
                    y = None if split.y is None else tf.constant(split.y.astype(np.int32))
                self._splits[name] = (x, y)
            if self.task.batches == "windows":
                self._window = tf.range(self._context + 1, dtype=tf.int64)  # (T+1,)

    def _batch(self, split: str, idx):
        x, y = self._splits[split]
        if self.task.batches == "windows":
            w = tf.gather(x, idx[:, None] + self._window)  # (B, T+1)
            return w[:, :-1], w[:, 1:]  # inputs (B, T), next-token targets (B, T)
        return tf.gather(x, idx), (None if y is None else tf.gather(y, idx))

    # -- training ------------------------------------------------------------------------------
    def _loss_and_grads(self, idx, seed, share, nan_loss: bool):
        """Loss, metrics and gradients of the examples at `idx`, each weighted by `share` (the
        micro-batch's part of the batch). Traced inside a tf.function."""
        variables = [v for _, v in self.train_vars]
        x, y = self._batch("train", idx)
        with tf.GradientTape() as tape:
            loss, parts = self._train_loss(self.model, x, y, training=True, seed=seed, spec=self.spec)
            if nan_loss:
                loss = loss * float("nan")
            loss = loss * share
            target = loss * self.loss_scale if self.fp16 else loss
        grads = tape.gradient(target, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
        if self.fp16:
            grads = [g / self.loss_scale for g in grads]
        return loss, {k: tf.cast(v, tf.float32) * share for k, v in parts.items()}, grads

    def _update(self, loss, parts, grads, lr, inf_grad: bool):
        """Norm, clipping, the finiteness check and the update, applied only when it passes.
        Traced inside a tf.function; returns (ok, loss, norm)."""
        clip = self.config.train.grad_clip
        grads = list(grads)
        if inf_grad:
            flat = tf.reshape(grads[0], [-1])
            grads[0] = tf.reshape(tf.tensor_scatter_nd_update(flat, [[0]], [math.inf]), tf.shape(grads[0]))
        norm = tf.linalg.global_norm(grads)  # the norm before clipping, as clip_grad_norm_ returns
        if clip:
            coef = tf.minimum(clip / (norm + 1e-6), 1.0)
            grads = [g * coef for g in grads]
        loss_ok, grads_ok = tf.math.is_finite(loss), tf.math.is_finite(norm)
        apply = tf.logical_and(loss_ok, grads_ok)
        # fp16: overflowing gradients are the scaler's business (skip the update, lower the
        # scale); only a non-finite loss is a divergence
        ok = loss_ok if self.fp16 else apply

        def update():
            self.optimizer.apply(grads, lr)
            return tf.constant(True)

        tf.cond(apply, update, lambda: tf.constant(False))
        if self.fp16:
            grown = self.good_steps + 1
            grow = tf.logical_and(apply, grown >= _SCALE_INTERVAL)
            self.loss_scale.assign(tf.where(apply, tf.where(grow, self.loss_scale * _SCALE_GROWTH, self.loss_scale),
                                            self.loss_scale * _SCALE_BACKOFF))
            self.good_steps.assign(tf.where(tf.logical_and(apply, tf.logical_not(grow)), grown, tf.zeros_like(grown)))
        for k, v in parts.items():
            self._acc[k].assign_add(tf.where(ok, v, 0.0))
        self._acc_n.assign_add(tf.cast(ok, tf.int64))
        return ok, loss, norm

    def _fused_step(self, nan_loss: bool, inf_grad: bool):
        """The whole step as one tf.function (XLA with train.compile): the common case."""
        key = ("fused", nan_loss, inf_grad)
        if key not in self._fns:
            def step(idx, lr):
                seed = self.generator.make_seeds(1)[:, 0]  # (2,) this step's seed for dropout and noise
                loss, parts, grads = self._loss_and_grads(idx, seed, 1.0, nan_loss)
                return self._update(loss, parts, grads, lr, inf_grad)

            self._fns[key] = tf.function(step, jit_compile=bool(self.config.train.compile), reduce_retracing=True,
                                         input_signature=[tf.TensorSpec([None], tf.int64),
                                                          tf.TensorSpec([], tf.float32)])
        return self._fns[key]

    def _micro_fns(self, nan_loss: bool, inf_grad: bool):
        """With train.grad_accum > 1: one function per micro-batch, one for the update."""
        key = ("micro", nan_loss, inf_grad)
        if key not in self._fns:
            jit = bool(self.config.train.compile)
            n_vars = len(self.train_vars)
            micro = tf.function(lambda idx, seed, share: self._loss_and_grads(idx, seed, share, nan_loss),
                                jit_compile=jit, reduce_retracing=True,
                                input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([2], tf.int64),
                                                 tf.TensorSpec([], tf.float32)])
            update = tf.function(lambda loss, parts, grads, lr: self._update(loss, parts, grads, lr, inf_grad),
                                 reduce_retracing=True)
            seeds = tf.function(lambda: self.generator.make_seeds(1)[:, 0])
            self._fns[key] = (micro, update, seeds, n_vars)
        return self._fns[key]

    def train_step(self, index: np.ndarray, lr: float, *, step: int | None = None) -> None:
        """One optimizer step. The loss and the gradient norm are checked before the weights
        move: a non-finite one raises NonFiniteStep and the step is not taken. Running out of
        memory raises OutOfMemoryStep with the weights and the generator as they were."""
        faults = self.faults
        nan_loss = inf_grad = False
        if faults:
            nan_loss, inf_grad = bool(faults.nan_loss(step)), bool(faults.inf_grad(step))
        if self._acc is None:
            with tf.device(self.tf_device):
                self._acc = {k: tf.Variable(0.0, dtype=tf.float32, trainable=False) for k in self._metric_names()}
        rng = self.generator.state.numpy() if self.config.train.auto_batch_size else None
        lr_t = tf.constant(lr, dtype=tf.float32)
        try:
            with tf.device(self.tf_device):
                if self.grad_accum <= 1:
                    if faults:
                        faults.check_batch(len(index))
                    ok, loss, norm = self._fused_step(nan_loss, inf_grad)(tf.constant(index, dtype=tf.int64), lr_t)
                else:
                    micro, update, seeds, _ = self._micro_fns(nan_loss, inf_grad)
                    seed = seeds()
                    total_loss, total_parts, total_grads = None, {}, None
                    for i, chunk in enumerate(np.array_split(index, self.grad_accum)):
                        if faults:
                            faults.check_batch(len(chunk))
                        s = tf.cast(tf.random.experimental.stateless_fold_in(seed, i), tf.int64)
                        loss, parts, grads = micro(tf.constant(chunk, dtype=tf.int64), s,
                                                   tf.constant(len(chunk) / len(index), tf.float32))
                        if total_grads is None:
                            total_loss, total_parts, total_grads = loss, dict(parts), list(grads)
                        else:
                            total_loss = total_loss + loss
                            total_parts = {k: total_parts[k] + v for k, v in parts.items()}
                            total_grads = [a + b for a, b in zip(total_grads, grads)]
                    ok, loss, norm = update(total_loss, total_parts, total_grads, lr_t)
        except (tf.errors.ResourceExhaustedError, faults_module.FakeOutOfMemory) as e:
            if rng is not None:
                self.generator.reset(rng)
            raise OutOfMemoryStep(step, -(-len(index) // self.grad_accum), str(e).strip().splitlines()[0]) from None
        if not bool(ok):  # one device sync per step: the price of never stepping into NaN
            raise NonFiniteStep(step, float(loss), float(norm))

    def _metric_names(self) -> list[str]:
        return {"classification": ["loss"], "reconstruction": ["loss"], "vae": ["loss", "recon", "kl"],
                "lm": ["loss"]}[self.task.name]

    def synchronize(self) -> None:
        if self._acc is not None:
            self._acc_n.numpy()  # waits for the queued steps that update it

    def pop_train_metrics(self) -> dict[str, float]:
        if self._acc is None:
            return {}
        n = int(self._acc_n.numpy())
        if not n:
            return {}
        out = {k: float(v.numpy()) / n for k, v in self._acc.items()}
        for v in self._acc.values():
            v.assign(0.0)
        self._acc_n.assign(0)
        return out

    def train_metrics_state(self) -> dict:
        n = 0 if self._acc is None else int(self._acc_n.numpy())
        if not n:
            return {"count": 0, "sums": {}, "dtypes": {}}
        return {"count": n, "sums": {k: float(v.numpy()) for k, v in self._acc.items()},
                "dtypes": {k: "float32" for k in self._acc}}

    def restore_train_metrics(self, state: dict) -> None:
        if not state.get("count"):
            return
        if self._acc is None:
            with tf.device(self.tf_device):
                self._acc = {k: tf.Variable(0.0, dtype=tf.float32, trainable=False) for k in self._metric_names()}
        for k, v in state["sums"].items():
            self._acc[k].assign(v)
        self._acc_n.assign(int(state["count"]))

    def _make_eval(self, split: str):
        def run(idx, seed):
            x, y = self._batch(split, idx)
            _, parts = self._eval_loss(self.model, x, y, training=False, seed=seed, spec=self.spec)
            return {k: tf.cast(v, tf.float32) for k, v in parts.items()}

        return tf.function(run, reduce_retracing=True,
                           input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([2], tf.int64)])

    def evaluate(self, split: str) -> dict[str, float]:
        x_all, _ = self._splits[split]
        bs = self.config.data.eval_batch_size or 4 * self.config.data.batch_size
        n_all = int(x_all.shape[0])
        if self.task.batches == "windows":
            starts = np.arange(0, n_all - self._context - 1, self._context, dtype=np.int64)
        else:
            starts = np.arange(n_all, dtype=np.int64)
        fns = self.__dict__.setdefault("_eval_fns", {})
        if split not in fns:
            fns[split] = self._make_eval(split)
        fn = fns[split]
        results, counts = [], []
        with tf.device(self.tf_device):
            for b, i in enumerate(range(0, len(starts), bs)):
                idx = starts[i:i + bs]
                seed = tf.constant([self.config.seed, b], tf.int64)  # the VAE's noise: the same every evaluation
                results.append(fn(tf.constant(idx), seed))
                counts.append(len(idx))
        if not results:
            return {}
        keys = list(results[0])
        table = tf.stack([tf.stack([r[k] for k in keys]) for r in results]).numpy().astype(np.float64)  # one sync
        weights = np.asarray(counts, dtype=np.float64)
        sums = (table * weights[:, None]).sum(axis=0)
        metrics = {k: float(v / weights.sum()) for k, v in zip(keys, sums)}
        return self._finish(metrics)

    def num_params(self) -> int:
        return int(sum(np.prod(v.shape) for _, v in self.train_vars))

    def summary(self) -> ModelSummary:
        probe = 2
        rows: list[LayerRow] = []
        act_bytes = [0]
        patched = []

        def shape_of(out) -> str:
            if isinstance(out, (tuple, list)):
                return ", ".join(shape_of(o) for o in out)
            dims = list(out.shape)
            parts = ["B", *map(str, dims[1:])] if dims and dims[0] == probe else list(map(str, dims))
            return "(" + ", ".join(parts) + ")"

        for name, layer in self.model.named_layers.items():
            original = layer.call

            def wrapped(*args, __name=name, __layer=layer, __orig=original, **kwargs):
                out = __orig(*args, **kwargs)
                own = sum(int(np.prod(v.shape)) for v in __layer.trainable_weights)
                rows.append(LayerRow(__name, type(__layer).__name__, shape_of(out), own))
                outs = out if isinstance(out, (tuple, list)) else (out,)
                act_bytes[0] += sum(int(np.prod(o.shape)) * o.dtype.size for o in outs)
                return out

            layer.call = wrapped
            patched.append((layer, original))
        idx = tf.range(probe, dtype=tf.int64)
        try:
            with tf.device(self.tf_device):
                x, _ = self._batch("train", idx)
                self.model(x, training=False)
        finally:
            for layer, original in patched:
                layer.call = original
        params = self.num_params()
        param_bytes = int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for _, v in self.named_vars))
        states = {"adam": 2, "adamw": 2, "sgd": 1 if self.config.train.momentum > 0 else 0}[self.config.train.optimizer]
        est = param_bytes * (2 + states) + act_bytes[0] * self.config.data.batch_size // probe * 2
        return ModelSummary(layers=rows, params=params, trainable=params, param_bytes=param_bytes,
                            est_train_bytes=int(est), device=self.device, precision=_PRECISION_NAMES[self.policy])

    # -- state ---------------------------------------------------------------------------------
    def save_state(self, directory: Path) -> list[str]:
        safetensors.numpy.save_file(dict(self.named_weights()), str(directory / MODEL_FILE), metadata=FORMAT)
        files = [MODEL_FILE]
        if self.optimizer is not None:
            state = self.optimizer.state()
            state["loss_scale"] = self.loss_scale.numpy().reshape(1)
            state["loss_scale_good_steps"] = self.good_steps.numpy().reshape(1)
            safetensors.numpy.save_file(state, str(directory / OPTIM_FILE), metadata={"optimizer": self.optimizer.kind})
            files.append(OPTIM_FILE)
        rng = {"tf_generator_state": self.generator.state.numpy(),
               "tf_generator_algorithm": np.array([int(self.generator.algorithm)], np.int64)}
        safetensors.numpy.save_file(rng, str(directory / RNG_FILE))
        files.append(RNG_FILE)
        return files

    def load_state(self, directory: Path, *, weights_only: bool = False, skip: frozenset = frozenset()) -> None:
        """Restore what save_state wrote. `skip` leaves parts out ("model", "optimizer", "tf_rng",
        "scaler"): only the reliability tests use it, to prove each part matters."""
        if "model" not in skip:
            path = directory / MODEL_FILE
            try:
                arrays = safetensors.numpy.load_file(str(path))
            except Exception as e:  # not a safetensors file, or torn
                raise CheckpointError(f"{path}: cannot load weights into {self.spec.name}: {e}",
                                      hint="was this checkpoint written for another model or config?") from None
            assign_weights(self.model, arrays, source=str(path))
        if weights_only:
            return
        opt_path = directory / OPTIM_FILE
        if self.optimizer is not None and opt_path.exists() and "optimizer" not in skip:
            try:
                state = safetensors.numpy.load_file(str(opt_path))
                scale, good = state.pop("loss_scale", None), state.pop("loss_scale_good_steps", None)
                self.optimizer.load(state)
            except Exception as e:
                raise CheckpointError(f"{opt_path}: cannot restore the optimizer: {e}",
                                      hint="was this checkpoint written with another train.optimizer?") from None
            if scale is not None and "scaler" not in skip:
                self.loss_scale.assign(float(scale.reshape(-1)[0]))
                self.good_steps.assign(int(good.reshape(-1)[0]))
        rng_path = directory / RNG_FILE
        if "tf_rng" not in skip:
            try:
                rng = safetensors.numpy.load_file(str(rng_path))
            except Exception as e:
                raise CheckpointError(f"{rng_path}: cannot restore the random generator: {e}") from None
            if "tf_generator_state" not in rng:
                raise CheckpointError(f"{rng_path}: no TensorFlow generator state (written by another backend?)",
                                      hint="carry a run across backends with `airlab convert RUN_DIR --to tensorflow`")
            try:
                self.generator.reset(rng["tf_generator_state"])
            except Exception as e:  # a state of the wrong shape or dtype
                first = (str(e).strip().splitlines() or [""])[0][:200]
                raise CheckpointError(f"{rng_path}: cannot restore the random generator: {type(e).__name__}: {first}",
                                      hint="the checkpoint is damaged: remove it to resume from the one before") from None

    def named_weights(self):
        """Every variable (trainable or not) as float32 arrays by stable name, names sorted."""
        for name, v in sorted(self.named_vars, key=lambda kv: kv[0]):
            yield name, np.asarray(v.numpy(), dtype=np.float32)

    def weight_aliases(self) -> dict[str, list[str]]:
        """Layers that use another layer's weight (the converter reads a tied weight under either name)."""
        return dict(getattr(self.model, "tied", {}))

    def all_finite(self) -> bool:
        fn = self.__dict__.get("_finite_fn")
        if fn is None:
            variables = [v for _, v in self.named_vars]

            @tf.function
            def finite():
                return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])

            fn = self._finite_fn = finite
        return bool(fn())

    # -- samples -------------------------------------------------------------------------------
    def generate_images(self, n: int, seed: int) -> np.ndarray:
        with tf.device(self.tf_device):
            z = tf.random.stateless_normal([n, self.model.latent_dim], seed=[seed, 0])
            return tf.sigmoid(tf.cast(self.model.decode(z), tf.float32)).numpy()

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        with tf.device(self.tf_device):
            return tf.sigmoid(tf.cast(self.model(tf.constant(x, tf.float32), training=False), tf.float32)).numpy()

    def generate_tokens(self, prompt: np.ndarray, n_new: int, *, temperature: float = 1.0,
                        top_k: int | None = None, seed: int = 0) -> np.ndarray:
        with tf.device(self.tf_device):
            out = self.model.generate(prompt.astype(np.int32)[None, :], n_new, temperature=temperature, top_k=top_k,
                                      seed=seed)  # (1, T + n)
        return out[0, prompt.shape[0]:]

    def environment(self) -> dict:
        build = tf.sysconfig.get_build_info()
        env = {"name": "tensorflow", "tensorflow": tf.__version__, "keras": keras.__version__,
               "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
               "device": self.device, "precision": _PRECISION_NAMES[self.policy],
               "xla": bool(self.config.train.compile), "deterministic": bool(self.config.train.deterministic),
               "threads": {**self.thread_plan.as_dict(), "actual": self.threads,
                           "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or None,
                           "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or None}}
        if self.tf_device.startswith("/GPU"):
            gpus = _gpus()
            details = tf.config.experimental.get_device_details(gpus[int(self.tf_device.rsplit(":", 1)[1])])
            cc = details.get("compute_capability")
            env["gpu"] = {"name": details.get("device_name"), "capability": f"{cc[0]}.{cc[1]}" if cc else None,
                          "count": len(gpus)}
        return env

    # -- threads and the facts bitwise resume depends on ------------------------------------------
    def _apply_threads(self, configured: int | None) -> None:
        """Set TensorFlow's intra-op and inter-op thread counts from train.threads or the cores this
        process may use (airlab.train.threads). TensorFlow takes them only before its runtime
        starts: once it has, a different count cannot be applied, and the run says so and goes on
        with (and records) the count in force."""
        threading = tf.config.threading
        self.thread_plan = threads_module.plan_threads(configured)
        n = self.thread_plan.threads
        for get, put in ((threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads),
                         (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads)):
            if get() != n:
                try:
                    put(n)
                except RuntimeError:  # "cannot be modified after initialization"
                    pass
        self.threads = _intra_op_threads()
        if self.threads != n:
            warnings.warn(f"train.threads: TensorFlow had already started in this process with {self.threads} "
                          f"intra-op threads, so {n} could not be applied; this run uses {self.threads} "
                          "(recorded in env.json)", stacklevel=2)

    def numerics_facts(self) -> dict:
        """What bitwise-exact resume depends on, as JSON: a checkpoint records it, a resume compares."""
        facts = {"backend": "tensorflow", "tensorflow": tf.__version__, "keras": keras.__version__,
                 "device": self.device, "precision": _PRECISION_NAMES[self.policy],
                 "deterministic": bool(self.config.train.deterministic), "xla": bool(self.config.train.compile),
                 "threads": _intra_op_threads(), "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                 **threads_module.host_facts()}
        if self.tf_device.startswith("/GPU"):
            build = tf.sysconfig.get_build_info()
            details = tf.config.experimental.get_device_details(_gpus()[int(self.tf_device.rsplit(":", 1)[1])])
            facts.update({"cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
                          "gpu": details.get("device_name")})
        return facts


def _intra_op_threads() -> int:
    """The intra-op thread count in force: the one set; else (0) the one TensorFlow's runtime took
    from TF_NUM_INTRAOP_THREADS, or its default, one per CPU this process may be scheduled on."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured:
        return configured
    from_env = os.environ.get("TF_NUM_INTRAOP_THREADS", "").strip()
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    return len(threads_module.affinity_cpus() or ()) or os.cpu_count() or 1

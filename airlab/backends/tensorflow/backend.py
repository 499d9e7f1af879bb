"""The TensorFlow backend: native Keras 3 models, a tf.function training step, state io.

Data (data.placement; `auto` lets common.choose_placement decide): on the fast path every split
lives on the device as tensors, stored as the dataset gives it (image bytes as uint8, packed into
int64 words, or float32), and each step gathers its batch by index inside the traced step
(measured faster than a tf.data pipeline with prefetch on the same data: see
scripts/bench_tf_overhead.py), so nothing stands between the run loop and the model. Streaming
keeps nothing on the device: a background thread (airlab.data.feed.Prefetcher) gathers the
batches of the run loop's order (set_order) on the host and copies them to the device ahead of
their step (TensorFlow has no public way to pin host memory; the copy happens in that thread, so
the step does not wait for it), and the traced step takes the batch itself. Either way the same
ops follow inside the step, so both paths give the same bits: bytes scaled to [0, 1] (the
float32 multiply of airlab.data), the training images augmented (data.augment: a zero pad and
one gather by the grid of BackendCore.augment_grid, a pure function of (seed, epoch, index)),
then normalised by the dataset's mean and std (data.normalize).

The step is one tf.function (XLA-compiled with `train.compile: true`): forward, loss,
gradients, global norm, optional clipping, and an update applied only when the loss and the
gradient norm are finite.

Randomness: one tf.random.Generator (Philox, seeded from the config) owned by the backend gives
each step a seed; dropout and the VAE's noise are stateless functions of that seed, so the
generator's state (saved as a tensor) is all the random state a checkpoint needs.

Scale-out (distribute.py): with AIRLAB_REPLICAS=N (`airlab train --nproc N`) the step runs under
tf.distribute's MirroredStrategy over N local devices, and under MultiWorkerMirroredStrategy when
TF_CONFIG names several workers; still airlab's own step (never Keras `fit`). Each replica
computes its contiguous rows of the global batch, its loss weighted by its share of the global
batch; the strategy sums the gradients; each replica then runs the same update on its own copy of
the variables, so they stay identical. Dropout masks and the VAE's noise are drawn for the global
batch and sliced at the replica's rows (models.global_rows): with grad_accum 1 an example gets the
same numbers on any replica count. What differs from one device: the order of the gradient sum
(last bits), BatchNorm's batch statistics (each replica's own share; the running statistics are
the mean of the replicas' updates), and, with grad_accum > 1, the micro-batches' composition
(each replica splits its own share) and so their random draws. Evaluation runs on the first
replica's device (the weights are mirrored, so it is exactly the one-device evaluation); in a run
of several processes the run loop shares its batches among them (common.BackendCore.evaluate).
Checkpoints are unchanged: the mirrored weights are saved once.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path

import keras
import numpy as np
import psutil
import safetensors.numpy
import tensorflow as tf

from airlab import faults as faults_module
from airlab import registry
from airlab.backends import common
from airlab.backends.base import NonFiniteStep
from airlab.backends.tensorflow import distribute, losses
from airlab.backends.tensorflow.models import global_rows, init_seeds
from airlab.backends.tensorflow.optim import Optimizer
from airlab.data.feed import Prefetcher
from airlab.errors import CheckpointError, ConfigError
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


def _capability(index: int | None) -> tuple[int, int] | None:
    """The compute capability of GPU `index` (None: the CPU, or a GPU that does not report it)."""
    if index is None:
        return None
    cc = tf.config.experimental.get_device_details(_gpus()[index]).get("compute_capability")
    return tuple(cc) if cc else None


# precision: auto on a CPU with native bf16: the models whose whole TensorFlow run measured faster in
# bf16 than in fp32, at the same validation loss within the spread of two seeds (2-core AVX512-BF16
# CPU; `airlab train` 300 steps on shapes, 600 on pycorpus, seeds 0 and 1; README "Fast by
# default"). samples/s bf16 / fp32 per seed -> val loss fp32 | bf16 (mean of the seeds):
#   cnn          x1.67, x1.83 -> 0.605 | 0.610
#   rnn          x1.57, x1.12 -> 0.976 | 0.931
#   transformer  x1.05, x1.14 -> 2.358 | 2.351
#   mlp          x1.32, x1.06 (600 steps; x1.11 interleaved in one process) -> 0.523 | 0.519
#   autoencoder  x1.23, x1.25 -> 0.43984 | 0.43989 (its transposed convolutions as sub-pixel
#                convolutions in bf16, models.ConvTranspose: TensorFlow's bf16 transposed
#                convolution itself made the whole run x0.26)
# Not: the VAE (x0.88, x1.07, x0.99 in three interleaved measurements).
_CPU_BF16_MODELS = frozenset({"cnn", "rnn", "transformer", "mlp", "autoencoder"})
_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}  # precision -> Keras dtype policy


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


_WORD = 8  # bytes of the int64 words image bytes are packed into on the fast path


def _pack_bytes(x: np.ndarray) -> np.ndarray:
    """uint8 examples (N, *shape) -> int64 words (N, ceil(K / 8)), K bytes an example, each row
    zero-padded to whole words: TensorFlow's GPU gather has no uint8 kernel (and keeps int32 in
    host memory), but gathers int64 on the device; a bitcast there unpacks them, in the same byte
    order."""
    n, k = x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64))
    flat = np.ascontiguousarray(x.reshape(n, k))
    if k % _WORD:
        flat = np.pad(flat, ((0, 0), (0, _WORD - k % _WORD)))
    return flat.view(np.int64)


class TensorFlowBackend(common.BackendCore):
    name = "tensorflow"
    no_gpu_hint = 'use device: cpu, or install TensorFlow with CUDA: pip install "tensorflow[and-cuda]" (see README: TensorFlow)'
    mps_refusal = ("use device: cpu or auto (Apple GPUs need the tensorflow-metal plugin, which airlab does not "
                   "support), or backend: torch")

    def __init__(self, config, dataset, task, *, training: bool = True):
        super().__init__(config, dataset, task, training=training)
        t = config.train
        self._apply_threads(t.threads)  # first: TensorFlow takes thread counts only before its runtime starts
        _, index = self._place()
        self.tf_device = "/CPU:0" if index is None else f"/GPU:{index}"
        # training on several replicas: tf.distribute's strategy (distribute.py); None: one device
        self.dist = distribute.placement(config) if training else None
        self.replicas = self.dist.replicas if self.dist is not None else 1
        self.local_replicas = len(self.dist.devices) if self.dist is not None else 1
        if self.dist is not None:
            self.tf_device = self.dist.devices[0]  # evaluation, samples and the summary: the first replica
        self.policy = _POLICIES[self.precision]
        if t.deterministic:
            tf.config.experimental.enable_op_determinism()  # process-wide; TensorFlow has no public undo
        tf.random.set_seed(config.seed)  # python and numpy are seeded by the run loop

        build = registry.builder(self.spec.name, "tensorflow")
        before = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.policy)
        try:
            with self._scope(), tf.device(self.tf_device), init_seeds(config.seed):
                self.model = build(self.spec, dataset.info)  # mirrored variables under a strategy
        finally:
            keras.config.set_dtype_policy(before)
        self.named_vars = self.model.named_variables()
        self.train_vars = [(n, v) for n, v in self.named_vars if v.trainable]

        self._train_loss = losses.TRAIN[task.name]
        self._eval_loss = losses.EVAL[task.name]
        self._put_data()

        with tf.device(self.tf_device):  # outside a strategy's scope: drawn from once per step, by the step
            self.generator = tf.random.Generator.from_seed(config.seed, alg="philox")
        with self._scope(), tf.device(self.tf_device):  # the rest is mirrored under a strategy
            self.optimizer = None
            if training:
                self.optimizer = Optimizer(t.optimizer, self.train_vars, betas=t.betas, eps=t.eps,
                                           momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay,
                                           fused=self.dist is None)  # TensorFlow's fused update kernels (optim.py)
            self.fp16 = self.policy == "mixed_float16" and training
            self.loss_scale = tf.Variable(_SCALE_INIT, dtype=tf.float32, trainable=False)
            self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
            # the training metrics' float32 sums, one per name the loss returns: the names are
            # learnt when the step is first traced, and the vector is sized before it first runs
            self._acc = tf.Variable(tf.zeros([0]), shape=tf.TensorShape([None]), trainable=False)
            self._acc_n = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._acc_names: list[str] | None = None
        self._acc_pending: dict[str, float] = {}  # sums restored before the names were known
        self._fns: dict[tuple, object] = {}
        self._lr: float | None = None  # the learning rate of the last step, and it as a tensor
        self._lr_t = None

    # -- several replicas, several processes (distribute.py) --------------------------------------
    @classmethod
    def collective(cls, config):
        """This process's collective in a run of several processes (TF_CONFIG naming several
        workers: MultiWorkerMirroredStrategy, created here, before any other TensorFlow op), else
        None: MirroredStrategy's replicas are one process. Checks that the config's batch divides
        among the replicas (airlab.train.process.role_for calls this before anything is written)."""
        if not distribute.wanted():
            return None
        _set_thread_counts(threads_module.plan_threads(config.train.threads).threads)  # before the runtime starts
        return distribute.collective(config)

    def _scope(self):
        return self.dist.strategy.scope() if self.dist is not None else contextlib.nullcontext()

    # -- what the framework sees (primitives of common.resolve_device and resolve_precision) -----
    @staticmethod
    def _framework() -> str:
        return f"tensorflow {tf.__version__}"

    @staticmethod
    def _gpu_count() -> int:
        return len(_gpus())

    @staticmethod
    def _default_gpu() -> int:
        return 0

    @staticmethod
    def _cpu_only_build() -> bool:
        return not tf.sysconfig.get_build_info().get("is_cuda_build")

    def _precision_kind(self, kind: str, index: int | None) -> str:
        return "cuda" if _capability(index) is not None else "cpu"  # a GPU without a capability: as the CPU

    def _cpu_bf16(self) -> bool:
        """precision: auto on a CPU: bf16 (Keras's mixed_bfloat16) only for the models whose
        TensorFlow bf16 kernels measured faster than fp32 on a CPU that computes bf16 natively
        (common.cpu_bf16_flags) with oneDNN on (TensorFlow's default on Linux x86), at the same
        validation loss: _CPU_BF16_MODELS. Elsewhere fp32: the VAE measured x0.88-1.07, and a model
        added to the registry is not measured."""
        return (self.spec.name in _CPU_BF16_MODELS and bool(common.cpu_bf16_flags())
                and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0")

    def _gpu_bf16(self, index: int) -> str | None:
        cc = _capability(index)
        return None if cc >= (8, 0) else f"this GPU (compute capability {cc[0]}.{cc[1]})"

    # -- data ----------------------------------------------------------------------------------
    def _memory_free(self) -> int | None:
        """Bytes free where the fast path would put the data: the host's available memory on the
        CPU (and under a strategy, whose replicas gather from the host); None on a GPU, whose free
        memory TensorFlow does not report (it reserves most of the GPU for itself when it starts)."""
        if "GPU" in self._data_device.upper():
            return None
        return int(psutil.virtual_memory().available)

    def _put_data(self) -> None:
        """Choose the fast path or streaming (common.choose_placement) and, on the fast path, put
        every split on the device as stored: image bytes packed eight to an int64 word (see
        _pack_bytes), float32 images and tables, int32 token ids and labels."""
        d = self.dataset
        # under a strategy the data lies once on the host, and each replica gathers its rows there
        self._data_device = self.dist.host if self.dist is not None else self.tf_device
        self._choose_placement(self.device if "GPU" in self._data_device.upper() else "cpu")
        self._windows = self.task.batches == "windows"
        shape = d.train.sample_shape
        self._sample_shape = shape
        images = not self._windows and d.kind == "image" and len(shape) == 3
        self._image_hw = tuple(shape[1:]) if images else None  # (H, W) of (C, H, W) images
        self._augmenting = images and self.augment is not None
        self._norm = None
        if images and d.mean is not None and d.std is not None:
            self._norm = (np.asarray(d.mean, np.float32).reshape(1, -1, 1, 1),
                          np.asarray(d.std, np.float32).reshape(1, -1, 1, 1))  # (1, C, 1, 1) each
        # stored as given: bytes when every split is bytes (the quarter of the memory), else float32
        if self._windows:
            self._x_dtype = np.dtype(np.int32)
        else:
            stored = {s.x.dtype for s in d.splits().values()}
            self._x_dtype = np.dtype(np.uint8 if stored == {np.dtype(np.uint8)} else np.float32)
        self._row_bytes = int(np.prod(shape, dtype=np.int64))
        self._splits = {}
        self._prefetch: Prefetcher | None = None
        with tf.device(self._data_device):
            if self._windows:
                self._window = tf.range(self._context + 1, dtype=tf.int64)  # (T+1,)
            if self.placement != "device":
                return
            for name, split in d.splits().items():
                x = self._stored(split.materialize())
                if self._x_dtype == np.uint8:
                    x = _pack_bytes(x)  # (N, ceil(C*H*W / 8)) int64
                x = tf.constant(x)
                y = None if self._windows or split.y is None else tf.constant(split.y.astype(np.int32))
                self._splits[name] = (x, y)

    def _stored(self, x: np.ndarray) -> np.ndarray:
        """Examples as the backend keeps them (self._x_dtype); bytes among float splits become
        float32 here, by the float32 multiply of airlab.data and of the device."""
        if x.dtype == self._x_dtype:
            return x
        if x.dtype == np.uint8 and self._x_dtype == np.float32:
            out = x.astype(np.float32)
            out *= np.float32(1.0 / 255.0)
            return out
        return x.astype(self._x_dtype)

    def _batch(self, split: str, idx):
        if self.dist is not None:
            with tf.device(self._data_device):
                return self._rows(split, idx)
        return self._rows(split, idx)

    def _rows(self, split: str, idx):
        """The fast path's batch at `idx` of a split on the device, as stored (traced)."""
        x, y = self._splits[split]
        if self._windows:
            w = tf.gather(x, idx[:, None] + self._window)  # (B, T+1)
            return w[:, :-1], w[:, 1:]  # inputs (B, T), next-token targets (B, T)
        x = tf.gather(x, idx)
        if self._x_dtype == np.uint8:  # (B, words) -> (B, C, H, W) bytes
            x = tf.reshape(tf.bitcast(x, tf.uint8), [-1, x.shape[1] * _WORD])  # (B, K rounded up to words)
            if self._row_bytes % _WORD:
                x = x[:, :self._row_bytes]
            x = tf.reshape(x, [-1, *self._sample_shape])
        return x, (None if y is None else tf.gather(y, idx))

    def _fed(self, feed: dict):
        """The streaming path's batch, as fed to the traced step: (x, y) as stored."""
        if self._windows:
            w = feed["x"]  # (B, T+1)
            return w[:, :-1], w[:, 1:]
        return feed["x"], feed.get("y")

    def _inputs(self, x, grid=None):
        """A batch as stored -> the model's input (traced): bytes scaled to [0, 1] (float32
        x * (1/255), as airlab.data), training images augmented by their `grid` (rows, cols),
        then normalised by the dataset's mean and std."""
        if self._windows:
            return x
        if x.dtype == tf.uint8:
            x = tf.cast(x, tf.float32) * np.float32(1.0 / 255.0)
        if grid is not None:
            x = self._augmented(x, *grid)
        if self._norm is not None:
            x = (x - self._norm[0]) / self._norm[1]
        return x

    def _augmented(self, x, rows, cols):
        """Images (B, C, H, W) cropped and mirrored (traced): zero-padded by random_crop on each
        side, then one gather puts pixel (rows[b, i], cols[b, j]) of padded image b at (i, j):
        airlab.data.augment.apply_numpy's result, bit for bit."""
        p = self.augment.random_crop
        c, (h, w) = self._sample_shape[0], self._image_hw
        if p:
            x = tf.pad(x, [[0, 0], [0, 0], [p, p], [p, p]])  # (B, C, H+2P, W+2P)
        b, wp = tf.shape(x)[0], w + 2 * p
        flat = tf.reshape(rows[:, :, None] * wp + cols[:, None, :], [b, h * w])  # (B, H*W) in the padded image
        x = tf.gather(tf.reshape(x, [b, c, (h + 2 * p) * wp]), flat, axis=2, batch_dims=1)  # (B, C, H*W)
        return tf.reshape(x, [b, c, h, w])

    def _batch_of(self, split: str, feed: dict):
        """(model input, target) of a feed (traced): positions in a split on the device (fast
        path) or the batch itself (streaming); training feeds may carry the augmentation grid."""
        x, y = self._batch(split, feed["idx"]) if "idx" in feed else self._fed(feed)
        grid = (feed["rows"], feed["cols"]) if "rows" in feed else None
        return self._inputs(x, grid), y

    def _feed_spec(self, split: str, training: bool, rows: int | None = None) -> dict:
        """The input signature of a feed: one shape per key, for batches of `rows` examples, or
        (None) whatever the batch size (one trace)."""
        if self.placement == "device":
            spec = {"idx": tf.TensorSpec([rows], tf.int64)}
        elif self._windows:
            spec = {"x": tf.TensorSpec([rows, self._context + 1], tf.int32)}
        else:
            spec = {"x": tf.TensorSpec([rows, *self._sample_shape], tf.as_dtype(self._x_dtype))}
            if self.dataset.splits()[split].y is not None:
                spec["y"] = tf.TensorSpec([rows], tf.int32)
        if training and self._augmenting:
            h, w = self._image_hw
            spec.update(rows=tf.TensorSpec([rows, h], tf.int32), cols=tf.TensorSpec([rows, w], tf.int32))
        return spec

    def _grid(self, index: np.ndarray, step: int | None) -> dict:
        """The augmentation grid of training images `index` at `step`, as int32 (empty without)."""
        if not self._augmenting:
            return {}
        rows, cols = self.augment_grid(index, step, *self._image_hw)
        return {"rows": rows.astype(np.int32), "cols": cols.astype(np.int32)}

    def _host_batch(self, split: str, index: np.ndarray) -> dict:
        """Streaming: the examples at `index` of a split, gathered on the host (from memory or a
        memory map) as stored."""
        s = self.dataset.splits()[split]
        index = np.asarray(index, dtype=np.int64)
        if self._windows:
            return {"x": np.asarray(s.gather(index[:, None] + np.arange(self._context + 1))[0], dtype=np.int32)}
        x, y = s.gather(index)
        feed = {"x": self._stored(np.asarray(x))}
        if y is not None:
            feed["y"] = y.astype(np.int32)
        return feed

    def _to_device(self, arrays: dict) -> dict:
        """Host arrays -> tensors where the step reads its data (the device; under a strategy the
        host its replicas gather from): copied here, in the prefetch thread when prefetched."""
        with tf.device(self._data_device):
            return {k: tf.constant(v) for k, v in arrays.items()}

    def _train_feed(self, index: np.ndarray, step: int | None) -> dict:
        """What the traced step takes for the batch `index` at `step` (1-based): its positions
        (numpy) on the fast path; when streaming, the batch on the device, prefetched in the
        run loop's order (set_order) or, for a batch the order did not foresee, gathered now."""
        if self.placement == "device":
            return {"idx": np.asarray(index, dtype=np.int64), **self._grid(index, step)}
        if self.order is not None and step:
            if self._prefetch is None:
                self._prefetch = Prefetcher(self._prepare, end=self.order.total_steps)
            ready, feed = self._prefetch.get(step - 1)
            if np.array_equal(ready, index):
                return feed
        return self._to_device({**self._host_batch("train", index), **self._grid(index, step)})

    def _prepare(self, step0: int):
        """The prefetch thread's work for step `step0` (0-based): (its examples, their feed)."""
        index = np.asarray(self.order.at(step0)[1], dtype=np.int64)
        return index, self._to_device({**self._host_batch("train", index), **self._grid(index, step0 + 1)})

    def set_order(self, order) -> None:
        self._close_prefetch()
        super().set_order(order)

    def _close_prefetch(self) -> None:
        if getattr(self, "_prefetch", None) is not None:
            self._prefetch.close()
            self._prefetch = None

    def close(self) -> None:
        self._close_prefetch()
        super().close()

    # -- training ------------------------------------------------------------------------------
    def _loss_and_grads(self, feed, seed, share, nan_loss: bool):
        """Loss, metrics and gradients of the examples of `feed` (see _train_feed), each weighted
        by `share` (the micro-batch's part of the batch). Traced inside a tf.function."""
        variables = [v for _, v in self.train_vars]
        x, y = self._batch_of("train", feed)
        with tf.GradientTape() as tape:
            loss, parts = self._train_loss(self.model, x, y, training=True, seed=seed, spec=self.spec)
            if nan_loss:
                loss = loss * float("nan")
            loss = loss * share
            target = loss * self.loss_scale if self.fp16 else loss
        self._acc_names = self._acc_names or list(parts)  # at the first trace: the training metrics
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
        self._acc.assign_add(tf.where(ok, tf.stack([parts[k] for k in self._acc_names]), 0.0))
        self._acc_n.assign_add(tf.cast(ok, tf.int64))
        return ok, loss, norm

    def _fused_step(self, nan_loss: bool, inf_grad: bool, rows: int):
        """The whole step as one tf.function (XLA with train.compile): the common case. Traced
        for batches of `rows` examples (every step's batch has the same size): with the batch
        dimension known, the gradients' broadcast reductions and the shape arithmetic are resolved
        when tracing instead of at every step (the Transformer LM's first step: ~2x faster to trace)."""
        key = ("fused", nan_loss, inf_grad, rows)
        if key not in self._fns:
            def step(feed, lr):
                seed = self.generator.make_seeds(1)[:, 0]  # (2,) this step's seed for dropout and noise
                loss, parts, grads = self._loss_and_grads(feed, seed, 1.0, nan_loss)
                return self._update(loss, parts, grads, lr, inf_grad)

            fn = tf.function(step, jit_compile=bool(self.config.train.compile), autograph=False,
                             input_signature=[self._feed_spec("train", True, rows), tf.TensorSpec([], tf.float32)])
            # traced now, so that the sums are sized before it first runs; the step calls the
            # concrete function: the tf.function's per-call dispatch (binding the arguments to its
            # signature, converting them) cost ~10 % of the MLP's step on this CPU
            # (scripts/tuned_tf.py), and every feed is already tensors of the signature's dtypes
            concrete = fn.get_concrete_function()
            self._size_sums()
            self._fns[key] = concrete
        return self._fns[key]

    def _micro_fns(self, nan_loss: bool, inf_grad: bool):
        """With train.grad_accum > 1: one function per micro-batch, one for the update."""
        key = ("micro", nan_loss, inf_grad)
        if key not in self._fns:
            jit = bool(self.config.train.compile)
            n_vars = len(self.train_vars)
            micro = tf.function(lambda feed, seed, share: self._loss_and_grads(feed, seed, share, nan_loss),
                                jit_compile=jit, reduce_retracing=True,
                                input_signature=[self._feed_spec("train", True), tf.TensorSpec([2], tf.int64),
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
        if self.dist is not None:
            return self._replicated_train_step(index, lr, step, nan_loss, inf_grad)
        rng = self.generator.state.numpy() if self.config.train.auto_batch_size else None
        if lr != self._lr:  # a new tensor only when the schedule moves
            self._lr, self._lr_t = lr, tf.constant(lr, dtype=tf.float32)
        lr_t = self._lr_t
        try:
            feed = self._train_feed(index, step)  # a streamed batch's copy may run out of memory too
            with tf.device(self.tf_device):
                if self.grad_accum <= 1:
                    if faults:
                        faults.check_batch(len(index))
                    ok, loss, norm = self._fused_step(nan_loss, inf_grad, len(index))(_tensors(feed), lr_t)
                else:
                    micro, update, seeds, _ = self._micro_fns(nan_loss, inf_grad)
                    seed = seeds()
                    total_loss, total_parts, total_grads = None, {}, None
                    begin = 0
                    for i, chunk in enumerate(common.micro_batches(index, self.grad_accum)):
                        if faults:
                            faults.check_batch(len(chunk))
                        s = tf.cast(tf.random.experimental.stateless_fold_in(seed, i), tf.int64)
                        part = {k: v[begin:begin + len(chunk)] for k, v in feed.items()}  # the chunk's rows
                        begin += len(chunk)
                        loss, parts, grads = micro(_tensors(part), s, tf.constant(len(chunk) / len(index), tf.float32))
                        if total_grads is None:
                            total_loss, total_parts, total_grads = loss, dict(parts), list(grads)
                        else:
                            total_loss = total_loss + loss
                            total_parts = {k: total_parts[k] + v for k, v in parts.items()}
                            total_grads = [a + b for a, b in zip(total_grads, grads)]
                    if self._acc_pending is not None:
                        self._size_sums()
                    ok, loss, norm = update(total_loss, total_parts, total_grads, lr_t)
        except (tf.errors.ResourceExhaustedError, faults_module.FakeOutOfMemory) as e:
            if rng is not None:
                self.generator.reset(rng)
            raise common.out_of_memory(step, len(index), self.grad_accum, e) from None
        if not bool(ok):  # one device sync per step: the price of never stepping into NaN
            raise NonFiniteStep(step, float(loss), float(norm))

    # -- training under a strategy (distribute.py) ---------------------------------------------
    def _replicated_step(self, nan_loss: bool, inf_grad: bool, accum: int):
        """The step under a strategy, one tf.function. Each replica computes the loss and the
        gradients of its contiguous rows of the batch (in `accum` micro-batches), each weighted by
        its share of the global batch; the strategy sums them over every replica (of every
        process); then every replica runs the same update (norm, clipping, the finiteness check,
        the optimizer, the metric sums) on its own copy of the variables, from the same sums."""
        key = ("replicated", nan_loss, inf_grad, accum)
        if key not in self._fns:
            strategy, local, replicas = self.dist.strategy, len(self.dist.devices), self.dist.replicas

            def replica(feed, seed):
                # `feed`: this process's rows of the global batch (all of it in a run of one process)
                rid = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
                n = tf.shape(feed["idx" if "idx" in feed else "x"])[0] // local
                start = (rid % local) * n  # replicas are numbered process by process
                mine = {k: v[start:start + n] for k, v in feed.items()}
                total = tf.cast(n * replicas, tf.float32)  # the global batch
                base, extra = n // accum, n % accum  # np.array_split's micro-batch sizes
                loss, parts, grads = None, {}, None
                for i in range(accum):
                    m = base + tf.cast(i < extra, tf.int32)
                    begin = i * base + tf.minimum(i, extra)
                    s = seed if accum == 1 else tf.cast(tf.random.experimental.stateless_fold_in(seed, i), tf.int64)
                    with global_rows(rid * m, replicas * m):  # draws keyed to the global sample position
                        l, p, g = self._loss_and_grads({k: v[begin:begin + m] for k, v in mine.items()}, s,
                                                       tf.cast(m, tf.float32) / total, nan_loss)
                    if grads is None:
                        loss, parts, grads = l, dict(p), list(g)
                    else:
                        loss, parts = loss + l, {k: parts[k] + v for k, v in p.items()}
                        grads = [a + b for a, b in zip(grads, g)]
                return loss, parts, grads

            def step(feed, lr):
                with strategy.scope():
                    seed = self.generator.make_seeds(1)[:, 0]  # (2,) the same on every replica
                    loss, parts, grads = strategy.run(replica, args=(feed, seed))
                    names = list(parts)
                    flat = [loss, *(parts[k] for k in names), *grads]
                    summed = strategy.extended.batch_reduce_to(  # onto every replica's device
                        tf.distribute.ReduceOp.SUM, [(t, self._acc_n) for t in flat])
                    loss, parts, grads = summed[0], dict(zip(names, summed[1:1 + len(names)])), summed[1 + len(names):]
                    outcome = strategy.extended.update(  # each replica's own variables, from the same sums
                        self._acc_n, lambda _, l, p, g: self._update(l, p, g, lr, inf_grad), args=(loss, parts, grads),
                        group=False)
                    return tuple(values[0] for values in outcome)  # the same on every replica: the first's

            fn = tf.function(step, reduce_retracing=True,
                             input_signature=[self._feed_spec("train", True), tf.TensorSpec([], tf.float32)])
            fn.get_concrete_function()  # traced now, so that the sums are sized before it first runs
            self._size_sums()
            self._fns[key] = fn
        return self._fns[key]

    def _replicated_train_step(self, index: np.ndarray, lr: float, step: int | None, nan_loss: bool,
                               inf_grad: bool) -> None:
        """train_step under a strategy: `index` is this process's part of the global batch."""
        local = len(self.dist.devices)
        n = len(index) // local
        if n * local != len(index) or not n:
            raise ConfigError(f"data.batch_size: this process's {len(index)} examples of the batch do not divide "
                              f"among its {local} replicas", hint=f"use a multiple of {self.replicas}")
        accum = min(self.grad_accum, n)
        rng = self.generator.state.numpy() if self.config.train.auto_batch_size else None
        try:
            feed = self._train_feed(index, step)
            if self.faults:
                for chunk in common.micro_batches(np.arange(n), accum):  # a replica's micro-batches
                    self.faults.check_batch(len(chunk))
            ok, loss, norm = self._replicated_step(nan_loss, inf_grad, accum)(_tensors(feed),
                                                                              tf.constant(lr, dtype=tf.float32))
        except (tf.errors.ResourceExhaustedError, faults_module.FakeOutOfMemory) as e:
            if rng is not None:
                self.generator.reset(rng)
            raise common.out_of_memory(step, n, accum, e) from None  # the micro-batch of one replica
        except tf.errors.OpError as e:
            if self.dist.kind == "multi_worker" and distribute.is_lost(e):
                raise distribute.lost(e, f"training step {step}") from None
            raise
        if not bool(ok):  # decided on every replica alike: the check is on the summed loss and gradients
            raise NonFiniteStep(step, float(loss), float(norm))

    def process_state(self) -> dict:
        """This process's part of a checkpoint in a run of several (TF_CONFIG): its rank and its
        training-metric sums. Every process draws from the same generator (saved with the model)
        and keeps the same sums (of the strategy's summed metrics), so nothing else differs."""
        return {"rank": self.dist.rank if self.dist is not None else 0, "train_metrics": self.train_metrics_state()}

    def restore_process_state(self, state: dict) -> None:
        """Continue this process's own part of a checkpoint (process_state of the same rank)."""
        if state.get("train_metrics"):
            self.restore_train_metrics(state["train_metrics"])

    def synchronize(self) -> None:
        if self._acc_names is not None:
            self._acc_n.numpy()  # waits for the queued steps that update it

    # -- tensor -> host (primitives of the accumulator and evaluate in common.BackendCore) -------
    def _size_sums(self) -> None:
        """Give the sums their length, once the first trace has named the training metrics
        (carrying sums restored before that)."""
        if self._acc_pending is not None and self._acc_names is not None:
            self._acc.assign([self._acc_pending.get(k, 0.0) for k in self._acc_names])
            self._acc_pending = None

    def _read_train_sums(self) -> tuple[int, dict[str, float], dict[str, str]]:
        n = int(self._acc_n.numpy())
        if not n:
            return 0, {}, {}
        sums = (dict(self._acc_pending) if self._acc_pending is not None
                else dict(zip(self._acc_names, self._acc.numpy().tolist())))
        return n, sums, {k: self._acc.dtype.name for k in sums}

    def _write_train_sums(self, count: int, sums: dict[str, float], dtypes: dict[str, str]) -> None:
        self._acc_n.assign(count)
        if self._acc_pending is not None:
            self._acc_pending = dict(sums)
        else:
            self._acc.assign([sums.get(k, 0.0) for k in self._acc_names])

    def _to_host(self, rows: list[list]) -> np.ndarray:
        return tf.stack([tf.stack(row) for row in rows]).numpy().astype(np.float64)

    def _split_length(self, split: str) -> int:
        return len(self.dataset.splits()[split])  # rows, or tokens of text: on the device or not

    def _eval_scope(self):
        return tf.device(self.tf_device)

    def _eval_forward(self, split: str, idx: np.ndarray, number: int) -> dict:
        fns = self.__dict__.setdefault("_eval_fns", {})
        if split not in fns:
            fns[split] = self._make_eval(split)
        seed = tf.constant([self.config.seed, number], tf.int64)  # the VAE's noise: the same every evaluation
        if self.placement == "device":
            feed = {"idx": tf.constant(np.asarray(idx, dtype=np.int64))}
        else:  # streaming: gathered on the host now
            feed = self._to_device(self._host_batch(split, idx))
        return fns[split](feed, seed)

    def _make_eval(self, split: str):
        def run(feed, seed):
            x, y = self._batch_of(split, feed)
            _, parts = self._eval_loss(self.model, x, y, training=False, seed=seed, spec=self.spec)
            return {k: tf.cast(v, tf.float32) for k, v in parts.items()}

        return tf.function(run, reduce_retracing=True,
                           input_signature=[self._feed_spec(split, False), tf.TensorSpec([2], tf.int64)])

    def num_params(self) -> int:
        return int(sum(np.prod(v.shape) for _, v in self.train_vars))

    def _probe_layers(self, probe: common.LayerProbe) -> None:
        patched = []
        for name, layer in self.model.named_layers.items():
            original = layer.call

            def wrapped(*args, __name=name, __layer=layer, __orig=original, **kwargs):
                out = __orig(*args, **kwargs)
                probe.record(__name, type(__layer).__name__, out,
                             sum(int(np.prod(v.shape)) for v in __layer.trainable_weights))
                return out

            layer.call = wrapped
            patched.append((layer, original))
        try:
            with tf.device(self.tf_device):
                idx = np.arange(min(common.PROBE, len(self.dataset.train)), dtype=np.int64)
                feed = ({"idx": tf.constant(idx)} if self.placement == "device"
                        else self._to_device(self._host_batch("train", idx)))
                x, _ = self._batch_of("train", feed)
                self.model(x, training=False)
        finally:
            for layer, original in patched:
                layer.call = original

    @staticmethod
    def _tensor_facts(x) -> tuple[list[int], int] | None:
        return (list(x.shape), int(np.prod(x.shape)) * x.dtype.size) if tf.is_tensor(x) else None

    def _param_facts(self) -> tuple[int, int, int]:
        params = self.num_params()
        return params, params, int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for _, v in self.named_vars))

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

    def predict(self, split: str, idx: np.ndarray) -> np.ndarray:
        """The classes a classifier predicts for the examples at `idx` of `split` (read as
        evaluation reads them: scaled and normalised, never augmented)."""
        idx = np.asarray(idx, dtype=np.int64)
        feed = ({"idx": tf.constant(idx)} if self.placement == "device"
                else self._to_device(self._host_batch(split, idx)))
        with tf.device(self._data_device if self.placement == "device" else self.tf_device):
            x, _ = self._batch_of(split, feed)
        with tf.device(self.tf_device):
            logits = self.model(x, training=False)
        return np.argmax(np.asarray(tf.cast(logits, tf.float32)), axis=-1).astype(np.int64)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        if x.dtype == np.uint8:  # bytes, as a user's images are stored: the model reads [0, 1]
            x = x.astype(np.float32) * np.float32(1.0 / 255.0)
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
               "device": self.device, "precision": self.precision_label,
               "xla": bool(self.config.train.compile), "deterministic": bool(self.config.train.deterministic),
               "replicas": self.replicas,
               # intra_op: the count TensorFlow runs with, or None where it cannot be known, and
               # intra_op_source says which (never a guess recorded as a fact)
               "threads": {**self.thread_plan.as_dict(), "actual": self.intra_op,
                           "intra_op": self.intra_op, "intra_op_source": self.intra_op_source,
                           "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or None}}
        if self.dist is not None:
            env["strategy"] = {"name": self.dist.name, "replicas": self.dist.replicas,
                               "processes": self.dist.world_size, "devices": list(self.dist.devices)}
        if "GPU:" in self.tf_device:
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
        self.thread_plan = threads_module.plan_threads(configured)
        n = self.thread_plan.threads
        _set_thread_counts(n)
        # the count in force when TensorFlow says or it can be told; else None, and why not
        self.intra_op, self.intra_op_source = _intra_op_in_force()
        # an estimate where it is not known (TensorFlow's default rule, applied now), for what
        # needs a number: the contention check and the CPU peak of the MFU figure
        self.threads = self.intra_op or len(threads_module.affinity_cpus() or ()) or os.cpu_count() or 1
        if self.intra_op != n:
            known = self.intra_op is not None
            started = f"with {self.intra_op} intra-op threads" if known else "with its default thread count"
            uses = self.intra_op if known else "TensorFlow's default, which it does not report"
            warnings.warn(f"train.threads: TensorFlow had already started in this process ({started}), so {n} "
                          f"could not be applied; this run uses {uses} (recorded in env.json)", stacklevel=2)

    def numerics_facts(self) -> dict:
        """What bitwise-exact resume depends on, as JSON: a checkpoint records it, a resume compares."""
        facts = {"backend": "tensorflow", "tensorflow": tf.__version__, "keras": keras.__version__,
                 "device": self.device, "precision": self.precision_label,
                 "deterministic": bool(self.config.train.deterministic), "xla": bool(self.config.train.compile),
                 "threads": self.intra_op if self.intra_op is not None else "unknown",
                 "optimizer_update": "fused-kernels" if self.dist is None else "per-tensor",  # optim.py
                 "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                 "replicas": self.replicas,  # the order of the gradient sums: a resume under another count differs
                 **threads_module.host_facts()}
        if "GPU:" in self.tf_device:
            build = tf.sysconfig.get_build_info()
            details = tf.config.experimental.get_device_details(_gpus()[int(self.tf_device.rsplit(":", 1)[1])])
            facts.update({"cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
                          "gpu": details.get("device_name")})
        return facts


def _tensors(feed: dict) -> dict:
    """A feed's numpy arrays as tensors (a streamed feed is tensors already)."""
    return {k: v if tf.is_tensor(v) else tf.constant(v) for k, v in feed.items()}


def _set_thread_counts(n: int) -> None:
    """TensorFlow's intra-op and inter-op thread counts, where its runtime has not started yet."""
    threading = tf.config.threading
    for get, put in ((threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads),
                     (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads)):
        if get() != n:
            try:
                put(n)
            except RuntimeError:  # "cannot be modified after initialization"
                pass


def _intra_op_in_force() -> tuple[int | None, str]:
    """(the intra-op thread count TensorFlow's runtime uses, where it comes from), or (None, why it
    is unknown). TensorFlow reports only a count set through tf.config.threading before its runtime
    started (then it is the one in force); a runtime started without one read TF_NUM_INTRAOP_THREADS
    or else took one thread per CPU schedulable at that moment, which no API reports."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured:
        return configured, "tf.config.threading, set before TensorFlow's runtime started"
    from_env = os.environ.get("TF_NUM_INTRAOP_THREADS", "").strip()
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env), "TF_NUM_INTRAOP_THREADS (TensorFlow's runtime started before airlab could set it)"
    return None, ("unknown: TensorFlow's runtime started in this process before airlab could set the count, "
                  "with its default (one thread per CPU schedulable when it started), which it does not report")

"""The PyTorch backend: model, optimizer and data on one device; the training step; state io.

Where the data lives (`placement`, chosen by common.choose_placement from data.placement and the
memory free on the device):

- "device", the fast path: every split lies on the device as stored (uint8 images stay uint8, a
  quarter of the memory; token ids stay int32) and batches are gathered there by index, so there
  is no DataLoader between the run loop and the model;
- "stream": nothing lies on the device; each training batch is gathered on the host
  (`Split.gather`, from a memory-mapped cache or an array) by a background thread
  (airlab.data.feed.Prefetcher) a few steps ahead, in pinned memory on CUDA, and copied to the
  device when its step comes; evaluation batches likewise, one split at a time.

Either way the same device ops then turn the stored rows into the model's inputs (`_inputs`):
uint8 -> float32 `x * (1/255)` (the host path's multiply), augmentation of training images (one
zero pad and two gathers, from airlab.data.augment's grid: a pure function of (seed, epoch,
index)), then `(x - mean) / std` under data.normalize. So both placements train to the same bits.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import safetensors.torch
import torch

from airlab import registry
from airlab.backends import common
from airlab.backends.base import NonFiniteStep
from airlab.backends.torch import distributed, losses, shard
from airlab.data.feed import Prefetcher
from airlab.errors import CheckpointError
from airlab import faults as faults_module
from airlab.train import threads as threads_module

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.pt"
RNG_FILE = "rng.safetensors"
SCALER_FILE = "scaler.json"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


_AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # precision -> autocast dtype
_BYTE = 1.0 / 255.0  # uint8 pixels -> [0, 1]: a float32 multiply, as airlab.data's _to_float


class _HostBatch(NamedTuple):
    """A batch gathered on the host (the streaming path): its indices and its tensors as stored
    (pinned on CUDA), ready to copy to the device."""

    index: np.ndarray
    x: torch.Tensor  # (B, ...) as stored; text: windows (B, T+1)
    y: torch.Tensor | None  # (B,) int64 labels
    grid: torch.Tensor | None  # (B, H + W) int64: the augmentation's source rows, then columns


class TorchBackend(common.BackendCore):
    name = "torch"
    gpu_noun = "CUDA device"
    no_gpu_hint = "use device: cpu, or install a CUDA build of torch (see README: CPU or GPU torch)"
    PRECISION_LABELS = {"fp32": "fp32", "bf16": "bfloat16", "fp16": "float16"}  # torch's dtype names

    def __init__(self, config, dataset, task, *, training: bool = True):
        super().__init__(config, dataset, task, training=training)
        t = config.train
        self.torch_device = torch.device(*self._place())
        self.amp_dtype = _AMP[self.precision]  # the autocast dtype, or None for fp32
        self._apply_threads(t.threads)
        if t.deterministic:
            if self.torch_device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.torch_device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(config.seed)  # python and numpy are seeded by the run loop
        build = registry.builder(self.spec.name, "torch")
        self.model = build(self.spec, dataset.info).to(self.torch_device)
        self.rank, self.world = distributed.rank_world()
        self._shared_generator = self._share_randomness() if self.world > 1 else None
        if self.world == 1:  # (the module's state outlives a run: a process may train again, alone)
            shard.configure(0, 1, None)
        # convolutional models in channels-last memory format on CUDA and on a CPU: there oneDNN's
        # pooling in NCHW costs 10x its channels-last time (max_pool2d of (128, 64, 24, 24): 27 ms vs 2.1,
        # bf16 or fp32; the CNN's whole step x1.10-1.13; scripts/bench_vs_tuned.py)
        self.channels_last = self.torch_device.type in ("cuda", "cpu") and any(
            isinstance(m, torch.nn.Conv2d) for m in self.model.modules())
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = self.model
        if t.compile and training:
            self.forward_model = torch.compile(self.model)

        self._train_loss = losses.TRAIN[task.name]
        self._eval_loss = losses.EVAL[task.name]
        self._eval_generator = torch.Generator(device=self.torch_device)
        self._prepare_data(training)

        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer_impl = resolve_optimizer_impl(t.optimizer_impl, self.torch_device.type)
        # clipping's norm and multiply as multi-tensor kernels where torch has them (None: its own choice)
        self._clip_foreach = True if self.torch_device.type in ("cpu", "cuda") else None
        self.optimizer = self._make_optimizer() if training else None
        self.scaler = (torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 and training else None)
        self._ddp = None
        if self.world > 1 and training:
            try:
                self._ddp = self._wrap_ddp()
            except RuntimeError as e:  # its construction and warm-up are collectives
                if distributed.is_collective_failure(e):
                    raise distributed.lost(e, "the start of DistributedDataParallel") from None
                raise
        self._lr = None
        self._acc: dict[str, torch.Tensor] = {}
        self._acc_n = 0

    # -- several processes (DistributedDataParallel) -------------------------------------------
    @classmethod
    def collective(cls, config):
        """This process's collective in a run of several (torchrun's variables, or a process group
        that exists already), else None (airlab.train.process.role_for)."""
        return distributed.join(config)

    def close(self) -> None:
        """Stop the streaming path's prefetch threads. Drop DistributedDataParallel before the
        process group goes: left to the interpreter's exit, its reducer's threads can outlive the
        group, and the process aborts ("terminate called without an active exception") after a run
        that succeeded."""
        self._close_feeds()
        if self._ddp is not None:
            import gc

            self._ddp = None
            gc.collect()

    def _share_randomness(self) -> torch.Generator:
        """A run of several processes: the generator of the draws keyed to the global sample
        position (dropout masks, the VAE's noise; airlab/backends/torch/shard.py) starts, in every
        process, where the default generator stands after the model's initialisation (the same
        everywhere); each process's default generator, which fused kernels draw from, is then
        seeded from (seed, rank) (rank 0 keeps the one-process stream)."""
        shared = torch.Generator(device=self.torch_device)
        shared.set_state(self._default_generator_state())
        if self.rank:
            torch.manual_seed(rank_seed(self.config.seed, self.rank))
        shard.configure(self.rank, self.world, shared)
        return shared

    def _default_generator_state(self) -> torch.Tensor:
        if self.torch_device.type == "cuda":
            return torch.cuda.get_rng_state(self.torch_device)
        return torch.get_rng_state()

    def _wrap_ddp(self):
        """DistributedDataParallel around the training loss (the model's forward and the task's
        loss, so that the VAE's encode/decode also run under it): gradients are averaged over the
        processes during the last micro-batch's backward pass, overlapped with it.

        Its forward passes are kept free of collectives, so that the processes can agree on an
        out-of-memory or a non-finite loss between the last forward and the last backward pass
        (_forward_backward_ddp): buffers are not broadcast before each forward (BatchNorm's
        running statistics are the main process's where they matter: evaluation and checkpoints,
        _sync_buffers), and DDP's one-time rebuild of its gradient buckets, a broadcast in the
        second forward pass, is done here, on a warm-up that leaves weights, gradients and random
        generators as they were."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.torch_device.index] if self.torch_device.type == "cuda" else None
        # a gradient of a size-1 dimension (a 1-channel convolution's) may carry another stride than
        # its bucket: torch says so on every process; it changes no number
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        import inspect

        # no buffer broadcast before each forward (newer torch names the option forward_sync_buffers)
        quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                 inspect.signature(DistributedDataParallel.__init__).parameters else {"broadcast_buffers": False})
        ddp = DistributedDataParallel(_TrainLoss(self.forward_model, self._train_loss, self.spec), device_ids=ids,
                                      **quiet)
        rng = self._rng_snapshot()
        x, y = self._batch("train", np.zeros(1, dtype=np.int64))
        self.model.eval()
        try:
            with self._autocast():
                loss, _ = ddp(x, y)  # the first synchronised pass records the order of the gradients
            (loss * 0).backward()
            with ddp.no_sync(), self._autocast():
                ddp(x, y)  # the next forward rebuilds the buckets in that order (a broadcast)
        finally:
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            self._rng_restore(rng)
        return ddp

    # -- what the framework sees (primitives of common.resolve_device and resolve_precision) -----
    @staticmethod
    def _framework() -> str:
        return f"torch {torch.__version__}"

    @staticmethod
    def _gpu_count() -> int:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    @staticmethod
    def _default_gpu() -> int:
        return torch.cuda.current_device()

    @staticmethod
    def _mps_available() -> bool:
        return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()

    @staticmethod
    def _cpu_only_build() -> bool:
        return torch.version.cuda is None

    def _gpu_bf16(self, index: int) -> str | None:
        return None if torch.cuda.is_bf16_supported() else torch.cuda.get_device_name(index)

    def _cpu_bf16(self) -> bool:
        """precision: auto on a CPU: bf16 autocast where the CPU computes bf16 natively (AMX or
        AVX512-BF16, common.cpu_bf16_flags) and oneDNN runs it. Measured on AVX512-BF16 without
        AMX (scripts/bench_vs_tuned.py, one thread): x1.3 (VAE) to x2.1 (autoencoder) over fp32,
        x1.0 on the small Transformer, at the same validation loss. Where the CPU only emulates
        bf16 (AVX-512 without BF16, AVX2), fp32: a stated rule, not measured here."""
        return bool(common.cpu_bf16_flags()) and bool(torch.backends.mkldnn.is_available())

    # -- data ----------------------------------------------------------------------------------
    def _prepare_data(self, training: bool) -> None:
        """Choose where the data lives (training: common.choose_placement; sampling never reads the
        splits, so nothing goes to the device) and put it there; the device constants of `_inputs`."""
        dev, ds = self.torch_device, self.dataset
        self._windows = self.task.batches == "windows"
        images = not self._windows and ds.kind == "image" and len(ds.train.sample_shape) == 3
        self._aug = self.augment if images else None  # data.augment (training images only)
        self._image_hw = ds.train.sample_shape[-2:] if images else None
        mean, std = getattr(ds, "mean", None), getattr(ds, "std", None)
        self._mean = self._std = None
        if images and mean is not None and std is not None:  # data.normalize: (1, C, 1, 1) each
            self._mean = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
            self._std = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        if self._windows:
            self._window = torch.arange(self._context + 1, device=dev)  # (T+1,)
            self._window_host = np.arange(self._context + 1, dtype=np.int64)
        if training:
            self._choose_placement(self.device)
        else:
            self.placement, self.placement_reason = "stream", "sampling: the data stays on the host"
        self._feed: Prefetcher | None = None  # the training batches to come (streaming)
        self._eval_feed: tuple[str, list, Prefetcher] | None = None  # (split, batches, their prefetch)
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        if self.placement == "device":
            self._put_data_on_device()

    def _put_data_on_device(self) -> None:
        """The fast path: every split on the device as stored (read whole from a memory map)."""
        dev = self.torch_device
        for name, split in self.dataset.splits().items():
            with warnings.catch_warnings():  # a read-only array shared on the CPU: nothing writes into it
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                x = torch.as_tensor(split.materialize(), device=dev)  # (N, ...) images, rows; (N,) token ids
                y = None if split.y is None else torch.as_tensor(np.asarray(split.y, dtype=np.int64), device=dev)
            self._splits[name] = (x, y)

    def _memory_free(self) -> int | None:
        """Bytes free where the fast path would put the data: the GPU's, or the host's on cpu."""
        dev = self.torch_device
        if dev.type == "cuda":
            return int(torch.cuda.mem_get_info(dev.index if dev.index is not None else torch.cuda.current_device())[0])
        if dev.type == "cpu":
            import psutil

            return int(psutil.virtual_memory().available)
        return None

    def _split_length(self, split: str) -> int:
        return len(self.dataset.splits()[split])

    def _gather(self, split: str, idx: torch.Tensor):
        """The fast path: the stored rows at `idx` (a device tensor) of a split on the device."""
        x, y = self._splits[split]
        # index_select, not x[idx]: the same rows, gathered several times faster on a CPU (advanced
        # indexing's kernel costs ~70 us for a batch of 128 MNIST-sized images, index_select ~5)
        if self._windows:
            pos = (idx[:, None] + self._window).view(-1)  # (B*(T+1),)
            return x.index_select(0, pos).view(len(idx), -1), None  # (B, T+1) token ids
        return x.index_select(0, idx), (None if y is None else y.index_select(0, idx))

    def _host_gather(self, split: str, index: np.ndarray):
        """The streaming path: the stored rows at `index` of a split, gathered on the host."""
        s = self.dataset.splits()[split]
        if self._windows:
            return s.gather(index[:, None] + self._window_host)[0], None  # (B, T+1) token ids
        x, y = s.gather(index)
        return x, (None if y is None else np.asarray(y, dtype=np.int64))

    def _host_batch(self, split: str, index: np.ndarray, step: int | None, augment: bool) -> _HostBatch:
        """A batch gathered on the host as tensors ready to copy (pinned on CUDA), with the
        augmentation grid of training images."""
        x, y = self._host_gather(split, index)
        grid = None
        if augment and self._aug is not None:
            grid = np.concatenate(self.augment_grid(index, step, *self._image_hw), axis=1)  # (B, H+W)
        pin = self.torch_device.type == "cuda"
        tensors = []
        for a in (x, y, grid):
            t = None if a is None else torch.from_numpy(np.ascontiguousarray(a))
            tensors.append(t.pin_memory() if pin and t is not None else t)
        return _HostBatch(np.asarray(index), *tensors)

    def _to_device(self, batch: _HostBatch):
        dev = self.torch_device
        return tuple(None if t is None else t.to(dev, non_blocking=True) for t in (batch.x, batch.y, batch.grid))

    def _inputs(self, x: torch.Tensor, y: torch.Tensor | None, grid: torch.Tensor | None = None):
        """Stored rows on the device -> the model's inputs and targets: token windows -> (inputs,
        next tokens); images: augmented (grid: training only), uint8 -> float32 in [0, 1],
        normalised. Never writes into `x` (a streamed batch may be used again: a retried step)."""
        if self._windows:
            w = x.long()  # (B, T+1)
            return w[:, :-1], w[:, 1:]  # inputs (B, T), next-token targets (B, T)
        if grid is not None:
            x = self._augment_batch(x, grid)  # on the stored values: zeros pad either way, gathers move them
        if x.dtype == torch.uint8:
            x = x.float().mul_(_BYTE)
        elif x.dtype != torch.float32:
            x = x.float()
        if self._mean is not None:
            x = (x - self._mean).div_(self._std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _augment_batch(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Random crop and flip (airlab.data.augment): pad by random_crop zeros on each side, then
        gather each image's source rows and columns (grid (B, H + W): rows, then columns)."""
        b, c, h, w = x.shape
        p = self._aug.random_crop
        if p:
            x = torch.nn.functional.pad(x, (p, p, p, p))  # (B, C, H+2P, W+2P)
        rows = grid[:, :h].reshape(b, 1, h, 1).expand(b, c, h, w + 2 * p)
        x = x.gather(2, rows)  # (B, C, H, W+2P)
        cols = grid[:, h:].reshape(b, 1, 1, w).expand(b, c, h, w)
        return x.gather(3, cols)  # (B, C, H, W)

    def _batch(self, split: str, index: np.ndarray):
        """The model's inputs and targets of the examples at `index` of a split, not augmented
        (the summary's probe, DDP's warm-up), in either placement."""
        if self.placement == "device":
            return self._inputs(*self._gather(split, torch.from_numpy(index).to(self.torch_device, non_blocking=True)))
        return self._inputs(*self._to_device(self._host_batch(split, index, None, augment=False))[:2])

    def _train_batch(self, index: np.ndarray, step: int | None):
        """The streaming path: this step's batch on the device, whole (x, y, grid), from the
        prefetch thread when it prepared these very indices, else gathered now."""
        batch = None
        if self.order is not None and step:
            if self._feed is None:  # started on the first step: the run loop has set the order
                self._feed = Prefetcher(self._prefetch, end=self.order.total_steps)
            batch = self._feed.get(step - 1)
            if not np.array_equal(batch.index, index):
                batch = None
        if batch is None:
            batch = self._host_batch("train", index, step, augment=True)
        return self._to_device(batch)

    def _prefetch(self, step0: int) -> _HostBatch:
        """The prefetch thread's work: step `step0` (0-based) of the run loop's order."""
        return self._host_batch("train", self.order.at(step0)[1], step0 + 1, augment=True)

    def _micro_batch(self, chunk: np.ndarray, lo: int, step: int | None, held):
        """The model's inputs and targets of one micro-batch: positions lo:lo+len(chunk) of the
        streamed batch `held`, or (the fast path) gathered on the device with its augmentation
        grid copied beside its indices (one copy to the device)."""
        if held is not None:
            x, y, grid = held
            hi = lo + len(chunk)
            return self._inputs(x[lo:hi], None if y is None else y[lo:hi], None if grid is None else grid[lo:hi])
        dev = self.torch_device
        if self._aug is None:
            return self._inputs(*self._gather("train", torch.from_numpy(chunk).to(dev, non_blocking=True)))
        rows, cols = self.augment_grid(chunk, step, *self._image_hw)
        packed = torch.from_numpy(np.concatenate([chunk[:, None], rows, cols], axis=1)).to(dev, non_blocking=True)
        x, y = self._gather("train", packed[:, 0])
        return self._inputs(x, y, packed[:, 1:])

    def set_order(self, order) -> None:
        """The run loop's order; batches prefetched for another order are dropped."""
        self._close_feeds()
        super().set_order(order)

    def _close_feeds(self) -> None:
        if getattr(self, "_feed", None) is not None:
            self._feed.close()
            self._feed = None
        self._close_eval_feed()

    def _close_eval_feed(self) -> None:
        if getattr(self, "_eval_feed", None) is not None:
            self._eval_feed[2].close()
            self._eval_feed = None

    def _eval_batch(self, split: str, idx: np.ndarray, number: int):
        """The streaming path: an evaluation batch on the device, prefetched with the batches of
        this process that follow it (evaluate's batches, rebuilt here; any other `idx` is
        gathered now)."""
        feed = self._eval_feed
        if feed is None or feed[0] != split:
            self._close_eval_feed()
            starts = common.eval_starts(self.task, self._split_length(split), self._context)
            bs = common.eval_batch_size(self.config.data)
            rank, world = self.process.rank, self.process.world_size
            mine = [starts[i:i + bs] for n, i in enumerate(range(0, len(starts), bs)) if n % world == rank]
            feed = self._eval_feed = (split, mine, Prefetcher(
                lambda k: self._host_batch(split, mine[k], None, augment=False), end=len(mine)))
        _, mine, prefetch = feed
        k = number // self.process.world_size
        batch = prefetch.get(k) if k < len(mine) and np.array_equal(mine[k], idx) else None
        if batch is None:
            batch = self._host_batch(split, idx, None, augment=False)
        return self._inputs(*self._to_device(batch)[:2])

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=self.amp_dtype)

    # -- optimizer -----------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        t = self.config.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        if t.weight_decay > 0:
            # decay matrices and embeddings; not biases or norm gains (the usual practice)
            decay = [p for p in params if p.dim() >= 2]
            no_decay = [p for p in params if p.dim() < 2]
            groups = [{"params": decay, "weight_decay": t.weight_decay},
                      {"params": no_decay, "weight_decay": 0.0}]
        else:
            groups = [{"params": params, "weight_decay": 0.0}]
        kw = _IMPL_KWARGS[self.optimizer_impl]
        if t.optimizer == "adam":
            return torch.optim.Adam(groups, lr=t.lr, betas=t.betas, eps=t.eps, **kw)
        if t.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps, **kw)
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, **kw)

    # -- training ------------------------------------------------------------------------------
    def _forward_backward(self, index: np.ndarray, step: int | None):
        """Loss and gradients of the batch at `index`, in `grad_accum` micro-batches whose losses
        are weighted by their share of the batch (the gradient is the whole batch's mean)."""
        faults, n = self.faults, len(index)
        chunks = common.micro_batches(index, self.grad_accum)
        held = self._train_batch(index, step) if self.placement == "stream" else None
        loss_total, parts_total, lo = None, {}, 0
        for chunk in chunks:
            if faults:
                faults.check_batch(len(chunk))
            x, y = self._micro_batch(chunk, lo, step, held)
            lo += len(chunk)
            with self._autocast():
                loss, parts = self._train_loss(self.forward_model, x, y, spec=self.spec)
            if faults and faults.nan_loss(step):
                loss = loss * float("nan")
            share = len(chunk) / n
            scaled = loss * share if len(chunks) > 1 else loss
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_total = scaled.detach() if loss_total is None else loss_total + scaled.detach()
            for k, v in parts.items():
                v = v.detach() * share if len(chunks) > 1 else v.detach()
                parts_total[k] = parts_total[k] + v if k in parts_total else v
        return loss_total, parts_total

    def _forward_backward_ddp(self, index: np.ndarray, step: int | None):
        """_forward_backward in a run of several processes. Every forward pass, and the backward
        pass of every micro-batch but the last, runs without synchronising (DDP's no_sync: the
        gradients accumulate locally). Before the last backward pass, which averages them over the
        processes (DDP's bucketed all-reduce, overlapped with that pass), the processes agree on
        whether any of them ran out of memory or found a non-finite loss: then none of them runs
        it, so no process waits in the gradient all-reduce for one that stopped. (An out-of-memory
        inside that last backward pass is the exception: the others wait for the collective
        timeout, AIRLAB_DIST_TIMEOUT, and the run ends with exit 4.)"""
        faults, n = self.faults, len(index)
        chunks = common.micro_batches(index, self.grad_accum)
        loss_total, parts_total, oom = None, {}, None
        last, lo, held = None, 0, None
        for i, chunk in enumerate(chunks):
            final = i == len(chunks) - 1
            try:
                if i == 0 and self.placement == "stream":  # (its copy to the device may run out of memory)
                    held = self._train_batch(index, step)
                if faults:
                    faults.check_batch(len(chunk))
                x, y = self._micro_batch(chunk, lo, step, held)
                lo += len(chunk)
                with self._ddp.no_sync():
                    with self._autocast():
                        loss, parts = self._ddp(x, y)
                    if faults and faults.nan_loss(step):
                        loss = loss * float("nan")
                    share = len(chunk) / n
                    scaled = loss * share if len(chunks) > 1 else loss
                    if final:
                        last = scaled
                    else:
                        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            except (torch.OutOfMemoryError, faults_module.FakeOutOfMemory) as e:
                oom = e
                break
            loss_total = scaled.detach() if loss_total is None else loss_total + scaled.detach()
            for k, v in parts.items():
                v = v.detach() * share if len(chunks) > 1 else v.detach()
                parts_total[k] = parts_total[k] + v if k in parts_total else v
        bad_loss = oom is None and not bool(torch.isfinite(loss_total))
        any_oom, any_bad = self.process.max([oom is not None, bad_loss])
        if any_oom:
            raise oom if oom is not None else faults_module.FakeOutOfMemory("out of memory on another process")
        if any_bad:
            self.optimizer.zero_grad(set_to_none=True)
            bad = NonFiniteStep(step, float(loss_total), None)
            bad.elsewhere = not bad_loss  # this process's loss was finite: another process's was not
            raise bad
        # what DDP's forward does when it synchronises (its _post_forward), now that all agree: the
        # reducer expects this backward pass and all-reduces the gradient buckets as they fill
        self._ddp.require_forward_param_sync = True
        self._ddp.reducer.prepare_for_backward([])
        try:
            (self.scaler.scale(last) if self.scaler is not None else last).backward()  # averages the gradients
        except RuntimeError as e:
            if distributed.is_collective_failure(e):
                raise distributed.lost(e, "the gradient all-reduce") from None
            raise
        return loss_total, parts_total

    def train_step(self, index: np.ndarray, lr: float, *, step: int | None = None) -> None:
        """One optimizer step. The loss and the gradient norm are checked before the weights
        move: a non-finite one raises NonFiniteStep and the step is not taken. Running out of
        memory raises OutOfMemoryStep with the weights, gradients and RNG as they were."""
        opt = self.optimizer
        if lr != self._lr:
            for group in opt.param_groups:
                group["lr"] = lr
            self._lr = lr
        if not self.model.training:  # evaluate() leaves it in eval mode; train() walks every module
            self.model.train()
        rng = self._rng_snapshot() if self.config.train.auto_batch_size else None
        try:
            loss, parts = (self._forward_backward_ddp if self._ddp is not None else self._forward_backward)(index, step)
        except (torch.OutOfMemoryError, faults_module.FakeOutOfMemory) as e:
            opt.zero_grad(set_to_none=True)
            if rng is not None:
                self._rng_restore(rng)
            if self.torch_device.type == "cuda":
                torch.cuda.empty_cache()
            raise common.out_of_memory(step, len(index), self.grad_accum, e) from None
        clip = self.config.train.grad_clip
        params = self._params
        if self.scaler is not None:
            # fp16: overflowing gradients are the scaler's business (it skips the step and
            # lowers the scale); only a non-finite loss is a divergence
            if not bool(torch.isfinite(loss)):
                opt.zero_grad(set_to_none=True)
                raise NonFiniteStep(step, float(loss), None)
            if clip:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=self._clip_foreach)
            self.scaler.step(opt)
            self.scaler.update()
        else:
            if self.faults and self.faults.inf_grad(step):
                next(p for p in params if p.grad is not None).grad.view(-1)[0] = float("inf")
            grads = [p.grad for p in params if p.grad is not None]
            norm = None
            if clip:
                # the norm before clipping; foreach: one multi-tensor norm and one multiply instead of a
                # Python loop over the parameters (torch's default off CUDA)
                norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=self._clip_foreach)
                probe = loss.detach() + norm
            else:
                # the cheapest full reduction: a sum is non-finite when any element is (or when the
                # gradients are so large that it overflows, which is a divergence as well)
                probe = loss.detach()
                for g in grads:
                    probe = probe + g.sum()
            # one device sync per step: the price of never stepping into NaN (a float's test: on a CPU,
            # torch.isfinite on a scalar costs ~5 us, .item() and math.isfinite ~0.2)
            if not math.isfinite(probe.item()):
                if norm is None:  # only now, for the message
                    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
                opt.zero_grad(set_to_none=True)
                raise NonFiniteStep(step, float(loss), float(norm))
            opt.step()
        opt.zero_grad(set_to_none=True)
        for k, v in parts.items():
            self._acc[k] = self._acc[k] + v if k in self._acc else v
        self._acc_n += 1

    def _rng_snapshot(self):
        cuda = torch.cuda.get_rng_state_all() if self.torch_device.type == "cuda" else None
        shared = self._shared_generator.get_state() if self._shared_generator is not None else None
        return torch.get_rng_state(), cuda, shared

    def _rng_restore(self, snapshot) -> None:
        cpu, cuda, shared = snapshot
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if shared is not None:
            self._shared_generator.set_state(shared)

    def synchronize(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    # -- tensor -> host (primitives of the accumulator and evaluate in common.BackendCore) -------
    def _read_train_sums(self) -> tuple[int, dict[str, float], dict[str, str]]:
        if not self._acc_n:
            return 0, {}, {}
        keys = list(self._acc)
        values = torch.stack([self._acc[k].float() for k in keys]).cpu().tolist()  # one sync; exact for bf16
        return self._acc_n, dict(zip(keys, values)), {k: str(self._acc[k].dtype).removeprefix("torch.") for k in keys}

    def _write_train_sums(self, count: int, sums: dict[str, float], dtypes: dict[str, str]) -> None:
        self._acc = {k: torch.tensor(v, dtype=getattr(torch, dtypes[k]), device=self.torch_device)
                     for k, v in sums.items()}
        self._acc_n = count

    def _sync_buffers(self) -> None:
        """A run of several processes: BatchNorm's running statistics as the main process has them
        (DDP broadcasts them before each forward pass; each process then updates its own copy with
        its share of the batch), so evaluation and the saved weights are the same everywhere."""
        if self._ddp is None:
            return
        import torch.distributed as dist

        try:
            with torch.no_grad():
                for b in self.model.buffers():
                    dist.broadcast(b, 0)
        except RuntimeError as e:
            if distributed.is_collective_failure(e):
                raise distributed.lost(e, "the broadcast of BatchNorm's statistics") from None
            raise

    def _to_host(self, rows: list[list]) -> np.ndarray:
        return torch.stack([torch.stack(row) for row in rows]).cpu().double().numpy()

    @contextmanager
    def _eval_scope(self):
        self._sync_buffers()
        self.model.eval()
        self._eval_generator.manual_seed(self.config.seed)
        try:
            with torch.no_grad():
                yield
        finally:
            self._close_eval_feed()

    def _eval_forward(self, split: str, idx: np.ndarray, number: int) -> dict:
        x, y = self._batch(split, idx) if self.placement == "device" else self._eval_batch(split, idx, number)
        # the VAE's noise: a function of the batch's number, so any process can evaluate any batch
        self._eval_generator.manual_seed(rank_seed(self.config.seed, number))
        with self._autocast():
            _, parts = self._eval_loss(self.model, x, y, generator=self._eval_generator, spec=self.spec)
        return {k: v.detach().float() for k, v in parts.items()}

    def num_params(self) -> int:
        seen, total = set(), 0
        for p in self.model.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    @torch.no_grad()
    def _probe_layers(self, probe: common.LayerProbe) -> None:
        def hook(name):
            def fn(module, inputs, out):
                probe.record(name, type(module).__name__, out, sum(p.numel() for p in module.parameters(recurse=False)))
            return fn

        hooks = []
        for name, module in self.model.named_modules():
            if name and not list(module.children()) or (name and sum(1 for _ in module.parameters(recurse=False))):
                hooks.append(module.register_forward_hook(hook(name)))
        x, _ = self._batch("train", np.arange(common.PROBE, dtype=np.int64))
        self.model.eval()
        try:
            self.model(x)
        finally:
            for h in hooks:
                h.remove()

    @staticmethod
    def _tensor_facts(x) -> tuple[list[int], int] | None:
        return (list(x.shape), x.numel() * x.element_size()) if isinstance(x, torch.Tensor) else None

    def _param_facts(self) -> tuple[int, int, int]:
        unique = {id(p): p for p in self.model.parameters()}.values()
        return (self.num_params(), sum(p.numel() for p in unique if p.requires_grad),
                sum(p.numel() * p.element_size() for p in unique))

    # -- state ---------------------------------------------------------------------------------
    def save_state(self, directory: Path) -> list[str]:
        """The model, optimizer, RNG (the main process's, and the generator every process shares in
        a run of several: each process's own generators travel in process_state) and scaler."""
        files = [MODEL_FILE]
        safetensors.torch.save_model(self.model, str(directory / MODEL_FILE))
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), directory / OPTIM_FILE)
            files.append(OPTIM_FILE)
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = state
        if self._shared_generator is not None:
            rng["torch_shared"] = self._shared_generator.get_state()
        safetensors.torch.save_file(rng, str(directory / RNG_FILE))
        files.append(RNG_FILE)
        if self.scaler is not None:
            (directory / SCALER_FILE).write_text(json.dumps(self.scaler.state_dict()))
            files.append(SCALER_FILE)
        return files

    def load_state(self, directory: Path, *, weights_only: bool = False, skip: frozenset = frozenset()) -> None:
        """Restore what save_state wrote. `skip` leaves parts out ("model", "optimizer", "torch_rng",
        "scaler"): only the reliability tests use it, to prove each part matters."""
        if "model" not in skip:
            try:
                missing, unexpected = safetensors.torch.load_model(self.model, str(directory / MODEL_FILE),
                                                                    strict=False, device=str(self.torch_device))
            except Exception as e:  # a safetensors or shape error: the checkpoint does not fit this model
                raise CheckpointError(f"{directory / MODEL_FILE}: cannot load weights into {self.spec.name}: {e}",
                                      hint="was this checkpoint written for another model or config?") from None
            if missing or unexpected:
                raise CheckpointError(f"{directory / MODEL_FILE}: weights do not match the model "
                                      f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
        if weights_only:
            return
        if self.optimizer is not None and (directory / OPTIM_FILE).exists() and "optimizer" not in skip:
            try:
                with warnings.catch_warnings():  # torch's notes on the pickle protocol of a refused file
                    warnings.simplefilter("ignore")
                    state = torch.load(directory / OPTIM_FILE, map_location=self.torch_device, weights_only=True)
            except Exception as e:  # weights_only refuses anything but tensors and plain containers
                raise CheckpointError(f"{directory / OPTIM_FILE}: refused to load optimizer state "
                                      f"({type(e).__name__}); nothing in it was run",
                                      hint="a checkpoint must hold tensors only; do not resume from files of "
                                           "unknown origin") from None
            try:
                self.optimizer.load_state_dict(state)
            except Exception as e:  # tensors of the wrong shape or kind: not this model's optimizer
                raise CheckpointError(f"{directory / OPTIM_FILE}: cannot restore the optimizer: "
                                      f"{_first_line(e)}",
                                      hint="was this checkpoint written with another train.optimizer or model?") from None
        if "torch_rng" not in skip:
            try:
                rng = safetensors.torch.load_file(str(directory / RNG_FILE))
                torch.set_rng_state(rng["torch_cpu"])
                cuda_states = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
                if cuda_states and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
                if self._shared_generator is None and "torch_shared" in rng:
                    # a checkpoint of several processes resumed by one: its dropout masks and noise
                    # continue the stream they were drawn from, the shared one
                    if self.torch_device.type == "cuda":
                        torch.cuda.set_rng_state(rng["torch_shared"], self.torch_device)
                    else:
                        torch.set_rng_state(rng["torch_shared"])
                if self._shared_generator is not None:
                    # a checkpoint of one process: the shared draws continue its default stream
                    shared = rng.get("torch_shared")
                    if shared is None:
                        shared = (cuda_states[self.torch_device.index] if self.torch_device.type == "cuda"
                                  else rng["torch_cpu"])
                    self._shared_generator.set_state(shared)
                    if self.rank:  # the main process's default stream is not this process's: (seed, rank)
                        torch.manual_seed(rank_seed(self.config.seed, self.rank))  # (process_state, if any, follows)
            except Exception as e:  # not a safetensors file, no CPU state, or a state of the wrong size
                raise CheckpointError(f"{directory / RNG_FILE}: cannot restore the random generator: "
                                      f"{_first_line(e)}", hint="the checkpoint is damaged: remove it to resume "
                                                                "from the one before") from None
        if self.scaler is not None and (directory / SCALER_FILE).exists() and "scaler" not in skip:
            try:
                self.scaler.load_state_dict(json.loads((directory / SCALER_FILE).read_text()))
            except (OSError, ValueError, TypeError, KeyError) as e:
                raise CheckpointError(f"{directory / SCALER_FILE}: cannot restore the grad scaler: "
                                      f"{_first_line(e)}") from None

    def process_state(self) -> dict:
        """What differs between the processes of a run, as JSON for the checkpoint: this process's
        default generators (fused kernels draw from them) and its training-metric sums."""
        import base64

        rng = {"torch_cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")}
        if self.torch_device.type == "cuda":
            rng["torch_cuda"] = base64.b64encode(
                torch.cuda.get_rng_state(self.torch_device).numpy().tobytes()).decode("ascii")
        return {"rank": self.rank, "rng": rng, "train_metrics": self.train_metrics_state()}

    def restore_process_state(self, state: dict) -> None:
        """Continue this process's own part of a checkpoint (process_state of the same rank)."""
        import base64

        def tensor(text: str) -> torch.Tensor:
            return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()

        torch.set_rng_state(tensor(state["rng"]["torch_cpu"]))
        if self.torch_device.type == "cuda" and "torch_cuda" in state["rng"]:
            torch.cuda.set_rng_state(tensor(state["rng"]["torch_cuda"]), self.torch_device)
        self.restore_train_metrics(state["train_metrics"])

    def named_weights(self):
        """The weights as stored in model.safetensors: a tied tensor once, under the name that
        sorts first among its aliases (safetensors' own choice)."""
        state = self.model.state_dict()
        first: dict[tuple, str] = {}
        for name in sorted(state):
            t = state[name]
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
            first.setdefault(key, name)
        for name in sorted(set(first.values())):
            t = state[name].detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.float()
            yield name, t.numpy()

    def weight_aliases(self) -> dict[str, list[str]]:
        """Layers that use another layer's weight (the Transformer's head, the token embedding's):
        {owner: [users]}, the owner being the layer that registered the parameter first."""
        owners: dict[int, str] = {}
        aliases: dict[str, list[str]] = {}
        for name, p in self.model.named_parameters(remove_duplicate=False):
            layer = name.rpartition(".")[0]
            owner = owners.setdefault(id(p), layer)
            if owner != layer and layer not in aliases.setdefault(owner, []):
                aliases[owner].append(layer)
        return aliases

    @torch.no_grad()
    def all_finite(self) -> bool:
        flags = [torch.isfinite(p).all() for p in self.model.parameters() if p.is_floating_point()]
        return bool(torch.stack(flags).all().item()) if flags else True

    # -- samples -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_images(self, n: int, seed: int) -> np.ndarray:
        self.model.eval()
        g = torch.Generator(device=self.torch_device).manual_seed(seed)
        z = torch.randn(n, self.model.latent_dim, generator=g, device=self.torch_device)
        return torch.sigmoid(self.model.decode(z).float()).cpu().numpy()

    @torch.no_grad()
    def predict(self, split: str, idx: np.ndarray) -> np.ndarray:
        """The classes a classifier predicts for the examples at `idx` of `split` (read as
        evaluation reads them: scaled and normalised, never augmented)."""
        self.model.eval()
        x, _ = self._batch(split, np.asarray(idx, dtype=np.int64))
        with self._autocast():
            logits = self.model(x)  # (B, classes)
        return logits.float().argmax(dim=-1).cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        xt = torch.as_tensor(x, device=self.torch_device)
        if xt.dtype == torch.uint8:  # images as stored: [0, 1] as training sees them
            xt = xt.float().mul_(_BYTE)
        return torch.sigmoid(self.model(xt).float()).cpu().numpy()

    @torch.no_grad()
    def generate_tokens(self, prompt: np.ndarray, n_new: int, *, temperature: float = 1.0,
                        top_k: int | None = None, seed: int = 0) -> np.ndarray:
        self.model.eval()
        g = torch.Generator(device=self.torch_device).manual_seed(seed)
        idx = torch.as_tensor(prompt.astype(np.int64), device=self.torch_device)[None, :]  # (1, T)
        out = self.model.generate(idx, n_new, temperature=temperature, top_k=top_k, generator=g)  # (1, T + n)
        return out[0, prompt.shape[0]:].cpu().numpy()

    def environment(self) -> dict:
        env = {"name": "torch", "torch": torch.__version__, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               "device": self.device, "precision": self.precision_label,
               "threads": {**self.thread_plan.as_dict(), "actual": torch.get_num_threads(),
                           "interop": torch.get_num_interop_threads()}}
        if self.world > 1:
            import torch.distributed as dist

            env["distributed"] = {"world_size": self.world, "rank": self.rank,
                                  "backend": str(dist.get_backend()), "engine": "torch.distributed (DDP)",
                                  "local_rank": distributed.local_rank()}
        if self.torch_device.type == "cuda":
            props = torch.cuda.get_device_properties(self.torch_device)
            env["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                          "memory_bytes": props.total_memory, "count": torch.cuda.device_count()}
        return env

    # -- threads and the facts bitwise resume depends on ------------------------------------------
    def _apply_threads(self, configured: int | None) -> None:
        """Set torch's intra-op (and, where still possible, inter-op) thread count from
        train.threads or the cores this process may use (airlab.train.threads)."""
        self.thread_plan = threads_module.plan_threads(configured)
        n = self.thread_plan.threads
        torch.set_num_threads(n)
        if torch.get_num_interop_threads() != n:
            try:
                torch.set_num_interop_threads(n)
            except RuntimeError:  # allowed once per process, before any inter-op work; it moves no number
                pass
        self.threads = torch.get_num_threads()

    def numerics_facts(self) -> dict:
        """What bitwise-exact resume depends on, as JSON: a checkpoint records it, a resume compares."""
        facts = {"backend": "torch", "torch": torch.__version__, "device": self.device,
                 "precision": self.precision_label,
                 "deterministic": bool(self.config.train.deterministic), "compile": bool(self.config.train.compile),
                 "optimizer_impl": self.optimizer_impl,
                 "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                 "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available(),
                 "parallel": _parallel_backend(), **threads_module.host_facts()}
        if self.world > 1:  # a resume under another world size is noticed as a change of numerics
            facts["world_size"] = self.world
        if self.torch_device.type == "cuda":
            facts.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                          "gpu": torch.cuda.get_device_name(self.torch_device),
                          "tf32": bool(torch.backends.cuda.matmul.allow_tf32)})
        return facts


# train.optimizer_impl -> the optimizer's keyword arguments (Adam, AdamW and SGD take all three)
_IMPL_KWARGS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}
# what `auto` picks per device type: fused on CPU, measured by scripts/bench_vs_tuned.py (optimizer.step()
# of the six shipped configs on 2 AVX-512 cores: x2.6 (RNN) to x4.0 (Transformer) over the for-loop; foreach
# within x1.2 of the for-loop); fused on CUDA, PyTorch's own guidance (not measured here); elsewhere (mps)
# the for-loop, torch's default there
_AUTO_IMPL = {"cpu": "fused", "cuda": "fused"}


def resolve_optimizer_impl(requested: str, device_type: str) -> str:
    """train.optimizer_impl ("auto", "fused", "foreach", "for_loop") on a device type -> the one used."""
    return _AUTO_IMPL.get(device_type, "for_loop") if requested == "auto" else requested


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process `rank`'s default generator in a run of several (rank 0: `seed`)."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank, 0xD15]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _TrainLoss(torch.nn.Module):
    """The model and its task's training loss as one module, for DistributedDataParallel:
    (x, y) -> (loss, {metric: tensor})."""

    def __init__(self, model, loss_fn, spec):
        super().__init__()
        self.model = model
        self._loss_fn = loss_fn
        self._spec = spec

    def forward(self, x, y):
        return self._loss_fn(self.model, x, y, spec=self._spec)


def _parallel_backend() -> str | None:
    """ATen's parallel backend ("OpenMP", "native thread pool", ...) from torch's build summary."""
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.split(":", 1)[1].strip()
    return None

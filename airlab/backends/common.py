"""The backend-neutral half of every backend, written once: the device-string grammar and its
errors, precision resolution, evaluation over a split, the memory estimate of the summary, the
out-of-memory micro-batch arithmetic and the training-metric accumulator with its checkpoint state.

Framework-free (DESIGN rule 2): nothing here imports a framework. A backend subclasses
`BackendCore` and supplies only primitives (the abstract methods at the end of the class: a
backend that lacks one cannot be built); the algorithms call them and never look inside a
tensor. Adding a backend means writing those primitives in its own folder
(airlab/backends/<name>/backend.py), nothing here.

What a backend supplies:

- devices: `_gpu_count()`, `_default_gpu()`, `_mps_available()`, `_cpu_only_build()`,
  `_framework()` and the words `gpu_noun`, `no_gpu_hint`, `mps_refusal` (for `resolve_device`);
- dtypes: `_gpu_bf16(index)` (for `resolve_precision`) and `PRECISION_LABELS` (how the backend
  has always named the precision in summaries, env.json and the numerics facts);
- forward passes: `_eval_scope()`, `_eval_forward(split, idx, number)` (evaluation) and
  `_probe_layers(probe)`, `_tensor_facts(x)`, `_param_facts()` (the summary);
- tensor -> host: `_to_host(rows)`, `_read_train_sums()`, `_write_train_sums(...)`;
- `_split_length(split)`: rows (or tokens) of a split, in either placement.

The hot path (train_step, and the on-device adds of the metric sums inside it) stays in each
backend: nothing here runs per step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable

import numpy as np

from airlab import faults as faults_module
from airlab.backends.base import LayerRow, ModelSummary, OutOfMemoryStep
from airlab.errors import ConfigError, EnvironmentProblem
from airlab.train import process as process_module

PRECISIONS = ("fp32", "bf16", "fp16")
PROBE = 2  # batch size of the summary's probing forward pass
_ADAM_STATES = 2  # first and second moments: state tensors per parameter


# -- the device grammar --------------------------------------------------------------------------


def resolve_device(requested: str, seen) -> tuple[str, int | None]:
    """`device:` of the config ("auto", "cpu", "cuda", "cuda:N", "mps") -> (kind, GPU index or None).

    `seen` supplies what the backend's framework sees: `_gpu_count()`, `_default_gpu()` (asked only
    when a GPU is visible), `_mps_available()`, `_cpu_only_build()`, `_framework()` ("torch 2.5.1"),
    and the words `gpu_noun` ("CUDA device", "GPU"), `no_gpu_hint`, `mps_refusal` (the hint when the
    backend does not run on mps at all; None when it may)."""
    if requested == "auto":
        if seen._gpu_count():
            return "cuda", seen._default_gpu()
        if seen.mps_refusal is None and seen._mps_available():
            return "mps", None
        return "cpu", None
    if requested.startswith("cuda"):
        count = seen._gpu_count()
        if not count:
            raise EnvironmentProblem(
                f"device: {requested} requested but {seen._framework()} sees no {seen.gpu_noun}"
                + (" (this is a CPU-only build)" if seen._cpu_only_build() else ""), hint=seen.no_gpu_hint)
        index = int(requested.split(":")[1]) if ":" in requested else seen._default_gpu()
        if index >= count:
            raise EnvironmentProblem(f"device: {requested} requested but only {count} {seen.gpu_noun}(s) are visible",
                                     hint="use cuda:0 or check CUDA_VISIBLE_DEVICES")
        return "cuda", index
    if requested == "mps":
        if seen.mps_refusal is not None:
            raise ConfigError(f"device: mps is not supported by the {seen.name} backend", hint=seen.mps_refusal)
        if not seen._mps_available():
            raise EnvironmentProblem("device: mps requested but MPS is not available", hint="use device: cpu")
        return "mps", None
    return "cpu", None


def device_name(kind: str, index: int | None) -> str:
    """airlab's name for a resolved device: "cpu", "mps", "cuda:0"."""
    return kind if index is None else f"{kind}:{index}"


# -- precision ----------------------------------------------------------------------------------


def resolve_precision(requested: str, kind: str, gpu_bf16: Callable[[], str | None],
                      cpu_bf16: Callable[[], bool] | None = None) -> str:
    """`train.precision` -> "fp32", "bf16" or "fp16" on a device of `kind` ("cpu", "cuda", "mps").

    `gpu_bf16()`, asked only on a GPU, is None where the GPU computes in bf16, else the words that
    name it in the error ("NVIDIA T4", "this GPU (compute capability 7.5)"). `cpu_bf16()`, asked
    only on a CPU, is True where the backend's bf16 kernels are faster than fp32 on this CPU (the
    backend's own rule, from measurement: BackendCore._cpu_bf16). "auto" takes bf16 on a GPU that
    has it and on such a CPU, fp32 everywhere else."""
    if requested == "auto":
        if kind == "cuda":
            return "bf16" if gpu_bf16() is None else "fp32"
        return "bf16" if kind == "cpu" and cpu_bf16 is not None and cpu_bf16() else "fp32"
    if requested == "fp32":
        return "fp32"
    if requested == "bf16":
        where = gpu_bf16() if kind == "cuda" else None
        if where is not None:
            raise ConfigError(f"train.precision: bf16 is not supported on {where}", hint="use precision: fp16 or fp32")
        if kind == "mps":
            raise ConfigError("train.precision: bf16 autocast is not supported on mps by this backend",
                              hint="use precision: fp32")
        return "bf16"
    if requested == "fp16":
        if kind != "cuda":
            raise ConfigError(f"train.precision: fp16 needs a CUDA device (this run is on {kind})",
                              hint="use precision: bf16 or fp32")
        return "fp16"
    raise ConfigError(f"train.precision: unknown precision {requested!r}")


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # instructions that compute in bf16 natively (not emulated)


def cpu_bf16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The CPU_BF16_FLAGS this CPU has, from /proc/cpuinfo's `flags` line (or the text given: a
    test's seam); () where the file is absent (not Linux) or unreadable."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return ()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            have = set(line.partition(":")[2].split())
            return tuple(f for f in CPU_BF16_FLAGS if f in have)
    return ()


# -- out of memory -------------------------------------------------------------------------------


def micro_batches(index: np.ndarray, grad_accum: int) -> list[np.ndarray]:
    """The batch at `index` in `grad_accum` micro-batches (sizes differing by one at most)."""
    return np.array_split(index, grad_accum) if grad_accum > 1 else [index]


def micro_batch(batch: int, grad_accum: int) -> int:
    """The largest micro-batch of a batch of `batch` examples in `grad_accum` parts."""
    return -(-batch // grad_accum)


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def out_of_memory(step: int | None, batch: int, grad_accum: int, error: BaseException) -> OutOfMemoryStep:
    """The OutOfMemoryStep a backend raises when a step of `batch` examples ran out of memory."""
    return OutOfMemoryStep(step, micro_batch(batch, grad_accum), first_line(error))


# -- the summary's memory estimate ---------------------------------------------------------------


def optimizer_states(train) -> int:
    """State tensors per parameter that `train.optimizer` keeps (SGD: the momentum buffer, if any)."""
    return {"adam": _ADAM_STATES, "adamw": _ADAM_STATES, "sgd": 1 if train.momentum > 0 else 0}[train.optimizer]


def estimate_train_bytes(param_bytes: int, act_bytes: int, config) -> int:
    """Parameters, gradients and optimizer state, plus the activations of one batch (twice: the
    backward pass keeps as much again), from the activations of a probing pass of PROBE examples."""
    states = optimizer_states(config.train)
    return int(param_bytes * (2 + states) + act_bytes * config.data.batch_size // PROBE * 2)


class LayerProbe:
    """What the summary's probing forward pass (PROBE examples) records: one row per layer, and
    the bytes of every layer's outputs. `tensor_facts(x)` is (dims, bytes) of a tensor, or None
    for anything else."""

    def __init__(self, tensor_facts: Callable[[Any], tuple[list[int], int] | None]):
        self.tensor_facts = tensor_facts
        self.rows: list[LayerRow] = []
        self.act_bytes = 0

    def shape(self, out) -> str:
        """"(B, 16, 28, 28)": the probe's batch dimension as B; tuples of outputs comma-separated."""
        if isinstance(out, (tuple, list)):
            return ", ".join(self.shape(o) for o in out)
        facts = self.tensor_facts(out)
        if facts is None:
            return "-"
        dims = facts[0]
        return "(" + ", ".join(["B", *map(str, dims[1:])] if dims and dims[0] == PROBE else map(str, dims)) + ")"

    def record(self, name: str, kind: str, out, params: int) -> None:
        self.rows.append(LayerRow(name, kind, self.shape(out), params))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            facts = self.tensor_facts(o)
            if facts is not None:
                self.act_bytes += facts[1]


# -- evaluation ----------------------------------------------------------------------------------


def eval_batch_size(data) -> int:
    return data.eval_batch_size or 4 * data.batch_size


def eval_starts(task, length: int, context: int | None) -> np.ndarray:
    """What evaluation visits: every row, or windows of context + 1 tokens every `context` tokens."""
    if task.batches == "windows":
        return np.arange(0, length - context - 1, context, dtype=np.int64)
    return np.arange(length, dtype=np.int64)


def weighted_means(keys: list[str], table: np.ndarray, counts: Iterable[int]) -> dict[str, float]:
    """Means per example from per-batch means (`table`: batches x metrics, float32 values) and the
    batch sizes: each mean times its batch size in float32, summed in float32 in batch order (as a
    device would sum them), divided by the example count in float64. So an accuracy of k of N
    examples comes out as exactly k / N."""
    counts = list(counts)
    sums = np.zeros(len(keys), dtype=np.float32)
    for row, n in zip(np.asarray(table, dtype=np.float32), counts):
        sums = sums + row * np.float32(n)
    total = sum(counts)
    return {k: float(v) / total for k, v in zip(keys, sums)}


# -- where the data lives: the fast path or streaming ------------------------------------------

FIT_FRACTION = 0.5  # the fast path when every split takes at most this share of the free memory


def choose_placement(requested: str, data_bytes: int, free_bytes: int | None, where: str) -> tuple[str, str]:
    """("device" | "stream", why) for `data.placement`. auto: the fast path (every split on the
    device, batches gathered there) when the data takes at most FIT_FRACTION of the memory free
    on the device (`free_bytes`; None: unknown, then the fast path), else streaming (batches
    gathered on the host from the memory-mapped cache and prefetched)."""
    from airlab.config.resources import human_bytes  # (the config package: imported when asked)

    if requested in ("device", "stream"):
        return requested, f"data.placement: {requested} ({human_bytes(data_bytes)} of data)"
    if free_bytes is None:
        return "device", f"{human_bytes(data_bytes)} of data; the free memory of {where} is unknown"
    verdict = "fits in" if data_bytes <= FIT_FRACTION * free_bytes else "does not fit in"
    mode = "device" if verdict == "fits in" else "stream"
    return mode, f"{human_bytes(data_bytes)} of data {verdict} {FIT_FRACTION:.0%} of the {human_bytes(free_bytes)} free on {where}"


# -- the base class ------------------------------------------------------------------------------


class BackendCore(ABC):
    """The backend-neutral members of the Backend protocol (airlab.backends.base.Backend).

    A subclass sets `name`, calls `BackendCore.__init__` first, then `_place()` (device and
    precision, through resolve_device and resolve_precision) once it may ask its framework, and
    implements the primitives."""

    name: str
    device: str
    precision: str  # "fp32" | "bf16" | "fp16"
    gpu_noun = "GPU"  # "sees no GPU", "only 1 GPU(s) are visible"
    no_gpu_hint: str | None = None
    mps_refusal: str | None = None  # the hint when this backend never runs on mps; None: it may
    PRECISION_LABELS = {p: p for p in PRECISIONS}  # how the backend names each precision
    local_replicas = 1  # devices this process splits its share of a batch among (tf.distribute's replicas)
    order = None  # airlab.train.order.BatchOrder: the run loop's batches (set_order); None outside a run
    placement = "device"  # "device": the fast path; "stream": host gather + prefetch (choose_placement)
    placement_reason = ""

    def __init__(self, config, dataset, task, *, training: bool = True) -> None:
        self.config, self.dataset, self.task = config, dataset, task
        self.spec = config.model
        self.faults = faults_module.NONE  # the run loop sets the faults of AIRLAB_FAULT
        # the process role (airlab.train.process): the run loop sets a Group in a run of several
        # processes; evaluation is then shared among them and the in-step decisions taken together
        self.process = process_module.Local()
        self.grad_accum = config.train.grad_accum  # micro-batches per step; the run loop raises it on OOM
        self._context = getattr(self.spec, "context_length", None)

    def _place(self) -> tuple[str, int | None]:
        """Resolve `device` and `train.precision` (setting self.device and self.precision);
        returns the device's (kind, GPU index)."""
        kind, index = resolve_device(self.config.device, self)
        self.device = device_name(kind, index)
        self.precision = resolve_precision(self.config.train.precision, self._precision_kind(kind, index),
                                           lambda: self._gpu_bf16(index), self._cpu_bf16)
        return kind, index

    def close(self) -> None:
        """Nothing ties a backend of one process to others; a backend that runs across processes
        lets go of it here (airlab/backends/base.py)."""

    # -- data: placement, augmentation, the batches to come ------------------------------------
    def _choose_placement(self, where: str) -> str:
        """Set and return self.placement ("device" | "stream") from data.placement and the data's
        size against `_memory_free()`; self.placement_reason says why (for the log and env.json)."""
        self.placement, self.placement_reason = choose_placement(
            self.config.data.placement, self.dataset.nbytes, self._memory_free(), where)
        return self.placement

    def _memory_free(self) -> int | None:
        """Bytes free on this backend's device (None: unknown). A backend overrides it."""
        return None

    def set_order(self, order) -> None:
        """The run loop's BatchOrder: which examples each step trains on (the streaming path
        prefetches them; augmentation reads each step's epoch)."""
        self.order = order

    def epoch_of(self, step: int | None) -> int:
        """The epoch of `step` (1-based, as train_step receives it); 0 outside a run."""
        if self.order is None or not step:
            return 0
        return self.order.epoch_of(step - 1)

    @property
    def augment(self):
        """data.augment when it changes the images (random crop, flip), else None."""
        from airlab.data import augment as augment_module

        a = self.config.data.augment
        return a if augment_module.active(a) else None

    def augment_grid(self, index: np.ndarray, step: int | None, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows (B, H) and columns (B, W) of the zero-padded images that the augmented training
        images at `index` read (airlab.data.augment): a pure function of (seed, epoch, index)."""
        from airlab.data import augment as augment_module

        a = self.augment
        dy, dx, fl = augment_module.params(self.config.seed, self.epoch_of(step), index,
                                           crop=a.random_crop, flip=a.horizontal_flip)
        return augment_module.source_grid(dy, dx, fl, h, w, a.random_crop)

    @property
    def precision_label(self) -> str:
        return self.PRECISION_LABELS[self.precision]

    # -- training metrics: running sums on the device, read once per log line ------------------
    def pop_train_metrics(self) -> dict[str, float]:
        count, sums, _ = self._read_train_sums()
        if not count:
            return {}
        self._write_train_sums(0, {}, {})
        return {k: v / count for k, v in sums.items()}

    def train_metrics_state(self) -> dict:
        count, sums, dtypes = self._read_train_sums()
        if not count:
            return {"count": 0, "sums": {}, "dtypes": {}}
        return {"count": count, "sums": sums, "dtypes": dtypes}

    def restore_train_metrics(self, state: dict) -> None:
        """Continue the sums of train_metrics_state; a state without dtypes (an earlier airlab's)
        holds float32 sums."""
        count = int(state.get("count") or 0)
        sums = {str(k): float(v) for k, v in state["sums"].items()} if count else {}
        dtypes = state.get("dtypes") or {}
        self._write_train_sums(count, sums, {k: str(dtypes.get(k, "float32")) for k in sums})

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, split: str) -> dict[str, float]:
        """Task metrics over a whole split. In a run of several processes each evaluates the
        batches whose number is its rank modulo the world size; their per-batch means are then
        summed into one table (zeros elsewhere: exact) and reduced in batch order, so the figures
        equal the one-process figures to the last bit."""
        starts = eval_starts(self.task, self._split_length(split), self._context)
        bs = eval_batch_size(self.config.data)
        batches = [starts[i:i + bs] for i in range(0, len(starts), bs)]
        role = self.process
        mine = [number for number in range(len(batches)) if number % role.world_size == role.rank]
        with self._eval_scope():
            outs = [self._eval_forward(split, batches[number], number) for number in mine]
        if not batches:
            return {}
        if role.world_size == 1:
            keys = list(outs[0])
            table = self._to_host([[out[k] for k in keys] for out in outs])  # one device sync
        else:
            keys = role.agree(list(outs[0]) if outs else None)  # the main process has batch 0
            table = np.zeros((len(batches), len(keys)), dtype=np.float64)
            if outs:
                table[mine] = self._to_host([[out[k] for k in keys] for out in outs])
            table = np.asarray(role.sum(table.ravel().tolist()), dtype=np.float64).reshape(table.shape)
        return self.task.finish(weighted_means(keys, table, map(len, batches)))

    # -- summary ------------------------------------------------------------------------------
    def summary(self) -> ModelSummary:
        probe = LayerProbe(self._tensor_facts)
        self._probe_layers(probe)
        params, trainable, param_bytes = self._param_facts()
        return ModelSummary(layers=probe.rows, params=params, trainable=trainable, param_bytes=param_bytes,
                            est_train_bytes=estimate_train_bytes(param_bytes, probe.act_bytes, self.config),
                            device=self.device, precision=self.precision_label)

    # -- primitives: what each backend supplies (a backend that lacks one cannot be built) ----
    @abstractmethod
    def _framework(self) -> str:
        """The framework and its version, for messages: "torch 2.5.1"."""

    @abstractmethod
    def _gpu_count(self) -> int:
        """CUDA GPUs the framework sees (0 without CUDA)."""

    @abstractmethod
    def _default_gpu(self) -> int:
        """The GPU that "cuda" and "auto" mean (asked only when one is visible)."""

    def _mps_available(self) -> bool:
        """Whether Apple's GPU (MPS) can run this backend's kernels here."""
        return False

    @abstractmethod
    def _cpu_only_build(self) -> bool:
        """Whether the framework was built without CUDA (the no-GPU error says so)."""

    def _precision_kind(self, kind: str, index: int | None) -> str:
        """The device kind precision is resolved for (the device's own, unless a backend says otherwise)."""
        return kind

    def _cpu_bf16(self) -> bool:
        """Whether precision: auto takes bf16 on this CPU: only where the backend measured its bf16
        kernels faster here (a backend overrides it; by default fp32)."""
        return False

    @abstractmethod
    def _gpu_bf16(self, index: int) -> str | None:
        """None where GPU `index` computes in bf16, else the words that name it in the refusal."""

    @abstractmethod
    def _split_length(self, split: str) -> int:
        """Rows (or tokens, for windows) of a split, in either placement (device or stream)."""

    @abstractmethod
    def _eval_scope(self) -> AbstractContextManager:
        """Where every evaluation batch runs (no gradients, eval mode, device, evaluation RNG)."""

    @abstractmethod
    def _eval_forward(self, split: str, idx: np.ndarray, number: int) -> dict:
        """The evaluation loss's metrics (per-batch means, on the device) of the batch at `idx`;
        `number` counts the batches of this evaluation from 0 (it seeds the VAE's noise)."""

    @abstractmethod
    def _to_host(self, rows: list[list]) -> np.ndarray:
        """Float32 scalars on the device (rows x columns) -> a numpy array, in one device sync."""

    @abstractmethod
    def _read_train_sums(self) -> tuple[int, dict[str, float], dict[str, str]]:
        """(steps counted, {metric: running sum as an exact Python float}, {metric: dtype name})
        in one device sync; (0, {}, {}) when nothing has been counted."""

    @abstractmethod
    def _write_train_sums(self, count: int, sums: dict[str, float], dtypes: dict[str, str]) -> None:
        """Set the running sums (count 0 and empty dicts: start afresh)."""

    @abstractmethod
    def _probe_layers(self, probe: LayerProbe) -> None:
        """One forward pass of PROBE training examples in eval mode, `probe.record`-ing each layer."""

    @abstractmethod
    def _tensor_facts(self, x) -> tuple[list[int], int] | None:
        """(dims, bytes) of a tensor; None for anything else."""

    @abstractmethod
    def _param_facts(self) -> tuple[int, int, int]:
        """(parameters, trainable parameters, bytes of all weights) for the summary."""

"""TensorFlow across devices and hosts: tf.distribute's strategies, chosen from the environment.

- **One process, N replicas** (`airlab train CONFIG --nproc N`, which sets AIRLAB_REPLICAS=N):
  `tf.distribute.MirroredStrategy` over N local devices: N GPUs (device `cuda`/`cuda:K`: GPUs
  K .. K+N-1; `auto`: GPUs 0 .. N-1 when at least N are visible) or, on the CPU, N *logical* CPU
  devices carved out of the one physical CPU before TensorFlow's runtime starts. Gradients are
  summed by NCCL on GPUs, through the first device on the CPU (ReductionToOneDevice).
- **Several processes** (a TF_CONFIG that names more than one worker, as Kubernetes' TFJob and
  every tf.distribute launcher set it): `tf.distribute.MultiWorkerMirroredStrategy`, created
  before any other TensorFlow operation, over every visible GPU of each worker (NCCL) or its CPU
  (RING). The chief (or worker 0 when there is no chief) is the main process, rank 0; the run
  loop's shared decisions travel through `StrategyCollective`, built on the strategy's own
  all-gather (float64 tensors; bytes as one number each: no pickle, no socket of airlab's own).
  Every collective has a timeout (AIRLAB_DIST_TIMEOUT seconds, 300 by default), and the
  strategy's peer health check aborts a collective whose peer died: the survivors stop with
  ProcessLost, never hang.

Without either (AIRLAB_REPLICAS unset or 1, no TF_CONFIG of several workers) there is no
strategy: the backend's one-device code path, unchanged.

`data.batch_size` is the global batch in both cases: replica r of R takes rows
[r * B / R, (r + 1) * B / R) of every batch, and a batch that does not divide is a config error.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import tensorflow as tf

from airlab.errors import ConfigError, EnvironmentProblem, ProcessLost, UsageError
from airlab.train.process import collective_timeout_s

REPLICAS_ENV = "AIRLAB_REPLICAS"
timeout_s = collective_timeout_s  # AIRLAB_DIST_TIMEOUT, as on every backend (airlab.train.process)


# -- what the environment asks for -----------------------------------------------------------------


def requested_replicas(env=None) -> int:
    """AIRLAB_REPLICAS (set by `airlab train --nproc N`): replicas in this process; 1 when unset."""
    raw = (os.environ if env is None else env).get(REPLICAS_ENV, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{REPLICAS_ENV}={raw!r}: expected a whole number of replicas, 1 or more",
                         hint="set it through `airlab train CONFIG --nproc N`, or unset it")
    return int(raw)


@dataclass(frozen=True)
class Cluster:
    """This process's place in a TF_CONFIG of several workers."""

    task_type: str  # "chief" or "worker"
    task_index: int
    rank: int  # the chief is 0; workers follow in index order
    world_size: int  # chief + workers


def cluster(env=None) -> Cluster | None:
    """The multi-worker cluster TF_CONFIG describes, or None (unset, or one worker only)."""
    raw = (os.environ if env is None else env).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
        spec, task = parsed.get("cluster") or {}, parsed.get("task") or {}
        chiefs, workers = list(spec.get("chief") or []), list(spec.get("worker") or [])
        task_type, task_index = str(task.get("type", "")), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as e:
        raise EnvironmentProblem(f"TF_CONFIG: cannot read it as a tf.distribute cluster ({type(e).__name__}: {e})",
                                 hint='expected {"cluster": {"worker": ["host:port", ...]}, "task": '
                                      '{"type": "worker", "index": 0}}') from None
    world = len(chiefs) + len(workers)
    if world <= 1:
        return None
    if task_type not in ("chief", "worker"):
        raise EnvironmentProblem(f"TF_CONFIG: task type {task_type!r} does not train",
                                 hint="airlab train runs as the chief or a worker (MultiWorkerMirroredStrategy)")
    members = chiefs if task_type == "chief" else workers
    if not 0 <= task_index < len(members):
        raise EnvironmentProblem(f"TF_CONFIG: task {task_type} {task_index} is not in the cluster "
                                 f"({len(members)} {task_type}(s))")
    rank = task_index if task_type == "chief" else len(chiefs) + task_index
    return Cluster(task_type, task_index, rank, world)


def wanted(env=None) -> bool:
    """Whether the environment asks for a strategy at all (read without touching TensorFlow)."""
    return requested_replicas(env) > 1 or cluster(env) is not None


# -- the strategy of this process -------------------------------------------------------------------


@dataclass
class Placement:
    """The strategy this process trains under, and where its replicas are."""

    strategy: tf.distribute.Strategy
    kind: str  # "mirrored" (one process) or "multi_worker"
    devices: tuple[str, ...]  # this process's replica devices
    replicas: int  # replicas in sync over every process
    rank: int = 0
    world_size: int = 1
    collective: "StrategyCollective | None" = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return "MultiWorkerMirroredStrategy" if self.kind == "multi_worker" else "MirroredStrategy"

    @property
    def host(self) -> str:
        """This process's CPU, where the data lies under a strategy (each replica gathers its rows there)."""
        prefix = self.devices[0].rsplit("/device:", 1)[0]
        return f"{prefix}/device:CPU:0"

    def check(self, config) -> None:
        check_config(config, self.replicas)


_PLACEMENTS: dict[tuple, Placement] = {}  # one strategy per process and request: TensorFlow allows one cluster


def check_config(config, replicas: int) -> None:
    """ConfigError unless `config` trains on `replicas`: the global batch splits evenly among them
    (and each share into train.grad_accum micro-batches), and no XLA."""
    batch, accum = config.data.batch_size, config.train.grad_accum
    if batch % replicas:
        raise ConfigError(f"data.batch_size: {batch} does not divide among {replicas} replicas (the batch is the "
                          "global batch, split equally among them)",
                          hint=f"use a multiple of {replicas}, e.g. data.batch_size="
                               f"{batch - batch % replicas or replicas}, or another replica count (--nproc)")
    if accum > batch // replicas:
        raise ConfigError(f"train.grad_accum: {accum} micro-batches cannot split each replica's share of "
                          f"{batch // replicas} examples (data.batch_size {batch} over {replicas} replicas)")
    if config.train.compile:
        raise ConfigError(f"train.compile: XLA is not used with {replicas} replicas of tf.distribute",
                          hint="set train.compile: false (or train on one replica)")


def placement(config) -> Placement | None:
    """This process's strategy for `config` (created once per process, before the runtime starts
    where that matters), or None without one. Thread counts must be set before this is called."""
    replicas = requested_replicas()
    where = cluster()
    if where is not None:
        if replicas > 1:
            raise UsageError(f"{REPLICAS_ENV}={replicas} (--nproc) with a TF_CONFIG of {where.world_size} workers: "
                             "MultiWorkerMirroredStrategy already uses every visible GPU of each worker",
                             hint="leave out --nproc (choose each worker's GPUs with CUDA_VISIBLE_DEVICES)")
        found = _PLACEMENTS.get(("multi_worker",))
        if found is None:
            found = _PLACEMENTS[("multi_worker",)] = _multi_worker(config, where)
        found.check(config)
        return found
    if replicas == 1:
        return None
    devices = _local_devices(config, replicas)
    key = ("mirrored", devices)
    found = _PLACEMENTS.get(key)
    if found is None:
        if devices[0].startswith("/device:CPU"):  # one host memory: sum through the first device
            ops = tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0])
        else:
            ops = None  # NCCL all-reduce between GPUs
        found = _PLACEMENTS[key] = Placement(tf.distribute.MirroredStrategy(list(devices), cross_device_ops=ops),
                                             "mirrored", devices, replicas)
    found.check(config)
    return found


def _local_devices(config, n: int) -> tuple[str, ...]:
    """N devices of this machine for the config's `device`: GPUs, or N logical CPU devices."""
    device = str(config.device)
    gpus = tf.config.list_physical_devices("GPU")
    if device.startswith("cuda") or (device == "auto" and gpus):
        first = int(device.split(":")[1]) if ":" in device else 0
        if first + n > len(gpus):
            where = f"GPUs {first}..{first + n - 1}" if n > 1 else f"GPU {first}"
            raise EnvironmentProblem(
                f"{n} replicas on device: {device} need {where}, but TensorFlow sees {len(gpus)} GPU(s)",
                hint=f"use --nproc {max(len(gpus) - first, 1)} or device: cpu (replicas on logical CPU devices)")
        return tuple(f"/device:GPU:{i}" for i in range(first, first + n))
    return _logical_cpus(n)


def _logical_cpus(n: int) -> tuple[str, ...]:
    """N logical CPU devices over the physical CPU. TensorFlow takes the split only before its
    runtime starts; a runtime already started with fewer devices cannot provide them."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu) or []
    if len(configured) < n:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError:  # "Virtual devices cannot be modified after being initialized"
            pass
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(names) < n:
        raise EnvironmentProblem(
            f"{n} replicas on the CPU need {n} logical CPU devices, but TensorFlow had already started in this "
            f"process with {len(names)}",
            hint=f"start a fresh process (airlab train ... --nproc {n} does), so that the CPU is split before "
                 "TensorFlow starts")
    return tuple(names[:n])


def _multi_worker(config, where: Cluster) -> Placement:
    """MultiWorkerMirroredStrategy from TF_CONFIG (before any other TensorFlow operation)."""
    if str(config.device) == "cpu":
        try:  # device: cpu on a machine with GPUs: the strategy would take them all
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass
    gpus = tf.config.list_physical_devices("GPU") if str(config.device) != "cpu" else []
    impl = tf.distribute.experimental.CommunicationImplementation
    options = tf.distribute.experimental.CommunicationOptions(implementation=impl.NCCL if gpus else impl.RING,
                                                              timeout_seconds=timeout_s())
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise EnvironmentProblem(f"TF_CONFIG: cannot start MultiWorkerMirroredStrategy ({_first_line(e)})",
                                 hint="check TF_CONFIG's addresses, and that this is the process's first use of "
                                      "TensorFlow") from None
    devices = tuple(strategy.extended.worker_devices)
    found = Placement(strategy, "multi_worker", devices, int(strategy.num_replicas_in_sync), where.rank,
                      where.world_size)
    found.collective = StrategyCollective(strategy, where.rank, where.world_size)
    found.collective.check_ranks()
    return found


def collective(config) -> "StrategyCollective | None":
    """This process's collective in a run of several processes (TF_CONFIG), else None: replicas
    of MirroredStrategy are one process, and need none. Checks the config against the replicas."""
    found = placement(config)
    return None if found is None else found.collective


# -- the collective the run loop's decisions travel through ------------------------------------------


_NOISE = ("Graph execution error", "Detected at node", "File ", "Additional GRPC", ":UNKNOWN", "[[", "The error could")


def _first_line(e: BaseException) -> str:
    """The line of an error that says what happened (TensorFlow's graph errors open with where)."""
    text = getattr(e, "message", None) or str(e)
    lines = [line.strip() for line in str(text).splitlines()]
    cause = next((line for line in lines if line and not line.startswith(_NOISE)), lines[0] if lines else "")
    return f"{type(e).__name__}: {cause}"[:300]


_LOST = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
         tf.errors.AbortedError)


def is_lost(e: BaseException) -> bool:
    """Whether a TensorFlow error means a peer of the collective died or hung."""
    return isinstance(e, _LOST) or (isinstance(e, tf.errors.OpError) and "Collective ops is aborted" in str(e))


def lost(e: BaseException, what: str) -> ProcessLost:
    return ProcessLost(f"another process of the run stopped answering during {what} ({_first_line(e)})")


class StrategyCollective:
    """airlab.train.process.Collective over MultiWorkerMirroredStrategy: every call is one or two
    all-gathers of float64 rows among the replicas (the first replica of each process speaks for
    it), reduced in rank order on every process alike."""

    def __init__(self, strategy: tf.distribute.Strategy, rank: int, world_size: int):
        self.strategy, self.rank, self.world_size = strategy, int(rank), int(world_size)
        local = len(strategy.extended.worker_devices)

        def rows(row):  # (n,) on every process -> (world_size, n), row p from process p
            def replica(r):
                return tf.distribute.get_replica_context().all_gather(r[None], axis=0)

            gathered = strategy.run(replica, args=(row,))
            return strategy.experimental_local_results(gathered)[0][::local]

        self._rows_fn = tf.function(rows, input_signature=[tf.TensorSpec([None], tf.float64)])

    def _rows(self, values, what: str) -> np.ndarray:
        try:
            return self._rows_fn(tf.constant(np.asarray(values, dtype=np.float64).reshape(-1))).numpy()
        except tf.errors.OpError as e:
            raise lost(e, what) from None

    def check_ranks(self) -> None:
        """The strategy numbers its replicas process by process: rank p's row must come p-th."""
        order = self._rows([self.rank], "the start of the run")[:, 0].astype(int).tolist()
        if order != list(range(self.world_size)):
            raise EnvironmentProblem(f"TF_CONFIG: the workers' ranks {order} are not 0..{self.world_size - 1} in order",
                                     hint="give every worker the same TF_CONFIG cluster, with its own task index")

    def all_reduce(self, values: Sequence[float], op: str) -> list[float]:
        rows = self._rows([float(v) for v in values], "a shared decision")
        reduce = {"sum": np.sum, "max": np.max, "min": np.min}[op]
        return [float(v) for v in reduce(rows, axis=0)]

    def broadcast(self, data: bytes) -> bytes:
        what = "a broadcast from the main process"
        size = int(self._rows([len(data) if self.rank == 0 else 0], what)[0, 0])
        if size == 0:
            return b""
        payload = np.frombuffer(data, np.uint8) if self.rank == 0 else np.zeros(size, np.uint8)
        return self._rows(payload, what)[0].astype(np.uint8).tobytes()

    def gather(self, data: bytes) -> list[bytes] | None:
        """Every process's bytes, in rank order, on the main process (None elsewhere)."""
        what = "a gather of every process's state"
        sizes = self._rows([len(data)], what)[:, 0].astype(int).tolist()
        longest = max(sizes)
        if longest == 0:
            return [b""] * self.world_size if self.rank == 0 else None
        payload = np.zeros(longest, np.uint8)
        payload[:len(data)] = np.frombuffer(data, np.uint8)
        rows = self._rows(payload, what)
        if self.rank != 0:
            return None
        return [rows[p, :n].astype(np.uint8).tobytes() for p, n in enumerate(sizes)]

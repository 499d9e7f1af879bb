"""TensorFlow side of `airlab bench`: devices, matmul and copy workloads for the framework-free harness.

The same figures as the torch side (airlab/backends/torch/bench.py) within what TensorFlow exposes:

- CPU: eager CPU ops run synchronously (oneDNN kernels), so the host clock times them.
- GPU: TensorFlow's Python API has no CUDA events. A GPU workload is timed on the host clock around
  back-to-back iterations, every device synchronized (`tf.test.experimental.sync_devices`) before
  each reading, with windows of at least GPU_MIN_WINDOW_S so the synchronize is amortized. The L2
  is therefore not flushed between iterations; each such figure carries a note saying so.
- fp32 is true fp32 (TensorFloat-32 off), tf32 turns it on for the workload's lifetime only.
- Copies: `DeepCopy` into a fresh buffer. TensorFlow has no in-place copy (a variable's assign may
  alias its input instead of copying), so the figure includes the allocation of the output.
  Host<->device transfers and the all-reduce are left to the torch side: TensorFlow picks pinned or
  pageable staging itself, and its all-reduce needs a tf.distribute strategy.
- GPUs allocate on demand (memory growth), so TensorFlow does not take the whole GPU away from the
  torch figures measured in the same run.

Data are random normal (stateless, seeded), never zeros. Device ids are airlab's: "cpu", "cuda:N"
(TensorFlow's "/GPU:N").
"""

from __future__ import annotations

import os
import time

import airlab.backends.tensorflow  # noqa: F401  (imports TensorFlow quietly, Keras on TensorFlow)
import tensorflow as tf

from airlab.bench.harness import WallClock
from airlab.errors import EnvironmentProblem

DTYPES = {"fp32": tf.float32, "tf32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}
GPU_MIN_WINDOW_S = 0.02
GPU_TIMING_NOTE = ("tensorflow on a GPU: host clock around back-to-back iterations with the devices synchronized "
                   "(TensorFlow has no CUDA events); the L2 is not flushed between iterations")
COPY_NOTE = "tensorflow DeepCopy into a freshly allocated buffer (TensorFlow has no in-place copy)"


def gpu_matmul_dtypes(capability: tuple[int, int] | None) -> list[str]:
    """What TensorFlow multiplies natively on a GPU of this compute capability."""
    major = capability[0] if capability else 0
    dtypes = ["fp32"]
    if major >= 8:  # Ampere and later: TensorFloat-32 and bf16 tensor cores
        dtypes += ["tf32", "bf16"]
    return dtypes + ["fp16"]


def tf_device(device: str) -> str:
    """airlab's device id -> TensorFlow's device string."""
    if device == "cpu":
        return "/CPU:0"
    if device.startswith("cuda:") and device[5:].isdigit():
        return f"/GPU:{int(device[5:])}"
    raise EnvironmentProblem(f"{device}: not a device the tensorflow bench knows", hint="use cpu or cuda:N")


def _random(shape, dtype, seed: int, stream: int) -> tf.Tensor:
    return tf.cast(tf.random.stateless_normal(shape, seed=[seed, stream], dtype=tf.float32), dtype)


class _Workload:
    def __init__(self, device: str, run, tensors: list, tf32: bool | None = None, notes: tuple[str, ...] = ()):
        self.run = run
        self._tensors = tensors
        self._tf32_before = None
        if tf32 is not None:
            self._tf32_before = tf.config.experimental.tensor_float_32_execution_enabled()
            tf.config.experimental.enable_tensor_float_32_execution(tf32)
        gpu = device.startswith("/GPU")
        self.clock = WallClock(tf.test.experimental.sync_devices if gpu else (lambda: None))
        self.flush = None
        self.min_window_s = GPU_MIN_WINDOW_S if gpu else None  # None: the plan's CPU window
        self.notes = ((GPU_TIMING_NOTE,) if gpu else ()) + notes

    def close(self) -> None:
        if self._tf32_before is not None:
            tf.config.experimental.enable_tensor_float_32_execution(self._tf32_before)
        self._tensors.clear()
        self.run = None


class TensorFlowBench:
    name = "tensorflow"

    def __init__(self):
        self._devices = None

    # -- facts ---------------------------------------------------------------------------------
    @staticmethod
    def _threads() -> int | None:
        n = tf.config.threading.get_intra_op_parallelism_threads()
        return n or None  # 0: TensorFlow's default, one per usable core

    def environment(self) -> dict:
        build = tf.sysconfig.get_build_info()
        return {"framework": "tensorflow", "version": tf.__version__, "cuda": build.get("cuda_version"),
                "cudnn": build.get("cudnn_version"), "threads": self._threads() or len(os.sched_getaffinity(0)),
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86)")}

    def devices(self) -> list[dict]:
        if self._devices is not None:
            return self._devices
        out = [{"id": "cpu", "kind": "cpu", "index": None, "threads": self._threads()}]
        for i, gpu in enumerate(tf.config.list_physical_devices("GPU")):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialized by an earlier use in this process
                pass
            details = tf.config.experimental.get_device_details(gpu)
            cc = details.get("compute_capability")
            out.append({"id": f"cuda:{i}", "kind": "gpu", "index": i, "name": details.get("device_name", gpu.name),
                        "capability": f"{cc[0]}.{cc[1]}" if cc else None})
        self._devices = out
        return out

    def _capability(self, device: str) -> tuple[int, int] | None:
        found = next((d for d in self.devices() if d["id"] == device), None)
        if found is None:
            gpus = sum(d["kind"] == "gpu" for d in self.devices())
            raise EnvironmentProblem(f"{device}: tensorflow {tf.__version__} sees {gpus} GPU(s)",
                                     hint="use --device cpu, or check CUDA_VISIBLE_DEVICES")
        cc = found.get("capability")
        return tuple(int(x) for x in cc.split(".")) if cc else None

    def matmul_dtypes(self, device: str) -> list[str]:
        if device == "cpu":
            return ["fp32", "bf16"]
        return gpu_matmul_dtypes(self._capability(device))

    # -- workloads -----------------------------------------------------------------------------
    def matmul(self, device: str, dtype: str, m: int, n: int, k: int, seed: int) -> _Workload:
        if dtype not in DTYPES:
            raise ValueError(f"the tensorflow bench has no {dtype} matmul")
        self.matmul_dtypes(device)  # an unknown device is an error here, not at the first run
        dev = tf_device(device)
        with tf.device(dev):
            a = _random((m, k), DTYPES[dtype], seed, 0)
            b = _random((k, n), DTYPES[dtype], seed, 1)
        tensors = [a, b]

        def run():
            with tf.device(dev):
                tensors[2:] = [tf.linalg.matmul(a, b)]  # kept until the next product: checkable

        tf32 = {"fp32": False, "tf32": True}.get(dtype)
        return _Workload(dev, run, tensors, tf32=tf32)

    def copy_kinds(self, device: str) -> list[str]:
        return ["cpu"] if device == "cpu" else ["d2d"]

    def copy(self, device: str, kind: str, nbytes: int, seed: int) -> _Workload:
        if kind not in self.copy_kinds(device):
            raise ValueError(f"the tensorflow bench has no {kind} copy on {device}")
        dev = tf_device(device)
        with tf.device(dev):
            src = _random((max(1, nbytes // 4),), tf.float32, seed, 2)

        tensors = [src]

        def run():
            with tf.device(dev):
                tensors[1:] = [tf.raw_ops.DeepCopy(x=src)]  # kept until the next copy: checkable

        return _Workload(dev, run, tensors, notes=(COPY_NOTE,))

    def plain_matmul_seconds(self, device: str, dtype: str, m: int, n: int, k: int, *, iters: int,
                             rounds: int) -> list[float]:
        """What a user would write: tf.linalg.matmul in a loop, timed with perf_counter and one sync."""
        dev = tf_device(device)
        sync = tf.test.experimental.sync_devices if dev.startswith("/GPU") else (lambda: None)
        before = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(dtype == "tf32")
        try:
            with tf.device(dev):
                a = tf.cast(tf.random.normal((m, k)), DTYPES[dtype])
                b = tf.cast(tf.random.normal((k, n)), DTYPES[dtype])
                tf.linalg.matmul(a, b)
                sync()
                out = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        tf.linalg.matmul(a, b)
                    sync()
                    out.append((time.perf_counter() - t0) / iters)
            return out
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(before)


def make() -> TensorFlowBench:
    return TensorFlowBench()

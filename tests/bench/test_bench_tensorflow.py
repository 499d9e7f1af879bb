"""The TensorFlow side of `airlab bench`, for real on the CPU; its GPU choices through pure functions.

The workloads must compute what they claim (the product of the right dtype on the right device),
leave TensorFloat-32 as they found it, and yield the same figures as the torch side under the
`tensorflow` backend name.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from bench_fakes import tiny_plan  # noqa: F401 (fixture)

pytest.importorskip("tensorflow", reason="the tensorflow backend is not installed")

import tensorflow as tf  # noqa: E402

from airlab.backends.tensorflow import bench as tfbench  # noqa: E402
from airlab.errors import EnvironmentProblem  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    return tfbench.make()


@pytest.mark.parametrize("cc, dtypes", [
    (None, ["fp32", "fp16"]),
    ((7, 0), ["fp32", "fp16"]),  # V100: no bf16 tensor cores, no TF32
    ((7, 5), ["fp32", "fp16"]),
    ((8, 0), ["fp32", "tf32", "bf16", "fp16"]),
    ((9, 0), ["fp32", "tf32", "bf16", "fp16"]),
    ((12, 0), ["fp32", "tf32", "bf16", "fp16"]),
])
def test_gpu_dtypes_follow_the_compute_capability(cc, dtypes):
    assert tfbench.gpu_matmul_dtypes(cc) == dtypes


def test_device_ids_map_to_tensorflow_devices():
    assert tfbench.tf_device("cpu") == "/CPU:0"
    assert tfbench.tf_device("cuda:3") == "/GPU:3"
    with pytest.raises(EnvironmentProblem, match="cuda:x"):
        tfbench.tf_device("cuda:x")


def test_this_machine_has_a_cpu_and_its_facts(bench):
    devices = bench.devices()
    assert devices[0]["id"] == "cpu" and devices[0]["kind"] == "cpu"
    assert bench.matmul_dtypes("cpu") == ["fp32", "bf16"] and bench.copy_kinds("cpu") == ["cpu"]
    env = bench.environment()
    assert env["framework"] == "tensorflow" and env["version"] == tf.__version__ and env["threads"] >= 1
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(EnvironmentProblem, match="sees 0 GPU"):
            bench.matmul("cuda:0", "fp32", 8, 8, 8, 0)


@pytest.mark.parametrize("dtype, tol", [("fp32", 1e-4), ("bf16", 3e-2)])
def test_the_matmul_workload_computes_the_product_in_its_dtype(bench, dtype, tol):
    wl = bench.matmul("cpu", dtype, 48, 40, 32, seed=3)
    a, b = wl._tensors[0], wl._tensors[1]
    assert a.shape == (48, 32) and b.shape == (32, 40) and a.dtype == tfbench.DTYPES[dtype]
    assert float(tf.math.reduce_std(tf.cast(a, tf.float32))) > 0.5  # random normal, not zeros
    wl.run()
    c = wl._tensors[2]
    assert c.dtype == a.dtype and "CPU" in c.device
    want = np.asarray(tf.cast(a, tf.float64)) @ np.asarray(tf.cast(b, tf.float64))
    got = np.asarray(tf.cast(c, tf.float64))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < tol
    assert wl.flush is None and wl.min_window_s is None and wl.notes == ()  # CPU: the plan's window
    wl.close()


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data(bench):
    one, two, other = (bench.matmul("cpu", "fp32", 8, 8, 8, seed=s) for s in (1, 1, 2))
    assert np.array_equal(one._tensors[0], two._tensors[0])
    assert not np.array_equal(one._tensors[0], other._tensors[0])
    for wl in (one, two, other):
        wl.close()


@pytest.mark.parametrize("dtype, during", [("fp32", False), ("tf32", True), ("bf16", None)])
def test_tensorfloat32_is_set_for_the_workload_and_restored(bench, dtype, during):
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        for start in (True, False):
            tf.config.experimental.enable_tensor_float_32_execution(start)
            wl = bench.matmul("cpu", dtype, 8, 8, 8, 0)  # tf32 is a GPU dtype; the switch is the same here
            assert tf.config.experimental.tensor_float_32_execution_enabled() == (start if during is None else during)
            wl.close()
            assert tf.config.experimental.tensor_float_32_execution_enabled() == start
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)


def test_the_copy_workload_copies(bench):
    wl = bench.copy("cpu", "cpu", 4096 * 4, seed=0)
    src = wl._tensors[0]
    assert src.shape == (4096,)
    wl.run()
    copied = wl._tensors[1]
    assert copied.shape == src.shape and "CPU" in copied.device
    assert np.array_equal(np.asarray(copied), np.asarray(src)) and float(tf.math.reduce_std(src)) > 0.5
    assert "DeepCopy" in wl.notes[0]
    with pytest.raises(ValueError, match="d2d"):
        bench.copy("cpu", "d2d", 1024, 0)
    wl.close()


def test_the_plain_loop_times_per_product(bench):
    t0 = time.perf_counter()
    seconds = bench.plain_matmul_seconds("cpu", "fp32", 64, 64, 64, iters=3, rounds=4)
    elapsed = time.perf_counter() - t0
    assert len(seconds) == 4 and all(s > 0 for s in seconds)
    assert 3 * sum(seconds) <= elapsed  # per product: 3 products a round, 4 rounds inside the call (load or not)


def test_a_tiny_tensorflow_bench_from_the_cli(airlab_cli, tiny_plan):
    r = airlab_cli("bench", "--backend", "tensorflow", "--device", "cpu", "--json", "--verify")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    figures = {f["id"]: f for f in data["figures"]}
    assert {"matmul/tensorflow/cpu/fp32", "matmul/tensorflow/cpu/bf16", "memory/tensorflow/cpu/cpu",
            "training/tensorflow/cpu/mlp"} <= set(figures)
    assert not [f for f in figures if "/torch/" in f]
    mm = figures["matmul/tensorflow/cpu/fp32"]
    assert mm["value"] > 0 and mm["peak"] and mm["verdict"] in {"ok", "low", "suspicious"}
    for row in mm["detail"]["shapes"]:
        assert row["plain"]["what"].startswith("plain tensorflow loop") and row["plain"]["value"] > 0
    assert any("DeepCopy" in n for n in figures["memory/tensorflow/cpu/cpu"]["notes"])
    assert data["backends"]["tensorflow"]["version"] == tf.__version__
    assert not [s for s in data["skipped"] if "tensorflow" in s["what"]], data["skipped"]

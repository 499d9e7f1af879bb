"""TensorFlow scaled out (issue 11, part 2): tf.distribute's MirroredStrategy over 2 logical CPU
devices in one process (AIRLAB_REPLICAS=2, what `airlab train --nproc 2` sets), and
MultiWorkerMirroredStrategy over 2 local worker processes from TF_CONFIG.

What is promised: the same config and global batch train to the one-device weights (max absolute
difference <= 1e-4 after 40 steps: only the order of the gradient sum differs; here dropout and
the VAE's noise too, since their draws are keyed to the global sample position) and to the same
val/test metrics (to 1e-5); a batch that does not divide among the replicas is one line, exit 2;
a run killed under 2 replicas resumes bitwise; under MultiWorker only the chief writes.

TensorFlow splits the CPU into logical devices only before its runtime starts, and this test
process may have started it already: every training run here is a subprocess. All runs use one
thread (tests/conftest.py sets OMP_NUM_THREADS and TF_NUM_*_THREADS to 1; NUMERICS pins the rest).
Set AIRLAB_SKIP_MULTIWORKER=1 to skip the two-process tests (they open localhost ports).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

pytest.importorskip("tensorflow")

from conftest import REPO, invoke, spawn  # noqa: E402
from numerics import NUMERICS  # noqa: E402
from smoke import case  # noqa: E402

TF = ["--backend", "tensorflow"]
TWO = {"AIRLAB_REPLICAS": "2"}
STEPS = 40
RUN = [*NUMERICS, "train.epochs=null", f"train.steps={STEPS}", "data.batch_size=32", "train.log_every=20",
       f"train.checkpoint_every={STEPS}"]
# 12 steps, a checkpoint every 4, op determinism (bitwise resume in another process on TensorFlow)
RESUMABLE = [*NUMERICS, "train.deterministic=true", "train.epochs=null", "train.steps=12", "train.checkpoint_every=4",
             "train.log_every=4", "train.keep_checkpoints=10", "data.batch_size=32"]


def train(run_dir: Path, model: str, extra: list[str], env: dict | None = None, *, settings=RUN):
    config, overrides = case(model, eval_every=20)
    r = spawn("train", config, *overrides, *settings, *extra, *TF, "--run-dir", run_dir, env=env)
    assert r.code == 0, r.err
    return r


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def final_weights(run_dir: Path) -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(str(Path(summary(run_dir)["checkpoint"]) / "model.safetensors"))


# --- MirroredStrategy over 2 logical CPU devices against one device -----------------------------------


@pytest.mark.parametrize("model, extra, replicas_only", [
    ("mlp", [], []),  # its smoke settings have dropout 0.5: masks keyed to the global sample position
    # augmented and normalised images, the replicas' batches streamed from the host: each replica
    # augments its own rows, as the one device does them all
    ("cnn", ["model.dropout=0", "data.augment={random_crop: 2, horizontal_flip: true}", "data.normalize=true"],
     ["data.placement=stream"]),
], ids=["mlp", "cnn-augmented-streamed"])
def test_two_replicas_train_as_one_device(model, extra, replicas_only, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    config, overrides = case(model, eval_every=20)
    r = invoke("train", config, *overrides, *RUN, *extra, *TF, "--run-dir", one)  # one device: in this process
    assert r.code == 0, r.err
    train(two, model, [*extra, *replicas_only], TWO)
    assert summary(two)["data"]["placement"] == ("stream" if replicas_only else "device")
    a, b = final_weights(one), final_weights(two)
    assert sorted(a) == sorted(b)
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst <= 1e-4, f"max |w1 - w2| = {worst}"
    fa, fb = summary(one)["final"], summary(two)["final"]
    assert fa.keys() == fb.keys() and fa
    for split in fa:
        assert fa[split].keys() == fb[split].keys()
        for metric, value in fa[split].items():
            assert fb[split][metric] == pytest.approx(value, abs=1e-5), (split, metric)
    # env.json and the checkpoint's numerics state the replicas
    env = json.loads((two / "env.json").read_text())["backend"]
    assert env["replicas"] == 2
    assert env["strategy"]["name"] == "MirroredStrategy" and len(env["strategy"]["devices"]) == 2
    assert json.loads((one / "env.json").read_text())["backend"]["replicas"] == 1
    trainer = json.loads((Path(summary(two)["checkpoint"]) / "trainer.json").read_text())
    assert trainer["numerics"]["replicas"] == 2


def test_a_batch_that_does_not_divide_among_the_replicas_is_one_line_exit_2(tmp_path):
    run_dir = tmp_path / "run"
    config, overrides = case("mlp", eval_every=20)
    r = spawn("train", config, *overrides, *NUMERICS, "data.batch_size=30", "train.steps=2", *TF,
              "--run-dir", run_dir, env={"AIRLAB_REPLICAS": "4"})
    assert r.code == 2, r.err
    assert r.err_lines[0] == ("error: data.batch_size: 30 does not divide among 4 replicas (the batch is the global "
                              "batch, split equally among them)")
    assert r.err_lines[1].startswith("hint: use a multiple of 4, e.g. data.batch_size=28")
    assert len(r.err_lines) == 2, r.err
    assert not run_dir.exists()


def _background(*argv, env: dict) -> subprocess.Popen:
    """`python -m airlab ARGV` started and left running (as conftest.spawn runs it): two runs that
    do not depend on each other share the cores instead of taking turns."""
    full = dict(os.environ, COLUMNS="200", PYTHONDONTWRITEBYTECODE="1", **env)
    full.pop("AIRLAB_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "airlab", *map(str, argv)], cwd=REPO, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def test_resume_under_two_replicas_is_bitwise_and_another_count_is_noticed(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    config, overrides = case("mlp", eval_every=20)
    uninterrupted = _background("train", config, *overrides, *RESUMABLE, *TF, "--run-dir", whole, env=TWO)
    r = spawn("train", config, *overrides, *RESUMABLE, *TF, "--run-dir", killed,
              env={**TWO, "AIRLAB_FAULT": "kill_at_step:6"})
    assert r.code == -signal.SIGKILL, (r.code, r.err)
    other = tmp_path / "other"
    shutil.copytree(killed, other)
    # the same checkpoint resumed on one device, beside it: the data position carries over; the run
    # says that the numerics changed (the order of the gradient sums)
    on_one = _background("train", "--resume", other, env={})
    r = spawn("train", "--resume", killed, env=TWO)
    assert r.code == 0, r.err
    code, err = _finish(uninterrupted)
    assert code == 0, err
    assert summary(killed)["resumed_at_step"] == 4
    assert summary(killed)["weights_sha256"] == summary(whole)["weights_sha256"]
    code, err = _finish(on_one)
    assert code == 0, err
    assert "replicas 2 -> 1" in err
    assert summary(other)["steps"] == 12 and summary(other)["resumed_at_step"] == 4


# --- what cannot be provided --------------------------------------------------------------------------


def test_replicas_on_gpus_that_are_not_there_are_refused():
    import tensorflow as tf

    from airlab.backends.tensorflow import distribute
    from airlab.config import validate
    from airlab.errors import EnvironmentProblem

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    config = validate({"name": "t", "model": {"name": "mlp"}, "device": "cuda"})
    with pytest.raises(EnvironmentProblem) as info:
        distribute._local_devices(config, 2)
    assert info.value.message == "2 replicas on device: cuda need GPUs 0..1, but TensorFlow sees 0 GPU(s)"
    assert "device: cpu" in info.value.hint


def test_replicas_after_the_runtime_started_with_fewer_devices_are_refused():
    code = """
import tensorflow as tf
from airlab.backends.tensorflow import distribute
from airlab.config import validate
from airlab.errors import EnvironmentProblem
tf.config.list_logical_devices("CPU")  # the runtime starts with one CPU device
try:
    distribute._logical_cpus(2)
except EnvironmentProblem as e:
    print(e.message)
    print(e.hint)
"""
    r = spawn(code=code)
    assert r.code == 0, r.err
    assert r.out_lines[0] == ("2 replicas on the CPU need 2 logical CPU devices, but TensorFlow had already started "
                              "in this process with 1")
    assert r.out_lines[1].startswith("start a fresh process")


# --- the pieces, in this process ----------------------------------------------------------------------


def test_draws_under_global_rows_are_the_rows_of_the_global_draw():
    import tensorflow as tf

    from airlab.backends.tensorflow.models import batch_draw, global_rows

    def draw(shape, seed):
        return tf.random.stateless_uniform(shape, seed=seed)

    seed = tf.constant([7, 3], tf.int64)
    whole = draw(tf.constant([8, 5]), seed).numpy()
    assert np.array_equal(batch_draw(draw, tf.constant([8, 5]), seed).numpy(), whole)  # one device: as before
    for r in range(4):
        with global_rows(tf.constant(2 * r), tf.constant(8)):
            part = batch_draw(draw, tf.constant([2, 5]), seed).numpy()
        assert np.array_equal(part, whole[2 * r:2 * r + 2])


def test_tf_config_names_the_ranks():
    from airlab.backends.tensorflow import distribute
    from airlab.errors import EnvironmentProblem

    def env(cluster, task):
        return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}

    two = {"worker": ["a:1", "b:2"]}
    assert distribute.cluster({}) is None
    assert distribute.cluster(env({"worker": ["a:1"]}, {"type": "worker", "index": 0})) is None
    assert distribute.cluster(env(two, {"type": "worker", "index": 1})) == distribute.Cluster("worker", 1, 1, 2)
    chief = {"chief": ["c:0"], "worker": ["a:1", "b:2"]}
    assert distribute.cluster(env(chief, {"type": "chief", "index": 0})).rank == 0
    assert distribute.cluster(env(chief, {"type": "worker", "index": 0})) == distribute.Cluster("worker", 0, 1, 3)
    with pytest.raises(EnvironmentProblem, match="task type 'ps' does not train"):
        distribute.cluster(env(two, {"type": "ps", "index": 0}))
    with pytest.raises(EnvironmentProblem, match="cannot read it"):
        distribute.cluster({"TF_CONFIG": "{not json"})
    assert not distribute.wanted({}) and distribute.wanted({"AIRLAB_REPLICAS": "2"})


def test_the_launcher_sets_the_replicas_and_goes_on_in_this_process(monkeypatch):
    from airlab.backends.tensorflow import distribute
    from airlab.backends.tensorflow.launch import launch
    from airlab.errors import UsageError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("AIRLAB_REPLICAS", "1")  # recorded, so that what launch() sets is undone after the test
    assert launch(3, ["train", "c.yaml"]) is None
    assert os.environ["AIRLAB_REPLICAS"] == "3" and distribute.requested_replicas() == 3
    with pytest.raises(UsageError, match="--max-restarts"):
        launch(2, [], max_restarts=1)
    monkeypatch.setenv("AIRLAB_REPLICAS", "zero")
    with pytest.raises(UsageError, match="AIRLAB_REPLICAS='zero'"):
        distribute.requested_replicas()


def test_one_process_has_no_collective(monkeypatch):
    from airlab.backends.tensorflow.backend import TensorFlowBackend
    from airlab.config import validate

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("AIRLAB_REPLICAS", raising=False)
    assert TensorFlowBackend.collective(validate({"name": "t", "model": {"name": "mlp"}})) is None


def test_the_strategy_collective_carries_numbers_and_bytes():
    """Over one process here (the two-process case is below): the same code path."""
    import tensorflow as tf

    from airlab.backends.tensorflow.distribute import StrategyCollective

    c = StrategyCollective(tf.distribute.MirroredStrategy(["/cpu:0"]), 0, 1)
    assert c.all_reduce([1.5, -2.0, 2.0**53], "sum") == [1.5, -2.0, 2.0**53]
    data = bytes(range(256)) + "é".encode()
    assert c.broadcast(data) == data and c.broadcast(b"") == b""
    assert c.gather(data) == [data] and c.gather(b"") == [b""]


# --- MultiWorkerMirroredStrategy: 2 worker processes on localhost -------------------------------------

multiworker = pytest.mark.skipif(os.environ.get("AIRLAB_SKIP_MULTIWORKER") == "1",
                                 reason="AIRLAB_SKIP_MULTIWORKER=1: two-process tests skipped")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def workers(argv: list[str], cwds: list[Path], *, timeout: float = 240) -> list:
    """Run `python -m airlab ARGV` as worker 0 and 1 of one TF_CONFIG cluster,
    each in its own working directory; [(exit code, stdout, stderr)] in worker order."""
    ports = _free_ports(len(cwds))
    procs = []
    for index, cwd in enumerate(cwds):
        cwd.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1",
                   TF_CONFIG=json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                         "task": {"type": "worker", "index": index}}))
        env.pop("AIRLAB_REPLICAS", None)
        cmd = [sys.executable, "-m", "airlab", *map(str, argv)]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


@multiworker
def test_multiworker_training_writes_once_from_the_chief_and_equals_the_replicas(tmp_path):
    """Two worker processes (TF_CONFIG) on one shared run directory: the chief writes it, the other
    worker writes nothing and prints nothing; the weights equal those of 2 MirroredStrategy
    replicas bitwise (a sum of two numbers has one order)."""
    mirrored = tmp_path / "mirrored"
    config, overrides = case("mlp", eval_every=20)
    reference = _background("train", config, *overrides, *RESUMABLE, *TF, "--run-dir", mirrored, env=TWO)
    run_dir = tmp_path / "shared" / "run"
    w0, w1 = tmp_path / "w0", tmp_path / "w1"
    results = workers(["train", config, *overrides, *RESUMABLE, *TF, "--run-dir", run_dir], [w0, w1])
    for code, _, err in results:
        assert code == 0, err
    code, err = _finish(reference)
    assert code == 0, err
    assert "run directory:" in results[0][1] and not results[1][1].strip()
    assert summary(run_dir)["weights_sha256"] == summary(mirrored)["weights_sha256"]
    assert summary(run_dir)["world_size"] == 2
    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 2 and env["backend"]["strategy"]["name"] == "MultiWorkerMirroredStrategy"
    assert env["backend"]["replicas"] == 2
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["run"]  # one run directory
    assert not any(w1.iterdir()) and not any(w0.iterdir())  # nothing else written, by either worker

"""A run of several processes on PyTorch (DistributedDataParallel over gloo on CPU), started by
`airlab train --nproc 2` (torchrun's elastic agent): it trains what one process trains, its run
directory is one run's, its shared decisions are taken together, a lost process ends the others
with a clear error, and its checkpoints resume bitwise.

Every run here starts real processes (the launcher and its two ranks), from outside: signals and
kill -9 reach them as they would reach a user's run. A collective that waits for a process that
never comes ends after AIRLAB_DIST_TIMEOUT (set low here), and every subprocess has a timeout, so
a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import torch.distributed  # noqa: E402

if not torch.distributed.is_available():  # pragma: no cover - a torch build without it
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

import safetensors.numpy  # noqa: E402

from conftest import CONFIGS, SHAPES_TINY, invoke  # noqa: E402
from numerics import NUMERICS  # noqa: E402
from smoke import case  # noqa: E402

HANG_GUARD_S = 240  # a subprocess that runs longer has hung: the test fails, the suite goes on
# SGD with momentum: Adam turns the last-bit differences of a gradient near zero (the order of the
# all-reduce sums) into steps of lr in either direction, so weights of 1 and N processes under Adam
# differ by up to about lr x steps; the torch project's own DDP tests compare under SGD too
SGD = ["train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.05"]
STEPS = 40


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "AIRLAB_FAULT",
                                                            "AIRLAB_FAULT_RANK", "TORCHELASTIC_RESTART_COUNT")}
    env.update(OMP_NUM_THREADS="1", AIRLAB_DIST_TIMEOUT="60", PYTHONUNBUFFERED="1", **extra)
    return env


def airlab(*argv, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airlab", *map(str, argv)], capture_output=True, text=True,
                          env=env or _env(), cwd=cwd, timeout=HANG_GUARD_S)


def start(*argv, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "airlab", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or _env())


def weights(run: Path, step: int) -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(str(run / "checkpoints" / f"step-{step}" / "model.safetensors"))


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def wait_for(predicate, proc: subprocess.Popen, what: str, limit: float = HANG_GUARD_S) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {limit} s")
        time.sleep(0.05)


# -- 1 vs 2 processes -----------------------------------------------------------------------------

# dropout is on: its masks are keyed to the global sample position, so one process and two draw
# the same masks (the VAE's noise too: test_torch_shard.py; the Transformer's attention dropout is
# a fused kernel's own draw, per process: off here); BatchNorm off (its batch statistics are per
# process)
PARITY = {
    "mlp": ["model.dropout=0.3"],
    "cnn": ["model.batchnorm=false", "model.dropout=0.3", "model.conv_dropout=0.5"],
    "transformer": ["model.dropout=0"],
}


def _parity_argv(tmp: Path, model: str, nproc: int) -> list:
    config, overrides = case(model, eval_every=20)
    return ["train", config, *overrides, *NUMERICS, *SGD, *PARITY[model], f"train.steps={STEPS}",
            "data.batch_size=16", "train.eval_every=20", f"train.checkpoint_every={STEPS}",
            "--run-dir", tmp / f"{model}-{nproc}"]


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """Each model's run on 2 processes (started together: much of a start is waiting) and on one,
    in this process (the same numerics, one thread and fp32, without a start-up)."""
    tmp = tmp_path_factory.mktemp("parity")
    launched = {model: start(*_parity_argv(tmp, model, 2), "--nproc", 2) for model in PARITY}
    for model in PARITY:
        r = invoke(*_parity_argv(tmp, model, 1))
        assert r.code == 0, r.err
    for model, proc in launched.items():
        out, err = proc.communicate(timeout=HANG_GUARD_S)
        assert proc.returncode == 0, err
    return {model: (tmp / f"{model}-1", tmp / f"{model}-2") for model in PARITY}


@pytest.mark.parametrize("model", list(PARITY))
def test_two_processes_train_what_one_process_trains(parity_runs, model):
    one, two = parity_runs[model]
    w1, w2 = weights(one, STEPS), weights(two, STEPS)
    assert sorted(w1) == sorted(w2)
    worst = max(float(np.abs(w1[k] - w2[k]).max()) for k in w1)
    assert worst <= 1e-4, f"max |weight difference| {worst:.3g} after {STEPS} steps"
    f1, f2 = summary(one)["final"], summary(two)["final"]
    assert f1.keys() == f2.keys()
    for split in f1:
        for metric, value in f1[split].items():
            assert f2[split][metric] == pytest.approx(value, abs=1e-5), (split, metric)


@pytest.mark.parametrize("model", list(PARITY))
def test_a_run_of_two_processes_has_the_run_directory_of_one_with_its_world_size(parity_runs, model):
    one, two = parity_runs[model]
    listing = [sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.name != ".lock") for run in (one, two)]
    assert listing[0] == listing[1]
    env = json.loads((two / "env.json").read_text())
    assert env["world_size"] == 2 and env["devices"] == ["cpu", "cpu"]
    assert env["backend"]["distributed"]["backend"] == "gloo"
    assert summary(two)["world_size"] == 2 and summary(one)["world_size"] == 1
    state = json.loads((two / "checkpoints" / f"step-{STEPS}" / "trainer.json").read_text())
    assert state["world_size"] == 2
    assert [p["rank"] for p in state["processes"]] == [0, 1]  # every process's own generators, gathered
    assert state["processes"][0]["rng"] != state["processes"][1]["rng"]
    # the metrics file has one record per event, not one per process
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [
        (r["step"], r["split"]) for r in map(json.loads, (one / "metrics.jsonl").read_text().splitlines())]


EXISTING_GROUP = """
import json, sys
import torch.distributed as dist
rank, port, config, run = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
# as Ray Train does before it calls the training function: the group exists, no RANK variables
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
from airlab.config import load_config
from airlab.train.loop import Trainer
result = Trainer(load_config(config, sys.argv[5:]), run_dir=run).run()
print(json.dumps({"main": result.is_main, "steps": result.summary["steps"]}))
dist.destroy_process_group()  # the group's owner takes it down (Ray does, at the end of the function)
"""


def test_a_process_group_that_exists_is_used_as_is(tmp_path):
    """Ray Train's way (examples/ray/train_ray.py): the process group is made before airlab runs,
    and airlab's run loop joins it instead of making its own."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    overrides = [*SHAPES_TINY, *NUMERICS, *SGD, "data.batch_size=16", "train.epochs=null", "train.steps=6"]
    env = _env()
    procs = [subprocess.Popen([sys.executable, "-c", EXISTING_GROUP, str(rank), str(port), str(CONFIGS / "mlp.yaml"),
                               str(run), *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for rank in (0, 1)]
    outs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["main"] for r in results] == [True, False] and {r["steps"] for r in results} == {6}
    assert summary(run)["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # one run directory


# -- interruptions ------------------------------------------------------------------------------

LONG = [*SHAPES_TINY, *NUMERICS, *SGD, "model.hidden=[32]", "model.dropout=0.3", "data.batch_size=16",
        "train.epochs=null", "train.steps=150", "train.checkpoint_every=30", "train.keep_checkpoints=20",
        "train.eval_every=15"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The weights digest of the uninterrupted run of 2 processes: started at once, and waited for
    only when a test asks (it runs beside the first test's own run)."""
    run = tmp_path_factory.mktemp("whole") / "run"
    proc = start("train", CONFIGS / "mlp.yaml", *LONG, "--nproc", 2, "--run-dir", run)

    def digest() -> str:
        if proc.returncode is None:
            out, err = proc.communicate(timeout=HANG_GUARD_S)
            assert proc.returncode == 0, err
        return summary(run)["weights_sha256"]

    yield digest
    if proc.poll() is None:
        proc.kill()


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "airlab" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no process of rank {rank} under the launcher")


def test_kill_9_of_one_process_stops_the_others_and_the_run_resumes_bitwise(tmp_path, uninterrupted):
    run = tmp_path / "run"
    launcher = start("train", CONFIGS / "mlp.yaml", *LONG, "--nproc", 2, "--run-dir", run)
    wait_for(lambda: (run / "checkpoints" / "step-30" / "manifest.json").exists(), launcher, "a checkpoint")
    os.kill(_rank_pid(launcher, 1), signal.SIGKILL)
    out, err = launcher.communicate(timeout=HANG_GUARD_S)
    assert launcher.returncode == 4, err
    lines = errors(err)
    assert any("process 1 of the run" in line and "SIGKILL" in line for line in lines), err
    assert any("another process of the run stopped answering" in line for line in lines), err
    assert not any(line.startswith("error: process 0") and "answering" in line for line in lines)
    assert "Traceback" not in err
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["exit_code"] == 4
    assert f"--resume {run} --nproc 2" in err  # the hint says how to continue

    r = airlab("train", "--resume", run, "--nproc", 2)
    assert r.returncode == 0, r.stderr
    assert summary(run)["weights_sha256"] == uninterrupted()


def test_with_max_restarts_the_agent_restarts_the_group_and_it_resumes_by_itself(tmp_path, uninterrupted):
    """torchrun's elastic agent restarts every process after one dies; the restarted processes
    (TORCHELASTIC_RESTART_COUNT 1) resume --run-dir from its newest checkpoint."""
    run = tmp_path / "run"
    env = _env(AIRLAB_FAULT="kill_at_step:45", AIRLAB_FAULT_RANK="1")
    r = airlab("train", CONFIGS / "mlp.yaml", *LONG, "--nproc", 2, "--max-restarts", 1, "--run-dir", run, env=env)
    assert r.returncode == 0, r.stderr
    s = summary(run)
    assert s["resumed_at_step"] == 30 and s["steps"] == 150
    assert s["weights_sha256"] == uninterrupted()


def test_sigterm_to_the_launcher_saves_one_step_for_every_process_and_resumes_bitwise(tmp_path, uninterrupted):
    run = tmp_path / "run"
    launcher = start("train", CONFIGS / "mlp.yaml", *LONG, "--nproc", 2, "--run-dir", run)
    metrics = run / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, launcher, "a first evaluation")
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=HANG_GUARD_S)
    assert launcher.returncode == 143, err
    assert len(errors(err)) == 1 and "SIGTERM received: stopped after step" in err, err
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted"
    newest = Path(status["last_checkpoint"])
    state = json.loads((newest / "trainer.json").read_text())
    assert state["step"] == status["step"] < 150
    assert len(state["processes"]) == 2  # both processes' state, of that one step

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    r = airlab("train", "--resume", run, "--nproc", 2)
    assert r.returncode == 0, r.stderr
    assert summary(run)["weights_sha256"] == uninterrupted()

    # under another world size: the data position carries over, and the run says what does not
    r = airlab("train", "--resume", copy)
    assert r.returncode == 0, r.stderr
    assert "resuming a run of 2 process(es) with 1" in r.stderr
    assert summary(copy)["steps"] == 150 and summary(copy)["world_size"] == 1


@pytest.mark.parametrize("after", [0.3, 2.0])
def test_sigterm_to_the_launcher_while_it_starts_is_exit_143_and_one_line(tmp_path, after):
    """Before, while and after the processes start: every moment gets the signal's code and one
    line, from one process (the launcher, or rank 0), never one per process."""
    launcher = start("train", CONFIGS / "mlp.yaml", *SHAPES_TINY, "data.batch_size=16", "train.epochs=null",
                     "train.steps=3000", "--nproc", 2, "--run-dir", tmp_path / "run")
    time.sleep(after)
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=HANG_GUARD_S)
    assert launcher.returncode == 143, err
    assert len(errors(err)) == 1, err
    assert "process 1" not in err and "Traceback" not in err


# -- decisions taken together, errors said once ----------------------------------------------------

def test_a_nan_and_an_out_of_memory_on_one_process_are_handled_by_both(tmp_path):
    """Only process 1 meets them; without the shared decision process 0 would step alone (or wait
    in the gradient all-reduce for a process that is retrying): a hang or a split run."""
    run = tmp_path / "run"
    env = _env(AIRLAB_FAULT="nan_at_step:5,oom_at_batch:4", AIRLAB_FAULT_RANK="1")
    r = airlab("train", CONFIGS / "mlp.yaml", *SHAPES_TINY, *NUMERICS, *SGD, "data.batch_size=16", "train.epochs=null",
               "train.steps=12", "train.on_nonfinite=skip", "train.auto_batch_size=true", "--nproc", 2,
               "--run-dir", run, env=env)
    assert r.returncode == 0, r.stderr
    s = summary(run)
    assert s["skipped_steps"] == 1
    assert s["grad_accum"] == 2 and s["micro_batches_tried"] == [8, 4]  # each process's share of 8, halved


def test_a_batch_that_does_not_divide_is_one_line_before_any_process_starts(tmp_path):
    r = airlab("train", CONFIGS / "mlp.yaml", *SHAPES_TINY, "data.batch_size=33", "--nproc", 2,
               "--run-dir", tmp_path / "run")
    assert r.returncode == 2
    assert errors(r.stderr) == ["error: data.batch_size: 33 does not divide among 2 processes (the batch is the "
                                "global batch, split equally)"]
    assert not (tmp_path / "run").exists()


def test_an_error_every_process_meets_is_said_once(tmp_path):
    """Missing data (offline, no files): every process refuses the run; the main process says so."""
    data = tmp_path / "data"
    data.mkdir()
    r = airlab("train", CONFIGS / "mlp.yaml", "data.name=mnist", f"data.path={data}", "--nproc", 2,
               "--run-dir", tmp_path / "run")
    assert r.returncode == 2, r.stderr
    assert len(errors(r.stderr)) == 1, r.stderr
    assert "process 1" not in r.stderr and "Traceback" not in r.stderr

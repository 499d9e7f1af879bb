"""Collisions, rewrites, disks and hostile run directories, tried from outside.

Several processes on one runs root or one run directory; kills in the middle of a rewrite; a real
file size limit (RLIMIT_FSIZE) and a real full disk (a small tmpfs, where this machine lets a test
mount one); runs roots that cannot hold runs; manifests, trainer state, RNG files and metrics
that were tampered with. Each gets its documented exit code and one line, and loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, SHAPES_TINY, tmpfs
from airlab.train import checkpoint as ckpt
from airlab.train import rundir

TINY = [str(CONFIGS / "mlp.yaml"), *SHAPES_TINY, "model.hidden=[16]", "device=cpu", "train.epochs=null",
        "train.steps=8", "train.checkpoint_every=4", "train.log_every=2", "data.batch_size=32", "train.threads=1"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train(airlab_cli, run_dir: Path, *extra):
    return airlab_cli("train", *TINY, *extra, "--run-dir", run_dir)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run with checkpoints at steps 4 and 8 (copy it before changing it)."""
    from conftest import invoke

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    r = invoke("train", *TINY, "--run-dir", run_dir)
    assert r.code == 0, r.err
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(run_dir, dest)
    return dest


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


# -- collisions ----------------------------------------------------------------------------------

def test_runs_started_at_once_with_one_config_each_get_a_directory(tmp_path):
    root = tmp_path / "runs"
    env = {**os.environ, **ONE_THREAD}
    procs = [subprocess.Popen([sys.executable, "-m", "airlab", "train", *TINY, "train.steps=2",
                               f"output.runs_root={root}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    runs = sorted(p.name for p in root.iterdir())
    assert len(runs) == 4 and all((root / r / "summary.json").exists() for r in runs), runs


def test_claiming_a_run_directory_in_the_same_second_takes_a_suffix(tmp_path):
    paths = [rundir.claim_run_dir(tmp_path, "same") for _ in range(5)]
    assert len(set(paths)) == 5 and all(p.is_dir() for p in paths)


def test_a_run_dir_that_holds_a_run_is_refused(finished, airlab_cli, tmp_path):
    r = train(airlab_cli, finished)
    assert r.code == 2 and r.err_lines[0] == f"error: --run-dir {finished}: holds a run"


def test_resume_with_another_run_dir_is_refused(finished, airlab_cli, tmp_path):
    r = airlab_cli("train", "--resume", finished, "--run-dir", tmp_path / "elsewhere")
    assert r.code == 2 and "its own directory" in r.err_lines[0], r.err
    assert not (tmp_path / "elsewhere").exists()


def test_a_second_process_on_a_live_run_is_refused_and_a_killed_one_frees_it(airlab_cli, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.Popen([sys.executable, "-m", "airlab", "train", *TINY, "train.steps=100000",
                             "train.checkpoint_every=2", "--run-dir", str(run_dir)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ckpt.list_steps(run_dir / "checkpoints"):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        assert rundir.read_status(run_dir)["status"] == "running"
        r = airlab_cli("train", "--resume", run_dir)
        assert r.code == 2, r.err
        assert r.err_lines[0] == (f"error: {run_dir}: the run is in use by another process "
                                  f"(pid {proc.pid} on {os.uname().nodename}, since "
                                  + r.err_lines[0].split(", since ")[1])
        lines_before = (run_dir / "metrics.jsonl").read_text().count("\n")
        time.sleep(0.5)
        assert (run_dir / "metrics.jsonl").read_text().count("\n") >= lines_before  # nothing truncated
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert rundir.read_status(run_dir)["status"] == "dead"  # "running", but nobody holds the lock
    last = ckpt.list_steps(run_dir / "checkpoints")[-1][0]
    r = airlab_cli("train", "--resume", run_dir, f"train.steps={last + 2}", "--allow-config-change")
    assert r.code == 0, r.err
    assert status(run_dir)["status"] == "completed"


# -- atomic rewrites -------------------------------------------------------------------------------

def test_atomic_write_leaves_the_old_or_the_new_file_under_kill_9(tmp_path):
    target = tmp_path / "file"
    old, new = b"old\n" * 50_000, b"new\n" * 400_000
    for attempt in range(12):
        target.write_bytes(old)
        pid = os.fork()
        if pid == 0:  # the child rewrites until it is killed
            try:
                while True:
                    rundir.atomic_write(target, new)
                    rundir.atomic_write(target, old)
            finally:
                os._exit(0)
        time.sleep(0.002 * attempt)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert target.read_bytes() in (old, new)


def test_a_failed_metrics_rewrite_on_resume_keeps_the_history(finished, monkeypatch, tmp_path, airlab_cli):
    run_dir = copy_of(finished, tmp_path)
    shutil.rmtree(run_dir / "checkpoints" / "step-8")
    before = (run_dir / "metrics.jsonl").read_bytes()

    def no_replace(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(rundir.os, "replace", no_replace)
    r = airlab_cli("train", "--resume", run_dir)
    assert r.code == 4, r.err
    assert (run_dir / "metrics.jsonl").read_bytes() == before  # not emptied, not cut
    assert not list(run_dir.glob(".*.tmp-*"))


def test_a_failed_config_rewrite_keeps_a_loadable_config(finished, monkeypatch, tmp_path, airlab_cli):
    run_dir = copy_of(finished, tmp_path)
    shutil.rmtree(run_dir / "checkpoints" / "step-8")
    config_before = (run_dir / "config.yaml").read_text()
    real, calls = rundir.atomic_write, []

    def fail_on_config(path, data):
        calls.append(Path(path).name)
        if Path(path).name == "config.yaml":
            raise OSError(28, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(rundir, "atomic_write", fail_on_config)
    r = airlab_cli("train", "--resume", run_dir, "train.steps=12", "--allow-config-change")
    assert r.code == 4, r.err
    assert "config.yaml" in calls
    assert (run_dir / "config.yaml").read_text() == config_before


# -- real disks ------------------------------------------------------------------------------------

def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_file_size_limit_is_an_environment_problem(tmp_path):
    """ulimit -f: the first checkpoint (~100 kB of optimizer state) does not fit in 40 kB files."""
    run_dir = tmp_path / "run"
    env = {**os.environ, **ONE_THREAD, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "airlab", "train", *TINY, "--run-dir", str(run_dir)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(40_000))
    assert proc.returncode == 4, proc.stderr
    first = [l for l in proc.stderr.splitlines() if l.strip()][0]
    assert first.startswith("error: could not save checkpoint step-4") and "file size limit" in first, first
    assert "Traceback" not in proc.stderr
    assert (status(run_dir)["status"], status(run_dir)["exit_code"]) == ("failed", 4)
    assert ckpt.list_steps(run_dir / "checkpoints") == []  # nothing half-written is visible


@pytest.fixture
def small_tmpfs(tmp_path):
    with tmpfs(tmp_path / "tmpfs", "600k") as mount:
        yield mount


def test_a_full_disk_is_an_environment_problem_and_the_previous_checkpoint_survives(small_tmpfs, airlab_cli):
    """A real 600 kB tmpfs: the first checkpoints fit (~110 kB each), later ones do not."""
    run_dir = small_tmpfs / "run"
    r = train(airlab_cli, run_dir, "train.steps=400", "train.checkpoint_every=2", "train.keep_checkpoints=100")
    assert r.code == 4, r.err
    assert "no space left on the device" in r.err_lines[0], r.err
    steps = ckpt.list_steps(run_dir / "checkpoints")
    assert steps and all(ckpt.verify(path) is None for _, path in steps)


@pytest.mark.parametrize("root", ["file", "/proc/airlab-runs", "/sys/airlab-runs"])
def test_a_runs_root_that_cannot_hold_runs_is_an_environment_problem(root, airlab_cli, tmp_path):
    if root == "file":
        root = tmp_path / "a-file"
        root.write_text("not a directory")
    r = airlab_cli("train", *TINY, f"output.runs_root={root}")
    assert r.code == 4, r.err
    assert r.err_lines[0].startswith("error: ") and "Traceback" not in r.err


# -- hostile run directories -----------------------------------------------------------------------

def _rewrite_manifest_entry(ckpt_dir: Path, name: str) -> None:
    """Make the manifest agree with a file changed on purpose (a tamperer would)."""
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    data = (ckpt_dir / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("manifest", ["[]", '{"files": null}', '{"files": {"x": "y"}}', "{}", '"text"',
                                      '{"step": 8, "files": {"../x": {"sha256": "0", "bytes": 1}}}'])
@pytest.mark.parametrize("command", ["resume", "sample", "convert"])
def test_a_bad_manifest_is_a_damaged_checkpoint_and_the_one_before_is_used(manifest, command, finished,
                                                                           airlab_cli, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "checkpoints" / "step-8" / "manifest.json").write_text(manifest)
    if command == "resume":
        r = airlab_cli("train", "--resume", run_dir)
        assert r.code == 0, r.err
        assert "resuming" in r.out and "from step-4" in r.out
    elif command == "sample":  # an MLP's samples are its predictions, from the checkpoint before
        r = airlab_cli("sample", run_dir, "--seed", "1")
        assert r.code == 0, r.err
        assert (run_dir / "samples" / "step-4-seed1-predictions.txt").is_file()
    else:
        r = airlab_cli("convert", run_dir, "--to", "tensorflow", "--out", tmp_path / "tf")
        assert r.code == 0, r.err
    assert "warning: skipping checkpoint" in r.err and "step-8" in r.err
    assert not any(l.startswith("  warnings.warn") or "UserWarning" in l for l in r.err_lines)


@pytest.mark.parametrize("change", ["step text", "step beyond the plan", "rng list", "not json", "best text"])
def test_a_tampered_trainer_state_is_refused_naming_the_file(change, finished, airlab_cli, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    step8 = run_dir / "checkpoints" / "step-8"
    state = json.loads((step8 / "trainer.json").read_text())
    if change == "step text":
        state["step"] = "8"
    elif change == "step beyond the plan":
        state["step"] = 10**9
    elif change == "rng list":
        state["rng"]["numpy"][1] = [1, 2, 3]
    elif change == "best text":
        state["best"] = "low"
    text = "{not json" if change == "not json" else json.dumps(state)
    (step8 / "trainer.json").write_text(text)
    _rewrite_manifest_entry(step8, "trainer.json")
    r = airlab_cli("train", "--resume", run_dir)
    assert r.code == 2, r.err
    assert r.err_lines[0].startswith(f"error: {step8 / 'trainer.json'}: "), r.err_lines[0]


def test_a_tampered_rng_file_is_refused_naming_it(finished, airlab_cli, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    run_dir = copy_of(finished, tmp_path)
    step8 = run_dir / "checkpoints" / "step-8"
    save_file({"torch_cpu": np.zeros(7, dtype=np.uint8)}, str(step8 / "rng.safetensors"))
    _rewrite_manifest_entry(step8, "rng.safetensors")
    r = airlab_cli("train", "--resume", run_dir)
    assert r.code == 2, r.err
    assert r.err_lines[0].startswith(f"error: {step8 / 'rng.safetensors'}: cannot restore the random generator")


def test_non_utf8_bytes_in_metrics_are_refused_naming_the_line(finished, airlab_cli, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    shutil.rmtree(run_dir / "checkpoints" / "step-8")
    lines = (run_dir / "metrics.jsonl").read_bytes().split(b"\n")
    lines[1] = b'{"step": 2, "split": "train", "note": "\xff\xfe"}'
    (run_dir / "metrics.jsonl").write_bytes(b"\n".join(lines))
    r = airlab_cli("train", "--resume", run_dir)
    assert r.code == 2, r.err
    assert r.err_lines[0] == f"error: {run_dir / 'metrics.jsonl'}:2: not UTF-8 text (byte 0xff at column 40)"


def test_resume_under_another_thread_count_warns_and_env_json_records_it(monkeypatch, airlab_cli, tmp_path):
    """The default thread count follows the machine (cores, quota, OMP_NUM_THREADS); a resume where
    it differs cannot be bitwise equal to an uninterrupted run, so it says so and env.json keeps it."""
    run_dir = tmp_path / "run"
    no_threads = [a for a in TINY if not a.startswith("train.threads")]
    assert airlab_cli("train", *no_threads, "--run-dir", run_dir).code == 0  # OMP_NUM_THREADS=1 (conftest)
    shutil.rmtree(run_dir / "checkpoints" / "step-8")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    r = airlab_cli("train", "--resume", run_dir)
    assert r.code == 0, r.err
    assert "done: 8 steps in all; this process resumed at step 4 and ran 4 of them in " in r.out
    warning = [l for l in r.err_lines if l.startswith("warning: resuming at step 4 under other numerics")]
    assert len(warning) == 1 and "threads 1 -> 2" in warning[0], r.err
    env = json.loads((run_dir / "env.json").read_text())
    assert env["resumes"][-1]["at_step"] == 4 and "threads 1 -> 2" in env["resumes"][-1]["changed"]
    assert env["resumes"][-1]["numerics"]["threads"] == 2

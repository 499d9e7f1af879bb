"""Real signals end to end, and the README's commands staying what CI runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import last_train_step

ROOT = Path(__file__).resolve().parents[2]


def _start(run_dir: Path, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "AIRLAB_OFFLINE": "1", "AIRLAB_DATA_DIR": str(tmp_path / "data")}
    return subprocess.Popen(
        [sys.executable, "-m", "airlab", "train", str(ROOT / "configs/mlp.yaml"), "data.name=shapes",
         "data.size=2000", "train.epochs=null", "train.steps=100000", "train.log_every=1",
         "model.hidden=[32]", "data.batch_size=16", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def _wait_for_steps(run_dir: Path, proc: subprocess.Popen, steps: int, timeout: float = 120) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.communicate()}")
        if last_train_step(metrics) >= steps:
            return
        time.sleep(0.1)
    proc.kill()
    pytest.fail("training did not reach the expected step in time")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_exits_with_its_code(tmp_path, sig, code):
    run_dir = tmp_path / "run"
    proc = _start(run_dir, tmp_path)
    _wait_for_steps(run_dir, proc, 5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    assert "received" in err and f"airlab train --resume {run_dir}" in err
    assert "Traceback" not in err
    steps = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*"))
    assert steps and steps[-1] >= 5
    state = json.loads((run_dir / "checkpoints" / f"step-{steps[-1]}" / "trainer.json").read_text())
    assert state["step"] == steps[-1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quickstart)


def test_readme_has_two_quickstart_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    run_cmd, test_cmd = commands
    assert "airlab train configs/quickstart.yaml" in run_cmd
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, "the README's test command must be exactly what .ci/run runs"
    assert (ROOT / "configs" / "quickstart.yaml").is_file()


# -- the reader of the output goes away (`airlab ... | head`) ------------------------------------

def _airlab(*argv, **kw) -> subprocess.Popen:
    env = {**os.environ, "AIRLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "airlab", *map(str, argv)], env=env, text=True, **kw)


def test_a_closed_stdout_ends_a_command_quietly_with_141():
    proc = _airlab("models", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before airlab writes anything
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert err == "", err  # no traceback, no "Exception ignored" from the flush at exit


def test_a_closed_stdout_saves_the_training_run_which_resumes_to_the_same_weights(tmp_path):
    args = [ROOT / "configs/mlp.yaml", "data.name=shapes", "data.size=512", "data.limit=256", "model.hidden=[16]",
            "train.epochs=null", "train.steps=1500", "train.log_every=1", "train.checkpoint_every=10000"]
    # 1,500 progress lines are about 150 kB, more than twice what a pipe holds (64 kB): the run cannot
    # finish before this reader closes its end, however late the test gets the CPU. The uninterrupted
    # reference trains beside it (independent runs, one thread each).
    base = _airlab("train", *args, "--run-dir", tmp_path / "base", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    run_dir = tmp_path / "run"
    proc = _airlab("train", *args, "--run-dir", run_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(5):  # like `| head -5`
        proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    first = err.splitlines()[0]
    assert first.startswith("error: the output pipe closed: stopped after step ") and "Traceback" not in err
    saved = [int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*")]
    assert len(saved) == 1 and 0 < saved[0] < 1500 and f"checkpoints/step-{saved[0]}" in first
    assert base.wait(timeout=300) == 0, base.stderr.read()

    resumed = _airlab("train", "--resume", run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    digest = lambda d: json.loads((d / "summary.json").read_text())["weights_sha256"]  # noqa: E731
    assert digest(run_dir) == digest(tmp_path / "base")


def test_every_test_the_readme_reliability_table_names_exists():
    """The Reliability section promises 'proved by' these tests: each must exist (a rename would
    otherwise leave a promise pointing at nothing)."""
    section = (ROOT / "README.md").read_text().split("## Reliability", 1)[1].split("\n## ", 1)[0]
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    named = re.findall(r"`([^`]*test_[^`]*)`", section)
    assert len(named) > 15, named
    for token in named:
        path, _, name = token.rpartition("::")
        if path:
            assert (ROOT / path).is_file() or list((ROOT / "tests").rglob(Path(path).name)), token
        if name.endswith(".py") or not name.startswith("test_"):  # a file, not a test
            assert (ROOT / token).is_file() or list((ROOT / "tests").rglob(Path(token).name)), token
            continue
        if name.endswith("*"):
            assert any(d.startswith(name[:-1]) for d in defined), token
        else:
            assert name in defined, f"the README names {token}, which no test defines"

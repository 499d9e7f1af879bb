"""Interruptions everywhere: SIGINT, SIGTERM and SIGHUP get exit 130 / 143 / 129 and one
`error: interrupted` line at any moment of any command, never exit 0, never a traceback; a run
interrupted outside its training loop says so in status.json, and one interrupted after its last
step finishes on --resume with the same metrics.jsonl and weights as an uninterrupted run.

Signals are real (os.kill / Popen.send_signal). Where a moment must be exact, the process sends
the signal to itself at a named phase (AIRLAB_FAULT=signal_at:PHASE:S) or from inside a patched
function; elsewhere the tests wait until airlab's handlers are installed (the kernel shows them in
/proc/PID/status) and then signal at several delays.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, SHAPES_TINY, spawn

TINY = [str(CONFIGS / "mlp.yaml"), *SHAPES_TINY, "model.hidden=[16]", "device=cpu", "train.epochs=null",
        "train.steps=8", "train.checkpoint_every=4", "train.log_every=2", "data.batch_size=32", "train.threads=1"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_argv(run_dir: Path, *extra: str) -> list[str]:
    return ["train", *TINY, *extra, "--run-dir", str(run_dir)]


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without what depends on the clock."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("time", None)
        r.pop("samples_per_s", None)
        out.append(r)
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    r = spawn(*train_argv(run_dir), env=ONE_THREAD)
    assert r.code == 0, r.err
    return run_dir


# -- a run, at every phase outside the training loop ------------------------------------------------

@pytest.mark.parametrize("phase, sig", [("finish", signal.SIGINT), ("summary", signal.SIGHUP),
                                        ("finish", signal.SIGTERM)])
def test_a_signal_after_the_last_step_stops_cleanly_and_resume_finishes_the_run(phase, sig, uninterrupted,
                                                                                tmp_path):
    run_dir = tmp_path / "run"
    r = spawn(*train_argv(run_dir), env={**ONE_THREAD, "AIRLAB_FAULT": f"signal_at:{phase}:{int(sig)}"})
    assert r.code == 128 + sig, r.err
    assert "Traceback" not in r.err
    assert r.err_lines[0].startswith(f"error: {signal.Signals(sig).name} received after the last step (8)")
    assert "airlab train --resume" in r.err
    assert not (run_dir / "summary.json").exists()
    st = status(run_dir)
    assert (st["status"], st["exit_code"], st["step"]) == ("interrupted", 128 + sig, 8)
    assert st["last_checkpoint"].endswith("step-8")

    again = spawn("train", "--resume", run_dir, env=ONE_THREAD)
    assert again.code == 0, again.err
    assert "done: 8 steps in all; this process resumed at step 8 and ran 0 of them in " in again.out
    assert status(run_dir)["status"] == "completed"
    summary = json.loads((run_dir / "summary.json").read_text())
    base = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["weights_sha256"] == base["weights_sha256"]
    assert summary["final"] == base["final"]
    assert records(run_dir) == records(uninterrupted)  # one test record, as uninterrupted


@pytest.mark.parametrize("phase, sig", [("start", signal.SIGINT), ("built", signal.SIGTERM)])
def test_a_signal_while_a_run_starts_exits_with_its_code_and_the_status_says_so(phase, sig, tmp_path):
    run_dir = tmp_path / "run"
    r = spawn(*train_argv(run_dir), env={**ONE_THREAD, "AIRLAB_FAULT": f"signal_at:{phase}:{int(sig)}"})
    assert r.code == 128 + sig, r.err
    assert "Traceback" not in r.err
    assert r.err_lines[0].startswith(f"error: {signal.Signals(sig).name} received while the run was starting")
    assert "start the run again" in r.err
    st = status(run_dir)
    assert (st["status"], st["exit_code"], st["last_checkpoint"]) == ("interrupted", 128 + sig, None)


def test_resuming_a_finished_run_adds_no_second_test_record(uninterrupted, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    for _ in range(2):
        r = spawn("train", "--resume", run_dir, env=ONE_THREAD)
        assert r.code == 0, r.err
    assert records(run_dir) == records(uninterrupted)


# -- every command -------------------------------------------------------------------------------

def _signal_inside(monkeypatch, target: str, sig: int):
    """Replace `target` (module:attr) by a function that sends `sig` to this process first."""
    import importlib

    module, attr = target.split(":")
    mod = importlib.import_module(module)
    real = getattr(mod, attr)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), sig)
        time.sleep(1)  # the handler runs at the next bytecode boundary, well before this ends
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, attr, signalled)


@pytest.mark.parametrize("argv, target", [
    (["validate", CONFIGS / "quickstart.yaml"], "airlab.config:load_config"),
    (["models"], "airlab.registry:list_models"),
    (["doctor", "--backend", "torch"], "airlab.doctor.core:run_doctor"),
    (["bench", "--quick"], "airlab.bench.runner:run_bench"),
    (["setup", "--dry-run"], "airlab.setup:machine_facts"),
])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_every_command_exits_with_the_signals_code_and_one_line(argv, target, sig, monkeypatch, airlab_cli):
    _signal_inside(monkeypatch, target, sig)
    r = airlab_cli(*argv)
    assert r.code == 128 + sig, (r.code, r.err)
    assert r.err_lines == [f"error: interrupted ({signal.Signals(sig).name})"]


def test_sample_and_convert_exit_130_when_interrupted(uninterrupted, monkeypatch, airlab_cli, tmp_path):
    _signal_inside(monkeypatch, "airlab.train.checkpoint:newest_complete", signal.SIGINT)
    r = airlab_cli("convert", uninterrupted, "--to", "tensorflow", "--out", tmp_path / "converted")
    assert r.code == 130 and r.err_lines == ["error: interrupted (SIGINT)"], r.err
    vae = tmp_path / "vae"
    monkeypatch.undo()
    assert airlab_cli("train", CONFIGS / "vae.yaml", *SHAPES_TINY, "model.hidden=[8]", "model.latent_dim=2",
                      "device=cpu", "train.epochs=null", "train.steps=2", "--run-dir", vae).code == 0
    _signal_inside(monkeypatch, "airlab.train.checkpoint:newest_complete", signal.SIGINT)
    r = airlab_cli("sample", vae, "--n", "2", "--seed", "1")
    assert r.code == 130 and r.err_lines == ["error: interrupted (SIGINT)"], r.err


def _handlers_installed(pid: int) -> bool:
    """True once the process catches SIGTERM: airlab's handlers are in (Python alone leaves
    SIGTERM at its default action)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc/PID/status")
@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1, 0.3])
def test_ctrl_c_in_the_first_moments_is_exit_130_without_a_traceback(delay):
    """From the moment airlab's entry point runs (before Typer, rich and the commands are imported)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from airlab.cli.entry import main; main()", "doctor"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not _handlers_installed(proc.pid):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.001)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip() == "error: interrupted (SIGINT)"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc/PID/status")
def test_a_signal_ignored_at_start_stays_ignored(tmp_path):
    """`nohup airlab train ...` (SIGHUP ignored) and background jobs (SIGINT ignored) keep them
    ignored: the run trains on to the end."""
    run_dir = tmp_path / "run"

    def ignore():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.Popen([sys.executable, "-m", "airlab", *train_argv(run_dir, "train.steps=200",
                                                                         "train.checkpoint_every=100")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore)
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert status(run_dir)["status"] == "completed"


def test_install_leaves_an_ignored_signal_ignored():
    from airlab import signals

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        old = signals.install()
        try:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is signals.raise_on_signal
        finally:
            signals.restore(old)
    finally:
        signal.signal(signal.SIGHUP, before)


def test_an_interrupted_doctor_leaves_no_probe_running(monkeypatch, airlab_cli):
    """The framework probes run in their own sessions (a terminal's Ctrl-C does not reach them):
    an interrupted doctor stops them itself."""
    from airlab.doctor import frameworks

    started = []
    real_start, real_finish = frameworks.start, frameworks.finish

    def start(commands, env=None):
        slow = {name: [sys.executable, "-c", "import time; time.sleep(300)"] for name in commands}
        running = real_start(slow, env=env)
        started.extend(r.proc for r in running.values())
        return running

    def finish(running, timeout):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        return real_finish(running, timeout)

    monkeypatch.setattr(frameworks, "start", start)
    monkeypatch.setattr(frameworks, "finish", finish)
    r = airlab_cli("doctor", "--backend", "torch")
    assert r.code == 143 and r.err_lines == ["error: interrupted (SIGTERM)"], r.err
    assert started
    for proc in started:
        assert proc.wait(timeout=30) is not None  # killed, not left sleeping


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_metrics_and_weights(uninterrupted, tmp_path):
    """Real SIGKILLs at moments drawn across the whole life of the process (start-up, training,
    saves, the final evaluation and summary), each followed by --resume, until the run finishes."""
    import random

    rng = random.Random(7)
    run_dir = tmp_path / "run"
    env = {**os.environ, **ONE_THREAD}
    argv = [sys.executable, "-m", "airlab", *train_argv(run_dir)]
    kills = 0
    for attempt in range(7):  # six kills at random moments, then one run left to finish
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if attempt < 6:
            start = time.time()
            while not _handlers_installed(proc.pid) and proc.poll() is None and time.time() - start < 60:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 6.0))
            if proc.poll() is None:
                proc.kill()
                kills += 1
        _, err = proc.communicate(timeout=300)
        if attempt == 6:
            assert proc.returncode == 0, err
        elif proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(err)
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("step-*")):
            argv = [sys.executable, "-m", "airlab", "train", "--resume", str(run_dir)]
        else:  # killed before the first checkpoint: nothing to resume, start again
            shutil_rm(run_dir)
    assert kills >= 1
    assert records(run_dir) == records(uninterrupted)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["weights_sha256"] == json.loads((uninterrupted / "summary.json").read_text())["weights_sha256"]


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def test_a_code_that_typer_returns_is_the_exit_code(monkeypatch, airlab_cli):
    """Typer returns, rather than raises, the code of a typer.Exit when not in standalone mode."""
    import typer

    def exits_3(*args, **kwargs):
        raise typer.Exit(3)

    monkeypatch.setattr("airlab.registry.list_models", exits_3)
    assert airlab_cli("models").code == 3


def test_a_run_on_contended_cores_warns_once_naming_the_load(monkeypatch, airlab_cli, tmp_path):
    from airlab.train import threads

    monkeypatch.setattr(threads, "measure_load", lambda *a, **k: threads.CpuLoad(0.3, 2, 1.8, 0.0))
    r = airlab_cli("train", *TINY, "train.threads=2", "--run-dir", tmp_path / "run")
    assert r.code == 0, r.err
    warnings = [l for l in r.err_lines if l.startswith("warning: the CPU is shared")]
    assert len(warnings) == 1 and "train.threads=1" in warnings[0], r.err
    assert json.loads((tmp_path / "run" / "env.json").read_text())["backend"]["threads"]["actual"] == 2

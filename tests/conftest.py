"""Shared test setup: no network, no user home, no GPU; helpers to drive the CLI.

Every test runs with HOME, XDG_CACHE_HOME and AIRLAB_DATA_DIR pointed at temporary directories
and AIRLAB_OFFLINE=1, so nothing reads or writes the user's files and nothing is downloaded.
Outbound network connections from the test process raise.

`airlab_cli(*argv)` runs the CLI in-process through its seam `airlab.cli.main.run` and returns
(exit code, stdout, stderr); `airlab_proc(*argv)` runs `python -m airlab` in a subprocess, for
tests where the process itself matters (imports, exit status, what reaches stderr).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import textwrap
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# The signal tests send SIGINT to the processes they start, and a process keeps a signal ignored
# that it was started with ignored (airlab's promise for nohup and background jobs). A suite
# started as a background job (`pytest &` in a script) has SIGINT ignored: give it back its
# default here, so every process the tests start begins with SIGINT as a terminal would send it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# The slow lane: whole processes killed, signalled and resumed, several processes at once. CI runs
# every lane (`python -m pytest -q`); a developer may leave this one out with `-m "not slow"`.
SLOW = ("reliability/", "integration/test_torch_distributed.py", "integration/test_tensorflow_distributed.py",
        "integration/test_signals_readme.py", "bench/test_bench_allreduce.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        where = Path(str(item.path)).relative_to(REPO / "tests").as_posix()
        if any(where == s or where.startswith(s) for s in SLOW):
            item.add_marker(pytest.mark.slow)

# Set before anything imports airlab, so even module-scoped fixtures and subprocesses are offline.
# Training tests pass device=cpu themselves: results must not depend on the machine.
os.environ["AIRLAB_OFFLINE"] = "1"
os.environ.pop("AIRLAB_DEBUG", None)
# One thread per run, in this process and in the ones it starts (airlab's default thread count is
# the usable cores, lowered by OMP_NUM_THREADS): the same arithmetic order everywhere, so digests
# compare across processes, and a loaded machine is not made slower still by oversubscription.
# Tests of the thread count itself set train.threads or their own environment.
os.environ["OMP_NUM_THREADS"] = "1"
# TensorFlow takes its thread counts once, when its runtime starts (in whichever test touches it
# first), from these variables; airlab's TensorFlow backend then finds 1 in force, as it asks.
os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
os.environ["TF_NUM_INTEROP_THREADS"] = "1"

# Tiny, offline data for training tests: 512 generated shapes, 256 of them used for training.
# Tiny runs leave curves.png out (drawing it costs a quarter of a second at the end of each of
# hundreds of runs); the tests of the curves and of the run directory's files turn it back on.
NO_CURVES = ["output.curves=false"]
SHAPES_TINY = ["data.name=shapes", "data.size=512", "data.limit=256", *NO_CURVES]
# A few thousand characters of Python docstrings for the language model.
PYCORPUS_TINY = ["data.name=pycorpus", "data.size=20000", "data.limit=4000", *NO_CURVES]
# a shipped LM config at a size a test trains in seconds: the sampling at the end of an LM run
# (2 x 400 characters, one forward pass each) dominates at the shipped sizes (transformer-gpu.yaml:
# minutes on a CPU); 48 wide divides into the 4 and the 6 heads of the shipped configs
LM_SMALLER = ["model.n_layer=2", "model.n_embd=48", "model.context_length=32"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def out_lines(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.strip()]

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def _point_env_at(root: Path, setenv) -> None:
    for name, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "xdg-cache"), ("AIRLAB_DATA_DIR", "airlab-data")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        setenv(name, str(root / sub))


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory):
    """Session-wide isolation, in force for module- and session-scoped fixtures too."""
    mp = pytest.MonkeyPatch()
    _point_env_at(tmp_path_factory.mktemp("session-env"), mp.setenv)
    # matplotlib's font cache, built once for the session (not per test's XDG_CACHE_HOME): every
    # finished run draws curves.png, and a subprocess run would otherwise rebuild it (~0.4 s)
    mp.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("matplotlib")))
    mp.setenv("AIRLAB_OFFLINE", "1")
    mp.delenv("AIRLAB_DEBUG", raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def _no_network():
    """Outbound inet connections raise for the whole session.

    Not monkeypatch: `connect` is inherited from _socket.socket, and monkeypatch's undo would
    leave a copy in socket.socket's own __dict__, which changes what introspection (such as the
    pycorpus dataset, built from docstrings) sees for the rest of the session.
    """
    own = vars(socket.socket).get("connect")
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a test tried to open a network connection to {address!r}")
        return real_connect(self, address)

    socket.socket.connect = guarded_connect
    yield
    if own is None:
        del socket.socket.connect
    else:
        socket.socket.connect = own


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Per test: a fresh home and cache, offline, and no dataset downloads."""
    _point_env_at(tmp_path_factory.mktemp("env"), monkeypatch.setenv)
    monkeypatch.setenv("AIRLAB_OFFLINE", "1")
    monkeypatch.delenv("AIRLAB_DEBUG", raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download a dataset")

    monkeypatch.setattr("airlab.data.files._urlopen", no_download)


def invoke(*argv: str | os.PathLike) -> Result:
    """Run the CLI in-process and capture what it writes."""
    from airlab.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run([str(a) for a in argv])
    return Result(code, out.getvalue(), err.getvalue())


def spawn(*argv: str | os.PathLike, env: dict | None = None, code: str | None = None,
          timeout: float = 180) -> Result:
    """Run `python -m airlab ARGV` (or `python -c CODE`) in the repository root."""
    full_env = dict(os.environ)
    full_env.update({"COLUMNS": "200", "PYTHONDONTWRITEBYTECODE": "1"})
    full_env.pop("AIRLAB_DEBUG", None)
    full_env.update(env or {})
    cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "airlab"]
    cmd += [str(a) for a in argv]
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def last_train_step(metrics: Path) -> int:
    """The step of the newest complete train record in a run's metrics.jsonl (0 before the first).
    Validation records share the step of the train record before them: count steps, not lines."""
    if not metrics.exists():
        return 0
    for line in reversed(metrics.read_text().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line being written right now
            continue
        if record.get("split") == "train":
            return record["step"]
    return 0


@pytest.fixture(scope="module")
def torch_one_thread():
    """Torch on one intra-op thread for a module: tiny models gain nothing from more on a busy
    machine, and runs in different processes (OMP_NUM_THREADS=1) then do the same arithmetic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _backend_params() -> list:
    from adapters import params

    return params()


@pytest.fixture(scope="module", params=_backend_params())
def backend(request):
    """Each backend of airlab's table in turn (skipped with the reason where its framework is
    missing), as its test adapter (tests/adapters/), in the adapter's numerics for the module."""
    from adapters import adapter

    chosen = adapter(request.param)
    with chosen.numerics():
        yield chosen


@pytest.fixture(scope="session")
def airlab_cli():
    return invoke


@pytest.fixture(scope="session")
def airlab_proc():
    return spawn


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def shipped_configs() -> list[Path]:
    """Every YAML config shipped under configs/ (subdirectories too), sorted."""
    return sorted(p for p in CONFIGS.rglob("*.yaml") if p.is_file())


# -- configs written by tests -----------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    """Write a (dedented) YAML config for a test."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path, overrides=None) -> list[str]:
    """The problems load_config reports for a config that must be refused (exit 2)."""
    from airlab.config import load_config
    from airlab.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or [])
    assert info.value.exit_code == 2
    return info.value.problems


def only_problem(path, overrides=None) -> str:
    problems = problems_of(path, overrides)
    assert len(problems) == 1, problems
    return problems[0]


@contextlib.contextmanager
def tmpfs(mount: Path, size: str):
    """A real tmpfs of `size` ("600k") mounted at `mount` for a full-disk test, unmounted after;
    the test is skipped where this machine does not let it mount one."""
    mount.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def without_package(monkeypatch, name: str) -> None:
    """Make `import NAME` (and its submodules) fail with ImportError for this test, as on a
    machine without that optional package."""
    for module in {name, *(m for m in sys.modules if m.startswith(name + "."))}:
        monkeypatch.setitem(sys.modules, module, None)

"""The run directory: config.yaml, env.json, metrics.jsonl, summary.json, checkpoints/, samples/.

metrics.jsonl is written by its sink (airlab.train.sinks.MetricsFile); its truncation on resume
is here. Only a run's main process writes any of these (airlab.train.process)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Iterable

import numpy as np

import airlab
from airlab.errors import CheckpointError, EnvironmentProblem, UsageError


def _run_dir_problem(path: Path, e: OSError) -> EnvironmentProblem:
    return EnvironmentProblem(f"cannot create the run directory {path}: {e.strerror or e}",
                              hint="set output.runs_root (or --run-dir) to a writable directory on a disk with space")


def claim_run_dir(runs_root: str | Path, name: str) -> Path:
    """Create and return runs/<name>-<YYYYmmdd-HHMMSS>/ at once (the mkdir is the claim, so two
    runs started in the same second get two directories: the second takes a numeric suffix)."""
    root = Path(runs_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _run_dir_problem(root, e) from None
    if not root.is_dir():
        raise EnvironmentProblem(f"output.runs_root {root} is not a directory",
                                 hint="set output.runs_root to a directory (it is created when missing)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        path = root / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise _run_dir_problem(path, e) from None
        return path
    raise EnvironmentProblem(f"{root}: no free run directory name for {name}-{stamp}",
                             hint="remove old runs or choose another name")


def claim_given_run_dir(path: str | Path) -> Path:
    """`--run-dir DIR`: create it (or take an empty existing one); a directory that already holds
    anything is refused."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir()
        return path
    except FileExistsError:
        if path.is_dir() and not any(path.iterdir()):
            return path
        what = "holds a run" if (path / "config.yaml").exists() else "already exists"
        raise UsageError(f"--run-dir {path}: {what}",
                         hint=f"choose a new directory, or continue that run with --resume {path}") from None
    except OSError as e:
        raise _run_dir_problem(path, e) from None


def disk_diagnosis(path: Path) -> str:
    """What the disk under `path` says now: free space, a read-only mount, a file size limit."""
    import resource
    import shutil

    facts = []
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
        facts.append(f"{usage.free / 2**20:,.1f} MiB free of {usage.total / 2**20:,.1f} MiB at {path}")
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            facts.append("mounted read-only")
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        facts.append(f"file size limit {soft:,} bytes (ulimit -f)")
    return "; ".join(facts)


LOCK = ".lock"


class RunLock:
    """One process per run directory: an exclusive OS lock (flock) on `<run>/.lock`, released by
    the kernel when the process dies, so a killed run never leaves a stale lock. The file holds
    the holder's pid and host for the message a second process gets. In a run of several
    processes it is the main process that holds it (the lock belongs to the run)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise EnvironmentProblem(f"cannot open the run's lock file {self.path}: {e.strerror or e}",
                                     hint="check that the run directory is writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UsageError(f"{self.path.parent}: the run is in use by another process ({holder})",
                             hint="wait for it to finish or stop it (its checkpoints let it resume); "
                                  "one process per run directory") from None
        except OSError as e:  # a file system without locks
            os.close(fd)
            raise EnvironmentProblem(f"cannot lock {self.path}: {e.strerror or e}",
                                     hint="put output.runs_root on a local file system") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": platform.node(),
                                  "since": datetime.now().astimezone().isoformat(timespec="seconds")}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {int(info['pid'])} on {info.get('host', '?')}, since {info.get('since', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def is_locked(run_dir: Path) -> bool:
    """True while a live process holds the run's lock (a reader's test: live or dead)."""
    import fcntl

    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


STATUS = "status.json"


def write_status(run_dir: Path, status: str, **fields) -> None:
    """status.json: running | completed | early_stopped | interrupted | diverged | failed, with the
    exit code, step and last checkpoint; written atomically at every change of state."""
    atomic_write(Path(run_dir) / STATUS, json.dumps({
        "status": status, **fields, "pid": os.getpid(), "host": platform.node(),
        "updated": datetime.now().astimezone().isoformat(timespec="seconds")}, indent=2, default=str) + "\n")


def read_status(run_dir: Path) -> dict | None:
    """The run's status.json, with `running` turned into `dead` when no process holds the lock
    (killed without a word: kill -9, power loss). None when there is no readable status."""
    try:
        status = json.loads((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict):
        return None
    if status.get("status") == "running" and not is_locked(run_dir):
        status["status"] = "dead"
    return status


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return commit + ("-dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(backend_env: dict, argv: list[str]) -> dict:
    try:
        import psutil

        ram = psutil.virtual_memory().total
    except Exception:  # psutil is a dependency, but env.json must never fail a run
        ram = None
    return {
        "airlab": airlab.__version__,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "os": platform.system(),
        "cpu": {"model": _cpu_model(), "logical_cores": os.cpu_count(), "machine": platform.machine()},
        "ram_bytes": ram,
        "numpy": np.__version__,
        "backend": backend_env,
        "git_commit": git_commit(),
        "argv": list(argv),
        "cwd": os.getcwd(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def weights_digest(named: Iterable[tuple[str, np.ndarray]]) -> str:
    """SHA-256 over the weights, names sorted: name, dtype, shape and bytes of each."""
    h = hashlib.sha256()
    for name, arr in sorted(named, key=lambda kv: kv[0]):
        arr = np.ascontiguousarray(arr)
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(tuple(arr.shape)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def truncate_metrics(path: Path, step: int, warn=None) -> None:
    """Before a resume from checkpoint `step`: keep the records up to that step, except the final
    phase's test records (the resumed run writes its own), so that the finished file equals an
    uninterrupted run's record for record. Rewritten atomically. A line torn by a kill is dropped;
    a line that is not UTF-8 is a damaged file, refused naming the line."""
    if not path.exists():
        return
    kept = []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{path}:{n}: not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1})",
                                  hint=f"the metrics file was damaged: delete line {n} (or restore the file), "
                                       "then resume again") from None
        try:
            record = json.loads(text)
            keep = record.get("step", 0) <= step and record.get("split") != "test"
        except (ValueError, AttributeError, TypeError):
            if n < len(lines) - 1 and warn is not None:  # not the last line, so not torn by a kill
                warn(f"{path}:{n}: not a JSON record; dropped")
            continue
        if keep:
            kept.append(text)
    atomic_write(path, "".join(k + "\n" for k in kept))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` all at once: a temporary file beside it, fsync, os.replace,
    fsync the directory. A kill at any moment leaves the old file or the new one, never a mix."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")

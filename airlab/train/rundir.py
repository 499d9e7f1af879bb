"""The run directory: config.yaml, env.json, metrics.jsonl, summary.json, checkpoints/, samples/."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Iterable

import numpy as np

import airlab


def new_run_dir(runs_root: str | Path, name: str) -> Path:
    """runs/<name>-<YYYYmmdd-HHMMSS>/, with a numeric suffix if that second is taken."""
    root = Path(runs_root)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{name}-{stamp}-{n}"
    return path


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


class MetricsLog:
    """metrics.jsonl: one JSON object per logged or evaluated step, flushed as written."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "a", encoding="utf-8")
        self.t0 = time.time()

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)

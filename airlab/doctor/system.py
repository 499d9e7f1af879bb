"""System facts: OS, container, WSL, Python, CPU, memory, disk, /dev/shm. Never raises.

`probe_system(root=..., env=...)` reads files under `root` (default "/") so tests can point it at
a fake tree; anything unreadable is simply absent from the facts.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8",
             "sse4_2", "f16c")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _os_release(root: Path) -> dict:
    text = _read(root / "etc/os-release") or ""
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


def detect_container(root: Path, env: dict) -> str | None:
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if (root / "run/.containerenv").exists():
        return "podman"
    if (root / ".dockerenv").exists():
        return "docker"
    cgroup = _read(root / "proc/1/cgroup") or ""
    for marker, name in (("kubepods", "kubernetes"), ("docker", "docker"), ("libpod", "podman"),
                         ("containerd", "containerd"), ("lxc", "lxc")):
        if marker in cgroup:
            return name
    if env.get("container"):
        return env["container"]
    return None


def detect_wsl(root: Path, kernel_release: str) -> dict | None:
    osrelease = (_read(root / "proc/sys/kernel/osrelease") or kernel_release or "").strip()
    if "microsoft" not in osrelease.lower():
        return None
    version = 2 if ("wsl2" in osrelease.lower() or "microsoft-standard" in osrelease.lower()) else 1
    wsl_lib = root / "usr/lib/wsl/lib"
    linux_libcuda = []
    for d in ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib/aarch64-linux-gnu"):
        p = root / d
        try:
            linux_libcuda += [str(Path("/") / d / n) for n in sorted(os.listdir(p)) if n.startswith("libcuda.so")]
        except OSError:
            pass
    return {
        "version": version,
        "kernel": osrelease,
        "wsl_lib_dir": str(Path("/") / "usr/lib/wsl/lib") if wsl_lib.is_dir() else None,
        "wsl_libcuda": (wsl_lib / "libcuda.so.1").exists() or (wsl_lib / "libcuda.so").exists(),
        # the GPU paravirtualization device: present when Windows (build >= 19044) and the WSL kernel
        # can pass a GPU through at all, whatever its vendor
        "dxg": (root / "dev/dxg").exists(),
        # a Linux driver installed inside WSL puts its own libcuda here and shadows the WSL one
        "linux_libcuda": linux_libcuda,
    }


def _python(env: dict) -> dict:
    conda = env.get("CONDA_PREFIX") if env.get("CONDA_PREFIX") and sys.prefix.startswith(env["CONDA_PREFIX"]) else None
    if conda is None and (Path(sys.prefix) / "conda-meta").is_dir():
        conda = sys.prefix
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "venv": sys.prefix != sys.base_prefix,
        "conda": conda,
    }


def _cpu(root: Path) -> dict:
    info = {"model": None, "flags": {}, "logical_cores": os.cpu_count(), "physical_cores": None,
            "usable_cores": None}
    text = _read(root / "proc/cpuinfo") or ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and info["model"] is None:
            info["model"] = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    if info["model"] is None:
        info["model"] = platform.processor() or None
    info["flags"] = {f: (f in flags) for f in CPU_FLAGS} if flags else {}
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cores"] = os.cpu_count()
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
    except Exception:
        pass
    return info


def _memory(root: Path) -> dict:
    out = {"total_bytes": None, "available_bytes": None, "cgroup_limit_bytes": None}
    try:
        import psutil

        vm = psutil.virtual_memory()
        out["total_bytes"], out["available_bytes"] = int(vm.total), int(vm.available)
    except Exception:
        pass
    for path in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        text = (_read(root / path) or "").strip()
        if text.isdigit() and int(text) < (1 << 60):
            out["cgroup_limit_bytes"] = int(text)
            break
    return out


def _disk_free(path: Path) -> dict:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        usage = shutil.disk_usage(p)
        return {"path": str(path), "measured_at": str(p), "free_bytes": usage.free, "total_bytes": usage.total}
    except OSError as e:
        return {"path": str(path), "error": str(e)}


def data_cache_dir(env: dict) -> Path:
    """Where datasets are cached (mirrors airlab.data.files.data_dir without importing it)."""
    if env.get("AIRLAB_DATA_DIR"):
        return Path(env["AIRLAB_DATA_DIR"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path(env.get("HOME", "~")).expanduser() / ".cache"
    return base / "airlab" / "data"


def probe_system(root: str | Path = "/", env: dict | None = None, cwd: str | Path | None = None) -> dict:
    root = Path(root)
    env = dict(os.environ if env is None else env)
    uname = platform.uname()
    osr = _os_release(root)
    shm = None
    if (root / "dev/shm").is_dir():
        try:
            shm = shutil.disk_usage(root / "dev/shm").total
        except OSError:
            shm = None
    return {
        "os": uname.system,
        "kernel": uname.release,
        "machine": uname.machine,
        "distro": osr.get("PRETTY_NAME"),
        "container": detect_container(root, env),
        "wsl": detect_wsl(root, uname.release) if uname.system == "Linux" else None,
        "python": _python(env),
        "cpu": _cpu(root),
        "memory": _memory(root),
        "disk": {
            "data_cache": _disk_free(data_cache_dir(env)),
            "runs": _disk_free(Path(cwd or os.getcwd()) / "runs"),
        },
        "shm_bytes": shm,
    }
